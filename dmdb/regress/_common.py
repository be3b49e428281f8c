"""Plumbing shared by the estimators: checked inputs on a device, and validation scoring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ._inputs import (
    ArrayLike,
    Progress,
    check_dtype,
    check_masks,
    check_split,
    margins_to_numpy,
    mask_block,
    resolve_device,
    row_mean,
    rows_index,
)
from .memory import Sizes, check_memory
from .operators import GramOperator, choose_form, gram_operator
from .stats import GramStats, _default_block_rows, gram_stats


@dataclass
class Prepared:
    """Checked inputs: the masks stay where they are; margins a float32 or float64 array."""

    X: ArrayLike
    Y: np.ndarray
    n_runs: int
    n_train: int
    device: torch.device
    dtype: torch.dtype

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def prepare(X: ArrayLike, Y: ArrayLike, device: str | torch.device | None, dtype: torch.dtype) -> Prepared:
    n, N = check_masks(X)
    dev = resolve_device(device)
    check_dtype(dtype)
    Ynp = margins_to_numpy(Y, n)
    return Prepared(X=X, Y=Ynp, n_runs=n, n_train=N, device=dev, dtype=dtype)


@dataclass
class Split:
    """Fit and validation rows, their statistics (centred on the mean margin of both, so that a
    refit can add them up), G of the fit rows in the chosen form, and the device memory left
    beside the solver's large arrays (None: unknown)."""

    fit: np.ndarray
    val: np.ndarray
    st_fit: GramStats
    st_val: GramStats
    op: GramOperator
    left: int | None


def split_stats(p: Prepared, fit_rows: ArrayLike | slice, val_rows: ArrayLike | slice, *, gram: str | None,
                refit: bool, block_rows: int | None, progress: Progress | None,
                footprint: Callable[[Sizes], dict[str, int]]) -> Split:
    """The set-up every estimator with a Gram operator shares: checked disjoint rows, the memory
    check of the solver's `footprint` (before any work), one pass of statistics over each row set,
    and G's form chosen by the number of fit runs (with room for the validation rows when a refit
    will add them)."""
    fit = rows_index(fit_rows, p.n_runs, "fit_rows")
    val = rows_index(val_rows, p.n_runs, "val_rows")
    check_split(fit, val)
    form = choose_form(fit.size, p.n_train, gram)
    sizes = Sizes(n_fit=fit.size, n_val=val.size, N=p.n_train, T=p.Y.shape[1], itemsize=p.itemsize, form=form,
                  refit=refit)
    left = check_memory(footprint(sizes), p.device)
    shift = row_mean(p.Y, np.concatenate([fit, val]))
    kw: dict[str, Any] = dict(device=p.device, dtype=p.dtype, block_rows=block_rows, progress=progress, shift=shift)
    st_fit = gram_stats(p.X, p.Y, fit, with_gram=form == "matrix", **kw)
    st_val = gram_stats(p.X, p.Y, val, with_gram=False, **kw)
    op = gram_operator(form, st_fit, p.X, fit, reserve=val.size if refit else 0, device=p.device, dtype=p.dtype,
                       block_rows=block_rows)
    return Split(fit, val, st_fit, st_val, op, left)


class ValidationRows:
    """Validation runs: their masks on the device, and their margins centred by the fit means.

    The masks are held as 0/1 bytes (a quarter of float32, an eighth of float64: 60,000 runs x
    50,000 examples take 3 GB, not 12), and products are taken in row blocks, each block turned into
    the solver's floats and centred by the fit means on the way. `as_floats` holds them centred in
    the solver's floats instead, for a caller that multiplies by them many times (the lasso scores
    every lambda of every target) and has the room: then no block is converted twice.
    """

    def __init__(self, p: Prepared, rows: np.ndarray, x_mean: torch.Tensor, y_mean: torch.Tensor,
                 block_rows: int | None = None, *, as_floats: bool = False) -> None:
        self.x_mean = x_mean.to(p.dtype)
        self.masks = torch.empty(rows.size, p.n_train, dtype=p.dtype if as_floats else torch.uint8, device=p.device)
        self._step = block_rows or _default_block_rows(p.n_train)
        for a in range(0, rows.size, self._step):
            block = self.masks[a : a + self._step]
            block.copy_(mask_block(p.X, rows[a : a + self._step], p.device, block.dtype))
            if as_floats:
                block.sub_(self.x_mean)
        self.y = (torch.as_tensor(p.Y[rows], dtype=torch.float64, device=p.device) - y_mean).to(p.dtype)

    def times(self, M: torch.Tensor) -> torch.Tensor:
        """(masks - x_mean) M for an (N, m) matrix M of the solver's floats: the (runs, m) centred predictions."""
        if self.masks.is_floating_point():
            return self.masks @ M
        out = torch.empty(self.masks.shape[0], M.shape[1], dtype=M.dtype, device=M.device)
        for a in range(0, self.masks.shape[0], self._step):
            block = self.masks[a : a + self._step].to(M.dtype).sub_(self.x_mean)
            torch.matmul(block, M, out=out[a : a + self._step])
        return out


def mean_squared_error(y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Per column, the float64 mean of (y - pred)^2 over the (runs, m) rows, formed in `pred`'s memory
    (overwritten): no (runs, m) temporary, as the predictions of all targets can be large."""
    return torch.sub(y, pred, out=pred).square_().sum(dim=0, dtype=torch.float64) / y.shape[0]


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def r2_from(mse: torch.Tensor, var: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    """R^2 against the validation variance; NaN where validation margins do not vary."""
    r2 = 1.0 - mse / torch.where(constant, torch.ones_like(var), var)
    return torch.where(constant, torch.full_like(r2, float("nan")), r2)
