"""An experiment: one train set, one target set, one sampling rule, and the runs recorded for them."""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence, overload

import numpy as np
import polars as pl

from . import examples, readback
from .batch import make_batch
from .errors import BadInputError, ConvergenceWarning, DmdbError
from .interrupt import execute, fetchall
from .packing import PackedMasks
from .plan import SAMPLING, Plan, PlannedRun, fixed_size
from .readback import RunSelection
from .record import write_batch
from .transaction import transaction
from .validate import INT64_MAX, as_array, as_int, as_real, as_role, as_run_margins


if TYPE_CHECKING:
    from .fit import Fit
    from .regress._inputs import Progress
    from .store import Database


class Experiment:
    """Handle on one experiment of a database; cheap to create, holds no data itself."""

    def __init__(
        self, db: "Database", name: str, n_train: int, n_targets: int, alpha: float, sampling: str, config: Any
    ) -> None:
        self.db = db
        self.name = name
        self.n_train = int(n_train)
        self.n_targets = int(n_targets)
        self.alpha = float(alpha)
        self.sampling = sampling
        self.config: dict[str, Any] = json.loads(config) if isinstance(config, str) else (config or {})

    def __repr__(self) -> str:
        return (
            f"<dmdb.Experiment {self.name!r}: {self.n_train} train x {self.n_targets} targets, "
            f"alpha={self.alpha}, {self.sampling}>"
        )

    # -- examples --------------------------------------------------------------------------
    def set_train_examples(self, labels: Any = None, images: Any = None, texts: Any = None, source_ids: Any = None) -> None:
        examples.set_examples(self, "train", labels, images, texts, source_ids)

    def set_targets(self, labels: Any = None, images: Any = None, texts: Any = None, source_ids: Any = None) -> None:
        examples.set_examples(self, "targets", labels, images, texts, source_ids)

    def train_examples(self) -> pl.DataFrame:
        return examples.examples_frame(self, "train")

    def targets(self) -> pl.DataFrame:
        return examples.examples_frame(self, "targets")

    def image(self, kind: str, idx: int) -> np.ndarray | None:
        """kind is 'train' or 'targets'."""
        return examples.image(self, kind, idx)

    # -- planning --------------------------------------------------------------------------
    def plan(self, n_runs: int, seed: int = 0, role: str = "fit") -> Plan:
        """The plan of n_runs seeded runs for a role; calling it again with the same arguments
        returns the same plan (same run ids and masks), so a restarted script resumes cleanly."""
        as_role(role)
        n_runs = as_int(n_runs, "n_runs", 1)
        seed = as_int(seed, "seed", 0)  # numpy's generators take no negative seed
        con = self.db.con
        rows = fetchall(
            con,
            "SELECT first_run_id, n_runs FROM plans WHERE experiment = ? AND role = ? AND seed = ?",
            [self.name, role, seed],
        )
        row = rows[0] if rows else None
        if row is not None:
            if row[1] != n_runs:
                raise BadInputError(self._resize_refusal(role, seed, row[1], n_runs))
            return self._plan(role, seed, row[0], n_runs)
        self.db.require_writable()
        with transaction(con):
            first = self.fresh_run_ids(n_runs)
            execute(
                con,
                "INSERT INTO plans (experiment, role, seed, first_run_id, n_runs) VALUES (?, ?, ?, ?, ?)",
                [self.name, role, seed, first, n_runs],
            )
        return self._plan(role, seed, int(first), n_runs)

    def _resize_refusal(self, role: str, seed: int, has: int, asked: int) -> str:
        """Why a stored plan keeps its size, and the call that gets what was meant: asking for 400 runs
        under a new seed next to 240 would plan 640 in all."""
        used = {p.seed for p in self.plans() if p.role == role}
        free = min(set(range(len(used) + 1)) - used)
        head = (f"a {role!r} plan with seed {seed} already exists with {has} runs (asked for {asked}); "
                "a plan keeps its size")
        if asked > has:
            more = asked - has
            return f"{head}: for {more} more, plan {more} runs under a seed not used yet (seed {free} is free)"
        return f"{head}: ask for {has} runs to get it again"

    def next_run_id(self) -> int:
        """The first run id after every planned (seeded plans and plan_counterfactuals) and recorded one:
        where a new plan, or runs recorded outside any plan, can start without clashing."""
        return int(fetchall(
            self.db.con,
            """SELECT greatest(
                   (SELECT coalesce(max(first_run_id::HUGEINT + n_runs), 0) FROM plans WHERE experiment = $1),
                   (SELECT coalesce(max(run_id)::HUGEINT + 1, 0) FROM planned_counterfactuals WHERE experiment = $1),
                   (SELECT coalesce(max(run_id)::HUGEINT + 1, 0) FROM runs WHERE experiment = $1))""",
            [self.name],
        )[0][0])

    def fresh_run_ids(self, n_runs: int) -> int:
        """The first of n_runs run ids no plan or run holds (`next_run_id`); BadInputError when they
        would pass int64. Call it inside the transaction that plans them."""
        first = self.next_run_id()
        if first + n_runs - 1 > INT64_MAX:  # ids past int64 would break missing(), pending() and later plans
            raise BadInputError(
                f"no room for {n_runs} more run ids in experiment {self.name!r}: they would start at {first} "
                f"(after every planned and recorded run) and pass int64's maximum {INT64_MAX}"
            )
        return first

    def _plan(self, role: str, seed: int, first: int, n_runs: int) -> Plan:
        return Plan(self.name, role, int(seed), int(first), int(n_runs), self.n_train, self.alpha, self.sampling,
                    self.n_targets)

    def plans(self) -> list[Plan]:
        rows = fetchall(
            self.db.con,
            "SELECT role, seed, first_run_id, n_runs FROM plans WHERE experiment = ? ORDER BY first_run_id",
            [self.name],
        )
        return [self._plan(*r) for r in rows]

    def missing(self, role: str | None = None) -> list[int]:
        """Run ids that are planned (by a seeded plan or plan_counterfactuals) but not recorded yet."""
        sql = "SELECT run_id FROM missing_runs WHERE experiment = ?"
        params: list[Any] = [self.name]
        if role is not None:
            sql += " AND role = ?"
            params.append(as_role(role))
        return [r[0] for r in fetchall(self.db.con, sql + " ORDER BY run_id", params)]

    def pending(self, plan: Plan | None = None) -> Iterator[PlannedRun]:
        """The planned runs still to train (of one seeded plan, or of every one), masks generated lazily.
        Counterfactual runs planned by plan_counterfactuals are not among them: train its plan's rows."""
        if plan is not None and plan.experiment != self.name:
            raise BadInputError(f"that plan is of experiment {plan.experiment!r}, not {self.name!r}")
        missing = set(self.missing())
        for p in [plan] if plan is not None else self.plans():
            for run_id in p.run_ids:
                if run_id in missing:
                    yield p.run(run_id)

    # -- recording -------------------------------------------------------------------------
    def record(
        self,
        run: PlannedRun | int,
        margins: Any,
        *,
        mask: Any = None,
        role: str | None = None,
        seed: int | None = None,
        worker: str | None = None,
        duration_s: float | None = None,
        info: dict[str, Any] | None = None,
    ) -> bool:
        """Record one run's margins (one per target). Returns False if the identical run was already there.

        Pass a PlannedRun (mask, role and seed come from the plan) or a run id with mask and role.
        """
        if isinstance(run, PlannedRun):
            run.require_experiment(self.name)
            run_id, mask = run.run_id, run.mask if mask is None else mask
            role, seed = role or run.role, run.seed if seed is None else seed
        else:
            run_id = run
            if mask is None or role is None:
                raise BadInputError("recording by run id needs mask= and role=; or pass the PlannedRun")
        y = as_run_margins(margins, self.n_targets)
        m = as_array(mask, "mask")
        if m.ndim != 1:
            raise BadInputError(f"the mask of one run must be 1-D (one per train example), got shape {m.shape}")
        # the length here, in one run's terms: record_batch would report shape (1, 31) for 31 values
        if m.size != self.n_train:
            raise BadInputError(f"the mask of one run must hold one value per train example ({self.n_train}), got {m.size}")
        return (
            self.record_batch(
                [run_id], m[None, :], y[None, :], role=role,
                seeds=None if seed is None else [seed], worker=worker,
                durations=None if duration_s is None else [duration_s], infos=None if info is None else [info],
            )
            == 1
        )

    def record_batch(
        self,
        run_ids: Any,
        masks: Any,
        margins: Any,
        role: str | Sequence[str] = "fit",
        seeds: Any = None,
        worker: str | None = None,
        durations: Any = None,
        infos: Sequence[dict[str, Any] | None] | None = None,
    ) -> int:
        """Record many runs in one transaction; returns how many were new. All or nothing."""
        batch = make_batch(self, run_ids, masks, margins, role, seeds, worker, durations, infos)
        return write_batch(self, batch)

    # -- reading ---------------------------------------------------------------------------
    def masks(self, role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
        """(runs, n_train) bool, rows in run id order."""
        return readback.masks(self, role, runs)

    def margins(self, role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
        """(runs, n_targets) float32, rows in run id order (the same order as masks)."""
        return readback.margins(self, role, runs)

    @overload
    def masks_and_margins(
        self, role: str | Sequence[str] | None = None, runs: RunSelection = None, packed: Literal[False] = False
    ) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def masks_and_margins(
        self, role: str | Sequence[str] | None = None, runs: RunSelection = None, *, packed: Literal[True]
    ) -> tuple[PackedMasks, np.ndarray]: ...

    @overload
    def masks_and_margins(
        self, role: str | Sequence[str] | None = None, runs: RunSelection = None, packed: bool = False
    ) -> tuple[np.ndarray | PackedMasks, np.ndarray]: ...

    def masks_and_margins(
        self, role: str | Sequence[str] | None = None, runs: RunSelection = None, packed: bool = False
    ) -> tuple[np.ndarray | PackedMasks, np.ndarray]:
        """masks() and margins() of the same runs, read in one pass over the table instead of two.
        `packed`: the masks as a PackedMasks (8 examples a byte; indexing rows unpacks them), which
        every dmdb.regress solver takes in place of the bool matrix."""
        return readback.masks_and_margins(self, role, runs, packed)

    def run_ids(self, role: str | Sequence[str] | None = None, runs: RunSelection = None) -> np.ndarray:
        return readback.run_ids(self, role, runs)

    def runs(self, role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
        return readback.runs_frame(self, role, runs)

    def masks_frame(self, role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
        return readback.masks_frame(self, role, runs)

    def margins_frame(self, role: str | Sequence[str] | None = None, runs: RunSelection = None) -> pl.DataFrame:
        return readback.margins_frame(self, role, runs)

    def n_runs(self, role: str | None = None) -> int:
        return len(self.run_ids(role))

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        estimator: str = "lasso",
        *,
        where: str | None = None,
        targets: str | Sequence[int] | np.ndarray | None = None,
        device: str | None = None,
        curve: Sequence[float] | None = None,
        progress: "Progress | None" = None,
        **options: Any,
    ) -> "Fit":
        """Fit datamodels for the targets on the fit runs, score them on the holdout runs, store the fit.

        estimator: 'lasso', 'diff-means' or 'ridge'. where / targets narrow the SQL views
        fit_pool / target_pool (an expression over runs columns, a query or a view name; targets
        also as ids '0-99,120'). curve: fractions of the fit runs for a learning curve.
        options: k, eps, tol, max_iter, patience, refit, val_frac, split_seed, dtype, block_rows, gram
        (see dmdb.fit.FitOptions). device: 'cpu', 'cuda' or None (CUDA when present).
        """
        from .fit import Fit, FitOptions, run_fit

        unknown = [name for name in options if name not in FitOptions.option_names()]
        if unknown:
            raise BadInputError(f"unknown fit option {', '.join(map(repr, unknown))}: the options are "
                                f"{', '.join(FitOptions.option_names())} (see dmdb.fit.FitOptions)")
        opts = FitOptions(estimator=estimator, **options)
        fit_id = run_fit(self, opts, where=where, targets=targets, device=device, curve=curve, progress=progress)
        fit = Fit(self.db, fit_id)
        if fit.not_converged:
            bad = fit.not_converged
            warnings.warn(
                f"fit {fit_id}: {len(bad)} target(s) did not reach tol {opts.tol:g} within max_iter {opts.max_iter} "
                f"iterations at some lambda (first: {', '.join(map(str, bad[:5]))}); their weights are the last "
                "iterate (fit.not_converged lists them). Raise max_iter (CLI: --max-iter) or loosen tol (--tol).",
                ConvergenceWarning, stacklevel=2,
            )
        return fit

    def import_scores(self, scores: Any, *, name: str = "scores", targets: Any = None, calibrate: bool = True) -> "Fit":
        """Store an external (n_train x targets) score matrix, e.g. from TRAK, as a fit scored on the same holdout runs."""
        from .fit import Fit, import_scores

        return Fit(self.db, import_scores(self, scores, name=name, targets=targets, calibrate=calibrate))

    def fits(self) -> pl.DataFrame:
        """This experiment's fits, one line each (the fit_overview view)."""
        return self.db.sql("SELECT * FROM fit_overview WHERE experiment = ? ORDER BY fit_id", [self.name])


def create_experiment(
    db: "Database",
    name: str,
    n_train: int,
    n_targets: int,
    alpha: float,
    sampling: str,
    config: dict[str, Any] | None,
    exist_ok: bool,
) -> Experiment:
    """Create an experiment; with exist_ok, return the existing one if its shape is the same."""
    db.require_writable()
    if not isinstance(name, str) or not name or len(name) > 200:
        raise BadInputError(f"experiment name must be a non-empty string, got {name!r}")
    n_train, n_targets = as_int(n_train, "n_train", 1), as_int(n_targets, "n_targets", 1)
    alpha = as_real(alpha, "alpha")
    if not 0 < alpha < 1:
        raise BadInputError(f"alpha (the fraction of train examples each run keeps) must be in (0, 1), got {alpha}")
    if sampling not in SAMPLING:
        raise BadInputError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
    kept = fixed_size(n_train, alpha)
    if sampling == "fixed" and not 0 < kept < n_train:  # every planned run would be the same subset
        # with one example no alpha keeps between 1 and n_train - 1 of them: only Bernoulli sampling varies
        other_alpha = f"choose an alpha that keeps between 1 and {n_train - 1} examples, or " if n_train > 1 else ""
        raise BadInputError(
            f"alpha={alpha} of n_train={n_train} keeps {kept} examples in every run ('fixed' sampling keeps "
            f"round(alpha * n_train)): every run would train on the same subset, and no datamodel can be fitted; "
            f"{other_alpha}use sampling='bernoulli' (CLI: --sampling bernoulli)"
        )
    if config is not None and not isinstance(config, dict):
        raise BadInputError(f"config must be a dict, got {type(config).__name__}")
    try:
        config_json = json.dumps(config or {})
    except (TypeError, ValueError) as e:
        raise BadInputError(f"config must be a JSON-serialisable dict: {e}") from e
    rows = fetchall(db.con, "SELECT n_train, n_targets, alpha, sampling FROM experiments WHERE name = ?", [name])
    row = rows[0] if rows else None
    if row is not None:
        asked = (int(n_train), int(n_targets), float(alpha), sampling)
        if exist_ok and tuple(row) == asked:
            return db.experiment(name)
        have = f"n_train={row[0]}, n_targets={row[1]}, alpha={row[2]}, sampling={row[3]}"
        if not exist_ok:
            raise DmdbError(f"experiment {name!r} already exists ({have}); pick another name")
        differ = ", ".join(f"{k} {a} (it has {h})" for k, a, h in zip(("n_train", "n_targets", "alpha", "sampling"), asked, row)
                           if a != h)
        raise DmdbError(f"experiment {name!r} exists with other settings ({have}): asked for {differ}; exist_ok (--exist-ok) only "
                        "reuses an identical experiment, so pick another name or ask for its settings")
    execute(
        db.con,
        "INSERT INTO experiments (name, n_train, n_targets, alpha, sampling, config) VALUES (?, ?, ?, ?, ?, ?)",
        [name, int(n_train), int(n_targets), float(alpha), sampling, config_json],
    )
    return db.experiment(name)
