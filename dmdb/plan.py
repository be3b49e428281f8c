"""Seeded, reproducible subset planning: the mask of a planned run is a pure function of its plan and index."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import BadInputError

ROLES = ("fit", "holdout", "counterfactual")
SAMPLING = ("fixed", "bernoulli")


def _rng(seed: int, role: str, index: int) -> np.random.Generator:
    # The role is mixed in so that plans for 'fit' and 'holdout' with the same seed differ.
    return np.random.default_rng([seed, zlib.crc32(role.encode()), index])


def fixed_size(n_train: int, alpha: float) -> int:
    """How many examples each run of a 'fixed' sampling experiment keeps: round(alpha * n_train)."""
    return int(round(alpha * n_train))


def sample_mask(n_train: int, alpha: float, sampling: str, seed: int, role: str, index: int) -> tuple[np.ndarray, int]:
    """The mask and training seed of run `index` of a plan.

    Only ``Generator.random`` and ``Generator.integers`` are used, whose streams numpy keeps stable.
    'fixed' keeps exactly round(alpha * n_train) examples (the paper's rule); 'bernoulli' keeps
    each example independently with probability alpha.
    """
    rng = _rng(seed, role, index)
    u = rng.random(n_train)
    train_seed = int(rng.integers(0, 2**31 - 1))
    if sampling == "bernoulli":
        return u < alpha, train_seed
    k = fixed_size(n_train, alpha)
    mask = np.zeros(n_train, dtype=bool)
    if k > 0:
        mask[np.argpartition(u, k - 1)[:k]] = True
    return mask, train_seed


@dataclass(frozen=True)
class PlannedRun:
    """One run to train: which examples to train on (mask / indices) and the seed for its model,
    planned for `experiment`."""

    run_id: int
    role: str
    mask: np.ndarray
    seed: int
    experiment: str
    n_targets: int | None = None
    """How many margins the run returns (one per target); None in a plan from a dict without it."""

    @property
    def indices(self) -> np.ndarray:
        """Indices of the train examples in this run's subset, for indexing a dataset."""
        return np.flatnonzero(self.mask)

    def require_experiment(self, name: str) -> None:
        """Refuse to record this run under another experiment than the one it was planned for."""
        if self.experiment != name:
            raise BadInputError(f"run {self.run_id} was planned for experiment {self.experiment!r}, not {name!r}")


@dataclass(frozen=True)
class Plan:
    """A block of planned runs. Serialisable as a dict, so workers can rebuild it without the database."""

    experiment: str
    role: str
    seed: int
    first_run_id: int
    n_runs: int
    n_train: int
    alpha: float
    sampling: str
    n_targets: int | None = None
    """The experiment's targets, so that a worker's write_run checks margins; None from an older dict."""

    @property
    def run_ids(self) -> range:
        return range(self.first_run_id, self.first_run_id + self.n_runs)

    def run(self, run_id: int) -> PlannedRun:
        if run_id not in self.run_ids:
            raise KeyError(f"run {run_id} is not in this plan (runs {self.first_run_id}..{self.run_ids[-1]})")
        mask, train_seed = sample_mask(
            self.n_train, self.alpha, self.sampling, self.seed, self.role, run_id - self.first_run_id
        )
        return PlannedRun(run_id=run_id, role=self.role, mask=mask, seed=train_seed, experiment=self.experiment,
                          n_targets=self.n_targets)

    def __iter__(self) -> Iterator[PlannedRun]:
        return (self.run(r) for r in self.run_ids)

    def __len__(self) -> int:
        return self.n_runs

    def masks(self, run_ids: range | list[int] | None = None) -> np.ndarray:
        """The planned masks of these runs (all of the plan by default) as a (runs, N) bool matrix."""
        ids = self.run_ids if run_ids is None else run_ids
        out = np.empty((len(ids), self.n_train), dtype=bool)
        for row, run_id in enumerate(ids):
            out[row] = self.run(run_id).mask
        return out

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "Plan":
        return cls(**d)  # type: ignore[arg-type]
