"""How many CPU threads a solve uses: one when its products are small.

A solver runs thousands of small tensor operations. Split across OpenMP/MKL threads, each one
ends in a barrier that waits for every thread; when another process holds the other core, the
wait lasts until the scheduler runs the missing thread again, so on a busy 2-core machine a
5 x 50 x 50 product took 25 ms on two threads against 4 us on one, and a whole 540-run x 50 x 5
`select_lasso` 12-20 s against 0.6 s (bench/README.md, "Threads"). Below SMALL_PRODUCT_FLOPS a
second thread could save at most a fraction of a millisecond per product, so small problems run
on one thread; larger ones keep torch's setting. The rule depends on the shapes only, so a fit
stays reproducible on a given machine.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Concatenate, Iterator, ParamSpec, TypeVar

import numpy as np
import torch

from ._inputs import ArrayLike, resolve_device

SMALL_PRODUCT_FLOPS = 2.0**25
"""Flops of one solver product (a batch of targets times G) below which a solve runs on one thread."""

_BATCH = 64
"""Targets per product assumed by the rule (the solvers' batches are at least this wide when T is)."""

P = ParamSpec("P")
R = TypeVar("R")


def product_flops(n_runs: int, n_train: int, n_targets: int) -> float:
    """Flops of one product of a batch of targets with G = Xc'Xc/n (held as a matrix, or applied
    through the centred masks when that is cheaper)."""
    return 2.0 * min(n_targets, _BATCH) * n_train * min(n_train, 2 * n_runs)


@contextmanager
def one_thread_if_small(flops: float, device: torch.device) -> Iterator[None]:
    """torch's CPU threads set to one for the block when `flops` is below SMALL_PRODUCT_FLOPS
    (restored afterwards); nothing changes on CUDA or for larger work."""
    before = torch.get_num_threads()
    if device.type != "cpu" or flops >= SMALL_PRODUCT_FLOPS or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def threads_by_size(solver: Callable[Concatenate[ArrayLike, ArrayLike, P], R]) -> Callable[Concatenate[ArrayLike, ArrayLike, P], R]:
    """Run a solver `solver(X, Y, ..., device=...)` under one_thread_if_small for its shapes
    (masks X (runs, N), margins Y (runs, T) or (runs,); the solver checks them)."""

    @functools.wraps(solver)
    def run(X: ArrayLike, Y: ArrayLike, *args: P.args, **kwargs: P.kwargs) -> R:
        shape_x, shape_y = np.shape(X), np.shape(Y)  # type: ignore[arg-type]
        n_targets = shape_y[1] if len(shape_y) == 2 else 1
        flops = product_flops(shape_x[0], shape_x[1], n_targets) if len(shape_x) == 2 else 0.0
        with one_thread_if_small(flops, resolve_device(kwargs.get("device"))):  # type: ignore[arg-type]
            return solver(X, Y, *args, **kwargs)

    return run
