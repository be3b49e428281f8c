"""`dmdb worker`: train planned runs with the user's function and write their shards.

One such process runs per array task, and the user's training runs inside it, so it loads only
what writing a shard needs (numpy, pyarrow): neither duckdb nor polars, unless it must open the
database to read its plan (no --plan file)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import BadInputError, DatabaseLockedError
from ..plan import ROLES
from ..scale.task import Job, find_shard, load_train_fn, run_one
from .argtypes import TRAIN_HELP, at_least
from .consoles import STDERR, STDOUT


def register(sub: Any, parents: tuple[argparse.ArgumentParser, argparse.ArgumentParser]) -> None:
    common, _ = parents
    p = sub.add_parser(
        "worker", parents=[common],
        help="train planned run(s) and write their shards, for Slurm arrays and GNU parallel; exit 0 only on success",
        description="Trains run I of a plan (I counts from 0 within the plan; default $SLURM_ARRAY_TASK_ID) "
        "or runs A..B-1, and writes one shard per run. With --plan FILE it never opens the database. "
        "A run whose shard exists already is not trained again. Load the shards with `dmdb ingest DIR`.",
    )
    p.add_argument("experiment")
    p.add_argument("--train", required=True, help=TRAIN_HELP)
    p.add_argument("--shards", required=True, help="folder to write shards to")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=at_least(0), help="plan index of the run to train (default: $SLURM_ARRAY_TASK_ID)")
    which.add_argument("--range", help="plan indices A:B (A included, B not)")
    p.add_argument("--plan", help="plan file from `dmdb plan` (then the database is not opened)")
    p.add_argument("--plan-seed", type=int, help="seed of the plan (default 0, or the plan file's)")
    p.add_argument("--role", choices=ROLES, help="role of the plan (default fit, or the plan file's)")
    p.set_defaults(func=cmd_worker)


def _worker_job(args: argparse.Namespace) -> Job:
    if args.plan:
        job = Job.load(args.plan)
        p = job.plan
        for what, given, actual in (("experiment", args.experiment, p.experiment), ("role", args.role, p.role),
                                    ("seed", args.plan_seed, p.seed)):
            if given is not None and given != actual:
                raise BadInputError(f"the plan file is for {what} {actual!r}, not {given!r}")
        return job
    from .. import store  # only here: a worker given a plan file never loads the database side

    role, seed = args.role or "fit", 0 if args.plan_seed is None else args.plan_seed
    try:
        db = store.open(args.db, read_only=True)
    except DatabaseLockedError as e:  # an ingest, collect or fit holds it; waiting is no advice for an array job
        raise DatabaseLockedError(
            e.situation,
            f"Without --plan a worker opens the database to read its plan: write a plan file once (`dmdb plan "
            f"{args.experiment} --runs N --seed {seed} --role {role} --out plan.json`) and give the workers "
            "--plan plan.json, so that they never open the database.",
        ) from e
    with db:
        exp = db.experiment(args.experiment)
        plans = [p for p in exp.plans() if p.role == role and p.seed == seed]
        if not plans:
            raise BadInputError(f"experiment {exp.name!r} has no {role!r} plan with seed {seed}; make one with "
                                f"`dmdb plan {exp.name} --runs N --seed {seed} --role {role} --out plan.json`")
        return Job.of(exp, plans[0])


def _indices(args: argparse.Namespace, n_runs: int) -> range:
    if args.range:
        try:
            a, b = (int(x) for x in args.range.split(":"))
        except ValueError as e:
            raise BadInputError(f"--range takes A:B (two integers), got {args.range!r}") from e
        idx = range(a, b)
    else:
        index = args.index
        if index is None:
            env = os.environ.get("SLURM_ARRAY_TASK_ID")
            if env is None:
                raise BadInputError("give --index I or --range A:B (or run inside a Slurm array job)")
            try:
                index = int(env)
            except ValueError:
                raise BadInputError(f"SLURM_ARRAY_TASK_ID is {env!r}, not a plan index; give --index I") from None
        idx = range(index, index + 1)
    if not idx or idx.start < 0 or idx.stop > n_runs:
        raise BadInputError(f"plan indices must lie in 0..{n_runs - 1}, got {idx.start}..{idx.stop - 1}")
    return idx


def cmd_worker(args: argparse.Namespace) -> int:
    job = _worker_job(args)
    indices = _indices(args, job.plan.n_runs)
    load_train_fn(args.train)  # a typo in --train fails also when every shard is there already
    failed = 0
    for i in indices:
        run_id = job.plan.first_run_id + i
        existing = find_shard(args.shards, job.plan.experiment, run_id)
        if existing is not None:  # a rerun of the array job: say so rather than look like a fresh training
            if not args.quiet:
                STDOUT.print(f"run {run_id} (index {i}): shard there already, not trained again: {existing}")
            continue
        try:
            path = run_one(job, run_id, args.train, args.shards)
        except BadInputError:
            raise  # a wrong --train or bad arguments: no other run can succeed either
        except Exception as e:  # noqa: BLE001 - the user's training failed: report it, go on with the range
            if args.debug:
                raise
            failed += 1
            STDERR.print(f"dmdb worker: run {run_id} (index {i}) failed: {type(e).__name__}: {e}")
            continue
        if not args.quiet:
            STDOUT.print(f"run {run_id} (index {i}): {path}")
    return 1 if failed else 0
