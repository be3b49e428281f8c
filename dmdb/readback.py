"""Reading runs back: masks as a bool matrix, margins as float32, in run id order, filtered by role and run ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from .errors import BadInputError, DmdbError
from .interrupt import arrow_reader, arrow_table, interruptible, interruptible_batches
from .packing import PackedMasks, as_rows, margins_from_arrow, packed_rows, unpack_into
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


def _require_listed(exp: "Experiment", found: np.ndarray, runs: Sequence[int] | np.ndarray,
                    role: str | Sequence[str] | None) -> None:
    """Run ids asked for by name must all be there: rows silently missing could not be lined up
    with the ids asked for. (A range is a filter: runs=range(0, 1000) takes what there is.)"""
    missing = np.setdiff1d(np.asarray(runs, dtype=np.int64).ravel(), found)  # a fit asks for 100,000s of ids
    if missing.size:
        shown = ", ".join(map(str, missing[:5])) + (f" and {missing.size - 5} more" if missing.size > 5 else "")
        with_role = "" if role is None else f" with role {role!r}"
        raise BadInputError(f"experiment {exp.name!r} has no run{'s' if missing.size > 1 else ''} {shown}{with_role}")


ARRAY_COLUMNS = ("mask", "margins")

# Rows per streamed block: about this many bytes of packed masks and margins in flight at a time.
_BLOCK_BYTES = 32 << 20


def read_arrays(
    exp: "Experiment", columns: Sequence[str], role: str | Sequence[str] | None, runs: RunSelection,
    packed: bool = False, targets: np.ndarray | None = None,
) -> dict[str, Any]:
    """run_id and the chosen ARRAY_COLUMNS ("mask": bool (runs, n_train), or PackedMasks when
    `packed`; "margins": float32 (runs, n_targets), or only the columns of `targets`, taken block by
    block) of the selected runs, in run id order, from one pass over the table.

    A first query lists the run ids, which sizes the outputs and gives each run its row; the rows
    are then streamed in blocks of about _BLOCK_BYTES and unpacked (or, `packed`, copied) straight
    into place, so the Arrow copy in memory is one block, not the whole column. Sorting by run id
    this way beats ORDER BY in SQL, which would move every mask through the sort.
    """
    where, params = where_clause(exp, role, runs)
    con = exp.db.con
    found = interruptible(con, lambda: con.sql(f"SELECT run_id FROM runs WHERE {where}", params=params).fetchnumpy())
    ids = found["run_id"]
    ids = ids if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])) else np.sort(ids)
    if runs is not None and not isinstance(runs, range):
        _require_listed(exp, ids, runs, role)
    out: dict[str, Any] = {"run_id": ids}
    if "mask" in columns:
        out["mask"] = np.empty((ids.size, (exp.n_train + 7) // 8 if packed else exp.n_train),
                               dtype=np.uint8 if packed else bool)
    if "margins" in columns:
        out["margins"] = np.empty((ids.size, exp.n_targets if targets is None else targets.size), dtype=np.float32)
    if ids.size and len(out) > 1:
        _read_rows(exp, out, where, params, packed, targets)
    if packed and "mask" in out:
        out["mask"] = PackedMasks(out["mask"], exp.n_train)
    return out


def _read_rows(exp: "Experiment", out: dict[str, np.ndarray], where: str, params: list[Any], packed: bool,
               targets: np.ndarray | None) -> None:
    """Stream the selected rows into the outputs that read_arrays sized."""
    select = ["run_id"]
    if "mask" in out:
        select.append("mask")
    if "margins" in out:
        # FLOAT[T]: DuckDB exports a fixed-size array to Arrow about 2x faster than a list, and the
        # cast fails on a run whose list has another length. T is the experiment's own integer.
        select.append(f"margins::FLOAT[{int(exp.n_targets)}] AS margins")
    row_bytes = (exp.n_train + 7) // 8 * ("mask" in out) + 4 * exp.n_targets * ("margins" in out)
    cols = ", ".join(select)  # literals of this function
    con = exp.db.con
    block_rows = max(1, _BLOCK_BYTES // row_bytes)
    try:
        with arrow_reader(con, f"SELECT {cols} FROM runs WHERE {where}", params, block_rows) as reader:
            filled = _fill(out, interruptible_batches(con, reader), exp, packed, targets)
    except duckdb.ConversionException as e:
        raise DmdbError(
            f"a run of experiment {exp.name!r} has a margins list whose length is not n_targets = {exp.n_targets} "
            f"({str(e).splitlines()[0]})"
        ) from e
    if filled != out["run_id"].size:
        raise _changed_while_reading(exp)


def _fill(out: dict[str, np.ndarray], batches: Iterator[pa.RecordBatch], exp: "Experiment", packed: bool,
          targets: np.ndarray | None) -> int:
    """Place every streamed row at its run id's row of the outputs; returns how many rows came.

    A block that holds the whole result in order (the common small read) becomes the output
    itself: unpacked in one go, margins viewed in Arrow's buffer, neither copied again.
    """
    ids = out["run_id"]
    filled = 0
    for batch in batches:
        batch_ids = batch.column("run_id").to_numpy()
        dest = np.searchsorted(ids, batch_ids)
        if np.any(dest >= ids.size) or not np.array_equal(ids[np.minimum(dest, ids.size - 1)], batch_ids):
            raise _changed_while_reading(exp)
        rows = as_rows(dest)
        whole = isinstance(rows, slice) and rows == slice(0, ids.size)
        if "mask" in out:
            bits = packed_rows(batch.column("mask"), exp.n_train, header=True)
            if packed:
                out["mask"][rows] = bits
            elif whole:
                out["mask"] = np.unpackbits(bits, axis=1, count=exp.n_train).view(bool)
            else:
                unpack_into(out["mask"], rows, bits)
        if "margins" in out:
            y = margins_from_arrow(batch.column("margins"), exp.n_targets)
            if targets is not None:
                y = y[:, targets]
            if whole:
                out["margins"] = y
            else:
                out["margins"][rows] = y
        filled += len(batch_ids)
    return filled


def _changed_while_reading(exp: "Experiment") -> DmdbError:
    """The id list and the streamed rows disagree: another cursor of this process wrote in between."""
    return DmdbError(f"the runs of experiment {exp.name!r} changed while they were read; read them again")


def masks(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return read_arrays(exp, ["mask"], role, runs)["mask"]


def margins(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return read_arrays(exp, ["margins"], role, runs)["margins"]


def masks_and_margins(
    exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None, packed: bool = False
) -> tuple[np.ndarray | PackedMasks, np.ndarray]:
    got = read_arrays(exp, ARRAY_COLUMNS, role, runs, packed)
    return got["mask"], got["margins"]


def run_ids(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
    return read_arrays(exp, [], role, runs)["run_id"]


def runs_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """Per-run metadata (no mask, no margins), in run id order."""
    where, params = where_clause(exp, role, runs)
    cols = "run_id, role, n_kept, seed, worker, duration_s, info, created_at"
    t = arrow_table(exp.db.con, f"SELECT {cols} FROM runs WHERE {where} ORDER BY run_id", params)
    if runs is not None and not isinstance(runs, range):  # as read_arrays: listed ids must all be there
        _require_listed(exp, t.column("run_id").to_numpy(), runs, role)
    return pl.from_arrow(t)  # type: ignore[return-value]


def masks_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """run_id and the mask as a Boolean array column of width n_train (`.to_numpy()` gives the matrix)."""
    got = read_arrays(exp, ["mask"], role, runs)
    return pl.DataFrame(
        {"run_id": got["run_id"], "mask": got["mask"]}, schema_overrides={"mask": pl.Array(pl.Boolean, exp.n_train)}
    )


def margins_frame(exp: "Experiment", role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
    """run_id and margins as a Float32 array column of width n_targets."""
    got = read_arrays(exp, ["margins"], role, runs)
    return pl.DataFrame(
        {"run_id": got["run_id"], "margins": got["margins"]},
        schema_overrides={"margins": pl.Array(pl.Float32, exp.n_targets)},
    )
