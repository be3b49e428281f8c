"""The analysis verbs: every format prints the Python API's numbers, which match brute-force numpy on W."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

import dmdb
from dmdb import analyses as A
from dmdb.cli import main

from analyses_fixtures import insert_fit, new_db, sparse_random_W
from test_analyses import base_of, brute_leakage, brute_support, topk
from test_analyses_embeddings import dense_normalised, planted_W

N, T = 200, 30
LEAK_T, LEAK_I = 4, 17  # a planted near duplicate


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A file with experiment e (fit 1, W below) and experiment f (fit 2, the latest, other weights)."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("cli") / "a.duckdb"
    db, _ = new_db(path.parent, path.name, n_train=N, n_targets=T, images=True, rng=rng)
    W = sparse_random_W(rng, N, T, 0.3)
    W[LEAK_I, LEAK_T] = 3.0
    bias = rng.normal(0.2, 0.4, T)
    bias[5], bias[6] = -50.0, 50.0  # already wrong; never flips
    fid = insert_fit(db, "e", W, bias)
    db.create_experiment("f", n_train=50, n_targets=4)
    other = insert_fit(db, "f", sparse_random_W(rng, 50, 4, 0.5), np.zeros(4))
    db.close()
    return path, W, bias, fid, other


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def frame(capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str, *argv: str) -> pl.DataFrame:
    """Run a verb in json, csv or parquet and read what it printed back into a frame."""
    if fmt == "parquet":
        out_file = tmp_path / "out.parquet"
        code, _, err = cli(capsys, *argv, "--format", "parquet", "--output", out_file)
        assert code == 0, err
        return pl.read_parquet(out_file)
    code, out, err = cli(capsys, *argv, "--format", fmt)
    assert code == 0, err
    return pl.read_json(io.StringIO(out)) if fmt == "json" else pl.read_csv(io.StringIO(out))


def api(path: Path, fn, *args, **kw) -> pl.DataFrame:
    with dmdb.open(path, read_only=True) as db:
        return fn(db, *args, **kw)


def ids(cell: object) -> list[int]:
    """A list column as json/parquet keep it, or as csv joins it ('3,17,42')."""
    if isinstance(cell, str):
        return [int(x) for x in cell.split(",") if x]
    return list(cell) if cell is not None else []


def same_numbers(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Equal up to float printing and list joining: same columns, ints equal, floats to 1e-12."""
    assert got.columns == want.columns
    for c in want.columns:
        g, w = got[c].to_list(), want[c].to_list()
        if want[c].dtype.is_float():
            np.testing.assert_allclose(np.array(g, dtype=float), np.array(w, dtype=float), rtol=1e-12, atol=1e-12)
        elif isinstance(want[c].dtype, pl.List):
            assert [ids(x) for x in g] == [ids(x) for x in w], c
        else:
            assert g == w, c


FORMATS = ["json", "csv", "parquet"]


# -- counterfactual ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["top", "bottom"])
def test_counterfactual_top_bottom(fitted, capsys, tmp_path, fmt, mode):
    path, W, bias, fid, _ = fitted
    t, k = 3, 6
    got = frame(capsys, tmp_path, fmt, "counterfactual", "--db", path, "--fit", fid, "-t", t, "--k", k, "--mode", mode)
    same_numbers(got, api(path, A.counterfactual, t, fit=fid, k=k, mode=mode))
    R = topk(W[:, t], k, mode)
    row = got.row(0, named=True)
    assert ids(row["removed"]) == R.tolist() and row["n_removed"] == k
    assert row["base_margin"] == pytest.approx(base_of(W, bias)[t], abs=1e-9)
    assert row["predicted_change"] == pytest.approx(-W[R, t].sum(), abs=1e-9)
    assert row["predicted_margin"] == pytest.approx(base_of(W, bias)[t] - W[R, t].sum(), abs=1e-9)


