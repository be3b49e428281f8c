"""Store benchmarks, each a ratio against the reference store (.npy memmaps) measured in the same run.

1. Bulk recording of R runs x N train examples x T targets vs writing the same arrays into .npy memmaps.
2. Reading masks and margins back to numpy vs np.load of the same .npy files.
3. Peak extra memory of reading back R2 runs x N masks, relative to the bool matrix itself.

    python bench/bench_store.py                     # the issue's sizes: 2,000 x 50,000 x 1,000; 20,000 x 50,000
    python bench/bench_store.py --runs 200 --peak-runs 2000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dmdb


def timed(fn, repeat: int = 1, before=None):  # type: ignore[no-untyped-def]
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


def bench_write_read(tmp: Path, runs: int, n: int, t: int, batch: int, repeat: int = 1) -> dict[str, float]:
    rng = np.random.default_rng(0)
    masks = rng.random((runs, n), dtype=np.float32) < 0.5
    margins = rng.standard_normal((runs, t), dtype=np.float32)

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
            exp = db.create_experiment("bench", n, t)
            for s in range(0, runs, batch):
                exp.record_batch(np.arange(s, min(s + batch, runs)), masks[s : s + batch], margins[s : s + batch])

    def remove_db() -> None:
        for f in tmp.glob("bench.duckdb*"):
            f.unlink()

    t_npy, _ = timed(write_npy, repeat)
    t_db, _ = timed(write_dmdb, repeat, before=remove_db)

    def read_npy() -> tuple[np.ndarray, np.ndarray]:
        return np.load(tmp / "masks.npy"), np.load(tmp / "margins.npy")

    def read_dmdb() -> tuple[np.ndarray, np.ndarray]:
        with dmdb.open(tmp / "bench.duckdb", read_only=True) as db:
            exp = db.experiment("bench")
            return exp.masks(), exp.margins()

    r_npy, _ = timed(read_npy, repeat)
    r_db, (m2, y2) = timed(read_dmdb, repeat)
    assert np.array_equal(m2, masks) and np.array_equal(y2, margins), "round trip differs"
    npy_bytes = (tmp / "masks.npy").stat().st_size + (tmp / "margins.npy").stat().st_size
    return {
        "write_npy_s": t_npy, "write_dmdb_s": t_db, "write_ratio": t_db / t_npy,
        "read_npy_s": r_npy, "read_dmdb_s": r_db, "read_ratio": r_db / r_npy,
        "npy_mb": npy_bytes / 2**20, "dmdb_mb": (tmp / "bench.duckdb").stat().st_size / 2**20,
    }


PEAK_CHILD = """
import sys, json, numpy as np, dmdb
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
with dmdb.open(sys.argv[1], read_only=True) as db:
    exp = db.experiment('peak')
    before = rss('VmRSS:')
    m = exp.masks()
    peak = rss('VmHWM:')
print(json.dumps({'extra_bytes': peak - before, 'matrix_bytes': m.nbytes, 'rows': m.shape[0]}))
"""


def bench_peak(tmp: Path, runs: int, n: int, batch: int) -> dict[str, float]:
    path = tmp / "peak.duckdb"
    with dmdb.open(path) as db:
        exp = db.create_experiment("peak", n, 4)
        rng = np.random.default_rng(1)
        for s in range(0, runs, batch):
            r = min(batch, runs - s)
            exp.record_batch(np.arange(s, s + r), rng.random((r, n), dtype=np.float32) < 0.5, np.zeros((r, 4)))
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    return {"peak_extra_mb": res["extra_bytes"] / 2**20, "bool_matrix_mb": res["matrix_bytes"] / 2**20,
            "peak_ratio": res["extra_bytes"] / res["matrix_bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--n-train", type=int, default=50_000)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500, help="runs per record_batch call")
    ap.add_argument("--peak-runs", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3, help="time each step this many times and keep the best")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wr = bench_write_read(tmp, args.runs, args.n_train, args.targets, args.batch, args.repeat)
        print(f"best of {args.repeat}:")
        print(f"record {args.runs} runs x {args.n_train} x {args.targets}: dmdb {wr['write_dmdb_s']:.2f} s, "
              f".npy memmap {wr['write_npy_s']:.2f} s -> ratio {wr['write_ratio']:.2f}x (target <= 3x)")
        print(f"read back masks + margins: dmdb {wr['read_dmdb_s']:.2f} s, np.load {wr['read_npy_s']:.2f} s "
              f"-> ratio {wr['read_ratio']:.2f}x (target <= 2x)")
        print(f"size on disk: dmdb {wr['dmdb_mb']:.0f} MiB, .npy {wr['npy_mb']:.0f} MiB")
        pk = bench_peak(tmp, args.peak_runs, args.n_train, args.batch * 4)
        print(f"read back {args.peak_runs} x {args.n_train} masks: peak extra {pk['peak_extra_mb']:.0f} MiB for a "
              f"{pk['bool_matrix_mb']:.0f} MiB bool matrix -> ratio {pk['peak_ratio']:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
