"""Argument types that refuse bad numbers while parsing, before a verb opens or writes anything, and
the options that several verbs share."""

from __future__ import annotations

import argparse
from typing import Callable

from ..plan import SAMPLING

TRAIN_HELP = ("training function as module:function, called fn(run: dmdb.PlannedRun, experiment_config: dict) "
              "and returning the run's margins, shape (n_targets,); e.g. dmdb.demo.worker_fn:train_digits")


def at_least(low: int) -> Callable[[str], int]:
    """An integer >= low (argparse reports anything else as a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its message
    return parse


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def add_subset_options(p: argparse.ArgumentParser) -> None:
    """--alpha and --sampling: how a new experiment's runs pick their subsets (create, synth)."""
    p.add_argument("--alpha", type=open_fraction, default=0.5, help="fraction of train examples each run keeps (default 0.5)")
    p.add_argument("--sampling", choices=SAMPLING, default="fixed",
                   help="fixed: subsets of exactly round(alpha N) examples (the paper); bernoulli: each kept with prob. alpha")
