"""A stored fit as a Python object: its numbers as polars frames, and predictions for new masks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..analyses.weights import FitWeights, load_weights, resolve_fit
from ..errors import BadInputError
from ..interrupt import arrow_table, fetchall
from ..packing import PackedMasks
from ..validate import is_int
from .options import MIN_HOLDOUT_RUNS

if TYPE_CHECKING:
    from ..store import Database


class Fit:
    """Handle on one fit; reads from the database on demand."""

    def __init__(self, db: "Database", fit_id: int | None = None) -> None:
        info = resolve_fit(db, fit_id)
        row = fetchall(
            db.con,
            "SELECT config, lds, n_fit_runs, n_val_runs, n_holdout_runs, device, seconds FROM fits WHERE fit_id = ?",
            [info.fit_id],
        )[0]
        self.db = db
        self.fit_id = info.fit_id
        self.experiment = info.experiment
        self.estimator = info.estimator
        self.n_train = info.n_train
        self.config: dict[str, Any] = json.loads(row[0]) if row[0] else {}
        self.lds: float | None = row[1]
        self.n_fit_runs, self.n_val_runs, self.n_holdout_runs = row[2], row[3], row[4]
        self.device: str = row[5]
        self.seconds: float = row[6]

    @property
    def lds_missing(self) -> str | None:
        """Why the fit has no LDS, in words (None when it has one)."""
        if self.lds is not None:
            return None
        n = self.n_holdout_runs
        more = ("record holdout runs (exp.plan(n, seed, role='holdout'), `dmdb collect --role holdout`) "
                "and fit again")
        if n == 0:
            return f"no holdout runs: {more}"
        if n < MIN_HOLDOUT_RUNS:
            return f"{n} holdout run{'s' if n > 1 else ''}; a rank correlation needs at least {MIN_HOLDOUT_RUNS}: {more}"
        return "every target's holdout margins are constant"

    @property
    def not_converged(self) -> list[int]:
        """Targets whose lasso path hit `max_iter` GEMMs at some lambda before the duality-gap
        tolerance (their weights are the last iterate); empty for the other estimators."""
        return list(self.config.get("not_converged") or [])

    @property
    def at_path_end(self) -> list[int]:
        """Lasso targets that chose the path's smallest lambda (eps * lambda_max): their validation
        error was still falling there, so a smaller eps (CLI: --eps) might fit them better; empty for
        the other estimators and for fits stored before this was recorded."""
        return list(self.config.get("at_path_end") or [])

    def __repr__(self) -> str:
        lds = "n/a" if self.lds is None else f"{self.lds:.3f}"
        return f"<dmdb.Fit {self.fit_id}: {self.estimator} on {self.experiment!r}, {self.n_fit_runs} fit runs, LDS {lds}>"

    def _frame(self, sql: str, params: list[Any]) -> pl.DataFrame:
        return pl.from_arrow(arrow_table(self.db.con, sql, params))  # type: ignore[return-value]

    def targets(self) -> pl.DataFrame:
        """Per target: chosen lambda, bias, validation MSE and R^2, holdout Spearman, nonzeros."""
        return self._frame("SELECT * EXCLUDE (fit_id) FROM fit_targets WHERE fit_id = ? ORDER BY target", [self.fit_id])

    def weights(self, target: int | None = None) -> pl.DataFrame:
        """Nonzero weights (target, train_idx, weight) in raw 0/1 mask units. A target the fit
        does not have is a BadInputError (an empty frame would read as a target with no weights)."""
        sql = "SELECT target, train_idx, weight FROM weights WHERE fit_id = ?"
        params: list[Any] = [self.fit_id]
        if target is not None:
            if not is_int(target):
                raise BadInputError(f"target must be an integer target id, got {target!r}")
            self.matrix().col(int(target))  # raises, naming the fit's targets
            sql += " AND target = ?"
            params.append(int(target))
        return self._frame(sql + " ORDER BY target, train_idx", params)

    def runs(self) -> pl.DataFrame:
        """Which run ids the fit used, by split (fit, val, holdout). `fit_order` is a fit run's
        place in the seeded shuffle: the learning-curve point of n fit runs used fit_order < n."""
        return self._frame("SELECT run_id, split, fit_order FROM fit_runs WHERE fit_id = ? "
                           "ORDER BY split, fit_order, run_id", [self.fit_id])

    def curve(self) -> pl.DataFrame:
        """LDS against the number of fit runs (empty unless fitted with a curve)."""
        return self._frame(
            "SELECT n_fit_runs, fraction, lds, mean_val_r2, seconds FROM fit_curve WHERE fit_id = ? ORDER BY n_fit_runs",
            [self.fit_id],
        )

    def matrix(self) -> FitWeights:
        """The weights as a sparse matrix with biases (cached; see dmdb.analyses.load_weights)."""
        return load_weights(self.db, self.fit_id)

    def predict(self, masks: Any) -> np.ndarray:
        """Predicted margins, (runs, targets of the fit): bias + mask @ W. One mask may be 1-D; the
        masks may be packed (exp.masks_and_margins(packed=True))."""
        m = masks[:] if isinstance(masks, PackedMasks) else np.asarray(masks)
        one = m.ndim == 1
        m = m[None, :] if one else m
        if m.ndim != 2 or m.shape[1] != self.n_train:
            raise BadInputError(f"masks must have {self.n_train} columns (one per train example), got shape {np.shape(masks)}")
        if m.dtype != bool and not np.isin(m, (0, 1)).all():
            raise BadInputError("masks must be boolean or hold only 0 and 1")
        fw = self.matrix()
        out = np.asarray(fw.csr.T.dot(m.astype(np.float64).T)).T + fw.bias[None, :]
        return out[0] if one else out
