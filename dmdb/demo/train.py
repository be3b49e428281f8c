"""Train many small models at once: one batched computation over a model axis B.

Every model b has its own parameters (slices [b] of tensors shaped (B, ...)), its own random
initialisation (a ``torch.Generator`` seeded with ``seeds[b]``) and its own subset of the train
set (``masks[b]``). Its loss is the mean cross-entropy over ITS subset plus an L2 penalty
``0.5 * weight_decay * ||weights||^2`` (biases are not penalised), minimised by full-batch Adam
for a fixed number of steps. Because the models never interact, the batched run computes
exactly what B separate runs would, up to float summation order.

Gradients are written out by hand (softmax cross-entropy and one ReLU layer have short closed
forms) and Adam is applied elementwise with torch.optim.Adam's formula: no autograd graph, so
memory and per-step overhead stay small. Each model's subset is gathered into a padded
(B, K, features) block, K the largest subset in the chunk, padding weighted 0: at alpha = 0.5
this halves the work against weighting all N examples.

Noise: training is full-batch and deterministic, so a run's margins are a function of (subset,
seed) only. The linear model's L2-penalised loss is strictly convex, so every init heads for the
same optimum: with the defaults, the part of a margin that depends on the seed is about 6% of its
spread across subsets. The MLP keeps more (about 23%), which bounds how well any datamodel can
predict it. Linear datamodels fit best when the margin is a function of the subset, so there is
no mini-batch sampling: it would only add variance that no datamodel can explain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import numpy as np
import torch

from dmdb.errors import BadInputError

from .kinds import KINDS

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# The linear model's loss is strictly convex, so its init only adds noise that training must wash
# out: a small init (std 0.01, not 1/sqrt(features) = 0.125) cuts the init-dependent part of the
# margins after 100 steps from 13% to 6% of their spread across subsets (measured on the digits).
LINEAR_INIT_STD = 0.01


@dataclass(frozen=True)
class TrainConfig:
    """What a run's training did; recorded with the experiment so runs can be reproduced."""

    kind: str
    steps: int
    lr: float
    weight_decay: float
    hidden: int  # hidden units of the MLP; 0 for the linear model


# Chosen on the digits split (1,000 train, 797 targets) at alpha = 0.5 (500 examples a model),
# measured on 2 shared CPU cores, one torch thread, 64 models:
#   linear: mean target accuracy 0.959 (full data 0.963), ~100 models/s; init-dependent part of
#           the margins 6% of their spread across subsets.
#   mlp:    accuracy 0.961 (full data 0.969), ~20 models/s; init-dependent part 23% (35% with
#           weight_decay 1e-3: the stronger L2 makes the margins more a function of the subset).
# 50 linear steps give 0.956 at twice the speed but 16% init noise; 200 steps 0.959 and 4%.
DEFAULTS: dict[str, TrainConfig] = {
    "linear": TrainConfig(kind="linear", steps=100, lr=0.1, weight_decay=1e-3, hidden=0),
    "mlp": TrainConfig(kind="mlp", steps=100, lr=0.02, weight_decay=5e-3, hidden=64),
}
# Models per chunk: 32-64 keep the (B, units, K) activations near cache; 256 was 1.5x slower.
DEFAULT_BATCH_MODELS = 64


