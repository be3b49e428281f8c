"""Embeddings: each target's weight vector as a point; PCA directions and spectral clusters.

Both work on X, the (targets x train) matrix of L2-normalised weight vectors (a target with no
nonzero weights stays the zero vector), and never form a dense targets x targets matrix:

* PCA: centred over targets. Components are unit vectors in train-example space (loadings; sign
  fixed so that the largest |loading| is positive); a target's value on a component is its
  projection (score). explained_variance = s^2 / (T - 1); the ratio is over the total variance of X.
* Spectral clustering (Ng, Jordan & Weiss) with affinity A = (1 + cos) / 2, which is >= 0 and
  equals 1/2 (1 1^T + X X^T): a low-rank product, so the normalised affinity D^-1/2 A D^-1/2 has
  the left singular vectors of D^-1/2 [1, X] / sqrt(2) as eigenvectors. Its top n_clusters
  eigenvectors, rows normalised, go to k-means (scikit-learn, seeded). Clusters are numbered by
  their smallest target id, so results do not depend on k-means' label order.

Small problems (targets x train x min of the two <= 1e9) use an exact dense SVD; larger ones a seeded
randomized SVD with power iterations (Halko, Martinsson & Tropp) over sparse products.
Results are stored per fit in embedding_runs, embedding_components, embeddings, embedding_loadings,
clusters and cluster_train (see sql/30_analyses.sql), replacing that fit's earlier rows in one
transaction.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from ..errors import BadInputError, DmdbError
from ..transaction import transaction
from .weights import FitWeights, load_weights, resolve_fit

if TYPE_CHECKING:
    from ..store import Database

EXACT_MAX_WORK = 1_000_000_000  # m * n * min(m, n) of a dense SVD


@dataclass
class _Op:
    """A linear operator of shape (m, n) given by its products with blocks of vectors."""

    shape: tuple[int, int]
    matmat: Callable[[np.ndarray], np.ndarray]  # (n, r) -> (m, r)
    rmatmat: Callable[[np.ndarray], np.ndarray]  # (m, r) -> (n, r)
    dense: Callable[[], np.ndarray]


def _svd(op: _Op, r: int, method: str, seed: int, n_iter: int = 8,
         oversample: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-r singular triplets (U, s, Vt) of op, exactly or randomized."""
    m, n = op.shape
    if method == "exact":
        U, s, Vt = np.linalg.svd(op.dense(), full_matrices=False)
        return U[:, :r], s[:r], Vt[:r]
    rng = np.random.default_rng(seed)
    ell = min(r + oversample, m, n)
    Q, _ = np.linalg.qr(op.matmat(rng.standard_normal((n, ell))))
    for _ in range(n_iter):
        Q2, _ = np.linalg.qr(op.rmatmat(Q))
        Q, _ = np.linalg.qr(op.matmat(Q2))
    B = op.rmatmat(Q).T  # (ell, n) = Q^T A
    Ub, s, Vt = np.linalg.svd(B, full_matrices=False)
    return (Q @ Ub)[:, :r], s[:r], Vt[:r]


def normalised_rows(fw: FitWeights) -> sp.csr_matrix:
    """(targets x train) with each target's weight vector scaled to unit L2 norm."""
    X = fw.csc.T.tocsr()  # csc of (train x T) transposed is csr of (T x train)
    norms = fw.norms
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.diags(inv) @ X


