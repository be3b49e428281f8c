"""A real, small training job for end-to-end demos: scikit-learn's digits, many models trained at once.

Names load on first use: the training code needs torch, the CLI's parser does not."""

from __future__ import annotations

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

__all__ = sorted(_HOME)
