"""The unit of distributed work: train one planned run with the user's function and write its shard.

A training function is named ``module:function`` and called as ``fn(run, experiment_config)``:

- ``run`` is a :class:`dmdb.PlannedRun`: ``run.indices`` are the train examples to train on,
  ``run.mask`` the same as a bool vector, ``run.seed`` the seed for the model's own randomness,
  ``run.run_id`` and ``run.role`` for logging.
- ``experiment_config`` is the experiment's stored config dict (whatever the experiment was
  created with): dataset paths, model and optimiser settings. The function gets a copy.
- It returns the run's margins on every target, shape ``(n_targets,)``, finite numbers.

Workers never open the database: everything they need travels in a :class:`Job` (the plan, the
experiment's shape and config), which is small, picklable and serialisable as a plan file.
Running a run twice is harmless: if a finished shard for it is already in the shard folder, the
worker returns that shard instead of training again (so retries after a kill never duplicate).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import BadInputError, CorruptShardError, DmdbError
from ..files import replaced
from ..plan import ROLES, SAMPLING, Plan, PlannedRun
from ..shards import file_stem, read_shard, write_run
from ..validate import as_array, as_margins, is_int

PLAN_FILE_VERSION = 1


class TrainFn(Protocol):
    def __call__(self, run: PlannedRun, experiment_config: dict[str, Any]) -> Any: ...


def load_train_fn(spec: str) -> TrainFn:
    """Resolve 'package.module:function' to the function, with an error that says what to fix."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInputError(f"--train takes module:function (e.g. dmdb.demo.worker_fn:train_digits), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BadInputError(f"cannot import the training module {module_name!r}: {e} (is it on PYTHONPATH?)") from e
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise BadInputError(f"module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise BadInputError(f"{spec} is not callable")
    return fn  # type: ignore[return-value]


@dataclass(frozen=True)
class Job:
    """What a worker needs to train any run of a plan, without the database."""

    plan: Plan
    n_targets: int
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, exp: Any, plan: Plan) -> "Job":
        return cls(plan=plan, n_targets=exp.n_targets, config=dict(exp.config))

    def to_json(self) -> str:
        plan = {k: v for k, v in self.plan.to_dict().items() if k != "n_targets"}  # once, at the top, as before
        return json.dumps({"dmdb_plan_file": PLAN_FILE_VERSION, "plan": plan,
                           "n_targets": self.n_targets, "config": self.config}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Job":
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise BadInputError(f"a JSON {type(d).__name__}, not an object")
            if d.get("dmdb_plan_file") != PLAN_FILE_VERSION:
                raise BadInputError(f"plan file version {d.get('dmdb_plan_file')!r}, expected {PLAN_FILE_VERSION}")
            _check_plan_fields(d)
            plan = Plan.from_dict({**d["plan"], "n_targets": d["n_targets"]})
            return cls(plan=plan, n_targets=d["n_targets"], config=d["config"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadInputError(f"not a dmdb plan file (write one with `dmdb plan`): {e}") from e

    def save(self, path: str | Path) -> None:
        with replaced(path) as tmp:
            tmp.write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Job":
        try:
            return cls.from_json(Path(path).read_text())
        except OSError as e:
            raise BadInputError(f"cannot read the plan file {path}: {e}") from e


def _check_plan_fields(d: dict[str, Any]) -> None:
    """A plan file edited by hand fails here, naming the field, not later as every run's training error."""
    def whole(v: Any, least: int) -> bool:
        return is_int(v) and v >= least

    for key in ("plan", "n_targets", "config"):
        if key not in d:
            raise BadInputError(f"no {key!r} field")
    p = d["plan"]
    if not isinstance(p, dict):
        raise BadInputError(f"'plan' must be an object, got {p!r}")
    fields = ("experiment", "role", "seed", "first_run_id", "n_runs", "n_train", "alpha", "sampling")
    absent, unknown = [f for f in fields if f not in p], sorted(set(p) - set(fields))
    if absent:
        raise BadInputError(f"'plan' lacks {', '.join(absent)}")
    if unknown:
        raise BadInputError(f"'plan' has unknown field(s) {', '.join(map(str, unknown))}")
    checks = (
        ("experiment", isinstance(p["experiment"], str) and p["experiment"] != "", "a name"),
        ("role", p["role"] in ROLES, f"one of {', '.join(ROLES)}"),
        ("sampling", p["sampling"] in SAMPLING, f"one of {', '.join(SAMPLING)}"),
        ("seed", whole(p["seed"], 0), "an integer >= 0"),
        ("first_run_id", whole(p["first_run_id"], 0), "an integer >= 0"),
        ("n_runs", whole(p["n_runs"], 1), "an integer >= 1"),
        ("n_train", whole(p["n_train"], 1), "an integer >= 1"),
        ("alpha", isinstance(p["alpha"], (int, float)) and not isinstance(p["alpha"], bool) and 0 < p["alpha"] < 1,
         "a number between 0 and 1 (exclusive)"),
    )
    for name, ok, what in checks:
        if not ok:
            raise BadInputError(f"plan.{name} must be {what}, got {p[name]!r}")
    if not whole(d["n_targets"], 1):
        raise BadInputError(f"n_targets must be an integer >= 1, got {d['n_targets']!r}")
    if not isinstance(d["config"], dict):
        raise BadInputError(f"config must be an object, got {d['config']!r}")


def find_shard(directory: str | Path, experiment: str, run_id: int) -> Path | None:
    """A finished, readable single-run shard of this run in `directory`, if a worker wrote one before."""
    for path in sorted(Path(directory).glob(f"{file_stem(experiment)}-{run_id}-*.parquet")):
        try:
            table, meta = read_shard(path)
        except CorruptShardError:
            continue
        if meta["experiment"] == experiment and table["run_id"].to_pylist() == [run_id]:
            return path
    return None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_one(job: Job, run_id: int, train: str, shards: str | Path, worker: str | None = None) -> Path:
    """Train planned run `run_id` with the function named `train` and write its shard; returns the shard's path."""
    plan = job.plan
    fn = load_train_fn(train)  # first: a typo in `train` fails even for a run whose shard is there
    done = find_shard(shards, plan.experiment, run_id)
    if done is not None:
        return done
    run = plan.run(run_id)
    t0 = time.perf_counter()
    raw = fn(run, dict(job.config))
    seconds = time.perf_counter() - t0
    margins = _returned_margins(raw, train, run_id, job.n_targets)
    return write_run(shards, plan.experiment, run, margins, worker=worker or worker_name(), duration_s=seconds)


def _returned_margins(raw: Any, train: str, run_id: int, n_targets: int) -> np.ndarray:
    """What the training function returned, checked as `record` checks margins (a torch tensor on a
    GPU or one that requires grad is accepted). A bad value is this run's failure, a DmdbError naming
    the run, not a BadInputError: a worker goes on with the other runs of its range."""
    try:
        margins = as_array(raw, "margins")
        if margins.shape != (n_targets,):
            raise BadInputError(f"shape {margins.shape}; the experiment has {n_targets} targets, so it must "
                                f"return shape ({n_targets},)")
        return as_margins(margins[None, :], 1, n_targets)[0]
    except BadInputError as e:
        raise DmdbError(f"{train} returned unusable margins for run {run_id}: {e}") from e