def test_counterfactual_remove_keep_random(fitted, capsys, tmp_path):
    path, W, bias, fid, _ = fitted
    base = base_of(W, bias)
    got = frame(capsys, tmp_path, "csv", "counterfactual", "--db", path, "-x", "e", "-t", 9, "--remove", "3,17,40-44")
    R = [3, 17, 40, 41, 42, 43, 44]
    assert got["fit_id"][0] == fid and ids(got["removed"][0]) == R and got["mode"][0] == "remove"
    assert got["predicted_change"][0] == pytest.approx(-W[R, 9].sum(), abs=1e-9)
    got = frame(capsys, tmp_path, "json", "counterfactual", "--db", path, "-x", "e", "-t", 9, "--keep", "0-149")
    assert got["predicted_margin"][0] == pytest.approx(bias[9] + W[:150, 9].sum(), abs=1e-9)
    assert ids(got["removed"][0]) == list(range(150, N))
    got = frame(capsys, tmp_path, "json", "counterfactual", "--db", path, "-x", "e", "-t", 9, "--k", 20,
                "--mode", "random", "--seed", 4)
    R = np.random.default_rng(4).choice(N, size=20, replace=False)
    assert ids(got["removed"][0]) == R.tolist()
    assert got["predicted_change"][0] == pytest.approx(-W[R, 9].sum(), abs=1e-9)
    assert base[9] + got["predicted_change"][0] == pytest.approx(got["predicted_margin"][0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_counterfactual_all_targets(fitted, capsys, tmp_path, fmt):
    path, W, bias, fid, _ = fitted
    got = frame(capsys, tmp_path, fmt, "counterfactual", "--db", path, "-x", "e", "--all-targets", "--remove", "0-9,50")
    R = [*range(10), 50]
    same_numbers(got, api(path, A.counterfactual_all, R, fit=fid))
    assert got["target"].to_list() == list(range(T))
    np.testing.assert_allclose(got["predicted_change"].to_numpy(), -W[R].sum(axis=0), atol=1e-9)
    base = base_of(W, bias)
    assert got["flips"].to_list() == ((base < 0) != (base - W[R].sum(axis=0) < 0)).tolist()
    # one target's top 5, applied to every target
    got = frame(capsys, tmp_path, fmt, "counterfactual", "--db", path, "-x", "e", "--all-targets", "-t", 2, "--k", 5)
    R = topk(W[:, 2], 5, "top")
    np.testing.assert_allclose(got["predicted_change"].to_numpy(), -W[R].sum(axis=0), atol=1e-9)


def test_counterfactual_table_and_latest_fit(fitted, capsys):
    path, W, bias, fid, other = fitted
    code, out, _ = cli(capsys, "counterfactual", "--db", path, "-x", "e", "-t", 3, "--k", 2)
    R = topk(W[:, 3], 2, "top")
    assert code == 0 and f"fit {fid}: target 3 without its top 2" in out and f"{R[0]},{R[1]}" in out
    # without --fit or --experiment: the latest fit of all, here experiment f's
    got = json.loads(cli(capsys, "counterfactual", "--db", path, "-t", 1, "--k", 1, "-f", "json")[1])
    assert got[0]["fit_id"] == other


def test_counterfactual_title_says_when_k_exceeds_the_weights_of_that_sign(fitted, capsys):
    """--k beyond a target's positive weights removes only those: the title said 'its top 200' over
    a row that removed fewer. --seed with top/bottom was silently ignored."""
    path, W, bias, fid, _ = fitted
    n_pos = int((W[:, 3] > 0).sum())
    assert 0 < n_pos < N
    code, out, _ = cli(capsys, "counterfactual", "--db", path, "--fit", fid, "-t", 3, "--k", N)
    assert code == 0 and f"without its top {n_pos} (--k {N}, but it has only {n_pos} positive weights)" in out
    code, out, _ = cli(capsys, "counterfactual", "--db", path, "--fit", fid, "--all-targets", "-t", 3, "--k", N)
    assert code == 0 and f"every target without target 3's top {n_pos} (--k {N}, but target 3 has only" in out
    code, _, err = cli(capsys, "counterfactual", "--db", path, "--fit", fid, "-t", 3, "--k", 2, "--seed", 5)
    assert code != 0 and "--seed draws the examples of --mode random" in err


def test_counterfactual_titles_name_whose_weights_all_targets_lose(fitted, capsys):
    """With --all-targets, --k ranks the weights of the one --target: the title read 'every target
    without its top 2', as if each target had lost its own top 2. --seed with --remove said 'top and
    bottom removals have no randomness', about a --mode the user never gave."""
    path, W, bias, fid, _ = fitted
    code, out, _ = cli(capsys, "counterfactual", "--db", path, "--fit", fid, "--all-targets", "-t", 3, "--k", 2)
    assert code == 0 and f"fit {fid}: every target without target 3's top 2" in out
    code, out, _ = cli(capsys, "counterfactual", "--db", path, "--fit", fid, "--all-targets", "-t", 3, "--k", 2,
                       "--mode", "random", "--seed", 1)
    assert code == 0 and f"fit {fid}: every target without 2 random examples" in out
    code, _, err = cli(capsys, "counterfactual", "--db", path, "--fit", fid, "-t", 3, "--remove", "1,2", "--seed", 5)
    assert code != 0 and err.endswith("--seed draws the examples of --k with --mode random; it does not apply to --remove/--keep\n")


# -- brittle -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_brittle(fitted, capsys, tmp_path, fmt):
    path, W, bias, fid, _ = fitted
    got = frame(capsys, tmp_path, fmt, "brittle", "--db", path, "--fit", fid)
    same_numbers(got, api(path, A.brittleness, fit=fid))
    expect = brute_support(W, bias)
    assert got["support"].to_list() == expect and expect[5] == 0 and expect[6] is None
    one = frame(capsys, tmp_path, fmt, "brittle", "--db", path, "--fit", fid, "-t", 12)
    assert one["target"].to_list() == [12] and one["support"].to_list() == [expect[12]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_brittle_summary(fitted, capsys, tmp_path, fmt):
    path, W, bias, fid, _ = fitted
    got = frame(capsys, tmp_path, fmt, "brittle", "--db", path, "--fit", fid, "--summary", "--thresholds", "1,3,10")
    same_numbers(got, api(path, A.brittleness_summary, fit=fid, thresholds=[1, 3, 10]))
    correct = [s for s in brute_support(W, bias) if s != 0]
    assert got["n_flipped"].to_list() == [sum(1 for s in correct if s is not None and s <= k) for k in (1, 3, 10)]
    assert got["n_correct"].to_list() == [len(correct)] * 3


# -- similar -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_similar_top_weights(fitted, capsys, tmp_path, fmt):
    path, W, _, fid, _ = fitted
    got = frame(capsys, tmp_path, fmt, "similar", "--db", path, "--fit", fid, "-t", 11, "--k", 4)
    same_numbers(got, api(path, A.top_weights, 11, fit=fid, k=4))
    pos = got.filter(pl.col("direction") == "positive")["train_idx"].to_list()
    neg = got.filter(pl.col("direction") == "negative")["train_idx"].to_list()
    assert pos == topk(W[:, 11], 4, "top").tolist() and neg == topk(W[:, 11], 4, "bottom").tolist()
    np.testing.assert_allclose(got["weight"].to_numpy(), W[got["train_idx"].to_numpy(), 11])


@pytest.mark.parametrize("fmt", FORMATS)
def test_similar_nearest(fitted, capsys, tmp_path, fmt):
    path, W, _, fid, _ = fitted
    t = 12
    got = frame(capsys, tmp_path, fmt, "similar", "--db", path, "--fit", fid, "-t", t, "--k", 5, "--nearest")
    same_numbers(got, api(path, A.nearest_targets, t, fit=fid, k=5))
    norms = np.linalg.norm(W, axis=0)
    cos = W.T @ W[:, t] / (norms * norms[t])
    share = ((W != 0) & (W[:, [t]] != 0)).any(axis=0)
    expect = sorted((j for j in range(T) if share[j] and j != t), key=lambda j: (-cos[j], j))[:5]
    assert got["neighbor"].to_list() == expect
    np.testing.assert_allclose(got["cosine"].to_numpy(), cos[expect], atol=1e-12)


# -- leakage -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_leakage(fitted, capsys, tmp_path, fmt):
    path, W, _, fid, _ = fitted
    got = frame(capsys, tmp_path, fmt, "leakage", "--db", path, "--fit", fid, "--top", 8, "--min-z", 2.5)
    same_numbers(got, api(path, A.leakage, fit=fid, min_z=2.5, limit=8))
    expect = brute_leakage(W, 2.5)[:8]
    assert len(expect) == 8 and (expect[0][1], expect[0][2]) == (LEAK_T, LEAK_I)
    assert list(zip(got["target"].to_list(), got["train_idx"].to_list())) == [(t, i) for _, t, i in expect]
    np.testing.assert_allclose(got["robust_z"].to_numpy(), [z for z, _, _ in expect], rtol=1e-9)


# -- embed ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("emb") / "p.duckdb"
    W, truth = planted_W(rng)
    db, _ = new_db(path.parent, path.name, n_train=W.shape[0], n_targets=W.shape[1], rng=rng)
    fid = insert_fit(db, "e", W, np.zeros(W.shape[1]))
    db.close()
    return path, W, truth, fid


@pytest.mark.parametrize("fmt", FORMATS)
def test_embed(planted, capsys, tmp_path, fmt):
    path, W, truth, fid = planted
    got = frame(capsys, tmp_path, fmt, "embed", "--db", path, "--components", 3, "--clusters", 4)
    same_numbers(got, api(path, A.embedding_summary, fit=fid))
    comps = got.filter(pl.col("kind") == "component")
    ref = PCA(n_components=3, svd_solver="full").fit(dense_normalised(W))
    np.testing.assert_allclose(comps["explained_variance_ratio"].to_numpy(), ref.explained_variance_ratio_, rtol=1e-6)
    assert sorted(got.filter(pl.col("kind") == "cluster")["n_targets"].to_list()) == [10, 10, 10, 10]
    per = frame(capsys, tmp_path, fmt, "embed", "--db", path, "--components", 3, "--clusters", 4, "--per-target")
    same_numbers(per, api(path, A.target_embeddings, fit=fid))
    assert adjusted_rand_score(truth, per["cluster"].to_numpy()) == 1.0
    scores = ref.transform(dense_normalised(W))
    np.testing.assert_allclose(np.abs(per["pc0"].to_numpy()), np.abs(scores[:, 0]), atol=1e-8)


def test_embed_table_title_says_how_much_variance_the_components_explain(planted, capsys, tmp_path):
    path, W, _, fid = planted
    out = tmp_path / "embed.txt"
    code, _, err = cli(capsys, "embed", "--db", path, "--components", 2, "--clusters", 4, "--per-target", "--output", out)
    assert code == 0, err
    ratio = PCA(n_components=2, svd_solver="full").fit(dense_normalised(W)).explained_variance_ratio_
    shares = f"pc0 {100 * ratio[0]:.3g}%, pc1 {100 * ratio[1]:.3g}% of the variance"
    title = " ".join(out.read_text().split())  # rich wraps a title wider than the table
    assert f"fit {fid}: embeddings (2 components: {shares}; 4 clusters)" in title


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, message",
    [
        (["counterfactual", "-t", "99", "--k", "3"], "has no target 99 (it has 30 targets, ids 0-29); name a fit that has it with fit= (CLI: --fit"),
        (["counterfactual", "-t", "3", "--remove", "4,x"], "--remove takes train ids like"),
        (["counterfactual", "-t", "3", "--remove", "9-2"], "range '9-2' in '9-2' runs backwards"),
        (["counterfactual", "-t", "3", "--remove", "5,200"], "train index 200 is outside 0..199"),
        # refused by its bounds: expanding the range first would be numpy's MemoryError
        (["counterfactual", "-t", "3", "--keep", "0-999999999999999"], "999999999999800 train indices (200-999999999999999) are outside 0..199"),
        (["counterfactual", "-t", "3", "--k", "-1"], "k must be a non-negative integer"),
        (["counterfactual", "--remove", "1", "--mode", "bottom", "-t", "1"], "--mode chooses what --k removes"),
        (["counterfactual", "--all-targets", "--k", "3"], "give --target T"),
        (["brittle", "--fit", "77"], "no fit 77"),
        (["brittle", "--summary", "-t", "3"], "drop --target or --summary"),
        (["brittle", "-t", "30"], "has no target 30"),
        (["similar", "-t", "3", "-x", "nope"], "unknown experiment 'nope'"),
        (["similar", "-t", "3", "-x", "f", "--fit", "1"], "fit 1 belongs to experiment 'e', not 'f'"),
        # a count below its option's floor is argparse's to refuse (test_cli); above the fit's size, the library's
        (["embed", "--components", "999"], "n_components must be in 1..30"),
    ],
)
def test_errors_are_one_line(fitted, capsys, argv, message):
    path = fitted[0]
    code, out, err = cli(capsys, *argv, "--db", path, "-x", "e") if "-x" not in argv and "--fit" not in argv \
        else cli(capsys, *argv, "--db", path)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"dmdb {argv[0]}: error: ") and message in err, err


def test_no_fit_yet_and_no_database(tmp_path, capsys):
    with dmdb.open(tmp_path / "empty.duckdb") as db:
        db.create_experiment("e", n_train=10, n_targets=2)
    for argv in (["brittle"], ["similar", "-t", "0"], ["leakage"], ["embed"], ["counterfactual", "-t", "0", "--k", "1"]):
        code, _, err = cli(capsys, *argv, "--db", tmp_path / "empty.duckdb")
        assert code == 1 and "has no fits yet; run `dmdb fit` first" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "brittle", "-x", "e", "--db", tmp_path / "empty.duckdb")
    assert code == 1 and "experiment 'e' has no fits yet; run `dmdb fit e` first" in err
    code, _, err = cli(capsys, "leakage", "--db", tmp_path / "missing.duckdb")
    assert code == 1 and "no database at" in err and not (tmp_path / "missing.duckdb").exists()
