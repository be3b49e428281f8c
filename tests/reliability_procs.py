"""Child-process bodies and checks shared by the reliability tests.

Children run in a multiprocessing forkserver that has imported dmdb once, so each child starts in
milliseconds instead of the seconds a fresh interpreter needs to import torch; they are killed
with SIGKILL (`Process.kill`). A child reports what it finished by appending a line to an
acknowledgement file with one unbuffered `os.write` after the call returned: the kernel holds the
line even if the process dies on the next instruction.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.context
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import dmdb
from dmdb import ingest
from dmdb.cli.parser import MODULES
from dmdb.plan import Plan
from dmdb.shards import write_run, write_shard

STRESS = os.environ.get("DMDB_STRESS") == "1"
"""DMDB_STRESS=1 runs the many-kills variant (50+ kills per scenario) instead of the default ~10."""


def iterations(default: int, stress: int) -> int:
    return stress if STRESS else default


def context() -> multiprocessing.context.BaseContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dmdb", *(f"dmdb.cli.{m}" for m in MODULES), "reliability_procs"])
    return ctx


def margins_of(run_id: int, mask: np.ndarray, n_targets: int) -> np.ndarray:
    """The deterministic 'training result' of a run: exact in float32, different for every run and target."""
    return (run_id * 1000 + np.arange(n_targets) * 7 + int(mask[:64].sum())).astype(np.float32)


def expected_margins(plan: Plan, n_targets: int) -> np.ndarray:
    return np.stack([margins_of(r.run_id, r.mask, n_targets) for r in plan])


def ack(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_acks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- child bodies -------------------------------------------------------------------------------
def shard_worker(
    directory: str, plan_dict: dict[str, Any], run_ids: list[int], n_targets: int, ack_path: str, per_shard: int = 1
) -> None:
    """A training worker: 'trains' runs (the deterministic margins) and writes them, `per_shard` runs a shard."""
    plan = Plan.from_dict(plan_dict)
    ack(ack_path, "ready")
    for s in range(0, len(run_ids), per_shard):
        part = run_ids[s : s + per_shard]
        if per_shard == 1:
            run = plan.run(part[0])
            write_run(directory, plan.experiment, run, margins_of(run.run_id, run.mask, n_targets), worker=f"pid{os.getpid()}")
        else:
            masks = plan.masks(part)
            margins = np.stack([margins_of(r, m, n_targets) for r, m in zip(part, masks)])
            write_shard(directory, plan.experiment, part, masks, margins, role=plan.role, worker=f"pid{os.getpid()}")
        ack(ack_path, " ".join(map(str, part)))


def ingester(db_path: str, directory: str, ack_path: str, group_runs: int | None = None) -> None:
    """`ingest`, with at most `group_runs` runs a transaction when given (several groups for a small folder)."""
    if group_runs is not None:
        import dmdb.ingestion

        dmdb.ingestion.GROUP_RUNS = group_runs
    with dmdb.open(db_path) as db:
        ack(ack_path, "ready")
        report = ingest(db, directory)
        ack(ack_path, f"done {report.runs_added}")


def recorder(db_path: str, experiment: str, chunk: int, ack_path: str, then_ingest: str | None = None) -> None:
    """Records every planned run in chunks of `chunk` runs, acknowledging each chunk after record_batch returned;
    with then_ingest, also ingests that folder and acknowledges it. Then waits to be killed."""
    with dmdb.open(db_path) as db:
        exp = db.experiment(experiment)
        ack(ack_path, "ready")
        for plan in exp.plans():
            ids = list(plan.run_ids)
            for s in range(0, len(ids), chunk):
                part = ids[s : s + chunk]
                masks = plan.masks(part)
                margins = np.stack([margins_of(r, m, exp.n_targets) for r, m in zip(part, masks)])
                exp.record_batch(part, masks, margins, role=plan.role)
                ack(ack_path, f"{part[0]} {part[-1]}")
        if then_ingest is not None:
            report = ingest(db, then_ingest)
            ack(ack_path, f"ingested {report.runs_added}")
        time.sleep(600)


def hold_open(db_path: str, ack_path: str, read_only: bool = False) -> None:
    """A process that holds the database (read-write unless told) until it is killed."""
    with dmdb.open(db_path, read_only=read_only) as db:
        db.experiments()
        ack(ack_path, "ready")
        time.sleep(600)


def cli(argv: list[str], stderr_path: str, ack_path: str | None = None) -> None:
    """`dmdb ARGV` as a child process; its exit code is the CLI's, its stderr goes to a file."""
    from dmdb.cli import main

    if ack_path is not None:
        ack(ack_path, "ready")
    with open(stderr_path, "w") as err, contextlib.redirect_stderr(err):
        code = main(argv)
    sys.exit(code)


