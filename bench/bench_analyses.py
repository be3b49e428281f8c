"""Benchmark the analyses on a synthetic fit (default 10,000 targets x 50,000 train, ~2% dense).

    .venv/bin/python bench/bench_analyses.py [--targets 10000] [--train 50000] [--density 0.02]
    .venv/bin/python bench/bench_analyses.py --leakage-only [--leak-targets 300] [--leak-train 2000] [--leak-dtype uint8]

Times, each against a named baseline measured in the same run, printing the ratio:
  (a) nearest targets of one target: dmdb (cached sparse matrix) vs dense numpy (W.T @ w with
      column norms over a dense float32 matrix built beforehand, its build not timed) and vs the
      SQL macro nearest_targets;
  (b) counterfactual of one 500-example removal set over all targets: dmdb vs the pure-SQL
      join/aggregate (the counterfactual_all macro) and vs dense numpy (W[R].sum(0)).
Also reported: the one-off load of the fit into the sparse cache, brittleness (numpy vs SQL
macro), leakage candidates (no images) and embed (PCA + spectral clustering, stored).
  (c) leakage candidates with 32x32x3 images (CIFAR-like, uint8 or --leak-dtype; a store of its own, one planted
      near-duplicate a target): the SQL macro leakage_candidates with pixels := true against
      pixels := false and against dmdb.analyses.leakage (pixel columns in numpy), all candidates.
  (d) --verification FILE: on a file with recorded counterfactual runs (`dmdb demo --quick`'s), the SQL
      macros verification and verification_summary against dmdb.analyses.verification, with the fit's
      weights cached and with the cache cleared first, for each fit of the latest fit's experiment on the
      runs of the latest fit that planned some; the four calls take turns, round after round.

    .venv/bin/python bench/bench_analyses.py --verification demo.duckdb
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pyarrow as pa

import dmdb
from dmdb import analyses as A

R = TypeVar("R")


def timed(fn: Callable[[], R], repeat: int = 5) -> tuple[float, R]:
    ts, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def build(db: dmdb.Database, n_train: int, n_targets: int, density: float, seed: int = 0) -> tuple[int, int]:
    """Insert a synthetic fit chunk by chunk through Arrow: Laplace weights on ~density of pairs."""
    rng = np.random.default_rng(seed)
    db.create_experiment("bench", n_train=n_train, n_targets=n_targets, alpha=0.5)
    con = db.con
    fit_id = con.execute("INSERT INTO fits (experiment, estimator) VALUES ('bench', 'synthetic') RETURNING fit_id").fetchall()[0][0]
    nnz = np.zeros(n_targets, dtype=np.int64)
    chunk = max(1, 20_000_000 // n_train)
    for lo in range(0, n_targets, chunk):
        hi = min(n_targets, lo + chunk)
        t, i = np.nonzero(rng.random((hi - lo, n_train), dtype=np.float32) < density)
        w = rng.laplace(0, 0.01, len(t)).astype(np.float32)
        nnz[lo:hi] = np.bincount(t, minlength=hi - lo)
        tbl = pa.table({"target": (t + lo).astype(np.int32), "train_idx": i.astype(np.int32), "weight": w})
        con.register("_chunk", tbl)
        con.execute("INSERT INTO weights SELECT ?, target, train_idx, weight FROM _chunk", [fit_id])
        con.unregister("_chunk")
    ft = pa.table({
        "target": np.arange(n_targets, dtype=np.int32),
        "bias": rng.normal(0.5, 0.5, n_targets),
        "nnz": nnz.astype(np.int32),
    })
    con.register("_ft", ft)
    con.execute("INSERT INTO fit_targets (fit_id, target, bias, nnz) SELECT ?, target, bias, nnz FROM _ft", [fit_id])
    con.unregister("_ft")
    return int(fit_id), int(nnz.sum())


def build_images(db: dmdb.Database, n_train: int, n_targets: int, dtype: str, seed: int = 0) -> int:
    """A fit over random 32x32x3 images (uint8, or a float dtype's 0..1), each target a noisy copy of one
    train image whose weight stands out."""
    rng = np.random.default_rng(seed)
    exp = db.create_experiment("leak", n_train=n_train, n_targets=n_targets, alpha=0.5)
    train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    source = rng.integers(0, n_train, n_targets)
    noise = rng.integers(-3, 4, (n_targets, 32, 32, 3))
    target = np.clip(train[source] + noise, 0, 255).astype(np.uint8)
    scale = 1 if np.dtype(dtype) == np.uint8 else 255
    exp.set_train_examples(labels=np.zeros(n_train, int), images=(train / scale).astype(dtype))
    exp.set_targets(labels=np.zeros(n_targets, int), images=(target / scale).astype(dtype))
    con = db.con
    fit_id = con.execute("INSERT INTO fits (experiment, estimator) VALUES ('leak', 'synthetic') RETURNING fit_id").fetchall()[0][0]
    t, i = np.nonzero(rng.random((n_targets, n_train)) < 0.05)
    w = rng.laplace(0, 0.01, len(t))
    w[np.searchsorted(t, np.arange(n_targets))] = 0.5  # each target's first nonzero: the planted near-duplicate
    i[np.searchsorted(t, np.arange(n_targets))] = source
    keep = np.unique(np.stack([t, i], 1), axis=0, return_index=True)[1]
    tbl = pa.table({"target": t[keep].astype(np.int32), "train_idx": i[keep].astype(np.int32), "weight": w[keep].astype(np.float32)})
    con.register("_leak", tbl)
    con.execute("INSERT INTO weights SELECT ?, target, train_idx, weight FROM _leak", [fit_id])
    con.unregister("_leak")
    nnz = np.bincount(t[keep], minlength=n_targets)
    con.executemany("INSERT INTO fit_targets (fit_id, target, bias, nnz) VALUES (?, ?, 0.0, ?)",
                    [[fit_id, k, int(n)] for k, n in enumerate(nnz)])
    return int(fit_id)


def bench_leakage_pixels(tmp: Path, n_train: int, n_targets: int, dtype: str) -> None:
    db = dmdb.open(tmp / "leak.duckdb")
    fid = build_images(db, n_train, n_targets, dtype)
    q = "SELECT * FROM leakage_candidates(fit := ?, pixels := ?)"
    t_off, off = timed(lambda: db.sql(q, [fid, False]), 3)
    t_on, on = timed(lambda: db.sql(q, [fid, True]), 3)
    t_py, py = timed(lambda: A.leakage(db, fit=fid, limit=None), 3)
    assert on["pixel_dist"].is_not_null().all() and on.height == py.height == off.height
    for col in ("pixel_dist", "pixel_corr"):
        np.testing.assert_allclose(on[col].to_numpy(), py[col].to_numpy(), rtol=0, atol=1e-12)
    print(f"\n(c) leakage candidates with 32x32x3 {dtype} images: {n_targets} targets x {n_train} train, "
          f"{on.height} candidates, median of 3")
    row("SQL macro, pixels := false", t_off)
    row("dmdb.analyses.leakage (pixels in numpy)", t_py)
    row("SQL macro, pixels := true", t_on)
    print(f"  {'':<44s} {'':>12s}   {t_on / t_off:7.1f}x the time without pixels, {t_on / t_py:.1f}x numpy's")
    db.close()


def bench_verification(path: Path, rounds: int = 9) -> None:
    """Each call once a round, in turn, so that the other sessions' load weighs on all four alike."""
    with dmdb.open(path, read_only=True) as db:
        fits = db.fits()
        experiment = fits.filter(fits["fit_id"] == fits["fit_id"].max())["experiment"].item()
        planner = A.planning_fits(db, experiment)[-1]
        for fid in fits.filter(fits["experiment"] == experiment)["fit_id"].to_list():
            args = [fid, planner]
            calls: dict[str, Callable[[], object]] = {
                "dmdb.analyses.verification (cached)": lambda: A.verification(db, fid, runs_of=planner),
                "dmdb.analyses.verification (cache cleared)":
                    lambda: (A.clear_cache(), A.verification(db, fid, runs_of=planner)),
                "SQL macro verification": lambda: db.sql("SELECT * FROM verification(fit := ?, runs_of := ?)", args),
                "SQL macro verification_summary":
                    lambda: db.sql("SELECT * FROM verification_summary(fit := ?, runs_of := ?)", args),
            }
            times: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(rounds):
                for name, call in calls.items():
                    times[name].append(timed(call, 1)[0])
            v = A.verification(db, fid, runs_of=planner)
            rows = db.sql("SELECT * FROM verification(fit := ?, runs_of := ?)", args)
            for c in ("predicted_change", "actual_change"):
                np.testing.assert_allclose(rows[c].to_numpy(), v.rows[c].to_numpy(), rtol=0, atol=1e-12)
            print(f"\n(d) verification of fit {fid} on the {v.rows.height} removals fit {planner} planned, "
                  f"median of {rounds} interleaved rounds")
            med = {name: statistics.median(ts) for name, ts in times.items()}
            for name, t in med.items():
                row(name, t)
            py, sql = med["dmdb.analyses.verification (cached)"], med["SQL macro verification"]
            print(f"  {'':<44s} {'':>12s}   the macro {sql / py:.1f}x Python's time (cached), "
                  f"{sql / med['dmdb.analyses.verification (cache cleared)']:.1f}x (cache cleared)")


def row(name: str, t: float, base: float | None = None, base_name: str = "") -> None:
    ratio = f"   {base / t:7.1f}x faster than {base_name}" if base else ""
    print(f"  {name:<44s} {t * 1000:9.1f} ms{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=10_000)
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--remove", type=int, default=500)
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--skip-dense", action="store_true", help="skip the dense numpy baselines (4 bytes x train x targets)")
    ap.add_argument("--leak-targets", type=int, default=300)
    ap.add_argument("--leak-train", type=int, default=2000)
    ap.add_argument("--leak-dtype", default="uint8", help="the images' numpy dtype in (c), e.g. float32")
    ap.add_argument("--leakage-only", action="store_true", help="only (c), leakage candidates with images")
    ap.add_argument("--verification", type=Path, metavar="FILE",
                    help="only (d), verification on this file's recorded counterfactual runs")
    args = ap.parse_args()

    if args.verification:
        bench_verification(args.verification)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.leakage_only:
            bench_leakage_pixels(Path(tmp), args.leak_train, args.leak_targets, args.leak_dtype)
            return
        db = dmdb.open(Path(tmp) / "bench.duckdb")
        t0 = time.perf_counter()
        fid, nnz = build(db, args.train, args.targets, args.density)
        print(f"synthetic fit: {args.targets} targets x {args.train} train, {nnz:,} weight rows "
              f"({nnz / args.targets / args.train:.2%} dense), built in {time.perf_counter() - t0:.1f} s")

        A.clear_cache()
        t_load, fw = timed(lambda: (A.clear_cache(), A.load_weights(db, fid))[1], repeat=1)
        t_first = timed(lambda: fw.csc.shape and fw.norms.shape and fw.base_margin.shape, repeat=1)[0]
        print(f"one-off: load weights into the sparse cache {t_load:.2f} s, derived csc/norms/base {t_first:.2f} s")

        dense = None
        if not args.skip_dense:
            t0 = time.perf_counter()
            dense = fw.csr.astype(np.float32).toarray()
            print(f"dense baseline matrix built in {time.perf_counter() - t0:.1f} s (not timed below)")

        rng = np.random.default_rng(1)
        queries = rng.choice(args.targets, 5, replace=False)
        print("\n(a) nearest targets of one target (k=10), median over 5 targets")
        t_ours = statistics.median(timed(lambda q=q: A.nearest_targets(db, int(q), fit=fid), 3)[0] for q in queries)
        t_sql = statistics.median(
            timed(lambda q=q: db.sql("SELECT * FROM nearest_targets(fit := ?, target := ?, k := 10)", [fid, int(q)]), 3)[0]
            for q in queries
        )
        ours = A.nearest_targets(db, int(queries[0]), fit=fid)
        sql = db.sql("SELECT * FROM nearest_targets(fit := ?, target := ?, k := 10)", [fid, int(queries[0])])
        assert ours["neighbor"].to_list() == sql["neighbor"].to_list()
        if dense is not None:
            def dense_nn(q: int) -> np.ndarray:
                w = dense[:, q]
                cos = (dense.T @ w) / (np.linalg.norm(dense, axis=0) * np.linalg.norm(w) + 1e-30)
                cos[q] = -np.inf
                return np.argsort(-cos, kind="stable")[:10]

            t_dense = statistics.median(timed(lambda q=q: dense_nn(int(q)), 3)[0] for q in queries)
            assert dense_nn(int(queries[0])).tolist() == ours["neighbor"].to_list()
            row("baseline: dense numpy", t_dense)
        row("baseline: SQL macro nearest_targets", t_sql)
        row("dmdb.analyses.nearest_targets (cached)", t_ours, t_sql, "SQL")
        if dense is not None:
            print(f"  {'':<44s} {'':>12s}   {t_dense / t_ours:7.1f}x faster than dense numpy")

        print(f"\n(b) counterfactual of one removal set ({args.remove} examples) over all {args.targets} targets")
        R = rng.choice(args.train, args.remove, replace=False)
        t_ours, ours = timed(lambda: A.counterfactual_all(db, R, fit=fid), 5)
        t_sql, sql = timed(lambda: db.sql("SELECT * FROM counterfactual_all(fit := ?, remove := ?)", [fid, R.tolist()]), 5)
        np.testing.assert_allclose(ours["predicted_margin"].to_numpy(), sql["predicted_margin"].to_numpy(), atol=1e-6)
        row("baseline: pure-SQL join/aggregate (macro)", t_sql)
        if dense is not None:
            t_dense, dch = timed(lambda: -dense[R].sum(axis=0, dtype=np.float64), 5)
            np.testing.assert_allclose(dch, ours["predicted_change"].to_numpy(), atol=1e-5)
            row("baseline: dense numpy W[R].sum(0)", t_dense)
        row("dmdb.analyses.counterfactual_all (cached)", t_ours, t_sql, "SQL")
        if dense is not None:
            print(f"  {'':<44s} {'':>12s}   {t_dense / t_ours:7.1f}x faster than dense numpy")
        dense = None  # free it before the analyses below

        print("\nother analyses (one run each)")
        t_b, br = timed(lambda: A.brittleness(db, fit=fid), 1)
        t_bs, brs = timed(lambda: db.sql("SELECT * FROM brittleness(fit := ?)", [fid]), 1)
        assert br["support"].to_list() == brs["support"].to_list()
        row("baseline: SQL macro brittleness", t_bs)
        row("dmdb.analyses.brittleness", t_b, t_bs, "SQL")
        t_l, lk = timed(lambda: A.leakage(db, fit=fid), 1)
        row(f"dmdb.analyses.leakage ({lk.height:,} candidates)", t_l)
        if not args.skip_embed:
            t_e, _ = timed(lambda: A.embed(db, fit=fid, n_components=10, n_clusters=8), 1)
            row("embed: PCA(10) + spectral(8), stored", t_e)
        db.close()
        bench_leakage_pixels(Path(tmp), args.leak_train, args.leak_targets, args.leak_dtype)


if __name__ == "__main__":
    main()
