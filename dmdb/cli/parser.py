"""The parser of the `dmdb` command line: its verbs, the modules that register them, their common options.
main (dmdb/cli/__init__.py) imports this module inside its Ctrl-C handler."""

from __future__ import annotations

import argparse
import os
from importlib import import_module
from typing import Sequence

DEFAULT_DB = "dmdb.duckdb"
FORMATS = ("table", "csv", "json", "parquet")
"""What --format offers; output.emit writes each."""

# Each module registers its verbs: register(subparsers, common_parents). They are imported when the
# parser is built, inside main's Ctrl-C handler (duckdb, polars, pyarrow: a second or more, far longer
# from a network file system). `dmdb VERB ...` loads only VERB's module: `dmdb worker`, started once
# per array task, then runs the user's training without duckdb or polars loaded. Anything else (no
# verb, --help, a typo) loads them all, in this order, the order of the verbs in `dmdb --help`.
# (tests/test_cli.py keeps VERBS true.)
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
        import_module(f"{__package__}.{name}").register(sub, parents)
    return parser


def parse(argv: list[str]) -> tuple[argparse.Namespace, bool]:
    """The arguments of `dmdb VERB ...` (the parser holds VERB's module alone), and whether a database
    was named (--db or $DMDB_DB); an unnamed one is DEFAULT_DB."""
    verb = argv[0] if argv else None
    args = build_parser((VERBS[verb],) if verb in VERBS else MODULES).parse_args(argv)
    db_named = getattr(args, "db", None) is not None
    if hasattr(args, "db") and not db_named:
        args.db = DEFAULT_DB
    return args, db_named
