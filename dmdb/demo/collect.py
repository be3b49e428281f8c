"""Collecting runs for the digits experiment through the public API, as a user's training script would.

This is the worked example of the collection API: create the experiment (with image payloads),
plan seeded subsets, train the pending ones, record their margins. A user's own script differs
only in what `train_models` does.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..experiment import Experiment
from ..plan import Plan
from ..store import Database
from .data import DigitsData
from .train import train_models

Progress = Callable[[str, int, int], None]
CHUNK = 256
"""Runs trained and recorded per transaction: a killed demo loses at most one chunk of work."""


def digits_experiment(db: Database, name: str, data: DigitsData, alpha: float, config: dict[str, object]) -> Experiment:
    """The experiment, created with its payloads on first use and reused (resumed) afterwards."""
    exp = db.create_experiment(name, n_train=data.n_train, n_targets=data.n_targets, alpha=alpha,
                               config=config, exist_ok=True)
    if exp.targets().is_empty():
        source = np.vectorize(lambda i: f"load_digits()[{i}]", otypes=[object])
        exp.set_train_examples(labels=data.y_train, images=data.images_train, source_ids=source(data.source_train))
        exp.set_targets(labels=data.y_test, images=data.images_test, source_ids=source(data.source_test))
    return exp


def collect(exp: Experiment, plan: Plan, data: DigitsData, kind: str, threads: int | None,
            progress: Progress | None = None) -> int:
    """Train and record every run of the plan not recorded yet; returns how many were trained."""
    pending = list(exp.pending(plan))
    stage = f"training {plan.role}"
    if progress:
        progress(stage, plan.n_runs - len(pending), plan.n_runs)
    for start in range(0, len(pending), CHUNK):
        runs = pending[start : start + CHUNK]
        masks = np.stack([r.mask for r in runs])
        seeds = np.array([r.seed for r in runs], dtype=np.int64)
        t0 = time.perf_counter()
        result = train_models(data, masks, seeds, kind=kind, threads=threads)
        per_run = (time.perf_counter() - t0) / len(runs)
        exp.record_batch(
            [r.run_id for r in runs], masks, result.margins, role=plan.role, seeds=seeds, worker="demo",
            durations=[per_run] * len(runs), infos=[{"accuracy": float(a)} for a in result.accuracy],
        )
        if progress:
            progress(stage, plan.n_runs - len(pending) + start + len(runs), plan.n_runs)
    return len(pending)
