"""PCA and spectral clustering of weight vectors: against scikit-learn and planted groups."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from dmdb import analyses as A
from dmdb.analyses.spectral import normalised_rows, pca, spectral_clusters
from dmdb.errors import BadInputError, DmdbError

from analyses_fixtures import insert_fit, new_db, sparse_random_W

N, G, PER = 400, 4, 10
T = G * PER


def planted_W(rng):
    W = sparse_random_W(rng, N, T, 0.1, scale=0.02)
    truth = np.repeat(np.arange(G), PER)
    rng_perm = rng.permutation(T)  # groups interleaved in target order
    truth = truth[rng_perm]
    for g in range(G):
        S = rng.choice(N, 25, replace=False)
        for t in np.flatnonzero(truth == g):
            W[S, t] = (0.1 + rng.normal(0, 0.02, len(S))).astype(np.float32)
    return W, truth


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rng = np.random.default_rng(11)
    db, _ = new_db(tmp_path_factory.mktemp("emb"), n_train=N, n_targets=T, rng=rng)
    W, truth = planted_W(rng)
    fid = insert_fit(db, "e", W, np.zeros(T))
    yield db, W, truth, fid
    db.close()


def dense_normalised(W):
    n = np.linalg.norm(W, axis=0)
    return (W / np.where(n > 0, n, 1)).T


def test_pca_matches_sklearn(planted):
    db, W, _, fid = planted
    X = dense_normalised(W)
    ref = PCA(n_components=6, svd_solver="full").fit(X)
    fw = A.load_weights(db, fid)
    for method in ("exact", "randomized"):
        scores, s, load, ev, ratio, used = pca(normalised_rows(fw), 6, method=method, seed=0)
        assert used == method
        tol = 1e-9 if method == "exact" else 1e-4
        np.testing.assert_allclose(ratio, ref.explained_variance_ratio_, rtol=tol, atol=tol)
        np.testing.assert_allclose(ev, ref.explained_variance_, rtol=tol, atol=tol)
        ref_scores = ref.transform(X)
        for j in range(3):  # the well-separated leading components, up to sign
            sgn = np.sign(scores[:, j] @ ref_scores[:, j])
            np.testing.assert_allclose(scores[:, j], sgn * ref_scores[:, j], atol=10 * tol)
            np.testing.assert_allclose(np.abs(load[j]), np.abs(ref.components_[j]), atol=10 * tol)
            assert load[j][np.argmax(np.abs(load[j]))] > 0  # documented sign convention


def test_spectral_clusters_recover_planted_groups(planted):
    db, W, truth, fid = planted
    X = normalised_rows(A.load_weights(db, fid))
    for method in ("exact", "randomized"):
        labels = spectral_clusters(X, G, method=method, seed=0)
        assert adjusted_rand_score(truth, labels) == 1.0
        assert labels[0] == 0  # numbered by smallest member
    cos = dense_normalised(W) @ dense_normalised(W).T
    ref = SpectralClustering(G, affinity="precomputed", random_state=0).fit_predict((1 + cos) / 2)
    assert adjusted_rand_score(ref, spectral_clusters(X, G, seed=0)) == 1.0


def test_embed_stores_and_replaces(planted):
    db, W, truth, fid = planted
    summary = A.embed(db, fit=fid, n_components=5, n_clusters=G, n_ends=3)
    assert summary.filter(summary["kind"] == "component").height == 5
    clusters = summary.filter(summary["kind"] == "cluster")
    assert sorted(clusters["n_targets"].to_list()) == [PER] * G
    stored = db.sql("SELECT target, cluster FROM clusters WHERE fit_id = ? ORDER BY target", [fid])
    assert adjusted_rand_score(truth, stored["cluster"].to_numpy()) == 1.0
    # a cluster's top train examples are its planted shared examples
    for row in clusters.iter_rows(named=True):
        members = np.array(row["targets_high"])
        g = truth[members[0]]
        assert (truth[members] == g).all()
        shared = np.flatnonzero((W[:, truth == g] > 0.05).all(axis=1))
        assert set(row["train_high"]) <= set(shared.tolist())
    # stored scores equal a fresh computation, and the ends macro agrees with them
    wide = A.target_embeddings(db, fit=fid)
    assert wide.columns[:4] == ["fit_id", "target", "cluster", "centrality"] and wide.height == T
    ref = PCA(n_components=5, svd_solver="full").fit_transform(dense_normalised(W))
    sgn = np.sign(wide["pc0"].to_numpy() @ ref[:, 0])
    np.testing.assert_allclose(wide["pc0"].to_numpy(), sgn * ref[:, 0], atol=1e-9)
    ends = db.sql("SELECT * FROM component_ends(fit := ?, component := 0, k := 3)", [fid])
    hi = ends.filter((ends["kind"] == "target") & (ends["end"] == "high"))["idx"].to_list()
    assert hi == wide.sort(["pc0", "target"], descending=[True, False])["target"].to_list()[:3]
    cent = wide["centrality"].to_numpy()
    assert np.all(cent > 0) and np.all(cent <= 1 + 1e-12)
    # recomputing replaces the fit's rows
    A.embed(db, fit=fid, n_components=2, n_clusters=2)
    counts = db.sql(
        "SELECT (SELECT count(*) FROM embedding_components WHERE fit_id = $1) AS c, "
        "(SELECT count(*) FROM embeddings WHERE fit_id = $1) AS e, "
        "(SELECT count(*) FROM embedding_loadings WHERE fit_id = $1) AS l, "
        "(SELECT count(DISTINCT cluster) FROM clusters WHERE fit_id = $1) AS k, "
        "(SELECT count(*) FROM embedding_runs WHERE fit_id = $1) AS r",
        [fid],
    ).row(0)
    assert counts == (2, 2 * T, 2 * N, 2, 1)


def test_embed_errors(planted, tmp_path):
    db, _, _, fid = planted
    with pytest.raises(BadInputError, match="n_clusters"):
        A.embed(db, fit=fid, n_clusters=T + 1)
    with pytest.raises(BadInputError, match="n_components"):
        A.embed(db, fit=fid, n_components=0)
    rng = np.random.default_rng(0)
    db2, _ = new_db(tmp_path, n_train=20, n_targets=3, rng=rng)
    f2 = insert_fit(db2, "e", sparse_random_W(rng, 20, 3, 0.5), np.zeros(3))
    with pytest.raises(DmdbError, match="no stored embeddings"):
        A.embedding_summary(db2, fit=f2)
    # plain SQL as loud as Python: these returned no rows before any embed, or for a missing component
    for q in ("component_ends()", "cluster_ends(cluster := 0)"):
        with pytest.raises(DmdbError, match=f"fit {f2} has no stored embeddings yet; run `dmdb embed --fit {f2}`"):
            db2.sql(f"SELECT * FROM {q}")
    A.embed(db2, fit=f2, n_components=2, n_clusters=2)
    with pytest.raises(DmdbError, match=f"component_ends: fit {f2} has no component 2 \\(stored: 0..1\\)"):
        db2.sql("SELECT * FROM component_ends(component := 2)")
    with pytest.raises(DmdbError, match=f"cluster_ends: fit {f2} has no cluster 5 \\(stored: 0..1\\)"):
        db2.sql("SELECT * FROM cluster_ends(cluster := 5)")
    assert db2.sql("SELECT count(*) AS n FROM component_ends(component := 1, k := 1)")["n"][0] == 4
    assert db2.sql("SELECT count(*) AS n FROM cluster_ends(cluster := 1, k := 1) WHERE kind = 'target'")["n"][0] == 1
    f3 = insert_fit(db2, "e", sparse_random_W(rng, 20, 3, 0.5), np.zeros(3))  # latest, not embedded
    with pytest.raises(DmdbError, match=f"fit {f3} has no stored embeddings"):
        db2.sql("SELECT * FROM component_ends()")
    db2.close()


def test_auto_pca_of_a_mid_sized_fit_is_randomized_and_matches_the_exact_svd():
    """A 2-component PCA of 300 x 600 was a full dense SVD (seconds at the demo's 797 x 1000); auto now
    takes the seeded randomized SVD, reproducibly, and it agrees with the exact one."""
    rng = np.random.default_rng(5)
    Tm, Nm = 300, 600
    dirs = np.linalg.qr(rng.standard_normal((Nm, 3)))[0].T  # three planted directions, clear gaps
    Xd = (rng.standard_normal((Tm, 3)) * [3.0, 2.0, 1.5]) @ dirs + 0.02 * rng.standard_normal((Tm, Nm))
    X = sp.csr_matrix(Xd / np.linalg.norm(Xd, axis=1, keepdims=True))
    ref = PCA(n_components=2, svd_solver="full").fit(X.toarray())
    scores, s, load, ev, ratio, used = pca(X, 2, seed=0)
    assert used == "randomized"
    np.testing.assert_allclose(ratio, ref.explained_variance_ratio_, rtol=1e-8)
    ref_scores = ref.transform(X.toarray())
    for j in range(2):
        sgn = np.sign(scores[:, j] @ ref_scores[:, j])
        np.testing.assert_allclose(scores[:, j], sgn * ref_scores[:, j], atol=1e-8)
    again = pca(X, 2, seed=0)
    assert np.array_equal(again[0], scores) and np.array_equal(again[2], load)  # same seed, same numbers
    assert pca(X, 70, seed=0)[5] == "exact"  # 82 random vectors of 300: the dense SVD is as cheap
    assert pca(X[:20, :30].tocsr(), 2, seed=0)[5] == "exact"  # tiny
    assert spectral_clusters(X, 3, seed=0).max() == 2


def test_variance_shares_keep_three_digits() -> None:
    """2.9997% read '3%' beside '4.29%' (the TUI's embeddings title): trailing zeros are kept."""
    from dmdb.analyses import variance_shares

    assert variance_shares([0.029997, 0.04291, 0.5]) == "pc0 3.00%, pc1 4.29%, pc2 50.0% of the variance"
