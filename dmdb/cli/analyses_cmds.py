"""Verbs that ask a fit questions: counterfactual, brittle, similar, leakage, embed, verify.

Each is a thin shell over dmdb.analyses, so the CLI prints the same numbers as the Python API and
the SQL macros. Reading verbs open the database read-only; `embed` stores its results, so it opens
read-write.
"""

from __future__ import annotations

import argparse
from typing import Any

import polars as pl

from .. import analyses as A
from .. import store
from ..analyses.counterfactual import MODES
from ..errors import BadInputError, DmdbError
from ..interrupt import fetchall
from ..fit.selection import parse_id_list
from ..store import Database
from .argtypes import at_least
from .output import emit


def register(sub: Any, parents: tuple[argparse.ArgumentParser, argparse.ArgumentParser]) -> None:
    common, fmt = parents
    fit_parent = argparse.ArgumentParser(add_help=False)
    fit_parent.add_argument("--fit", type=int, help="fit id (default: the latest fit, of --experiment if given)")
    fit_parent.add_argument("--experiment", "-x", help="use this experiment's latest fit; with --fit, check the fit is its")
    parents_ = [common, fmt, fit_parent]

    p = sub.add_parser(
        "counterfactual", parents=parents_,
        help="predicted margin after removing train examples (one target, or every target with --all-targets)",
        description="Remove --k train examples (the target's largest positive weights with --mode top, its most "
        "negative with bottom, or k drawn at random), or an explicit --remove / --keep list, and print the "
        "predicted margin and change (full train set as the baseline). With --all-targets the same removal set "
        "is applied to every target of the fit.",
    )
    p.add_argument("--target", "-t", type=int, help="the target (required unless --all-targets with --remove/--keep)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--k", type=int, help="remove this many examples chosen by --mode")
    how.add_argument("--remove", metavar="IDS", help="train ids to remove, like 3,17,40-49")
    how.add_argument("--keep", metavar="IDS", help="train ids to keep (everything else is removed)")
    p.add_argument("--mode", choices=MODES, default="top", help="with --k: top, bottom or random (default top)")
    p.add_argument("--seed", type=at_least(0), help="with --mode random (default 0)")
    p.add_argument("--all-targets", action="store_true", help="apply the removal set to every target of the fit")
    p.set_defaults(func=cmd_counterfactual)

    p = sub.add_parser(
        "brittle", parents=parents_,
        help="data support: how few top examples must go to flip each target's prediction",
    )
    p.add_argument("--target", "-t", type=int, help="only this target")
    p.add_argument("--summary", action="store_true", help="how many targets flip within k removals, per threshold")
    p.add_argument("--thresholds", metavar="KS", help="with --summary: thresholds like 10,40,250 "
                   f"(default {','.join(map(str, A.DEFAULT_THRESHOLDS))})")
    p.set_defaults(func=cmd_brittle)

    p = sub.add_parser("similar", parents=parents_,
                       help="a target's most helpful and harmful train examples, or with --nearest its nearest targets")
    p.add_argument("--target", "-t", type=int, required=True, help="the target")
    p.add_argument("--k", type=at_least(1), default=10, help="rows per direction, or neighbours (default 10)")
    p.add_argument("--nearest", action="store_true", help="nearest targets by cosine similarity of weight vectors")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("leakage", parents=parents_,
                       help="(target, train example) pairs whose weight stands far above the target's others")
    p.add_argument("--top", type=at_least(1), default=100, help="at most this many candidates (default 100)")
    p.add_argument("--min-z", type=float, default=6.0, help="robust z-score threshold (default 6)")
    p.add_argument("--min-nnz", type=at_least(3), default=3, help="skip targets with fewer nonzero weights (default 3)")
    p.set_defaults(func=cmd_leakage)

    p = sub.add_parser("embed", parents=parents_,
                       help="PCA and spectral clusters of the targets' weight vectors; stores them and prints a summary")
    p.add_argument("--components", type=at_least(1), default=10, help="PCA components (default 10)")
    p.add_argument("--clusters", type=at_least(1), default=8, help="spectral clusters (default 8)")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the randomized SVD and of k-means (default 0)")
    p.add_argument("--method", choices=["auto", "exact", "randomized"], default="auto",
                   help="SVD: exact (dense), randomized, or auto: exact for small fits (default auto)")
    p.add_argument("--ends", type=at_least(1), default=5, help="ids listed at either end of a component or cluster (default 5)")
    p.add_argument("--per-target", action="store_true", help="print each target's cluster and scores instead")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "verify", parents=parents_,
        help="the fit's predicted counterfactual changes against the recorded retraining runs",
        description="Compare each removal's predicted margin change with the actual one: the mean margin of the "
        "models retrained without the removed examples (role 'counterfactual', recorded from a "
        "dmdb.analyses.plan_counterfactuals plan or by `dmdb demo`) minus that of the models trained on the full "
        "train set. The table's title gives the Spearman and Pearson correlation of predicted vs actual change "
        "and how many brittleness checks flipped. The removals are recorded, so any fit of the experiment can be "
        "checked on the runs another fit planned (--runs-of), and --compare checks every fit on every fit's "
        "runs: estimators compared on the same retrained models.",
    )
    p.add_argument("--runs-of", type=int, metavar="FIT",
                   help="check --fit's predictions on the runs this fit planned (default: --fit's own runs)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--summary", action="store_true", help="print only the one-row summary (correlations, flips)")
    view.add_argument("--compare", action="store_true",
                      help="one summary row per fit of the experiment (of --fit / -x, else the latest fit's) on the "
                      "runs of each fit that planned some (only --runs-of's if given)")
    p.set_defaults(func=cmd_verify)


