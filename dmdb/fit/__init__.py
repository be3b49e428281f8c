"""Fits: read runs chosen by SQL views, solve with an estimator from dmdb.regress, score on holdout
runs (LDS), store the fit and its nonzero weights. `Experiment.fit` is the usual entry point.

Names load on first use: the options and SQL selection are torch-free, the solvers are not."""

from __future__ import annotations

from ..lazy import lazy_attributes

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

__getattr__ = lazy_attributes(__name__, _HOME)

__all__ = sorted(_HOME)
