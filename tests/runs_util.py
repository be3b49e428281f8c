"""Helpers shared by test modules (a plain module: `from conftest import` breaks when tests/tui has its own conftest)."""

from __future__ import annotations

import numpy as np

import dmdb


def random_runs(n_runs: int, n_train: int, n_targets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = rng.random((n_runs, n_train)) < 0.5
    margins = rng.standard_normal((n_runs, n_targets)).astype(np.float32)
    return masks, margins


def table_counts(db: dmdb.Database) -> dict[str, int]:
    """Row counts of every table that recording may touch: 'nothing written' means these are unchanged."""
    tables = ["experiments", "runs", "plans", "ingested_shards", "train_examples", "targets"]
    return {t: db.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}
