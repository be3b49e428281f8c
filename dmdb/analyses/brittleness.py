"""Brittleness (data support): how few train examples must go to flip a target's prediction.

support(t) = the smallest k >= 0 such that removing t's k largest positive weights makes the
predicted margin (full-train-set baseline, see counterfactual) < 0:
  * 0 when the base margin is already < 0 (the prediction is wrong to begin with);
  * NULL when removing every positive weight is not enough.
Ties between equal weights do not matter: the sum of the k largest is the same.

The summary counts, for thresholds k_max, the targets predicted correct (base margin >= 0) whose
support is <= k_max. Default thresholds: 10, 20, 40, 80, 160, 250, 500, 1000. 250 (0.5% of
CIFAR-10's 50,000 train images) is the datamodels paper's headline number (roughly half of the
CIFAR-10 test predictions were flippable with fewer than 250 removals); the doubling series from 10
shows the shape of the curve. Pass your own thresholds for other train-set sizes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import polars as pl

from ..errors import BadInputError
from ..validate import is_int
from .labels import labels_of
from .weights import FitWeights, load_weights

if TYPE_CHECKING:
    from ..store import Database

DEFAULT_THRESHOLDS = (10, 20, 40, 80, 160, 250, 500, 1000)


def support_of(fw: FitWeights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(support as float with NaN for never, margin_after, n_positive) for every target of the fit."""
    csc = fw.csc
    T = fw.n_targets
    counts = np.diff(csc.indptr)
    cols = np.repeat(np.arange(T), counts)
    pos = csc.data > 0
    v, c = csc.data[pos], cols[pos]
    n_positive = np.bincount(c, minlength=T)
    # One sort by target, then weight descending: key = target + u, u in [0, 1) falling with the
    # weight (float64 keeps ~38 bits for u at 10^4 targets; near-equal weights may swap, which
    # leaves every top-k sum the same up to rounding).
    if len(v):
        span = float(v.max() - v.min()) or 1.0
        key = c + (v.max() - v) / span * (1 - 1e-9)
        order = np.argsort(key)
    else:
        order = np.zeros(0, dtype=np.int64)
    v, c = v[order], c[order]
    cs = np.cumsum(v)
    starts = np.concatenate([[0], np.cumsum(n_positive)[:-1]])
    before = np.zeros(T)
    later = starts > 0  # (indexing cs only there: with no positive weight at all, cs is empty)
    before[later] = cs[starts[later] - 1]
    removed = cs - before[c]  # sum of the top-r positive weights, r = rank within target
    base = fw.base_margin
    still = base[c] - removed >= 0  # monotone within a target: True ... True False ... False
    n_still = np.bincount(c[still], minlength=T)
    support = np.where(n_still < n_positive, n_still + 1, np.nan)
    support = np.where(base < 0, 0.0, support)
    after = np.full(T, np.nan)
    ok = np.isfinite(support) & (support > 0)
    after[ok] = base[ok] - removed[starts[ok] + support[ok].astype(np.int64) - 1]
    after[base < 0] = base[base < 0]
    return support, after, n_positive


def brittleness(db: "Database", *, fit: int | None = None) -> pl.DataFrame:
    """Per target: fit_id, target, label (of the target; null if unset), base_margin, n_positive,
    support (null: never), margin_after (predicted margin after removing `support` examples; null
    when support is null)."""
    fw = load_weights(db, fit)
    support, after, npos = support_of(fw)
    return pl.DataFrame(
        {
            "fit_id": np.full(fw.n_targets, fw.fit_id, dtype=np.int32),
            "target": fw.targets.astype(np.int32),
            "label": pl.Series(labels_of(db, fw.info.experiment, "targets", fw.targets), dtype=pl.Int32),
            "base_margin": fw.base_margin,
            "n_positive": npos.astype(np.int64),
            "support": pl.Series(support).fill_nan(None).cast(pl.Int64),
            "margin_after": pl.Series(after).fill_nan(None),
        }
    )


def brittleness_summary(db: "Database", *, fit: int | None = None,
                        thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> pl.DataFrame:
    """Columns: k_max, n_targets, n_correct (base margin >= 0), n_flipped (1 <= support <= k_max),
    frac_flipped (n_flipped / n_correct)."""
    ints = [t for t in thresholds if is_int(t)]
    th = sorted({int(t) for t in ints})
    if not th or th[0] < 1 or len(ints) < len(thresholds):  # int() would make 2.5 a threshold of 2
        raise BadInputError(f"thresholds must be positive integers, got {list(thresholds)}")
    br = brittleness(db, fit=fit)
    s = br["support"]
    n_correct = int((s.is_null() | (s != 0)).sum())
    flipped = [int(((s >= 1) & (s <= k)).sum()) for k in th]
    return pl.DataFrame(
        {
            "k_max": th,
            "n_targets": [br.height] * len(th),
            "n_correct": [n_correct] * len(th),
            "n_flipped": flipped,
            "frac_flipped": [f / n_correct if n_correct else None for f in flipped],
        },
        schema={"k_max": pl.Int64, "n_targets": pl.Int64, "n_correct": pl.Int64, "n_flipped": pl.Int64,
                "frac_flipped": pl.Float64},
    )
