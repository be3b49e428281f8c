"""What shapes a fit besides its data: the estimator's name and options. Torch-free, so the
CLI can build its parser without loading the solvers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..validate import as_int, as_real

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

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The keyword options Experiment.fit passes on (every field but the estimator)."""
        return tuple(f.name for f in fields(cls) if f.name != "estimator")

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise BadInputError(f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        if self.dtype not in ("float32", "float64"):
            raise BadInputError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        # each option's type and range, stored as a plain Python value: a float k or a string tol is a
        # clear error instead of a torch TypeError deep in the solver, block_rows=-1 (which read no rows:
        # all-zero weights) or refit='no' (truthy) cannot make a wrong fit silently, and a numpy scalar
        # (np.int64 from a sweep) does not fail json.dumps when the finished fit is written
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("k", as_int(self.k, "k", 1))
        put("max_iter", as_int(self.max_iter, "max_iter", 1))
        put("split_seed", as_int(self.split_seed, "split_seed", 0))
        if self.patience is not None:
            put("patience", as_int(self.patience, "patience", 0))
        if self.block_rows is not None:
            put("block_rows", as_int(self.block_rows, "block_rows", 1))
        if not isinstance(self.refit, (bool, np.bool_)):
            raise BadInputError(f"refit must be True or False, got {self.refit!r}")
        put("refit", bool(self.refit))
        put("eps", as_real(self.eps, "eps"))
        if not 0 < self.eps <= 1:
            raise BadInputError(f"eps must be in (0, 1], got {self.eps}")
        if self.estimator == "lasso" and (self.k == 1 or self.eps == 1):
            # every lambda of the path would be the fit runs' lambda_max, where all their weights are
            # 0 (the refit on fit + validation runs keeps at most a stray one): an LDS near 0, unexplained
            raise BadInputError(
                f"k={self.k}, eps={self.eps} makes a lasso path of lambda_max alone, the lambda at which every weight is 0: "
                "use k >= 2 and eps < 1 (the path runs from lambda_max down to eps * lambda_max)"
            )
        put("tol", as_real(self.tol, "tol"))
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise BadInputError(f"tol must be a finite number >= 0, got {self.tol}")
        put("val_frac", as_real(self.val_frac, "val_frac"))
        if not 0 < self.val_frac < 1:
            raise BadInputError(f"val_frac must be in (0, 1), got {self.val_frac}")
        if self.patience == 0:  # as the CLI's --patience 0: no early stop
            object.__setattr__(self, "patience", None)
        if self.gram not in (None, "matrix", "masks"):
            raise BadInputError(f"gram must be 'matrix', 'masks' or None (automatic), got {self.gram!r}")

    def config(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CURVE = (0.1, 0.25, 0.5, 1.0)
"""Fractions of the fit runs a learning curve refits on (`--curve` without a value)."""

MIN_HOLDOUT_RUNS = 3
"""The fewest holdout runs an LDS is computed on: the rank correlation of two runs is always +-1."""
