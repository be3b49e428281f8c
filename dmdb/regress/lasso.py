"""The lasso path for all targets at once, and lambda selection on validation runs.

Objective per target, as scikit-learn's Lasso: (1/2n)||y - b - Xw||^2 + lambda ||w||_1 with an
unpenalised intercept b. Everything runs on the centred Gram statistics from one pass over X
(G = Xc'Xc/n held as a matrix, or applied through the centred masks when runs are few: operators.py);
weights come back in raw 0/1 mask coordinates with b = mean(y) - mean(x) . w.

A target whose margins are constant on the fit runs has nothing to explain: its weights are
all zero, its bias is that constant (after a refit: the mean over fit+validation runs), and
its lambdas are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dmdb.errors import FitError

from ._common import ValidationRows, mean_squared_error, prepare, r2_from, split_stats, to_np
from ._fista import curvature, solve_paths
from ._inputs import MIN_FIT_RUNS, ArrayLike, Progress, rows_index
from .memory import Sizes, check_memory, lasso_batch, spend
from .operators import choose_form, gram_operator
from .result import SolverResult
from .stats import GramStats, gram_stats
from .threads import threads_by_size


@dataclass
class LassoPath:
    """Solutions along the path, raw coordinates: margin ~ intercepts[j] + mask @ coefs[j]."""

    lambdas: np.ndarray  # (k, T)
    coefs: np.ndarray  # (k, N, T)
    intercepts: np.ndarray  # (k, T)
    converged: np.ndarray  # (T,) every lambda reached the gap tolerance
    n_iter: np.ndarray  # (T,) GEMM iterations used
    constant: np.ndarray  # (T,) margins constant on the runs used


def lambda_grid(c: torch.Tensor, n_lambdas: int, eps: float) -> torch.Tensor:
    """Per target, geometric from lambda_max = max|Xc'yc|/n (all weights zero) to eps*lambda_max."""
    if n_lambdas < 1:
        raise FitError(f"n_lambdas must be at least 1, got {n_lambdas}")
    if not 0 < eps <= 1:
        raise FitError(f"eps must be in (0, 1], got {eps}")
    lam_max = c.abs().amax(dim=0).to(torch.float64)
    ratios = torch.logspace(0, float(np.log10(eps)), n_lambdas, dtype=torch.float64, device=c.device)
    if n_lambdas == 1:
        ratios = torch.ones(1, dtype=torch.float64, device=c.device)
    return (ratios[:, None] * lam_max[None, :]).to(c.dtype)


