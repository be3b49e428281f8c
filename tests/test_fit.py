"""Fits end to end: SQL selection -> solver -> stored fit, checked against scikit-learn, scipy and numpy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import Lasso, Ridge

import dmdb
from dmdb.cli import main
from dmdb.fit import format_id_list, parse_id_list

N, T = 60, 8


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """600 fit + 150 holdout runs of a known sparse datamodel plus noise; target 7 is constant."""
    path = tmp_path_factory.mktemp("fit") / "study.duckdb"
    rng = np.random.default_rng(3)
    W = np.zeros((N, T))
    for t in range(T - 1):
        W[rng.choice(N, 4, replace=False), t] = rng.choice([-1.0, 1.0], 4) * rng.uniform(0.5, 1.5, 4)
    with dmdb.open(path) as db:
        exp = db.create_experiment("syn", n_train=N, n_targets=T, alpha=0.5)
        for n, seed, role in ((600, 0, "fit"), (150, 1, "holdout")):
            runs = list(exp.pending(exp.plan(n, seed=seed, role=role)))
            M = np.stack([r.mask for r in runs]).astype(np.float64)
            Y = 0.3 + M @ W + 0.2 * rng.normal(size=(len(runs), T))
            Y[:, T - 1] = 1.25
            exp.record_batch([r.run_id for r in runs], M.astype(bool), Y, role=role)
    return path, W


@pytest.fixture()
def db(study: tuple[Path, np.ndarray], tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private copy of the study, so each test's fits start from none."""
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(study[0].read_bytes())
    with dmdb.open(copy) as d:
        yield d


def fit_split(exp: dmdb.Experiment, fit: dmdb.Fit) -> dict[str, np.ndarray]:
    runs = fit.runs()
    return {s: np.sort(runs.filter(pl.col("split") == s)["run_id"].to_numpy()) for s in ("fit", "val", "holdout")}


def refit_data(exp: dmdb.Experiment, fit: dmdb.Fit) -> tuple[np.ndarray, np.ndarray, pl.DataFrame, np.ndarray]:
    """What a refit trained on (masks and margins of the fit + validation runs, float64), the
    fit's per-target rows and its dense weights."""
    split = fit_split(exp, fit)
    ids = np.union1d(split["fit"], split["val"])
    X = exp.masks(runs=ids).astype(np.float64)
    Y = exp.margins(runs=ids).astype(np.float64)
    return X, Y, fit.targets(), dense(fit, T)


def dense(fit: dmdb.Fit, n_targets: int) -> np.ndarray:
    w = fit.weights()
    out = np.zeros((N, n_targets))
    out[w["train_idx"].to_numpy(), w["target"].to_numpy()] = w["weight"].to_numpy()
    return out


def test_lasso_fit_recovers_known_datamodel(db: dmdb.Database, study: tuple[Path, np.ndarray]) -> None:
    W_true = study[1]
    exp = db.experiment("syn")
    fit = exp.fit("lasso", k=30)
    W = dense(fit, T)
    for t in range(T - 1):
        true = set(np.nonzero(W_true[:, t])[0])
        top = set(np.argsort(-np.abs(W[:, t]))[:4])
        assert top == true, f"target {t}"
    np.testing.assert_allclose(W[:, :-1], W_true[:, :-1], atol=0.08)
    ft = fit.targets()
    assert ft["nnz"].to_list() == list((W != 0).sum(axis=0))
    # the constant target: no weights, its constant as bias, no rank correlation
    assert ft["nnz"][T - 1] == 0 and ft["bias"][T - 1] == pytest.approx(1.25, abs=1e-6)
    assert ft["holdout_spearman"][T - 1] is None
    # held-out R^2 near the noise ceiling: noise variance 0.04 against signal variance ~ sum w^2 / 4
    assert ft["val_r2"].head(T - 1).min() > 0.85


