"""Scores for datamodels: R^2 for validation, Spearman per target for the LDS."""

from __future__ import annotations

import numpy as np

from dmdb.errors import FitError


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n per column, ties sharing their mean rank (what Spearman needs)."""
    n, T = a.shape
    order = np.argsort(a, axis=0, kind="stable")
    s = np.take_along_axis(a, order, axis=0)
    ranks_sorted = np.empty((n, T), dtype=np.float64)
    for t in range(T):
        col = s[:, t]
        # start of each run of equal values
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        ends = np.r_[starts[1:], n]
        avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1..ends
        ranks_sorted[:, t] = np.repeat(avg, ends - starts)
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=0)
    return ranks


def spearman_per_target(pred: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column pair; NaN where either column is constant.

    Per target on held-out runs, averaged over targets, this is the LDS.
    """
    pred = np.asarray(pred, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if pred.ndim == 1:
        pred = pred[:, None]
    if actual.ndim == 1:
        actual = actual[:, None]
    if pred.shape != actual.shape:
        raise FitError(f"predictions {pred.shape} and margins {actual.shape} differ in shape")
    if not (np.isfinite(pred).all() and np.isfinite(actual).all()):
        raise FitError("predictions or margins contain NaN or inf")
    rp = _average_ranks(pred)
    ra = _average_ranks(actual)
    rp -= rp.mean(axis=0)
    ra -= ra.mean(axis=0)
    num = (rp * ra).sum(axis=0)
    den = np.sqrt((rp * rp).sum(axis=0) * (ra * ra).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = num / den
    rho[den == 0] = np.nan
    return rho


def r2_per_target(pred: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """1 - SSE/SST per column; NaN where the actual margins are constant."""
    pred = np.asarray(pred, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    sse = ((actual - pred) ** 2).sum(axis=0)
    sst = ((actual - actual.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - sse / sst
    r2[sst == 0] = np.nan
    return r2
