"""A fit from start to end: select runs and targets in SQL, read them, solve, score on holdout
runs (LDS), optionally a learning curve, and store everything in one transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import BadInputError, FitError
from ..packing import PackedMasks
from ..readback import ARRAY_COLUMNS, read_arrays
from ..regress import SolverResult, predict, spearman_per_target
from ..regress._inputs import Progress, resolve_device
from ..regress.memory import out_of_memory_as_fit_error
from ..validate import as_real
from .estimators import SOLVERS
from .options import MIN_HOLDOUT_RUNS, FitOptions
from .selection import Selection, select
from .write import CurvePoint, FitRecord, stored_weights, write_fit

if TYPE_CHECKING:
    from ..experiment import Experiment


@dataclass
class FitData:
    """Masks (held packed) and margins of the fit+validation runs (rows in run id order) and of the
    holdout runs."""

    ids: np.ndarray
    X: PackedMasks
    Y: np.ndarray
    X_holdout: PackedMasks
    Y_holdout: np.ndarray

    def rows(self, run_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ids, run_ids)


def read_data(exp: "Experiment", sel: Selection) -> FitData:
    if np.intersect1d(sel.holdout, np.concatenate([sel.fit, sel.val])).size:
        raise FitError("holdout_pool and fit_pool share runs; an LDS needs runs that no fit saw")
    ids = np.sort(np.concatenate([sel.fit, sel.val]))
    cols = sel.targets
    X, Y = _read(exp, ids, cols)
    X_holdout, Y_holdout = _read(exp, sel.holdout, cols)
    data = FitData(ids=ids, X=X, Y=Y, X_holdout=X_holdout, Y_holdout=Y_holdout)
    _check_finite(exp, ids, data.Y, cols, "fit", "leave them out with where= (CLI: --where)")
    _check_finite(exp, sel.holdout, data.Y_holdout, cols, "holdout", "leave them out of the holdout_pool view")
    return data


def _check_finite(exp: "Experiment", ids: np.ndarray, Y: np.ndarray, cols: np.ndarray, role: str, leave_out: str) -> None:
    """Runs whose margins hold NaN or inf (written around record's checks, e.g. by `dmdb sql --write`)
    named by run id; the solver could only say which target columns. A float64 row sum finds them in
    one pass without a runs x targets boolean copy (it cannot overflow from float32 margins, so a
    row's sum is NaN or inf exactly when one of its margins is)."""
    bad = np.flatnonzero(~np.isfinite(Y.sum(axis=1, dtype=np.float64)))
    if bad.size:
        first = int(cols[np.flatnonzero(~np.isfinite(Y[bad[0]]))[0]])
        shown = ", ".join(str(i) for i in ids[bad[:5]]) + (", ..." if bad.size > 5 else "")
        raise FitError(
            f"{bad.size} {role} run(s) of experiment {exp.name!r} have NaN or inf margins (run ids {shown}; the first at "
            f"target {first}), which a fit cannot use: repair or delete those runs, or {leave_out}"
        )


def _read(exp: "Experiment", run_ids: np.ndarray, cols: np.ndarray) -> tuple[PackedMasks, np.ndarray]:
    """The runs' masks (packed) and their margins of the target columns `cols` only, taken block by
    block as they are read: at 300,000 runs x 10,000 targets all margins are 12 GB, and fitting fewer
    targets at a time is how a large study fits in memory. All columns in order are read as they are."""
    every = np.array_equal(cols, np.arange(exp.n_targets))
    got = read_arrays(exp, ARRAY_COLUMNS, None, run_ids, packed=True, targets=None if every else cols)
    return got["mask"], got["margins"]


_SCORE_BLOCK_BYTES = 1 << 28
"""About how much float64 one block of targets (weights and predictions), or of mask rows, takes."""


def holdout_scores(data: FitData, W: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Per-target Spearman of predicted vs actual holdout margins, and their mean (the LDS).

    Predictions are made as `Fit.predict` makes them: in float64, from the weights as stored
    (float32) and the bias as stored (float64), so the stored Spearman is the one a user computes
    from `fit.predict(holdout masks)`; float32 predictions tie or swap runs whose predictions are
    within float32 rounding of each other. Targets are scored in blocks, and masks cast to float64
    in blocks of rows, of about _SCORE_BLOCK_BYTES each: no float64 copy of all of W is made.

    Targets whose holdout margins are constant have no rank correlation (NaN, stored as NULL)
    and are left out of the mean; with fewer than MIN_HOLDOUT_RUNS holdout runs no target has
    one. A datamodel that predicts one margin for every run (a lasso target with no nonzero
    weight) ranks nothing: it counts as 0, so that an estimator cannot raise its LDS by giving
    up on hard targets.
    """
    n, N = data.X_holdout.shape
    T = W.shape[1]
    if n < MIN_HOLDOUT_RUNS:
        return np.full(T, np.nan), None
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    rho = np.empty(T)
    step = max(1, _SCORE_BLOCK_BYTES // (8 * (N + n)))
    rows = max(1, _SCORE_BLOCK_BYTES // (8 * N))  # masks cast to float64 a block of rows at a time
    for a in range(0, T, step):
        b = slice(a, a + step)
        pred = predict(data.X_holdout, stored_weights(W[:, b]).astype(np.float64), bias[b], block_rows=rows)
        actual = data.Y_holdout[:, b]
        r = spearman_per_target(pred, actual)
        flat = (pred == pred[:1]).all(axis=0) & ~(actual == actual[:1]).all(axis=0)
        r[flat] = 0.0
        rho[b] = r
    finite = np.isfinite(rho)
    return rho, float(rho[finite].mean()) if finite.any() else None


def _nanmean(a: np.ndarray) -> float | None:
    finite = np.isfinite(a)
    return float(a[finite].mean()) if finite.any() else None


def _at_path_end(sel: Selection, result: SolverResult) -> list[int]:
    """Lasso targets whose validation error was lowest at the path's smallest lambda (eps *
    lambda_max): still falling there, so a smaller eps might fit them better. None for a
    constant target (lambda 0) or another estimator."""
    if result.method != "lasso" or result.lambdas is None:
        return []
    end = (result.lam == result.lambdas[-1]) & ~np.asarray(result.constant, dtype=bool)
    return [int(t) for t in sel.targets[end]]


def _solve(data: FitData, sel: Selection, opts: FitOptions, device: torch.device,
           progress: Progress | None) -> SolverResult:
    solver = SOLVERS[opts.estimator]
    with out_of_memory_as_fit_error(device):
        return solver(data.X, data.Y, data.rows(sel.fit), data.rows(sel.val), opts, device, progress)


def _curve_fractions(curve: object) -> list[float] | None:
    """The learning curve's fractions as floats in (0, 1], checked before anything is read; None
    or an empty list: no curve."""
    if curve is None:
        return None
    if isinstance(curve, (str, bytes)) or not isinstance(curve, (Sequence, np.ndarray)):
        raise BadInputError(f"curve must be a list of fractions such as [0.1, 0.25, 0.5, 1.0], got {curve!r}")
    fractions = [as_real(f, "a learning-curve fraction") for f in curve]
    for f in fractions:
        if not 0 < f <= 1:
            raise FitError(f"learning-curve fractions must be in (0, 1], got {f}")
    return fractions or None


def _curve_sizes(fractions: Sequence[float], n_fit: int) -> list[tuple[float, int]]:
    out: dict[int, float] = {}
    for f in fractions:
        n = max(2, int(round(f * n_fit)))
        out.setdefault(n, float(f))
    return sorted((f, n) for n, f in out.items())


def run_fit(
    exp: "Experiment",
    options: FitOptions,
    *,
    where: str | None = None,
    targets: str | Sequence[int] | np.ndarray | None = None,
    device: str | None = None,
    curve: Sequence[float] | None = None,
    progress: Progress | None = None,
) -> int:
    """Fit, score and store; returns the new fit_id."""
    exp.db.require_writable()
    curve = _curve_fractions(curve)
    dev = resolve_device(device)
    sel = select(exp, where, targets, options.val_frac, options.split_seed)
    if progress:
        progress("reading runs", 0, 1)
    data = read_data(exp, sel)
    if progress:
        progress("reading runs", 1, 1)
    points: list[CurvePoint] = []
    sizes = _curve_sizes(curve, sel.fit.size) if curve else []
    for j, (frac, n) in enumerate(s for s in sizes if s[1] < sel.fit.size):
        t0 = time.perf_counter()
        sub = sel.prefix(n)
        r = _solve(data, sub, options, dev, None)
        _, lds = holdout_scores(data, r.W, r.bias)
        points.append(CurvePoint(n, frac, lds, _nanmean(r.val_r2), time.perf_counter() - t0))
        if progress:
            progress("learning curve", j + 1, len(sizes))
    t0 = time.perf_counter()
    result = _solve(data, sel, options, dev, progress)
    seconds = time.perf_counter() - t0
    rho, lds = holdout_scores(data, result.W, result.bias)
    if curve:
        points.append(CurvePoint(int(sel.fit.size), 1.0, lds, _nanmean(result.val_r2), seconds))
        if progress:
            progress("learning curve", len(sizes), len(sizes))
    # the solver's verdict, kept with the options (fits has no other JSON column): targets whose
    # path stopped at max_iter GEMMs at some lambda before reaching the duality-gap tolerance
    not_converged = [int(t) for t in sel.targets[~np.asarray(result.converged, dtype=bool)]]
    config = options.config() | {"curve": list(curve) if curve else None, "not_converged": not_converged,
                                 "at_path_end": _at_path_end(sel, result)}
    rec = FitRecord(
        experiment=exp.name, estimator=options.estimator, config=config, selection=sel,
        W=result.W, bias=result.bias, lam=result.lam, val_mse=result.val_mse, val_r2=result.val_r2,
        holdout_spearman=rho, lds=lds, device=str(dev), seconds=seconds, curve=points,
    )
    return write_fit(exp.db, rec)