def test_fit_lists_the_targets_that_chose_the_paths_smallest_lambda(db: dmdb.Database,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A short path (lambda_max down to eps = 0.3 of it) ends where every signal target's validation
    error still falls; the fit lists exactly the targets whose chosen lambda is eps * lambda_max,
    computed here from the fit runs by numpy (the constant target has lambda 0: not listed)."""
    exp = db.experiment("syn")
    for k, eps in ((4, 0.3), (30, 1e-3)):
        fit = exp.fit("lasso", k=k, eps=eps)
        runs = fit_split(exp, fit)["fit"]
        X, Y = exp.masks(runs=runs).astype(np.float64), exp.margins(runs=runs)
        lam_max = np.abs((X - X.mean(0)).T @ (Y - Y.mean(0))).max(axis=0) / X.shape[0]
        lam = fit.targets()["lam"].to_numpy()
        at_end = [t for t in range(T) if lam_max[t] > 0 and abs(lam[t] - eps * lam_max[t]) < 1e-5 * lam_max[t]]
        assert fit.at_path_end == at_end
        assert at_end == (list(range(T - 1)) if eps == 0.3 else [2])  # eps 1e-3 goes far enough for all but one
    assert exp.fit("ridge").at_path_end == []
    path = db.path
    db.close()
    assert main(["fit", "syn", "--k", "4", "--eps", "0.3", "--db", path, "-q"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "7 of 8 targets chose the path's smallest lambda (0.3 x lambda_max)" in err


def test_lds_is_mean_holdout_spearman_of_stored_weights(db: dmdb.Database) -> None:
    exp = db.experiment("syn")
    fit = exp.fit("lasso", k=20)
    split = fit_split(exp, fit)
    assert np.array_equal(split["holdout"], exp.run_ids("holdout"))
    assert not np.intersect1d(split["fit"], split["val"]).size
    assert np.array_equal(np.union1d(split["fit"], split["val"]), exp.run_ids("fit"))
    assert (fit.n_fit_runs, fit.n_val_runs, fit.n_holdout_runs) == (540, 60, 150)
    Xh = exp.masks("holdout").astype(np.float64)
    Yh = exp.margins("holdout")
    bias = fit.targets()["bias"].to_numpy()
    pred = bias + Xh @ dense(fit, T)
    rho = [spearmanr(pred[:, t], Yh[:, t]).statistic for t in range(T - 1)]
    np.testing.assert_allclose(fit.targets()["holdout_spearman"].head(T - 1).to_numpy(), rho, atol=1e-6)
    assert fit.lds == pytest.approx(np.mean(rho), abs=1e-6)
    np.testing.assert_allclose(fit.predict(Xh.astype(bool)), pred, atol=1e-4)
    np.testing.assert_allclose(fit.predict(Xh[0].astype(bool)), pred[0], atol=1e-4)
    # packed masks, as exp.masks_and_margins(packed=True) gives them (the error said
    # "masks must have 60 columns ..., got shape (150, 60)")
    np.testing.assert_allclose(fit.predict(exp.masks_and_margins("holdout", packed=True)[0]), pred, atol=1e-4)


@pytest.mark.parametrize("block_bytes", [None, 1])
def test_stored_holdout_spearman_is_scipys_on_fit_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           block_bytes: int | None) -> None:
    """Margins near 1000 varying by ~1e-3: float32 predictions there are ~6e-5 apart, so many runs
    tie or swap in float32 that float64 ranks apart. The stored Spearman is scipy's on
    fit.predict (float64) to 1e-12, scored in one block of targets and one target at a time."""
    if block_bytes is not None:
        monkeypatch.setattr(dmdb.fit.runner, "_SCORE_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(5)
    Wt = rng.normal(size=(N, 4))
    with dmdb.open(tmp_path / "ties.duckdb") as d:
        exp = d.create_experiment("ties", n_train=N, n_targets=4, alpha=0.5)
        for n, seed, role in ((400, 0, "fit"), (200, 1, "holdout")):
            runs = list(exp.pending(exp.plan(n, seed=seed, role=role)))
            M = np.stack([r.mask for r in runs])
            exp.record_batch([r.run_id for r in runs], M, 1000 + 1e-3 * (M @ Wt + rng.normal(size=(n, 4))), role=role)
        Xh, Yh = exp.masks("holdout"), exp.margins("holdout")
        for estimator in ("ridge", "lasso"):
            fit = exp.fit(estimator)
            pred = fit.predict(Xh)
            rho = np.array([spearmanr(pred[:, t], Yh[:, t]).statistic for t in range(4)])
            pred32 = pred.astype(np.float32)
            assert (np.array([len(np.unique(pred32[:, t])) for t in range(4)]) < 150).all()  # float32 ties
            np.testing.assert_allclose(fit.targets()["holdout_spearman"].to_numpy(), rho, rtol=0, atol=1e-12)
            assert fit.lds == pytest.approx(rho.mean(), abs=1e-12)


def test_lasso_weights_match_sklearn_at_the_chosen_lambda(db: dmdb.Database) -> None:
    """Raw 0/1 coordinates: the stored refit equals scikit-learn's Lasso on fit+val runs at the stored lambda."""
    exp = db.experiment("syn")
    fit = exp.fit("lasso", k=15, dtype="float64", tol=1e-10, max_iter=20000, targets="0-2")
    X, Y, ft, W = refit_data(exp, fit)
    for j, t in enumerate(ft["target"].to_list()):
        sk = Lasso(alpha=ft["lam"][j], tol=1e-12, max_iter=100_000).fit(X, Y[:, t])
        np.testing.assert_allclose(W[:, t], sk.coef_, atol=2e-4)
        assert ft["bias"][j] == pytest.approx(sk.intercept_, abs=2e-4)


def test_diff_means_against_brute_force(db: dmdb.Database) -> None:
    exp = db.experiment("syn")
    fit = exp.fit("diff-means")
    split = fit_split(exp, fit)
    ids = np.union1d(split["fit"], split["val"])
    X = exp.masks(runs=ids)
    Y = exp.margins(runs=ids).astype(np.float64)
    expect = np.array([[Y[X[:, i], t].mean() - Y[~X[:, i], t].mean() for t in range(T)] for i in range(N)])
    expect[:, T - 1] = 0.0
    np.testing.assert_allclose(dense(fit, T), expect, atol=1e-4)


def test_ridge_and_several_fits_side_by_side(db: dmdb.Database) -> None:
    exp = db.experiment("syn")
    a = exp.fit("lasso", k=10)
    b = exp.fit("ridge", dtype="float64")
    c = exp.fit("diff-means")
    fits = exp.fits()
    assert fits["fit_id"].to_list() == [a.fit_id, b.fit_id, c.fit_id]
    assert fits["estimator"].to_list() == ["lasso", "ridge", "diff-means"]
    # on a truly sparse datamodel, lasso beats the difference in means on held-out runs
    assert a.lds > c.lds
    assert b.lds > 0.8
    assert db.fit().fit_id == c.fit_id
    # the stored ridge refit is scikit-learn's Ridge on fit+val runs at the stored lambda (alpha = n lambda);
    # float64, since fixed-size masks leave one direction (all weights up, the bias down) held by lambda alone
    X, Y, ft, W = refit_data(exp, b)
    for j, t in enumerate(ft["target"].to_list()[: T - 1]):
        sk = Ridge(alpha=ft["lam"][j] * X.shape[0]).fit(X, Y[:, t])
        np.testing.assert_allclose(W[:, t], sk.coef_, atol=1e-6)  # float64 solve, float32 storage
        assert ft["bias"][j] == pytest.approx(sk.intercept_, abs=1e-5)  # bias: a sum over 60 float32 weights


def test_where_and_targets_select_in_sql(db: dmdb.Database) -> None:
    exp = db.experiment("syn")
    ids = exp.run_ids("fit")
    cut = int(ids[300])
    for where in (f"run_id < {cut}", f"SELECT run_id FROM runs WHERE run_id < {cut}"):
        fit = exp.fit("diff-means", where=where, targets=[1, 3])
        assert fit.n_fit_runs + fit.n_val_runs == 300
        assert fit.targets()["target"].to_list() == [1, 3]
    db.con.execute(f"CREATE VIEW early AS SELECT run_id FROM runs WHERE run_id < {cut}")
    db.con.execute("CREATE VIEW few_targets AS SELECT 2 AS target UNION ALL SELECT 5")
    fit = exp.fit("diff-means", where="early", targets="few_targets")
    assert fit.n_fit_runs + fit.n_val_runs == 300
    assert fit.targets()["target"].to_list() == [2, 5]
    row = db.sql("SELECT runs_where, targets_where FROM fits WHERE fit_id = ?", [fit.fit_id]).row(0)
    assert row == ("early", "few_targets")
    # a blank where narrows nothing, and the fit records none (it recorded the blank)
    fit = exp.fit("diff-means", where="  ", targets=[1])
    assert fit.n_fit_runs + fit.n_val_runs == ids.size
    assert db.sql("SELECT runs_where FROM fits WHERE fit_id = ?", [fit.fit_id]).row(0) == (None,)
    # a query or view without the column is an error, not every run (or target)
    for bad in ("SELECT 1", "SELECT target FROM target_pool", "target_pool"):
        with pytest.raises(dmdb.BadInputError, match="must give a `run_id` column"):
            exp.fit("diff-means", where=bad)
    with pytest.raises(dmdb.BadInputError, match="must give a `target` column"):
        exp.fit("diff-means", targets="SELECT 1 AS t")


def test_fit_reads_margins_of_the_selected_targets_without_copying_all(db: dmdb.Database,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from dmdb import readback
    from dmdb.fit import runner
    from dmdb.fit.runner import read_data
    from dmdb.fit.selection import select

    exp = db.experiment("syn")
    every = read_data(exp, select(exp, None, None, 0.2, 0))
    X, Y = exp.masks_and_margins(runs=every.ids)
    np.testing.assert_array_equal(every.Y, Y)
    # masks are held packed, 8 examples a byte, and unpack to the same rows
    assert every.X.packed.nbytes == X.shape[0] * ((X.shape[1] + 7) // 8)
    np.testing.assert_array_equal(every.X[:], X)
    read: list[tuple[object, tuple[int, ...]]] = []
    real = runner.read_arrays

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        got = real(*args, **kwargs)
        read.append((kwargs["targets"], got["margins"].shape))
        return got

    monkeypatch.setattr(runner, "read_arrays", spy)
    read_data(exp, select(exp, None, None, 0.2, 0))
    assert [t for t, _ in read] == [None, None]  # all targets in order: read as they are, no column copy
    few = read_data(exp, select(exp, None, [5, 1], 0.2, 0))
    np.testing.assert_array_equal(few.Y, Y[:, [1, 5]])
    np.testing.assert_array_equal(few.Y_holdout, every.Y_holdout[:, [1, 5]])
    # the two targets' columns only are kept as the blocks stream in: never all T margins of the runs
    assert [(list(t), shape) for t, shape in read[2:]] == [([1, 5], (every.ids.size, 2)),  # type: ignore[call-overload]
                                                          ([1, 5], (every.Y_holdout.shape[0], 2))]
    monkeypatch.setattr(readback, "_BLOCK_BYTES", 200)  # 5 rows a block: columns taken from each block in place
    blocks = read_data(exp, select(exp, None, [5, 1], 0.2, 0))
    np.testing.assert_array_equal(blocks.Y, few.Y)
    np.testing.assert_array_equal(blocks.Y_holdout, few.Y_holdout)


def test_learning_curve_grows_with_runs(db: dmdb.Database) -> None:
    fit = db.experiment("syn").fit("diff-means", curve=[0.05, 0.25, 1.0])
    curve = fit.curve()
    assert curve["n_fit_runs"].to_list() == [27, 135, 540]
    assert curve["lds"][2] == pytest.approx(fit.lds)
    assert curve["lds"][0] < curve["lds"][2]
    # which runs each point used is recorded: the first 27 fit runs by fit_order (+ the validation
    # runs, for diff-means' refit); their brute-force difference in means reproduces its LDS
    exp, runs = db.experiment("syn"), fit.runs()
    fit_runs = runs.filter(pl.col("split") == "fit")
    assert fit_runs["fit_order"].sort().to_list() == list(range(540))
    assert runs.filter(pl.col("split") != "fit")["fit_order"].null_count() == 60 + 150
    first = fit_runs.filter(pl.col("fit_order") < 27)["run_id"].to_numpy()
    ids = np.union1d(first, runs.filter(pl.col("split") == "val")["run_id"].to_numpy())
    X, Y = exp.masks(runs=ids), exp.margins(runs=ids).astype(np.float64)
    W = np.array([[Y[X[:, i], t].mean() - Y[~X[:, i], t].mean() for t in range(T - 1)] for i in range(N)])
    Xh, Yh = exp.masks("holdout").astype(np.float64), exp.margins("holdout")
    lds = np.mean([spearmanr(Xh @ W[:, t], Yh[:, t]).statistic for t in range(T - 1)])
    assert curve["lds"][0] == pytest.approx(lds, abs=1e-6)


def test_import_scores_scored_like_a_fit(
    db: dmdb.Database, study: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = db.experiment("syn")
    S = study[1] * 7.0  # right direction, wrong units: calibration rescales
    np.save(tmp_path / "s.npy", S)
    fit = exp.import_scores(str(tmp_path / "s.npy"), name="truth")
    assert fit.estimator == "scores:truth"
    Xh = exp.masks("holdout").astype(np.float64)
    Yh = exp.margins("holdout")
    rho = [spearmanr(Xh @ S[:, t], Yh[:, t]).statistic for t in range(T - 1)]
    assert fit.lds == pytest.approx(np.mean(rho), abs=1e-6)
    np.testing.assert_allclose(dense(fit, T)[:, :-1], study[1][:, :-1], atol=0.05)
    with pytest.raises(dmdb.BadInputError, match="needs \\(60, 8\\)"):
        exp.import_scores(np.zeros((N, 3)))
    # calibration keeps the scale >= 0: scores of the wrong sign do not have it flipped for them
    with pytest.warns(dmdb.ScoresWarning, match="2 target\\(s\\) run against their fit-run margins \\(first: 0, 1\\)"):
        flipped = exp.import_scores(S * np.where(np.arange(T) < 2, -1.0, 1.0), name="half-flipped")
    ft = flipped.targets()
    assert ft["holdout_spearman"].head(2).to_list() == [0.0, 0.0] and ft["nnz"].head(2).to_list() == [0, 0]
    assert flipped.lds == pytest.approx((np.sum(rho[2:])) / (T - 1), abs=1e-6)
    cfg = db.sql("SELECT config->'anticorrelated' AS a FROM fits WHERE fit_id = ?", [flipped.fit_id])["a"][0]
    assert json.loads(cfg) == [0, 1]
    # the CLI says so in one line after its summary
    np.save(tmp_path / "neg.npy", -S)
    path = db.path
    db.close()
    assert main(["import-scores", "syn", str(tmp_path / "neg.npy"), "--name", "neg", "--db", path]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "run against their fit-run margins (first: 0, 1, 2, 3, 4)" in err and err.count("warning: ") == 1


def test_import_scores_columns_follow_the_given_targets(db: dmdb.Database, study: tuple[Path, np.ndarray]) -> None:
    """Column j of the scores belongs to targets[j], in whatever order they are given; bad
    scores are refused before anything is written; a weight that underflows float32 is no row."""
    exp = db.experiment("syn")
    W = study[1]
    fit = exp.import_scores(W[:, [3, 1]], targets=[3, 1], calibrate=False)
    np.testing.assert_allclose(dense(fit, T)[:, [1, 3]], W[:, [1, 3]], atol=1e-7)
    assert fit.lds > 0.5
    # a datamodel with no weight predicts one margin for every run: it ranks nothing and counts as 0
    Xh, Yh = exp.masks("holdout").astype(np.float64), exp.margins("holdout")
    flat = exp.import_scores(np.stack([W[:, 3], np.zeros(N)], axis=1), targets=[3, 1], calibrate=False)
    rho3 = spearmanr(Xh @ W[:, 3], Yh[:, 3]).statistic
    assert flat.targets()["holdout_spearman"].to_list() == [0.0, pytest.approx(rho3, abs=1e-6)]
    assert flat.lds == pytest.approx(rho3 / 2, abs=1e-6)
    # a constant column predicts the same for every run (each keeps N/2 examples): calibrating it divided
    # by the rounding noise of that prediction and stored weights near 1e9 with a bias near -1e11 (or, where
    # the noise ran the other way, warned that the column runs against the margins)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dmdb.ScoresWarning)
        const = exp.import_scores(np.stack([W[:, 3], np.full(N, 0.37)], axis=1), targets=[3, 1])
    split = fit_split(exp, const)
    Y1 = exp.margins(runs=np.union1d(split["fit"], split["val"]))[:, 1].astype(np.float64)
    ft = const.targets()
    assert ft["nnz"].to_list() == [0, int((W[:, 3] != 0).sum())]
    assert ft["bias"][0] == pytest.approx(Y1.mean(), abs=1e-6)
    bad = [(W[:, [1, 1]], [1, 1], "repeat"), (W[:, [1]] * 1e39, [1], "float32 range"),
           (W[:, [1]] + 1j, [1], "real numbers"), (W[:, [1]], [1.5], "integer target ids")]
    for S, tg, msg in bad:
        with pytest.raises(dmdb.BadInputError, match=msg):
            exp.import_scores(S, targets=tg)
    assert len(db.fits()) == 3
    tiny = np.zeros((N, 1))
    tiny[0, 0], tiny[1, 0] = 1e-50, 1.0
    fit = exp.import_scores(tiny, targets=[2], calibrate=False)
    assert fit.weights()["train_idx"].to_list() == [1]
    assert fit.targets()["nnz"].to_list() == [1]


def test_import_scores_reads_npz_and_names_bad_entries(db: dmdb.Database, study: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """An .npz of one array is its score matrix (it was an AttributeError: 'NpzFile' object has no
    attribute 'ndim'); one of several arrays is a clear error; a NaN is named by its place."""
    exp = db.experiment("syn")
    S = study[1] * 3.0
    np.savez(tmp_path / "one.npz", scores=S)
    from_npz = exp.import_scores(tmp_path / "one.npz", calibrate=False)
    np.testing.assert_allclose(dense(from_npz, T), S, atol=1e-6)
    np.savez(tmp_path / "two.npz", a=S, b=S)
    with pytest.raises(dmdb.BadInputError, match=r"two.npz is an .npz archive of 2 arrays \(a, b\); a score matrix file holds one"):
        exp.import_scores(tmp_path / "two.npz")
    S[7, 2] = np.nan
    S[9, 0] = np.inf
    with pytest.raises(dmdb.BadInputError, match=r"2 entries do not, the first at train example 7, column 2 \(nan\)$"):
        exp.import_scores(S)
    assert db.fits()["fit_id"].to_list() == [from_npz.fit_id]


def test_weights_of_a_target_the_fit_lacks_is_an_error(db: dmdb.Database) -> None:
    """fit.weights(target=...) returned an empty frame for a target outside the fit (the same as a
    target with no nonzero weight) and truncated a float id (3.7 gave target 3's weights)."""
    exp = db.experiment("syn")
    fit = exp.fit("lasso", targets=[0, 1, 2, 3])
    assert fit.weights(target=3)["target"].unique().to_list() == [3]
    for bad in (5, 99, -1, 3.7, "3"):
        with pytest.raises(dmdb.BadInputError):
            fit.weights(target=bad)


def test_bad_input_errors(db: dmdb.Database) -> None:
    exp = db.experiment("syn")
    with pytest.raises(dmdb.BadInputError, match="bogus"):
        exp.fit(where="bogus < 3")
    with pytest.raises(dmdb.BadInputError, match=r"^target 99 is not in experiment .syn. \(it has targets 0-7\)$"):
        exp.fit(targets=[99])
    # the pool is narrowed by where: the runs exist, and the advice says so (it said only 'Record more runs')
    with pytest.raises(dmdb.FitError, match=r"matching 'run_id < 2', which split into 2 fit and 0 validation runs "
                       r"\(val_frac=0.1\); a fit needs at least 2 fit runs and 1 validation run, so 6 runs at this "
                       r"val_frac. Widen --where, or record more runs$"):
        exp.fit(where="run_id < 2")
    if not torch.cuda.is_available():  # the advice names the CLI option too: `dmdb fit` prints this line
        with pytest.raises(dmdb.FitError, match=r"no CUDA device; use device='cpu' \(CLI: --device cpu\)"):
            exp.fit(device="cuda")
    with pytest.raises(dmdb.FitError, match=r"unknown device 'gpu'.*\(CLI: --device cpu\|cuda"):
        exp.fit(device="gpu")
    # the message named FitOptions.__init__ and not one option the fit takes
    with pytest.raises(dmdb.BadInputError, match=r"^unknown fit option 'lambdas', 'alpha': the options are k, eps, tol, "
                       r"max_iter, patience, refit, val_frac, split_seed, dtype, block_rows, gram \(see dmdb.fit.FitOptions\)$"):
        exp.fit(lambdas=3, alpha=0.1, k=5)
    with pytest.raises(dmdb.BadInputError, match="unknown estimator"):
        exp.fit("trak")
    with pytest.raises(dmdb.BadInputError, match="val_frac"):
        exp.fit(val_frac=1.5)
    with pytest.raises(dmdb.BadInputError, match=r"^k must be >= 1, got 0$"):
        exp.fit(k=0)
    with pytest.raises(dmdb.BadInputError, match=r"^patience must be >= 0, got -1$"):
        exp.fit(patience=-1)
    assert db.fits().height == 0


def test_fit_options_are_checked_and_stored_as_plain_values(db: dmdb.Database) -> None:
    """Wrongly typed or out-of-range options are a BadInputError before anything runs: block_rows=-1
    used to read no rows and store all-zero weights (LDS 0), refit='no' refitted, k=2.5 and tol='a'
    raised torch or comparison TypeErrors. numpy scalars (a sweep's np.int64) are taken as numbers:
    they used to fail json.dumps after the whole fit had run."""
    exp = db.experiment("syn")
    for bad in (dict(block_rows=-1), dict(block_rows=0), dict(refit="no"), dict(k=2.5), dict(k="10"),
                dict(tol="a"), dict(tol=float("inf")), dict(eps="a"), dict(max_iter=10.5), dict(patience=2.5),
                dict(val_frac="0.1")):
        with pytest.raises(dmdb.BadInputError):
            exp.fit("diff-means", **bad)
    assert db.fits().height == 0
    fit = exp.fit("diff-means", block_rows=np.int64(7), refit=np.bool_(True), tol=np.float32(1e-3))
    assert fit.config["block_rows"] == 7 and fit.config["refit"] is True
    assert fit.lds is not None and fit.lds > 0.5  # the blocks cover every run (block_rows=-1 gave 0.0)
    lasso = exp.fit("lasso", k=np.int64(5), patience=np.int32(3), targets=[0])
    assert lasso.config["k"] == 5 and lasso.config["patience"] == 3


def test_a_lasso_path_of_lambda_max_alone_is_refused(db: dmdb.Database) -> None:
    """k=1 or eps=1 made every lambda lambda_max: the fit was stored with 0 or 1 nonzero weight per
    target and an LDS of 0.28 on this study (0.97 with the default path), and nothing said why."""
    exp = db.experiment("syn")
    for bad in (dict(k=1), dict(eps=1), dict(eps=1.0, k=5)):
        with pytest.raises(dmdb.BadInputError, match="lasso path of lambda_max alone.*use k >= 2 and eps < 1"):
            exp.fit("lasso", **bad)
    assert db.fits().height == 0
    # k and eps do not shape ridge or the difference in means
    assert exp.fit("ridge", k=1, eps=1, targets=[0]).lds is not None
    two = exp.fit("lasso", k=2, eps=0.5, targets=[0])
    assert two.targets()["lam"][0] > 0 and two.targets()["nnz"][0] > 0


def test_a_pool_view_that_cannot_be_read_is_named(db: dmdb.Database) -> None:
    """README invites redefining fit_pool, holdout_pool and target_pool; one dropped (or whose new
    definition no longer binds) failed as '--where None is not valid SQL here: ... fit_pool does not
    exist', blaming an option never given ('holdout_pool None' for the holdout view)."""
    exp = db.experiment("syn")
    for view in ("fit_pool", "holdout_pool", "target_pool"):
        default = db.sql(f"SELECT sql FROM duckdb_views() WHERE view_name = '{view}'")["sql"][0]
        db.sql(f"DROP VIEW {view}")
        for where in (None, "  "):
            with pytest.raises(dmdb.BadInputError, match=rf"^the view {view} cannot be read \(Catalog Error: .*{view}.*\); "
                               rf"redefine it, or restore the default of sql/20_fit_views.sql"):
                exp.fit("diff-means", where=where)
        db.sql(default)
    with pytest.raises(dmdb.BadInputError, match=r"^--where 'no_such_column > 1' is not a valid SQL expression over runs columns: Binder Error"):
        exp.fit("diff-means", where="no_such_column > 1")  # the user's own SQL is still named as theirs
    assert db.fits().height == 0 and exp.fit("diff-means").lds is not None


def test_runs_with_nan_margins_are_named_at_fit_time(db: dmdb.Database) -> None:
    """Margins that bypassed record's checks (an UPDATE through `dmdb sql --write`) stopped a fit with
    'margins contain NaN or inf in 1 target column(s) (first: [3]); drop or repair those runs' (which
    runs?), or, in a holdout run, 'predictions or margins contain NaN or inf'. Now the runs are named."""
    exp = db.experiment("syn")
    db.sql("UPDATE runs SET margins = margins[:3] || ['nan'::FLOAT] || margins[5:] WHERE run_id = 17")  # target 3
    with pytest.raises(dmdb.FitError, match=r"^1 fit run\(s\) of experiment 'syn' have NaN or inf margins "
                       r"\(run ids 17; the first at target 3\).*repair or delete those runs, or leave them out with where="):
        exp.fit("diff-means")
    assert exp.fit("diff-means", targets=[0, 1]).lds is not None  # the bad target is not fitted
    assert exp.fit("diff-means", where="run_id <> 17").lds is not None
    db.sql("UPDATE runs SET margins = margins[:2] || ['inf'::FLOAT] || margins[4:] WHERE run_id IN (650, 700)")
    with pytest.raises(dmdb.FitError, match=r"^2 holdout run\(s\) of experiment 'syn' have NaN or inf margins "
                       r"\(run ids 650, 700; the first at target 2\).*holdout_pool"):
        exp.fit("diff-means", where="run_id <> 17")
    assert db.fits().height == 2


def test_where_and_curve_of_the_wrong_type_are_clear_errors(db: dmdb.Database) -> None:
    """where=5 raised AttributeError, curve=0.5 and curve=['a'] TypeErrors (after the runs were
    read), a numpy array of fractions ValueError (its truth value); now a BadInputError, or for
    an array, a curve."""
    exp = db.experiment("syn")
    for bad in (dict(where=5), dict(curve=0.5), dict(curve="0.5"), dict(curve=["a"]), dict(curve=[True])):
        with pytest.raises(dmdb.BadInputError):
            exp.fit("diff-means", **bad)
    assert db.fits().height == 0
    fit = exp.fit("diff-means", curve=np.array([0.5, 1.0], dtype=np.float32))
    assert fit.curve()["fraction"].to_list() == [0.5, 1.0] and fit.config["curve"] == [0.5, 1.0]


def test_a_failed_write_leaves_no_partial_fit(db: dmdb.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import dmdb.fit.write as write

    real = write._insert

    def failing(d: dmdb.Database, table: str, data: object) -> None:
        if table == "weights":
            raise RuntimeError("disk full")
        real(d, table, data)  # type: ignore[arg-type]

    monkeypatch.setattr(write, "_insert", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        db.experiment("syn").fit("diff-means")
    counts = db.sql("SELECT (SELECT count(*) FROM fits) a, (SELECT count(*) FROM fit_targets) b, "
                    "(SELECT count(*) FROM fit_runs) c, (SELECT count(*) FROM weights) d").row(0)
    assert counts == (0, 0, 0, 0)


def test_ctrl_c_while_a_fit_is_written_rolls_it_back(study: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """Ctrl-C inside write_fit's transaction, while a statement runs there (SLOW_QUERY, after the
    fit's rows went in: a big fit's weights being inserted, in short): KeyboardInterrupt, no row of
    the fit left in any table, and the next fit on the same connection is written whole."""
    from ctrl_c import SLOW_QUERY

    path = tmp_path / "copy.duckdb"
    path.write_bytes(study[0].read_bytes())
    child = (
        "import os, signal, threading, time\n"
        "import dmdb, dmdb.fit.write as write\n"
        "from dmdb.interrupt import interruptible\n"
        "real, slowed = write._insert, []\n"
        "def ctrl_c_once_running(con):\n"
        "    while con.query_progress() <= 0:\n"
        "        time.sleep(0.01)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "def insert_then_slow(d, table, data):\n"
        "    real(d, table, data)\n"
        "    if table == 'weights' and not slowed:\n"
        "        slowed.append(table)\n"
        "        threading.Thread(target=ctrl_c_once_running, args=(d.con,), daemon=True).start()\n"
        f"        interruptible(d.con, lambda: d.con.execute({SLOW_QUERY!r}))\n"
        "write._insert = insert_then_slow\n"
        f"db = dmdb.open({str(path)!r})\n"
        "db.con.execute('SET enable_progress_bar = true; SET enable_progress_bar_print = false')\n"
        "try:\n"
        "    db.experiment('syn').fit('diff-means')\n"
        "except BaseException as e:\n"
        "    print(type(e).__name__)\n"
        "print(*db.sql('SELECT (SELECT count(*) FROM fits), (SELECT count(*) FROM fit_targets), '\n"
        "              '(SELECT count(*) FROM fit_runs), (SELECT count(*) FROM weights)').row(0))\n"
        "print(db.experiment('syn').fit('diff-means').fit_id)\n"
    )
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    *said, fit_id = run.stdout.split() or [run.stderr]
    assert said == ["KeyboardInterrupt", "0", "0", "0", "0"], run.stderr
    with dmdb.open(path, read_only=True) as db:
        fit = db.fit(int(fit_id))
        assert db.fits()["fit_id"].to_list() == [fit.fit_id]
        assert fit.runs().height == fit.n_fit_runs + fit.n_val_runs + fit.n_holdout_runs > 0
        assert fit.weights().height == fit.targets()["nnz"].sum() > 0


def test_targets_out_of_range_are_named_with_the_valid_range(db: dmdb.Database) -> None:
    """--targets 5-9 on an experiment of 5 targets said 'target 9 is outside 0..4', naming only the
    range's end; now every requested id outside is named (the first few ranges and their count)."""
    exp = db.experiment("syn")  # 8 targets
    for spec, message in [
        ("6-12", "5 targets (8-12) are not in experiment 'syn' (it has targets 0-7)"),
        ("3,9", "target 9 is not in experiment 'syn' (it has targets 0-7)"),
        ("8,10-11,20,30,40,50-52", "9 targets (8,10-11,20,30 and 2 more ranges) are not in experiment 'syn' (it has targets 0-7)"),
        ("9-10,8,10-12", "5 targets (8-12) are not in experiment 'syn' (it has targets 0-7)"),  # overlaps merged
    ]:
        with pytest.raises(dmdb.BadInputError, match=f"^{re.escape(message)}$"):
            exp.fit("diff-means", targets=spec)
    with pytest.raises(dmdb.BadInputError, match=re.escape("2 targets (8-9) are not in experiment 'syn' (it has targets 0-7)")):
        exp.fit("diff-means", targets=[1, 8, 9])
    db.sql("CREATE OR REPLACE VIEW target_pool AS SELECT name AS experiment, (2 * t)::INTEGER AS target FROM experiments, range(4) r(t)")
    with pytest.raises(dmdb.BadInputError, match=re.escape("2 targets (1,3) are not in the target_pool of experiment "
                                                           "'syn' (targets 0,2,4,6)")):
        exp.fit("diff-means", targets="0-3")
    assert db.fits().height == 0


def test_sql_errors_name_the_users_fragment_not_dmdbs_wrapping(db: dmdb.Database) -> None:
    """--where 'run_id <' failed with 'syntax error at or near ")"', a bracket of the SQL dmdb wraps
    the fragment in; a fragment that closed that bracket itself ('1) OR (1') was run as given; a
    trailing `-- comment` hid the bracket. Now the fragment is parsed alone first."""
    exp = db.experiment("syn")
    expr, query = "is not a valid SQL expression over runs columns", "is not a valid SQL query"
    for kw, spec, message in [
        ("where", "run_id <", f"--where 'run_id <' {expr}: Parser Error: syntax error at or near \"<\""),
        ("where", "run_id < 5) OR (true", f"--where 'run_id < 5) OR (true' {expr}: Parser Error: syntax error at or near \")\""),
        ("where", "run_id < 5, true", f"--where 'run_id < 5, true' {expr}: it is a comma-separated list; join conditions with AND or OR"),
        ("where", "SELECT run_id FROM runs WHERE", f"--where 'SELECT run_id FROM runs WHERE' {query}: Parser Error: syntax error at or near \"WHERE\""),
        ("where", "SELECT 1 AS run_id; SELECT 2", "--where 'SELECT 1 AS run_id; SELECT 2' holds 2 SQL statements; give one query"),
        ("targets", "SELECT target FROM", f"--targets 'SELECT target FROM' {query}: Parser Error: syntax error at or near \"FROM\""),
        ("targets", "no_such_view", "--targets 'no_such_view' is not a readable view or table: Catalog Error"),
    ]:
        with pytest.raises(dmdb.BadInputError, match=f"^{re.escape(message)}") as err:
            exp.fit("diff-means", **{kw: spec})
        assert "user_query" not in str(err.value)
    assert db.fits().height == 0
    ids = exp.run_ids("fit")
    cut = int(ids[300])
    fit = exp.fit("diff-means", where=f"run_id < {cut} -- the early runs", targets="SELECT 2 AS target -- one")
    assert fit.n_fit_runs + fit.n_val_runs == 300 and fit.targets()["target"].to_list() == [2]


def test_id_lists_round_trip() -> None:
    ids = np.array([0, 1, 2, 3, 7, 9, 10])
    assert format_id_list(ids) == "0-3,7,9-10"
    assert parse_id_list("0-3,7,9-10").tolist() == ids.tolist()


def test_target_id_ranges_are_checked_before_they_are_expanded(db: dmdb.Database) -> None:
    """--targets 0-99999999999 is refused from its bounds, not after building a list of 10^11 ids
    (0-20000000 took 108 s and 2.4 GB for an experiment of 8 targets); an id beyond int64 is a
    BadInputError, not an OverflowError. (Expanding 10^15 ids would be numpy's MemoryError.)"""
    exp = db.experiment("syn")
    with pytest.raises(dmdb.BadInputError, match=r"^999999999999992 targets \(8-999999999999999\) are not in experiment 'syn' \(it has targets 0-7\)$"):
        exp.fit("diff-means", targets="0-3,5-999999999999999")
    with pytest.raises(dmdb.BadInputError, match="beyond int64"):
        exp.fit("diff-means", targets="99999999999999999999")
    with pytest.raises(dmdb.BadInputError, match=r"target ids are >= 0, got '-1'"):
        exp.fit("diff-means", targets="-1")  # was "'-1' is neither a SELECT query nor a view or table name"
    for typo in ("0-", "1,,2", "a,b", ""):  # id lists gone wrong: the message did not mention ids at all
        with pytest.raises(dmdb.BadInputError, match=rf"^--targets '{typo}' is neither target ids like 0-99,120 nor a "
                           "SELECT query or a view name returning `target`$"):
            exp.fit("diff-means", targets=typo)
    assert db.fits().height == 0
    with pytest.raises(MemoryError):
        parse_id_list("0-999999999999999")  # what the bound check spares
    assert parse_id_list("5-7, 1,6").tolist() == [1, 5, 6, 7]
    fit = exp.fit("diff-means", targets="0-2,6")
    assert fit.targets()["target"].to_list() == [0, 1, 2, 6]


def test_cli_fit_and_fits(db: dmdb.Database, capsys: pytest.CaptureFixture[str]) -> None:
    path = db.path
    db.close()
    assert main(["fit", "syn", "--db", path, "--estimator", "diff-means", "--quiet", "--curve", "0.5,1", "-f", "csv"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "n_fit_runs,fraction,lds,mean_val_r2,seconds" and len(out) == 3
    assert main(["fits", "--db", path, "-f", "json"]) == 0
    fits = pl.read_json(capsys.readouterr().out.encode())
    assert fits["estimator"].to_list() == ["diff-means"]
    assert fits["lds"][0] == pytest.approx(float(out[2].split(",")[2]))
    assert main(["fits", "syn", "--curve", "1", "--db", path, "-f", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1:] == out[1:]
    assert main(["fits", "nosuch", "--curve", "1", "--db", path]) == 1
    assert "unknown experiment 'nosuch'" in capsys.readouterr().err
    assert main(["fit", "syn", "--db", path, "--device", "cuda", "--quiet"]) == 1
    assert "CUDA" in capsys.readouterr().err
    # an --output in a missing folder is refused before the fit (it failed after storing it)
    missing = Path(path).parent / "nodir" / "fit.csv"
    assert main(["fit", "syn", "--db", path, "--quiet", "-e", "diff-means", "-f", "csv", "-o", str(missing)]) == 1
    assert f"cannot write --output {missing}: the folder {missing.parent} does not exist" in capsys.readouterr().err
    # no fractions at all made a fit without a curve, silently
    for empty in ("", " , "):
        with pytest.raises(SystemExit):
            main(["fit", "syn", "--db", path, "--quiet", "--curve", empty])
        assert "--curve takes comma-separated fractions like 0.1,0.5,1" in capsys.readouterr().err
    assert main(["fits", "--db", path, "-f", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_cli_gram_forms_give_the_same_fit(db: dmdb.Database, capsys: pytest.CaptureFixture[str]) -> None:
    """`--gram masks` (G through the centred masks) and `--gram matrix` fit the same weights; the
    choice is kept in the fit's config; an unknown form is one clear error."""
    path = db.path
    db.close()
    for form in ("matrix", "masks"):
        assert main(["fit", "syn", "--db", path, "--k", "30", "--dtype", "float64", "--tol", "1e-10",
                     "--gram", form, "--quiet"]) == 0
    with dmdb.open(path) as d:
        a, b = d.fit(1), d.fit(2)
        assert [a.config["gram"], b.config["gram"]] == ["matrix", "masks"]
        np.testing.assert_allclose(dense(b, T), dense(a, T), atol=1e-6)
        assert np.count_nonzero(dense(a, T)) > T
        with pytest.raises(dmdb.DmdbError, match="gram must be"):
            d.experiment("syn").fit("lasso", gram="dense")


def test_cli_patience_default_and_whole_path(db: dmdb.Database) -> None:
    """`dmdb fit` stops paths after 10 lambdas without validation gain unless told --patience 0;
    on this data both choose the same lambda for every target."""
    path = db.path
    db.close()
    assert main(["fit", "syn", "--db", path, "--k", "40", "--quiet"]) == 0
    assert main(["fit", "syn", "--db", path, "--k", "40", "--patience", "0", "--quiet"]) == 0
    with dmdb.open(path, read_only=True) as again:
        ids = again.sql("SELECT fit_id FROM fits WHERE estimator = 'lasso' ORDER BY fit_id")["fit_id"].to_list()
        early, whole = (again.fit(i) for i in ids[-2:])
        assert early.config["patience"] == 10 and whole.config["patience"] is None
        lam_early, lam_whole = early.targets()["lam"].to_numpy(), whole.targets()["lam"].to_numpy()
    np.testing.assert_allclose(lam_early, lam_whole, rtol=1e-6)
    # Python takes patience=0 as the CLI does (it raised FitError), the same as None
    from dmdb.fit import FitOptions

    assert FitOptions(patience=0).patience is None and FitOptions(patience=None).patience is None


def test_unconverged_targets_are_recorded_and_reported(db: dmdb.Database, capsys: pytest.CaptureFixture[str]) -> None:
    """A lasso path stopped by --max-iter before --tol is listed in the fit and warned about;
    a converged fit lists nothing."""
    path = db.path
    db.close()
    assert main(["fit", "syn", "--db", path, "--k", "20", "--max-iter", "1", "--tol", "1e-12", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert main(["fit", "syn", "--db", path, "--k", "20", "--quiet"]) == 0
    assert "did not reach" not in capsys.readouterr().err
    with dmdb.open(path, read_only=True) as again:
        ids = again.sql("SELECT fit_id FROM fits WHERE estimator = 'lasso' ORDER BY fit_id")["fit_id"].to_list()
        capped, normal = (again.fit(i) for i in ids[-2:])
        # every target was capped but the constant one (7), which has nothing to solve
        assert capped.not_converged == [t for t in range(T) if t != T - 1]
        assert normal.not_converged == []
    assert f"warning: fit {ids[-2]}: {T - 1} target(s) did not reach tol 1e-12 within max_iter 1" in " ".join(err.split())


def test_python_fit_warns_about_unconverged_targets(db: dmdb.Database) -> None:
    exp = db.experiment("syn")
    with pytest.warns(dmdb.ConvergenceWarning, match=rf"{T - 1} target\(s\) did not reach tol 1e-12"):
        capped = exp.fit("lasso", k=10, max_iter=1, tol=1e-12)
    assert len(capped.not_converged) == T - 1


def test_a_missing_lds_says_why(db: dmdb.Database, capsys: pytest.CaptureFixture[str]) -> None:
    """With 2 holdout runs `dmdb fit` printed 'LDS on 2 holdout runs: n/a (no holdout runs)', and the
    same for holdout margins that are constant for every target; import-scores said only 'n/a'. Too
    few holdout runs (the README's first three lines record fit runs only) says how to add them."""
    rng = np.random.default_rng(0)
    for name, n_holdout, flat in (("none", 0, False), ("two", 2, False), ("flat", 5, True)):
        exp = db.create_experiment(name, n_train=6, n_targets=2, alpha=0.5)
        for n, role in ((30, "fit"), (n_holdout, "holdout")):
            runs = list(exp.plan(n, seed=1, role=role)) if n else []
            if runs:
                M = np.stack([r.mask for r in runs])
                Y = np.ones((n, 2)) if flat and role == "holdout" else M @ rng.normal(size=(6, 2))
                exp.record_batch([r.run_id for r in runs], M, Y, role=role)
    fits = {name: db.experiment(name).fit("ridge") for name in ("none", "two", "flat")}
    more = "record holdout runs (exp.plan(n, seed, role='holdout'), `dmdb collect --role holdout`) and fit again"
    assert {k: (f.lds, f.lds_missing) for k, f in fits.items()} == {
        "none": (None, f"no holdout runs: {more}"),
        "two": (None, f"2 holdout runs; a rank correlation needs at least 3: {more}"),
        "flat": (None, "every target's holdout margins are constant"),
    }
    assert fits["two"].targets()["holdout_spearman"].to_list() == [None, None]
    scored = db.experiment("syn").fit("diff-means")
    assert scored.lds is not None and scored.lds_missing is None
    path = db.path
    db.close()
    assert main(["fit", "two", "--db", path, "--estimator", "diff-means", "--quiet"]) == 0
    # the summary on stdout as a table's result (`dmdb fit X > log` keeps it); beside csv it goes to stderr
    assert f"LDS on 2 holdout runs: n/a (2 holdout runs; a rank correlation needs at least 3: {more})" in capsys.readouterr().out
    assert main(["fit", "two", "--db", path, "--estimator", "diff-means", "--quiet", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("fit_id,") and "LDS on 2 holdout runs" in err
    np.save(Path(path).parent / "s.npy", np.ones((6, 2)))
    assert main(["import-scores", "flat", str(Path(path).parent / "s.npy"), "--db", path]) == 0
    assert "LDS n/a (every target's holdout margins are constant)" in capsys.readouterr().out
