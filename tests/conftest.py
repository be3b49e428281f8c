from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import dmdb


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "study.duckdb"


@pytest.fixture
def db(db_path: Path) -> Iterator[dmdb.Database]:
    with dmdb.open(db_path) as d:
        yield d


@pytest.fixture
def exp(db: dmdb.Database) -> dmdb.Experiment:
    """A small experiment whose n_train is not a multiple of 8, to exercise bit padding."""
    return db.create_experiment("small", n_train=37, n_targets=5, alpha=0.5)


def random_runs(n_runs: int, n_train: int, n_targets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = rng.random((n_runs, n_train)) < 0.5
    margins = rng.standard_normal((n_runs, n_targets)).astype(np.float32)
    return masks, margins


def table_counts(db: dmdb.Database) -> dict[str, int]:
    """Row counts of every table that recording may touch: 'nothing written' means these are unchanged."""
    tables = ["experiments", "runs", "plans", "ingested_shards", "train_examples", "targets"]
    return {t: db.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}
