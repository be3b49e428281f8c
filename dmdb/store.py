"""Opening a dmdb database: create or open the DuckDB file, apply the schema, check its version."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

import duckdb
import polars as pl
from duckdb.sqltypes import DuckDBPyType

from . import schema
from .errors import (DatabaseLockedError, DmdbError, NoDatabaseError, ReadOnlyError, SchemaVersionError,
                     UnknownExperimentError)
from .interrupt import fetchall, interruptible, is_ctrl_c

if TYPE_CHECKING:
    from .experiment import Experiment
    from .fit import Fit

SCHEMA_VERSION = 1


class Database:
    """A dmdb database file. One process may hold it read-write; see `open`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"<dmdb.Database {self.path!r} ({mode})>"

    def __reduce__(self) -> NoReturn:
        # what a multiprocessing pool handed an Experiment or Fit meets; pickle's own TypeError named
        # only a DuckDBPyConnection, not what to give the workers instead
        raise TypeError(
            f"a dmdb Database (or an Experiment or Fit of it) does not pickle into another process: it holds "
            f"{self.path} open, and DuckDB lets one process write the file. Give workers the plan or its runs "
            "(they pickle) and record the margins they return here, or have them write shards "
            "(dmdb.shards.write_run) for one `dmdb ingest`"
        )

    # -- queries ---------------------------------------------------------------------------
    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
        """Run any SQL and return the result as a polars frame: one without columns for a statement
        without a result (SET, CREATE VIEW, DROP, CHECKPOINT, ...; INSERT, UPDATE and the like give
        their row count). BIT columns (a run's `mask`) come back as their bit strings ('0110...') and
        INTERVALs as text ('1 day 02:00:00'), as the DuckDB shell shows them; `exp.masks()` gives
        masks as a numpy matrix."""
        def run() -> pl.DataFrame:
            rel = self.con.sql(query, params=params)
            if rel is None:  # only comments
                return pl.DataFrame()
            table = _as_text(rel).to_arrow_table()
            if table.num_rows == 0 and _no_result(rel):
                return pl.DataFrame()
            return pl.from_arrow(table)  # type: ignore[return-value]

        try:
            return interruptible(self.con, run)  # Ctrl-C: KeyboardInterrupt, not DuckDB's RuntimeError
        except duckdb.Error as e:
            if self.read_only and "read-only mode" in str(e):
                raise ReadOnlyError(
                    f"{self.path} is open read-only, so this statement cannot change it; open it with "
                    f"read_only=False (`dmdb sql --write`) to modify data. DuckDB said: {e}"
                ) from e
            raise DmdbError(f"SQL error: {e}") from e

    def require_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{self.path} is open read-only; open it with read_only=False to write")

    # -- experiments -----------------------------------------------------------------------
    def create_experiment(
        self,
        name: str,
        n_train: int,
        n_targets: int,
        alpha: float = 0.5,
        sampling: str = "fixed",
        config: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> "Experiment":
        from .experiment import create_experiment

        return create_experiment(self, name, n_train, n_targets, alpha, sampling, config, exist_ok)

    def experiment(self, name: str) -> "Experiment":
        from .experiment import Experiment

        rows = fetchall(
            self.con,
            "SELECT name, n_train, n_targets, alpha, sampling, config FROM experiments WHERE name = ?", [name]
        )
        row = rows[0] if rows else None
        if row is None:
            known = [r[0] for r in fetchall(self.con, "SELECT name FROM experiments ORDER BY name")]
            hint = f"known: {', '.join(known)}" if known else "this database has no experiments yet"
            raise UnknownExperimentError(f"unknown experiment {name!r} in {self.path} ({hint})")
        return Experiment(self, *row)

    def fit(self, fit_id: int | None = None) -> "Fit":
        """A stored fit by id (default: the latest)."""
        from .fit import Fit

        return Fit(self, fit_id)

    def fits(self) -> pl.DataFrame:
        """Every fit, one line each: estimator, LDS, runs per split, targets, time, device."""
        return self.sql("SELECT * FROM fit_overview ORDER BY fit_id")

    def experiments(self) -> pl.DataFrame:
        """Experiments with their run counts by role."""
        return self.sql(
            """
            SELECT e.name, e.n_train, e.n_targets, e.alpha, e.sampling, e.created_at,
                   count(r.run_id) AS runs,
                   count(r.run_id) FILTER (WHERE r.role = 'fit') AS fit_runs,
                   count(r.run_id) FILTER (WHERE r.role = 'holdout') AS holdout_runs,
                   count(r.run_id) FILTER (WHERE r.role = 'counterfactual') AS counterfactual_runs
            FROM experiments e LEFT JOIN runs r ON r.experiment = e.name
            GROUP BY ALL ORDER BY e.name
            """
        )


_AS_TEXT = {"bit", "interval"}
"""Column types a frame gets as DuckDB's text, alone or nested in a list, struct, map or union:
BIT (Arrow would carry DuckDB's internal bytes, padding byte first) and INTERVAL (polars refuses
Arrow's month-day-nano intervals)."""
_NESTED = {"list", "array", "struct", "map", "union"}


def _needs_text(t: DuckDBPyType) -> bool:
    if t.id in _AS_TEXT:
        return True
    # an array's children also hold its size (an int)
    return t.id in _NESTED and any(isinstance(c, DuckDBPyType) and _needs_text(c) for _, c in t.children)


# The one column, with no rows, that DuckDB gives for a statement without a result set: 'Success'
# (SET, DROP, ATTACH, CHECKPOINT, ...) or 'Count' (CREATE VIEW, CREATE TABLE). A SELECT's rows come
# as another type of relation (QUERY_RELATION); PRAGMA, EXPLAIN and RETURNING name their columns.
_NO_RESULT = {("Success", "BOOLEAN"), ("Count", "BIGINT")}


def _no_result(rel: duckdb.DuckDBPyRelation) -> bool:
    return (rel.type == "MATERIALIZED_RELATION" and len(rel.columns) == 1
            and (rel.columns[0], str(rel.types[0])) in _NO_RESULT)


def _as_text(rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """Columns whose type holds an _AS_TEXT type cast to VARCHAR, as the DuckDB shell prints them
    ('0110...', '1 day', '[0110..., 1001...]')."""
    cast = [_needs_text(t) for t in rel.types]
    if not any(cast) or len(set(rel.columns)) < len(rel.columns):
        return rel

    def quoted(c: str) -> str:
        return '"' + c.replace('"', '""') + '"'

    return rel.project(", ".join(
        f"{quoted(c)}::VARCHAR AS {quoted(c)}" if text else quoted(c) for c, text in zip(rel.columns, cast)
    ))


_LOCK_RE = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def open(path: str | Path, read_only: bool = False, create: bool = True) -> Database:  # noqa: A001 - mirrors duckdb.connect
    """Create or open a dmdb database file.

    A writable open creates the file if needed (unless `create` is False: the CLI's verbs that
    only add to a database, so a mistyped --db path is an error, not a new empty file), applies
    the schema and views from sql/ (never dropping data) and records the schema version. A
    read-only open needs an existing dmdb file.
    While one process has the file open read-write, DuckDB lets no other process open it at all:
    that case raises DatabaseLockedError, as does a file this process has open in the other mode.
    """
    path = str(path)
    if not path.strip():  # DuckDB would open an in-memory database: everything written would be lost
        raise DmdbError("no database path given (an empty --db or $DMDB_DB); name a file, or ':memory:' for a "
                        "database that is not saved")
    if (read_only or not create) and path != ":memory:" and not Path(path).exists():
        raise NoDatabaseError(f"no database at {path}; create one with `dmdb init --db {path}`")
    try:
        con = _connect(path, read_only, create)
    except duckdb.IOException as e:
        raise _open_error(path, e, read_only) from e
    except duckdb.ConnectionException as e:
        if "different configuration" not in str(e):
            raise DmdbError(f"cannot open {path}: {e}") from e
        other = "read-write" if read_only else "read-only"
        raise DatabaseLockedError(
            f"{path} is open {other} in this process already (an earlier dmdb.open or duckdb.connect of it is "
            "still open), and DuckDB opens a file in one mode per process",
            "Use that connection, or close it (db.close()) before opening the file again.",
        ) from e
    except duckdb.Error as e:
        raise DmdbError(f"cannot open {path}: {e}") from e
    try:
        _check_version(con, path, read_only)
        if read_only:
            schema.overlay(con, path)
        else:
            schema.apply(con, SCHEMA_VERSION)
    except BaseException as e:
        con.close()
        if is_ctrl_c(e):  # in the schema's DDL, run on this thread (instant): DuckDB's answer to Ctrl-C
            raise KeyboardInterrupt from e
        raise
    return Database(con, path, read_only)


def _connect(path: str, read_only: bool, create: bool) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, which refuses a 0-byte file as 'not a valid DuckDB database': what a process
    stopped while creating the database leaves. That file holds nothing, so a writable open that
    may create the database replaces it; the others say what it is."""
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as e:
        file = Path(path)
        if "not a valid DuckDB database" not in str(e) or not file.is_file() or file.stat().st_size:
            raise
        # DuckDB locks a file before it reads the header, so no process is writing this one now
        if read_only or not create:
            raise DmdbError(f"{path} is an empty file (0 bytes), not a database: a process creating it was "
                            f"probably stopped; `dmdb init --db {path}` makes it one") from e
        file.unlink()
        return duckdb.connect(path, read_only=read_only)


def _open_error(path: str, e: Exception, read_only: bool) -> DmdbError:
    msg = str(e)
    m = _LOCK_RE.search(msg)
    if m or "Could not set lock" in msg:
        who = f" ({m.group(1)}, PID {m.group(2)})" if m else ""
        if read_only:  # readers share the file: only a writer keeps a reader out
            held = "has it open for writing, and DuckDB allows no other process to open it meanwhile"
        else:
            held = ("has it open, for writing or read-only (the TUI, `dmdb sql`): while any process has "
                    "the file open, DuckDB lets no other open it for writing")
        return DatabaseLockedError(
            f"{path} is locked: another process{who} {held}",
            "Wait for that process to finish; workers that train runs should write shard files for one "
            "`dmdb ingest` instead of opening the database.",
        )
    if "not a valid DuckDB database" in msg or "database file" in msg.lower():
        return DmdbError(f"{path} is not a DuckDB database file (or it is corrupt): {msg}")
    return DmdbError(f"cannot open {path}: {msg}")


def _check_version(con: duckdb.DuckDBPyConnection, path: str, read_only: bool) -> None:
    """One query on a dmdb file (the catalog is only listed to explain a file without dmdb_meta)."""
    try:
        row = fetchall(con, "SELECT value FROM dmdb_meta WHERE key = 'schema_version'")
    except duckdb.CatalogException:
        if fetchall(con, "SELECT count(*) FROM information_schema.tables")[0][0]:
            raise DmdbError(f"{path} is a DuckDB database but not a dmdb one (it has no dmdb_meta table)") from None
        if read_only:
            raise DmdbError(f"{path} is an empty database; initialise it with `dmdb init --db {path}`") from None
        return
    raw = row[0][0] if row else None
    version = int(raw) if raw is not None and raw.strip().isdecimal() else None  # text edited by hand is no version
    if version != SCHEMA_VERSION:
        found = "no dmdb schema version" if raw is None else f"dmdb schema version {raw}"
        raise SchemaVersionError(
            f"{path} has {found}, this dmdb knows version {SCHEMA_VERSION}; "
            "open it with the dmdb release that wrote it"
        )
