"""Preloaded by the local engine's forkserver (and only there): it dies with the collector that
started it (see lifeline.py). Importing it anywhere else would tie that process to its parent."""

from .lifeline import die_with_parent

die_with_parent()
