"""Checks on arrays coming from users, run before anything is written."""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from .errors import BadInputError
from .plan import ROLES


def as_array(values: Any, what: str) -> np.ndarray:
    """np.asarray, with numpy's complaints about ragged or odd input turned into BadInputError.
    A torch tensor (on a GPU, or one that requires grad, as a training loop's margins are)
    is detached and copied to the CPU first; torch itself is not imported here. A masked array
    with masked entries is refused."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ma.MaskedArray):  # np.asarray would keep the values under the mask
        if np.ma.getmaskarray(values).any():
            raise BadInputError(f"{what} has masked entries: fill or drop them before recording")
        values = values.data
    try:
        return np.asarray(values)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadInputError(f"{what} must be a rectangular array of numbers: {e}") from e


def as_run_margins(margins: Any, n_targets: int | None) -> np.ndarray:
    """One run's margins: 1-D and, where n_targets is known, one per target. Told in one run's terms
    (the batch check as_margins runs later would report shape (1, 31) for 31 margins)."""
    y = as_array(margins, "margins")
    if y.ndim != 1:
        raise BadInputError(f"margins of one run must be 1-D (one per target), got shape {y.shape}")
    if n_targets is not None and y.size != n_targets:
        raise BadInputError(f"margins of one run must hold one value per target ({n_targets}), got {y.size}")
    return y


def as_run_ids(run_ids: Any) -> np.ndarray:
    ids = as_array(run_ids, "run ids")
    if ids.ndim != 1:
        raise BadInputError(f"run ids must be a 1-D sequence, got shape {ids.shape}")
    if ids.size and ids.dtype == object and all(is_int(x) for x in ids):
        # numpy's dtype for Python ints beyond int64, but also an object array of small ones
        big = [int(x) for x in ids if not -2**63 <= int(x) < 2**63]
        if big:
            raise BadInputError(f"run ids must fit in int64 (0 .. 2**63 - 1), got {max(big, key=abs)}")
        ids = ids.astype(np.int64)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise BadInputError(f"run ids must be integers, got dtype {ids.dtype}")
    if ids.size and ids.dtype == np.uint64 and ids.max() > np.iinfo(np.int64).max:
        raise BadInputError(f"run ids must fit in int64, got {int(ids.max())}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and ids.min() < 0:
        raise BadInputError(f"run ids must be >= 0, got {int(ids.min())}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise BadInputError(f"run id {int(uniq[counts > 1][0])} appears more than once in one batch")
    return ids


def as_masks(masks: Any, n_runs: int, n_train: int) -> np.ndarray:
    m = as_array(masks, "masks")
    if n_runs == 0 and m.shape == (0,):  # an empty batch as []: no dtype or row length to check
        return np.zeros((0, n_train), dtype=bool)
    if m.dtype != np.bool_:
        raise BadInputError(
            f"masks must have dtype bool (one True per train example in the subset), got {m.dtype}; "
            "convert with mask.astype(bool) if it holds 0/1"
        )
    if m.shape != (n_runs, n_train):
        raise BadInputError(f"masks must have shape (runs, n_train) = ({n_runs}, {n_train}), got {m.shape}")
    return m


def as_margins(margins: Any, n_runs: int, n_targets: int) -> np.ndarray:
    y = as_array(margins, "margins")
    if n_runs == 0 and y.shape == (0,):
        return np.zeros((0, n_targets), dtype=np.float32)
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
        where = f"target {col}" if y32.shape[0] == 1 else f"run row {row}, target {col}"  # one run: no row to name
        raise BadInputError(f"margins hold {int(bad.sum())} non-finite values; first: {what} at {where}")
    return y32


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool (True would count as 1) and not a float (even 2.0)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


INT64_MAX = 2**63 - 1


def as_int(value: Any, what: str, low: int, high: int = INT64_MAX) -> int:
    """An integer in [low, high]; floats (even 2.0), bools and strings are refused, not rounded."""
    if not is_int(value):
        raise BadInputError(f"{what} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        # below the floor, the floor alone ('k must be >= 1', not 'in 1..9223372036854775807')
        bound = f">= {low}" if int(value) < low and high == INT64_MAX else f"in {low}..{high}"
        raise BadInputError(f"{what} must be {bound}, got {value}")
    return int(value)


def as_real(value: Any, what: str) -> float:
    """A real number (int or float, not bool or string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadInputError(f"{what} must be a number, got {value!r}")
    return float(value)


def as_role(role: str) -> str:
    if not isinstance(role, str) or role not in ROLES:
        raise BadInputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def as_roles(role: Any, n_runs: int) -> np.ndarray:
    """One role for every run, or a sequence with one role per run."""
    if isinstance(role, str):
        return np.full(n_runs, as_role(role), dtype=object)
    if not isinstance(role, (list, tuple, np.ndarray)):
        raise BadInputError(f"role must be a string or one string per run, got {type(role).__name__}")
    roles = np.array([as_role(x) for x in role], dtype=object)
    if roles.shape != (n_runs,):
        raise BadInputError(f"roles must have one value per run ({n_runs}), got {roles.shape}")
    return roles


def as_optional_column(values: Any, n_runs: int, name: str, dtype: type) -> np.ndarray | None:
    if values is None:
        return None
    a = as_array(values, name)
    if a.ndim == 0:
        a = np.full(n_runs, a)
    if a.shape != (n_runs,):
        raise BadInputError(f"{name} must have one value per run ({n_runs}), got shape {a.shape}")
    if dtype is np.int64 and a.size and not np.issubdtype(a.dtype, np.integer):
        raise BadInputError(f"{name} must be integers, got dtype {a.dtype}")  # no silent truncation of 1.5
    try:
        return a.astype(dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise BadInputError(f"{name} must be {dtype.__name__} values: {e}") from e


def as_infos(infos: Sequence[dict[str, Any] | None], n_runs: int) -> list[str | None]:
    """Per-run info dicts as JSON text; NaN/inf and non-JSON values are refused (the column is SQL JSON)."""
    if len(infos) != n_runs:
        raise BadInputError(f"infos must have one entry per run ({n_runs}), got {len(infos)}")
    try:
        return [None if i is None else json.dumps(i, allow_nan=False) for i in infos]
    except (TypeError, ValueError) as e:
        raise BadInputError(f"infos must be JSON-serialisable dicts without NaN or inf: {e}") from e
