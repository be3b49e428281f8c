"""A real, small training job for end-to-end demos: scikit-learn's digits, many models trained at once."""

from __future__ import annotations

from dmdb.demo.data import DigitsData, load_digits_split
from dmdb.demo.train import DEFAULTS, KINDS, TrainConfig, TrainResult, init_params, margins_from_logits, train_models

__all__ = [
    "DEFAULTS",
    "KINDS",
    "DigitsData",
    "TrainConfig",
    "TrainResult",
    "init_params",
    "load_digits_split",
    "margins_from_logits",
    "train_models",
]
