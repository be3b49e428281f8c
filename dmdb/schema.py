"""Bringing a database to this dmdb's sql/ (tables, views, macros).

A writable open applies sql/ to the file (`apply`). A read-only open cannot change the file, so when an
older dmdb applied the file's sql/ (its recorded sha256 differs), `overlay` creates this release's views
and macros as temporary objects of the connection, which DuckDB looks up before the file's: a file from
an older release reads as a current one (tables added since are empty, columns added since NULL) and
is left untouched.

The pool views (fit_pool, holdout_pool, target_pool) are created IF NOT EXISTS, so that a user's
redefinition survives a release; dmdb_meta records each as dmdb created it, so that one still as dmdb
created it takes a new release's definition."""

from __future__ import annotations

import hashlib
import re

import duckdb

from .errors import DmdbError
from .sqlfiles import sql_files
from .transaction import transaction

_COMMENT = re.compile(r"\A(\s*--[^\n]*\n|\s+)*")
_CREATE = re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?(TABLE|VIEW|MACRO|SEQUENCE)\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)
_ADD_COLUMN = re.compile(
    r"ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+([\w\[\]]+)\s*;?\s*\Z", re.I
)


def shipped() -> tuple[list[str], str]:
    """The text of each sql/ file, in order, and the sha256 recorded in a file they were applied to."""
    texts = [f.read_text() for f in sql_files()]
    return texts, hashlib.sha256("\0".join(texts).encode()).hexdigest()


def applied(con: duckdb.DuckDBPyConnection) -> str | None:
    """The sha256 of the sql/ text last applied to the file (None: before dmdb recorded it)."""
    try:
        row = con.execute("SELECT value FROM dmdb_meta WHERE key = 'sql_sha256'").fetchall()
    except duckdb.CatalogException:
        return None
    return row[0][0] if row else None


def apply(con: duckdb.DuckDBPyConnection, schema_version: int) -> None:
    """Run the sql/ files, unless this exact text was applied before (a writable open then costs
    one small query instead of re-creating every view and macro). A pool view still as dmdb made it
    takes the shipped definition; one redefined since (by its user) stays."""
    texts, digest = shipped()
    if applied(con) == digest:
        return
    pools = _pool_views(texts)
    with transaction(con):
        made = [name for name, sql in pools.items() if _as_dmdb_made(con, name, sql)]
        for name in made:
            con.execute(f"DROP VIEW IF EXISTS {name}")  # created below, as shipped
        for text in texts:
            con.execute(text)
        for name in made:
            con.execute("INSERT INTO dmdb_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [_POOL_MARK + name, _printed(con, name)])
        con.execute(
            "INSERT INTO dmdb_meta VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING", [str(schema_version)]
        )
        con.execute(
            "INSERT INTO dmdb_meta VALUES ('sql_sha256', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [digest],
        )


_POOL_MARK = "pool_view:"
"""dmdb_meta key prefix: the pool view's definition (as DuckDB prints it) when dmdb last created it."""


def _pool_views(texts: list[str]) -> dict[str, str]:
    """The views sql/ creates IF NOT EXISTS (fit_pool, holdout_pool, target_pool), name -> statement."""
    views: dict[str, str] = {}
    for text in texts:
        for statement in duckdb.extract_statements(text):
            sql = _COMMENT.sub("", statement.query)
            create = _CREATE.match(sql)
            if create and create.group(2).upper() == "VIEW" and not create.group(1):
                views[create.group(4)] = sql
    return views


def _printed(con: duckdb.DuckDBPyConnection, name: str, temporary: bool = False) -> str | None:
    """A view's definition as DuckDB prints it (None: no such view)."""
    row = con.execute(
        "SELECT sql FROM duckdb_views() WHERE view_name = ? AND temporary = ? "
        "AND database_name = (CASE WHEN ? THEN 'temp' ELSE current_database() END)", [name, temporary, temporary]
    ).fetchall()
    return row[0][0] if row else None


def _as_dmdb_made(con: duckdb.DuckDBPyConnection, name: str, sql: str) -> bool:
    """Whether the file lacks the pool view or has it as dmdb created it: as recorded then, or, in a
    file from before dmdb recorded it, the shipped definition (every release before then shipped it)."""
    now = _printed(con, name)
    if now is None:
        return True
    mark = con.execute("SELECT value FROM dmdb_meta WHERE key = ?", [_POOL_MARK + name]).fetchall()
    if mark:
        return now == mark[0][0]
    con.execute(_as_temp(sql))
    shipped_default = str(_printed(con, name, temporary=True))
    con.execute(f"DROP VIEW temp.{name}")
    return now == shipped_default.replace("CREATE TEMP VIEW", "CREATE VIEW", 1)


def _as_temp(create: str) -> str:
    """A CREATE statement of sql/ made to create a TEMP object."""
    kind = _CREATE.match(create)
    assert kind, create
    return create[:kind.start(2)] + "TEMP " + create[kind.start(2):]


def overlay(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """On a read-only connection to a file whose sql/ an older dmdb applied: this release's views and
    macros as TEMP objects. A table is made only where the file lacks it, a pool view also where the
    file's is still as dmdb created it (a user's redefinition stays); a column added since (ALTER TABLE
    ... ADD COLUMN IF NOT EXISTS) is a TEMP view of the file's table with that column NULL; sequences
    only serve inserts."""
    texts, digest = shipped()
    if applied(con) == digest:
        return
    catalog = con.execute("SELECT current_database()").fetchall()[0][0]
    in_file = {name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE database_name = ? AND schema_name = 'main'", [catalog, catalog]
    ).fetchall()}
    try:
        for text in texts:
            for statement in duckdb.extract_statements(text):
                sql = _COMMENT.sub("", statement.query)
                temp = _temporary(con, sql, catalog, in_file)
                if temp:
                    con.execute(temp)
    except duckdb.Error as e:
        raise DmdbError(
            f"{path} was written by an older dmdb, and this one cannot read it read-only ({str(e).splitlines()[0]}); "
            f"open it once for writing (`dmdb init --db {path}`), which brings its views and macros up to date "
            "and keeps its data"
        ) from e


def _temporary(con: duckdb.DuckDBPyConnection, sql: str, catalog: str, in_file: set[str]) -> str | None:
    """The TEMP statement standing in for one sql/ statement on a read-only file (None: none needed)."""
    create = _CREATE.match(sql)
    if create:
        replace, kind, _, name = create.groups()
        kind = kind.upper()
        if kind == "SEQUENCE":
            return None
        if not replace and name in in_file and (kind == "TABLE" or not _as_dmdb_made(con, name, sql)):
            return None  # the file's table, or a pool view its user redefined
        return _as_temp(sql)
    add = _ADD_COLUMN.match(sql)
    if add:
        table, column, type_ = add.groups()
        has = con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main' "
            "AND table_name = ? AND column_name = ?", [catalog, table, column]
        ).fetchall()[0][0]
        if has or table not in in_file:  # a TEMP table made above has the column already
            return None
        quoted = '"' + catalog.replace('"', '""') + '"'
        return f"CREATE TEMP VIEW {table} AS SELECT *, NULL::{type_} AS {column} FROM {quoted}.main.{table}"
    raise DmdbError(f"dmdb's sql/ holds a statement a read-only open cannot stand in for: {sql[:80]!r}")