def _ids(spec: str, flag: str, what: str = "train ids", below: int | None = None) -> list[int]:
    try:
        return parse_id_list(spec, below=below, what=("train index", "train indices")).tolist()
    except BadInputError:  # out of range, or a range that runs backwards: it says which
        raise
    except ValueError as e:  # int() of something that is no number
        raise BadInputError(f"{flag} takes {what} like 3,17,40-49, got {spec!r}") from e


def _fit_id(db: Database, args: argparse.Namespace) -> int:
    """The fit to analyse: --fit, else the latest of --experiment, else the latest of all."""
    if args.experiment is None:
        return A.resolve_fit(db, args.fit).fit_id
    db.experiment(args.experiment)  # an unknown name fails with the known ones listed
    if args.fit is not None:
        info = A.resolve_fit(db, args.fit)
        if info.experiment != args.experiment:
            raise BadInputError(f"fit {info.fit_id} belongs to experiment {info.experiment!r}, not {args.experiment!r}")
        return info.fit_id
    row = fetchall(db.con, "SELECT max(fit_id) FROM fits WHERE experiment = ?", [args.experiment])[0]
    if row[0] is None:
        raise DmdbError(f"experiment {args.experiment!r} has no fits yet; run `dmdb fit {args.experiment}` first")
    return int(row[0])


def _emit(df: pl.DataFrame, args: argparse.Namespace, title: str) -> None:
    emit(df, args.format, args.output, title=title)


def cmd_counterfactual(args: argparse.Namespace) -> int:
    if args.mode != "top" and args.k is None:
        raise BadInputError("--mode chooses what --k removes; it does not apply to --remove/--keep")
    if args.seed is not None and args.k is None:  # checked first: --mode is 'top' by default here
        raise BadInputError("--seed draws the examples of --k with --mode random; it does not apply to --remove/--keep")
    if args.seed is not None and args.mode != "random":  # it was ignored: the same removal for every seed
        raise BadInputError("--seed draws the examples of --mode random; top and bottom removals have no randomness")
    seed = 0 if args.seed is None else args.seed
    if args.target is None and not (args.all_targets and args.k is None):
        raise BadInputError("give --target T (only --all-targets with --remove/--keep needs none)")
    with store.open(args.db, read_only=True) as db:
        fid = _fit_id(db, args)
        n_train = A.resolve_fit(db, fid).n_train  # bounds checked before a range such as 0-99999999999 is expanded
        remove = _ids(args.remove, "--remove", below=n_train) if args.remove is not None else None
        keep = _ids(args.keep, "--keep", below=n_train) if args.keep is not None else None
        if args.all_targets:
            if args.k is not None:
                remove = A.removal_set(db, args.target, args.k, mode=args.mode, fit=fid, seed=seed).tolist()
            out = A.counterfactual_all(db, remove, keep=keep, fit=fid)
            n_removed = len(remove) if remove is not None else None
            title = f"fit {fid}: every target without {_what(args, n_removed, f'target {args.target}')}"
        else:
            out = A.counterfactual(db, args.target, fit=fid, k=args.k, mode=args.mode, remove=remove, keep=keep,
                                   seed=seed)
            title = f"fit {fid}: target {args.target} without {_what(args, int(out['n_removed'][0]), 'it')}"
    _emit(out, args, title)
    return 0


