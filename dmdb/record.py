"""Writing runs: check a validated batch against plans and earlier records, insert it in one transaction."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Callable, Sequence

import duckdb
import numpy as np

from .batch import RunBatch, batch_table
from .errors import BadInputError, DuplicateRunError
from .interrupt import arrow_table, execute, fetchall
from .packing import margins_from_arrow, unpack_masks
from .transaction import transaction

if TYPE_CHECKING:
    from .experiment import Experiment
    from .plan import Plan


def write_batch(
    exp: "Experiment", batch: RunBatch, also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    plans: Sequence["Plan"] | None = None,
) -> int:
    """Insert a validated batch atomically; returns how many runs were new.

    Runs already recorded with identical role, mask and margins are skipped (recording twice is a
    no-op). A run id recorded before with different data, or a planned run id whose mask is not
    the planned one, raises DuplicateRunError / BadInputError and writes nothing of the batch.
    `also` runs inside the same transaction (ingest uses it to mark the shard as done). `plans`:
    the experiment's seeded plans, when the caller has read them already (ingest reads them once).
    """
    exp.db.require_writable()
    _check_against_plans(exp, batch, exp.plans() if plans is None else plans)
    con = exp.db.con
    name = f"_dmdb_batch_{uuid.uuid4().hex}"
    try:  # unregistered after the transaction: inside an aborted one it fails and hides the error
        with transaction(con):
            fresh = _drop_identical_existing(exp, batch)
            if len(fresh):
                con.register(name, batch_table(fresh, fixed_margins=True))
                execute(
                    con,
                    f"""
                    INSERT INTO runs (experiment, run_id, role, mask, n_kept, margins, seed, worker, duration_s, info)
                    SELECT ?, run_id, role, mask::BLOB::BIT, n_kept, margins::FLOAT[], seed, worker, duration_s, info::JSON
                    FROM {name}
                    """,
                    [exp.name],
                )
            if also is not None:
                also(con)
    finally:
        con.unregister(name)
    return len(fresh)


def check_batch(exp: "Experiment", batch: RunBatch) -> None:
    """Raise what write_batch would raise for this batch (a planned run with another mask or role,
    a run id recorded before with other data), writing nothing: lets a write in several
    transactions find a clash before its first one."""
    _check_against_plans(exp, batch, exp.plans())
    _drop_identical_existing(exp, batch)


def _drop_identical_existing(exp: "Experiment", batch: RunBatch) -> RunBatch:
    """The batch without runs already recorded identically; DuplicateRunError for a conflicting one.

    The common case, a batch of new ids, costs one scan of the run_id column over the batch's id
    range (zone maps skip the rest); masks and margins are read back only for ids that clash.
    """
    if len(batch) == 0:
        return batch
    con = exp.db.con
    span = [exp.name, int(batch.run_ids.min()), int(batch.run_ids.max())]
    in_span = "experiment = ? AND run_id BETWEEN ? AND ?"
    in_range = arrow_table(con, f"SELECT run_id FROM runs WHERE {in_span}", span)["run_id"].to_numpy()
    clash = np.intersect1d(in_range, batch.run_ids)
    if clash.size == 0:
        return batch
    old = arrow_table(
        con,
        f"SELECT run_id, role, mask, margins FROM runs WHERE {in_span} "
        "AND run_id IN (SELECT unnest(?::BIGINT[])) ORDER BY run_id",
        [*span, clash.tolist()],
    )
    old_ids = old["run_id"].to_numpy()
    old_masks = unpack_masks(old["mask"], exp.n_train, header=True)
    old_margins = margins_from_arrow(old["margins"], exp.n_targets)
    old_roles = old["role"].to_pylist()
    row_of = {int(rid): i for i, rid in enumerate(batch.run_ids)}
    for j, rid in enumerate(old_ids):
        i = row_of[int(rid)]
        what = []
        if old_roles[j] != batch.roles[i]:
            what.append(f"role {old_roles[j]!r} vs {batch.roles[i]!r}")
        if not np.array_equal(old_masks[j], batch.masks[i]):
            what.append("a different mask")
        if not np.array_equal(old_margins[j], batch.margins[i]):
            what.append("different margins")
        if what:
            raise DuplicateRunError(
                f"run {int(rid)} of experiment {exp.name!r} was already recorded with other data ({', '.join(what)})",
                "Nothing of this batch was written; use a new run id, or, if the recorded run was wrong, delete it "
                f"first: db.sql('DELETE FROM runs WHERE experiment = ? AND run_id = ?', [{exp.name!r}, {int(rid)}])"
                + _fits_that_used(exp, int(rid)),
            )
    keep = np.flatnonzero(~np.isin(batch.run_ids, old_ids))
    return batch.take(keep)


def _fits_that_used(exp: "Experiment", run_id: int) -> str:
    """The delete advice's warning: a fit keeps the run ids it used (fit_runs), and a deleted run stays listed."""
    fits = [r[0] for r in fetchall(
        exp.db.con,
        "SELECT DISTINCT fit_id FROM fit_runs JOIN fits USING (fit_id) "
        "WHERE experiment = ? AND run_id = ? ORDER BY fit_id",
        [exp.name, run_id],
    )]
    if not fits:
        return ""
    many = len(fits) > 1
    return (f". Fit{'s' if many else ''} {', '.join(map(str, fits))} used run {run_id}: after the delete "
            f"{'they still list' if many else 'it still lists'} it (fit.runs()), with weights and LDS made from "
            "the old data; fit again to use the new run")


