"""A real, small training job for end-to-end demos: scikit-learn's digits, many models trained at once.

Names load on first use: the training code needs torch, the CLI's parser does not."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

_HOME = {
    "DEFAULTS": "train",
    "KINDS": "kinds",
    "DigitsData": "data",
    "TrainConfig": "train",
    "TrainResult": "train",
    "init_params": "train",
    "load_digits_split": "data",
    "margins_from_logits": "train",
    "train_models": "train",
}

__getattr__ = lazy_attributes(__name__, _HOME)

if TYPE_CHECKING:  # what type checkers see instead of __getattr__ (tests/test_packaging.py keeps it equal to _HOME)
    from .data import DigitsData, load_digits_split
    from .kinds import KINDS
    from .train import DEFAULTS, TrainConfig, TrainResult, init_params, margins_from_logits, train_models

__all__ = sorted(_HOME)