def _given_lambdas(lambdas: ArrayLike, T: int, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    lam = torch.as_tensor(np.asarray(lambdas, dtype=np.float64), device=dev)
    if lam.ndim == 1:
        lam = lam[:, None].expand(-1, T)
    if lam.ndim != 2 or lam.shape[1] != T or lam.shape[0] < 1:
        raise FitError(f"lambdas must have shape (k,) or (k, {T}), got {tuple(lam.shape)}")
    if not torch.isfinite(lam).all() or (lam < 0).any():
        raise FitError("lambdas must be finite and non-negative")
    return lam.to(dtype).contiguous()


def _path_lambdas(c: torch.Tensor, const: torch.Tensor, lambdas: ArrayLike | None, n_lambdas: int,
                  eps: float) -> torch.Tensor:
    """The (k, T) lambdas to solve: `lambdas` if given, else lambda_grid's; 0 for constant targets."""
    T = c.shape[1]
    lam = lambda_grid(c, n_lambdas, eps) if lambdas is None else _given_lambdas(lambdas, T, c.device, c.dtype)
    return torch.where(const[None, :], torch.zeros_like(lam), lam)


def _path_length(lambdas: ArrayLike | None, n_lambdas: int) -> int:
    """How many solutions the path will keep (before `lambdas` are checked: a malformed one fails later)."""
    if lambdas is None:
        return n_lambdas
    shape = np.shape(lambdas)
    return int(shape[0]) if shape else 1


def _check_solver_args(tol: float, max_iter: int) -> None:
    if not tol >= 0:
        raise FitError(f"tol must be non-negative, got {tol}")
    if max_iter < 1:
        raise FitError(f"max_iter must be at least 1, got {max_iter}")


@threads_by_size
def lasso_path(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    rows: ArrayLike | slice | None = None,
    lambdas: ArrayLike | None = None,
    n_lambdas: int = 100,
    eps: float = 1e-3,
    tol: float = 1e-4,
    max_iter: int = 1000,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    block_rows: int | None = None,
    target_chunk: int | None = None,
    gram: str | None = None,
    progress: Progress | None = None,
) -> LassoPath:
    """Whole lasso path for every target; keeps all k solutions, so meant for modest N*T*k.

    `lambdas` (k,) or (k, T) overrides the grid (use decreasing values: warm starts follow
    the order). `tol` bounds the duality gap relative to the target's variance, as
    scikit-learn's `tol` does; `max_iter` caps the GEMM iterations per lambda. `gram`: 'matrix'
    (hold G = Xc'Xc/n), 'masks' (apply G through the centred masks) or None: 'masks' when the
    runs are at most half the train examples (see operators.py).
    """
    p = prepare(X, Y, device, dtype)
    _check_solver_args(tol, max_iter)
    idx = rows_index(rows, p.n_runs, "rows")
    if idx.size < MIN_FIT_RUNS:
        raise FitError(f"too few runs: {idx.size} (need at least {MIN_FIT_RUNS})")
    form = choose_form(idx.size, p.n_train, gram)
    sizes = Sizes(n_fit=idx.size, n_val=0, N=p.n_train, T=p.Y.shape[1], itemsize=p.itemsize, form=form, refit=False)
    left = check_memory(sizes.lasso_path(_path_length(lambdas, n_lambdas)), p.device)
    st = gram_stats(p.X, p.Y, idx, device=p.device, dtype=p.dtype, block_rows=block_rows, progress=progress,
                    with_gram=form == "matrix")
    op = gram_operator(form, st, p.X, idx, reserve=0, device=p.device, dtype=p.dtype, block_rows=block_rows)
    c, yy = st.cross(p.dtype)
    N, T = c.shape
    const = st.constant
    lams = _path_lambdas(c, const, lambdas, n_lambdas, eps)
    k = lams.shape[0]
    coefs = torch.zeros(k, T, N, dtype=p.dtype, device=p.device)  # (k, T, N): rows are contiguous

    def emit(tids: torch.Tensor, ks: torch.Tensor, W: torch.Tensor) -> None:
        coefs[ks, tids] = W

    targets = (~const).nonzero().squeeze(1)
    ps = solve_paths(
        op, c.T.contiguous(), yy, lams, targets, emit, curv=curvature(op), tol=tol,
        max_iter=max_iter, chunk=target_chunk or lasso_batch(N, T, p.itemsize, left), progress=progress,
    )
    del op, c
    intercepts = st.y_mean[None, :] - (coefs.to(torch.float64) @ st.x_mean)
    return LassoPath(
        lambdas=to_np(lams),
        coefs=np.ascontiguousarray(to_np(coefs).transpose(0, 2, 1)),
        intercepts=to_np(intercepts),
        converged=to_np(ps.converged),
        n_iter=to_np(ps.n_iter),
        constant=to_np(const),
    )


@threads_by_size
def select_lasso(
    X: ArrayLike,
    Y: ArrayLike,
    fit_rows: ArrayLike | slice,
    val_rows: ArrayLike | slice,
    *,
    n_lambdas: int = 100,
    eps: float = 1e-3,
    lambdas: ArrayLike | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    refit: bool = True,
    patience: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    block_rows: int | None = None,
    target_chunk: int | None = None,
    gram: str | None = None,
    progress: Progress | None = None,
) -> SolverResult:
    """Path on the fit runs, per-target lambda by validation MSE, then refit on fit+validation.

    Validation MSE is computed for every (lambda, target) as the path is solved, so the path
    itself is never stored. `patience`, if set, stops a target's path once its validation
    MSE has not improved for that many lambdas (entries past it are NaN in `path_mse`);
    None solves the whole path. The refit keeps the chosen lambda and warm-starts from the
    fit-run solution. Ties in validation MSE go to the larger lambda. `gram` as in `lasso_path`
    (chosen by the number of fit runs).
    """
    p = prepare(X, Y, device, dtype)
    _check_solver_args(tol, max_iter)
    if patience is not None and patience < 1:
        raise FitError(f"patience must be at least 1 or None, got {patience}")
    sp = split_stats(p, fit_rows, val_rows, gram=gram, refit=refit, block_rows=block_rows, progress=progress,
                     footprint=Sizes.lasso)
    fit, val, st_fit, st_val, op = sp.fit, sp.val, sp.st_fit, sp.st_val, sp.op
    c, yy = st_fit.cross(p.dtype)
    st_all = st_fit.take_sum(st_val)  # the refit's X'Y sums, in the fit runs' buffer: one N x T float64 from here
    N, T = c.shape
    const = st_fit.constant
    lams = _path_lambdas(c, const, lambdas, n_lambdas, eps)
    k = lams.shape[0]

    # the validation masks as floats, centred once, when there is room: emit multiplies by them at every step
    as_floats, left = spend(val.size * N * (p.itemsize - 1), sp.left)
    vr = ValidationRows(p, val, st_fit.x_mean, st_fit.y_mean, block_rows, as_floats=as_floats)
    path_mse = torch.full((k, T), float("nan"), dtype=torch.float64, device=p.device)
    best_mse = torch.full((T,), float("inf"), dtype=torch.float64, device=p.device)
    best_k = torch.zeros(T, dtype=torch.long, device=p.device)
    W_best = torch.zeros(T, N, dtype=p.dtype, device=p.device)

    def emit(tids: torch.Tensor, ks: torch.Tensor, W: torch.Tensor) -> torch.Tensor | None:
        mse = mean_squared_error(vr.y[:, tids], vr.times(W.T))
        path_mse[ks, tids] = mse
        better = mse < best_mse[tids]
        b = better.nonzero().squeeze(1)
        if b.numel():
            best_mse[tids[b]] = mse[b]
            best_k[tids[b]] = ks[b]
            W_best[tids[b]] = W[b]
        if patience is None:
            return None
        return (ks - best_k[tids]) >= patience

    targets = (~const).nonzero().squeeze(1)
    chunk = target_chunk or lasso_batch(N, T, p.itemsize, left)
    ps = solve_paths(op, c.T.contiguous(), yy, lams, targets, emit, curv=curvature(op), tol=tol,
                     max_iter=max_iter, chunk=chunk, progress=progress)
    del c
    # constant targets: the prediction is the fit-run constant at every lambda
    if bool(const.any()):
        cmse = ((vr.y[:, const].to(torch.float64)) ** 2).mean(dim=0)
        path_mse[:, const] = cmse[None, :]
        best_mse[const] = cmse
        best_k[const] = 0
    del vr  # the validation runs, before the refit (emit, which reads them, is done)
    lam_best = lams.gather(0, best_k[None, :])[0]
    val_mse = best_mse
    val_r2 = r2_from(val_mse, st_val.y_var, st_val.constant)
    n_iter, converged = ps.n_iter, ps.converged

    if refit:
        op.extend(st_fit, st_all, p.X, val)
        c, yy = st_all.cross(p.dtype)
        W_final = torch.zeros(T, N, dtype=p.dtype, device=p.device)

        def emit_refit(tids: torch.Tensor, ks: torch.Tensor, W: torch.Tensor) -> None:
            W_final[tids] = W

        ps2 = solve_paths(op, c.T.contiguous(), yy, lam_best[None, :], targets, emit_refit,
                          curv=curvature(op), tol=tol, max_iter=max_iter, W0=W_best, chunk=chunk,
                          progress=progress)
        n_iter, converged = n_iter + ps2.n_iter, converged & ps2.converged
        st_out = st_all
    else:
        W_final, st_out = W_best, st_fit
    del op
    bias = st_out.y_mean - W_final.to(torch.float64) @ st_out.x_mean
    return SolverResult(
        method="lasso",
        W=np.ascontiguousarray(to_np(W_final).T),
        bias=to_np(bias),
        lam=to_np(lam_best.to(torch.float64)),
        val_mse=to_np(val_mse),
        val_r2=to_np(val_r2),
        nnz=to_np((W_final != 0).sum(dim=1)),
        n_fit=int(fit.size),
        n_val=int(val.size),
        refit=refit,
        lambdas=to_np(lams.to(torch.float64)),
        path_mse=to_np(path_mse),
        constant=to_np(const),
        converged=to_np(converged),
        n_iter=to_np(n_iter),
    )


__all__ = ["LassoPath", "lambda_grid", "lasso_path", "select_lasso", "GramStats"]
