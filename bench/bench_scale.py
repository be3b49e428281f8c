"""Scale benchmark: stream a synthetic CIFAR-10-sized study into dmdb, fit a slice, project the full study.

1. Ingest: R runs x N train x T targets from `dmdb synth`'s generator, `--chunk` runs per
   transaction, against the baseline of writing the same generated chunks to .npy memmaps (the
   reference store). Each side runs in its own process: time, peak RSS, file size.
2. Fit: lasso on a slice (all N train examples, `--fit-runs` runs, `--fit-targets` targets) on
   the CPU (or `--device cuda`), compared with the stored truth's LDS.
3. Projection of the 300,000 runs x 50,000 x 10,000 study from the slice, stage by stage (see
   `work` and `project`): each stage's time is scaled by the work of its components (the Gram
   matrix X'X: runs x N^2; X'Y: runs x N x T; FISTA: N^2 x T per iteration; validation MSE:
   val runs x N x T per lambda; ...), so the path's iteration count per target is the one
   assumption carried over from the slice. At N = 50,000 the Gram matrix alone is 10 GB in float32.

    python bench/bench_scale.py                                    # small: 2,000 x 50,000 x 1,000
    python bench/bench_scale.py --runs 100000 --fit-runs 20000 --fit-train 50000 --fit-targets 100  # the issue's
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import dmdb
from dmdb.regress.stats import panels
from dmdb.scale import SynthSpec, create_synthetic
from dmdb.scale.synth import synth_margins

FULL = {"runs": 300_000, "n_train": 50_000, "targets": 10_000}


def spec_of(a: argparse.Namespace) -> SynthSpec:
    return SynthSpec(a.train, a.targets, density=a.density, noise=a.noise, seed=0)


def ingest_npy(a: argparse.Namespace, out: Path) -> dict[str, float]:
    """Baseline: the same plan's masks and synthetic margins, chunk by chunk, into .npy memmaps."""
    spec = spec_of(a)
    with dmdb.open(":memory:") as db:  # only to build the same plan (no runs are written)
        plan = db.create_experiment("p", spec.n_train, spec.n_targets, config=spec.config()).plan(a.runs, seed=0)
    t0 = time.perf_counter()
    mm = np.lib.format.open_memmap(out / "masks.npy", mode="w+", dtype=bool, shape=(a.runs, spec.n_train))
    ym = np.lib.format.open_memmap(out / "margins.npy", mode="w+", dtype=np.float32, shape=(a.runs, spec.n_targets))
    for s in range(0, a.runs, a.chunk):
        runs = [plan.run(r) for r in range(s, min(s + a.chunk, a.runs))]
        masks = np.stack([r.mask for r in runs])
        mm[s : s + len(runs)] = masks
        ym[s : s + len(runs)] = synth_margins(spec, masks, [r.seed for r in runs])
    mm.flush()
    ym.flush()
    del mm, ym
    size = (out / "masks.npy").stat().st_size + (out / "margins.npy").stat().st_size
    return {"seconds": time.perf_counter() - t0, "bytes": size}


