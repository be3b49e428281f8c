"""Checking a fit's counterfactual predictions by retraining without the removed examples.

For sampled targets and several k, the k train examples with the largest positive weights are
removed from the full train set and models are retrained (several seeds); so are models on the
full train set (the baseline). Every retrained model is recorded as a run with role
'counterfactual' whose info says what was removed and why:
  {"fit_id": f, "target": t, "k": k, "mode": "top", "purpose": "counterfactual"|"brittleness"|"baseline",
   "removed": [train idx...]}
The actual change of a target is the mean margin over the removal's seeds minus the mean margin
over the baseline's seeds; the prediction is minus the sum of the removed weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl

from ..analyses import counterfactual, removal_set
from ..experiment import Experiment
from ..regress import spearman_per_target
from .data import DigitsData
from .train import train_models

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Removal:
    target: int
    k: int
    purpose: str
    removed: np.ndarray


@dataclass
class Verification:
    """One row per (target, k): predicted and actual margins and changes."""

    rows: pl.DataFrame
    spearman: float | None  # predicted vs actual change over the counterfactual rows
    brittle_tested: int
    brittle_flipped: int  # the full-set models were right (margin >= 0) and the retrained ones are wrong
    brittle_already_wrong: int  # the full-set models were wrong already: nothing left to flip (as the TUI says)


def plan_removals(exp: Experiment, fit_id: int, targets: np.ndarray, ks: tuple[int, ...],
                  brittle: pl.DataFrame) -> list[Removal]:
    """Top-k removals for the sampled targets, and each brittle target's estimated support
    (`brittle`: rows of dmdb.analyses.brittleness with a support, most brittle first)."""
    db = exp.db
    out = [Removal(int(t), k, "counterfactual", removal_set(db, int(t), k, fit=fit_id)) for t in targets for k in ks]
    for row in brittle.iter_rows(named=True):
        t, k = int(row["target"]), int(row["support"])
        out.append(Removal(t, k, "brittleness", removal_set(db, t, k, fit=fit_id)))
    return [r for r in out if r.removed.size]


BASELINE = Removal(-1, 0, "baseline", np.zeros(0, dtype=np.int64))
"""Models on the full train set: what each removal's outcome is compared with."""


def retrain(exp: Experiment, data: DigitsData, fit_id: int, jobs: list[Removal], seeds: np.ndarray,
            kind: str, threads: int | None, progress: Progress | None = None) -> int:
    """Train every job (a removal, or BASELINE) with each seed, and record them as counterfactual
    runs of this fit; returns how many were trained."""
    masks = np.ones((len(jobs) * seeds.size, data.n_train), dtype=bool)
    infos: list[dict[str, object]] = []
    for j, job in enumerate(jobs):
        masks[j * seeds.size : (j + 1) * seeds.size, job.removed] = False
        infos += [{"fit_id": fit_id, "target": None if job.target < 0 else job.target, "k": job.k, "mode": "top",
                   "purpose": job.purpose, "removed": job.removed.tolist()}] * seeds.size
    all_seeds = np.tile(seeds, len(jobs))
    margins = np.empty((len(all_seeds), data.n_targets), dtype=np.float32)
    step = 64
    for a in range(0, len(all_seeds), step):
        res = train_models(data, masks[a : a + step], all_seeds[a : a + step], kind=kind, threads=threads)
        margins[a : a + step] = res.margins
        if progress:
            progress("verifying", min(a + step, len(all_seeds)), len(all_seeds))
    first = exp.next_run_id()
    return exp.record_batch(np.arange(first, first + len(all_seeds)), masks, margins, role="counterfactual",
                            seeds=all_seeds, worker="demo-verify", infos=infos)


def _counterfactual_runs(exp: Experiment, fit_id: int) -> pl.DataFrame:
    return exp.db.sql(
        """SELECT (info->>'target')::INTEGER AS target, (info->>'k')::INTEGER AS k, info->>'purpose' AS purpose,
                  margins
           FROM runs WHERE experiment = ? AND role = 'counterfactual' AND (info->>'fit_id')::INTEGER = ?""",
        [exp.name, fit_id],
    )


def full_set_margins(exp: Experiment, fit_id: int, runs: pl.DataFrame | None = None) -> np.ndarray | None:
    """Every target's mean margin over this fit's BASELINE models (None before they are trained)."""
    runs = _counterfactual_runs(exp, fit_id) if runs is None else runs
    base = runs.filter(pl.col("purpose") == "baseline")
    return None if base.is_empty() else np.stack(base["margins"].to_list()).mean(axis=0)


def verification(exp: Experiment, fit_id: int) -> Verification:
    """Predicted against actual outcomes of the counterfactual runs recorded for this fit."""
    runs = _counterfactual_runs(exp, fit_id)
    base_margin = full_set_margins(exp, fit_id, runs)
    if base_margin is None:
        return Verification(pl.DataFrame(), None, 0, 0, 0)
    rows = []
    groups = runs.filter(pl.col("purpose") != "baseline").group_by(["target", "k", "purpose"], maintain_order=True)
    for (t, k, purpose), g in groups:
        actual = float(np.stack(g["margins"].to_list())[:, t].mean())
        cf = counterfactual(exp.db, int(t), fit=fit_id, k=int(k), mode="top").row(0, named=True)
        rows.append({
            "target": t, "k": k, "purpose": purpose, "seeds": g.height,
            "predicted_base": cf["base_margin"], "predicted_margin": cf["predicted_margin"],
            "predicted_change": cf["predicted_change"],
            "actual_base": float(base_margin[t]), "actual_margin": actual, "actual_change": actual - float(base_margin[t]),
        })
    frame = pl.DataFrame(rows)
    cfr = frame.filter(pl.col("purpose") == "counterfactual")
    rho = None
    if cfr.height >= 3:
        r = spearman_per_target(cfr["predicted_change"].to_numpy(), cfr["actual_change"].to_numpy())[0]
        rho = None if np.isnan(r) else float(r)
    br = frame.filter(pl.col("purpose") == "brittleness")
    if br.is_empty():
        return Verification(frame, rho, 0, 0, 0)
    right = br["actual_base"] >= 0
    return Verification(frame, rho, br.height, int((right & (br["actual_margin"] < 0)).sum()), int((~right).sum()))
