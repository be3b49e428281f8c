"""Test helpers for the analyses: write a dense numpy W (n_train x n_targets) + bias as a fit, and
check the SQL macro verification against the Python function.

The fit-writing code lives elsewhere; these tests insert fits/fit_targets/weights rows directly, in
the documented layout (nonzeros only, raw 0/1 mask units), so they depend only on the schema.
"""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import dmdb
from dmdb import analyses as A


def insert_fit(db: "dmdb.Database", experiment: str, W: np.ndarray, bias: np.ndarray,
               estimator: str = "test", targets: np.ndarray | None = None) -> int:
    """Insert W (n_train x T) as a fit; column j is target targets[j] (default j). Returns fit_id."""
    W = np.asarray(W, dtype=np.float32)
    n_train, T = W.shape
    targets = np.arange(T) if targets is None else np.asarray(targets)
    con = db.con
    fit_id = con.execute(
        "INSERT INTO fits (experiment, estimator) VALUES (?, ?) RETURNING fit_id", [experiment, estimator]
    ).fetchall()[0][0]
    rows, cols = np.nonzero(W)
    name = f"_w_{uuid.uuid4().hex}"
    con.register(name, pa.table({
        "target": pa.array(targets[cols].astype(np.int32)),
        "train_idx": pa.array(rows.astype(np.int32)),
        "weight": pa.array(W[rows, cols]),
    }))
    con.execute(f"INSERT INTO weights SELECT ?, target, train_idx, weight FROM {name}", [fit_id])
    con.unregister(name)
    nnz = (W != 0).sum(axis=0)
    con.executemany(
        "INSERT INTO fit_targets (fit_id, target, bias, nnz) VALUES (?, ?, ?, ?)",
        [[fit_id, int(t), float(b), int(n)] for t, b, n in zip(targets, bias, nnz)],
    )
    return int(fit_id)


def sparse_random_W(rng: np.random.Generator, n_train: int, T: int, density: float, scale: float = 0.05) -> np.ndarray:
    """Float32-exact random weights: Laplace-ish, ~density nonzero, no exact ties."""
    W = rng.laplace(0, scale, size=(n_train, T)) * (rng.random((n_train, T)) < density)
    return W.astype(np.float32).astype(np.float64)


def new_db(tmp_path, name: str = "a.duckdb", n_train: int = 200, n_targets: int = 30, labels: bool = True,
           images: bool = False, rng: np.random.Generator | None = None):
    db = dmdb.open(tmp_path / name)
    exp = db.create_experiment("e", n_train=n_train, n_targets=n_targets, alpha=0.5)
    rng = rng or np.random.default_rng(0)
    if labels:
        exp.set_train_examples(labels=rng.integers(0, 10, n_train),
                               images=rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8) if images else None)
        exp.set_targets(labels=rng.integers(0, 10, n_targets),
                        images=rng.integers(0, 256, (n_targets, 8, 8), dtype=np.uint8) if images else None)
    return db, exp


EXACT = ["target", "k", "mode", "purpose", "n_removed", "seeds"]


def assert_sql_is_python(db: dmdb.Database, fit: int | None, runs_of: int | None) -> A.Verification:
    """The SQL macros' rows and summary are Python's: the same columns and types (after fit_id, runs_of),
    the same rows in the same order, the figures to rounding."""
    v = A.verification(db, fit, runs_of=runs_of)
    rows = db.sql("SELECT * FROM verification(fit := ?, runs_of := ?)", [fit, runs_of])
    assert rows.schema == {"fit_id": pl.Int32, "runs_of": pl.Int32, **v.rows.schema}
    assert rows.height == v.rows.height > 0
    assert set(rows.select("fit_id", "runs_of").rows()) == {(v.fit_id, v.runs_of)}
    assert rows.select(EXACT).rows() == v.rows.select(EXACT).rows()
    for c in v.rows.columns[len(EXACT):]:
        got, want = rows[c].to_numpy(), v.rows[c].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=c)
        assert (np.signbit(got) == np.signbit(want)).all(), c  # nothing removed: a change of +0.0, not -0.0
    summary = db.sql("SELECT * FROM verification_summary(fit := ?, runs_of := ?)", [fit, runs_of])
    expect = v.summary()
    assert summary.schema == expect.schema
    corr = ["spearman", "pearson"]
    assert summary.drop(corr).rows() == expect.drop(corr).rows()
    for c in corr:
        assert summary[c][0] == pytest.approx(expect[c][0], abs=1e-12)
    return v
