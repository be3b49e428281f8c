"""The one result shape every estimator returns, so `fit` can store any of them the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dmdb.errors import FitError

from ._inputs import ArrayLike, check_masks


@dataclass
class SolverResult:
    """Per-target datamodels in raw 0/1 mask coordinates: margin ~ bias + mask @ W.

    Validation numbers score the model fitted on the fit rows only (before any refit), which
    is what chose lambda. `path_mse[j, t]` is the validation MSE at `lambdas[j, t]`
    (NaN where a path stopped early); both are None for estimators without a path.
    """

    method: str
    W: np.ndarray  # (N, T)
    bias: np.ndarray  # (T,)
    lam: np.ndarray  # (T,) chosen lambda (NaN for estimators without one)
    val_mse: np.ndarray  # (T,)
    val_r2: np.ndarray  # (T,) NaN where the validation margins are constant
    nnz: np.ndarray  # (T,) nonzero weights
    n_fit: int
    n_val: int
    refit: bool
    lambdas: np.ndarray | None = None  # (k, T)
    path_mse: np.ndarray | None = None  # (k, T)
    constant: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (T,)
    converged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (T,)
    n_iter: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (T,)


def predict(X: ArrayLike, W: np.ndarray, bias: np.ndarray, *, block_rows: int = 4096) -> np.ndarray:
    """bias + X @ W in row blocks, so a large bool mask matrix is never cast whole."""
    n, N = check_masks(X)
    W = np.asarray(W)
    bias = np.asarray(bias)
    if W.ndim == 1:
        W = W[:, None]
    if W.shape[0] != N:
        raise FitError(f"masks have {N} columns but W has {W.shape[0]} rows")
    if bias.reshape(-1).shape[0] != W.shape[1]:
        raise FitError(f"W has {W.shape[1]} targets but bias has {bias.size}")
    dt = np.float64 if W.dtype == np.float64 else np.float32
    out = np.empty((n, W.shape[1]), dtype=dt)
    Wd = W.astype(dt, copy=False)
    for a in range(0, n, block_rows):
        xb = X[a : a + block_rows]
        if isinstance(xb, torch.Tensor):
            xb = xb.detach().cpu().numpy()
        out[a : a + block_rows] = np.asarray(xb).astype(dt, copy=False) @ Wd
    out += bias.reshape(1, -1).astype(dt)
    return out
