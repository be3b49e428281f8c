"""Similar examples: a target's most helpful and most harmful train examples, and its nearest
targets by cosine similarity of weight vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..errors import BadInputError
from ..validate import is_int
from .labels import labels_of
from .weights import load_weights

if TYPE_CHECKING:
    from ..store import Database


def _check_k(k: int) -> int:
    if not is_int(k) or k < 1:
        raise BadInputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def top_weights(db: "Database", target: int, *, fit: int | None = None, k: int = 10) -> pl.DataFrame:
    """The k largest positive and k most negative weights of one target (the SQL macro top_weights).

    Columns: fit_id, target, direction ('positive' | 'negative'), rank (1 = strongest), train_idx,
    weight, label (of the train example), has_image. Positive rows first.
    """
    k = _check_k(k)
    fw = load_weights(db, fit)
    fw.col(target)  # raises for a target the fit does not have
    return db.sql("SELECT * FROM top_weights(fit := ?, target := ?, k := ?)", [fw.fit_id, int(target), k])


def nearest_targets(db: "Database", target: int, *, fit: int | None = None, k: int = 10) -> pl.DataFrame:
    """The k targets whose weight vectors have the highest cosine similarity with this target's.

    Only targets sharing at least one nonzero train example are candidates (all others have cosine
    exactly 0); a target with no nonzero weights has no neighbours. Ties by neighbour id.
    Columns: fit_id, target, rank, neighbor, cosine, neighbor_label.
    """
    k = _check_k(k)
    fw = load_weights(db, fit)
    j = fw.col(target)
    idx, w = fw.column(target)
    qn = float(np.sqrt(w @ w))
    sub = fw.csr[idx]  # the query's train examples, all targets
    dots = sub.T @ w
    share = np.bincount(sub.indices, minlength=fw.n_targets) > 0
    share[j] = False
    norms = fw.norms
    cand = np.flatnonzero(share & (norms > 0))
    if qn == 0 or cand.size == 0:
        cand = cand[:0]
    cos = dots[cand] / (norms[cand] * qn) if cand.size else np.zeros(0)
    order = np.lexsort((fw.targets[cand], -cos))[:k]
    nb = fw.targets[cand[order]]
    frame = pl.DataFrame(
        {
            "fit_id": np.full(len(order), fw.fit_id, dtype=np.int32),
            "target": np.full(len(order), int(target), dtype=np.int32),
            "rank": np.arange(1, len(order) + 1, dtype=np.int64),
            "neighbor": nb.astype(np.int32),
            "cosine": cos[order],
        }
    )
    labels = labels_of(db, fw.info.experiment, "targets", nb)
    return frame.with_columns(neighbor_label=pl.Series(labels, dtype=pl.Int32))

