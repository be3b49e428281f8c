"""Analyses against brute-force numpy oracles on a small dense fit, and SQL macros against Python."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from dmdb import analyses as A
from dmdb.analyses.verification import run_info
from dmdb.errors import BadInputError, DmdbError

from analyses_fixtures import insert_fit, new_db, sparse_random_W

N, T = 200, 30


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    rng = np.random.default_rng(42)
    db, exp = new_db(tmp_path_factory.mktemp("an"), n_train=N, n_targets=T, images=True, rng=rng)
    W = sparse_random_W(rng, N, T, 0.3)
    W[:, 7] = 0.0  # a target with no weights
    bias = rng.normal(0.2, 0.4, T)
    bias[5] = -50.0  # already wrong
    bias[6] = 50.0  # never flips
    fid = insert_fit(db, "e", W, bias)
    yield db, W, bias, fid
    db.close()


def test_a_missing_target_message_lists_scattered_ids(tmp_path):
    """'ids 1..7' suggested a target 2 that the fit lacks."""
    db, _ = new_db(tmp_path, n_train=N, n_targets=T, images=False, rng=np.random.default_rng(0))
    gaps = insert_fit(db, "e", np.ones((N, 5)), np.zeros(5), targets=np.array([1, 3, 5, 6, 7]))
    with pytest.raises(BadInputError, match=rf"fit {gaps} has no target 2 \(it has 5 targets, ids 1,3,5-7\)"):
        A.counterfactual(db, 2, k=3, fit=gaps)
    db.close()


def base_of(W, bias):
    return bias + W.sum(axis=0)


def topk(w, k, mode):
    idx = np.arange(len(w))
    if mode == "top":
        sel = idx[w > 0]
        order = sorted(sel, key=lambda i: (-w[i], i))
    else:
        sel = idx[w < 0]
        order = sorted(sel, key=lambda i: (w[i], i))
    return np.array(order[:k], dtype=np.int64)


# -- counterfactual ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["top", "bottom"])
@pytest.mark.parametrize("k", [0, 1, 5, 500])
def test_counterfactual_topk_matches_numpy_and_sql(small, mode, k):
    db, W, bias, fid = small
    for t in (0, 3, 5, 7, 29):
        got = A.counterfactual(db, t, k=k, mode=mode, fit=fid).row(0, named=True)
        R = topk(W[:, t], k, mode)
        base = base_of(W, bias)[t]
        assert got["removed"] == R.tolist()
        assert got["n_removed"] == len(R)
        assert got["base_margin"] == pytest.approx(base, abs=1e-9)
        assert got["predicted_change"] == pytest.approx(-W[R, t].sum(), abs=1e-9)
        assert got["predicted_margin"] == pytest.approx(base - W[R, t].sum(), abs=1e-9)
        assert got["flips"] == ((base < 0) != (base - W[R, t].sum() < 0))
        sql = db.sql("SELECT * FROM counterfactual(fit := ?, target := ?, k := ?, mode := ?)", [fid, t, k, mode])
        s = sql.row(0, named=True)
        assert s["removed"] == got["removed"] and s["n_removed"] == got["n_removed"] and s["flips"] == got["flips"]
        for c in ("base_margin", "predicted_margin", "predicted_change"):
            assert s[c] == pytest.approx(got[c], abs=1e-9)
        if k == 0:  # nothing removed: a change of +0.0 (it printed as -0.0 / -0.0000)
            assert np.copysign(1, got["predicted_change"]) == 1 and np.copysign(1, s["predicted_change"]) == 1


def test_counterfactual_random_remove_keep(small):
    db, W, bias, fid = small
    r = A.counterfactual(db, 4, k=20, mode="random", seed=3, fit=fid).row(0, named=True)
    R = np.array(r["removed"])
    assert len(set(R.tolist())) == 20 and r["n_removed"] == 20
    assert r["predicted_change"] == pytest.approx(-W[R, 4].sum(), abs=1e-9)
    again = A.counterfactual(db, 4, k=20, mode="random", seed=3, fit=fid)["removed"][0].to_list()
    assert again == R.tolist()  # seeded
    rm = A.counterfactual(db, 4, remove=[3, 3, 10, 199], fit=fid).row(0, named=True)
    assert rm["n_removed"] == 3 and rm["mode"] == "remove"
    assert rm["predicted_change"] == pytest.approx(-W[[3, 10, 199], 4].sum(), abs=1e-9)
    keep = np.arange(0, N, 2)
    kp = A.counterfactual(db, 4, keep=keep, fit=fid).row(0, named=True)
    assert kp["predicted_margin"] == pytest.approx(bias[4] + W[keep, 4].sum(), abs=1e-9)
    assert A.removal_set(db, 4, 5, fit=fid).tolist() == topk(W[:, 4], 5, "top").tolist()


def test_counterfactual_all_matches_numpy_and_sql(small):
    db, W, bias, fid = small
    rng = np.random.default_rng(1)
    for R in (rng.choice(N, 15, replace=False), np.arange(N)[:150], np.array([], dtype=int)):
        got = A.counterfactual_all(db, R, fit=fid).sort("target")
        base = base_of(W, bias)
        change = -W[R].sum(axis=0)
        np.testing.assert_allclose(got["base_margin"].to_numpy(), base, atol=1e-9)
        np.testing.assert_allclose(got["predicted_change"].to_numpy(), change, atol=1e-9)
        np.testing.assert_allclose(got["predicted_margin"].to_numpy(), base + change, atol=1e-9)
        assert got["flips"].to_list() == ((base < 0) != (base + change < 0)).tolist()
        sql = db.sql("SELECT * FROM counterfactual_all(fit := ?, remove := ?)", [fid, [int(i) for i in R]])
        np.testing.assert_allclose(sql["predicted_margin"].to_numpy(), got["predicted_margin"].to_numpy(), atol=1e-9)
        assert sql["flips"].to_list() == got["flips"].to_list()
        if R.size == 0:  # +0.0 changes, not -0.0
            assert (np.copysign(1, got["predicted_change"].to_numpy()) == 1).all()
            assert (np.copysign(1, sql["predicted_change"].to_numpy()) == 1).all()
    keep = np.arange(50, N)
    kp = A.counterfactual_all(db, keep=keep, fit=fid)
    np.testing.assert_allclose(kp["predicted_margin"].to_numpy(), bias + W[keep].sum(axis=0), atol=1e-9)


def test_counterfactual_rejects_bad_input(small):
    db, _, _, fid = small
    with pytest.raises(BadInputError, match="outside"):
        A.counterfactual_all(db, [0, N], fit=fid)
    with pytest.raises(BadInputError, match="exactly one"):
        A.counterfactual_all(db, [1], keep=[2], fit=fid)
    with pytest.raises(BadInputError, match="mode"):
        A.counterfactual(db, 0, k=3, mode="middle", fit=fid)
    # no removal asked for: the message named remove= and keep= only, not the k= a user most likely forgot
    with pytest.raises(BadInputError, match=r"^give one of k= \(with mode=\), remove= \(examples to drop\) or keep="):
        A.counterfactual(db, 0, fit=fid)
    with pytest.raises(BadInputError, match="no target"):
        A.counterfactual(db, T + 5, k=3, fit=fid)
    with pytest.raises(BadInputError, match="no fit 999"):
        A.counterfactual(db, 0, k=3, fit=999)
    # a target id that is not an integer: was 'fit F has no target 0 (ids 0..29)' for '0', and True was target 1
    for bad in ("0", 1.0, True):
        with pytest.raises(BadInputError, match="target must be an integer target id"):
            A.counterfactual(db, bad, k=3, fit=fid)
        with pytest.raises(BadInputError, match="target must be an integer target id"):
            A.nearest_targets(db, bad, fit=fid)
        with pytest.raises(BadInputError, match="target must be an integer target id"):
            A.top_weights(db, bad, fit=fid)
    # nor is True a count (it was k = 1)
    with pytest.raises(BadInputError, match="k must be a positive integer"):
        A.nearest_targets(db, 0, fit=fid, k=True)
    with pytest.raises(BadInputError, match="k must be a non-negative integer"):
        A.counterfactual(db, 0, k=True, fit=fid)
    assert A.counterfactual(db, np.int64(3), k=3, fit=fid)["target"].to_list() == [3]
    # a fit id that is not an integer: int() made 1.5 fit 1 and True fit 1
    for bad in (fid + 0.5, True):
        with pytest.raises(BadInputError, match="fit must be an integer fit id"):
            A.brittleness(db, fit=bad)
    assert A.brittleness(db, fit=float(fid))["fit_id"][0] == fid
    with pytest.raises(DmdbError, match="mode"):
        db.sql("SELECT * FROM counterfactual(target := 0, mode := 'random')")
    # plain SQL fails as loudly as Python instead of returning no rows
    for q, msg in (
        (f"counterfactual(target := {T + 5}, k := 3)", f"fit {fid} has no target {T + 5}"),
        ("counterfactual(fit := 999, target := 0)", "no fit 999"),
        ("counterfactual(17, 5)", "no fit 17.*by name"),  # positional arguments bind to fit first
        ("top_weights(fit := 999, target := 0)", "no fit 999"),
        (f"nearest_targets(target := {T + 5})", "has no target"),
        ("brittleness(999)", "no fit 999"),
        ("brittleness_summary(fit := 999)", "no fit 999"),
        ("brittleness_summary(thresholds := [0, 10])", "thresholds must be whole numbers >= 1, got 0"),
        ("brittleness_summary(thresholds := [])", "got an empty list"),  # gave no rows
        ("brittleness_summary(thresholds := NULL)", "got NULL$"),  # said 'got an empty list'
        ("brittleness_summary(thresholds := [NULL, 10])", "got NULL"),  # gave a k_max NULL row
        ("brittleness_summary(thresholds := [2.5])", "got 2.5"),  # was rounded to 3
        ("counterfactual(target := 0, k := -3)", "k must be >= 0"),
        ("counterfactual(target := 0, k := NULL)", "k must be >= 0, got NULL"),  # was k = 0, silently
        ("top_weights(target := 0, k := NULL)", "k must be >= 1, got NULL"),
        ("top_weights(target := 0, k := 0)", "k must be >= 1, got 0"),  # as in Python (it returned no rows)
        ("nearest_targets(target := 0, k := 0)", "k must be >= 1, got 0"),
        ("counterfactual(target := 0, k := 2.7)", "counterfactual: k must be a whole number, got 2.7"),  # removed 2
        ("top_weights(target := 0, k := 2.5)", "top_weights: k must be a whole number, got 2.5"),
        ("nearest_targets(target := 0, k := 1.5)", "nearest_targets: k must be a whole number, got 1.5"),
        ("top_weights(target := 0, k := 'nan'::DOUBLE)", "top_weights: k must be a whole number, got nan"),  # listed all
        ("counterfactual(target := 0, k := 'inf'::DOUBLE)", "counterfactual: k must be a whole number, got inf"),
        (f"counterfactual_all(remove := [-1, {N}])", f"outside 0..{N - 1}"),
        ("counterfactual_all(remove := [1, NULL])", "remove holds a NULL"),  # was the change of [1], silently
        ("counterfactual_all(remove := [1, 2.5])", "remove holds a fraction"),  # removed 1 only, as Python refuses
    ):
        with pytest.raises(DmdbError, match=msg):
            db.sql(f"SELECT * FROM {q}")


# -- brittleness ---------------------------------------------------------------------------------

def brute_support(W, bias):
    out = []
    for t in range(W.shape[1]):
        base = bias[t] + W[:, t].sum()
        pos = np.sort(W[:, t][W[:, t] > 0])[::-1]
        s = None
        for k in range(len(pos) + 1):
            if base - pos[:k].sum() < 0:
                s = k
                break
        out.append(s)
    return out


def test_brittleness_matches_brute_force_and_sql(small):
    db, W, bias, fid = small
    got = A.brittleness(db, fit=fid).sort("target")
    expect = brute_support(W, bias)
    assert got["support"].to_list() == expect
    assert expect[5] == 0 and expect[6] is None and expect[7] == (0 if bias[7] < 0 else None)
    assert got["n_positive"].to_list() == (W > 0).sum(axis=0).tolist()
    for t, s in enumerate(expect):
        if s:
            pos = np.sort(W[:, t][W[:, t] > 0])[::-1]
            assert got["margin_after"][t] == pytest.approx(base_of(W, bias)[t] - pos[:s].sum(), abs=1e-9)
    sql = db.sql("SELECT * FROM brittleness(fit := ?)", [fid])
    assert sql["support"].to_list() == expect
    # each target's label, as top_weights and nearest_targets give theirs
    labels = dict(db.con.execute("SELECT idx, label FROM targets WHERE experiment = 'e'").fetchall())
    assert got["label"].to_list() == [labels[t] for t in range(T)]
    assert sql["label"].to_list() == got["label"].to_list()
    np.testing.assert_allclose(sql["margin_after"].fill_null(np.nan).to_numpy(),
                               got["margin_after"].fill_null(np.nan).to_numpy(), atol=1e-9)
    # one removal further than support does flip, one fewer does not (checked via counterfactual)
    for t, s in enumerate(expect):
        if s:
            assert A.counterfactual(db, t, k=s, fit=fid)["predicted_margin"][0] < 0
            assert A.counterfactual(db, t, k=s - 1, fit=fid)["predicted_margin"][0] >= 0


def test_brittleness_of_a_fit_without_positive_weights(tmp_path):
    """No positive weight anywhere (e.g. every target constant): support is 0 where the base margin
    is wrong, never otherwise; Python and SQL agree (Python raised IndexError)."""
    db, _ = new_db(tmp_path, n_train=20, n_targets=3)
    W = np.zeros((20, 3))
    W[3, 1] = -0.5
    fid = insert_fit(db, "e", W, np.array([1.0, 0.2, -2.0]))
    db.con.execute("UPDATE targets SET label = 4 WHERE idx = 0")
    db.con.execute("UPDATE targets SET label = NULL WHERE idx = 1")
    db.con.execute("DELETE FROM targets WHERE idx = 2")
    br = A.brittleness(db, fit=fid)
    assert br["support"].to_list() == [None, 0, 0]  # target 1: 0.2 - 0.5 < 0 already
    assert br["label"].to_list() == [4, None, None]  # a NULL label, a target without a row
    sql = db.sql(f"SELECT support, label FROM brittleness(fit := {fid}) ORDER BY target")
    assert sql.rows() == br.select("support", "label").rows()
    summary = A.brittleness_summary(db, fit=fid)
    assert summary["n_correct"].to_list()[0] == 1 and summary["n_flipped"].sum() == 0
    db.close()


def test_brittleness_summary(small):
    db, W, bias, fid = small
    th = [1, 3, 10, 40]
    got = A.brittleness_summary(db, fit=fid, thresholds=th)
    sup = brute_support(W, bias)
    correct = [s for s in sup if s != 0]
    assert got["n_correct"].to_list() == [len(correct)] * 4
    assert got["n_flipped"].to_list() == [sum(1 for s in correct if s is not None and s <= k) for k in th]
    sql = db.sql("SELECT * FROM brittleness_summary(fit := ?, thresholds := ?)", [fid, th])
    assert sql.select("k_max", "n_targets", "n_correct", "n_flipped").rows() == \
        got.select("k_max", "n_targets", "n_correct", "n_flipped").rows()
    np.testing.assert_allclose(sql["frac_flipped"].to_numpy(), got["frac_flipped"].to_numpy())
    # Python truncated 2.5 to 2 where SQL rounded it to 3: both refuse a threshold that is not whole
    for bad in ([2.5], [True], []):
        with pytest.raises(BadInputError, match="thresholds must be positive integers"):
            A.brittleness_summary(db, fit=fid, thresholds=bad)
    assert A.brittleness_summary(db, fit=fid, thresholds=np.array([10, 3]))["k_max"].to_list() == [3, 10]
    assert A.brittleness_summary(db, fit=fid)["k_max"].to_list() == list(A.DEFAULT_THRESHOLDS)


# -- similar -------------------------------------------------------------------------------------

def test_top_weights(small):
    db, W, _, fid = small
    labels = db.experiment("e").train_examples()["label"].to_numpy()
    for t in (0, 11):
        got = A.top_weights(db, t, k=4, fit=fid)
        pos = got.filter(pl.col("direction") == "positive")
        neg = got.filter(pl.col("direction") == "negative")
        assert pos["train_idx"].to_list() == topk(W[:, t], 4, "top").tolist()
        assert neg["train_idx"].to_list() == topk(W[:, t], 4, "bottom").tolist()
        assert pos["rank"].to_list() == [1, 2, 3, 4]
        np.testing.assert_allclose(got["weight"].to_numpy(), W[got["train_idx"].to_numpy(), t])
        assert got["label"].to_list() == labels[got["train_idx"].to_numpy()].tolist()
        assert got["has_image"].all()
    assert A.top_weights(db, 7, fit=fid).height == 0


def test_nearest_targets_matches_dense_cosine_and_sql(small):
    db, W, _, fid = small
    norms = np.linalg.norm(W, axis=0)
    for t in (0, 12, 29):
        got = A.nearest_targets(db, t, k=6, fit=fid)
        cos = (W.T @ W[:, t]) / (norms * norms[t] + 1e-300)
        share = ((W != 0) & (W[:, [t]] != 0)).any(axis=0)
        share[t] = False
        cand = [j for j in range(T) if share[j] and norms[j] > 0]
        expect = sorted(cand, key=lambda j: (-cos[j], j))[:6]
        assert got["neighbor"].to_list() == expect
        np.testing.assert_allclose(got["cosine"].to_numpy(), cos[expect], atol=1e-12)
        sql = db.sql("SELECT * FROM nearest_targets(fit := ?, target := ?, k := ?)", [fid, t, 6])
        assert sql["neighbor"].to_list() == expect
        np.testing.assert_allclose(sql["cosine"].to_numpy(), got["cosine"].to_numpy(), atol=1e-12)
        assert sql["neighbor_label"].to_list() == got["neighbor_label"].to_list()
    assert A.nearest_targets(db, 7, fit=fid).height == 0


# -- leakage -------------------------------------------------------------------------------------

def brute_leakage(W, min_z, min_nnz=3):
    out = []
    for t in range(W.shape[1]):
        nz = W[:, t][W[:, t] != 0]
        if len(nz) < min_nnz:
            continue
        med = np.median(nz)
        mad = np.median(np.abs(nz - med))
        if mad == 0:
            continue
        for i in np.flatnonzero(W[:, t] > 0):
            z = (W[i, t] - med) / (1.4826 * mad)
            if z >= min_z:
                out.append((z, t, i))
    out.sort(key=lambda r: (-r[0], r[1], r[2]))
    return out


def test_leakage_matches_brute_force(small):
    db, W, _, fid = small
    got = A.leakage(db, fit=fid, min_z=2.0, limit=None)
    expect = brute_leakage(W, 2.0)
    assert len(expect) > 5
    assert list(zip(got["target"].to_list(), got["train_idx"].to_list())) == [(t, i) for _, t, i in expect]
    np.testing.assert_allclose(got["robust_z"].to_numpy(), [z for z, _, _ in expect], rtol=1e-9)
    for row in got.head(5).iter_rows(named=True):
        col = W[:, row["target"]]
        nxt = np.sort(col[(col > 0)])[::-1]
        r = list(nxt).index(col[row["train_idx"]])
        assert row["rank_in_target"] == r + 1
        if r + 1 < len(nxt):
            assert row["ratio_to_next"] == pytest.approx(nxt[r] / nxt[r + 1])
    top3 = A.leakage(db, fit=fid, min_z=2.0, limit=3)  # the first 3, and how many there are in all
    assert top3.height == 3 and top3["n_candidates"].to_list() == [len(expect)] * 3
    assert top3.drop("n_candidates").equals(got.head(3).drop("n_candidates"))
    assert got["n_candidates"].to_list() == [len(expect)] * len(expect)
    # SQL refuses what Python refuses (it returned rows for min_nnz 1, and none for NULLs)
    sql = db.sql("SELECT target, train_idx FROM leakage_candidates(fit := ?, min_z := 2.0, min_nnz := 4)", [fid])
    assert list(zip(sql["target"].to_list(), sql["train_idx"].to_list())) == [(t, i) for _, t, i in brute_leakage(W, 2.0, 4)]
    for args, says in (("min_nnz := 1", "min_nnz must be >= 3, got 1"), ("min_nnz := 3.5", "min_nnz must be a whole number"),
                       ("min_nnz := NULL", "min_nnz must be >= 3, got NULL"), ("min_z := NULL", "min_z must be a number, got NULL"),
                       ("min_z := 'nan'::DOUBLE", "min_z must be a number, got nan")):  # NaN listed no candidates
        with pytest.raises(DmdbError, match=says):
            db.sql(f"SELECT * FROM leakage_candidates(fit := {fid}, {args})")
    with pytest.raises(BadInputError, match="min_nnz must be at least 3"):
        A.leakage(db, fit=fid, min_nnz=3.5)  # int() made it 3
    with pytest.raises(BadInputError, match="min_z must be a number, got None"):
        A.leakage(db, fit=fid, min_z=None)  # a TypeError from float()
    with pytest.raises(BadInputError, match="min_z must be a number, got nan"):
        A.leakage(db, fit=fid, min_z=float("nan"))  # an empty frame, as if nothing leaked
    every = A.leakage(db, fit=fid, min_z=-np.inf, limit=None)  # an infinite threshold is still a threshold
    assert list(zip(every["target"].to_list(), every["train_idx"].to_list())) == [(t, i) for _, t, i in brute_leakage(W, -np.inf)]
    for bad in (2.5, True, 0):
        with pytest.raises(BadInputError, match="limit must be a positive integer or None"):
            A.leakage(db, fit=fid, limit=bad)


def test_leakage_ranks_planted_duplicates_first(tmp_path):
    rng = np.random.default_rng(5)
    n, nt = 300, 25
    db, exp = new_db(tmp_path, n_train=n, n_targets=nt, labels=False, rng=rng)
    train_imgs = rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
    target_imgs = rng.integers(0, 256, (nt, 6, 6, 3), dtype=np.uint8)
    planted = {2: 17, 9: 250, 13: 4, 20: 123}
    for t, i in planted.items():  # near-duplicate images
        target_imgs[t] = np.clip(train_imgs[i].astype(int) + rng.integers(-3, 4, (6, 6, 3)), 0, 255)
    exp.set_train_examples(labels=np.zeros(n, int), images=train_imgs)
    exp.set_targets(labels=np.zeros(nt, int), images=target_imgs)
    W = sparse_random_W(rng, n, nt, 0.2, scale=0.01)
    for t, i in planted.items():
        W[i, t] = 0.4
    insert_fit(db, "e", W, np.zeros(nt))
    got = A.leakage(db)
    top = set(zip(got["target"].to_list()[:4], got["train_idx"].to_list()[:4]))
    assert top == set(planted.items())
    head = got.head(4)
    assert (head["pixel_dist"] < 0.02).all() and (head["pixel_corr"] > 0.99).all()
    assert (head["ratio_to_next"] > 5).all()
    assert got.height == 4 or got["robust_z"][4] < head["robust_z"].min()
    db.close()


def test_pixel_distance():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert A.pixel_distance(a, a) == (0.0, pytest.approx(1.0))
    assert A.pixel_distance(a, a.reshape(4, 3)) == (None, None)
    assert A.pixel_distance(a, None) == (None, None)


IMAGE_DTYPES = ["|b1", "|u1", "|i1", "<u2", ">u2", "<i2", ">i2", "<u4", ">u4", "<i4", ">i4", "<u8", ">u8",
                "<i8", ">i8", "<f2", ">f2", "<f4", ">f4", "<f8", ">f8"]


def extreme_image(rng: np.random.Generator, dtype: str) -> np.ndarray:
    """A 3 x 5 image of the dtype holding its extremes: integer min and max; float subnormal, -max,
    -0.0, inf and nan; random values elsewhere. (15 items: SQL reads 8 bytes at a time, and the last
    8 bytes of a 1, 2 or 4-byte dtype's image are part-filled.)"""
    d = np.dtype(dtype)
    if d.kind == "b":
        return rng.integers(0, 2, (3, 5)).astype(d)
    if d.kind == "f":
        a = (rng.normal(size=(3, 5)) * 10.0 ** rng.integers(-4, 4, (3, 5))).astype(d)
        a.flat[:5] = [np.finfo(d).smallest_subnormal * 3, -np.finfo(d).max, -0.0, np.inf, np.nan]
        return a
    info = np.iinfo(d)
    a = rng.integers(info.min, info.max, (3, 5), dtype=d.newbyteorder("="), endpoint=True).astype(d)
    a.flat[:2] = [info.min, info.max]
    return a


def test_sql_reads_stored_images_as_numpy_does(tmp_path):
    """dmdb_image_values gives a stored image's pixels exactly as numpy's astype(float64)."""
    rng = np.random.default_rng(8)
    db, exp = new_db(tmp_path, n_train=4, n_targets=len(IMAGE_DTYPES), labels=False, rng=rng)
    imgs = [extreme_image(rng, d) for d in IMAGE_DTYPES]
    exp.set_targets(images=imgs)
    got = db.sql("SELECT idx, image_dtype, dmdb_image_values(image, image_dtype) AS v FROM targets ORDER BY idx")
    assert got["image_dtype"].to_list() == IMAGE_DTYPES
    for im, v in zip(imgs, got["v"].to_list()):
        np.testing.assert_array_equal(np.array(v, dtype=np.float64), im.astype(np.float64).ravel(), err_msg=im.dtype.str)
    with pytest.raises(BadInputError, match="image 1 must be .* of bool, integers or floats of at most 8 bytes"):
        exp.set_train_examples(images=[imgs[0], np.zeros((3, 4), np.complex64), imgs[0], imgs[0]])
    db.close()


def test_leakage_pixel_columns_same_in_sql_and_python(tmp_path):
    """The SQL macro's pixel_dist and pixel_corr equal A.leakage's (numpy) on every candidate, with
    images of several dtypes, one constant image (no correlation), one of another shape (none) and
    two all-zero images (distance 0, no correlation)."""
    rng = np.random.default_rng(9)
    n, nt = 40, 6
    db, exp = new_db(tmp_path, n_train=n, n_targets=nt, labels=False, rng=rng)
    dtypes = ["|u1", ">i2", "<f4", ">f8", "<f2", "|b1"]
    train = [(rng.normal(size=(5, 5, 3)) * 40 + 100).astype(dtypes[i % 6]) for i in range(n)]
    train[3] = np.full((5, 5, 3), 7, np.uint8)
    train[4] = np.ones((5, 5), np.float32)
    train[5] = np.zeros((5, 5, 3), np.uint8)
    target = [(train[10 + t].astype(np.float64) + rng.normal(size=(5, 5, 3))).astype(dtypes[(t + 1) % 6])
              for t in range(nt)]
    target[0] = np.zeros((5, 5, 3), ">i2")
    exp.set_train_examples(images=train)
    exp.set_targets(images=target)
    W = np.abs(sparse_random_W(rng, n, nt, 0.6))
    W[[3, 4], :] = 1.0  # every target's candidates include the constant image and the other shape
    W[5, 0] = 1.0  # and target 0's the all-zero image
    fid = insert_fit(db, "e", W, np.zeros(nt))
    py = A.leakage(db, fit=fid, min_z=-np.inf, limit=None)
    sql = db.sql("SELECT * FROM leakage_candidates(fit := ?, min_z := '-inf'::DOUBLE)", [fid])
    assert sql.height == py.height > 100
    assert sql.columns == [c for c in py.columns if c != "n_candidates"]
    for col in ("pixel_dist", "pixel_corr"):
        assert sql[col].is_null().to_list() == py[col].is_null().to_list()
        np.testing.assert_allclose(sql[col].drop_nulls().to_numpy(), py[col].drop_nulls().to_numpy(), rtol=0, atol=1e-12)
    by_pair = {(t, i): (d, c) for t, i, d, c in zip(*(sql[k].to_list() for k in ("target", "train_idx", "pixel_dist", "pixel_corr")))}
    for (t, i), (d, c) in by_pair.items():  # and both equal pixel_distance on the images as given
        want = A.pixel_distance(target[t], train[i])
        assert (d is None, c is None) == (want[0] is None, want[1] is None)
        assert d == pytest.approx(want[0], abs=1e-12) and (c is None or c == pytest.approx(want[1], abs=1e-12))
    assert by_pair[(0, 4)] == (None, None) and by_pair[(0, 3)] == (1.0, None) and by_pair[(0, 5)] == (0.0, None)
    assert by_pair[(1, 3)][1] is None and 0 < by_pair[(1, 3)][0] < 1
    off = db.sql("SELECT pixel_dist, pixel_corr FROM leakage_candidates(fit := ?, min_z := 2.0, pixels := false)", [fid])
    assert off.height and off["pixel_dist"].is_null().all() and off["pixel_corr"].is_null().all()
    with pytest.raises(DmdbError, match="pixels must be true or false, got NULL"):
        db.sql("SELECT * FROM leakage_candidates(fit := ?, pixels := NULL)", [fid])
    db.close()


def scanned_columns(db, query: str, params: list) -> dict[str, set[str]]:
    """The columns each table's scans read, from DuckDB's plan of the query."""
    def walk(node: dict) -> None:
        info = node.get("extra_info", {})
        if node["name"] == "SEQ_SCAN":
            cols = info.get("Projections", [])
            cols = [cols] if isinstance(cols, str) else cols
            out.setdefault(info["Table"].rsplit(".", 1)[-1], set()).update(c for c in cols if c)
        for child in node["children"]:
            walk(child)

    out: dict[str, set[str]] = {}
    for node in json.loads(db.con.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchall()[0][1]):
        walk(node)
    return out


def test_leakage_tells_both_images_by_image_shape_not_the_bytes(tmp_path):
    """both_images is told by image_shape, which set_examples writes with image and image_dtype: testing
    `image IS NOT NULL` read every image's bytes (dmdb_leakage_ranked took 89 ms with float32 32x32x3
    images, 32 ms with uint8). A row edited by hand to break that: shape without bytes reads as both_images
    with null pixel columns, bytes without a shape (which cannot be decoded) as no image, in SQL and
    Python alike."""
    rng = np.random.default_rng(11)
    n, nt = 30, 5
    db, exp = new_db(tmp_path, n_train=n, n_targets=nt, labels=False, rng=rng)
    exp.set_train_examples(images=rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
    exp.set_targets(images=rng.integers(0, 256, (nt, 4, 4), dtype=np.uint8))
    fid = insert_fit(db, "e", np.abs(sparse_random_W(rng, n, nt, 0.5)), np.zeros(nt))
    ranked = "SELECT * FROM dmdb_leakage_ranked(fit := ?, min_z := '-inf'::DOUBLE)"
    reads = scanned_columns(db, ranked, [fid])
    assert {"targets", "train_examples"} <= reads.keys()
    assert "image_shape" in reads["targets"] and "image" not in reads["targets"] | reads["train_examples"]
    db.con.execute("UPDATE targets SET image = NULL, image_shape = NULL, image_dtype = NULL WHERE idx = 0")  # as set_examples clears
    db.con.execute("UPDATE targets SET image = NULL WHERE idx = 1")  # by hand: the shape stays
    db.con.execute("UPDATE targets SET image_shape = NULL WHERE idx = 2")  # by hand: the bytes stay
    py = A.leakage(db, fit=fid, min_z=-np.inf, limit=None)
    sql = db.sql("SELECT * FROM leakage_candidates(fit := ?, min_z := '-inf'::DOUBLE)", [fid])
    assert set(py["target"]) == set(range(nt)) and sql.height == py.height
    for frame in (py, sql):
        assert frame["both_images"].to_list() == [t in (1, 3, 4) for t in frame["target"]]
        assert frame["pixel_dist"].is_null().to_list() == [t in (0, 1, 2) for t in frame["target"]]
    np.testing.assert_allclose(sql["pixel_dist"].drop_nulls().to_numpy(), py["pixel_dist"].drop_nulls().to_numpy(), atol=1e-12)
    db.close()


def test_has_image_is_told_by_image_shape_without_reading_the_bytes(small):
    """top_weights' and the examples frames' has_image test image_shape, as leakage's both_images does:
    `image IS NOT NULL` read every joined example's image bytes."""
    db, _, _, fid = small
    reads = scanned_columns(db, "SELECT * FROM top_weights(fit := ?, target := 0)", [fid])
    assert "image_shape" in reads["train_examples"] and "image" not in set().union(*reads.values())
    exp = db.experiment("e")
    assert exp.train_examples()["has_image"].all() and exp.targets()["has_image"].all()
    sql = db.sql("SELECT has_image FROM top_weights(fit := ?, target := 0)", [fid])
    assert sql.height > 0 and sql["has_image"].all()


def test_leakage_candidates_without_pixels_reads_no_image(small):
    """pixels := false (as a value or a parameter) leaves the image bytes unread: with the filter on the
    CTE's px column alone, the scans read every image (125-162 ms with float32 32x32x3s, 86-103 ms now)."""
    db, _, _, fid = small
    q = "SELECT * FROM leakage_candidates(fit := ?, min_z := 2.0, pixels := ?)"
    for px in (False, True):
        reads = set().union(*scanned_columns(db, q, [fid, px]).values())
        assert ("image" in reads) == px, px
    literal = scanned_columns(db, f"SELECT * FROM leakage_candidates(fit := {fid}, pixels := false)", [])
    assert "image" not in set().union(*literal.values())


# -- fits and errors -----------------------------------------------------------------------------

def test_latest_fit_is_default_and_cache_follows(tmp_path):
    rng = np.random.default_rng(2)
    db, _ = new_db(tmp_path, n_train=50, n_targets=4, rng=rng)
    with pytest.raises(DmdbError, match="no fits"):
        A.brittleness(db)
    for q in ("counterfactual_all(remove := [1])", "counterfactual_all(remove := [])", "brittleness()",
              "counterfactual(target := 0)"):  # plain SQL as loud as Python (counterfactual_all gave no rows)
        with pytest.raises(DmdbError, match="no fits in this database"):
            db.sql(f"SELECT * FROM {q}")
    W1 = sparse_random_W(rng, 50, 4, 0.5)
    f1 = insert_fit(db, "e", W1, np.zeros(4))
    assert A.load_weights(db) is A.load_weights(db, f1)  # cached
    W2 = sparse_random_W(rng, 50, 4, 0.5)
    f2 = insert_fit(db, "e", W2, np.ones(4))
    assert A.resolve_fit(db, None).fit_id == f2 > f1
    np.testing.assert_allclose(A.counterfactual_all(db, [])["base_margin"].to_numpy(), 1 + W2.sum(0), atol=1e-9)
    sql = db.sql("SELECT * FROM counterfactual_all(remove := [])")
    np.testing.assert_allclose(sql["base_margin"].to_numpy(), 1 + W2.sum(0), atol=1e-9)
    np.testing.assert_allclose(A.load_weights(db, f1).dense(), W1)
    # a later fit of another experiment becomes the latest; latest_fit('e') still names e's
    db.create_experiment("other", n_train=50, n_targets=4, alpha=0.5)
    db.create_experiment("empty", n_train=50, n_targets=4, alpha=0.5)
    f3 = insert_fit(db, "other", sparse_random_W(rng, 50, 4, 0.5), np.zeros(4))
    assert db.sql("SELECT latest_fit() AS a, latest_fit('e') AS e, latest_fit('other') AS o").row(0) == (f3, f2, f3)
    sql = db.sql("SELECT * FROM counterfactual_all(fit := latest_fit('e'), remove := [])")
    np.testing.assert_allclose(sql["base_margin"].to_numpy(), 1 + W2.sum(0), atol=1e-9)
    for arg, words in (("'nope'", "latest_fit: no experiment 'nope' (known: e, empty, other)"),
                       ("NULL", "latest_fit: no experiment NULL (known: e, empty, other)"),
                       ("'empty'", "latest_fit: experiment 'empty' has no fits yet; run `dmdb fit empty` first")):
        with pytest.raises(DmdbError, match=re.escape(words)):
            db.sql(f"SELECT * FROM top_weights(fit := latest_fit({arg}), target := 0)")
    db.close()


def test_fit_with_subset_of_targets(tmp_path):
    rng = np.random.default_rng(3)
    db, _ = new_db(tmp_path, n_train=40, n_targets=10, rng=rng)
    W = sparse_random_W(rng, 40, 3, 0.5)
    fid = insert_fit(db, "e", W, np.zeros(3), targets=np.array([2, 5, 9]))
    got = A.counterfactual_all(db, [0, 1], fit=fid)
    assert got["target"].to_list() == [2, 5, 9]
    assert A.counterfactual(db, 9, remove=[0, 1], fit=fid)["predicted_change"][0] == pytest.approx(-W[[0, 1], 2].sum())
    with pytest.raises(BadInputError, match="no target 3"):
        A.top_weights(db, 3, fit=fid)
    db.close()


def test_id_columns_have_the_tables_types(small):
    """Frames built in SQL and in numpy stack: fit_id, target and labels are Int32, as in the tables."""
    db, _, _, fid = small
    frames = [
        A.top_weights(db, 1, k=3, fit=fid), A.counterfactual(db, 1, k=3, fit=fid),
        A.counterfactual_all(db, [1, 2], fit=fid), A.brittleness(db, fit=fid), A.nearest_targets(db, 1, k=3, fit=fid),
    ]
    stacked = pl.concat([f.select("fit_id", "target") for f in frames])
    assert stacked.schema == {"fit_id": pl.Int32, "target": pl.Int32}
    near = frames[-1]
    assert near.schema["neighbor"] == pl.Int32 and near.schema["neighbor_label"] == frames[0].schema["label"]
    # and a Python frame stacks with its SQL macro's (counterfactual's removed was List(Int64) against INTEGER[])
    for frame, macro in zip(frames[1:], (f"counterfactual(fit := {fid}, target := 1, k := 3)",
                                         f"counterfactual_all(fit := {fid}, remove := [1, 2])", f"brittleness(fit := {fid})",
                                         f"nearest_targets(fit := {fid}, target := 1, k := 3)")):
        assert frame.schema == db.sql(f"SELECT * FROM {macro}").schema, macro


# -- plain DuckDB, no dmdb in the reading process -----------------------------------------------

def readme_sql_examples() -> list[str]:
    """The queries of README's 'In the DuckDB shell' block, one a line, comments cut off."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("In the DuckDB shell", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    return [line.split("--")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_sql_runs_in_plain_duckdb_read_only_and_attached(tmp_path):
    rng = np.random.default_rng(7)
    db, exp = new_db(tmp_path, rng=rng)  # 200 train examples, 30 targets: the README's ids exist
    W = sparse_random_W(rng, 200, 30, 0.2)
    bias = rng.normal(0, 0.3, 30)
    fid = insert_fit(db, "e", W, bias)
    A.embed(db, fit=fid, n_components=2, n_clusters=3)
    margins = record_retraining(exp, fid, rng)
    db.close()
    queries = readme_sql_examples()
    assert len(queries) >= 12 and any("mask_indices" in q for q in queries)
    assert any("verification(" in q for q in queries)
    expect = bias + W.sum(0) - W[[3, 17, 40]].sum(0)
    # verification's rows by numpy: target 17 without [3, 17, 40] (2 seeds), target 5 without its top 3 (1 seed)
    full = margins[:2].astype(np.float64).mean(axis=0)
    removed = [np.array([3, 17, 40]), topk(W[:, 5], 3, "top")]
    after = [margins[2:4, 17].astype(np.float64).mean(), float(margins[4, 5])]
    verified = [(t, r.size, seeds, base_of(W, bias)[t], -W[r, t].sum(), full[t], a, a - full[t])
                for t, r, seeds, a in zip((17, 5), removed, (2, 1), after)]
    path = str(tmp_path / "a.duckdb")
    with duckdb.connect(path, read_only=True) as con:
        for q in queries:
            con.sql(q).fetchall()  # every documented query runs from the macros stored in the file
        got = con.sql("SELECT predicted_margin FROM counterfactual_all(remove := [3, 17, 40])").fetchnumpy()
        np.testing.assert_allclose(got["predicted_margin"], expect, atol=1e-9)
        assert_verified(con, verified)
    with duckdb.connect() as con:  # attached: the macros find their tables once it is the current database
        con.execute(f"ATTACH '{path}' AS s (READ_ONLY)")
        con.execute("USE s")
        got = con.sql("SELECT predicted_margin FROM counterfactual_all(remove := [3, 17, 40])").fetchnumpy()
        np.testing.assert_allclose(got["predicted_margin"], expect, atol=1e-9)
        assert_verified(con, verified)


def record_retraining(exp, fid: int, rng: np.random.Generator) -> np.ndarray:
    """Counterfactual runs of fit fid, as README's 'by hand' says: 2 baseline seeds, target 17 without
    [3, 17, 40] (2 seeds), target 5 without its top 3 recorded without the list. Returns their margins."""
    infos = [run_info(fid, "baseline", [])] * 2 + [run_info(fid, "counterfactual", [3, 17, 40], 17, 3)] * 2 + [
        {"fit_id": fid, "target": 5, "k": 3, "mode": "top", "purpose": "counterfactual"}]
    masks = np.ones((5, 200), bool)
    masks[2:4, [3, 17, 40]] = False
    margins = rng.normal(size=(5, 30)).astype(np.float32)
    exp.record_batch(np.arange(5) + exp.next_run_id(), masks, margins, role="counterfactual", seeds=[0, 1, 0, 1, 0],
                     infos=infos)
    return margins


def assert_verified(con: duckdb.DuckDBPyConnection, verified: list[tuple]) -> None:
    """verification() gives these (target, n_removed, seeds, predicted_base, predicted_change, actual_base,
    actual_margin, actual_change) rows; verification_summary() counts them (too few for a correlation)."""
    rows = con.sql("SELECT target, n_removed, seeds, predicted_base, predicted_change, actual_base, actual_margin, "
                   "actual_change FROM verification()").fetchall()
    assert [r[:3] for r in rows] == [v[:3] for v in verified]
    np.testing.assert_allclose([r[3:] for r in rows], [v[3:] for v in verified], rtol=1e-9, atol=1e-9)
    summary = con.sql("SELECT counterfactuals, spearman, brittle_tested FROM verification_summary()").fetchall()
    assert summary == [(2, None, 0)]


def test_ctrl_c_while_an_analysis_reads_weights_raises_keyboard_interrupt(tmp_path: Path) -> None:
    """Ctrl-C while counterfactual_all() loaded a fit's weights reached DuckDB on the main thread:
    its RuntimeError('Query interrupted'), or no answer while a DuckDB worker held the long piece.
    Now KeyboardInterrupt, nothing cached, and the next analysis on the connection gives the answer.
    The weights come from a view that DuckDB takes hours to compute (a fit of billions of weights)."""
    from ctrl_c import ctrl_c_while_running, slowed

    rng = np.random.default_rng(5)
    db, _ = new_db(tmp_path, "study.duckdb", n_train=N, n_targets=T)
    W, bias = sparse_random_W(rng, N, T, 0.3), rng.normal(0.2, 0.4, T)
    fid = insert_fit(db, "e", W, bias)
    db.close()
    removed = [int(i) for i in rng.choice(N, 15, replace=False)]
    run = ctrl_c_while_running(
        "import dmdb\n"
        "from dmdb import analyses as A\n"
        f"db = dmdb.open({str(tmp_path / 'study.duckdb')!r})\n"
        f"db.con.execute({slowed('study', 'weights', 'weight')!r})\n"
        "try:\n"
        f"    A.counterfactual_all(db, {removed}, fit={fid})\n"
        "except BaseException as e:\n"
        "    print(type(e).__name__)\n"
        "db.con.execute('DROP VIEW weights')\n"
        f"print(*A.counterfactual_all(db, {removed}, fit={fid})['predicted_margin'].to_list())\n"
    )
    said, *margins = run.stdout.split() or [run.stderr]
    assert said == "KeyboardInterrupt", run.stderr
    np.testing.assert_allclose(np.array(margins, dtype=float), base_of(W, bias) - W[removed].sum(axis=0), atol=1e-9)
