"""Sufficient statistics of (masks, margins): every solver needs only these, from one pass over X.

The masks are the big input (up to 50,000 x 10,000); reading them once in row blocks and
keeping only N x N and N x T sums is what lets every estimator run in memory. Sums over
disjoint row sets add, so the statistics of fit+validation rows are a sum, not a second pass.

The N x N matrix is held once: counts accumulate in one buffer (upper-triangle row panels,
mirrored at the end), `take_gram` centres them in place, and `extend_gram` turns that G into
the Gram matrix of more runs, again in place. At N = 50,000 that is 10 GB in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dmdb.errors import FitError

from ._inputs import ArrayLike, Progress, mask_block, row_mean

_EXACT_F32_ROWS = 1 << 23
"""X'X of 0/1 rows is an integer count, exact in float32 below 2**24; flush to float64 before."""

_PANEL_BYTES = 256 << 20
"""Size of one row panel of an N x N matrix worked on at a time (products, centring)."""


def panels(N: int, itemsize: int = 4) -> list[tuple[int, int]]:
    """Row panels (a, z) of an N x N matrix, each about `_PANEL_BYTES` of `itemsize` entries."""
    rows = max(1, _PANEL_BYTES // (itemsize * N))
    return [(a, min(N, a + rows)) for a in range(0, N, rows)]


def add_products(out: torch.Tensor, xb: torch.Tensor, *, int8: bool, alpha: float = 1.0) -> None:
    """out += alpha * xb'xb on the upper triangle (row panel a:z, columns a:), ~half the flops of
    a full product; `mirror_upper` completes it. `int8`: exact int8 x int8 -> int32 products
    (the CPU's choice: AMX/VNNI runs them ~7x faster than float32), `xb` holding only 0/1."""
    xi = xb.to(torch.int8) if int8 else xb
    for a, z in panels(out.shape[0]):
        if int8:
            # a fresh row-major copy: for N = 1, `.T.contiguous()` keeps a stride of 1 on the
            # size-1 dimension, and _int_mm then reads the wrong elements (zeros or garbage)
            left = torch.empty(z - a, xi.shape[0], dtype=torch.int8, device=xi.device).copy_(xi[:, a:z].T)
            prod = torch._int_mm(left, xi[:, a:])
            if out.dtype == torch.int32 and alpha == 1.0:
                out[a:z, a:] += prod
            else:
                out[a:z, a:].add_(prod, alpha=alpha)
        else:
            out[a:z, a:].addmm_(xi[:, a:z].T, xi[:, a:], alpha=alpha)


def mirror_upper(M: torch.Tensor, tile: int = 1024) -> None:
    """Fill the strict lower triangle of a square matrix from its upper triangle, in place, by
    square tiles (a transposed copy of whole panels strides through memory, ~5x slower)."""
    N = M.shape[0]
    for i in range(0, N, tile):
        for j in range(0, i + 1, tile):
            if j == i:
                d = M[i : i + tile, i : i + tile]
                d.copy_(torch.triu(d) + torch.triu(d, diagonal=1).T)
            else:
                M[i : i + tile, j : j + tile] = M[j : j + tile, i : i + tile].T


@dataclass
class GramStats:
    """Raw sums over a set of runs. Margins enter shifted by `shift` to avoid cancellation."""

    n: int
    col_sum: torch.Tensor  # (N,) float64: runs containing each example
    xtx: torch.Tensor | None  # (N, N) X'X counts (int32, float32 or float64), or None: not asked for / taken
    xty: torch.Tensor | None  # (N, T) float64: X'(Y - shift), or None: taken (`take_xty`, `take_sum`)
    y_sum: torch.Tensor  # (T,) float64: sum of (Y - shift)
    y_sq: torch.Tensor  # (T,) float64: sum of (Y - shift)**2
    y_min: torch.Tensor  # (T,) float64
    y_max: torch.Tensor  # (T,) float64
    shift: torch.Tensor  # (T,) float64

    def take_sum(self, other: "GramStats") -> "GramStats":
        """The statistics of both run sets (without X'X: see `extend_gram`), their X'Y sums added in
        this one's buffer and taken from both (as `take_gram` takes the counts): one N x T float64
        array held, not three (4 GB each at 50,000 x 10,000). Both keep their other statistics."""
        if not torch.equal(self.shift, other.shift):
            raise FitError("cannot add statistics computed with different margin shifts")
        xty = self.take_xty().add_(other.take_xty())
        return GramStats(
            n=self.n + other.n,
            col_sum=self.col_sum + other.col_sum,
            xtx=None,
            xty=xty,
            y_sum=self.y_sum + other.y_sum,
            y_sq=self.y_sq + other.y_sq,
            y_min=torch.minimum(self.y_min, other.y_min),
            y_max=torch.maximum(self.y_max, other.y_max),
            shift=self.shift,
        )

    def take_xty(self) -> torch.Tensor:
        """The X'Y sums, taken from these statistics (the caller writes over them)."""
        xty, self.xty = self._held_xty(), None
        return xty

    def _held_xty(self) -> torch.Tensor:
        if self.xty is None:
            raise FitError("these statistics hold no X'Y sums (already taken)")
        return self.xty

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

    @property
    def varying(self) -> torch.Tensor:
        """Examples in some but not all of these runs; the others' centred mask columns are zero."""
        return (self.col_sum > 0) & (self.col_sum < self.n)

    def cross(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """c = Xc'yc/n (N, T) and yc'yc/n (T,), formed in float64 then cast once. The row of an
        example in every run or in none is 0 exactly: X'Y sums in the solver's float32 leave it
        rounding noise, which its zero column of G cannot hold back, so the lasso path would
        grow that example a weight without bound once lambda fell below the noise."""
        c = torch.addr(self._held_xty(), self.x_mean, self.y_sum / self.n, beta=1 / self.n, alpha=-1)  # one N x T temporary
        c.masked_fill_(~self.varying[:, None], 0.0)
        return c.to(dtype), self.y_var.to(dtype)

    def take_gram(self, dtype: torch.dtype) -> torch.Tensor:
        """G = Xc'Xc/n, centred panel by panel in float64 and written over the counts when they
        have the width of `dtype` (so the N x N memory is held once); the counts are released."""
        if self.xtx is None:
            raise FitError("these statistics hold no X'X (computed with with_gram=False, or already taken)")
        counts, self.xtx = self.xtx, None
        N = counts.shape[0]
        if counts.element_size() == torch.empty((), dtype=dtype).element_size():
            G = counts.view(dtype)
        else:
            G = torch.empty(N, N, dtype=dtype, device=counts.device)
        xm = self.x_mean
        for a, z in panels(N, 8):
            blk = counts[a:z].to(torch.float64).div_(self.n)
            G[a:z] = blk.addr_(xm[a:z], xm, alpha=-1)
        return G


def _new_sums(N: int, T: int, device: torch.device) -> dict[str, torch.Tensor]:
    f64: dict[str, Any] = dict(dtype=torch.float64, device=device)
    return dict(col_sum=torch.zeros(N, **f64), xty=torch.zeros(N, T, **f64), y_sum=torch.zeros(T, **f64),
                y_sq=torch.zeros(T, **f64), y_min=torch.full((T,), float("inf"), **f64),
                y_max=torch.full((T,), float("-inf"), **f64))


def _use_int8(device: torch.device) -> bool:
    """int8 products for X'X only on CPUs with int8 dot-product instructions (VNNI, AMX), where
    oneDNN makes them faster than float32 GEMMs. Elsewhere torch._int_mm falls back to a plain
    loop: on an AVX2 CPU without VNNI (AMD EPYC, 2 cores) it took 2.15 s for a 2048 x 1024 x 1024
    product that float32 did in 0.04 s, and 69 s of a 76 s lasso path."""
    if device.type != "cpu" or not hasattr(torch, "_int_mm"):
        return False
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in ("_is_vnni_supported", "_is_amx_tile_supported"))


def _default_block_rows(N: int) -> int:
    """~256 MB of float mask block at a time, but at least 256 rows for efficient GEMMs."""
    return max(256, min(8192, (256 << 20) // (4 * N)))


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
    sums, X'Y. `Y` is the (runs, T) margins array (already checked), float32 or float64;
    its blocks become float64 before they are summed.
    """
    N, T = X.shape[1], Y.shape[1]
    if shift is None:
        shift_t = torch.as_tensor(row_mean(Y, rows), dtype=torch.float64, device=device)
    else:
        shift_t = torch.as_tensor(shift, dtype=torch.float64, device=device)
    block_rows = min(block_rows or _default_block_rows(N), _EXACT_F32_ROWS)
    s = _new_sums(N, T, device)
    counts = _Counts(N, device, dtype, _use_int8(device)) if with_gram else None
    n_blocks = (rows.size + block_rows - 1) // block_rows
    cols = max(1, _PANEL_BYTES // (N * 12))  # an N x cols product and its float64 copy
    for b in range(n_blocks):
        idx = rows[b * block_rows : (b + 1) * block_rows]
        xb = mask_block(X, idx, device, dtype)
        yb64 = torch.as_tensor(Y[idx], dtype=torch.float64, device=device) - shift_t
        s["col_sum"] += xb.sum(dim=0).to(torch.float64)  # counts: exact in xb's dtype (< 2**24 rows a block)
        yb = yb64.to(dtype)
        for a in range(0, T, cols):  # X'Y by column panels: the float64 temporary stays ~_PANEL_BYTES
            s["xty"][:, a : a + cols] += (xb.T @ yb[:, a : a + cols]).to(torch.float64)
        s["y_sum"] += yb64.sum(dim=0)
        s["y_sq"] += (yb64 * yb64).sum(dim=0)
        yraw = yb64 + shift_t
        s["y_min"] = torch.minimum(s["y_min"], yraw.amin(dim=0))
        s["y_max"] = torch.maximum(s["y_max"], yraw.amax(dim=0))
        if counts is not None:
            counts.add(xb)
        if progress is not None:
            progress("statistics", b + 1, n_blocks)
    return GramStats(n=int(rows.size), xtx=counts.total() if counts is not None else None, shift=shift_t, **s)


def extend_gram(
    G: torch.Tensor,
    base: GramStats,
    total: GramStats,
    X: ArrayLike,
    rows: np.ndarray,
    *,
    block_rows: int | None = None,
) -> None:
    """Turn G, the centred Gram matrix of `base`'s runs, into that of `total`'s: base's runs plus
    `rows`, in place: G <- (n_b (G + m_b m_b') + X_r'X_r) / n - m m'. One pass over the rows' masks
    with products in row panels, no second N x N matrix."""
    check_extension(base, total, rows)
    N = G.shape[0]
    fb = base.n / total.n
    mb, m = base.x_mean, total.x_mean
    for a, z in panels(N, 8):
        blk = G[a:z].to(torch.float64).mul_(fb).addr_(mb[a:z], mb, alpha=fb)
        G[a:z] = blk.addr_(m[a:z], m, alpha=-1)
    block_rows = block_rows or _default_block_rows(N)
    int8 = _use_int8(G.device)
    for s in range(0, rows.size, block_rows):
        xb = mask_block(X, rows[s : s + block_rows], G.device, G.dtype)
        add_products(G, xb, int8=int8, alpha=1.0 / total.n)
    mirror_upper(G)


def check_extension(base: GramStats, total: GramStats, rows: np.ndarray) -> None:
    if total.n - base.n != rows.size:
        raise FitError(f"the statistics add {total.n - base.n} runs to the held ones but {rows.size} rows were given")


class _Counts:
    """X'X of 0/1 blocks, exact: int8 products summed in int32 on the CPU, else float32 (or the
    solver's float64) products, a float32 sum flushed to float64 before it could pass 2**24."""

    def __init__(self, N: int, device: torch.device, dtype: torch.dtype, int8: bool) -> None:
        self.int8 = int8
        self.acc = torch.zeros(N, N, dtype=torch.int32 if self.int8 else dtype, device=device)
        self.flushed: torch.Tensor | None = None  # float64 sums of earlier float32 accumulators
        self.rows = 0

    def add(self, xb: torch.Tensor) -> None:
        n = xb.shape[0]
        if self.acc.dtype == torch.float32 and self.rows + n > _EXACT_F32_ROWS:
            self.flushed = self.acc.to(torch.float64) if self.flushed is None else self.flushed.add_(self.acc)
            self.acc.zero_()
            self.rows = 0
        add_products(self.acc, xb, int8=self.int8)
        self.rows += n

    def total(self) -> torch.Tensor:
        """The symmetric N x N counts; the accumulator is handed over, not copied (float64 only
        past 2**23 runs of float32 sums)."""
        acc = self.acc
        del self.acc
        out = acc if self.flushed is None else self.flushed.add_(acc)
        mirror_upper(out)
        return out