class TrainData(Protocol):
    """Anything with train and target arrays (``DigitsData`` is one)."""

    @property
    def x_train(self) -> np.ndarray: ...
    @property
    def y_train(self) -> np.ndarray: ...
    @property
    def x_test(self) -> np.ndarray: ...
    @property
    def y_test(self) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Per model: margins on every target (float32 (B, T)) and target accuracy (float32 (B,))."""

    margins: np.ndarray
    accuracy: np.ndarray
    config: TrainConfig


def init_params(
    kind: str, seed: int, n_features: int, n_classes: int, hidden: int = 64
) -> dict[str, torch.Tensor]:
    """The initial parameters of one model, a pure function of ``seed`` (float32, on the CPU).

    Weights are shaped (out, in) as in ``torch.nn.Linear``: logits = x @ w.T + b. Draw order from
    ``torch.Generator().manual_seed(seed)``: linear: w (classes, features) with std
    ``LINEAR_INIT_STD``; mlp: w1 (hidden, features) with std sqrt(2/features) (He, for ReLU), then
    w2 (classes, hidden) with std 1/sqrt(hidden). Biases start at zero.
    """
    _check_kind(kind)
    g = torch.Generator().manual_seed(int(seed))
    if kind == "linear":
        w = torch.randn(n_classes, n_features, generator=g) * LINEAR_INIT_STD
        return {"w": w, "b": torch.zeros(n_classes)}
    w1 = torch.randn(hidden, n_features, generator=g) * math.sqrt(2.0 / n_features)
    w2 = torch.randn(n_classes, hidden, generator=g) * (1.0 / math.sqrt(hidden))
    return {"w1": w1, "b1": torch.zeros(hidden), "w2": w2, "b2": torch.zeros(n_classes)}


def margins_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct-class logit minus the largest other logit, over the last axis of ``logits`` (..., T, C)."""
    lab = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    correct = logits.gather(-1, lab).squeeze(-1)
    others = logits.scatter(-1, lab, float("-inf"))
    return correct - others.amax(-1)


