"""The TUI's only door to the database: plain calls returning frames and small records.

Nothing here imports Textual, so every number the app shows can be checked against dmdb's API
without a terminal, and the same calls run from worker threads. One lock serialises the calls:
a DuckDB connection must not be used by two threads at once.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

import dmdb
from dmdb import analyses
from dmdb.analyses import Verification
from dmdb.analyses.spectral import normalised_rows, pca
from dmdb.errors import DatabaseLockedError, DmdbError

POLL = 0.05
"""Seconds between interrupts of a query that is to stop (one sent before DuckDB starts it is lost)."""

__all__ = ["COMPARED", "Counterfactual", "DatabaseLockedError", "DmdbError", "Embedding", "NoFitError", "RunsOfAnother",
           "Service", "Stopped", "TargetInfo", "Verified"]

COMPARED = {"fit_id": pl.Int32, "cf_spearman": pl.Float64, "cf_pearson": pl.Float64, "cf_n": pl.Int64,
            "cf_runs_of": pl.Int32}
"""`Service.compared`'s columns: a fit's Spearman and Pearson of predicted vs actual margin change over
the cf_n counterfactual removals of the retrained runs fit cf_runs_of planned."""


class NoFitError(DmdbError):
    """The database opened fine but holds no fit, so there are no datamodels to browse yet."""


class Stopped(DmdbError):
    """The call was stopped by `Service.stop` (the user asked), not by a fault."""


@dataclass
class _Running:
    """The call holding the database: what it reads (for screens waiting behind it) and since when."""

    what: str
    since: float
    console: bool
    stopped: bool = False


@dataclass(frozen=True)
class TargetInfo:
    """What the detail screen says about the target itself."""

    fit_id: int
    experiment: str
    target: int
    label: int | None
    text: str | None
    image: np.ndarray | None
    base_margin: float
    holdout_spearman: float | None
    nnz: int
    support: int | None


@dataclass(frozen=True)
class Verified:
    """Retraining runs recorded for one removal: how many, their mean margin, and the baseline's."""

    n_runs: int
    mean_margin: float
    baseline_margin: float | None


@dataclass(frozen=True)
class Counterfactual:
    """The API's counterfactual row for (target, k, mode), plus the verified outcome if recorded."""

    target: int
    k: int
    mode: str
    n_removed: int
    base_margin: float
    predicted_margin: float
    predicted_change: float
    flips: bool
    verified: Verified | None


@dataclass(frozen=True)
class RunsOfAnother:
    """For a fit that planned no retraining itself: the recorded runs another fit of its experiment
    planned (`runs_of`, its estimator), and this fit's predictions of them
    (`verification(db, fit_id, runs_of=runs_of)`), or why it has none (it lacks a target of the runs)."""

    fit_id: int
    target: int
    runs_of: int
    estimator: str
    verification: Verification | None
    error: str | None

    @property
    def rows(self) -> pl.DataFrame:
        """The verification's rows of this target (none when the runs retrained for other targets)."""
        assert self.verification is not None
        return self.verification.rows.filter(pl.col("target") == self.target)

    def covered(self) -> list[int]:
        """The targets the runs retrained for, ascending."""
        assert self.verification is not None
        return self.verification.rows["target"].unique().sort().to_list()


@dataclass(frozen=True)
class Embedding:
    """Targets on two PCA axes (target, cluster or null, pc0, pc1), where they came from, and the
    share of the total variance each axis explains."""

    points: pl.DataFrame
    source: str
    explained: tuple[float, float]


def _two(ratios: np.ndarray) -> tuple[float, float]:
    """The first two explained-variance ratios; a missing second axis (one target or train example,
    or one stored component) explains nothing."""
    r = [float(x) for x in ratios[:2]] + [0.0, 0.0]
    return r[0], r[1]