def _what(args: argparse.Namespace, n_removed: int | None, owner: str) -> str:
    """The removal in words; `owner` is the target whose weights --k ranks ('it', or with --all-targets
    'target T': 'every target without its top 5' read as each target's own top 5). A top/bottom k beyond
    that target's positive/negative weights says so (the title read 'its top 5' over a row that removed 2)."""
    if args.k is not None:
        if args.mode == "random":
            return f"{args.k} random examples"
        whose = "its" if owner == "it" else f"{owner}'s"
        if n_removed is not None and n_removed < args.k:
            sign = "positive" if args.mode == "top" else "negative"
            return f"{whose} {args.mode} {n_removed} (--k {args.k}, but {owner} has only {n_removed} {sign} weights)"
        return f"{whose} {args.mode} {args.k}"
    return f"train ids {args.remove}" if args.remove is not None else f"all but train ids {args.keep}"


def cmd_brittle(args: argparse.Namespace) -> int:
    if args.summary and args.target is not None:
        raise BadInputError("--summary counts over all targets; drop --target or --summary")
    if args.thresholds is not None and not args.summary:
        raise BadInputError("--thresholds applies to --summary only")
    with store.open(args.db, read_only=True) as db:
        fid = _fit_id(db, args)
        if args.summary:
            th = A.DEFAULT_THRESHOLDS if args.thresholds is None else _ids(args.thresholds, "--thresholds", "removal counts")
            out = A.brittleness_summary(db, fit=fid, thresholds=th)
            title = f"fit {fid}: targets flipped by removing at most k_max top examples"
        else:
            if args.target is not None:
                A.load_weights(db, fid).col(args.target)  # an unknown target fails with the fit's range
            out = A.brittleness(db, fit=fid)
            if args.target is not None:
                out = out.filter(pl.col("target") == args.target)
            title = f"fit {fid}: data support (examples to remove to flip)"
    _emit(out, args, title)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    with store.open(args.db, read_only=True) as db:
        fid = _fit_id(db, args)
        if args.nearest:
            out = A.nearest_targets(db, args.target, fit=fid, k=args.k)
            title = f"fit {fid}: targets nearest to {args.target} (cosine of weight vectors)"
        else:
            out = A.top_weights(db, args.target, fit=fid, k=args.k)
            title = f"fit {fid}: strongest weights of target {args.target}"
    _emit(out, args, title)
    return 0


def cmd_leakage(args: argparse.Namespace) -> int:
    with store.open(args.db, read_only=True) as db:
        fid = _fit_id(db, args)
        out = A.leakage(db, fit=fid, min_z=args.min_z, min_nnz=args.min_nnz, limit=args.top)
    _emit(out, args, f"fit {fid}: leakage candidates (robust z >= {args.min_z:g})")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    with store.open(args.db, create=False) as db:
        fid = _fit_id(db, args)
        summary = A.embed(db, fit=fid, n_components=args.components, n_clusters=args.clusters, seed=args.seed,
                          method=args.method, n_ends=args.ends)
        out = A.target_embeddings(db, fit=fid) if args.per_target else summary
    shares = A.variance_shares(summary.filter(pl.col("kind") == "component")["explained_variance_ratio"].to_list())
    _emit(out, args, f"fit {fid}: embeddings ({args.components} components: {shares}; {args.clusters} clusters)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with store.open(args.db, read_only=True) as db:
        if args.compare:
            experiment = A.resolve_fit(db, _fit_id(db, args)).experiment
            out = A.compare_verifications(db, experiment, runs_of=args.runs_of)
            _emit(out, args, f"experiment {experiment}: each fit's predicted vs actual change on the runs fit "
                  "runs_of planned (brittle_agreed: its predicted flips that match the retrained outcome)")
            return 0
        v = A.verification(db, _fit_id(db, args), runs_of=args.runs_of)
    checked = v.brittle_tested - v.brittle_already_wrong
    other = v.runs_of != v.fit_id
    brittle = (f"brittleness{f' (fit {v.runs_of} estimated the support removed)' if other else ''}: "
               f"{v.brittle_flipped} of {checked} flipped" + (
                   f" ({v.brittle_already_wrong} wrong on the full train set already)" if v.brittle_already_wrong else "")
               + (f", fit {v.fit_id} predicted {v.brittle_agreed} of {checked} right" if other and checked else ""))
    runs = f" on the runs of fit {v.runs_of}" if other else ""
    title = (f"fit {v.fit_id}{runs}: predicted vs actual change; Spearman {_fmt(v.spearman)}, "
             f"Pearson {_fmt(v.pearson)}; {brittle}")
    _emit(v.summary() if args.summary else v.rows, args, title)
    return 0


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"  # under 3 counterfactual rows, or a constant change
