"""Scale-out: training functions run by workers on an engine (local processes, Ray, job arrays),
shards ingested by one process, synthetic studies with a known truth, and Parquet export.

Names load on first use: a worker (dmdb.scale.task, `dmdb worker`, the local engine's processes)
imports neither duckdb nor polars; collecting and synthetic studies do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

_HOME = {
    "CollectReport": "collector",
    "collect": "collector",
    "default_shards_dir": "collector",
    "ENGINES": "engines",
    "EngineOptions": "engines",
    "Outcome": "engines",
    "SynthSpec": "synth",
    "create_synthetic": "synth",
    "train_synthetic": "synth",
    "true_weights": "synth",
    "Job": "task",
    "TrainFn": "task",
    "find_shard": "task",
    "load_train_fn": "task",
    "run_one": "task",
}

__getattr__ = lazy_attributes(__name__, _HOME)

if TYPE_CHECKING:  # what type checkers see instead of __getattr__ (tests/test_packaging.py keeps it equal to _HOME)
    from .collector import CollectReport, collect, default_shards_dir
    from .engines import ENGINES, EngineOptions, Outcome
    from .synth import SynthSpec, create_synthetic, train_synthetic, true_weights
    from .task import Job, TrainFn, find_shard, load_train_fn, run_one

__all__ = sorted(_HOME)
