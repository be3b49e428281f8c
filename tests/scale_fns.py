"""Training functions for the scale-out tests, importable by worker processes and Ray tasks.

They wrap the synthetic experiment's own function, so every recorded margin has a known value,
and misbehave on purpose as the experiment's config says: die by SIGKILL the first time a run is
tried (a worker killed mid-run), raise, or sleep (so a test can kill the collecting process).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from dmdb import PlannedRun
from dmdb.scale import train_synthetic


def train_or_die(run: PlannedRun, config: dict[str, Any]) -> np.ndarray:
    """SIGKILL its own process the first time it trains a run id listed in config['die_on']."""
    if run.run_id in config.get("die_on", []):
        marker = Path(config["marker_dir"]) / f"died-{run.run_id}"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(config.get("sleep", 0.0))
    return train_synthetic(run, config)


def slow_on(run: PlannedRun, config: dict[str, Any]) -> np.ndarray:
    """The true margins, after config['slow_s'] seconds for the run ids in config['slow_on'] (a long training)."""
    if run.run_id in config.get("slow_on", []):
        time.sleep(config["slow_s"])
    return train_synthetic(run, config)


def always_raise(run: PlannedRun, config: dict[str, Any]) -> np.ndarray:
    raise RuntimeError(f"training of run {run.run_id} diverged")


def wrong_shape(run: PlannedRun, config: dict[str, Any]) -> np.ndarray:
    return np.zeros(1, dtype=np.float32)


def nan_on(run: PlannedRun, config: dict[str, Any]) -> np.ndarray:
    """The true margins, with a NaN in target 1 for the run ids in config['nan_on'] (a diverged model)."""
    margins = np.array(train_synthetic(run, config), dtype=np.float32)
    if run.run_id in config.get("nan_on", []):
        margins[1] = np.nan
    return margins


def grad_tensor(run: PlannedRun, config: dict[str, Any]) -> Any:
    """The true margins as a torch tensor that requires grad, as a training loop computes them."""
    import torch

    return torch.tensor(np.asarray(train_synthetic(run, config)), requires_grad=True) * 1.0
