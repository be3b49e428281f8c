"""The `dmdb` command line: `dmdb VERB [--db PATH] ...`. Errors are one line on stderr, exit code 1.

The `dmdb` script imports this module before main can answer Ctrl-C, so it, like the dmdb package,
dmdb.errors and dmdb.lazy that load with it, imports nothing Python has not loaded at start-up: no
typing, no __future__; argparse, the parser (dmdb/cli/parser.py) and the verbs' modules load inside
main's handler. Ctrl-C in the first milliseconds of a command is then one line and exit 130, as
later (it printed a KeyboardInterrupt traceback while typing and argparse loaded: ~25-30 ms before
main, now ~5 ms of dmdb's own small modules; tests/test_cli.py)."""

import os
import sys

from ..errors import DmdbError, NoDatabaseError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, as type checkers read it, without loading typing
if TYPE_CHECKING:
    from typing import Sequence


def _sleeping_waits() -> None:
    """Threads that wait in OpenMP barriers spin only briefly, then sleep (GOMP_SPINCOUNT=10000, GNU
    OpenMP's, which torch's Linux wheels use; unless the user chose a wait policy or spin count): a
    thread spinning for long holds a core that another process, or its descheduled sibling, needs.
    On 2 cores busy with two other processes a 10,000 x 2,000 x 200 lasso path took over 100 s with
    the default spinning, 18.6 s with this and 16.6 s with OMP_WAIT_POLICY=PASSIVE; idle, 6.9 s
    against 7.0-7.7 s default and 7.7-9.2 s PASSIVE (bench/README.md, "Threads"). OpenMP reads it
    once, when torch loads it, which the CLI does only after this."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def main(argv: "Sequence[str] | None" = None) -> int:
    try:
        from .parser import parse

        _sleeping_waits()
        args, db_named = parse(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("dmdb: interrupted", file=sys.stderr)
        return 130
    try:
        return int(args.func(args) or 0)
    except DmdbError as e:
        if args.debug:
            raise
        # e.g. `dmdb sql "..."` in another folder: `dmdb init` would make a new empty database, not find theirs
        unnamed = "" if db_named or not isinstance(e, NoDatabaseError) else (
            " (no --db was given, nor $DMDB_DB: name your database with --db FILE or DMDB_DB=FILE)")
        print(f"dmdb {args.verb}: error: {e}{unnamed}", file=sys.stderr)
        return 1
    except OSError as e:  # a file the command was pointed at: missing folder, no permission, disk full
        if args.debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"dmdb {args.verb}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dmdb {args.verb}: interrupted", file=sys.stderr)
        return 130
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # an unexpected failure (a Rust panic in polars is a BaseException): one line unless --debug
        if args.debug:
            raise
        from ..interrupt import is_ctrl_c

        if is_ctrl_c(e):  # Ctrl-C in a statement run on the main thread arrives as DuckDB's RuntimeError
            print(f"dmdb {args.verb}: interrupted", file=sys.stderr)
            return 130
        storage = _storage_failure(e)
        if storage is not None:
            print(f"dmdb {args.verb}: error: the database file could not be written or read ({storage}); "
                  "is the disk full, a file-size limit set, or the file damaged? What this command "
                  "was writing was rolled back", file=sys.stderr)
            return 1
        print(f"dmdb {args.verb}: unexpected error ({type(e).__name__}): {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 2


def _storage_failure(e: BaseException) -> str | None:
    """DuckDB's own words when the file itself failed (I/O, a failed commit, a bad checksum), else None."""
    import duckdb

    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, duckdb.IOException) or "Corrupt database file" in text or "Failed to commit" in text:
        return text
    return None

