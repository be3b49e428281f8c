"""Checks on arrays coming from users, run before anything is written."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import BadInputError
from .plan import ROLES


def as_run_ids(run_ids: Any) -> np.ndarray:
    ids = np.asarray(run_ids)
    if ids.ndim != 1:
        raise BadInputError(f"run ids must be a 1-D sequence, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise BadInputError(f"run ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and ids.min() < 0:
        raise BadInputError(f"run ids must be >= 0, got {int(ids.min())}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise BadInputError(f"run id {int(uniq[counts > 1][0])} appears more than once in one batch")
    return ids


def as_masks(masks: Any, n_runs: int, n_train: int) -> np.ndarray:
    m = np.asarray(masks)
    if m.dtype != np.bool_:
        raise BadInputError(
            f"masks must have dtype bool (one True per train example in the subset), got {m.dtype}; "
            "convert with mask.astype(bool) if it holds 0/1"
        )
    if m.shape != (n_runs, n_train):
        raise BadInputError(f"masks must have shape (runs, n_train) = ({n_runs}, {n_train}), got {m.shape}")
    return m


def as_margins(margins: Any, n_runs: int, n_targets: int) -> np.ndarray:
    y = np.asarray(margins)
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise BadInputError(f"margins must be numbers, got dtype {y.dtype}")
    if y.shape != (n_runs, n_targets):
        raise BadInputError(f"margins must have shape (runs, n_targets) = ({n_runs}, {n_targets}), got {y.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf, reported below
        y32 = y.astype(np.float32, copy=False)
    bad = ~np.isfinite(y32)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(y32[row, col]) else "inf (or a value beyond float32 range)"
        raise BadInputError(f"margins hold {int(bad.sum())} non-finite values; first: {what} at run row {row}, target {col}")
    return y32


def as_role(role: str) -> str:
    if role not in ROLES:
        raise BadInputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def as_optional_column(values: Any, n_runs: int, name: str, dtype: type) -> np.ndarray | None:
    if values is None:
        return None
    a = np.asarray(values)
    if a.ndim == 0:
        a = np.full(n_runs, a)
    if a.shape != (n_runs,):
        raise BadInputError(f"{name} must have one value per run ({n_runs}), got shape {a.shape}")
    try:
        return a.astype(dtype)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"{name} must be {dtype.__name__} values: {e}") from e
