"""Fits: read runs chosen by SQL views, solve with an estimator from dmdb.regress, score on holdout
runs (LDS), store the fit and its nonzero weights. `Experiment.fit` is the usual entry point."""

from .estimators import ESTIMATORS, FitOptions
from .model import Fit
from .runner import DEFAULT_CURVE, run_fit
from .scores import import_scores
from .selection import Selection, format_id_list, parse_id_list, select

__all__ = [
    "DEFAULT_CURVE",
    "ESTIMATORS",
    "Fit",
    "FitOptions",
    "Selection",
    "format_id_list",
    "import_scores",
    "parse_id_list",
    "run_fit",
    "select",
]