class Service:
    """A read-only database session with the queries the screens need."""

    def __init__(self, db: dmdb.Database) -> None:
        self.db = db
        self._lock = threading.RLock()
        self._targets: pl.DataFrame | None = None
        # the database cannot change while the TUI has it open (read-only, writers kept out)
        self._verifications: dict[tuple[int, int], Verification] = {}
        self._compared: dict[str, pl.DataFrame] = {}
        self._state = threading.Lock()  # guards _running
        self._running: _Running | None = None

    @classmethod
    def open(cls, path: str | Path) -> "Service":
        """Open read-only; raises DatabaseLockedError while a writer holds the file, DmdbError otherwise."""
        return cls(dmdb.open(path, read_only=True))

    def close(self) -> None:
        """Close, stopping the queries of a call still running: quitting does not wait for them."""
        while not self._lock.acquire(timeout=POLL):
            self.db.con.interrupt()  # again until the call lets go: it may run several queries
        try:
            self.db.close()
        finally:
            self._lock.release()

    @property
    def path(self) -> str:
        return self.db.path

    # -- the call holding the database -----------------------------------------------------
    @contextmanager
    def _holding(self, what: str, console: bool = False) -> Iterator[None]:
        """Hold the database for one call that reads `what` (the outermost call names it). A console
        call stops a console query still running (its call raises a DmdbError): it replaces it; the
        other calls are waited for. A call `stop` interrupts raises Stopped."""
        while not self._lock.acquire(timeout=POLL):
            with self._state:
                if console and self._running is not None and self._running.console:
                    self.db.con.interrupt()
        with self._state:
            mine = _Running(what, time.monotonic(), console) if self._running is None else None
            if mine is not None:
                self._running = mine
        try:
            yield
        except Exception as e:
            if mine is not None and mine.stopped:
                raise Stopped(f"stopped reading {what}") from e
            raise
        finally:
            if mine is not None:
                with self._state:
                    self._running = None
            self._lock.release()

    def _stopping(self) -> bool:
        """`stop` was asked for the call holding the database: a DmdbError it raises is the stop's."""
        with self._state:
            return self._running is not None and self._running.stopped

    def running(self) -> tuple[str, float] | None:
        """What the call holding the database reads, and for how many seconds it has; None when idle."""
        with self._state:
            r = self._running
        return None if r is None else (r.what, time.monotonic() - r.since)

    def stop(self) -> str | None:
        """Stop the call holding the database, whichever screen's it is, and return once it has let go
        (its caller gets Stopped): what it read, or None when nothing ran."""
        with self._state:
            r = self._running
            if r is None:
                return None
            r.stopped = True
        while True:  # again until the call lets go: it may run several queries, or numpy between them
            with self._state:
                if self._running is not r:
                    return r.what
                self.db.con.interrupt()
            time.sleep(POLL)

    # -- overview --------------------------------------------------------------------------
    def experiments(self) -> pl.DataFrame:
        with self._holding("the experiments"):
            return self.db.experiments()

    def fits(self) -> pl.DataFrame:
        with self._holding("the fits"):
            return self.db.sql(
                "SELECT fit_id, experiment, estimator, lds, n_targets, mean_nnz, n_fit_runs, n_holdout_runs, "
                "seconds, device, created_at FROM fit_overview ORDER BY fit_id"
            )

    def compared(self, experiments: list[str]) -> tuple[pl.DataFrame, list[str]]:
        """Every fit of these experiments verified on the same retrained runs, those the experiment's
        latest planning fit planned (`compare_verifications(runs_of=)`), as COMPARED's columns (null
        figures for a fit lacking a target of the runs); and one line for each experiment whose runs
        cannot be compared (e.g. no baseline runs recorded yet)."""
        frames, problems = [], []
        with self._holding("the verifications of the fits"):
            for name in experiments:
                if name not in self._compared:
                    planners = analyses.planning_fits(self.db, name)
                    if not planners:
                        continue
                    try:
                        table = analyses.compare_verifications(self.db, name, runs_of=planners[-1])
                    except DmdbError as e:
                        if self._stopping():
                            raise
                        problems.append(f"experiment {name}: {e}")
                        continue
                    self._compared[name] = table.select(
                        "fit_id", cf_spearman="spearman", cf_pearson="pearson", cf_n="counterfactuals",
                        cf_runs_of="runs_of").cast(COMPARED)
                frames.append(self._compared[name])
        return pl.concat(frames) if frames else pl.DataFrame(schema=COMPARED), problems

    def latest_fit(self) -> int:
        """The fit the app browses; NoFitError when there is none."""
        with self._holding("the latest fit"):
            fid = self.db.con.execute("SELECT max(fit_id) FROM fits").fetchall()[0][0]
        if fid is None:
            raise NoFitError(f"{self.path} holds no fit yet: run `dmdb fit --db {self.path}` to fit datamodels first")
        return int(fid)

    # -- targets ---------------------------------------------------------------------------
    def targets(self, fit: int) -> pl.DataFrame:
        """One row per target of the fit: label, mean margin and accuracy over recorded runs,
        holdout Spearman, nonzeros, base margin and brittleness support. Cached: it is the big one."""
        with self._holding(f"the targets of fit {fit}"):
            if self._targets is not None and int(self._targets["fit_id"][0]) == fit:
                return self._targets
            info = analyses.resolve_fit(self.db, fit)
            ft = self.db.sql(
                "SELECT ft.target, t.label, ft.holdout_spearman, ft.nnz FROM fit_targets ft "
                "LEFT JOIN targets t ON t.experiment = ? AND t.idx = ft.target WHERE ft.fit_id = ? ORDER BY ft.target",
                [info.experiment, fit],
            )
            br = analyses.brittleness(self.db, fit=fit).select("target", "base_margin", "support")
            mean, acc = self._run_stats(info.experiment, ft["target"].to_numpy())
            frame = (
                ft.with_columns(mean_margin=pl.Series(mean).fill_nan(None), accuracy=pl.Series(acc).fill_nan(None))
                .join(br, on="target", how="left")
                .select(
                    # base margin and brittleness support first: at 80 columns the last columns are cut off
                    pl.lit(fit, pl.Int64).alias("fit_id"), "target", "label", "base_margin", "support", "mean_margin",
                    "accuracy", "holdout_spearman", "nnz",
                )
            )
            self._targets = frame
            return frame

    def _run_stats(self, experiment: str, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean margin and fraction of runs with margin > 0 per target, over fit and holdout runs."""
        exp = self.db.experiment(experiment)
        margins = exp.margins(role=["fit", "holdout"])
        if margins.shape[0] == 0:
            nan = np.full(len(targets), np.nan)
            return nan, nan.copy()
        m = margins[:, targets]
        return m.mean(axis=0, dtype=np.float64), (m > 0).mean(axis=0)

    # -- one target ------------------------------------------------------------------------
    def target_info(self, fit: int, target: int) -> TargetInfo:
        with self._holding(f"target {target} of fit {fit}"):
            info = analyses.resolve_fit(self.db, fit)
            fw = analyses.load_weights(self.db, fit)
            j = fw.col(target)
            row = self.db.con.execute(
                "SELECT t.label, t.text, ft.holdout_spearman, ft.nnz FROM fit_targets ft "
                "LEFT JOIN targets t ON t.experiment = ? AND t.idx = ft.target WHERE ft.fit_id = ? AND ft.target = ?",
                [info.experiment, fit, target],
            ).fetchall()[0]
            support = self.targets(fit).filter(pl.col("target") == target)["support"][0]
            return TargetInfo(
                fit_id=fit, experiment=info.experiment, target=int(target), label=row[0], text=row[1],
                image=self.db.experiment(info.experiment).image("targets", target),
                base_margin=float(fw.base_margin[j]), holdout_spearman=row[2], nnz=int(row[3]), support=support,
            )

    def top_weights(self, fit: int, target: int, k: int) -> pl.DataFrame:
        with self._holding(f"the weights of target {target} (fit {fit})"):
            return analyses.top_weights(self.db, target, fit=fit, k=k)

    def nearest(self, fit: int, target: int, k: int = 10) -> pl.DataFrame:
        with self._holding(f"the nearest targets of target {target} (fit {fit})"):
            found = analyses.nearest_targets(self.db, target, fit=fit, k=k)  # in rank order
            return found.select("neighbor", "cosine", pl.col("neighbor_label").alias("label"))

    def train_images(self, fit: int, idx: list[int]) -> dict[int, np.ndarray | None]:
        with self._holding("train images"):
            exp = self.db.experiment(analyses.resolve_fit(self.db, fit).experiment)
            return {i: exp.image("train", i) for i in idx}

    def counterfactual(self, fit: int, target: int, k: int, mode: str) -> Counterfactual:
        with self._holding(f"the counterfactual of target {target} (fit {fit}, k {k}, {mode})"):
            row = analyses.counterfactual(self.db, target, fit=fit, k=k, mode=mode).row(0, named=True)
            return Counterfactual(
                target=int(target), k=k, mode=mode, n_removed=row["n_removed"], base_margin=row["base_margin"],
                predicted_margin=row["predicted_margin"], predicted_change=row["predicted_change"],
                flips=row["flips"], verified=self.verified(fit, target, k, mode),
            )

    def verified(self, fit: int, target: int, k: int, mode: str) -> Verified | None:
        """Mean actual margin of the retraining runs recorded for this removal, if any
        (dmdb.analyses.counterfactual_runs reads them; the baseline runs trained on the full train set)."""
        with self._holding(f"the retraining runs of target {target} (fit {fit})"):
            runs = analyses.counterfactual_runs(self.db, fit, margin_of=target)
        base = runs.filter(pl.col("purpose") == "baseline")
        mine = runs.filter((pl.col("purpose") != "baseline") & (pl.col("target") == target) & (pl.col("k") == k)
                           & (pl.col("mode") == mode))
        if mine.is_empty():
            return None
        return Verified(mine.height, float(mine["margin"].to_numpy().mean()),
                        None if base.is_empty() else float(base["margin"].to_numpy().mean()))

    def runs_of_another(self, fit: int, target: int) -> RunsOfAnother | None:
        """For a fit that planned no counterfactual runs: the runs of the latest fit of its experiment
        that planned some for `target` (else of the latest that planned any), with this fit's
        predictions. None when the fit planned runs itself (`verified` reads those) or no fit did."""
        with self._holding(f"the retraining runs another fit planned (fit {fit}, target {target})"):
            experiment = analyses.resolve_fit(self.db, fit).experiment
            planners = analyses.planning_fits(self.db, experiment)
            if not planners or fit in planners:
                return None
            covering = self.db.con.execute(
                "SELECT max((info->>'fit_id')::INTEGER) FROM runs WHERE experiment = ? AND role = 'counterfactual' "
                "AND (info->>'target')::INTEGER = ?", [experiment, target]).fetchall()[0][0]
            planner = planners[-1] if covering is None else int(covering)
            estimator = analyses.resolve_fit(self.db, planner).estimator
            try:
                if (fit, planner) not in self._verifications:
                    self._verifications[fit, planner] = analyses.verification(self.db, fit, runs_of=planner)
            except DmdbError as e:
                if self._stopping():
                    raise
                return RunsOfAnother(fit, target, planner, estimator, None, str(e))
            return RunsOfAnother(fit, target, planner, estimator, self._verifications[fit, planner], None)

    # -- whole-fit views -------------------------------------------------------------------
    def leakage(self, fit: int, min_z: float = 6.0, limit: int = 200) -> tuple[pl.DataFrame, int]:
        """The `limit` most extreme leakage candidates, and how many there are in all."""
        with self._holding(f"the leakage candidates of fit {fit}"):
            found = analyses.leakage(self.db, fit=fit, min_z=min_z, limit=limit)
        total = int(found["n_candidates"][0]) if found.height else 0
        # pixel_dist, which the screen's status line explains, before the labels: at 80 columns it was cut off
        return found.select("rank", "target", "train_idx", "weight", "robust_z", "pixel_dist", "target_label",
                            "train_label", "ratio_to_next"), total

    def embedding(self, fit: int) -> Embedding:
        """Targets on two PCA axes: the stored `dmdb embed` results when present, else a
        2-component PCA computed now (a read-only session cannot store it)."""
        with self._holding(f"the embedding of fit {fit}"):
            try:
                frame = analyses.target_embeddings(self.db, fit=fit)
            except DmdbError:
                fw = analyses.load_weights(self.db, fit)
            else:
                ratios = self.db.con.execute(
                    "SELECT explained_variance_ratio FROM embedding_components WHERE fit_id = ? AND component < 2 "
                    "ORDER BY component", [fit]
                ).fetchall()
                if "pc1" not in frame.columns:  # `dmdb embed --components 1`
                    frame = frame.with_columns(pc1=pl.lit(0.0))
                return Embedding(frame.select("target", "cluster", "pc0", "pc1"), "stored embeddings (dmdb embed)",
                                 _two(np.array([r[0] for r in ratios])))
        # outside the lock: PCA is numpy work on the cached matrix
        scores, _, _, _, ratio, _ = pca(normalised_rows(fw), min(2, fw.n_targets, fw.n_train), seed=0)
        if scores.shape[1] < 2:
            scores = np.hstack([scores, np.zeros((scores.shape[0], 1))])
        frame = pl.DataFrame({"target": fw.targets, "cluster": pl.Series([None] * fw.n_targets, dtype=pl.Int32),
                              "pc0": scores[:, 0], "pc1": scores[:, 1]})
        return Embedding(frame, "PCA computed now (run `dmdb embed` to store it with clusters)", _two(ratio))

    # -- SQL console -----------------------------------------------------------------------
    def sql(self, query: str) -> tuple[pl.DataFrame, int]:
        """The result of the last statement (as db.sql), and how many statements the text held.
        A console query still running is stopped (its call raises a DmdbError): this one replaces
        it. The other calls' queries are waited for."""
        with self._holding(f"the SQL console's query ({' '.join(query.split())[:60]})", console=True):
            frame = self.db.sql(query)  # a syntax error is raised here, as a DmdbError
            return frame, len(self.db.con.extract_statements(query))

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
