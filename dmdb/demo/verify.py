"""Training the demo's counterfactual checks: the runs dmdb.analyses.plan_counterfactuals plans,
trained with the demo's own trainer and recorded as counterfactual runs of the fit
(dmdb.analyses.verification compares them with the fit's predictions)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..analyses import CounterfactualPlan
from ..experiment import Experiment
from .data import DigitsData
from .train import train_models

Progress = Callable[[str, int, int], None]


def retrain(exp: Experiment, data: DigitsData, plan: CounterfactualPlan, kind: str, threads: int | None,
            progress: Progress | None = None) -> int:
    """Train every planned run and record them; returns how many were trained."""
    if not len(plan):
        return 0
    margins = np.empty((len(plan), data.n_targets), dtype=np.float32)
    step = 64
    for a in range(0, len(plan), step):
        res = train_models(data, plan.masks[a : a + step], plan.seeds[a : a + step], kind=kind, threads=threads)
        margins[a : a + step] = res.margins
        if progress:
            progress("verifying", min(a + step, len(plan)), len(plan))
    return exp.record_batch(plan.run_ids, plan.masks, margins, role="counterfactual", seeds=plan.seeds,
                            worker="demo-verify", infos=plan.infos)
