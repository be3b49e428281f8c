"""Ridge regression for all targets, lambda chosen per target on validation runs.

Objective per target: (1/2n)||y - b - Xw||^2 + (lambda/2)||w||^2, i.e. w solves
(G + lambda I) w = c on the centred Gram statistics (scikit-learn's Ridge alpha = n*lambda).
One eigendecomposition gives every lambda of the grid for the cost of a GEMM each: of G (N x N)
when there are more fit runs than N/2, else of K = Xc Xc'/n (n x n, the kernel form
w = Xc'(K + lambda I)^-1 yc / n), the same weights from a much smaller matrix. Either way
W(lambda) = Q (Qc / (e + lambda)) for a basis Q, its eigenvalues e and coefficients Qc.
A target with constant fit margins gets zero weights and that constant as bias.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from dmdb.errors import FitError

from ._common import Prepared, ValidationRows, mean_squared_error, prepare, r2_from, split_stats, to_np
from ._inputs import ArrayLike, Progress
from .memory import Sizes
from .operators import GramMatrix, GramOperator
from .result import SolverResult
from .stats import GramStats
from .threads import threads_by_size


def _basis(op: GramOperator, c: torch.Tensor, p: Prepared, rows: np.ndarray, st: GramStats,
           const: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e, Q, Qc) with W(lambda) = Q (Qc / (e + lambda)[:, None]) the ridge weights of every target.
    `rows`: the runs the operator holds, in its order (for the kernel form's centred margins)."""
    if isinstance(op, GramMatrix):
        e, Q = torch.linalg.eigh(op.G)
        return e, Q, Q.T @ torch.where(const[None, :], torch.zeros_like(c), c)
    Xc = op.Xc
    e, U = torch.linalg.eigh((Xc @ Xc.T) / op.n_runs)
    yc = (torch.as_tensor(p.Y[rows], dtype=torch.float64, device=p.device) - st.y_mean).to(p.dtype)
    yc = torch.where(const[None, :], torch.zeros_like(yc), yc)
    return e, Xc.T @ U, (U.T @ yc) / op.n_runs


_GRID_STEP = 10**0.5  # the default grid's ratio between neighbours
_GRID_GROW = 4  # values added at an end at a time (two decades)
_GRID_REACH = 1e6  # an end grows at most this far past the default grid (1e-9 .. 1e9 times the scale)


