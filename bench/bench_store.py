"""Store benchmarks, each a ratio against the reference store (.npy files) measured in the same run.

1. Recording R runs x N train examples x T targets with record_batch (from creating the file to
   closing it) vs writing the same arrays into .npy memmaps.            Aim (issue 2): <= 3x.
2. Reading masks and margins back to numpy vs np.load of the same two .npy files. Aim: <= 2x.
   Printed twice: cold (dmdb.open + read + close, as np.load opens its files too) and warm (on a
   database already open); the aim is judged on the cold figure. Measured at R runs and at R2 runs,
   where the fixed cost of opening a DuckDB file (about 0.03 s) weighs less.
3. Peak extra memory of reading back R2 runs x N masks, relative to the bool matrix itself.
   Aim: <= 1.5x.

    python bench/bench_store.py                     # the issue's sizes: 2,000 x 50,000 x 1,000; 20,000 x 50,000
    python bench/bench_store.py --runs 200 --big-runs 2000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

import dmdb

T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int = 1, before: Callable[[], None] | None = None) -> tuple[float, T]:
    """Best of `repeat` timings (and the last result): on a shared machine the minimum is the stable figure.
    `before` runs untimed ahead of each repetition (to start from an empty file)."""
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def verdict(ratio: float, aim: float) -> str:
    return f"[aim <= {aim:g}x: {'met' if ratio <= aim else 'NOT met'}]"


def random_runs(runs: int, n: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((runs, n), dtype=np.float32) < 0.5, rng.standard_normal((runs, t), dtype=np.float32)


def bench_record(tmp: Path, masks: np.ndarray, margins: np.ndarray, batch: int, repeat: int) -> dict[str, float]:
    """Write the runs both ways (leaving masks.npy, margins.npy and bench.duckdb in tmp); best times."""
    runs, n = masks.shape

    def write_npy() -> None:
        mm = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=bool, shape=masks.shape)
        ym = np.lib.format.open_memmap(tmp / "margins.npy", mode="w+", dtype=np.float32, shape=margins.shape)
        for s in range(0, runs, batch):
            mm[s : s + batch] = masks[s : s + batch]
            ym[s : s + batch] = margins[s : s + batch]
        mm.flush()
        ym.flush()
        del mm, ym

    def write_dmdb() -> None:
        with dmdb.open(tmp / "bench.duckdb") as db:
            exp = db.create_experiment("bench", n, margins.shape[1])
            for s in range(0, runs, batch):
                exp.record_batch(np.arange(s, min(s + batch, runs)), masks[s : s + batch], margins[s : s + batch])

    def remove_db() -> None:
        for f in tmp.glob("bench.duckdb*"):
            f.unlink()

    t_npy, _ = timed(write_npy, repeat)
    t_db, _ = timed(write_dmdb, repeat, before=remove_db)
    return {"npy_s": t_npy, "dmdb_s": t_db}


def bench_read(tmp: Path, masks: np.ndarray, margins: np.ndarray, repeat: int) -> dict[str, float]:
    """Read back what bench_record wrote, checking every result bit for bit; best times."""
    path = tmp / "bench.duckdb"

    def check(got: tuple[np.ndarray, np.ndarray]) -> None:
        assert np.array_equal(got[0], masks) and np.array_equal(got[1], margins), "round trip differs"

    t_npy, got = timed(lambda: (np.load(tmp / "masks.npy"), np.load(tmp / "margins.npy")), repeat)
    check(got)
    del got

    def cold() -> tuple[np.ndarray, np.ndarray]:
        with dmdb.open(path, read_only=True) as db:
            return db.experiment("bench").masks_and_margins()

    t_cold, got = timed(cold, repeat)
    check(got)
    del got
    t_open, _ = timed(lambda: dmdb.open(path, read_only=True).close(), repeat)
    with dmdb.open(path, read_only=True) as db:
        exp = db.experiment("bench")
        t_warm, got = timed(exp.masks_and_margins, repeat)
        check(got)
        del got
        t_two, got = timed(lambda: (exp.masks(), exp.margins()), repeat)
        check(got)
    return {"npy_s": t_npy, "cold_s": t_cold, "warm_s": t_warm, "two_calls_s": t_two, "open_s": t_open}


PEAK_CHILD = """
import sys, json, numpy as np, dmdb
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
with dmdb.open(sys.argv[1], read_only=True) as db:
    exp = db.experiment('bench')
    before = rss('VmRSS:')
    m = exp.masks()
    peak = rss('VmHWM:')
