"""Sufficient statistics of (masks, margins): every solver needs only these, from one pass over X.

The masks are the big input (up to 50,000 x 10,000); reading them once in row blocks and
keeping only N x N and N x T sums is what lets every estimator run in memory. Sums over
disjoint row sets add, so the statistics of fit+validation rows are a sum, not a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dmdb.errors import FitError

from ._inputs import ArrayLike, Progress, mask_block

_EXACT_F32_ROWS = 1 << 23
"""X'X of 0/1 rows is an integer count, exact in float32 below 2**24; flush to float64 before."""


@dataclass
class GramStats:
    """Raw sums over a set of runs. Margins enter shifted by `shift` to avoid cancellation."""

    n: int
    col_sum: torch.Tensor  # (N,) float64: runs containing each example
    xtx: torch.Tensor | None  # (N, N) float64: X'X, or None when not asked for
    xty: torch.Tensor  # (N, T) float64: X'(Y - shift)
    y_sum: torch.Tensor  # (T,) float64: sum of (Y - shift)
    y_sq: torch.Tensor  # (T,) float64: sum of (Y - shift)**2
    y_min: torch.Tensor  # (T,) float64
    y_max: torch.Tensor  # (T,) float64
    shift: torch.Tensor  # (T,) float64

    def __add__(self, other: "GramStats") -> "GramStats":
        if not torch.equal(self.shift, other.shift):
            raise FitError("cannot add statistics computed with different margin shifts")
        xtx = None if self.xtx is None or other.xtx is None else self.xtx + other.xtx
        return GramStats(
            n=self.n + other.n,
            col_sum=self.col_sum + other.col_sum,
            xtx=xtx,
            xty=self.xty + other.xty,
            y_sum=self.y_sum + other.y_sum,
            y_sq=self.y_sq + other.y_sq,
            y_min=torch.minimum(self.y_min, other.y_min),
            y_max=torch.maximum(self.y_max, other.y_max),
            shift=self.shift,
        )

    @property
    def x_mean(self) -> torch.Tensor:
        return self.col_sum / self.n

    @property
    def y_mean(self) -> torch.Tensor:
        return self.shift + self.y_sum / self.n

    @property
    def y_var(self) -> torch.Tensor:
        """Population variance of each target (divide by n), never negative."""
        m = self.y_sum / self.n
        return torch.clamp(self.y_sq / self.n - m * m, min=0.0)

    @property
    def constant(self) -> torch.Tensor:
        """Targets whose margins are all equal on these runs: nothing to regress on."""
        return self.y_max == self.y_min

    def centred(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """G = Xc'Xc/n, c = Xc'yc/n and yc'yc/n, formed in float64 then cast once."""
        if self.xtx is None:
            raise FitError("these statistics were computed without X'X (with_gram=False)")
        xm = self.x_mean
        G = self.xtx / self.n - torch.outer(xm, xm)
        ym = self.y_sum / self.n  # mean of shifted margins
        c = self.xty / self.n - torch.outer(xm, ym)
        return G.to(dtype), c.to(dtype), self.y_var.to(dtype)


def gram_stats(
    X: ArrayLike,
    Y: np.ndarray,
    rows: np.ndarray,
    *,
    shift: np.ndarray | torch.Tensor | None = None,
    with_gram: bool = True,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    block_rows: int | None = None,
    progress: Progress | None = None,
) -> GramStats:
    """One pass over row blocks of X: X'X (exact integer counts, see `_Counts`), column
    sums, X'Y. `Y` is the float64 (runs, T) margins array (already checked); X'Y blocks are
    summed into float64.
    """
    n_runs, N = X.shape
    T = Y.shape[1]
    if shift is None:
        shift_t = torch.as_tensor(Y[rows].mean(axis=0), dtype=torch.float64, device=device)
    else:
        shift_t = torch.as_tensor(shift, dtype=torch.float64, device=device)
    if block_rows is None:
        # ~256 MB of float mask block at a time, but at least 256 rows for efficient GEMMs
        block_rows = max(256, min(8192, (256 << 20) // (4 * N)))
    col_sum = torch.zeros(N, dtype=torch.float64, device=device)
    xty = torch.zeros(N, T, dtype=torch.float64, device=device)
    y_sum = torch.zeros(T, dtype=torch.float64, device=device)
    y_sq = torch.zeros(T, dtype=torch.float64, device=device)
    y_min = torch.full((T,), float("inf"), dtype=torch.float64, device=device)
    y_max = torch.full((T,), float("-inf"), dtype=torch.float64, device=device)
    int8 = device.type == "cpu" and hasattr(torch, "_int_mm")
    counts = _Counts(N, device, dtype, int8) if with_gram else None
    n_blocks = (rows.size + block_rows - 1) // block_rows
    for b in range(n_blocks):
        idx = rows[b * block_rows : (b + 1) * block_rows]
        xb = mask_block(X, idx, device, dtype)
        yb64 = torch.as_tensor(Y[idx], dtype=torch.float64, device=device) - shift_t
        col_sum += xb.sum(dim=0, dtype=torch.float64)
        xty += (xb.T @ yb64.to(dtype)).to(torch.float64)
        y_sum += yb64.sum(dim=0)
        y_sq += (yb64 * yb64).sum(dim=0)
        yraw = yb64 + shift_t
        y_min = torch.minimum(y_min, yraw.amin(dim=0))
        y_max = torch.maximum(y_max, yraw.amax(dim=0))
        if counts is not None:
            counts.add(xb)
        if progress is not None:
            progress("statistics", b + 1, n_blocks)
    xtx64 = counts.total() if counts is not None else None
    return GramStats(
        n=int(rows.size),
        col_sum=col_sum,
        xtx=xtx64,
        xty=xty,
        y_sum=y_sum,
        y_sq=y_sq,
        y_min=y_min,
        y_max=y_max,
        shift=shift_t,
    )


class _Counts:
    """X'X of 0/1 blocks, exact: as int8 x int8 -> int32 products (`int8`, the CPU's choice:
    AMX/VNNI, ~7x float32 there), else as float32 upper-triangle panels, flushed to float64
    before the counts could pass 2**24."""

    def __init__(self, N: int, device: torch.device, dtype: torch.dtype, int8: bool) -> None:
        self.int8 = int8
        self.acc = torch.zeros(N, N, dtype=torch.int32 if int8 else dtype, device=device)
        self.flushed: torch.Tensor | None = None  # float64 sums of earlier float32 accumulators
        self.rows = 0
        self.panels = np.linspace(0, N, 5 if N >= 1024 else 2, dtype=np.int64)

    def add(self, xb: torch.Tensor) -> None:
        n = xb.shape[0]
        if self.int8:
            xi = xb.to(torch.int8)
            self.acc += torch._int_mm(xi.T.contiguous(), xi)
            return
        if self.acc.dtype == torch.float32 and self.rows + n > _EXACT_F32_ROWS:
            self._flush()
        # row panels of the upper triangle: ~5/8 of the GEMM flops of a full X'X
        for a, z in zip(self.panels[:-1], self.panels[1:]):
            self.acc[a:z, a:].addmm_(xb[:, a:z].T, xb[:, a:])
        self.rows += n

    def _merged(self) -> torch.Tensor:
        acc64 = self.acc.to(torch.float64)
        return acc64 if self.flushed is None else self.flushed.add_(acc64)

    def _flush(self) -> None:
        self.flushed = self._merged()
        self.acc.zero_()
        self.rows = 0

    def total(self) -> torch.Tensor:
        """The float64 N x N counts; the accumulator is released."""
        total = self._merged()
        del self.acc
        if self.int8:
            return total
        return torch.triu(total) + torch.triu(total, diagonal=1).T
