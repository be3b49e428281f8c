"""Embeddings: each target's weight vector as a point; PCA directions and spectral clusters
(the maths in spectral.py), computed per fit and stored in embedding_runs, embedding_components,
embeddings, embedding_loadings, clusters and cluster_train (see sql/30_analyses.sql), replacing that
fit's earlier rows in one transaction.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from ..errors import BadInputError, DmdbError
from ..interrupt import execute, fetchall
from ..transaction import transaction
from .spectral import normalised_rows, pca, spectral_clusters
from .weights import load_weights, resolve_fit

if TYPE_CHECKING:
    from ..store import Database


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
            execute(con, "DELETE FROM embedding_runs WHERE fit_id = ?", [fit_id])
            for t, tbl in tables.items():  # table names come from the fixed dict above, never user text
                execute(con, f"DELETE FROM {t} WHERE fit_id = ?", [fit_id])
                con.register(names[t], tbl)
                cols = ", ".join(tbl.column_names)
                execute(con, f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {names[t]}")
            execute(
                con,
                "INSERT INTO embedding_runs (fit_id, n_components, n_clusters, seed, method, seconds) VALUES (?, ?, ?, ?, ?, ?)",
                run_row,
            )
    finally:
        for n in names.values():
            con.unregister(n)


def _require_embedded(db: "Database", fit: int | None) -> int:
    info = resolve_fit(db, fit)
    if fetchall(db.con, "SELECT count(*) FROM embedding_runs WHERE fit_id = ?", [info.fit_id])[0][0] == 0:
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
        e: dict[str, list[int] | None] = {**_ends(ends)}
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


def variance_shares(ratios: "list[float] | np.ndarray") -> str:
    """How much of the total variance each component explains, e.g. 'pc0 4.42%, pc1 4.11% of the
    variance': near-equal small shares mean the components are close to arbitrary directions."""
    parts = [f"pc{i} {100 * float(r):#.3g}%" for i, r in enumerate(ratios)]  # "#": 3.00%, not 3%
    return ", ".join(parts) + " of the variance"


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
