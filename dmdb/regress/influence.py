"""Difference in means (empirical influence, Feldman & Zhang): the cheap baseline estimator.

w_it = mean(y_t | x_i = 1) - mean(y_t | x_i = 0), from column sums and X'Y only (no X'X),
so it costs one pass over the masks at N*T per run. An example that is in every fit run or
in none has no contrast to measure: its weight is 0. The bias b = mean(y) - mean(x) . w makes
predictions b + X w right on average over the fit runs.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import ValidationRows, mean_squared_error, prepare, r2_from, to_np
from ._inputs import MIN_FIT_RUNS, ArrayLike, Progress, check_split, row_spread, rows_index
from .memory import Sizes, check_memory
from .result import SolverResult
from .stats import GramStats, gram_stats
from dmdb.errors import FitError


def diff_means(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    fit_rows: ArrayLike | slice | None = None,
    val_rows: ArrayLike | slice | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    block_rows: int | None = None,
    progress: Progress | None = None,
) -> SolverResult:
    """Difference-in-means weights on the fit runs (all runs if None), scored on `val_rows`.

    No lambda and no refit: `lam` is NaN, and the validation numbers are NaN when no
    validation runs are given.
    """
    p = prepare(X, Y, device, dtype)
    fit = rows_index(fit_rows, p.n_runs, "fit_rows")
    val = None if val_rows is None else rows_index(val_rows, p.n_runs, "val_rows")
    if val is not None:
        check_split(fit, val)
    elif fit.size < MIN_FIT_RUNS:
        raise FitError(f"too few fit runs: {fit.size} (need at least {MIN_FIT_RUNS})")
    sizes = Sizes(n_fit=fit.size, n_val=0 if val is None else val.size, N=p.n_train, T=p.Y.shape[1],
                  itemsize=p.itemsize)
    check_memory(sizes.diff_means(), p.device)
    st = gram_stats(p.X, p.Y, fit, with_gram=False, device=p.device, dtype=p.dtype,
                    block_rows=block_rows, progress=progress)
    x_mean, y_mean, const = st.x_mean, st.y_mean, st.constant
    W64 = _contrasts(st)
    bias = y_mean - x_mean @ W64
    W = W64.to(p.dtype)
    del W64
    T = W.shape[1]
    if val is not None:
        vr = ValidationRows(p, val, x_mean, y_mean, block_rows)
        val_mse = mean_squared_error(vr.y, vr.times(W))
        var, constant = row_spread(p.Y, val)
        val_r2 = r2_from(val_mse, torch.from_numpy(var).to(p.device), torch.from_numpy(constant).to(p.device))
        val_mse_np, val_r2_np = to_np(val_mse), to_np(val_r2)
    else:
        val_mse_np = np.full(T, np.nan)
        val_r2_np = np.full(T, np.nan)
    return SolverResult(
        method="diff_means",
        W=to_np(W),
        bias=to_np(bias),
        lam=np.full(T, np.nan),
        val_mse=val_mse_np,
        val_r2=val_r2_np,
        nnz=to_np((W != 0).sum(dim=0)),
        n_fit=int(fit.size),
        n_val=0 if val is None else int(val.size),
        refit=False,
        constant=to_np(const),
        converged=np.ones(T, dtype=bool),
        n_iter=np.zeros(T, dtype=np.int64),
    )


def _contrasts(st: GramStats) -> torch.Tensor:
    """The (N, T) float64 weights w = s1/n1 - s0/n0, with s1 = X'y (over runs containing i),
    s0 = sum(y) - s1 and n0 = n - n1; that is s1 (1/n1 + 1/n0) - sum(y)/n0, formed over `st`'s
    X'Y sums in place (N x T float64: 4 GB at 50,000 x 10,000, the size that matters here). The
    margin shift cancels in the difference. Examples in every run or none, and targets constant on
    the runs, get 0."""
    n1 = st.col_sum.clamp(min=1)
    n0 = (st.n - st.col_sum).clamp(min=1)
    W = st.take_xty().mul_((1 / n1 + 1 / n0)[:, None]).addr_(1 / n0, st.y_sum, alpha=-1)
    W[~st.varying] = 0.0
    W[:, st.constant] = 0.0
    return W
