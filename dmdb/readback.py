"""Reading runs back: masks as a bool matrix, margins as float32, in run id order, filtered by role and run ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from .errors import BadInputError, DmdbError
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


def read_runs(
    exp: "Experiment", columns: str, role: str | Sequence[str] | None, runs: RunSelection
) -> tuple[pa.Table, np.ndarray, np.ndarray | None]:
    """run_id plus `columns` of the selected runs, and the order that sorts them by run id.

    Sorting in numpy (a permutation of run ids) beats ORDER BY in SQL, which would move every
    mask through the sort; the order is None when the rows already come sorted.
    """
    where, params = where_clause(exp, role, runs)
    t = exp.db.con.sql(f"SELECT run_id, {columns} FROM runs WHERE {where}", params=params).to_arrow_table()
    ids = t["run_id"].to_numpy()
    order = None if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])) else np.argsort(ids, kind="stable")
    return t, ids if order is None else ids[order], order


def masks(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    t, _, order = read_runs(exp, "mask", role, runs)
    return unpack_masks(t["mask"], exp.n_train, order, header=True)


def _margins(exp: "Experiment", role: str | Sequence[str] | None, runs: RunSelection) -> tuple[np.ndarray, np.ndarray]:
    """(run ids, margins matrix) in run id order.

    Margins are read as FLOAT[T]: DuckDB exports a fixed-size array to Arrow about 2x faster than a
    list, and the cast fails on a run whose list has another length. T is the experiment's own integer.
    """
    try:
        t, ids, order = read_runs(exp, f"margins::FLOAT[{int(exp.n_targets)}] AS margins", role, runs)
    except duckdb.ConversionException as e:
        raise DmdbError(
            f"a run of experiment {exp.name!r} has a margins list whose length is not n_targets = {exp.n_targets} "
            f"({str(e).splitlines()[0]})"
        ) from e
    return ids, margins_from_arrow(t["margins"], exp.n_targets, order)


def margins(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return _margins(exp, role, runs)[1]


def run_ids(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return read_runs(exp, "1 AS one", role, runs)[1]


def runs_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """Per-run metadata (no mask, no margins), in run id order."""
    where, params = where_clause(exp, role, runs)
    cols = "run_id, role, n_kept, seed, worker, duration_s, info, created_at"
    t = exp.db.con.sql(f"SELECT {cols} FROM runs WHERE {where} ORDER BY run_id", params=params).to_arrow_table()
    return pl.from_arrow(t)  # type: ignore[return-value]


def masks_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """run_id and the mask as a Boolean array column of width n_train (`.to_numpy()` gives the matrix)."""
    t, ids, order = read_runs(exp, "mask", role, runs)
    m = unpack_masks(t["mask"], exp.n_train, order, header=True)
    return pl.DataFrame({"run_id": ids, "mask": m}, schema_overrides={"mask": pl.Array(pl.Boolean, exp.n_train)})


def margins_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """run_id and margins as a Float32 array column of width n_targets."""
    ids, y = _margins(exp, role, runs)
    return pl.DataFrame({"run_id": ids, "margins": y}, schema_overrides={"margins": pl.Array(pl.Float32, exp.n_targets)})
