"""Ctrl-C in the middle of a DuckDB statement, in a child process: SIGINT is sent once DuckDB
reports progress on the statement (a marker, not a fixed wait), so it lands while the query runs,
not in a quick statement before it (which made a test fail once, its SIGINT outside the `try`)."""

from __future__ import annotations

import subprocess
import sys

SLOW_QUERY = "SELECT sum(hash(a.range * b.range)) AS s FROM range(1000000000) a, range(1000000) b"
"""Hours of work: a child that ignores Ctrl-C runs past the test's timeout."""

_WATCH = """
import os, signal, threading, time
import dmdb.store

_opened = []
_open = dmdb.store.open

def _open_and_watch(*args, **kwargs):
    db = _open(*args, **kwargs)
    db.con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")
    _opened.append(db)
    return db

def _busy():
    return bool(_opened) and 0 < _opened[0].con.query_progress() < 100

def _ctrl_c_once_running():
    # a quick statement caught mid-way reports 100 (seen 1,367 times while 12,398 one-row lookups ran), and
    # one that reports less has ended by a second look later: only the slow statement passes both
    while True:
        if _busy():
            time.sleep(0.1)
            if _busy():
                break
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)

dmdb.store.open = _open_and_watch
threading.Thread(target=_ctrl_c_once_running, daemon=True).start()
"""


def ctrl_c_while_running(body: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `body` (Python that opens a database with dmdb.store.open and runs a slow statement) in a
    child, and send it SIGINT once the first database it opened is busy with a statement."""
    return subprocess.run([sys.executable, "-c", _WATCH + body], capture_output=True, text=True, timeout=timeout)


def slowed(catalog: str, table: str, column: str) -> str:
    """SQL for the child: a temporary view that shadows `table` of the database `catalog` and gives
    its rows only once SLOW_QUERY has run (whether `column` is read or not), so that a dmdb read of it
    stands for one of a database far bigger than a test can build: DuckDB busy for hours, its worker
    threads too. `DROP VIEW {table}` shows the table again."""
    return (f"CREATE TEMP VIEW {table} AS SELECT * REPLACE (CASE WHEN ({SLOW_QUERY}) IS NULL THEN NULL "
            f'ELSE {column} END AS {column}) FROM "{catalog}".main.{table}')
