"""Input checks shared by the solvers, so every bad call fails the same way before any work."""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch

from dmdb.errors import FitError
from dmdb.packing import PackedMasks

ArrayLike = Union[np.ndarray, torch.Tensor, PackedMasks]
Progress = Callable[[str, int, int], None]

MIN_FIT_RUNS = 2
"""Centring needs two runs; anything fewer cannot separate a weight from the intercept."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Pick CUDA when present unless told otherwise; refuse CUDA we do not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FitError(f"unknown device {device!r}: use 'cpu', 'cuda' or None (CLI: --device cpu|cuda, or none)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FitError(
            f"device {str(device)!r} was requested but torch sees no CUDA device; "
            "use device='cpu' (CLI: --device cpu), or None (no --device) to pick automatically"
        )
    if dev.type not in ("cpu", "cuda"):
        raise FitError(f"device {str(device)!r} is not supported: use 'cpu' or 'cuda'")
    return dev


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """Only the two float widths make sense for the solvers."""
    if dtype not in (torch.float32, torch.float64):
        raise FitError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def check_masks(X: ArrayLike) -> tuple[int, int]:
    """Masks must be a 2-D matrix; 0/1 values are checked block by block when read."""
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise FitError(f"masks must be a 2-D (runs, train examples) matrix, got shape {shape}")
    if shape[1] < 1:
        raise FitError("masks have no train-example columns")
    return int(shape[0]), int(shape[1])


def margins_to_numpy(Y: ArrayLike, n_runs: int) -> np.ndarray:
    """Margins as a float32 or float64 (runs, targets) array: float32 stays float32 (the store's
    type; at 300,000 runs x 10,000 targets that is 12 GB, float64 would be 24), anything else
    becomes float64. Solvers convert row blocks to float64 before they sum."""
    if isinstance(Y, torch.Tensor):
        Y = Y.detach().cpu().numpy()
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise FitError(f"margins must be a (runs, targets) matrix, got shape {Y.shape}")
    if Y.shape[0] != n_runs:
        raise FitError(
            f"masks have {n_runs} runs but margins have {Y.shape[0]}: both need one row per run"
        )
    if Y.shape[1] < 1:
        raise FitError("margins have no target columns")
    if not np.issubdtype(Y.dtype, np.number) or np.issubdtype(Y.dtype, np.complexfloating):
        raise FitError(f"margins must be real numbers, got dtype {Y.dtype}")
    if Y.dtype not in (np.float32, np.float64):
        Y = Y.astype(np.float64)
    if not np.isfinite(Y).all():
        bad = np.unique(np.nonzero(~np.isfinite(Y))[1])
        raise FitError(
            f"margins contain NaN or inf in {bad.size} target column(s) (first: {bad[:5].tolist()}); "
            "drop or repair those runs before fitting"
        )
    return Y


def rows_index(rows: ArrayLike | slice | None, n_runs: int, what: str) -> np.ndarray:
    """Normalise a row selection (None, slice, bool mask or indices) to sorted unique int64 indices."""
    if rows is None:
        return np.arange(n_runs, dtype=np.int64)
    if isinstance(rows, slice):
        return np.arange(n_runs, dtype=np.int64)[rows]
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    idx = np.asarray(rows)
    if idx.dtype == bool:
        if idx.shape != (n_runs,):
            raise FitError(f"{what} as a boolean mask must have length {n_runs}, got {idx.shape}")
        return np.nonzero(idx)[0].astype(np.int64)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise FitError(f"{what} must be a 1-D array of run indices or a boolean mask")
    if idx.size and (idx.min() < 0 or idx.max() >= n_runs):
        raise FitError(f"{what} has indices outside 0..{n_runs - 1}")
    out = np.unique(idx.astype(np.int64))
    if out.size != idx.size:
        raise FitError(f"{what} repeats some run indices")
    return out


def check_split(fit: np.ndarray, val: np.ndarray) -> None:
    """A validation score means nothing if the rows overlap or there are too few."""
    if fit.size < MIN_FIT_RUNS:
        raise FitError(f"too few fit runs: {fit.size} (need at least {MIN_FIT_RUNS})")
    if val.size < 1:
        raise FitError("no validation runs: give at least one run to choose lambda on")
    if np.intersect1d(fit, val, assume_unique=True).size:
        raise FitError("fit and validation runs overlap: give disjoint row sets")


_NUMPY_TYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.uint8: np.uint8}
"""The types mask blocks are read as: the solvers' floats, and bytes for validation rows."""


def mask_block(X: ArrayLike, idx: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Rows of the masks as a block of `dtype` (a _NUMPY_TYPES key) on the device, rejecting anything but 0/1."""
    if isinstance(X, torch.Tensor):
        t = X[torch.as_tensor(idx, device=X.device)]
    else:
        contiguous = idx.size > 0 and idx[-1] - idx[0] + 1 == idx.size
        block = np.ascontiguousarray(X[idx[0] : idx[-1] + 1] if contiguous else X[idx])
        if block.dtype == bool and device.type == "cpu":  # numpy casts bool ~3x faster than torch
            return torch.from_numpy(block.astype(_NUMPY_TYPES[dtype]))
        t = torch.from_numpy(block)
    if t.dtype != torch.bool:
        if t.is_complex() or ((t != 0) & (t != 1)).any():
            raise FitError("masks must be boolean or hold only 0 and 1")
    return t.to(device=device, dtype=dtype, non_blocking=True)


def row_mean(Y: np.ndarray, rows: np.ndarray, block_rows: int = 8192) -> np.ndarray:
    """float64 mean of the chosen rows of Y, by blocks (no copy of all the rows at once)."""
    total = np.zeros(Y.shape[1], dtype=np.float64)
    for a in range(0, rows.size, block_rows):
        total += Y[rows[a : a + block_rows]].sum(axis=0, dtype=np.float64)
    return total / max(rows.size, 1)


def row_spread(Y: np.ndarray, rows: np.ndarray, block_rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """float64 population variance of each column over the chosen rows of Y, and whether the column
    is constant on them (every value equal), by blocks."""
    mean = row_mean(Y, rows, block_rows)
    sq = np.zeros(Y.shape[1], dtype=np.float64)
    lo, hi = np.full(Y.shape[1], np.inf), np.full(Y.shape[1], -np.inf)
    for a in range(0, rows.size, block_rows):
        block = Y[rows[a : a + block_rows]]
        sq += ((block - mean) ** 2).sum(axis=0)
        lo, hi = np.minimum(lo, block.min(axis=0)), np.maximum(hi, block.max(axis=0))
    return sq / max(rows.size, 1), lo == hi
