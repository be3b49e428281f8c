"""Opening the database for the verbs that may create it (create, import-npy, synth)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import duckdb

from .. import store


@contextlib.contextmanager
def open_or_create(path: str) -> Iterator[store.Database]:
    """store.open(path), creating the file if needed. When this call created it and the verb then
    fails (bad input, Ctrl-C) before the database holds an experiment, the file is removed again:
    a mistyped store folder or a refused option leaves no empty database behind."""
    new = path != ":memory:" and not Path(path).exists()
    db = store.open(path)
    try:
        yield db
    except BaseException:
        empty = new and _holds_nothing(db)
        db.close()
        if empty:
            for leftover in (Path(path), Path(path + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    db.close()


def _holds_nothing(db: store.Database) -> bool:
    try:
        return db.con.execute("SELECT count(*) FROM experiments").fetchall()[0][0] == 0
    except duckdb.Error:  # the file itself failed: leave it for the user to look at
        return False