def pca(X: sp.csr_matrix, n_components: int, *, method: str = "auto",
        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """PCA of the rows of X (centred). Returns (scores T x c, singular values, loadings c x N,
    explained_variance, explained_variance_ratio, method used)."""
    T, N = X.shape
    method = _method(method, T, N)
    mu = np.asarray(X.mean(axis=0)).ravel()
    ones = np.ones(T)
    XT = X.T.tocsr()  # row-major both ways: scipy's transposed products are slower
    op = _Op(
        (T, N),
        lambda V: X @ V - np.outer(ones, mu @ V),
        lambda U: XT @ U - np.outer(mu, ones @ U),
        lambda: X.toarray() - mu,
    )
    U, s, Vt = _svd(op, n_components, method, seed)
    # sign: the largest |loading| of each component is positive
    flip = np.sign(Vt[np.arange(len(s)), np.argmax(np.abs(Vt), axis=1)])
    flip[flip == 0] = 1
    U, Vt = U * flip, Vt * flip[:, None]
    total = float(X.multiply(X).sum() - T * (mu @ mu))
    ev = s**2 / max(T - 1, 1)
    ratio = s**2 / total if total > 0 else np.zeros_like(s)
    return U * s, s, Vt, ev, ratio, method


def spectral_clusters(X: sp.csr_matrix, n_clusters: int, *, method: str = "auto", seed: int = 0) -> np.ndarray:
    """Cluster the rows of X (unit or zero vectors) with affinity (1 + cos) / 2; labels 0..n-1."""
    from sklearn.cluster import KMeans

    T, N = X.shape
    method = _method(method, T, N + 1)
    colsum = np.asarray(X.sum(axis=0)).ravel()
    d = 0.5 * (T + X @ colsum)  # row sums of A, diagonal included; >= 1/2 since A >= 0 and A_ii >= 1/2
    s = 1.0 / np.sqrt(d)
    h = np.sqrt(0.5)
    XT = X.T.tocsr()

    def matmat(V: np.ndarray) -> np.ndarray:
        return (s * h)[:, None] * (np.outer(np.ones(T), V[0]) + X @ V[1:])

    def rmatmat(U: np.ndarray) -> np.ndarray:
        SU = (s * h)[:, None] * U
        return np.vstack([SU.sum(axis=0)[None, :], XT @ SU])

    def dense() -> np.ndarray:
        return (s * h)[:, None] * np.hstack([np.ones((T, 1)), X.toarray()])

    U, _, _ = _svd(_Op((T, N + 1), matmat, rmatmat, dense), n_clusters, method, seed)
    rn = np.linalg.norm(U, axis=1, keepdims=True)
    E = np.divide(U, rn, out=np.zeros_like(U), where=rn > 0)
    raw = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(E)
    # renumber by each cluster's smallest member
    first = {c: np.flatnonzero(raw == c)[0] for c in np.unique(raw)}
    order = sorted(first, key=first.get)
    remap = np.empty(raw.max() + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[raw]


def _method(method: str, m: int, n: int) -> str:
    if method not in ("auto", "exact", "randomized"):
        raise BadInputError(f"method must be auto, exact or randomized, got {method!r}")
    if method == "auto":
        return "exact" if m * n * min(m, n) <= EXACT_MAX_WORK else "randomized"
    return method


def embed(
    db: "Database",
    *,
    fit: int | None = None,
    n_components: int = 10,
    n_clusters: int = 8,
    seed: int = 0,
    method: str = "auto",
    n_ends: int = 5,
) -> pl.DataFrame:
    """Compute PCA and spectral clusters of a fit's targets, store them (replacing that fit's earlier
    results in one transaction) and return `embedding_summary`."""
    db.require_writable()
    fw = load_weights(db, fit)
    T, N = fw.n_targets, fw.n_train
    if not 1 <= n_components <= min(T, N):
        raise BadInputError(f"n_components must be in 1..{min(T, N)} (targets, train examples), got {n_components}")
    if not 1 <= n_clusters <= T:
        raise BadInputError(f"n_clusters must be in 1..{T} (the fit's targets), got {n_clusters}")
    if not 0 <= seed < 2**32:
        raise BadInputError(f"seed must be in 0..2**32-1, got {seed}")
    t0 = time.perf_counter()
    X = normalised_rows(fw)
    scores, sv, loadings, ev, ratio, used = pca(X, n_components, method=method, seed=seed)
    labels = spectral_clusters(X, n_clusters, method=method, seed=seed) if n_clusters > 1 else np.zeros(T, np.int64)
    C = int(labels.max()) + 1
    member = sp.csr_matrix((np.ones(T), (labels, np.arange(T))), shape=(C, T))
    sizes = np.asarray(member.sum(axis=1)).ravel()
    centroid = sp.diags(1.0 / sizes) @ (member @ X)  # (C x N) mean normalised weight
    cnorm = np.sqrt(np.asarray(centroid.multiply(centroid).sum(axis=1)).ravel())
    proj = (X @ centroid.toarray().T)[np.arange(T), labels]  # (T x C) dense: C is small
    centrality = np.divide(proj, cnorm[labels], out=np.full(T, np.nan), where=cnorm[labels] > 0)
    seconds = time.perf_counter() - t0
    cen = centroid.tocoo()
    ncomp = len(sv)
    tables = {
        "embedding_components": pa.table({
            "fit_id": pa.array(np.full(ncomp, fw.fit_id, np.int32)),
            "component": pa.array(np.arange(ncomp, dtype=np.int32)),
            "singular_value": pa.array(sv), "explained_variance": pa.array(ev),
            "explained_variance_ratio": pa.array(ratio),
        }),
        "embeddings": pa.table({
            "fit_id": pa.array(np.full(T * ncomp, fw.fit_id, np.int32)),
            "target": pa.array(np.repeat(fw.targets, ncomp).astype(np.int32)),
            "component": pa.array(np.tile(np.arange(ncomp, dtype=np.int32), T)),
            "value": pa.array(scores.ravel()),
        }),
        "embedding_loadings": pa.table({
            "fit_id": pa.array(np.full(N * ncomp, fw.fit_id, np.int32)),
            "component": pa.array(np.repeat(np.arange(ncomp, dtype=np.int32), N)),
            "train_idx": pa.array(np.tile(np.arange(N, dtype=np.int32), ncomp)),
            "loading": pa.array(loadings.ravel()),
        }),
        "clusters": pa.table({
            "fit_id": pa.array(np.full(T, fw.fit_id, np.int32)),
            "target": pa.array(fw.targets.astype(np.int32)),
            "cluster": pa.array(labels.astype(np.int32)),
            "centrality": pa.array(centrality, from_pandas=True),
        }),
        "cluster_train": pa.table({
            "fit_id": pa.array(np.full(cen.nnz, fw.fit_id, np.int32)),
            "cluster": pa.array(cen.row.astype(np.int32)),
            "train_idx": pa.array(cen.col.astype(np.int32)),
            "mean_weight": pa.array(cen.data.astype(np.float64)),
        }),
    }
    _store(db, fw.fit_id, tables, [fw.fit_id, ncomp, C, int(seed), used, seconds])
    return embedding_summary(db, fit=fw.fit_id, n_ends=n_ends)


def _store(db: "Database", fit_id: int, tables: dict[str, pa.Table], run_row: list[object]) -> None:
    con = db.con
    names = {t: f"_dmdb_{t}_{uuid.uuid4().hex}" for t in tables}
    try:
        with transaction(con):
            con.execute("DELETE FROM embedding_runs WHERE fit_id = ?", [fit_id])
            for t, tbl in tables.items():  # table names come from the fixed dict above, never user text
                con.execute(f"DELETE FROM {t} WHERE fit_id = ?", [fit_id])
                con.register(names[t], tbl)
                cols = ", ".join(tbl.column_names)
                con.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {names[t]}")
            con.execute(
                "INSERT INTO embedding_runs (fit_id, n_components, n_clusters, seed, method, seconds) VALUES (?, ?, ?, ?, ?, ?)",
                run_row,
            )
    finally:
        for n in names.values():
            con.unregister(n)


def _require_embedded(db: "Database", fit: int | None) -> int:
    info = resolve_fit(db, fit)
    if db.con.execute("SELECT count(*) FROM embedding_runs WHERE fit_id = ?", [info.fit_id]).fetchall()[0][0] == 0:
        raise DmdbError(f"fit {info.fit_id} has no stored embeddings yet; run `dmdb embed --fit {info.fit_id}` first")
    return info.fit_id


def embedding_summary(db: "Database", *, fit: int | None = None, n_ends: int = 5) -> pl.DataFrame:
    """One row per PCA component and per cluster, from the stored tables.

    Columns: fit_id, kind ('component' | 'cluster'), id, explained_variance_ratio (components),
    n_targets (clusters), targets_high, targets_low (component: highest/lowest scores; cluster:
    most central members, low is null), train_high, train_low (component: highest/lowest loadings;
    cluster: largest positive/most negative mean weight). The last four are lists of ids.
    """
    fid = _require_embedded(db, fit)
    comps = db.sql(
        "SELECT component, explained_variance_ratio FROM embedding_components WHERE fit_id = ? ORDER BY component", [fid]
    )
    rows = []
    for comp, evr in comps.iter_rows():
        ends = db.sql("SELECT * FROM component_ends(fit := ?, component := ?, k := ?)", [fid, comp, n_ends])
        rows.append(dict(kind="component", id=comp, explained_variance_ratio=evr, n_targets=None, **_ends(ends)))
    sizes = db.sql("SELECT cluster, n_targets FROM cluster_sizes WHERE fit_id = ? ORDER BY cluster", [fid])
    for cl, n in sizes.iter_rows():
        ends = db.sql("SELECT * FROM cluster_ends(fit := ?, cluster := ?, k := ?)", [fid, cl, n_ends])
        e = _ends(ends)
        e["targets_high"] = ends.filter(pl.col("kind") == "target")["idx"].to_list()
        e["targets_low"] = None
        rows.append(dict(kind="cluster", id=cl, explained_variance_ratio=None, n_targets=n, **e))
    lst = pl.List(pl.Int64)
    return pl.DataFrame(
        [{"fit_id": fid, **r} for r in rows],
        schema={"fit_id": pl.Int32, "kind": pl.Utf8, "id": pl.Int64, "explained_variance_ratio": pl.Float64,
                "n_targets": pl.Int64, "targets_high": lst, "targets_low": lst, "train_high": lst, "train_low": lst},
        orient="row",
    ) if rows else pl.DataFrame()


def _ends(ends: pl.DataFrame) -> dict[str, list[int]]:
    def pick(kind: str, end: str) -> list[int]:
        return ends.filter((pl.col("kind") == kind) & (pl.col("end") == end)).sort("rank")["idx"].to_list()

    return {"targets_high": pick("target", "high"), "targets_low": pick("target", "low"),
            "train_high": pick("train", "high"), "train_low": pick("train", "low")}


def target_embeddings(db: "Database", *, fit: int | None = None) -> pl.DataFrame:
    """Stored per-target results, wide: fit_id, target, cluster, centrality, pc0, pc1, ..."""
    fid = _require_embedded(db, fit)
    long = db.sql("SELECT target, component, value FROM embeddings WHERE fit_id = ?", [fid])
    wide = long.pivot(on="component", index="target", values="value").sort("target")
    wide = wide.rename({c: f"pc{c}" for c in wide.columns if c != "target"})
    cl = db.sql("SELECT target, cluster, centrality FROM clusters WHERE fit_id = ?", [fid])
    out = cl.join(wide, on="target", how="full", coalesce=True).sort("target")
    pcs = sorted((c for c in out.columns if c.startswith("pc")), key=lambda c: int(c[2:]))
    return out.select(pl.lit(fid, pl.Int32).alias("fit_id"), "target", "cluster", "centrality", *pcs)
