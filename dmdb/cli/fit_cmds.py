"""Verbs about fits: fit, fits, import-scores."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import polars as pl

from .. import store
from ..fit import DEFAULT_CURVE, ESTIMATORS, FitOptions
from ..errors import BadInputError, DmdbWarning
from .argtypes import at_least
from .output import STDOUT, check_destination, emit
from .progress import STDERR, stage_progress

_DEFAULTS = FitOptions()


def _fractions(text: str) -> list[float]:
    """--curve's fractions; none at all (--curve '') is an error, not a fit without a curve."""
    usage = f"--curve takes comma-separated fractions like 0.1,0.5,1, got {text!r}"
    try:
        fractions = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(usage) from e
    if not fractions:
        raise argparse.ArgumentTypeError(f"{usage} (omit --curve for a fit without a learning curve)")
    return fractions


def register(sub: Any, parents: tuple[argparse.ArgumentParser, argparse.ArgumentParser]) -> None:
    common, fmt = parents
    p = sub.add_parser(
        "fit", parents=[common, fmt],
        help="fit datamodels for an experiment's targets, score them on holdout runs (LDS), store the fit",
        description="Reads fit runs from the fit_pool view (narrowed by --where), holdout runs from "
        "holdout_pool and targets from target_pool (narrowed by --targets).",
    )
    p.add_argument("experiment")
    p.add_argument("--estimator", "-e", choices=ESTIMATORS, default="lasso",
                   help="lasso path (default), ridge, or diff-means (difference in means)")
    p.add_argument("--k", type=at_least(1), default=_DEFAULTS.k, help=f"lambdas on the path (default {_DEFAULTS.k})")
    p.add_argument("--eps", type=float, default=_DEFAULTS.eps, help=f"smallest lambda / lambda_max (default {_DEFAULTS.eps})")
    p.add_argument("--tol", type=float, default=_DEFAULTS.tol, help=f"duality-gap tolerance (default {_DEFAULTS.tol})")
    p.add_argument("--max-iter", type=at_least(1), default=_DEFAULTS.max_iter,
                   help="lasso: iterations per lambda; a target that reaches it before --tol keeps its last "
                   f"iterate and is listed as not converged (default {_DEFAULTS.max_iter})")
    p.add_argument("--patience", type=at_least(0), default=_DEFAULTS.patience,
                   help="stop a target's path after this many lambdas without validation gain "
                   f"(default {_DEFAULTS.patience}; 0: solve the whole path)")
    p.add_argument("--no-refit", action="store_true", help="keep the fit-run solution instead of refitting on fit+val")
    p.add_argument("--val-frac", type=float, default=_DEFAULTS.val_frac, help=f"validation share of the fit pool (default {_DEFAULTS.val_frac})")
    p.add_argument("--split-seed", type=at_least(0), default=_DEFAULTS.split_seed,
                   help="seed of the shuffle that splits the fit pool into fit and validation runs, whose order "
                   f"is also the learning curve's (default {_DEFAULTS.split_seed})")
    p.add_argument("--dtype", choices=["float32", "float64"], default=_DEFAULTS.dtype,
                   help=f"precision of the solver (default {_DEFAULTS.dtype})")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--gram", choices=["matrix", "masks"],
                   help="lasso and ridge: hold G = Xc'Xc/n as an N x N matrix, or work through the centred masks "
                   "(runs x N; default: masks when fit runs <= N/2)")
    p.add_argument("--where", help="narrow the fit runs: an expression over runs columns, a SELECT query or a view name")
    p.add_argument("--targets", help="targets: ids like 0-99,120, a SELECT query or a view returning `target`")
    p.add_argument(
        "--curve", nargs="?", const=",".join(map(str, DEFAULT_CURVE)), type=_fractions,
        help=f"also refit on growing fractions of the fit runs and report LDS (default {','.join(map(str, DEFAULT_CURVE))})",
    )
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("fits", parents=[common, fmt], help="list fits: estimator, LDS, runs per split, time, device")
    p.add_argument("experiment", nargs="?", help="only this experiment's fits")
    p.add_argument("--curve", type=int, metavar="FIT", help="show the learning curve of this fit instead")
    p.set_defaults(func=cmd_fits)

    p = sub.add_parser(
        "import-scores", parents=[common],
        help="store an external score matrix (.npy, train examples x targets, e.g. TRAK) as a fit",
    )
    p.add_argument("experiment")
    p.add_argument("path", help=".npy file (or .npz of one array) of shape (n_train, n_targets)")
    p.add_argument("--name", default="scores", help="the fit's estimator becomes scores:NAME")
    p.add_argument("--no-calibrate", action="store_true", help="keep the scores' scale (fit only a bias)")
    p.set_defaults(func=cmd_import_scores)


