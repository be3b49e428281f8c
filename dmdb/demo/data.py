"""scikit-learn's digits as a datamodels experiment: a fixed train set S and the rest as targets.

The digits ship inside scikit-learn (1,797 8x8 grey images, 10 classes, about 180 per class), so
the demo needs no download. The default split keeps 1,000 examples as the train set S (N = 1,000
mask bits per run) and the other 797 as targets (T = 797 margins per run): large enough that a
model trained on half of S (500 images) still reaches about 95% test accuracy, small enough that
thousands of runs train in minutes on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmdb.errors import BadInputError

N_DIGITS = 1797
DEFAULT_N_TRAIN = 1000
DEFAULT_SPLIT_SEED = 0


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class DigitsData:
    """One train/target split of the digits; arrays are read-only so the split cannot drift.

    x_*: float32 features in [0, 1] (pixel / 16), shape (n, 64).
    y_*: int64 labels 0..9.
    images_*: uint8 (n, 8, 8) images scaled to 0..255 (pixel * 255 / 16, rounded), for payloads.
    source_*: int64 row index of each example in ``sklearn.datasets.load_digits()``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    images_train: np.ndarray
    images_test: np.ndarray
    source_train: np.ndarray
    source_test: np.ndarray
    seed: int
    n_classes: int = 10

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def load_digits_split(
    n_train: int = DEFAULT_N_TRAIN, n_targets: int | None = None, seed: int = DEFAULT_SPLIT_SEED
) -> DigitsData:
    """The digits split into a train set of ``n_train`` and targets (the rest, or the first ``n_targets`` of it).

    The split is stratified by class and a pure function of ``seed`` (a permutation from
    ``numpy.random.default_rng(seed)`` within each class), so every process that builds the same
    experiment sees the same examples in the same order.
    """
    from sklearn.datasets import load_digits

    if not 10 <= n_train <= N_DIGITS - 10:
        raise BadInputError(f"n_train must be between 10 and {N_DIGITS - 10}, got {n_train}")
    n_rest = N_DIGITS - n_train
    if n_targets is None:
        n_targets = n_rest
    if not 1 <= n_targets <= n_rest:
        raise BadInputError(f"n_targets must be between 1 and {n_rest} when n_train={n_train}, got {n_targets}")

    bunch = load_digits()
    x_all = np.asarray(bunch.data, dtype=np.float64)
    y_all = np.asarray(bunch.target, dtype=np.int64)
    img_all = np.asarray(bunch.images, dtype=np.float64)

    # Stratified split: each class contributes to S in proportion to its size (largest remainders
    # go to the classes whose fractional share is largest, ties by class id).
    rng = np.random.default_rng(seed)
    classes = np.arange(10)
    per_class = [np.flatnonzero(y_all == c) for c in classes]
    share = np.array([len(p) for p in per_class], dtype=np.float64) * n_train / N_DIGITS
    take = np.floor(share).astype(np.int64)
    order = np.lexsort((classes, -(share - take)))
    take[order[: n_train - int(take.sum())]] += 1
    train_idx, test_idx = [], []
    for c in classes:
        perm = per_class[c][rng.permutation(len(per_class[c]))]
        train_idx.append(perm[: take[c]])
        test_idx.append(perm[take[c] :])
    # Shuffle across classes so that index order carries no label information.
    train = np.concatenate(train_idx)
    train = train[rng.permutation(len(train))]
    test = np.concatenate(test_idx)
    test = test[rng.permutation(len(test))][:n_targets]

    def feats(idx: np.ndarray) -> np.ndarray:
        return (x_all[idx] / 16.0).astype(np.float32)

    def imgs(idx: np.ndarray) -> np.ndarray:
        return np.rint(img_all[idx] * (255.0 / 16.0)).astype(np.uint8)

    return DigitsData(
        x_train=_frozen(feats(train)),
        y_train=_frozen(y_all[train]),
        x_test=_frozen(feats(test)),
        y_test=_frozen(y_all[test]),
        images_train=_frozen(imgs(train)),
        images_test=_frozen(imgs(test)),
        source_train=_frozen(train.astype(np.int64)),
        source_test=_frozen(test.astype(np.int64)),
        seed=int(seed),
    )
