"""Collecting a plan's runs on an engine: workers write shards, this one process ingests them.

Resuming is the normal path: shards left by an interrupted collect are ingested first, and only
runs still missing from the database are handed to the engine. Every run lands exactly once:
ingest is idempotent and checks each run against its plan, and a retried run reuses a shard that
a killed worker had already finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..ingestion import IngestReport, ingest
from .engines import EngineOptions, run_engine
from .task import Job, load_train_fn

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..plan import Plan

INGEST_EVERY_S = 0.5
"""Finished shards are ingested in groups at most this often: one directory scan per group."""


@dataclass
class CollectReport:
    """What a collect did. `already_recorded`: runs in the database when it started;
    `from_earlier_shards`: runs an interrupted collect (or other workers) had left as shards,
    ingested first; `retried`: runs of `trained` that needed more than one try; `failed` maps
    run ids to the error that remained after the retries."""

    planned: int
    already_recorded: int
    from_earlier_shards: int = 0
    trained: int = 0
    retried: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    bad_shards: list[tuple[str, str]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing and not self.bad_shards


def default_shards_dir(db_path: str) -> Path:
    return Path(f"{db_path}.shards")


def collect(
    exp: "Experiment",
    plan: "Plan",
    train: str,
    opts: EngineOptions,
    shards: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> CollectReport:
    """Train every run of `plan` not yet recorded, on the engine in `opts`, and ingest the results."""
    load_train_fn(train)  # a typo fails here, before any worker starts
    shards = Path(shards)
    shards.mkdir(parents=True, exist_ok=True)
    planned = set(plan.run_ids)
    bad: dict[str, str] = {}

    def missing() -> list[int]:
        return [r for r in exp.missing(plan.role) if r in planned]

    def sync() -> list[int]:
        rep: IngestReport = ingest(exp.db, shards)
        bad.update(rep.bad)
        todo = missing()
        if progress is not None:
            progress(plan.n_runs - len(todo), plan.n_runs)
        return todo

    before = len(missing())
    pending = sync()
    report = CollectReport(planned=plan.n_runs, already_recorded=plan.n_runs - before,
                           from_earlier_shards=before - len(pending))
    last = time.monotonic()
    unsynced = False
    for outcome in run_engine(opts, Job.of(exp, plan), pending, train, shards):
        if outcome.error is not None:
            report.failed[outcome.run_id] = outcome.error
        else:
            report.trained += 1
            report.retried += outcome.attempts > 1  # trained now, after a retry: failed runs are not counted
            unsynced = True
        if unsynced and time.monotonic() - last >= INGEST_EVERY_S:
            sync()
            last, unsynced = time.monotonic(), False
    report.missing = [r for r in sync() if r not in report.failed]
    report.bad_shards = sorted(bad.items())
    return report
