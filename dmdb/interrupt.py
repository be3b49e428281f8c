"""DuckDB statements that Ctrl-C stops, with KeyboardInterrupt.

DuckDB's Python client checks for Ctrl-C only between the pieces of work the calling thread runs,
and then raises RuntimeError('Query interrupted') and waits for its worker threads: one that holds
a long piece (a big scan, a cross join) is never told to stop, and the call went on to the end
(measured on 2 cores: 8 of 12 SIGINTs to a long scan or cross join were never answered; the main
thread waited in DuckDB's Executor::CancelTasks). Run on another thread, the statement is stopped the way the TUI stops one:
`con.interrupt()`, which every DuckDB thread heeds.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator, TypeVar

import duckdb
import pyarrow as pa

T = TypeVar("T")

POLL = 0.05
"""Seconds between two looks at the statement's thread, and between interrupts (one sent before
DuckDB starts the statement is lost)."""


def interruptible(con: duckdb.DuckDBPyConnection, call: Callable[[], T]) -> T:
    """call() (DuckDB work on `con`), stopped by Ctrl-C: it raises KeyboardInterrupt once DuckDB has
    let go of `con`. Off the main thread, which signals never reach, call() runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    outcome: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()  # not Thread.join: on Python 3.11 a join that Ctrl-C interrupts marks the thread ended

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name="dmdb-statement", daemon=True).start()
    try:
        while not done.wait(POLL):  # timed: Ctrl-C raises here even under a SIGINT handler with SA_RESTART
            pass
    except KeyboardInterrupt:
        _stop(con, done)
        raise
    if failure:
        raise failure[0]
    return outcome[0]


def interruptible_batches(con: duckdb.DuckDBPyConnection, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The batches of `reader` (a DuckDB result streamed from `con`), each fetched by interruptible:
    Ctrl-C stops the fetch in progress, or lands in the caller's own work between two fetches, so
    the caller's work stays on its thread. The caller closes `reader`."""
    while True:
        try:
            batch = interruptible(con, reader.read_next_batch)
        except StopIteration:
            return
        yield batch


def _stop(con: duckdb.DuckDBPyConnection, done: threading.Event) -> None:
    """Interrupt until the statement's thread has let go of `con`, so that it is not left in use
    behind the caller's back (a second Ctrl-C meanwhile changes nothing; DuckDB stops at once)."""
    while not done.is_set():
        try:
            con.interrupt()
            done.wait(POLL)
        except KeyboardInterrupt:
            continue