def cli_with_file_limit(argv: list[str], stderr_path: str, max_bytes: int) -> None:
    """`cli`, with no file of the child allowed past max_bytes (RLIMIT_FSIZE, `ulimit -f`): writes
    beyond it fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    cli(argv, stderr_path)


# -- killing ------------------------------------------------------------------------------------
@dataclass
class KillOutcome:
    """Whether the kill landed while the child was still working (the interesting case)."""

    killed_alive: bool


def run_and_kill(
    ctx: multiprocessing.context.BaseContext,
    target: Callable[..., None],
    args: tuple[Any, ...],
    ack_path: Path,
    delay: float,
) -> KillOutcome:
    """Start target, wait until it acknowledges 'ready', sleep `delay` seconds, SIGKILL it."""
    p = ctx.Process(target=target, args=args)  # type: ignore[attr-defined]
    p.start()
    deadline = time.monotonic() + 60
    while "ready" not in read_acks(ack_path):
        if not p.is_alive() or time.monotonic() > deadline:
            p.kill()
            p.join()
            raise AssertionError(f"child never became ready (exit code {p.exitcode})")
        time.sleep(0.002)
    time.sleep(delay)
    alive = p.is_alive()
    p.kill()
    p.join()
    return KillOutcome(killed_alive=alive)


def time_to_finish(ctx: multiprocessing.context.BaseContext, target: Callable[..., None], args: tuple[Any, ...],
                   ack_path: Path, acks: int) -> float:
    """Seconds from 'ready' until `acks` acknowledgements (the whole job) on this machine, then kill:
    kill delays drawn within it land mid-work however fast the machine is."""
    p = ctx.Process(target=target, args=args)  # type: ignore[attr-defined]
    p.start()
    try:
        deadline = time.monotonic() + 120
        start = None
        while time.monotonic() < deadline and p.is_alive():
            got = read_acks(ack_path)
            if start is None and "ready" in got:
                start = time.monotonic()
            if len(got) >= acks:
                assert start is not None
                return time.monotonic() - start
            time.sleep(0.002)
        raise AssertionError(f"the job never finished (exit code {p.exitcode})")
    finally:
        p.kill()
        p.join()


def random_delay(rng: random.Random, longest: float) -> float:
    return rng.uniform(0.0, longest)


# -- checks -------------------------------------------------------------------------------------
def run_counts(db: dmdb.Database, experiment: str) -> tuple[int, int]:
    """(rows in runs, distinct run ids): equal unless a run is duplicated."""
    row = db.con.execute(
        "SELECT count(*), count(DISTINCT run_id) FROM runs WHERE experiment = ?", [experiment]
    ).fetchall()[0]
    return int(row[0]), int(row[1])


def check_runs_whole(exp: dmdb.Experiment, plan: Plan) -> np.ndarray:
    """Every stored run of the plan carries its planned mask, role and the generator's margins; returns the ids."""
    ids = exp.run_ids()
    assert set(ids.tolist()) <= set(plan.run_ids), "a run outside the plan appeared"
    if len(ids):
        np.testing.assert_array_equal(exp.masks(), plan.masks([int(i) for i in ids]))
        want = np.stack([margins_of(int(r), plan.run(int(r)).mask, exp.n_targets) for r in ids])
        np.testing.assert_array_equal(exp.margins(), want)
        assert set(exp.runs()["role"].to_list()) == {plan.role}
    return ids
