"""Synthetic experiments with a known sparse true datamodel, at any size.

Each target t has k = round(density * n_train) train examples with nonzero true weight. A run's
margin on t is ``bias[t] + mask @ w[:, t] + noise * e``, e standard normal from the run's seed.
Weights are scaled so that the signal part has standard deviation about 1 across subsets, so
`noise` reads as noise-to-signal ratio. Everything is a pure function of the spec, stored in the
experiment's config: the truth can be rebuilt at any time (`true_weights`), and
`train_synthetic` is a training function the collect engines can run.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from ..errors import BadInputError
from ..interrupt import fetchall
from ..fit.options import FitOptions
from ..fit.selection import min_fit_pool
from ..plan import PlannedRun

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..fit import Fit
    from ..plan import Plan
    from ..store import Database

GATHER_ELEMENTS = 1 << 24
"""Chunk size bound: runs x targets x k gathered mask bits per step (64 MB as float32)."""


@dataclass(frozen=True)
class SynthSpec:
    n_train: int
    n_targets: int
    density: float = 0.01
    noise: float = 0.5
    seed: int = 0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_targets < 1:
            raise BadInputError(f"n_train and n_targets must be positive, got {self.n_train} and {self.n_targets}")
        if not 0 < self.density <= 1:
            raise BadInputError(f"density must be in (0, 1], got {self.density}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):  # NaN passed 'noise < 0' and left an empty experiment
            raise BadInputError(f"noise must be a finite number >= 0, got {self.noise}")

    @property
    def k(self) -> int:
        """Nonzero true weights per target."""
        return max(1, round(self.density * self.n_train))

    def config(self) -> dict[str, Any]:
        return {"synthetic": asdict(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SynthSpec":
        if "synthetic" not in config:
            raise BadInputError("this experiment is not synthetic (its config has no 'synthetic' entry)")
        return cls(**config["synthetic"])


@lru_cache(maxsize=4)
def true_model(spec: SynthSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(idx (T, k) int64, weights (T, k) float32, bias (T,) float32): target t's nonzeros are idx[t]."""
    rng = np.random.default_rng([spec.seed, 0x5EED])
    k = spec.k
    idx = np.stack([np.sort(rng.choice(spec.n_train, size=k, replace=False)) for _ in range(spec.n_targets)])
    scale = 1.0 / np.sqrt(k * spec.alpha * (1 - spec.alpha))
    vals = (rng.standard_normal((spec.n_targets, k)) * scale).astype(np.float32)
    bias = rng.standard_normal(spec.n_targets).astype(np.float32)
    return idx, vals, bias


def true_weights(spec: SynthSpec) -> np.ndarray:
    """The dense true weight matrix (n_train, n_targets), float64: the oracle a fit is compared with."""
    idx, vals, _ = true_model(spec)
    w = np.zeros((spec.n_train, spec.n_targets))
    w[idx, np.arange(spec.n_targets)[:, None]] = vals
    return w


def synth_margins(spec: SynthSpec, masks: np.ndarray, seeds: Iterable[int]) -> np.ndarray:
    """Margins (runs, T) float32 of runs with these masks and seeds."""
    idx, vals, bias = true_model(spec)
    masks = np.asarray(masks, dtype=bool)
    out = np.empty((masks.shape[0], spec.n_targets), dtype=np.float32)
    step = max(1, GATHER_ELEMENTS // (spec.n_targets * spec.k))
    for s in range(0, masks.shape[0], step):
        gathered = masks[s : s + step][:, idx].astype(np.float32)  # (runs, T, k)
        out[s : s + step] = np.einsum("rtk,tk->rt", gathered, vals)
    out += bias
    if spec.noise:
        for row, seed in enumerate(seeds):
            out[row] += spec.noise * np.random.default_rng([spec.seed, int(seed)]).standard_normal(spec.n_targets)
    return out


def train_synthetic(run: PlannedRun, experiment_config: dict[str, Any]) -> np.ndarray:
    """A training function (`--train dmdb.scale.synth:train_synthetic`): the run's synthetic margins."""
    return synth_margins(SynthSpec.from_config(experiment_config), run.mask[None, :], [run.seed])[0]


def create_synthetic(
    db: "Database", name: str, spec: SynthSpec, fit_runs: int, holdout_runs: int = 0, chunk: int | None = None,
    truth_fit: bool = True, progress: Callable[[str, int, int], None] | None = None, sampling: str = "fixed",
) -> tuple["Experiment", "Fit | None"]:
    """Create (or resume) a synthetic experiment and record its runs, `chunk` runs per transaction.

    `sampling` is the experiment's rule for the runs' subsets ('fixed' or 'bernoulli', as in
    `create_experiment`); the true weights do not depend on it.

    Memory stays bounded by one chunk (default: about 64 MB of masks). With `truth_fit`, the true
    weights are stored as a fit named `scores:truth` (uncalibrated: only its bias is fitted), so
    `exp.fit(...)` results can be compared with it in SQL; that reads every run back, so leave it
    off for studies that do not fit in memory.
    """
    val_frac = FitOptions().val_frac  # the split import_scores uses
    need = min_fit_pool(val_frac)
    if truth_fit and fit_runs < need:
        raise BadInputError(f"the truth fit needs at least {need} fit runs (the default validation split takes "
                            f"{val_frac:.0%}), got {fit_runs}; record more or skip it (--no-truth-fit)")
    exp = db.create_experiment(name, spec.n_train, spec.n_targets, alpha=spec.alpha, sampling=sampling,
                               config=spec.config(), exist_ok=True)
    if SynthSpec.from_config(exp.config) != spec:
        raise BadInputError(f"experiment {name!r} exists with another synthetic spec: {exp.config['synthetic']}")
    chunk = chunk or max(1, (64 << 20) // spec.n_train)
    for role, n in (("fit", fit_runs), ("holdout", holdout_runs)):
        if n > 0:
            record_plan(exp, exp.plan(n, seed=spec.seed, role=role), spec, chunk, progress)
    truth = None
    if truth_fit:  # a rerun that added no runs finds the truth fit it stored before
        row = fetchall(db.con, "SELECT max(fit_id) FROM fits WHERE experiment = ? AND estimator = 'scores:truth'",
                             [name])[0][0]
        truth = db.fit(int(row)) if row is not None else None
        if truth is None or (truth.n_fit_runs + truth.n_val_runs, truth.n_holdout_runs) != (
                exp.n_runs("fit"), exp.n_runs("holdout")):
            truth = exp.import_scores(true_weights(spec), name="truth", calibrate=False)
    return exp, truth


def record_plan(
    exp: "Experiment", plan: "Plan", spec: SynthSpec, chunk: int, progress: Callable[[str, int, int], None] | None
) -> None:
    missing = set(exp.missing(plan.role))
    todo = [r for r in plan.run_ids if r in missing]
    stage = f"synth {plan.role}"
    done = plan.n_runs - len(todo)
    for s in range(0, len(todo), chunk):
        ids = todo[s : s + chunk]
        runs = [plan.run(r) for r in ids]
        masks = np.stack([r.mask for r in runs])
        seeds = np.array([r.seed for r in runs], dtype=np.int64)
        exp.record_batch(ids, masks, synth_margins(spec, masks, seeds), role=plan.role, seeds=seeds, worker="synth")
        done += len(ids)
        if progress is not None:
            progress(stage, done, plan.n_runs)