def cmd_fit(args: argparse.Namespace) -> int:
    options = dict(
        k=args.k, eps=args.eps, tol=args.tol, max_iter=args.max_iter, patience=args.patience,
        refit=not args.no_refit, val_frac=args.val_frac, split_seed=args.split_seed, dtype=args.dtype,
        gram=args.gram,
    )
    check_destination(args.format, args.output)  # before the fit, not after it is stored
    with store.open(args.db, create=False) as db:
        exp = db.experiment(args.experiment)
        with stage_progress(args.quiet) as bar, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DmdbWarning)
            fit = exp.fit(args.estimator, where=args.where, targets=args.targets, device=args.device,
                          curve=args.curve, progress=bar, **options)
        lds = f"n/a ({fit.lds_missing})" if fit.lds is None else f"{fit.lds:.4f}"
        # the summary is the result of a table on stdout (`dmdb fit X > log` keeps it); beside csv/json/parquet
        # or a file it is a note, on stderr, so that stdout carries only the data
        summary = STDOUT if args.format == "table" and not args.output else STDERR
        summary.print(
            f"fit {fit.fit_id}: {fit.estimator} on {fit.experiment!r}, {fit.n_fit_runs} fit + {fit.n_val_runs} val runs, "
            f"{fit.seconds:.1f} s on {fit.device}; LDS on {fit.n_holdout_runs} holdout runs: {lds}"
        )
        if fit.at_path_end:
            n, eps = len(fit.at_path_end), fit.config["eps"]
            STDERR.print(f"{n} of {fit.targets().height} targets chose the path's smallest lambda ({eps:g} x lambda_max): "
                         "their validation error was still falling there; a smaller --eps lets the path go further "
                         "(fit.at_path_end lists them)")
        print_warnings(caught)  # after the summary line, and outside the progress display
        if args.curve:
            emit(fit.curve(), args.format, args.output, title=f"learning curve of fit {fit.fit_id}")
        elif args.format != "table" or args.output:
            emit(db.sql("SELECT * FROM fit_overview WHERE fit_id = ?", [fit.fit_id]), args.format, args.output)
    return 0


def cmd_fits(args: argparse.Namespace) -> int:
    with store.open(args.db, read_only=True) as db:
        if args.experiment:
            db.experiment(args.experiment)  # unknown names fail clearly
        if args.curve is not None:
            fit = db.fit(args.curve)
            if args.experiment and fit.experiment != args.experiment:
                raise BadInputError(f"fit {args.curve} belongs to experiment {fit.experiment!r}, not {args.experiment!r}")
            out = fit.curve()
            if out.is_empty():
                raise BadInputError(f"fit {args.curve} has no learning curve; fit with --curve to make one")
            emit(out, args.format, args.output, title=f"learning curve of fit {args.curve}")
            return 0
        out = db.fits()
        if args.experiment:
            out = out.filter(pl.col("experiment") == args.experiment)
    if args.format == "table":
        out = out.select("fit_id", "experiment", "estimator", "lds", "n_fit_runs", "n_val_runs", "n_holdout_runs",
                         "n_targets", "mean_val_r2", "mean_nnz", "device", "seconds")
        if out.is_empty():
            STDOUT.print("no fits yet; run `dmdb fit EXPERIMENT`")
            return 0
    emit(out, args.format, args.output, title="fits")
    return 0


def cmd_import_scores(args: argparse.Namespace) -> int:
    with store.open(args.db, create=False) as db, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DmdbWarning)
        fit = db.experiment(args.experiment).import_scores(args.path, name=args.name, calibrate=not args.no_calibrate)
        lds = f"n/a ({fit.lds_missing})" if fit.lds is None else f"{fit.lds:.4f}"
    STDOUT.print(f"fit {fit.fit_id}: {fit.estimator} on {fit.experiment!r}; LDS {lds}")
    print_warnings(caught)
    return 0


def print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """dmdb's own warnings as one 'warning: ...' line each; any other warning as Python shows it."""
    for w in caught:
        if issubclass(w.category, DmdbWarning):
            STDERR.print(f"warning: {w.message}", markup=False)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
