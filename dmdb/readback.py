"""Reading runs back: masks as a bool matrix, margins as float32, in run id order, filtered by role and run ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from .errors import BadInputError
from .packing import margins_from_arrow, unpack_masks
from .validate import as_role

if TYPE_CHECKING:
    from .experiment import Experiment

RunSelection = range | Sequence[int] | np.ndarray | None


def where_clause(exp: "Experiment", role: str | Sequence[str] | None, runs: RunSelection) -> tuple[str, list[Any]]:
    """SQL filter (with bound parameters) for one experiment's runs by role and run ids."""
    sql = "experiment = ?"
    params: list[Any] = [exp.name]
    if role is not None:
        roles = [role] if isinstance(role, str) else list(role)
        sql += " AND list_contains(?::VARCHAR[], role)"
        params.append([as_role(r) for r in roles])
    if isinstance(runs, range):
        if runs.step != 1:
            raise BadInputError("a run range must have step 1; pass a list of run ids instead")
        sql += " AND run_id >= ? AND run_id < ?"
        params += [runs.start, runs.stop]
    elif runs is not None:
        sql += " AND list_contains(?::BIGINT[], run_id)"
        params.append([int(r) for r in np.asarray(runs).ravel()])
    return sql, params


def read_runs(exp: "Experiment", columns: str, role: str | Sequence[str] | None, runs: RunSelection) -> pa.Table:
    where, params = where_clause(exp, role, runs)
    return exp.db.con.sql(f"SELECT {columns} FROM runs WHERE {where} ORDER BY run_id", params=params).to_arrow_table()


def masks(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return unpack_masks(read_runs(exp, "mask::BLOB AS mask", role, runs)["mask"], exp.n_train)


def margins(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return margins_from_arrow(read_runs(exp, "margins", role, runs)["margins"], exp.n_targets)


def run_ids(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return read_runs(exp, "run_id", role, runs)["run_id"].to_numpy()


def runs_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """Per-run metadata (no mask, no margins)."""
    cols = "run_id, role, n_kept, seed, worker, duration_s, info, created_at"
    return pl.from_arrow(read_runs(exp, cols, role, runs))  # type: ignore[return-value]


def masks_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """run_id plus one Boolean column per train example would be N columns wide; instead: run_id and
    the mask as a fixed-width Boolean array column, which `.to_numpy()` turns into the matrix."""
    t = read_runs(exp, "run_id, mask::BLOB AS mask", role, runs)
    m = unpack_masks(t["mask"], exp.n_train)
    return pl.DataFrame({"run_id": t["run_id"].to_numpy(), "mask": m}, schema_overrides={"mask": pl.Array(pl.Boolean, exp.n_train)})


def margins_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """run_id and margins as a Float32 array column of width n_targets."""
    t = read_runs(exp, "run_id, margins", role, runs)
    y = margins_from_arrow(t["margins"], exp.n_targets)
    return pl.DataFrame({"run_id": t["run_id"].to_numpy(), "margins": y}, schema_overrides={"margins": pl.Array(pl.Float32, exp.n_targets)})
