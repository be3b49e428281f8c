"""Benchmark: dmdb.regress batched lasso path vs scikit-learn's lasso_path, one target at a time.

Same data, same per-target lambda grid, same relative duality-gap tolerance. scikit-learn gets
the precomputed Gram matrix and Xy (its fastest path); its Gram is computed outside its timer,
while our timer includes our own pass over the masks. Both paths pick lambda per target on
validation runs and are scored by R^2 on held-out test runs.

    .venv/bin/python bench/bench_regress.py                       # 10,000 x 2,000 x 200 comparison
    .venv/bin/python bench/bench_regress.py --runs 50000 --n-train 10000 --targets 1000 --no-sklearn
    .venv/bin/python bench/bench_regress.py --runs 2500 --n-train 10000 --targets 50 --no-sklearn --ridge [--gram matrix]

--compare gram|patience times select_lasso (select_ridge with --ridge) both ways in one process and
prints the ratio: the masks form of G against the matrix form (masks first, so that the peak RSS
after each is that form's), or early stopping (--patience, default 10) against the whole path.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmdb.regress import SolverResult, lasso_path, r2_per_target, select_lasso, select_ridge  # noqa: E402


def synth(runs: int, n_train: int, targets: int, k_true: int, ceiling: float,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli(1/2) masks and a sparse true datamodel; noise set for the given R^2 ceiling."""
    rng = np.random.default_rng(seed)
    X = rng.random((runs, n_train), dtype=np.float32) < 0.5
    W = np.zeros((n_train, targets), dtype=np.float32)
    for t in range(targets):
        W[rng.choice(n_train, k_true, replace=False), t] = rng.normal(size=k_true)
    var_signal = 0.25 * (W.astype(np.float64) ** 2).sum(axis=0)
    sigma = np.sqrt(var_signal * (1 - ceiling) / ceiling)
    Wt = torch.from_numpy(W)
    Y = np.empty((runs, targets), dtype=np.float32)
    for a in range(0, runs, 4096):
        Y[a : a + 4096] = (torch.from_numpy(X[a : a + 4096]).float() @ Wt).numpy()
    Y += (rng.standard_normal((runs, targets), dtype=np.float32) * sigma.astype(np.float32)) + 3.0
    return X, Y