def _widen_at_edges(grid: torch.Tensor, mse: torch.Tensor, mse_at: Callable[[torch.Tensor], torch.Tensor],
                    const: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow the grid (ascending) at an end while some non-constant target's validation MSE is
    lowest there and strictly lower than at the next value in; never below `floor`."""
    lo_limit, hi_limit = max(float(grid[0]) / _GRID_REACH, floor), float(grid[-1]) * _GRID_REACH
    steps = _GRID_STEP ** torch.arange(1, _GRID_GROW + 1, dtype=torch.float64)
    live = ~const
    while grid.numel() > 1:
        low = bool((live & (mse[0] < mse[1])).any()) and float(grid[0]) / _GRID_STEP > lo_limit
        high = bool((live & (mse[-1] < mse[-2])).any()) and float(grid[-1]) < hi_limit / 1.01
        if not (low or high):
            return grid, mse
        if low:
            more = (float(grid[0]) / steps[float(grid[0]) / steps >= lo_limit]).flip(0).to(grid)
            grid, mse = torch.cat([more, grid]), torch.cat([mse_at(more), mse])
        if high:
            more = (float(grid[-1]) * steps).to(grid)
            grid, mse = torch.cat([grid, more]), torch.cat([mse, mse_at(more)])
    return grid, mse


@threads_by_size
def select_ridge(
    X: ArrayLike,
    Y: ArrayLike,
    fit_rows: ArrayLike | slice,
    val_rows: ArrayLike | slice,
    *,
    lambdas: ArrayLike | None = None,
    refit: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    block_rows: int | None = None,
    gram: str | None = None,
    progress: Progress | None = None,
) -> SolverResult:
    """Ridge on the fit runs over a lambda grid, best lambda per target by validation MSE,
    then (if `refit`) the same lambda on fit+validation runs.

    The default grid is 13 values, log-spaced from 1e-3 to 1e3 times the mean diagonal of
    G (about alpha(1-alpha) for random masks), so it scales with the masks, not with n. While
    some target's validation MSE is lowest at an end of it (and strictly lower than next to it),
    that end grows by two decades, up to 1e9 times, and down to 1e-9 times but not below 1e3
    machine epsilons of G's largest eigenvalue, where the solution would be rounding noise
    (float32: about the default bottom, so the grid grows down only in float64). Each value costs
    one product. Given `lambdas` are used as they are.
    `gram`: 'matrix', 'masks' (the kernel form) or None: 'masks' when fit runs <= N/2.
    """
    p = prepare(X, Y, device, dtype)
    sp = split_stats(p, fit_rows, val_rows, gram=gram, refit=refit, block_rows=block_rows, progress=progress,
                     footprint=Sizes.ridge)
    fit, val, st_fit, st_val, op = sp.fit, sp.val, sp.st_fit, sp.st_val, sp.op
    c, _ = st_fit.cross(p.dtype)
    st_all = st_fit.take_sum(st_val)  # the refit's X'Y sums, in the fit runs' buffer: one N x T float64 from here
    N, T = c.shape
    if lambdas is None:
        m = st_fit.x_mean
        scale = float((m * (1 - m)).mean())  # the mean diagonal of G: 0/1 columns have variance m(1 - m)
        grid = torch.logspace(-3, 3, 13, dtype=torch.float64) * max(scale, 1e-12)
    else:
        grid = torch.as_tensor(np.asarray(lambdas, dtype=np.float64).reshape(-1))
        if grid.numel() < 1 or not torch.isfinite(grid).all() or (grid <= 0).any():
            raise FitError("ridge lambdas must be a non-empty list of positive numbers")
    grid = grid.to(p.device, p.dtype)
    const = st_fit.constant
    evals, Q, Qc = _basis(op, c, p, fit, st_fit, const)
    vr = ValidationRows(p, val, st_fit.x_mean, st_fit.y_mean, block_rows)
    XvQ = vr.times(Q)
    yv = vr.y
    del vr

    evaluated = 0  # lambdas so far, the grid's widening included: one bar that grows, not one per call

    def mse_at(lams: torch.Tensor) -> torch.Tensor:
        nonlocal evaluated
        out = torch.empty(lams.numel(), T, dtype=torch.float64, device=p.device)
        total = evaluated + lams.numel()
        for j in range(lams.numel()):
            coef_q = Qc / (evals + lams[j])[:, None]
            out[j] = mean_squared_error(yv, XvQ @ coef_q)
            evaluated += 1
            if progress is not None:
                progress("ridge grid", evaluated, total)
        return out

    path_mse = mse_at(grid)
    if lambdas is None:
        floor = 1e3 * torch.finfo(p.dtype).eps * float(evals.max())
        grid, path_mse = _widen_at_edges(grid, path_mse, mse_at, const, floor)
    k = grid.numel()
    best = path_mse.argmin(dim=0)  # ties go to the first grid value
    lam = torch.where(const, 0, grid[best])  # a constant target chooses nothing: 0, as the lasso records
    val_mse = path_mse.gather(0, best[None, :])[0]
    val_r2 = r2_from(val_mse, st_val.y_var, st_val.constant)

    del XvQ, yv
    if refit:
        del evals, Q, Qc, c  # the fit runs' basis, before the basis of all runs is formed
        op.extend(st_fit, st_all, p.X, val)
        st_out = st_all
        c, _ = st_out.cross(p.dtype)
        evals, Q, Qc = _basis(op, c, p, np.concatenate([fit, val]), st_out, const)
    else:
        st_out = st_fit
    W = Q @ Qc.div_(evals[:, None] + lam[None, :])
    # exact zeros where the solution is 0: constant targets, and examples in every run or none (whose
    # rows of G are 0, but an eigenbasis with other null directions mixes rounding into them)
    W.masked_fill_(const[None, :] | ~st_out.varying[:, None], 0.0)
    bias = st_out.y_mean - st_out.x_mean @ W.to(torch.float64)
    return SolverResult(
        method="ridge",
        W=to_np(W),
        bias=to_np(bias),
        lam=to_np(lam.to(torch.float64)),
        val_mse=to_np(val_mse),
        val_r2=to_np(val_r2),
        nnz=to_np((W != 0).sum(dim=0)),
        n_fit=int(fit.size),
        n_val=int(val.size),
        refit=refit,
        lambdas=to_np(grid.to(torch.float64)[:, None].expand(k, T)).copy(),
        path_mse=to_np(path_mse),
        constant=to_np(const),
        converged=np.ones(T, dtype=bool),
        n_iter=np.zeros(T, dtype=np.int64),
    )
