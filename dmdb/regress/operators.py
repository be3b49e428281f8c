"""The centred Gram matrix G = Xc'Xc/n that the lasso solver multiplies by, in one of two forms.

`GramMatrix` holds G itself (N x N): one product per iteration costs 2 B N^2 flops for B targets.
`CentredMasks` holds the centred masks Xc (runs x N) and applies G as (Z Xc') Xc / n: 4 B n N
flops, and n x N memory instead of N x N. With fewer runs than half the train examples (a first
study of CIFAR-10: 10,000 runs of 50,000 examples) the masks are the smaller and cheaper form,
and no X'X pass over the runs is needed. `choose_form` picks by that rule.

Both forms can grow in place from the fit runs to fit + validation runs for the refit (`extend`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from dmdb.errors import FitError

from ._inputs import ArrayLike, mask_block
from .stats import GramStats, _default_block_rows, check_extension, extend_gram

Form = Literal["matrix", "masks"]

EXACT_EIGEN_MAX = 1000
"""Below this size the curvature comes from a dense eigendecomposition, not subspace iteration."""


def choose_form(n_runs: int, N: int, form: str | None = None) -> Form:
    """'masks' when n_runs <= N/2 (then 4 B n N <= 2 B N^2 flops and n N < N^2 memory), else
    'matrix'; an explicit `form` wins."""
    if form is None:
        return "masks" if 2 * n_runs <= N else "matrix"
    if form not in ("matrix", "masks"):
        raise FitError(f"gram form must be 'matrix', 'masks' or None (automatic), got {form!r}")
    return form  # type: ignore[return-value]


class GramMatrix:
    """G held as an N x N matrix (taken from the statistics' X'X counts, centred in place)."""

    def __init__(self, G: torch.Tensor, n_runs: int, block_rows: int | None = None) -> None:
        self.G = G
        self.n_runs = n_runs
        self._block_rows = block_rows
        self.N = G.shape[0]
        self.device, self.dtype = G.device, G.dtype

    def product(self, Z: torch.Tensor) -> torch.Tensor:
        """Z G for a (B, N) batch of iterates."""
        return Z @ self.G

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """G V for a (N, m) block (G is symmetric)."""
        return self.G @ V

    def small_spectrum(self) -> torch.Tensor | None:
        """A symmetric matrix with G's nonzero spectrum, when small enough to decompose."""
        return self.G if self.N <= EXACT_EIGEN_MAX else None

    def extend(self, base: GramStats, total: GramStats, X: ArrayLike, rows: np.ndarray) -> None:
        extend_gram(self.G, base, total, X, rows, block_rows=self._block_rows)
        self.n_runs = total.n


class CentredMasks:
    """G applied through the centred masks: Xc (n x N, the solver's dtype) is held, G never is.

    The buffer is sized for the fit runs plus `reserve` more rows, so that `extend` can add the
    validation runs for the refit without a second copy.
    """

    def __init__(self, X: ArrayLike, rows: np.ndarray, x_mean: torch.Tensor, *, reserve: int = 0,
                 device: torch.device, dtype: torch.dtype, block_rows: int | None = None) -> None:
        N = int(X.shape[1])
        self._buf = torch.empty(rows.size + reserve, N, dtype=dtype, device=device)
        self._mean = x_mean
        self._block_rows = block_rows or _default_block_rows(N)
        self.N = N
        self.device, self.dtype = self._buf.device, self._buf.dtype
        self.n_runs = 0
        self._fill(X, rows)

    @property
    def Xc(self) -> torch.Tensor:
        return self._buf[: self.n_runs]

    def _check_room(self, more: int) -> None:
        if self.n_runs + more > self._buf.shape[0]:
            raise FitError(f"room for {self._buf.shape[0]} runs, asked to hold {self.n_runs + more}")

    def _fill(self, X: ArrayLike, rows: np.ndarray) -> None:
        self._check_room(rows.size)
        m = self._mean.to(self._buf.dtype)
        for s in range(0, rows.size, self._block_rows):
            idx = rows[s : s + self._block_rows]
            dst = self._buf[self.n_runs : self.n_runs + idx.size]
            torch.sub(mask_block(X, idx, self._buf.device, self._buf.dtype), m, out=dst)
            self.n_runs += idx.size

    def product(self, Z: torch.Tensor) -> torch.Tensor:
        Xc = self.Xc
        return (Z @ Xc.T).div_(self.n_runs) @ Xc  # the division on the (B, n) factor

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        Xc = self.Xc
        return (Xc.T @ (Xc @ V)).div_(self.n_runs)

    def small_spectrum(self) -> torch.Tensor | None:
        """Xc Xc'/n (n x n) has the nonzero eigenvalues of Xc'Xc/n."""
        if min(self.n_runs, self.N) > EXACT_EIGEN_MAX:
            return None
        Xc = self.Xc
        return (Xc @ Xc.T) / self.n_runs if self.n_runs <= self.N else (Xc.T @ Xc) / self.n_runs

    def extend(self, base: GramStats, total: GramStats, X: ArrayLike, rows: np.ndarray) -> None:
        """Re-centre the held rows (base's runs) on the mean of `total`'s runs and append `rows`, the
        runs total adds."""
        check_extension(base, total, rows)
        self._check_room(rows.size)  # before the held rows change
        shift = (total.x_mean - self._mean).to(self._buf.dtype)
        for s in range(0, self.n_runs, self._block_rows):
            self._buf[s : s + self._block_rows].sub_(shift)
        self._mean = total.x_mean
        self._fill(X, rows)


GramOperator = GramMatrix | CentredMasks


def gram_operator(form: Form, st: GramStats, X: ArrayLike, rows: np.ndarray, *, reserve: int,
                  device: torch.device, dtype: torch.dtype, block_rows: int | None) -> GramOperator:
    """G of the statistics' runs `rows` in the chosen form (`st` holds X'X exactly when form is
    'matrix'); `reserve`: room for the validation rows a refit will add to the masks form."""
    if form == "matrix":
        return GramMatrix(st.take_gram(dtype), st.n, block_rows)
    return CentredMasks(X, rows, st.x_mean, reserve=reserve, device=device, dtype=dtype, block_rows=block_rows)
