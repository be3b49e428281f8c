"""Fits: read runs chosen by SQL views, solve with an estimator from dmdb.regress, score on holdout
runs (LDS), store the fit and its nonzero weights. `Experiment.fit` is the usual entry point.

Names load on first use: the options and SQL selection are torch-free, the solvers are not."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # what type checkers see instead of __getattr__ (tests/test_packaging.py keeps it equal to _HOME)
    from .model import Fit
    from .options import DEFAULT_CURVE, ESTIMATORS, FitOptions
    from .runner import run_fit
    from .scores import import_scores
    from .selection import Selection, format_id_list, parse_id_list, select

__all__ = sorted(_HOME)