def _check_against_plans(exp: "Experiment", batch: RunBatch, plans: Sequence["Plan"]) -> None:
    """A planned run id must carry its planned role and mask (and a counterfactual one its planned
    seed and info): otherwise the plan and data disagree. `plans`: the experiment's seeded plans."""
    _check_against_counterfactual_plans(exp, batch)
    for plan in plans:
        ids = plan.run_ids
        rows = np.flatnonzero((batch.run_ids >= ids.start) & (batch.run_ids < ids.stop))
        for i in rows:
            rid = int(batch.run_ids[i])
            planned = plan.run(rid)
            if batch.roles[i] != planned.role:
                raise BadInputError(f"run {rid} is planned with role {planned.role!r}, not {batch.roles[i]!r}")
            if not np.array_equal(batch.masks[i], planned.mask):
                raise BadInputError(
                    f"run {rid} is planned (by exp.plan(..., seed={plan.seed}, role={plan.role!r})) with another "
                    "mask than the one given: record the planned run's mask (run.mask)"
                )



def _check_against_counterfactual_plans(exp: "Experiment", batch: RunBatch) -> None:
    """Runs of dmdb.analyses.plan_counterfactuals' plans: role 'counterfactual', mask the full train
    set minus info's removed list, the planned seed and info (what verification and re-planning read)."""
    if len(batch) == 0:
        return
    rows = fetchall(
        exp.db.con,
        """SELECT run_id, seed, info FROM planned_counterfactuals
           WHERE experiment = ? AND run_id BETWEEN ? AND ? AND run_id IN (SELECT unnest(?::BIGINT[]))""",
        [exp.name, int(batch.run_ids.min()), int(batch.run_ids.max()), batch.run_ids.tolist()],
    )
    row_of = {int(rid): i for i, rid in enumerate(batch.run_ids)}
    for rid, seed, info_json in rows:
        i = row_of[int(rid)]
        info = json.loads(info_json)
        mask = np.ones(exp.n_train, dtype=bool)
        mask[info["removed"]] = False
        given = None if batch.infos is None or batch.infos[i] is None else json.loads(batch.infos[i])
        what = [w for w, differs in [
            (f"role {batch.roles[i]!r}, not 'counterfactual'", batch.roles[i] != "counterfactual"),
            ("another mask", not np.array_equal(batch.masks[i], mask)),
            (f"seed {None if batch.seeds is None else int(batch.seeds[i])}, not {seed}",
             batch.seeds is None or int(batch.seeds[i]) != seed),
            ("another info", given != info),
        ] if differs]
        if what:
            raise BadInputError(
                f"run {rid} is planned by plan_counterfactuals (fit {info['fit_id']}, {info['purpose']}, target "
                f"{info['target']}, k {info['k']}) but was given {'; '.join(what)}: record the plan's rows with "
                "plan.masks, role='counterfactual', seeds=plan.seeds and infos=plan.infos; nothing was written"
            )
