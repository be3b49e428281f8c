"""The dmdb terminal app (`dmdb tui`). Imports dmdb; dmdb never imports it."""

from .app import DmdbApp, run

__all__ = ["DmdbApp", "run"]
