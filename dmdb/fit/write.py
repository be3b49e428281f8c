"""Writing a fit: its row, per-target results, the runs of each split, nonzero weights and learning
curve, in one transaction, so a fit killed midway leaves nothing behind."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import FitError
from ..interrupt import execute, fetchall
from ..transaction import transaction
from .selection import Selection

if TYPE_CHECKING:
    from ..store import Database


@dataclass(frozen=True)
class CurvePoint:
    n_fit_runs: int
    fraction: float
    lds: float | None
    mean_val_r2: float | None
    seconds: float


@dataclass
class FitRecord:
    """Everything stored about one fit. W is (n_train, len(targets)) in raw 0/1 mask units."""

    experiment: str
    estimator: str
    config: dict[str, Any]
    selection: Selection
    W: np.ndarray
    bias: np.ndarray
    lam: np.ndarray
    val_mse: np.ndarray
    val_r2: np.ndarray
    holdout_spearman: np.ndarray
    lds: float | None
    device: str
    seconds: float
    curve: list[CurvePoint] = field(default_factory=list)


def _nullable(a: np.ndarray) -> pa.Array:
    """NaN (no value: constant margins, no validation runs) becomes SQL NULL."""
    a = np.asarray(a, dtype=np.float64)
    return pa.array(a, mask=~np.isfinite(a))


_INSERTED = ("fit_targets", "fit_runs", "weights")


def _insert(db: "Database", table: str, data: pa.Table) -> None:
    """Insert inside write_fit's transaction; write_fit unregisters the view after it (inside an
    aborted transaction unregister fails and hides the error that aborted it)."""
    name = f"_dmdb_new_{table}"
    db.con.register(name, data)
    cols = ", ".join(data.column_names)
    execute(db.con, f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name}")


def stored_weights(W: np.ndarray) -> np.ndarray:
    """The weights as stored (float32): nonzeros and counts are taken after the cast, so a value
    that underflows is not kept as a 0.0 row, and one that overflows is refused."""
    W32 = np.asarray(W, dtype=np.float32)
    if not np.isfinite(W32).all():
        raise FitError("weights are not finite in float32 (NaN, or a magnitude beyond 3.4e38); nothing was written")
    return W32


def write_fit(db: "Database", rec: FitRecord) -> int:
    """Store the fit; returns its fit_id."""
    db.require_writable()
    sel = rec.selection
    targets = sel.targets.astype(np.int32)
    W = stored_weights(rec.W)
    con = db.con
    try:
        with transaction(con):
            fit_id = int(
                fetchall(
                    con,
                    """INSERT INTO fits (experiment, estimator, config, runs_where, targets_where, n_fit_runs,
                                         n_val_runs, n_holdout_runs, device, seconds, lds)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING fit_id""",
                    [rec.experiment, rec.estimator, json.dumps(rec.config), sel.runs_where, sel.targets_where,
                     int(sel.fit.size), int(sel.val.size), int(sel.holdout.size), rec.device, rec.seconds, rec.lds],
                )[0][0]
            )
            nnz = (W != 0).sum(axis=0).astype(np.int32)
            _insert(db, "fit_targets", pa.table({
                "fit_id": pa.array(np.full(targets.size, fit_id, dtype=np.int32)),
                "target": pa.array(targets),
                "lam": _nullable(rec.lam),
                "bias": pa.array(np.asarray(rec.bias, dtype=np.float64)),
                "val_mse": _nullable(rec.val_mse),
                "val_r2": _nullable(rec.val_r2),
                "holdout_spearman": _nullable(rec.holdout_spearman),
                "nnz": pa.array(nnz),
            }))
            run_ids = np.concatenate([sel.fit, sel.val, sel.holdout]).astype(np.int64)
            splits = np.repeat(np.array(["fit", "val", "holdout"]), [sel.fit.size, sel.val.size, sel.holdout.size])
            _insert(db, "fit_runs", pa.table({
                "fit_id": pa.array(np.full(run_ids.size, fit_id, dtype=np.int32)),
                "run_id": pa.array(run_ids),
                "split": pa.array(splits.tolist(), type=pa.string()),
                "fit_order": pa.array(np.arange(run_ids.size, dtype=np.int32),
                                      mask=np.arange(run_ids.size) >= sel.fit.size),
            }))
            col, idx = np.nonzero(W.T)  # target-major: rows of one target are contiguous
            _insert(db, "weights", pa.table({
                "fit_id": pa.array(np.full(col.size, fit_id, dtype=np.int32)),
                "target": pa.array(targets[col]),
                "train_idx": pa.array(idx.astype(np.int32)),
                "weight": pa.array(W.T[col, idx]),
            }))
            for p in rec.curve:
                execute(
                    con,
                    "INSERT INTO fit_curve (fit_id, n_fit_runs, fraction, lds, mean_val_r2, seconds) VALUES (?, ?, ?, ?, ?, ?)",
                    [fit_id, p.n_fit_runs, p.fraction, p.lds, p.mean_val_r2, p.seconds],
                )
    finally:
        for table in _INSERTED:
            con.unregister(f"_dmdb_new_{table}")
    return fit_id
