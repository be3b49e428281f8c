"""The estimators a fit can use, behind one call: (masks, margins, fit rows, val rows) -> SolverResult."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..regress import SolverResult, diff_means, select_lasso, select_ridge
from ..regress._inputs import ArrayLike, Progress
from .options import FitOptions


def _torch_dtype(o: FitOptions) -> torch.dtype:
    return torch.float64 if o.dtype == "float64" else torch.float32


Solver = Callable[[ArrayLike, np.ndarray, np.ndarray, np.ndarray, FitOptions, torch.device, Progress | None], SolverResult]


def _lasso(X: ArrayLike, Y: np.ndarray, fit: np.ndarray, val: np.ndarray, o: FitOptions,
           device: torch.device, progress: Progress | None) -> SolverResult:
    return select_lasso(
        X, Y, fit, val, n_lambdas=o.k, eps=o.eps, tol=o.tol, max_iter=o.max_iter, refit=o.refit,
        patience=o.patience, device=device, dtype=_torch_dtype(o), block_rows=o.block_rows, gram=o.gram,
        progress=progress,
    )


def _ridge(X: ArrayLike, Y: np.ndarray, fit: np.ndarray, val: np.ndarray, o: FitOptions,
           device: torch.device, progress: Progress | None) -> SolverResult:
    return select_ridge(
        X, Y, fit, val, refit=o.refit, device=device, dtype=_torch_dtype(o), block_rows=o.block_rows, gram=o.gram,
        progress=progress,
    )


def _diff_means(X: ArrayLike, Y: np.ndarray, fit: np.ndarray, val: np.ndarray, o: FitOptions,
                device: torch.device, progress: Progress | None) -> SolverResult:
    """Scored on the validation runs as fitted on the fit runs; with refit, the final weights
    use fit + validation runs (there is no lambda to choose, so nothing is lost)."""
    kw: dict[str, Any] = dict(device=device, dtype=_torch_dtype(o), block_rows=o.block_rows, progress=progress)
    scored = diff_means(X, Y, fit_rows=fit, val_rows=val, **kw)
    if not o.refit:
        return scored
    final = diff_means(X, Y, fit_rows=np.union1d(fit, val), **kw)
    final.val_mse, final.val_r2, final.n_fit, final.n_val, final.refit = (
        scored.val_mse, scored.val_r2, scored.n_fit, scored.n_val, True,
    )
    return final


SOLVERS: dict[str, Solver] = {"lasso": _lasso, "ridge": _ridge, "diff-means": _diff_means}