print(json.dumps({'extra_bytes': peak - before, 'matrix_bytes': m.nbytes}))
"""


def bench_peak(path: Path) -> dict[str, float]:
    """Peak RSS growth of reading the masks in a fresh process, over the size of the bool matrix."""
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    return {"extra_mb": res["extra_bytes"] / 2**20, "matrix_mb": res["matrix_bytes"] / 2**20,
            "ratio": res["extra_bytes"] / res["matrix_bytes"]}


def report_read(runs: int, rd: dict[str, float]) -> None:
    npy = rd["npy_s"]
    print(f"read back {runs:,} runs (masks + margins); baseline np.load of both .npy files {npy:.3f} s:")
    print(f"  cold  dmdb.open + masks_and_margins() + close  {rd['cold_s']:.3f} s -> {rd['cold_s'] / npy:.2f}x "
          f"{verdict(rd['cold_s'] / npy, 2)}")
    print(f"  warm  masks_and_margins(), database open        {rd['warm_s']:.3f} s -> {rd['warm_s'] / npy:.2f}x "
          "(no aim: the open is not counted)")
    print(f"  warm  masks() + margins(), database open        {rd['two_calls_s']:.3f} s -> "
          f"{rd['two_calls_s'] / npy:.2f}x (no aim)")
    print(f"  dmdb.open + close alone {rd['open_s']:.3f} s = {rd['open_s'] / npy:.2f}x np.load's whole time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--n-train", type=int, default=50_000)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500, help="runs per record_batch call")
    ap.add_argument("--big-runs", type=int, default=20_000, help="runs for the second read ratio and the peak memory")
    ap.add_argument("--repeat", type=int, default=3, help="time each step this many times and keep the best")
    args = ap.parse_args()
    print(f"dmdb store benchmark, best of {args.repeat}; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        masks, margins = random_runs(args.runs, args.n_train, args.targets, seed=0)
        wr = bench_record(tmp, masks, margins, args.batch, args.repeat)
        ratio = wr["dmdb_s"] / wr["npy_s"]
        print(f"record {args.runs:,} runs x {args.n_train:,} x {args.targets:,} ({args.batch} per record_batch, "
              f"from creating the file to closing it): dmdb {wr['dmdb_s']:.3f} s, .npy memmaps {wr['npy_s']:.3f} s "
              f"-> {ratio:.2f}x {verdict(ratio, 3)}")
        npy_mb = sum((tmp / f).stat().st_size for f in ("masks.npy", "margins.npy")) / 2**20
        print(f"size on disk: dmdb {(tmp / 'bench.duckdb').stat().st_size / 2**20:.0f} MiB, .npy {npy_mb:.0f} MiB")
        report_read(args.runs, bench_read(tmp, masks, margins, args.repeat))

        del masks, margins
        masks, margins = random_runs(args.big_runs, args.n_train, args.targets, seed=1)
        bench_record(tmp, masks, margins, args.batch * 4, repeat=1)
        report_read(args.big_runs, bench_read(tmp, masks, margins, args.repeat))
        del masks, margins
        pk = bench_peak(tmp / "bench.duckdb")
        print(f"peak memory reading {args.big_runs:,} x {args.n_train:,} masks (fresh process): {pk['extra_mb']:.0f} MiB "
              f"over a {pk['matrix_mb']:.0f} MiB bool matrix -> {pk['ratio']:.2f}x {verdict(pk['ratio'], 1.5)}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
