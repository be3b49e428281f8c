from __future__ import annotations

from pathlib import Path
from typing import Iterator

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
