"""A real, small training job for end-to-end demos: scikit-learn's digits, many models trained at once.

Names load on first use: the training code needs torch, the CLI's parser does not."""

from __future__ import annotations

from importlib import import_module

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


def __getattr__(name: str) -> object:
    if name in _HOME:
        return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_HOME)
