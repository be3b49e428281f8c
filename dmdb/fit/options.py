"""What shapes a fit besides its data: the estimator's name and options. Torch-free, so the
CLI can build its parser without loading the solvers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import BadInputError
from ..validate import as_int

ESTIMATORS = ("lasso", "diff-means", "ridge")


@dataclass(frozen=True)
class FitOptions:
    """Everything that shapes a fit besides its data; stored as the fit's config.

    k lambdas per target from lambda_max down to eps*lambda_max; tol is the duality-gap
    tolerance relative to each target's variance; patience (lasso) stops a target's path once
    validation MSE has not improved for that many lambdas (None or 0: the whole path). The default,
    10 of k = 100 lambdas (a factor of 2 in lambda past the best one), skips the small-lambda
    end of the path, which no target chooses once its validation error rises and which is the
    slowest to solve when there are fewer runs than train examples. gram (lasso, ridge): how the
    solver holds G = Xc'Xc/n, 'matrix' (N x N) or 'masks' (the centred masks, runs x N); None
    picks 'masks' when the fit runs are at most half the train examples (dmdb.regress.operators).
    """

    estimator: str = "lasso"
    k: int = 100
    eps: float = 1e-3
    tol: float = 1e-4
    max_iter: int = 1000
    patience: int | None = 10
    refit: bool = True
    val_frac: float = 0.1
    split_seed: int = 0
    dtype: str = "float32"
    block_rows: int | None = None
    gram: str | None = None

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise BadInputError(f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        if self.dtype not in ("float32", "float64"):
            raise BadInputError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        as_int(self.split_seed, "split_seed", 0)
        if self.patience == 0:  # as the CLI's --patience 0: no early stop
            object.__setattr__(self, "patience", None)
        if self.gram not in (None, "matrix", "masks"):
            raise BadInputError(f"gram must be 'matrix', 'masks' or None (automatic), got {self.gram!r}")

    def config(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CURVE = (0.1, 0.25, 0.5, 1.0)
"""Fractions of the fit runs a learning curve refits on (`--curve` without a value)."""
