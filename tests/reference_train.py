"""The plain one-model-at-a-time digits trainer: autograd and torch.optim.Adam, nothing batched.

It is the oracle of tests/test_demo_train.py (the batched trainer must match it) and the baseline
of bench/bench_train.py (the batched trainer must beat it); one copy serves both. A plain module,
as tests/runs_util.py is: tests import it by name, the benchmark puts tests/ on sys.path.
"""

from __future__ import annotations

import numpy as np
import torch

from dmdb.demo import DigitsData, init_params


def train_one(data: DigitsData, mask: np.ndarray, seed: int, kind: str, steps: int, lr: float, wd: float,
              hidden: int) -> tuple[np.ndarray, float]:
    """One model on data.x_train[mask]: full-batch Adam on mean cross-entropy + 0.5*wd*||weights||^2.

    Returns its margins on the targets (correct-class logit minus the largest other) and its test accuracy.
    """
    p = {k: v.clone().requires_grad_(True)
         for k, v in init_params(kind, int(seed), data.n_features, data.n_classes, hidden).items()}
    x = torch.tensor(data.x_train[mask])
    y = torch.tensor(data.y_train[mask])

    def logits(inp: torch.Tensor) -> torch.Tensor:
        if kind == "linear":
            return inp @ p["w"].T + p["b"]
        return torch.relu(inp @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]

    opt = torch.optim.Adam(list(p.values()), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits(x), y)
        loss = loss + 0.5 * wd * sum((v**2).sum() for k, v in p.items() if k.startswith("w"))
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = logits(torch.tensor(data.x_test)).numpy()
    yt = data.y_test
    correct = z[np.arange(len(yt)), yt]
    others = z.copy()
    others[np.arange(len(yt)), yt] = -np.inf
    return correct - others.max(1), float((z.argmax(1) == yt).mean())
