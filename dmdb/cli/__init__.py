"""The `dmdb` command line: `dmdb VERB [--db PATH] ...`. Errors are one line on stderr, exit code 1."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from typing import Sequence

from ..errors import DmdbError, NoDatabaseError

DEFAULT_DB = "dmdb.duckdb"
FORMATS = ("table", "csv", "json", "parquet")
"""What --format offers; output.emit writes each."""

# Each module registers its verbs: register(subparsers, common_parents). They are imported when the
# parser is built, inside main, so that Ctrl-C while they load (duckdb, polars, pyarrow: a second or
# more, far longer from a network file system) is one line, not a traceback. `dmdb VERB ...` loads
# only VERB's module: `dmdb worker`, started once per array task, then runs the user's training
# without duckdb or polars loaded. Anything else (no verb, --help, a typo) loads them all, in this
# order, the order of the verbs in `dmdb --help`. (tests/test_cli.py keeps VERBS true.)
VERBS = {
    "init": "store_cmds", "create": "store_cmds", "info": "store_cmds", "sql": "store_cmds",
    "ingest": "store_cmds", "import-npy": "store_cmds",
    "fit": "fit_cmds", "fits": "fit_cmds", "import-scores": "fit_cmds",
    "demo": "demo_cmds",
    "counterfactual": "analyses_cmds", "brittle": "analyses_cmds", "similar": "analyses_cmds",
    "leakage": "analyses_cmds", "embed": "analyses_cmds", "verify": "analyses_cmds",
    "tui": "tui_cmds",
    "plan": "scale_cmds", "collect": "scale_cmds", "synth": "scale_cmds", "export": "scale_cmds",
    "worker": "worker_cmds",
}
MODULES = tuple(dict.fromkeys(VERBS.values()))


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--db",
        default=os.environ.get("DMDB_DB"),  # None: main makes it DEFAULT_DB, knowing it was not named
        help="database file (default: $DMDB_DB, else ./dmdb.duckdb)",
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return p


def format_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--output", "-o", help="write the result to this file instead of stdout")
    return p


def build_parser(modules: Sequence[str] = MODULES) -> argparse.ArgumentParser:
    """The parser with the verbs of `modules` (all by default)."""
    parser = argparse.ArgumentParser(
        prog="dmdb",
        description="dmdb: a datamodels database. Record training runs, fit datamodels, ask what data made a prediction.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    parents = (common_parser(), format_parser())
    for name in modules:
        import_module(f"{__name__}.{name}").register(sub, parents)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    _sleeping_waits()
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = argv[0] if argv else None
    try:
        parser = build_parser((VERBS[verb],) if verb in VERBS else MODULES)
    except KeyboardInterrupt:
        print("dmdb: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    db_named = getattr(args, "db", None) is not None
    if hasattr(args, "db") and not db_named:
        args.db = DEFAULT_DB
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
        if _interrupted(e):  # Ctrl-C while DuckDB runs a query arrives as its RuntimeError, not KeyboardInterrupt
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


def _interrupted(e: BaseException) -> bool:
    import duckdb

    return isinstance(e, duckdb.InterruptException) or (type(e) is RuntimeError and str(e) == "Query interrupted")
