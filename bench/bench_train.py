"""Batched training throughput (models/s) against a plain one-model-at-a-time torch loop.

Both sides train the same models (same init, same subsets, same full-batch Adam steps); the
baseline is what one would write first: per model, its subset x[mask], autograd and
torch.optim.Adam. The baseline is slow, so it trains the first --baseline-models models only
and its rate is per model. Prints both rates, the ratio, test accuracy, and the margin
differences between the two on the models both trained (the MLP's 100-step trajectory is
sensitive to float rounding: a float32 and a float64 run of the same one-model loop differ by
as much, up to ~0.5 on margins of ~4, while the median difference stays ~1e-5).

    .venv/bin/python bench/bench_train.py --kind linear --models 1024
    .venv/bin/python bench/bench_train.py --kind mlp --models 256 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference trainer

from dmdb.demo import DEFAULTS, KINDS, DigitsData, load_digits_split, train_models  # noqa: E402
from reference_train import train_one  # noqa: E402


def one_at_a_time(data: DigitsData, masks: np.ndarray, seeds: np.ndarray, kind: str, steps: int, lr: float,
                  wd: float, hidden: int) -> np.ndarray:
    """The baseline: each model alone, by the tests' reference trainer; (models, targets) margins."""
    return np.stack([train_one(data, mask, int(seed), kind, steps, lr, wd, hidden)[0]
                     for mask, seed in zip(masks, seeds)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=[*KINDS, "both"], default="both")
    ap.add_argument("--models", type=int, default=512, help="models trained batched")
    ap.add_argument("--baseline-models", type=int, default=16, help="models trained one at a time")
    ap.add_argument("--steps", type=int, default=None, help="Adam steps (default: the kind's default)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--batch-models", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both sides")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_digits_split()
    rng = np.random.default_rng(0)
    k = int(round(args.alpha * data.n_train))
    masks = np.stack([rng.permutation(data.n_train) < k for _ in range(args.models)])
    seeds = np.arange(args.models)
    print(f"digits: N={data.n_train} train, T={data.n_targets} targets, alpha={args.alpha}, "
          f"torch threads={torch.get_num_threads()}")
    kinds = KINDS if args.kind == "both" else (args.kind,)
    for kind in kinds:
        cfg = DEFAULTS[kind]
        steps = cfg.steps if args.steps is None else args.steps
        extra = {} if args.batch_models is None else {"batch_models": args.batch_models}
        # Warm up both sides (first calls pay for lazy imports and kernel selection).
        train_models(data, masks[:2], seeds[:2], kind, steps=2)
        one_at_a_time(data, masks[:1], seeds[:1], kind, 2, cfg.lr, cfg.weight_decay, cfg.hidden)
        t0 = time.perf_counter()
        res = train_models(data, masks, seeds, kind, steps=steps, **extra)
        t_batched = time.perf_counter() - t0
        nb = min(args.baseline_models, args.models)
        t0 = time.perf_counter()
        base = one_at_a_time(data, masks[:nb], seeds[:nb], kind, steps, cfg.lr, cfg.weight_decay, cfg.hidden)
        t_base = time.perf_counter() - t0
        r_batched, r_base = args.models / t_batched, nb / t_base
        absdiff = np.abs(base - res.margins[:nb])
        print(f"{kind} (steps={steps}, lr={cfg.lr}, weight_decay={cfg.weight_decay}"
              + (f", hidden={cfg.hidden}" if kind == "mlp" else "") + ")")
        print(f"  batched:        {args.models:6d} models in {t_batched:7.2f} s = {r_batched:8.1f} models/s")
        print(f"  one at a time:  {nb:6d} models in {t_base:7.2f} s = {r_base:8.1f} models/s")
        print(f"  ratio: {r_batched / r_base:.1f}x   test accuracy mean {res.accuracy.mean():.4f} "
              f"(min {res.accuracy.min():.4f})   |margin diff| vs one-at-a-time: "
              f"median {np.median(absdiff):.1e}, max {absdiff.max():.1e}")


if __name__ == "__main__":
    main()
