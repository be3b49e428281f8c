"""Checking a fit's counterfactual predictions by retraining without the removed examples.

`plan_counterfactuals` lists the models to train: for each target and k, the full train set minus
the target's k largest positive weights ("counterfactual"); for each brittle target, minus its
estimated support ("brittleness"); and the full train set itself ("baseline"); each with every
seed. Train them with your own code and record them with
``exp.record_batch(plan.run_ids, plan.masks, margins, role="counterfactual", seeds=plan.seeds,
infos=plan.infos)``. Every such run's info says what was removed and why (the one definition of
this layout is `run_info`):
  {"fit_id": f, "target": t, "k": k, "mode": "top", "purpose": "counterfactual"|"brittleness"|"baseline",
   "removed": [train idx...]}
`verification` compares them: the actual change of a target is the mean margin over the removal's
seeds minus the mean margin over the baseline's seeds; the prediction is minus the sum of the
removed examples' weights (`predict_removals`, the rule `counterfactual` applies). The removals are
recorded, so any fit of the experiment can predict the runs another fit planned
(`verification(db, fit, runs_of=planner)`); `compare_verifications` does so for every fit, which
compares estimators on the same retrained models. The SQL table macros verification and
verification_summary (sql/30_analyses.sql) give `verification`'s rows and summary in plain DuckDB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import polars as pl

from ..errors import BadInputError, DmdbError
from ..interrupt import execute, fetchall
from ..transaction import transaction
from ..validate import as_int
from .brittleness import brittleness
from .counterfactual import as_indices, predict_removals, select_removal
from .weights import FitInfo, FitWeights, load_weights, resolve_fit

if TYPE_CHECKING:
    from ..store import Database

PURPOSES = ("counterfactual", "brittleness", "baseline")
HOW_TO_RECORD = (
    "plan them with dmdb.analyses.plan_counterfactuals, train each planned mask with your code and record them "
    "with exp.record_batch(plan.run_ids, plan.masks, margins, role='counterfactual', seeds=plan.seeds, "
    "infos=plan.infos) (README: Verifying counterfactuals with your own training code), or run `dmdb demo`"
)


def run_info(fit_id: int, purpose: str, removed: Sequence[int], target: int | None = None, k: int = 0,
             mode: str = "top") -> dict[str, Any]:
    """The info of a counterfactual run: which fit it checks, which removal it trained without and why."""
    if purpose not in PURPOSES:
        raise BadInputError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    return {"fit_id": int(fit_id), "target": None if target is None else int(target), "k": int(k), "mode": mode,
            "purpose": purpose, "removed": [int(i) for i in removed]}


def counterfactual_runs(db: "Database", fit: int | None = None, *, margin_of: int | None = None) -> pl.DataFrame:
    """The counterfactual runs recorded for a fit, their info unpacked.

    Columns: run_id, seed, purpose, target, k, mode, removed (list of train indices; null if the info
    has none), margin: the run's margin for its own target (null for baseline runs), or for target
    `margin_of` when given.
    Runs of other fits, and runs whose info has no fit_id, are left out.
    """
    info = resolve_fit(db, fit)
    other = None if margin_of is None else as_int(margin_of, "margin_of", 0)
    return db.sql(
        """SELECT run_id, seed, info->>'purpose' AS purpose, (info->>'target')::INTEGER AS target,
                  (info->>'k')::INTEGER AS k, coalesce(info->>'mode', 'top') AS mode,
                  (info->'removed')::INTEGER[] AS removed,
                  margins[coalesce(?::INTEGER, (info->>'target')::INTEGER) + 1]::DOUBLE AS margin
           FROM runs
           WHERE experiment = ? AND role = 'counterfactual' AND (info->>'fit_id')::INTEGER = ?
           ORDER BY run_id""",
        [other, info.experiment, info.fit_id],
    )


def full_set_margins(db: "Database", fit: int | None = None) -> np.ndarray | None:
    """Every target's mean margin over the fit's baseline runs (full train set); None before any is recorded."""
    info = resolve_fit(db, fit)
    rows = fetchall(
        db.con,
        """SELECT margins FROM runs WHERE experiment = ? AND role = 'counterfactual'
           AND (info->>'fit_id')::INTEGER = ? AND info->>'purpose' = 'baseline'""",
        [info.experiment, info.fit_id],
    )
    return np.asarray([r[0] for r in rows], dtype=np.float64).mean(axis=0) if rows else None


@dataclass(frozen=True)
class CounterfactualPlan:
    """Models still to train, row by row: run id, mask (full train set minus the removal), training
    seed and the info to record with them (see `run_info`)."""

    experiment: str
    fit_id: int
    run_ids: np.ndarray
    masks: np.ndarray
    seeds: np.ndarray
    infos: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.infos)


def _ints(values: Iterable[int] | np.ndarray, what: str, low: int) -> list[int]:
    """Distinct integers >= low, in the order given."""
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return list(dict.fromkeys(as_int(v, what, low) for v in items))


def plan_counterfactuals(
    db: "Database",
    *,
    fit: int | None = None,
    targets: Iterable[int] | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    ks: Iterable[int] = (),
    brittle: Iterable[int] = (),
    seeds: Iterable[int] = (0,),
) -> CounterfactualPlan:
    """The counterfactual runs to train to check a fit, less those already recorded (same purpose,
    removal and seed), so planning again after recording some plans only the rest.

    targets (or `sample` of the fit's targets drawn with numpy's default_rng(sample_seed)) are each
    planned without their top k for every k in `ks` (a target with no positive weight is skipped, and
    a k beyond a target's positive weights when a smaller k removed them all already);
    every target in `brittle` without its estimated support (`brittleness`); and always the
    baseline.

    The plan is stored in the database (table planned_counterfactuals), so a run planned before and
    not recorded yet gets the run id it was given (planning again after a crash gives the same runs
    the same ids), and a new one an id after every planned and recorded run (`exp.next_run_id()`):
    plans for several fits, or for other targets, never share an id and can be recorded in any order.
    Planning new runs needs a writable database. Planned runs not recorded yet are listed by
    `exp.missing('counterfactual')` (not by `exp.pending`: train the plan's rows); recording one
    needs the plan's mask, role, seed and info.
    """
    fw = load_weights(db, fit)
    seed_list = _ints(seeds, "seeds", 0)
    if not seed_list:
        raise BadInputError("seeds must hold at least one training seed")
    if targets is not None and sample is not None:
        raise BadInputError("give targets= or sample=, not both")
    if sample is not None:
        n = as_int(sample, "sample", 1)
        rng = np.random.default_rng(as_int(sample_seed, "sample_seed", 0))
        chosen = np.sort(rng.choice(fw.targets, size=min(n, fw.n_targets), replace=False))
        target_list = chosen.tolist()
    else:
        target_list = _ints(targets if targets is not None else (), "targets", 0)
    k_list = _ints(ks, "ks", 1)
    if target_list and not k_list:
        raise BadInputError("targets need ks= (how many top examples to remove)")
    removals: list[tuple[str, int | None, int, np.ndarray]] = [("baseline", None, 0, np.zeros(0, np.int64))]
    removals += [("counterfactual", t, k, select_removal(fw, t, k)) for t in target_list for k in k_list]
    brittle_list = _ints(brittle, "brittle", 0)
    if brittle_list:
        support = dict(brittleness(db, fit=fw.fit_id).select("target", "support").iter_rows())
        for t in brittle_list:
            fw.col(t)  # an unknown target fails with the fit's range
            if not support.get(t):
                why = ("it is predicted wrong on the full train set already" if support.get(t) == 0
                       else "removing its positive weights is not predicted to flip it")
                raise BadInputError(f"target {t} has no estimated support to remove ({why}): leave it out of brittle=")
            removals.append(("brittleness", t, int(support[t]), select_removal(fw, t, int(support[t]))))

    exp = db.experiment(fw.info.experiment)
    done = {_key(r) for r in counterfactual_runs(db, fw.fit_id).iter_rows(named=True)}
    planned = _planned_ids(db, exp.name, fw.fit_id)
    masks, run_seeds, infos, run_ids = [], [], [], []
    seen: set[tuple[str, int | None, tuple[int, ...]]] = set()
    for purpose, t, k, removed in removals:
        # nothing to remove; or the removal of a smaller k again (the target has fewer positive weights)
        if (purpose != "baseline" and removed.size == 0) or (purpose, t, tuple(removed.tolist())) in seen:
            continue
        seen.add((purpose, t, tuple(removed.tolist())))
        for s in seed_list:
            info = run_info(fw.fit_id, purpose, removed.tolist(), t, k)
            key = _key({**info, "seed": s})
            if key in done:
                continue
            mask = np.ones(fw.n_train, dtype=bool)
            mask[removed] = False
            masks.append(mask)
            run_seeds.append(s)
            infos.append(info)
            run_ids.append(planned.get(key, -1))
    ids = np.asarray(run_ids, dtype=np.int64)
    new = np.flatnonzero(ids < 0)
    if new.size:
        db.require_writable()
        with transaction(db.con):
            ids[new] = exp.fresh_run_ids(new.size) + np.arange(new.size)
            execute(
                db.con,
                """INSERT INTO planned_counterfactuals (experiment, run_id, seed, info)
                   SELECT ?, unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::VARCHAR[])::JSON""",
                [exp.name, ids[new].tolist(), [run_seeds[i] for i in new], [json.dumps(infos[i]) for i in new]],
            )
    return CounterfactualPlan(
        experiment=exp.name, fit_id=fw.fit_id, run_ids=ids,
        masks=np.stack(masks) if masks else np.zeros((0, fw.n_train), dtype=bool),
        seeds=np.asarray(run_seeds, dtype=np.int64), infos=infos,
    )


def _key(run: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two counterfactual runs of a fit the same: purpose, target, k, mode, removal, seed
    (a recorded run's row of `counterfactual_runs`, or a planned run's info with its seed)."""
    return (run["purpose"], run["target"], run["k"], run.get("mode") or "top", tuple(run.get("removed") or ()),
            run["seed"])


def _planned_ids(db: "Database", experiment: str, fit_id: int) -> dict[tuple[Any, ...], int]:
    """The run ids plan_counterfactuals gave this fit's runs that are not recorded yet, by `_key`."""
    rows = fetchall(
        db.con,
        """SELECT run_id, seed, info FROM planned_counterfactuals p
           WHERE experiment = ? AND (info->>'fit_id')::INTEGER = ?
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.experiment = p.experiment AND r.run_id = p.run_id)""",
        [experiment, fit_id],
    )
    return {_key({**json.loads(info), "seed": seed}): int(run_id) for run_id, seed, info in rows}


ROWS_SCHEMA = {
    "target": pl.Int32, "k": pl.Int32, "mode": pl.Utf8, "purpose": pl.Utf8, "n_removed": pl.Int64, "seeds": pl.Int64,
    "predicted_base": pl.Float64, "predicted_margin": pl.Float64, "predicted_change": pl.Float64,
    "actual_base": pl.Float64, "actual_margin": pl.Float64, "actual_change": pl.Float64,
}
SUMMARY_SCHEMA = {
    "fit_id": pl.Int32, "runs_of": pl.Int32, "counterfactuals": pl.Int64, "spearman": pl.Float64,
    "pearson": pl.Float64, "brittle_tested": pl.Int64, "brittle_flipped": pl.Int64,
    "brittle_already_wrong": pl.Int64, "brittle_agreed": pl.Int64,
}


@dataclass(frozen=True)
class Verification:
    """One row per recorded removal (target, k, mode, purpose) of the runs planned by fit `runs_of`:
    fit `fit_id`'s predicted margins and changes, and the retrained models' actual ones."""

    fit_id: int  # the fit whose predictions are checked
    runs_of: int  # the fit that planned the runs (fit_id itself unless verification(runs_of=) named another)
    rows: pl.DataFrame
    spearman: float | None  # predicted vs actual change over the counterfactual rows (None under 3 rows)
    pearson: float | None
    # Brittleness checks remove the planning fit's estimated support; the three counts below are
    # outcomes of the retrained runs, the same whichever fit is verified on them.
    brittle_tested: int
    brittle_flipped: int  # the full-set models were right (margin >= 0) and the retrained ones are wrong
    brittle_already_wrong: int  # the full-set models were wrong already: nothing left to flip
    # Of the checks with something to flip (tested - already_wrong), those where this fit's predicted
    # flip (predicted base margin >= 0 and predicted margin < 0) is the actual one. The planning fit
    # predicted every one to flip, so for it this is brittle_flipped (up to rounding at margin 0).
    brittle_agreed: int

    def summary(self) -> pl.DataFrame:
        """The figures above as a one-row frame."""
        n_cf = self.rows.filter(pl.col("purpose") == "counterfactual").height
        return pl.DataFrame(
            [[self.fit_id, self.runs_of, n_cf, self.spearman, self.pearson, self.brittle_tested, self.brittle_flipped,
              self.brittle_already_wrong, self.brittle_agreed]],
            schema=SUMMARY_SCHEMA, orient="row",
        )


def _correlations(pred: pl.Series, actual: pl.Series) -> tuple[float | None, float | None]:
    """Spearman (Pearson of average ranks; polars ranks, so the TUI's import loads no torch) and Pearson."""
    if pred.len() < 3 or pred.n_unique() == 1 or actual.n_unique() == 1:
        return None, None
    rho = np.corrcoef(pred.rank("average").to_numpy(), actual.rank("average").to_numpy())[0, 1]
    return float(rho), float(np.corrcoef(pred.to_numpy(), actual.to_numpy())[0, 1])


def planning_fits(db: "Database", experiment: str) -> list[int]:
    """The fits whose counterfactual runs are recorded in the experiment, ascending: the `runs_of`
    that `verification` and `compare_verifications` accept."""
    rows = fetchall(
        db.con,
        """SELECT DISTINCT (info->>'fit_id')::INTEGER AS f FROM runs
           WHERE experiment = ? AND role = 'counterfactual' AND f IS NOT NULL ORDER BY f""",
        [experiment],
    )
    return [r[0] for r in rows]


def _checked_fits(db: "Database", info: FitInfo) -> str:
    """Which fits planned the experiment's recorded counterfactual runs and how to check `info` on them,
    as a clause for an error: a later fit becomes the default one, and its 'no runs recorded' hid the
    runs recorded for another."""
    ids = planning_fits(db, info.experiment)
    if not ids:
        return ""
    which = f"fit {ids[0]}" if len(ids) == 1 else f"fits {', '.join(map(str, ids))}"
    f, others = info.fit_id, [i for i in ids if i != info.fit_id]
    if not others:  # runs_of= named a fit without runs, and only this fit has some
        return f" (the recorded ones were planned by fit {f}: `dmdb verify --fit {f}` checks them)"
    p = others[-1]
    return (f" (the recorded ones were planned by {which}: `dmdb verify --fit {f} --runs-of {p}` checks fit {f}'s "
            f"predictions on them, in Python runs_of={p}; `dmdb verify --fit {p}` fit {p}'s own; "
            "`dmdb verify --compare` every fit's)")


def _targets_lacking(fw: FitWeights, targets: Iterable[int]) -> list[int]:
    """The targets (ascending, each once) that the fit has no datamodel for."""
    want = np.unique(np.fromiter(targets, dtype=np.int64))
    return want[~np.isin(want, fw.targets)].tolist()


def verification(db: "Database", fit: int | None = None, *, runs_of: int | None = None) -> Verification:
    """Fit `fit`'s predictions (default: the latest fit) against the outcomes of the counterfactual runs
    planned by fit `runs_of` (default: `fit` itself).

    The removals are recorded with the runs, so any fit of the experiment can predict them: verifying
    several fits on one fit's runs compares estimators on the same retrained models
    (`compare_verifications` does it for every fit). Raises DmdbError when fit `runs_of` has no
    counterfactual runs (naming the fits that have), or no baseline runs to compare with;
    BadInputError when `runs_of` is a fit of another experiment or `fit` lacks a target of the runs.
    """
    info = resolve_fit(db, fit)
    planner = info if runs_of is None else resolve_fit(db, runs_of)
    if planner.experiment != info.experiment:
        raise BadInputError(f"fit {info.fit_id} (experiment {info.experiment!r}) cannot predict the runs of fit "
                            f"{planner.fit_id} (experiment {planner.experiment!r}): their train sets differ; name a "
                            f"fit of experiment {info.experiment!r} as runs_of (CLI: --runs-of; `dmdb fits` lists them)")
    runs = counterfactual_runs(db, planner.fit_id)
    if runs.is_empty():
        raise DmdbError(f"fit {planner.fit_id} has no counterfactual runs recorded{_checked_fits(db, info)}: "
                        f"{HOW_TO_RECORD}")
    base_margin = full_set_margins(db, planner.fit_id)
    if base_margin is None:
        raise DmdbError(f"fit {planner.fit_id} has counterfactual runs but no baseline (full train set) runs to "
                        f"compare them with: {HOW_TO_RECORD}")
    untargeted = runs.filter((pl.col("purpose") != "baseline") & pl.col("target").is_null())["run_id"]
    if untargeted.len():
        from ..fit.selection import format_id_list  # dmdb.fit imports dmdb.analyses

        raise BadInputError(f"{untargeted.len()} counterfactual run(s) of fit {planner.fit_id} name no target in their "
                            f"info (run ids {format_id_list(untargeted.to_list())}): a removal is checked on the target "
                            "it was planned for; record them with the info dmdb.analyses.verification.run_info makes")
    groups = runs.filter(pl.col("purpose") != "baseline").group_by(
        ["target", "k", "mode", "purpose", "removed"], maintain_order=True).agg("margin", pl.len().alias("seeds"))
    targets = groups["target"].to_numpy()
    fw = load_weights(db, info.fit_id)
    lacking = _targets_lacking(fw, targets)
    if lacking:
        raise BadInputError(f"fit {info.fit_id} has no datamodel for target(s) {', '.join(map(str, lacking))} of the "
                            f"runs of fit {planner.fit_id}: verify it on runs planned for targets it has")
    # the removal the runs trained without; runs recorded without their removed list: the planning
    # fit's k of mode
    rows = groups.select("target", "k", "mode", "removed").rows()
    pw = load_weights(db, planner.fit_id) if any(removed is None for *_, removed in rows) else fw
    removals = [select_removal(pw, t, k, mode) if removed is None else as_indices(fw, removed, "remove")
                for t, k, mode, removed in rows]
    base, pred, change = predict_removals(fw, targets, removals)
    actual = np.asarray([np.mean(np.asarray(m, np.float64)) for m in groups["margin"].to_list()], np.float64)
    actual_base = base_margin[targets.astype(np.int64)]
    frame = groups.select("target", "k", "mode", "purpose").with_columns(
        n_removed=pl.Series([len(r) for r in removals], dtype=pl.Int64), seeds=groups["seeds"].cast(pl.Int64),
        predicted_base=base, predicted_margin=pred, predicted_change=change, actual_base=actual_base,
        actual_margin=actual, actual_change=actual - actual_base,
    ).cast(ROWS_SCHEMA)
    cfr = frame.filter(pl.col("purpose") == "counterfactual")
    rho, r = _correlations(cfr["predicted_change"], cfr["actual_change"])
    br = frame.filter(pl.col("purpose") == "brittleness")
    right = br["actual_base"] >= 0
    flipped = right & (br["actual_margin"] < 0)
    predicted = (br["predicted_base"] >= 0) & (br["predicted_margin"] < 0)
    return Verification(info.fit_id, planner.fit_id, frame, rho, r, br.height, int(flipped.sum()),
                        int((~right).sum()), int((right & (predicted == flipped)).sum()))


def compare_verifications(db: "Database", experiment: str | None = None, *,
                          runs_of: int | None = None) -> pl.DataFrame:
    """Every fit of the experiment verified on the same recorded runs: `Verification.summary` of each
    (runs_of, fit) pair, with the fit's estimator, by runs_of then fit_id.

    runs_of: only the runs this fit planned (default: those of every fit that planned some).
    experiment: default runs_of's, else the latest fit's. A fit lacking a target of the runs gets
    its figures null and the targets in `missing_targets` (empty for the others): its correlations
    would be over other rows than the rest's.
    """
    planner = None if runs_of is None else resolve_fit(db, runs_of)
    name = experiment if experiment is not None else (planner or resolve_fit(db, None)).experiment
    db.experiment(name)  # an unknown experiment fails with the known ones
    if planner is not None and planner.experiment != name:
        raise BadInputError(f"fit {planner.fit_id} belongs to experiment {planner.experiment!r}, not {name!r}")
    planners = [planner.fit_id] if planner is not None else planning_fits(db, name)
    if not planners:
        raise DmdbError(f"experiment {name!r} has no counterfactual runs recorded: {HOW_TO_RECORD}")
    fits = fetchall(db.con, "SELECT fit_id, estimator FROM fits WHERE experiment = ? ORDER BY fit_id", [name])
    rows = []
    for p in planners:
        targets = counterfactual_runs(db, p).filter(pl.col("purpose") != "baseline")["target"].to_numpy()
        for f, estimator in fits:
            lacking = _targets_lacking(load_weights(db, f), targets)
            summary = (pl.DataFrame(dict.fromkeys(SUMMARY_SCHEMA, [None]) | {"fit_id": [f], "runs_of": [p]},
                                    schema=SUMMARY_SCHEMA)
                       if lacking else verification(db, f, runs_of=p).summary())
            rows.append(summary.with_columns(estimator=pl.lit(estimator),
                                             missing_targets=pl.Series([lacking], dtype=pl.List(pl.Int32))))
    columns = ["runs_of", "fit_id", "estimator", *list(SUMMARY_SCHEMA)[2:], "missing_targets"]
    return pl.concat(rows).select(columns)
