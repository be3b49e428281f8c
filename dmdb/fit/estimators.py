"""The estimators a fit can use, behind one call: (masks, margins, fit rows, val rows) -> SolverResult."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..errors import BadInputError
from ..regress import SolverResult, diff_means, select_lasso, select_ridge
from ..regress._inputs import Progress

ESTIMATORS = ("lasso", "diff-means", "ridge")


@dataclass(frozen=True)
class FitOptions:
    """Everything that shapes a fit besides its data; stored as the fit's config.

    k lambdas per target from lambda_max down to eps*lambda_max; tol is the duality-gap
    tolerance relative to each target's variance; patience (lasso) stops a target's path once
    validation MSE has not improved for that many lambdas (None: the whole path).
    """

    estimator: str = "lasso"
    k: int = 100
    eps: float = 1e-3
    tol: float = 1e-4
    max_iter: int = 1000
    patience: int | None = None
    refit: bool = True
    val_frac: float = 0.1
    split_seed: int = 0
    dtype: str = "float32"
    block_rows: int | None = None

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise BadInputError(f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        if self.dtype not in ("float32", "float64"):
            raise BadInputError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def config(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32


Solver = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, FitOptions, torch.device, Progress | None], SolverResult]


def _lasso(X: np.ndarray, Y: np.ndarray, fit: np.ndarray, val: np.ndarray, o: FitOptions,
           device: torch.device, progress: Progress | None) -> SolverResult:
    return select_lasso(
        X, Y, fit, val, n_lambdas=o.k, eps=o.eps, tol=o.tol, max_iter=o.max_iter, refit=o.refit,
        patience=o.patience, device=device, dtype=o.torch_dtype, block_rows=o.block_rows, progress=progress,
    )


def _ridge(X: np.ndarray, Y: np.ndarray, fit: np.ndarray, val: np.ndarray, o: FitOptions,
           device: torch.device, progress: Progress | None) -> SolverResult:
    return select_ridge(
        X, Y, fit, val, refit=o.refit, device=device, dtype=o.torch_dtype, block_rows=o.block_rows, progress=progress
    )


def _diff_means(X: np.ndarray, Y: np.ndarray, fit: np.ndarray, val: np.ndarray, o: FitOptions,
                device: torch.device, progress: Progress | None) -> SolverResult:
    """Scored on the validation runs as fitted on the fit runs; with refit, the final weights
    use fit + validation runs (there is no lambda to choose, so nothing is lost)."""
    kw: dict[str, Any] = dict(device=device, dtype=o.torch_dtype, block_rows=o.block_rows, progress=progress)
    scored = diff_means(X, Y, fit_rows=fit, val_rows=val, **kw)
    if not o.refit:
        return scored
    final = diff_means(X, Y, fit_rows=np.union1d(fit, val), **kw)
    final.val_mse, final.val_r2, final.n_fit, final.n_val, final.refit = (
        scored.val_mse, scored.val_r2, scored.n_fit, scored.n_val, True,
    )
    return final


SOLVERS: dict[str, Solver] = {"lasso": _lasso, "ridge": _ridge, "diff-means": _diff_means}
