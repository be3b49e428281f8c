"""A fit's weights as a sparse (or dense) matrix, loaded once and cached per connection.

Every analysis reads the same thing: the fit's targets, their biases and the nonzero weights in
raw 0/1 mask units. Loading 10M weight rows takes a fraction of a second; an interactive session
(the TUI, a notebook) asks many questions of one fit, so the matrix is cached and revalidated with
one cheap query per call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..errors import BadInputError, DmdbError
from ..interrupt import arrow_table, fetchall
from ..validate import is_int

if TYPE_CHECKING:
    from ..store import Database


@dataclass(frozen=True)
class FitInfo:
    """Which fit, of which experiment, over how many train examples."""

    fit_id: int
    experiment: str
    estimator: str
    n_train: int


@dataclass
class FitWeights:
    """One fit's datamodels: W is (n_train x n_targets_in_fit), column j is target `targets[j]`.

    The prediction for a mask m (0/1 per train example) is ``bias[j] + m @ W[:, j]``.
    """

    info: FitInfo
    targets: np.ndarray  # int64, sorted target ids of the fit
    bias: np.ndarray  # float64, aligned with targets
    csr: sp.csr_matrix  # rows = train examples: fast row slices (removal sets)
    _csc: sp.csc_matrix | None = field(default=None, repr=False)
    _norms: np.ndarray | None = field(default=None, repr=False)
    _colsum: np.ndarray | None = field(default=None, repr=False)

    @property
    def fit_id(self) -> int:
        return self.info.fit_id

    @property
    def n_train(self) -> int:
        return self.info.n_train

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    @property
    def csc(self) -> sp.csc_matrix:
        """Columns = targets: fast access to one target's weights."""
        if self._csc is None:
            self._csc = self.csr.tocsc()
        return self._csc

    @property
    def norms(self) -> np.ndarray:
        """L2 norm of each target's weight vector."""
        if self._norms is None:
            sq = self.csr.multiply(self.csr).sum(axis=0)
            self._norms = np.sqrt(np.asarray(sq).ravel())
        return self._norms

    @property
    def base_margin(self) -> np.ndarray:
        """Predicted margin with the full train set kept: bias + sum of all weights."""
        if self._colsum is None:
            self._colsum = np.asarray(self.csr.sum(axis=0)).ravel()
        return self.bias + self._colsum

    def col(self, target: int) -> int:
        """Column position of a target id; BadInputError if the fit has no such target."""
        if not is_int(target):
            # a str '0' or a float would reach searchsorted and be reported as a missing target
            raise BadInputError(f"target must be an integer target id, got {target!r} ({type(target).__name__})")
        j = int(np.searchsorted(self.targets, target))
        if j >= len(self.targets) or self.targets[j] != target:
            from ..fit.selection import format_id_list  # dmdb.fit imports this module

            ids = format_id_list(self.targets) or "none"  # '1,3,5-7': a range 1..7 would suggest a target 2
            raise BadInputError(
                f"fit {self.fit_id} has no target {target} (it has {len(self.targets)} targets, "
                f"ids {ids if len(ids) <= 60 else ids[:57] + '...'}); "
                "name a fit that has it with fit= (CLI: --fit; `dmdb fits` lists them)"
            )
        return j

    def column(self, target: int) -> tuple[np.ndarray, np.ndarray]:
        """(train_idx, weight) of one target's nonzero weights, train_idx ascending."""
        j = self.col(target)
        c = self.csc
        lo, hi = c.indptr[j], c.indptr[j + 1]
        order = np.argsort(c.indices[lo:hi], kind="stable")
        return c.indices[lo:hi][order].astype(np.int64), c.data[lo:hi][order]

    def dense_column(self, target: int) -> np.ndarray:
        idx, w = self.column(target)
        out = np.zeros(self.n_train)
        out[idx] = w
        return out

    def dense(self) -> np.ndarray:
        """(n_train x n_targets) float64. Only for small fits: 50k x 10k is 4 GB."""
        return self.csr.toarray()


