"""Scale-out: training functions run by workers on an engine (local processes, Ray, job arrays),
shards ingested by one process, synthetic studies with a known truth, and Parquet export."""

from .collect import CollectReport, collect, default_shards_dir
from .engines import ENGINES, EngineOptions, Outcome
from .synth import SynthSpec, create_synthetic, train_synthetic, true_weights
from .task import Job, TrainFn, find_shard, load_train_fn, run_one

__all__ = [
    "ENGINES",
    "CollectReport",
    "EngineOptions",
    "Job",
    "Outcome",
    "SynthSpec",
    "TrainFn",
    "collect",
    "create_synthetic",
    "default_shards_dir",
    "find_shard",
    "load_train_fn",
    "run_one",
    "train_synthetic",
    "true_weights",
]