def select_and_score(coefs_t: np.ndarray, intercept_t: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                     X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Pick lambda by validation MSE for one target's path (k, N); return test R^2."""
    mse = ((y_val[:, None] - intercept_t[None, :] - X_val @ coefs_t.T) ** 2).mean(axis=0)
    j = int(np.argmin(mse))
    pred = intercept_t[j] + X_test @ coefs_t[j]
    return float(r2_per_target(pred[:, None], y_test[:, None])[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--n-train", type=int, default=2_000)
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--k-true", type=int, default=20, help="nonzero true weights per target")
    ap.add_argument("--ceiling", type=float, default=0.5, help="R^2 of the true datamodel")
    ap.add_argument("--n-lambdas", type=int, default=100)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--device", default=None, help="cpu, cuda, or unset for cuda-if-available")
    ap.add_argument("--no-sklearn", action="store_true", help="throughput only: select_lasso, no baseline")
    ap.add_argument("--sklearn-targets", type=int, default=None,
                    help="time scikit-learn on this many targets and extrapolate (default: all)")
    ap.add_argument("--patience", type=int, default=None, help="early stop for the select_lasso runs (not for the path comparison)")
    ap.add_argument("--ridge", action="store_true", help="with --no-sklearn: time select_ridge instead of select_lasso")
    ap.add_argument("--gram", choices=["matrix", "masks"], default=None,
                    help="how the solver holds G = Xc'Xc/n (default: masks when fit runs <= N/2, else matrix)")
    ap.add_argument("--compare", choices=["gram", "patience"], default=None,
                    help="time both settings in one run and print the ratio (no scikit-learn)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.ridge and not (a.no_sklearn or a.compare):
        ap.error("--ridge times select_ridge alone: give it with --no-sklearn or --compare")
    if a.compare == "patience" and a.ridge:
        ap.error("--compare patience is for the lasso path (ridge has no path to stop)")

    t0 = time.perf_counter()
    X, Y = synth(a.runs, a.n_train, a.targets, a.k_true, a.ceiling, a.seed)
    n_fit, n_val = int(a.runs * 0.8), int(a.runs * 0.1)
    fit = np.arange(n_fit)
    val = np.arange(n_fit, n_fit + n_val)
    test = np.arange(n_fit + n_val, a.runs)
    print(f"data: {a.runs} runs x {a.n_train} train examples x {a.targets} targets "
          f"(fit {fit.size}, val {val.size}, test {test.size}), made in {time.perf_counter() - t0:.1f}s; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    def select(gram: str | None, patience: int | None, label: str) -> tuple[float, SolverResult]:
        t0 = time.perf_counter()
        if a.ridge:
            res = select_ridge(X, Y, fit, val, device=a.device, gram=gram)
        else:
            res = select_lasso(X, Y, fit, val, n_lambdas=a.n_lambdas, eps=a.eps, tol=a.tol,
                               device=a.device, patience=patience, gram=gram)
        dt = time.perf_counter() - t0
        pred = res.bias[None, :] + (X[test].astype(np.float32) @ res.W)
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"select_{res.method} {label}(fit, choose on val, refit): {dt:.1f}s, peak RSS {peak_gib:.2f} GiB, "
              f"mean test R^2 {r2_per_target(pred, Y[test]).mean():.4f} (ceiling {a.ceiling}), "
              f"mean nnz {res.nnz.mean():.1f}, all converged {bool(res.converged.all())}, "
              f"GEMM iterations/target {res.n_iter.mean():.0f}", flush=True)
        return dt, res

    if a.compare == "gram":
        t_new, new = select("masks", a.patience, "[gram masks] ")
        t_base, base = select("matrix", a.patience, "[gram matrix] ")
        print(f"time of the matrix form / the masks form: {t_base / t_new:.2f}x; same lambda for "
              f"{np.mean(new.lam == base.lam):.0%} of targets, max |weight difference| {np.abs(new.W - base.W).max():.2g}")
        return
    if a.compare == "patience":
        patience = a.patience or 10
        t_new, new = select(a.gram, patience, f"[patience {patience}] ")
        t_base, base = select(a.gram, None, "[whole path] ")
        print(f"time of the whole path / patience {patience}: {t_base / t_new:.2f}x; same lambda for "
              f"{np.mean(new.lam == base.lam):.0%} of targets")
        return
    if a.no_sklearn:
        select(a.gram, a.patience, "")
        return

    Xv, Xt = X[val].astype(np.float64), X[test].astype(np.float64)
    # ours: one pass over the masks + the batched path for all targets
    t0 = time.perf_counter()
    path = lasso_path(X, Y, rows=fit, n_lambdas=a.n_lambdas, eps=a.eps, tol=a.tol, device=a.device, gram=a.gram)
    t_ours = time.perf_counter() - t0
    r2_ours = np.array([select_and_score(path.coefs[:, :, t].astype(np.float64), path.intercepts[:, t],
                                         Xv, Y[val, t], Xt, Y[test, t]) for t in range(a.targets)])
    print(f"dmdb lasso_path: {t_ours:.2f}s (all converged {bool(path.converged.all())}, "
          f"{path.n_iter.mean():.0f} GEMM iterations/target)", flush=True)

    t0 = time.perf_counter()
    res = select_lasso(X, Y, fit, val, n_lambdas=a.n_lambdas, eps=a.eps, tol=a.tol, device=a.device,
                       patience=a.patience, gram=a.gram)
    t_sel = time.perf_counter() - t0
    pred = res.bias[None, :] + (X[test].astype(np.float32) @ res.W)
    print(f"dmdb select_lasso (path + validation + refit, patience={a.patience}): {t_sel:.2f}s, "
          f"mean test R^2 {r2_per_target(pred, Y[test]).mean():.4f}, {res.n_iter.mean():.0f} GEMM iterations/target",
          flush=True)

    from sklearn.linear_model import lasso_path as sk_lasso_path

    Xf = X[fit].astype(np.float64)
    xm = Xf.mean(axis=0)
    Xf -= xm
    Xf = np.asfortranarray(Xf)
    gram = Xf.T @ Xf  # unscaled: scikit-learn multiplies alpha by n itself
    n_sk = a.targets if a.sklearn_targets is None else min(a.sklearn_targets, a.targets)
    r2_sk = []
    t_sk = 0.0
    for t in range(n_sk):
        y = Y[fit, t].astype(np.float64)
        ym = y.mean()
        yc = y - ym
        Xy = Xf.T @ yc
        t0 = time.perf_counter()
        _, coefs, _ = sk_lasso_path(Xf, yc, alphas=path.lambdas[:, t].astype(np.float64), precompute=gram,
                                    Xy=Xy, tol=a.tol, max_iter=1000, check_input=False)
        t_sk += time.perf_counter() - t0
        c = coefs.T  # (k, N)
        r2_sk.append(select_and_score(c, ym - c @ xm, Xv, Y[val, t], Xt, Y[test, t]))
    t_sk_all = t_sk * a.targets / n_sk
    note = "" if n_sk == a.targets else f" (timed on {n_sk} targets, scaled to {a.targets})"
    r2_sk = np.array(r2_sk)
    print(f"sklearn lasso_path loop (precompute=Gram, Xy): {t_sk_all:.2f}s{note}")
    print(f"speed ratio sklearn/dmdb lasso_path: {t_sk_all / t_ours:.1f}x (goal >= 50x)")
    print(f"mean held-out R^2 over the same {n_sk} targets: dmdb {r2_ours[:n_sk].mean():.5f}, "
          f"sklearn {r2_sk.mean():.5f}, |diff| {abs(r2_ours[:n_sk].mean() - r2_sk.mean()):.5f} (goal <= 0.002); "
          f"ceiling {a.ceiling}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
