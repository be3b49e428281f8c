"""DuckDB statements that Ctrl-C stops, with KeyboardInterrupt.

DuckDB's Python client checks for Ctrl-C only between the pieces of work the calling thread runs,
and then raises RuntimeError('Query interrupted') and waits for its worker threads: one that holds
a long piece (a big scan, a cross join) is never told to stop, and the call went on to the end
(measured on 2 cores: 8 of 12 SIGINTs to a long scan or cross join were never answered; the main
thread waited in DuckDB's Executor::CancelTasks). Run on another thread, the statement is stopped
the way the TUI stops one: `con.interrupt()`, which every DuckDB thread heeds.

`execute`, `fetchall`, `arrow_table` and `arrow_reader` run one statement so; every statement the
API and the CLI run on the main thread goes through them (or `interruptible`), quick lookups too:
Ctrl-C landing in any of them raises KeyboardInterrupt. `is_ctrl_c` tells DuckDB's own interrupt
error, for what runs otherwise. The statements run on one thread kept for them: a thread started
per statement cost 206-243 us a statement on the 2 busy cores here, handing it to a waiting one
28-72 us (best of 5 x 2,000; a record() runs five statements).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb
import pyarrow as pa

T = TypeVar("T")

POLL = 0.05
"""Seconds between two looks at the statement's thread, and between interrupts (one sent before
DuckDB starts the statement is lost)."""

_jobs: queue.SimpleQueue[Callable[[], None]] | None = None
"""What the statement thread runs next; None until the first statement, and in a forked child,
which has no copy of the thread."""


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

    _submit(run)
    try:
        while not done.wait(POLL):  # timed: Ctrl-C raises here even under a SIGINT handler with SA_RESTART
            pass
    except KeyboardInterrupt:
        _stop(con, done)
        raise
    if failure:
        raise failure[0]
    return outcome[0]


def _submit(job: Callable[[], None]) -> None:
    """Hand `job` to the statement thread, started on first use. Only the main thread submits, and only
    once the previous job is done (interruptible waits for it), so the thread is idle here."""
    global _jobs
    if _jobs is None:
        _jobs = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(_jobs,), name="dmdb-statement", daemon=True).start()
    _jobs.put(job)


def _serve(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
    while True:
        jobs.get()()  # no name holds the job after it ran: its result (a large table) is the caller's alone


def _forget_thread() -> None:
    global _jobs
    _jobs = None


os.register_at_fork(after_in_child=_forget_thread)


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> None:
    """con.execute(sql, params) for a statement whose result is not wanted (INSERT, DELETE), stopped by
    Ctrl-C (interruptible)."""
    interruptible(con, lambda: con.execute(sql, params))


def fetchall(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """con.execute(sql, params).fetchall(), stopped by Ctrl-C (interruptible)."""
    return interruptible(con, lambda: con.execute(sql, params).fetchall())


def arrow_table(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
    """The result of `sql` as an Arrow table (DuckDB's export, no copy), stopped by Ctrl-C (interruptible)."""
    return interruptible(con, lambda: con.sql(sql, params=params).to_arrow_table())


def arrow_reader(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None,
                 batch_rows: int) -> pa.RecordBatchReader:
    """The result of `sql` streamed in batches of `batch_rows`, its start stopped by Ctrl-C (interruptible);
    read it with interruptible_batches. The caller closes it."""
    return interruptible(con, lambda: con.sql(sql, params=params).to_arrow_reader(batch_rows))


def is_ctrl_c(e: BaseException) -> bool:
    """Whether `e` is DuckDB's answer to Ctrl-C landing in a statement run on the main thread:
    RuntimeError('Query interrupted') (InterruptException in some releases), not KeyboardInterrupt."""
    return isinstance(e, duckdb.InterruptException) or (type(e) is RuntimeError and str(e) == "Query interrupted")


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
