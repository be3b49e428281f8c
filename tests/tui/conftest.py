"""A small study for the TUI tests: images, fit/holdout runs, one fit with a planted leak, and
recorded counterfactual runs for one (target, k, mode). Built once, then only opened read-only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import dmdb
from analyses_fixtures import insert_fit, new_db, sparse_random_W
from helpers import COMPARED_TARGETS, LEAK, PLANNED_BY_OTHER, VERIFIED

os.environ["DMDB_TUI_IMAGES"] = "halfcell"  # the same text cells in every terminal, for stable snapshots

N_TRAIN, N_TARGETS = 200, 30


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tui")
    rng = np.random.default_rng(7)
    db, exp = new_db(tmp, "study.duckdb", n_train=N_TRAIN, n_targets=N_TARGETS, images=True, rng=rng)
    masks = rng.random((50, N_TRAIN)) < 0.5
    margins = rng.normal(0.3, 1.0, (50, N_TARGETS)).astype(np.float32)
    exp.record_batch(np.arange(40), masks[:40], margins[:40], role="fit")
    exp.record_batch(np.arange(40, 50), masks[40:], margins[40:], role="holdout")
    W = sparse_random_W(rng, N_TRAIN, N_TARGETS, 0.2)
    W[LEAK[1], LEAK[0]] = 3.0
    fit_id = insert_fit(db, "e", W, rng.normal(0, 0.1, N_TARGETS))
    target, k, mode = VERIFIED
    removed = dmdb.analyses.removal_set(db, target, k, mode=mode, fit=fit_id)
    cf_masks = np.ones((5, N_TRAIN), dtype=bool)
    cf_masks[:3, removed] = False
    infos = [{"fit_id": fit_id, "target": target, "k": k, "mode": mode, "purpose": "counterfactual",
              "removed": removed.tolist()}] * 3
    infos += [{"fit_id": fit_id, "target": None, "k": 0, "mode": "top", "purpose": "baseline", "removed": []}] * 2
    cf_margins = rng.normal(0, 1, (5, N_TARGETS)).astype(np.float32)
    exp.record_batch(np.arange(100, 105), cf_masks, cf_margins, role="counterfactual", infos=infos)
    path = Path(db.path)
    db.close()
    return path


@pytest.fixture(scope="session")
def compared_study(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study with more retrained runs of fit 1 (two ks for a few targets, one brittleness check,
    two seeds) and a second fit, PLANNED_BY_OTHER, that planned none: it is verified on fit 1's runs."""
    path = tmp_path_factory.mktemp("compared") / "compared.duckdb"
    path.write_bytes(study.read_bytes())
    rng = np.random.default_rng(11)
    with dmdb.open(path) as db:
        support = dmdb.analyses.brittleness(db, fit=1).filter(pl.col("support") > 0)["target"]
        plan = dmdb.analyses.plan_counterfactuals(db, fit=1, targets=COMPARED_TARGETS, ks=[3, 10],
                                                  brittle=[support[0]], seeds=[0, 1])
        margins = rng.normal(0.2, 1.0, (len(plan), N_TARGETS)).astype(np.float32)
        db.experiment("e").record_batch(plan.run_ids, plan.masks, margins, role="counterfactual", seeds=plan.seeds,
                                        infos=plan.infos)
        assert insert_fit(db, "e", sparse_random_W(rng, N_TRAIN, N_TARGETS, 0.2), rng.normal(0, 0.1, N_TARGETS),
                          estimator="other") == PLANNED_BY_OTHER
    return path


@pytest.fixture(scope="session")
def empty_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment with targets but no fit."""
    db, _ = new_db(tmp_path_factory.mktemp("nofit"), "nofit.duckdb", n_train=20, n_targets=5)
    path = Path(db.path)
    db.close()
    return path
