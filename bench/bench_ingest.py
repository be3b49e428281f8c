"""Ingest of many small shards: one shard per run, as a job array's workers write them.

`write` creates a database with one experiment and a plan, and writes one shard per planned run
(`dmdb.shards.write_run`, synthetic margins) into a folder; `ingest` times `dmdb.ingest` of that
folder into a copy of the fresh database, in this process (run it as its own process, so that no
cache from writing is warm), and prints wall and CPU time (the CPU time is the steadier figure on a
busy machine). The default: 2,000 shards of an experiment with 1,000 train examples
and 100 targets.

    python bench/bench_ingest.py write /tmp/dmdb-ingest-bench           # once
    python bench/bench_ingest.py ingest /tmp/dmdb-ingest-bench          # each time to measure
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

import dmdb
from dmdb.shards import write_run


def write(a: argparse.Namespace) -> None:
    root = Path(a.folder)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with dmdb.open(root / "fresh.duckdb") as db:
        plan = db.create_experiment("bench", a.train, a.targets).plan(a.runs, seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for run in plan:
        write_run(root / "shards", "bench", run, rng.standard_normal(a.targets).astype(np.float32), worker="w")
    print(f"wrote {a.runs:,} shards ({a.train:,} train x {a.targets:,} targets) in {time.perf_counter() - t0:.1f} s")


def ingest(a: argparse.Namespace) -> None:
    root = Path(a.folder)
    path = root / "bench.duckdb"
    shutil.copyfile(root / "fresh.duckdb", path)
    with dmdb.open(path) as db:
        t0, c0 = time.perf_counter(), time.process_time()
        report = dmdb.ingest(db, root / "shards")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert report.bad == [] and report.runs_added == report.files_ingested == db.experiment("bench").n_runs()
    n = report.files_ingested
    print(f"ingested {n:,} shards in {seconds:.2f} s ({cpu:.2f} s CPU, all threads): "
          f"{1000 * seconds / n:.2f} ms per shard")
    path.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["write", "ingest"])
    p.add_argument("folder", help="where the shards and the fresh database go")
    p.add_argument("--runs", type=int, default=2000, help="shards (one run each) to write")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--targets", type=int, default=100)
    a = p.parse_args()
    {"write": write, "ingest": ingest}[a.phase](a)


if __name__ == "__main__":
    main()
