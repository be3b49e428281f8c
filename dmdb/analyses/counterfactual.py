"""Counterfactuals: the predicted margin after removing a set of train examples.

Baseline: the FULL train set (every mask bit 1), so for target t
    base_margin      = bias_t + sum_i w_it
    predicted_margin = base_margin - sum_{i in R} w_it        (R: the removed examples)
    predicted_change = - sum_{i in R} w_it
A prediction is wrong when its margin is < 0; ``flips`` = (base_margin < 0) != (predicted_margin < 0).
Keeping a subset K is removing its complement. `predict_removals` is this rule for many
(target, removal) pairs at once; `counterfactual` and `verification` both go through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import polars as pl

from ..errors import BadInputError
from ..validate import is_int
from .weights import FitWeights, load_weights

if TYPE_CHECKING:
    from ..store import Database

MODES = ("top", "bottom", "random")


def as_indices(fw: FitWeights, values: Iterable[int] | np.ndarray, what: str) -> np.ndarray:
    try:
        arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    except TypeError as e:
        raise BadInputError(f"{what} must be a list of train example indices") from e
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        if arr.ndim == 1 and np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise BadInputError(f"{what} must be a 1-D list of integer train indices, got {arr.dtype} {arr.shape}")
    bad = arr[(arr < 0) | (arr >= fw.n_train)]
    if bad.size:
        raise BadInputError(f"{what}: train index {int(bad[0])} is outside 0..{fw.n_train - 1}")
    return np.unique(arr.astype(np.int64))


def _removed_from(fw: FitWeights, remove: Any, keep: Any) -> np.ndarray:
    if (remove is None) == (keep is None):
        raise BadInputError("give exactly one of remove= (examples to drop) or keep= (the subset to keep)")
    if remove is not None:
        return as_indices(fw, remove, "remove")
    kept = as_indices(fw, keep, "keep")
    mask = np.ones(fw.n_train, dtype=bool)
    mask[kept] = False
    return np.flatnonzero(mask)


def select_removal(fw: FitWeights, target: int, k: int, mode: str = "top", seed: int = 0) -> np.ndarray:
    """Train indices to remove for one target, in removal order.

    top: the k largest positive weights; bottom: the k most negative weights (fewer if the target
    has fewer of that sign; ties by train_idx ascending); random: k distinct examples drawn
    uniformly from all n_train with numpy's default_rng(seed).
    """
    if mode not in MODES:
        raise BadInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not is_int(k) or k < 0:
        raise BadInputError(f"k must be a non-negative integer, got {k!r}")
    k = int(k)
    if mode == "random":
        if k > fw.n_train:
            raise BadInputError(f"cannot remove {k} random examples out of {fw.n_train}")
        return np.random.default_rng(seed).choice(fw.n_train, size=k, replace=False).astype(np.int64)
    idx, w = fw.column(target)
    sel = w > 0 if mode == "top" else w < 0
    idx, w = idx[sel], w[sel]
    order = np.lexsort((idx, -w if mode == "top" else w))
    return idx[order[:k]]


DENSE_ELEMENTS = 1 << 22
"""Bound on the dense block of target columns summed at once (32 MB of float64)."""


def predict_removals(fw: FitWeights, targets: Sequence[int] | np.ndarray,
                     removals: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The module's rule for pairs (targets[r], removals[r]): base_margin, predicted_margin and
    predicted_change of each, as float64 arrays.

    Each figure is the numpy sum one pair alone gets: a target's dense weight column summed whole,
    its removed weights (in the order given) summed as one row, so a pair's numbers do not depend
    on the other pairs. Unknown targets fail as `FitWeights.col` says.
    """
    if len(targets) != len(removals):
        raise BadInputError(f"one removal per target: got {len(targets)} targets and {len(removals)} removals")
    cols = np.asarray([fw.col(t) for t in targets], dtype=np.int64)
    uniq, inverse = np.unique(cols, return_inverse=True)
    sums = np.empty(len(uniq))
    step = max(1, DENSE_ELEMENTS // fw.n_train)
    for a in range(0, len(uniq), step):  # F order: each column contiguous, summed as dense_column(t).sum()
        sums[a:a + step] = fw.csc[:, uniq[a:a + step]].toarray(order="F").sum(axis=0)
    base = (fw.bias[uniq] + sums)[inverse]
    removed_sum = np.zeros(len(cols))
    sizes = np.asarray([len(r) for r in removals], dtype=np.int64)
    for size in np.unique(sizes[sizes > 0]):  # removals of one size: a (pairs, size) block, summed row by row
        rows = np.flatnonzero(sizes == size)
        idx = np.stack([removals[r] for r in rows]).ravel()
        vals = np.asarray(fw.csr[idx, np.repeat(cols[rows], size)], dtype=np.float64).reshape(len(rows), size)
        removed_sum[rows] = vals.sum(axis=1)
    change = 0.0 - removed_sum  # 0.0 - : nothing removed is +0.0, not -0.0
    return base, base + change, change


def removal_set(db: "Database", target: int, k: int, *, mode: str = "top", fit: int | None = None,
                seed: int = 0) -> np.ndarray:
    """The train indices that `counterfactual(..., k=k, mode=mode)` removes for this target."""
    return select_removal(load_weights(db, fit), target, k, mode, seed)


def counterfactual(
    db: "Database",
    target: int,
    *,
    fit: int | None = None,
    k: int | None = None,
    mode: str = "top",
    remove: Iterable[int] | None = None,
    keep: Iterable[int] | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """One target's predicted margin after a removal, as a one-row frame.

    Give either k (with mode top|bottom|random, see `select_removal`) or remove=/keep=.
    Columns: fit_id, target, mode, n_removed, base_margin, predicted_margin, predicted_change,
    flips, removed (list of the removed train indices; in removal order for top/bottom).
    """
    fw = load_weights(db, fit)
    if k is None and remove is None and keep is None:
        raise BadInputError("give one of k= (with mode=), remove= (examples to drop) or keep= (the subset to keep)")
    if k is not None:
        if remove is not None or keep is not None:
            raise BadInputError("give k (with mode) or remove=/keep=, not both")
        removed = select_removal(fw, target, k, mode, seed)
    else:
        removed = _removed_from(fw, remove, keep)
        mode = "remove" if remove is not None else "keep"
    base, pred, change = (float(v[0]) for v in predict_removals(fw, [target], [removed]))
    return pl.DataFrame(
        {
            "fit_id": [fw.fit_id],
            "target": [int(target)],
            "mode": [mode],
            "n_removed": [len(removed)],
            "base_margin": [base],
            "predicted_margin": [pred],
            "predicted_change": [change],
            "flips": [(base < 0) != (pred < 0)],
            "removed": [removed.astype(np.int32).tolist()],
        },
        schema={"fit_id": pl.Int32, "target": pl.Int32, "mode": pl.Utf8, "n_removed": pl.Int64,
                "base_margin": pl.Float64, "predicted_margin": pl.Float64, "predicted_change": pl.Float64,
                "flips": pl.Boolean, "removed": pl.List(pl.Int32)},  # train_idx is INTEGER
    )


def counterfactual_all(
    db: "Database",
    remove: Iterable[int] | None = None,
    *,
    keep: Iterable[int] | None = None,
    fit: int | None = None,
) -> pl.DataFrame:
    """One removal set (or kept subset) applied to every target of the fit.

    Columns: fit_id, target, base_margin, predicted_margin, predicted_change, flips; one row per
    target, by target id. Cost: the removed rows of the cached sparse matrix only.
    """
    fw = load_weights(db, fit)
    removed = _removed_from(fw, remove, keep)
    if len(removed) * 2 > fw.n_train:  # cheaper to sum what is kept
        kept = np.ones(fw.n_train, dtype=bool)
        kept[removed] = False
        change = np.asarray(fw.csr[np.flatnonzero(kept)].sum(axis=0)).ravel() - (fw.base_margin - fw.bias)
    else:
        change = 0.0 - np.asarray(fw.csr[removed].sum(axis=0)).ravel()
    base = fw.base_margin
    pred = base + change
    return pl.DataFrame(
        {
            "fit_id": np.full(fw.n_targets, fw.fit_id, dtype=np.int32),
            "target": fw.targets.astype(np.int32),
            "base_margin": base,
            "predicted_margin": pred,
            "predicted_change": change,
            "flips": (base < 0) != (pred < 0),
        }
    )
