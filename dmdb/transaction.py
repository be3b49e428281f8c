"""All or nothing: one helper for every write that must not be left half done."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import duckdb

from .interrupt import execute, is_ctrl_c


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN; the block; COMMIT. Any exception in the block or the commit (KeyboardInterrupt
    too) rolls back and is raised again: that exception, not the ROLLBACK's own complaint when
    DuckDB has already ended the transaction (a COMMIT that failed to write the file). DuckDB's
    answer to Ctrl-C in a statement of the block run on the main thread, RuntimeError('Query
    interrupted'), is raised as the KeyboardInterrupt it stands for."""
    try:
        con.execute("BEGIN TRANSACTION")  # inside: Ctrl-C that arrives while BEGIN runs is raised as it returns
        yield
        execute(con, "COMMIT")  # long when it writes much (an ingest, a fit)
    except BaseException as e:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # nothing left to roll back: the original error says what went wrong
        if is_ctrl_c(e):
            raise KeyboardInterrupt from e
        raise
