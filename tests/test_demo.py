"""The demo end to end (`dmdb demo --quick`), asserting on what it stores, and resuming a tiny one."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

import dmdb
from dmdb.cli import main
from dmdb.demo.pipeline import DemoConfig, run_demo


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The quick demo's database and the summary it printed."""
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--quick", "--quiet", "--db", str(path), "--threads", "1"]) == 0
    return path, out.getvalue()


def test_quick_demo_stores_runs_fits_and_verification(quick: tuple[Path, str]) -> None:
    quick_db, out = quick
    with dmdb.open(quick_db, read_only=True) as db:
        exp = db.experiment("digits-linear")
        assert (exp.n_train, exp.n_targets) == (1000, 797)
        counts = dict(db.sql("SELECT role, count(*) FROM runs GROUP BY role").iter_rows())
        assert counts["fit"] == 300 and counts["holdout"] == 80 and counts["counterfactual"] > 0
        assert exp.missing() == []
        assert int(exp.masks("fit").sum(axis=1).min()) == 500  # alpha 0.5, fixed-size subsets
        assert exp.targets()["has_image"].all() and exp.image("train", 0).shape == (8, 8)

        fits = db.fits()
        assert fits["estimator"].to_list() == ["diff-means", "lasso"]  # the lasso is the latest fit
        dm, lasso = fits["lds"].to_list()
        assert 0.6 < lasso < 0.95, lasso  # measured 0.76 with 300 fit runs
        assert 0.2 < dm < lasso
        # each stored LDS is scipy's Spearman of the stored datamodel's holdout predictions, averaged
        Xh, Yh = exp.masks("holdout").astype(np.float64), exp.margins("holdout")
        for fit_id, lds in zip(fits["fit_id"], (dm, lasso)):
            f = db.fit(fit_id)
            pred = f.predict(Xh.astype(bool))
            rho = np.array([spearmanr(pred[:, t], Yh[:, t]).statistic if np.ptp(pred[:, t]) else 0.0
                            for t in range(exp.n_targets)])
            assert lds == pytest.approx(np.nanmean(rho), abs=1e-6)
        curve = db.fit().curve()
        assert curve.height == 2 and curve["lds"][0] < curve["lds"][1]

        cf = db.sql("SELECT run_id, info FROM runs WHERE role = 'counterfactual' ORDER BY run_id")
        infos = [json.loads(i) for i in cf["info"]]
        assert {i["purpose"] for i in infos} >= {"baseline", "counterfactual"}
        assert all(i["fit_id"] == 2 for i in infos)
        masks = exp.masks("counterfactual")
        for row, info in zip(masks, infos):
            removed = np.array(info["removed"], dtype=int)
            assert not row[removed].any() and row.sum() == 1000 - removed.size
        # removal sets are the fit's top-k positive weights for that target
        top = next(i for i in infos if i["purpose"] == "counterfactual")
        w = db.fit(2).weights(top["target"]).sort("weight", descending=True).head(top["k"])
        assert sorted(w["train_idx"].to_list()) == sorted(top["removed"])
        # brittleness is checked only on targets the full-set models get right (the baseline's mean
        # margin >= 0): on the others there is nothing to flip
        base = np.stack([m for m, i in zip(exp.margins("counterfactual"), infos) if i["purpose"] == "baseline"]).mean(axis=0)
        brittle = [i["target"] for i in infos if i["purpose"] == "brittleness"]
        assert brittle and all(base[t] >= 0 for t in brittle)
        assert "wrong there already" not in out
        # difference in means (fit 1) is checked on the lasso's retrained runs, and the summary says how well
        from dmdb.analyses import verification

        dm_on_lasso_runs = verification(db, 1, runs_of=2)
        same = ["target", "k", "purpose", "actual_change"]  # the same retrained runs: the same actual outcomes
        assert dm_on_lasso_runs.rows.select(same).equals(verification(db, 2).rows.select(same))
        assert not dm_on_lasso_runs.rows["predicted_change"].equals(verification(db, 2).rows["predicted_change"])
        assert f"{dm_on_lasso_runs.spearman:.3f} (difference in means, same runs)" in out
    assert "LDS" in out and f"dmdb tui {quick_db}" in out and "Spearman" in out


def test_sql_verification_on_the_demo_is_pythons(quick: tuple[Path, str]) -> None:
    """The SQL macros on a demo-sized file: 797 targets, the lasso's own runs and difference in means (1,000
    weights a target) on them."""
    from analyses_fixtures import assert_sql_is_python

    with dmdb.open(quick[0], read_only=True) as db:
        for fit, runs_of in ((None, None), (1, 2)):
            assert assert_sql_is_python(db, fit, runs_of).rows.height >= 8


def test_demo_resumes_without_retraining(tmp_path: Path) -> None:
    cfg = DemoConfig(fit_runs=40, holdout_runs=20, k=5, curve=(1.0,), cf_targets=2, cf_ks=(5,), cf_seeds=1,
                     brittle_targets=1, threads=1)
    first = run_demo(tmp_path / "d.duckdb", cfg)
    assert first.trained == 60
    again = run_demo(tmp_path / "d.duckdb", cfg)
    assert again.trained == 0
    with dmdb.open(tmp_path / "d.duckdb", read_only=True) as db:
        runs = db.sql("SELECT role, count(*) AS n FROM runs GROUP BY role ORDER BY role")
        assert dict(runs.iter_rows())["fit"] == 40
        assert db.fits().height == 4
        # each verification is tied to its own fit
        per_fit = db.sql("SELECT (info->>'fit_id')::INT AS f, count(*) AS n FROM runs WHERE role = 'counterfactual' GROUP BY f")
        assert sorted(per_fit["f"].to_list()) == [2, 4]
        # each call counts the counterfactual models it trained (the summary left them out)
        assert first.retrained == again.retrained == per_fit["n"][0] == per_fit["n"][1] > 0
    rows = again.verification.rows.filter(pl.col("purpose") == "counterfactual")
    assert 1 <= rows.height <= 2 and rows["seeds"].to_list() == [1] * rows.height  # a target may have no positive weight


def test_brittleness_flips_count_only_predictions_the_full_set_models_got_right(tmp_path: Path) -> None:
    """A target whose full-train-set models are already wrong cannot flip; the summary counted it as
    flipped when its retrained margin was negative (the TUI said 'did not flip' for the same runs)."""
    from analyses_fixtures import insert_fit
    from dmdb.analyses import verification

    with dmdb.open(tmp_path / "v.duckdb") as db:
        exp = db.create_experiment("v", n_train=4, n_targets=3, alpha=0.5)
        fid = insert_fit(db, "v", np.array([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0, 0, 0], [0, 0, 0]]), np.zeros(3))
        base = np.array([0.8, -0.2, 0.6], np.float32)  # full-set models: target 1 already wrong
        after = np.array([-0.3, -0.5, 0.1], np.float32)  # removing each target's support
        margins = [base] + [np.where(np.arange(3) == t, after, 0).astype(np.float32) for t in range(3)]
        infos = [{"fit_id": fid, "target": None, "k": 0, "purpose": "baseline"}] + [
            {"fit_id": fid, "target": t, "k": 2, "purpose": "brittleness"} for t in range(3)]
        masks = np.ones((4, 4), bool)
        masks[1:, :2] = False
        exp.record_batch(np.arange(4), masks, np.stack(margins), role="counterfactual", infos=infos)
        v = verification(db, fid)
    # target 0 flipped (0.8 -> -0.3); target 1 was wrong already; target 2 stayed right
    assert (v.brittle_tested, v.brittle_flipped, v.brittle_already_wrong) == (3, 1, 1)
