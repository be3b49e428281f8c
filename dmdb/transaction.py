"""All or nothing: one helper for every write that must not be left half done."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import duckdb


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN; the block; COMMIT. Any exception in the block or the commit (KeyboardInterrupt
    too) rolls back and is raised again: that exception, not the ROLLBACK's own complaint when
    DuckDB has already ended the transaction (a COMMIT that failed to write the file)."""
    try:
        con.execute("BEGIN TRANSACTION")  # inside: Ctrl-C that arrives while BEGIN runs is raised as it returns
        yield
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # nothing left to roll back: the original error says what went wrong
        raise
