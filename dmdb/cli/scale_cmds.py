"""Verbs for studies beyond one process: plan, collect, synth, export (worker: worker_cmds.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.text import Text

from .. import store
from ..errors import BadInputError
from ..plan import ROLES
from ..scale import ENGINES, EngineOptions, Job, SynthSpec, collect, create_synthetic, default_shards_dir
from ..scale.engines import check_engine
from ..scale.export import export
from ..scale.task import load_train_fn
from .argtypes import TRAIN_HELP, add_subset_options, at_least
from .opening import open_or_create
from .output import STDOUT
from .progress import STDERR, progress_bar, stage_progress

def register(sub: Any, parents: tuple[argparse.ArgumentParser, argparse.ArgumentParser]) -> None:
    common, _ = parents
    p = sub.add_parser(
        "plan", parents=[common], help="plan seeded runs and write a plan file for workers",
        description="Stores the plan in the database (its run ids; each run's mask and model seed follow from "
                    "--seed, so the same arguments always give the same runs) and writes it as a file that `dmdb worker --plan` reads without "
                    "the database. Asking again for an existing plan returns it; a seed can hold only one plan "
                    "per role, so ask for it with the same --runs.")
    p.add_argument("experiment")
    p.add_argument("--runs", type=at_least(1), required=True, help="runs in the plan")
    p.add_argument("--seed", type=at_least(0), default=0, help="plan seed (default 0)")
    p.add_argument("--role", choices=ROLES, default="fit", help="role of the planned runs (default fit)")
    p.add_argument("--out", help="plan file to write (default: print the JSON)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "collect", parents=[common],
        help="train a plan's missing runs on local processes or Ray, ingesting their shards as they arrive",
        description="Resumable: rerun the same command after an interruption and only missing runs are trained. "
        "Runs whose worker died or raised are retried (--retries).",
    )
    p.add_argument("experiment")
    p.add_argument("--train", required=True, help=TRAIN_HELP)
    p.add_argument("--runs", type=at_least(1), required=True, help="runs in the plan")
    p.add_argument("--seed", type=at_least(0), default=0, help="plan seed (default 0)")
    p.add_argument("--role", choices=ROLES, default="fit", help="role of the planned runs (default fit)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: worker processes on this machine (default); ray: tasks on a Ray cluster")
    p.add_argument("--workers", type=at_least(1), help="local: worker processes (default: CPU count)")
    p.add_argument("--retries", type=at_least(0), default=3, help="extra tries of a run whose worker died or raised (default 3)")
    p.add_argument("--shards", help="shard folder (default: DB.shards next to the database; shared by all nodes for Ray)")
    p.add_argument("--address", help="ray: address of a running cluster (default: start a local one)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="ray: CPUs per task (default 1)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="ray: GPUs per task (default 0)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("synth", parents=[common],
                       help="create a synthetic experiment with a known sparse true datamodel (stored as fit scores:truth)")
    p.add_argument("name")
    p.add_argument("--runs", type=at_least(1), required=True, help="fit runs")
    p.add_argument("--holdout", type=at_least(0), help="holdout runs (default: runs / 10)")
    p.add_argument("--train", type=at_least(1), required=True, help="train examples N")
    p.add_argument("--targets", type=at_least(1), required=True, help="targets T")
    p.add_argument("--density", type=float, default=0.01, help="share of train examples with a true nonzero weight per target")
    p.add_argument("--noise", type=float, default=0.5, help="noise std relative to the signal's (default 0.5)")
    add_subset_options(p)
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the true weights, masks and noise (default 0)")
    p.add_argument("--chunk", type=at_least(1), help="runs per transaction (default: about 64 MB of masks)")
    p.add_argument("--no-truth-fit", action="store_true", help="do not store the truth as a fit (it reads every run back)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("export", parents=[common], help="export runs and/or a fit's weights to Parquet")
    p.add_argument("experiment")
    p.add_argument("--runs-out", help="Parquet file for the runs (shard format: packed mask bytes, margins list)")
    p.add_argument("--role", choices=ROLES, help="only runs of this role")
    p.add_argument("--fit", type=int, help="fit id for --weights-out / --fit-targets-out")
    p.add_argument("--weights-out", help="Parquet file for the fit's nonzero weights (target, train_idx, weight)")
    p.add_argument("--fit-targets-out", help="Parquet file for the fit's per-target bias, lambda and scores")
    p.set_defaults(func=cmd_export)


def cmd_plan(args: argparse.Namespace) -> int:
    with store.open(args.db, create=False) as db:
        exp = db.experiment(args.experiment)
        job = Job.of(exp, exp.plan(args.runs, seed=args.seed, role=args.role))
    if args.out:
        job.save(args.out)
        p = job.plan
        STDOUT.print(f"plan of {p.n_runs} {p.role} runs (ids {p.first_run_id}..{p.run_ids[-1]}) written to {args.out}; "
                     f"train them with `dmdb worker {p.experiment} --plan {args.out} --index I --train MOD:FN --shards DIR`")
    else:
        print(job.to_json())
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    opts = EngineOptions(engine=args.engine, workers=args.workers, retries=args.retries, address=args.address,
                         num_cpus=args.num_cpus, num_gpus=args.num_gpus)
    shards = Path(args.shards) if args.shards else default_shards_dir(args.db)
    check_engine(opts)  # a missing Ray or a mistyped --train fails before the plan is stored
    load_train_fn(args.train)
    with store.open(args.db, create=False) as db:
        exp = db.experiment(args.experiment)
        plan = exp.plan(args.runs, seed=args.seed, role=args.role)
        with progress_bar(f"collecting {plan.role} runs", args.quiet) as bar:
            rep = collect(exp, plan, args.train, opts, shards, progress=bar)
    earlier = f"{rep.from_earlier_shards} ingested from shards left earlier, " if rep.from_earlier_shards else ""
    STDOUT.print(f"{rep.planned} planned runs: {rep.already_recorded} were recorded before, {earlier}{rep.trained} trained now "
                 f"({rep.retried} after a retry), {len(rep.failed)} failed; shards in {shards}")
    for run_id, why in sorted(rep.failed.items()):
        STDERR.print(Text.assemble((f"run {run_id} failed", "red"), f": {why}"))
    for name, why in rep.bad_shards:
        STDERR.print(Text.assemble(("bad shard", "red"), f" {name}: {why}"))
    if rep.missing:
        STDERR.print(Text.assemble((f"{len(rep.missing)} runs still missing", "red"), "; rerun the same command to resume"))
    return 0 if rep.ok else 1


def cmd_synth(args: argparse.Namespace) -> int:
    spec = SynthSpec(args.train, args.targets, density=args.density, noise=args.noise, seed=args.seed, alpha=args.alpha)
    holdout = args.runs // 10 if args.holdout is None else args.holdout
    with open_or_create(args.db) as db, stage_progress(args.quiet) as bar:
        exp, truth = create_synthetic(db, args.name, spec, args.runs, holdout, args.chunk, not args.no_truth_fit, bar,
                                       args.sampling)
        n = exp.n_runs()
    lds = "" if truth is None or truth.lds is None else f"; the truth (fit {truth.fit_id}) has LDS {truth.lds:.4f}"
    STDOUT.print(f"synthetic experiment {args.name!r}: {n} runs x {spec.n_train} train x {spec.n_targets} targets, "
                 f"{spec.k} true nonzero weights per target{lds}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    fit_out = args.weights_out or args.fit_targets_out
    if not (args.runs_out or fit_out):
        raise BadInputError("nothing to export: give --runs-out and/or --fit ID with --weights-out / --fit-targets-out")
    if fit_out and args.fit is None:
        raise BadInputError("--weights-out and --fit-targets-out need --fit ID (see `dmdb fits`)")
    if args.fit is not None and not fit_out:
        raise BadInputError(f"--fit {args.fit} needs --weights-out and/or --fit-targets-out: the files to write it to")
    with store.open(args.db, read_only=True) as db:
        exp = db.experiment(args.experiment)
        fit = None if args.fit is None else db.fit(args.fit)
        n = export(exp, args.runs_out, role=args.role, fit=fit, weights_path=args.weights_out,
                   targets_path=args.fit_targets_out)
    if args.runs_out:
        STDOUT.print(f"{n.runs} runs of {exp.name!r} written to {args.runs_out}")
    if args.weights_out:
        STDOUT.print(f"fit {args.fit} weights written to {args.weights_out} ({n.weights} nonzeros)")
    if args.fit_targets_out:
        STDOUT.print(f"fit {args.fit} per-target table written to {args.fit_targets_out}")
    return 0
