"""Fits: read runs chosen by SQL views, solve with an estimator from dmdb.regress, score on holdout
runs (LDS), store the fit and its nonzero weights. `Experiment.fit` is the usual entry point.

Names load on first use: the options and SQL selection are torch-free, the solvers are not."""

from __future__ import annotations

from importlib import import_module

_HOME = {
    "DEFAULT_CURVE": "options",
    "ESTIMATORS": "options",
    "FitOptions": "options",
    "Fit": "model",
    "run_fit": "runner",
    "import_scores": "scores",
    "Selection": "selection",
    "format_id_list": "selection",
    "parse_id_list": "selection",
    "select": "selection",
}


def __getattr__(name: str) -> object:
    if name in _HOME:
        return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_HOME)