def ingest_dmdb(a: argparse.Namespace, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    with dmdb.open(out / "scale.duckdb") as db:
        create_synthetic(db, "scale", spec_of(a), a.runs, a.holdout, chunk=a.chunk, truth_fit=False)
    return {"seconds": time.perf_counter() - t0, "bytes": (out / "scale.duckdb").stat().st_size}


def fit_slice(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Lasso on a synthetic slice (its own experiment), with the time of each stage of the fit.

    A stage runs from the previous stage's last progress report to its own last one; the time
    after the last report (holdout scoring, writing the fit) is the stage "scoring and writing".
    """
    spec = SynthSpec(a.fit_train, a.fit_targets, density=a.density * a.train / a.fit_train, noise=a.noise, seed=1)
    ends: dict[str, float] = {}
    done: dict[str, int] = {}

    def progress(stage: str, n: int, total: int) -> None:
        ends[stage] = time.perf_counter()
        done[stage] = max(done.get(stage, 0), n)

    holdout = max(1, a.fit_runs // 10)
    with dmdb.open(out / "scale.duckdb") as db:
        exp, truth = create_synthetic(db, "slice", spec, a.fit_runs, holdout)
        t0 = time.perf_counter()
        # by default G held as a matrix, as the full study (more runs than N/2) will: the slice models its stages
        fit = exp.fit("lasso", device=a.device, k=a.k, patience=a.patience, gram=a.gram, progress=progress)
        ends["scoring and writing"] = time.perf_counter()
    stages, last = {}, t0
    for stage, end in sorted(ends.items(), key=lambda kv: kv[1]):
        stages[stage], last = end - last, end
    return {"seconds": fit.seconds, "stages": stages, "lds": fit.lds, "truth_lds": truth.lds if truth else None,
            "device": fit.device, "n_runs": fit.n_fit_runs + fit.n_val_runs, "n_val": fit.n_val_runs,
            "n_holdout": fit.n_holdout_runs, "pairs": done.get("lasso path", a.fit_targets * a.k),
            "gemm_flops_per_s": gemm_rate(fit.device)}


def gemm_rate(device: str) -> float:
    """float32 GEMM flops/s on the fit's device: the best of 4 products of 2,048-square matrices (the first warms up)."""
    import torch

    A = torch.rand(2048, 2048, device=device)
    best = float("inf")
    for _ in range(4):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        A @ A
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best


def work(runs: float, val: float, holdout: float, n: int, t: int, lambdas: float) -> dict[str, dict[str, float]]:
    """Work of each fit stage by component: bytes decoded for reading runs, flops otherwise.

    runs: fit + validation runs (the statistics pass reads both), val: validation runs, lambdas:
    lambdas solved per target before `patience` stopped its path. "FISTA" is the flops of one
    iteration on all targets (2 N^2 T): its iteration count is the one quantity not known in
    advance, assumed equal in the slice and the full study.
    """
    fit = runs - val
    # X'X is summed over upper-triangle row panels of the N x N matrix (fit runs in the
    # statistics pass; the refit adds the validation runs' products to G in place)
    tri = sum((z - a) * (n - a) for a, z in panels(n))
    # step and momentum: 61 products G @ V (N x 16) for the top of G's spectrum and, unless G
    # is singular (no more runs than examples), 61 for its bottom, for the path's G and the
    # refit's; an eigendecomposition up to N = 1,000
    ends = (1 if fit <= n else 2) + (1 if runs <= n else 2)
    curvature = ends * 2 * 61 * 16 * n * n if n > 1000 else 2 * 4 * n**3
    return {
        "reading runs": {"masks": (runs + holdout) * n, "margins": (runs + holdout) * 4 * t},
        "statistics": {"Gram X'X": 2 * fit * tri, "X'Y": 2 * runs * n * t},
        "lasso path": {"curvature": curvature, "validation Gram (refit)": 2 * val * tri,
                       "validation MSE": 2 * val * n * t * lambdas, "FISTA": 2 * n * n * t},
        "scoring and writing": {"holdout predictions": 2 * holdout * n * t, "writing": runs + holdout + t},
    }


REST = {"lasso path": "FISTA", "scoring and writing": "writing"}
"""Per stage, the component whose time is what is left after pricing the others at the GEMM rate:
FISTA (iteration count unknown in advance) and writing the fit (rows: one per run used and,
assuming the slice's nonzeros per target, a fixed number per target)."""


def project(fit: dict[str, Any], n_train: int, targets: int, full: dict[str, int] = FULL) -> dict[str, Any]:
    """Seconds of each fit stage scaled to the full study by the work of its components (see `work`).

    Stages whose components are all known work of one kind are scaled by the ratio of total work.
    The lasso path mixes known flops (curvature estimate, validation MSE after each solution) with
    FISTA iterations of unknown count, and "scoring and writing" mixes holdout predictions with
    database writes: the known flops are priced at the float32 GEMM rate measured on the fit's
    device (the statistics stage runs int8 products on the CPU, a different rate), the rest of the measured time is the `REST` component, and
    that is scaled by its own law. The full study keeps the slice's validation and holdout
    fractions and lambdas per target. Returns seconds per stage, the rate, and stages not projected.
    """
    runs, val, hold = fit["n_runs"], fit["n_val"], fit["n_holdout"]
    per_run = full["runs"] / runs
    lambdas = fit["pairs"] / targets
    small = work(runs, val, hold, n_train, targets, lambdas)
    big = work(full["runs"], val * per_run, hold * per_run, full["n_train"], full["targets"], lambdas)
    stages = fit["stages"]
    rate = fit["gemm_flops_per_s"]
    out: dict[str, float] = {}
    unknown = []
    for stage, sec in stages.items():
        if stage not in small:
            unknown.append(stage)
        elif stage in REST:
            rest = REST[stage]
            known = {c: w for c, w in small[stage].items() if c != rest}
            left = max(0.0, sec - sum(known.values()) / rate)
            out[stage] = sum(big[stage][c] for c in known) / rate + left * big[stage][rest] / small[stage][rest]
        else:
            out[stage] = sec * sum(big[stage].values()) / sum(small[stage].values())
    return {"seconds": out, "flops_per_s": rate, "not_projected": unknown}


def child(phase: str, a: argparse.Namespace, out: Path) -> dict[str, float]:
    """Run one phase in a fresh process, so its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--phase", phase, "--dir", str(out), *sys.argv[1:]]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2_000)
    p.add_argument("--holdout", type=int, default=200)
    p.add_argument("--train", type=int, default=50_000)
    p.add_argument("--targets", type=int, default=1_000)
    p.add_argument("--density", type=float, default=0.001)
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--chunk", type=int, default=500, help="runs per transaction / per .npy write")
    p.add_argument("--fit-runs", type=int, default=2_000)
    p.add_argument("--fit-train", type=int, default=2_000, help="train examples of the fit slice (the issue's: 50,000)")
    p.add_argument("--fit-targets", type=int, default=10)
    p.add_argument("--k", type=int, default=30, help="lambdas on the path")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--gram", choices=["matrix", "masks"], default="matrix",
                   help="how the slice's lasso holds G (default matrix, the full study's form; masks: no projection)")
    p.add_argument("--no-fit", action="store_true")
    p.add_argument("--tmpdir", default=".", help="where the database and .npy files go (removed afterwards)")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        fn = {"npy": ingest_npy, "dmdb": ingest_dmdb, "fit": fit_slice}[a.phase]
        result = fn(a, Path(a.dir))
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(dir=a.tmpdir, prefix="dmdb-scale-") as tmp:
        out = Path(tmp)
        npy = child("npy", a, out)
        db = child("dmdb", a, out)
        print(f"ingest {a.runs:,} runs x {a.train:,} train x {a.targets:,} targets ({a.chunk} runs per chunk)")
        print(f"  .npy memmaps (baseline): {npy['seconds']:8.1f} s  peak RSS {npy['peak_rss_mib']:7.0f} MiB  "
              f"{npy['bytes'] / 2**20:8.0f} MiB")
        print(f"  dmdb synth:              {db['seconds']:8.1f} s  peak RSS {db['peak_rss_mib']:7.0f} MiB  "
              f"{db['bytes'] / 2**20:8.0f} MiB")
        print(f"  ratio dmdb / npy: time {db['seconds'] / npy['seconds']:.2f}x, size {db['bytes'] / npy['bytes']:.2f}x, "
              f"{a.runs / db['seconds']:.0f} runs/s")
        if a.no_fit:
            return
        fit = child("fit", a, out)
        truth = "n/a" if fit["truth_lds"] is None else f"{fit['truth_lds']:.3f}"
        print(f"fit slice: lasso, {fit['n_runs']:,} runs x {a.fit_train:,} train x {a.fit_targets} targets on "
              f"{fit['device']}: {fit['seconds']:.1f} s, peak RSS {fit['peak_rss_mib']:.0f} MiB; "
              f"LDS {fit['lds']:.3f} (truth {truth})")
        if a.gram != "matrix":
            for stage, sec in fit["stages"].items():
                print(f"  {stage:<20} {sec:8.2f} s")
            print("  (no projection: the full study holds G as a matrix; rerun with --gram matrix)")
            return
        proj = project(fit, a.fit_train, a.fit_targets)
        full = proj["seconds"]
        print(f"  float32 GEMM at {proj['flops_per_s'] / 1e9:.1f} GFLOP/s; {fit['pairs'] / a.fit_targets:.1f} "
              f"lambdas per target ({fit['n_runs']:,} fit+val runs, {fit['n_val']:,} val, {fit['n_holdout']:,} holdout)")
        for stage, sec in fit["stages"].items():
            to = f"{full[stage] / 3600:12,.1f} h" if stage in full else "  not projected (unknown stage)"
            print(f"  {stage:<20} {sec:8.2f} s  -> full study {to}")
        print(f"projection, 300,000 x 50,000 x 10,000 on this {fit['device']}: {sum(full.values()) / 3600:,.0f} h")
        if proj["not_projected"]:
            print(f"  NOT included: {', '.join(proj['not_projected'])} (add its cost law to work())")


if __name__ == "__main__":
    main()
