"""`dmdb tui [PATH]`: open the terminal app on a database, read-only."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, parents: tuple[argparse.ArgumentParser, argparse.ArgumentParser]) -> None:
    common, _ = parents
    p = sub.add_parser("tui", parents=[common], help="browse a database in the terminal (read-only)")
    p.add_argument("path", nargs="?", help="database file (default: --db)")
    p.set_defaults(func=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    from tui import run  # the app and its widgets load only for this verb

    run(args.path or args.db)
    return 0
