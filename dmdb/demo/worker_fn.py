"""A ready training function for `dmdb worker` / `dmdb collect --train dmdb.demo.worker_fn:train_digits`.

It trains one digits model on a planned subset, reading what to train from the experiment's
config, as written by `dmdb demo` or `digits_config()`: the split seed, the model kind and its
training settings. It is the template for a user's own function: build (and cache) the dataset
once per process, train on ``run.indices`` with ``run.seed``, return the margins on every target.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ..plan import PlannedRun
from .data import DEFAULT_SPLIT_SEED, DigitsData, load_digits_split
from .train import DEFAULTS, train_models


def digits_config(
    model: str = "linear", split_seed: int = DEFAULT_SPLIT_SEED, n_targets: int | None = None, threads: int = 1
) -> dict[str, Any]:
    """The experiment config train_digits reads (the keys `dmdb demo` stores, plus n_targets and threads)."""
    return {"dataset": "sklearn digits", "split_seed": split_seed, "model": model,
            "train": DEFAULTS[model].__dict__, "n_targets": n_targets, "threads": threads}


@lru_cache(maxsize=4)
def _data(n_train: int, n_targets: int | None, split_seed: int) -> DigitsData:
    return load_digits_split(n_train=n_train, n_targets=n_targets, seed=split_seed)


def train_digits(run: PlannedRun, experiment_config: dict[str, Any]) -> np.ndarray:
    """Margins (n_targets,) of one model trained on the run's subset of the digits train set.

    One torch thread by default: parallelism comes from running many workers.
    """
    cfg = experiment_config
    data = _data(len(run.mask), cfg.get("n_targets"), int(cfg.get("split_seed", DEFAULT_SPLIT_SEED)))
    kind = cfg.get("model", "linear")
    settings = {k: v for k, v in cfg.get("train", {}).items() if k in ("steps", "lr", "weight_decay", "hidden")}
    result = train_models(data, run.mask[None, :], [run.seed], kind=kind, device="cpu",
                          threads=int(cfg.get("threads", 1)), **settings)
    return result.margins[0]
