"""The batched digits trainer against a one-model-at-a-time autograd reference, and the split it trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmdb.demo import DEFAULTS, TrainResult, load_digits_split, margins_from_logits, train_models
from dmdb.errors import BadInputError

from reference_train import train_one


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


def _half_masks(n_models: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) < n // 2 for _ in range(n_models)])


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_batched_equals_one_model_at_a_time(data, kind):
    # Three different subsets, of different sizes, so the padded gather is exercised too.
    rng = np.random.default_rng(1)
    n = data.n_train
    masks = np.stack([rng.random(n) < a for a in (0.3, 0.5, 0.8)])
    seeds = [11, 22, 33]
    steps, lr, wd, hidden = 40, DEFAULTS[kind].lr, 1e-3, 16
    got = train_models(data, masks, seeds, kind, steps=steps, lr=lr, weight_decay=wd, hidden=hidden, batch_models=2)
    for b in range(3):
        want_m, want_acc = train_one(data, masks[b], seeds[b], kind, steps, lr, wd, hidden)
        np.testing.assert_allclose(got.margins[b], want_m, rtol=1e-4, atol=1e-4)
        assert got.accuracy[b] == pytest.approx(want_acc, abs=2 / data.n_targets)
    # Chunking and model order do not change a model's result.
    again = train_models(data, masks[::-1], seeds[::-1], kind, steps=steps, lr=lr, weight_decay=wd, hidden=hidden)
    np.testing.assert_allclose(again.margins[::-1], got.margins, rtol=1e-4, atol=1e-4)


def test_same_seeds_same_result_and_seed_matters(data):
    masks = _half_masks(2, data.n_train, 0)
    a = train_models(data, masks, [1, 2], "mlp", steps=5)
    b = train_models(data, masks, [1, 2], "mlp", steps=5)
    c = train_models(data, masks, [3, 4], "mlp", steps=5)
    np.testing.assert_array_equal(a.margins, b.margins)
    assert not np.allclose(a.margins, c.margins)


def test_margin_definition_brute_force():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 7, 10)).astype(np.float32)
    y = rng.integers(0, 10, size=7)
    got = margins_from_logits(torch.tensor(z), torch.tensor(y)).numpy()
    for b in range(4):
        for t in range(7):
            others = [z[b, t, c] for c in range(10) if c != y[t]]
            assert got[b, t] == pytest.approx(z[b, t, y[t]] - max(others))


def test_margins_agree_with_accuracy(data):
    r = train_models(data, _half_masks(4, data.n_train, 2), [0, 1, 2, 3], "linear", steps=20)
    assert isinstance(r, TrainResult)
    assert r.margins.dtype == np.float32 and r.margins.shape == (4, data.n_targets)
    # The margin is positive exactly when the correct class wins.
    np.testing.assert_allclose((r.margins > 0).mean(1), r.accuracy, atol=1e-6)


@pytest.mark.parametrize("kind,threshold", [("linear", 0.93), ("mlp", 0.93)])
def test_half_subsets_reach_good_accuracy(data, kind, threshold):
    r = train_models(data, _half_masks(8, data.n_train, 3), np.arange(8), kind)
    assert r.accuracy.min() > threshold, r.accuracy
    assert r.config == DEFAULTS[kind]


def test_mask_really_restricts_the_data(data):
    # A model that never sees a 3 should almost never call a target a 3; the full-data model does.
    full = np.ones(data.n_train, dtype=bool)
    no_threes = data.y_train != 3
    r = train_models(data, np.stack([full, no_threes]), [5, 5], "linear")
    is3 = data.y_test == 3
    recall = (r.margins[:, is3] > 0).mean(1)
    assert recall[0] > 0.9
    assert recall[1] < 0.1
    # Other classes are barely affected.
    assert (r.margins[1, ~is3] > 0).mean() > 0.9


def test_progress_and_threads_restored(data):
    calls = []
    before = torch.get_num_threads()
    train_models(data, _half_masks(5, data.n_train, 4), np.arange(5), "linear", steps=2, batch_models=2,
                 threads=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "cnn"},
        {"masks": np.ones((2, 5), dtype=bool)},
        {"masks": np.ones((2, 1000), dtype=np.int8)},
        {"masks": np.zeros((2, 1000), dtype=bool)},
        {"seeds": [1]},
        {"seeds": [-1, 2]},
        {"steps": -1},
        {"lr": 0.0},
        {"batch_models": 0},
    ],
)
def test_bad_input_rejected(data, kwargs):
    args = {"masks": np.ones((2, data.n_train), dtype=bool), "seeds": [1, 2], "kind": "linear", **kwargs}
    with pytest.raises(BadInputError):
        train_models(data, **args)


def test_split_is_fixed_stratified_and_frozen():
    a, b = load_digits_split(), load_digits_split()
    assert (a.n_train, a.n_targets, a.n_features, a.n_classes) == (1000, 797, 64, 10)
    np.testing.assert_array_equal(a.source_train, b.source_train)
    assert not np.array_equal(a.source_train, load_digits_split(seed=1).source_train)
    # Disjoint and covering all 1,797 digits.
    assert len(np.union1d(a.source_train, a.source_test)) == 1797
    assert len(np.intersect1d(a.source_train, a.source_test)) == 0
    # Every class is in S in proportion to its size (within one example).
    from sklearn.datasets import load_digits

    y_all = load_digits().target
    np.testing.assert_array_equal(a.y_train, y_all[a.source_train])
    expect = np.bincount(y_all) * 1000 / 1797
    assert np.abs(np.bincount(a.y_train) - expect).max() < 1
    assert a.x_train.dtype == np.float32 and 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert a.y_train.dtype == np.int64
    assert a.images_train.dtype == np.uint8 and a.images_train.shape == (1000, 8, 8)
    np.testing.assert_array_equal(np.rint(a.x_train.reshape(-1, 8, 8) * 255), a.images_train)
    with pytest.raises(ValueError):
        a.x_train[0, 0] = 1.0
    assert load_digits_split(n_train=500, n_targets=100).n_targets == 100
    with pytest.raises(BadInputError):
        load_digits_split(n_train=1797)
