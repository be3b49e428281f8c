"""The maths of the embeddings, on X, the (targets x train) matrix of L2-normalised weight vectors
(a target with no nonzero weights stays the zero vector), without forming a dense targets x
targets matrix:

* PCA: centred over targets. Components are unit vectors in train-example space (loadings; sign
  fixed so that the largest |loading| is positive); a target's value on a component is its
  projection (score). explained_variance = s^2 / (T - 1); the ratio is over the total variance of X.
* Spectral clustering (Ng, Jordan & Weiss) with affinity A = (1 + cos) / 2, which is >= 0 and
  equals 1/2 (1 1^T + X X^T): a low-rank product, so the normalised affinity D^-1/2 A D^-1/2 has
  the left singular vectors of D^-1/2 [1, X] / sqrt(2) as eigenvectors. Its top n_clusters
  eigenvectors, rows normalised, go to k-means (scikit-learn, seeded). Clusters are numbered by
  their smallest target id, so results do not depend on k-means' label order.

method="auto" uses a seeded randomized SVD with power iterations (Halko, Martinsson & Tropp) over
sparse products, and an exact dense SVD only where that is as cheap: tiny matrices (targets x train x
min of the two <= 1e7), or when the r + 12 vectors the randomized one works with are a quarter or more
of min(targets, train). A 2-component PCA of 800 targets x 1000 train examples is thus randomized
(its scores within 0.004 of the exact ones on the demo fits; the full SVD took seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ..errors import BadInputError
from .weights import FitWeights

EXACT_MAX_WORK = 10_000_000  # m * n * min(m, n) of a dense SVD that takes milliseconds
OVERSAMPLE = 12  # extra random vectors of the randomized SVD


@dataclass
class _Op:
    """A linear operator of shape (m, n) given by its products with blocks of vectors."""

    shape: tuple[int, int]
    matmat: Callable[[np.ndarray], np.ndarray]  # (n, r) -> (m, r)
    rmatmat: Callable[[np.ndarray], np.ndarray]  # (m, r) -> (n, r)
    dense: Callable[[], np.ndarray]


def _svd(op: _Op, r: int, method: str, seed: int, n_iter: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-r singular triplets (U, s, Vt) of op, exactly or randomized."""
    m, n = op.shape
    if method == "exact":
        U, s, Vt = np.linalg.svd(op.dense(), full_matrices=False)
        return U[:, :r], s[:r], Vt[:r]
    rng = np.random.default_rng(seed)
    ell = min(r + OVERSAMPLE, m, n)
    # one BLAS thread: on ell-column blocks threads only add overhead, and on a busy machine they made
    # a 2-component PCA of 797 x 1000 take 2 s instead of 0.2-0.3 s
    with threadpool_limits(1):
        Q, _ = np.linalg.qr(op.matmat(rng.standard_normal((n, ell))))
        for _ in range(n_iter):
            Q2, _ = np.linalg.qr(op.rmatmat(Q))
            Q, _ = np.linalg.qr(op.matmat(Q2))
        B = op.rmatmat(Q).T  # (ell, n) = Q^T A
        Ub, s, Vt = np.linalg.svd(B, full_matrices=False)
    return (Q @ Ub)[:, :r], s[:r], Vt[:r]


def normalised_rows(fw: FitWeights) -> sp.csr_matrix:
    """(targets x train) with each target's weight vector scaled to unit L2 norm."""
    X = fw.csc.T.tocsr()  # csc of (train x T) transposed is csr of (T x train)
    norms = fw.norms
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.diags(inv) @ X


def pca(X: sp.csr_matrix, n_components: int, *, method: str = "auto",
        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """PCA of the rows of X (centred). Returns (scores T x c, singular values, loadings c x N,
    explained_variance, explained_variance_ratio, method used)."""
    T, N = X.shape
    method = _method(method, T, N, n_components)
    mu = np.asarray(X.mean(axis=0)).ravel()
    ones = np.ones(T)
    XT = X.T.tocsr()  # row-major both ways: scipy's transposed products are slower
    op = _Op(
        (T, N),
        lambda V: X @ V - np.outer(ones, mu @ V),
        lambda U: XT @ U - np.outer(mu, ones @ U),
        lambda: X.toarray() - mu,
    )
    U, s, Vt = _svd(op, n_components, method, seed)
    # sign: the largest |loading| of each component is positive
    flip = np.sign(Vt[np.arange(len(s)), np.argmax(np.abs(Vt), axis=1)])
    flip[flip == 0] = 1
    U, Vt = U * flip, Vt * flip[:, None]
    total = float(X.multiply(X).sum() - T * (mu @ mu))
    ev = s**2 / max(T - 1, 1)
    ratio = s**2 / total if total > 0 else np.zeros_like(s)
    return U * s, s, Vt, ev, ratio, method


def spectral_clusters(X: sp.csr_matrix, n_clusters: int, *, method: str = "auto", seed: int = 0) -> np.ndarray:
    """Cluster the rows of X (unit or zero vectors) with affinity (1 + cos) / 2; labels 0..n-1."""
    from sklearn.cluster import KMeans

    T, N = X.shape
    method = _method(method, T, N + 1, n_clusters)
    colsum = np.asarray(X.sum(axis=0)).ravel()
    d = 0.5 * (T + X @ colsum)  # row sums of A, diagonal included; >= 1/2 since A >= 0 and A_ii >= 1/2
    s = 1.0 / np.sqrt(d)
    h = np.sqrt(0.5)
    XT = X.T.tocsr()

    def matmat(V: np.ndarray) -> np.ndarray:
        return (s * h)[:, None] * (np.outer(np.ones(T), V[0]) + X @ V[1:])

    def rmatmat(U: np.ndarray) -> np.ndarray:
        SU = (s * h)[:, None] * U
        return np.vstack([SU.sum(axis=0)[None, :], XT @ SU])

    def dense() -> np.ndarray:
        return (s * h)[:, None] * np.hstack([np.ones((T, 1)), X.toarray()])

    U, _, _ = _svd(_Op((T, N + 1), matmat, rmatmat, dense), n_clusters, method, seed)
    rn = np.linalg.norm(U, axis=1, keepdims=True)
    E = np.divide(U, rn, out=np.zeros_like(U), where=rn > 0)
    raw = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(E)
    # renumber by each cluster's smallest member
    first = {c: np.flatnonzero(raw == c)[0] for c in np.unique(raw)}
    order = sorted(first, key=first.get)
    remap = np.empty(raw.max() + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[raw]


def _method(method: str, m: int, n: int, r: int) -> str:
    """The SVD that `method` means for the top r triplets of an m x n matrix (see the module doc)."""
    if method not in ("auto", "exact", "randomized"):
        raise BadInputError(f"method must be auto, exact or randomized, got {method!r}")
    if method == "auto":
        k = min(m, n)
        tiny = m * n * k <= EXACT_MAX_WORK
        return "exact" if tiny or 4 * min(r + OVERSAMPLE, k) >= k else "randomized"
    return method
