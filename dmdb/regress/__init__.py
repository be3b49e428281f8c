"""Regression solvers over all targets at once: lasso path and selection, ridge, difference in means.

Pure arrays in, arrays out (no database code). Inputs: masks X (runs, N) of 0/1 and margins
Y (runs, T). Every estimator returns weights in raw mask coordinates: margin ~ bias + X @ W.
"""

from .influence import diff_means
from .lasso import LassoPath, lambda_grid, lasso_path, select_lasso
from .metrics import r2_per_target, spearman_per_target
from .result import SolverResult, predict
from .ridge import select_ridge
from .stats import GramStats, gram_stats

__all__ = [
    "GramStats",
    "LassoPath",
    "SolverResult",
    "diff_means",
    "gram_stats",
    "lambda_grid",
    "lasso_path",
    "predict",
    "r2_per_target",
    "select_lasso",
    "select_ridge",
    "spearman_per_target",
]