def train_models(
    data: TrainData,
    masks: np.ndarray,
    seeds: np.ndarray | list[int],
    kind: str = "linear",
    *,
    steps: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    hidden: int | None = None,
    device: str | torch.device | None = None,
    batch_models: int = DEFAULT_BATCH_MODELS,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train one model per row of ``masks`` (bool (B, N)) from ``seeds[b]``; return their target margins.

    Arguments left as None take ``DEFAULTS[kind]``. Models are trained ``batch_models`` at a
    time to bound memory (about B*K*(features + 3*hidden)*4 bytes a chunk, K the largest subset);
    ``progress(done, total)`` is called after each chunk. ``device`` None means CUDA when
    available, else the CPU; initialisation always happens on the CPU so it is identical anywhere.
    ``threads`` sets torch's intra-op threads for the call (restored afterwards); None leaves it.
    On a CPU shared with other busy processes, 1 thread can be several times faster than 2:
    every small parallel op then waits for a descheduled worker thread.
    """
    _check_kind(kind)
    base = DEFAULTS[kind]
    cfg = replace(
        base,
        steps=base.steps if steps is None else int(steps),
        lr=base.lr if lr is None else float(lr),
        weight_decay=base.weight_decay if weight_decay is None else float(weight_decay),
        hidden=0 if kind == "linear" else (base.hidden if hidden is None else int(hidden)),
    )
    if cfg.steps < 0:
        raise BadInputError(f"steps must be >= 0, got {cfg.steps}")
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise BadInputError(f"lr must be a positive number, got {cfg.lr}")
    if not cfg.weight_decay >= 0 or not math.isfinite(cfg.weight_decay):
        raise BadInputError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if kind == "mlp" and cfg.hidden < 1:
        raise BadInputError(f"hidden must be >= 1 for the mlp, got {cfg.hidden}")
    if batch_models < 1:
        raise BadInputError(f"batch_models must be >= 1, got {batch_models}")
    if threads is not None and threads < 1:
        raise BadInputError(f"threads must be >= 1, got {threads}")

    x_train = np.asarray(data.x_train, dtype=np.float32)
    y_train = np.asarray(data.y_train)
    x_test = np.asarray(data.x_test, dtype=np.float32)
    y_test = np.asarray(data.y_test)
    n, f = x_train.shape
    masks = np.asarray(masks)
    if masks.dtype != np.bool_ or masks.ndim != 2 or masks.shape[1] != n:
        raise BadInputError(f"masks must be a bool array of shape (models, {n}), got {masks.dtype} {masks.shape}")
    seeds_arr = np.asarray(seeds)
    if seeds_arr.size == 0:
        seeds_arr = seeds_arr.astype(np.int64)
    if seeds_arr.shape != (masks.shape[0],) or not np.issubdtype(seeds_arr.dtype, np.integer):
        raise BadInputError(f"seeds must be {masks.shape[0]} integers, one per mask row, got {seeds_arr.dtype} {seeds_arr.shape}")
    if seeds_arr.size and (seeds_arr.min() < 0 or seeds_arr.max() >= 2**63):
        raise BadInputError("seeds must be in [0, 2**63)")
    counts = masks.sum(axis=1)
    if counts.size and counts.min() == 0:
        raise BadInputError(f"mask row {int(np.argmin(counts))} selects no train example; every model needs at least one")
    n_classes = int(getattr(data, "n_classes", max(y_train.max(initial=0), y_test.max(initial=0)) + 1))
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise BadInputError(f"{name} must hold labels in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    if x_test.shape[1] != f or y_train.shape != (n,) or y_test.shape != (x_test.shape[0],):
        raise BadInputError(
            f"data shapes disagree: x_train {x_train.shape}, y_train {y_train.shape}, x_test {x_test.shape}, y_test {y_test.shape}"
        )

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    xtr = torch.from_numpy(x_train.copy()).to(dev)
    ytr = torch.from_numpy(y_train.astype(np.int64)).to(dev)
    xte_t = torch.from_numpy(x_test.T.copy()).to(dev)
    yte = torch.from_numpy(y_test.astype(np.int64)).to(dev)

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        margins, accuracy = _train_chunks(
            kind, cfg, xtr, ytr, xte_t, yte, masks, seeds_arr, n_classes, batch_models, progress
        )
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)
    return TrainResult(margins=margins, accuracy=accuracy, config=cfg)


def _train_chunks(
    kind: str,
    cfg: TrainConfig,
    xtr: torch.Tensor,
    ytr: torch.Tensor,
    xte_t: torch.Tensor,
    yte: torch.Tensor,
    masks: np.ndarray,
    seeds_arr: np.ndarray,
    n_classes: int,
    batch_models: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    dev = xtr.device
    f = xtr.shape[1]
    total = masks.shape[0]
    margins = np.empty((total, xte_t.shape[1]), dtype=np.float32)
    accuracy = np.empty(total, dtype=np.float32)
    for start in range(0, total, batch_models):
        stop = min(start + batch_models, total)
        params = _stack_init(kind, seeds_arr[start:stop], f, n_classes, cfg.hidden, dev)
        xs, ys, ws = _gather_subsets(xtr, ytr, masks[start:stop], dev)
        _adam(kind, params, xs, ys, ws, n_classes, cfg)
        with torch.no_grad():
            logits = _forward(kind, params, xte_t.expand(stop - start, -1, -1)).transpose(1, 2)
            m = margins_from_logits(logits, yte)
            acc = (logits.argmax(-1) == yte).float().mean(-1)
        margins[start:stop] = m.cpu().numpy()
        accuracy[start:stop] = acc.cpu().numpy()
        if progress is not None:
            progress(stop, total)
    return margins, accuracy


# --- internals -------------------------------------------------------------------------------
#
# Layout: activations are kept "feature-major", (B, units, K) with the K examples innermost, so
# the softmax over 10 classes reduces along a strided axis while vectorising over examples:
# measured 15x faster than torch.softmax over a last axis of size 10. Biases are (B, units, 1).


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise BadInputError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")


def _stack_init(kind: str, seeds: np.ndarray, f: int, c: int, hidden: int, dev: torch.device) -> dict[str, torch.Tensor]:
    per_model = [init_params(kind, int(s), f, c, hidden) for s in seeds]
    out = {}
    for name in per_model[0]:
        t = torch.stack([p[name] for p in per_model])
        out[name] = (t.unsqueeze(-1) if t.dim() == 2 else t).to(dev)
    return out


def _gather_subsets(
    x: torch.Tensor, y: torch.Tensor, masks: np.ndarray, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each model's examples as a padded block: xs (B, K, F), ys (B, K), weights ws (B, K) summing to 1 per model."""
    counts = masks.sum(axis=1)
    k = int(counts.max())
    # Stable argsort on ~mask puts each row's selected indices first, in increasing order.
    idx = np.argsort(~masks, axis=1, kind="stable")[:, :k]
    valid = np.arange(k)[None, :] < counts[:, None]
    idx_t = torch.from_numpy(np.where(valid, idx, 0)).to(dev)
    ws = torch.from_numpy((valid / counts[:, None]).astype(np.float32)).to(dev)
    return x[idx_t], y[idx_t], ws


def _forward(kind: str, p: dict[str, torch.Tensor], xt: torch.Tensor) -> torch.Tensor:
    """Logits (B, C, K) from inputs xt (B, F, K)."""
    if kind == "linear":
        return torch.baddbmm(p["b"], p["w"], xt)
    h = torch.relu(torch.baddbmm(p["b1"], p["w1"], xt))
    return torch.baddbmm(p["b2"], p["w2"], h)


def _softmax_classes(z: torch.Tensor) -> torch.Tensor:
    """Softmax over axis 1 of (B, C, K), in place."""
    z.sub_(z.amax(1, keepdim=True)).exp_()
    return z.div_(z.sum(1, keepdim=True))


def _grads(
    kind: str,
    p: dict[str, torch.Tensor],
    xs: torch.Tensor,
    xt: torch.Tensor,
    onehot_w: torch.Tensor,
    ws: torch.Tensor,
    wd: float,
) -> dict[str, torch.Tensor]:
    """Gradient of each model's loss: weighted-mean cross-entropy over its subset + 0.5*wd*||w||^2.

    xs (B, K, F) and xt (B, F, K) are the same inputs in both layouts; onehot_w (B, C, K) is the
    one-hot label times the example weight, ws (B, 1, K) the example weight.
    """
    if kind == "linear":
        z = torch.baddbmm(p["b"], p["w"], xt)
    else:
        h = torch.baddbmm(p["b1"], p["w1"], xt).clamp_min_(0.0)
        z = torch.baddbmm(p["b2"], p["w2"], h)
    # dLoss/dz = weight * (softmax(z) - onehot(y)), in z's buffer.
    g = _softmax_classes(z).mul_(ws).sub_(onehot_w)
    if kind == "linear":
        return {"w": torch.baddbmm(p["w"], g, xs, beta=wd), "b": g.sum(2, keepdim=True)}
    gw2 = torch.baddbmm(p["w2"], g, h.transpose(1, 2), beta=wd)
    # ReLU backward: keep the gradient where the unit was on (h > 0). aten's fused kernel is
    # measured 4-10x faster here than masked_fill_ or torch.where with a bool mask.
    dh = torch.ops.aten.threshold_backward(torch.bmm(p["w2"].transpose(1, 2), g), h, 0.0)
    gw1 = torch.baddbmm(p["w1"], dh, xs, beta=wd)
    return {"w1": gw1, "b1": dh.sum(2, keepdim=True), "w2": gw2, "b2": g.sum(2, keepdim=True)}


def _adam(
    kind: str,
    p: dict[str, torch.Tensor],
    xs: torch.Tensor,
    ys: torch.Tensor,
    ws: torch.Tensor,
    n_classes: int,
    cfg: TrainConfig,
) -> None:
    """Full-batch Adam, elementwise exactly as torch.optim.Adam (no amsgrad, L2 folded into the gradient)."""
    b1, b2 = ADAM_BETAS
    xt = xs.transpose(1, 2).contiguous()
    ws3 = ws.unsqueeze(1)
    onehot_w = torch.zeros(xs.shape[0], n_classes, xs.shape[1], dtype=xs.dtype, device=xs.device)
    onehot_w.scatter_(1, ys.unsqueeze(1), ws3)
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    with torch.no_grad():
        for step in range(1, cfg.steps + 1):
            grads = _grads(kind, p, xs, xt, onehot_w, ws3, cfg.weight_decay)
            bc1 = 1.0 - b1**step
            bc2_sqrt = math.sqrt(1.0 - b2**step)
            for k, g in grads.items():
                m[k].lerp_(g, 1.0 - b1)
                v[k].mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = (v[k].sqrt() / bc2_sqrt).add_(ADAM_EPS)
                p[k].addcdiv_(m[k], denom, value=-cfg.lr / bc1)
