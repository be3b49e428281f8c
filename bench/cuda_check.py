"""The regression on CUDA against the same call on the CPU, in one run: time of each, how many
targets chose the same lambda, the largest weight difference, and held-out R^2 of both.

    python bench/cuda_check.py                                   # 10,000 x 2,000 x 200 (bench_regress's default)
    python bench/cuda_check.py --runs 20000 --n-train 50000 --targets 100 --no-cpu   # the scale slice, CUDA only

Needs torch and numpy only (no duckdb or polars), so it runs on a GPU machine's own image:
bench/device_check.sh runs it there with bench_regress.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_regress import synth  # noqa: E402

from dmdb.regress import SolverResult, r2_per_target, select_lasso, select_ridge  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--n-train", type=int, default=2_000)
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--ridge", action="store_true", help="select_ridge instead of select_lasso")
    ap.add_argument("--no-cpu", action="store_true", help="time CUDA only (a size the CPU would take too long on)")
    ap.add_argument("--device", default="cuda", help="the device checked against the CPU ('cpu': a dry run of this script)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("cuda_check: torch sees no CUDA device")

    X, Y = synth(a.runs, a.n_train, a.targets, 20, 0.5, 0)
    n_fit, n_val = int(a.runs * 0.8), int(a.runs * 0.1)
    fit, val, test = np.arange(n_fit), np.arange(n_fit, n_fit + n_val), np.arange(n_fit + n_val, a.runs)
    name = torch.cuda.get_device_name() if a.device == "cuda" else a.device
    print(f"{a.runs} runs x {a.n_train} train x {a.targets} targets; {name}, "
          f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}", flush=True)

    def solve(device: str) -> tuple[float, SolverResult]:
        if device == "cuda":  # warm-up: CUDA context and kernels, outside the timer
            select_lasso(X[:600], Y[:600, :2], np.arange(500), np.arange(500, 600), n_lambdas=3, device="cuda")
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if a.ridge:
            res = select_ridge(X, Y, fit, val, device=device)
        else:
            res = select_lasso(X, Y, fit, val, patience=a.patience, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        pred = res.bias[None, :] + X[test].astype(np.float32) @ res.W
        peak = f", GPU peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
        print(f"{device}: select_{res.method} {dt:.2f} s{peak}, test R^2 {r2_per_target(pred, Y[test]).mean():.5f}, "
              f"nnz {res.nnz.mean():.1f}, GEMM iterations/target {res.n_iter.mean():.0f}, "
              f"all converged {bool(res.converged.all())}", flush=True)
        return dt, res

    t_gpu, gpu = solve(a.device)
    if a.no_cpu:
        return
    t_cpu, cpu = solve("cpu")
    same = np.mean(np.isclose(gpu.lam, cpu.lam, rtol=1e-5))
    scale = np.abs(cpu.W).max()
    print(f"{a.device} vs CPU: {t_cpu / t_gpu:.1f}x faster; same lambda for {same:.1%} of targets; "
          f"max |weight difference| {np.abs(gpu.W - cpu.W).max():.2g} (largest weight {scale:.2g}), "
          f"max |bias difference| {np.abs(gpu.bias - cpu.bias).max():.2g}")


if __name__ == "__main__":
    main()