def resolve_fit(db: "Database", fit: int | None) -> FitInfo:
    """The fit with this id, or the latest one (highest fit_id) when fit is None."""
    con = db.con
    if fit is None:
        latest = fetchall(con, "SELECT max(fit_id) FROM fits")[0][0]
        if latest is None:
            raise DmdbError(f"{db.path} has no fits yet; run `dmdb fit` first")
        fit = int(latest)
    if isinstance(fit, (bool, np.bool_)) or (isinstance(fit, (float, np.floating)) and not float(fit).is_integer()):
        raise BadInputError(f"fit must be an integer fit id, got {fit!r}")  # int() would make 1.7 fit 1
    try:
        fit = int(fit)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"fit must be an integer fit id, got {fit!r}") from e
    rows = fetchall(
        con,
        "SELECT f.fit_id, f.experiment, f.estimator, e.n_train FROM fits f "
        "LEFT JOIN experiments e ON e.name = f.experiment WHERE f.fit_id = ?",
        [fit],
    )
    row = rows[0] if rows else None
    if row is None:
        known = [r[0] for r in fetchall(con, "SELECT fit_id FROM fits ORDER BY fit_id")]
        hint = f"known fit ids: {', '.join(map(str, known[-20:]))}" if known else "there are no fits yet"
        raise BadInputError(f"no fit {fit} in {db.path} ({hint}; `dmdb fits` lists them)")
    if row[3] is None:
        raise DmdbError(f"fit {fit} belongs to experiment {row[1]!r}, which is missing from {db.path}")
    return FitInfo(int(row[0]), str(row[1]), str(row[2]), int(row[3]))


_CACHE: "OrderedDict[tuple[int, str, int], tuple[Any, FitWeights]]" = OrderedDict()
_CACHE_SIZE = 2
_LOCK = threading.Lock()


def _stamp(db: "Database", fit_id: int) -> tuple[Any, ...]:
    return fetchall(
        db.con,
        "SELECT (SELECT created_at FROM fits WHERE fit_id = $1), count(*), sum(nnz), sum(bias) "
        "FROM fit_targets WHERE fit_id = $1",
        [fit_id],
    )[0]


def load_weights(db: "Database", fit: int | None = None, *, cache: bool = True) -> FitWeights:
    """Load a fit (default: the latest) as a FitWeights; cached per connection and fit.

    The cache is revalidated on every call by the fit's target count, total nnz and bias sum, so a
    rewritten fit is reloaded.
    """
    info = resolve_fit(db, fit)
    stamp = _stamp(db, info.fit_id)
    key = (id(db.con), str(db.path), info.fit_id)
    if cache:
        with _LOCK:
            hit = _CACHE.get(key)
            if hit is not None and hit[0] == stamp:
                _CACHE.move_to_end(key)
                return hit[1]
    fw = _load(db, info)
    if cache:
        with _LOCK:
            _CACHE[key] = (stamp, fw)
            _CACHE.move_to_end(key)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return fw


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def _load(db: "Database", info: FitInfo) -> FitWeights:
    con = db.con
    ft = arrow_table(con, "SELECT target, bias FROM fit_targets WHERE fit_id = ? ORDER BY target", [info.fit_id])
    targets = ft.column("target").to_numpy().astype(np.int64)
    bias = ft.column("bias").to_numpy().astype(np.float64)
    if len(targets) == 0:
        raise DmdbError(f"fit {info.fit_id} has no rows in fit_targets; it is empty or was not written completely")
    tbl = arrow_table(con, "SELECT target, train_idx, weight FROM weights WHERE fit_id = ?", [info.fit_id])
    t = tbl.column("target").to_numpy()
    i = tbl.column("train_idx").to_numpy()
    w = tbl.column("weight").to_numpy().astype(np.float64)
    if len(t):
        cols = np.searchsorted(targets, t)
        bad = (cols >= len(targets)) | (targets[np.minimum(cols, len(targets) - 1)] != t)
        if bad.any():
            raise DmdbError(
                f"fit {info.fit_id} has weights for target {int(t[bad][0])}, which is not in fit_targets"
            )
        if i.min() < 0 or i.max() >= info.n_train:
            raise DmdbError(
                f"fit {info.fit_id} has a weight for train example {int(i.max() if i.max() >= info.n_train else i.min())}, "
                f"outside 0..{info.n_train - 1}"
            )
    else:
        cols = np.zeros(0, dtype=np.int64)
    csr = sp.csr_matrix((w, (i, cols)), shape=(info.n_train, len(targets)))
    csr.sum_duplicates()
    return FitWeights(info, targets, bias, csr)
