"""Counterfactual verification with the user's own training code: plan, "retrain" (a synthetic
experiment's exact margins for any mask), record, compare; checked against brute-force numpy."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import pearsonr, spearmanr

import dmdb
from dmdb import analyses as A
from dmdb.cli import main
from dmdb.analyses.verification import run_info
from dmdb.errors import BadInputError, DmdbError
from dmdb.scale.synth import SynthSpec, create_synthetic, synth_margins

from analyses_fixtures import assert_sql_is_python

SPEC = SynthSpec(n_train=80, n_targets=10, density=0.1, noise=0.3, seed=4)
TARGETS, KS, SEEDS = [1, 4, 7, 8], [2, 5], [0, 1, 2]


@pytest.fixture()
def study(tmp_path: Path) -> tuple[dmdb.Database, int]:
    db = dmdb.open(tmp_path / "v.duckdb")
    exp, _ = create_synthetic(db, "s", SPEC, fit_runs=200, truth_fit=False)
    fit = exp.fit("diff-means")  # not the truth: its predictions differ from the retrained outcomes
    yield db, fit.fit_id
    db.close()


def train(plan: A.CounterfactualPlan) -> np.ndarray:
    """The user's training function: here the synthetic experiment's margins for each mask and seed."""
    return synth_margins(SPEC, plan.masks, plan.seeds)


def record(db: dmdb.Database, plan: A.CounterfactualPlan, rows: slice = slice(None)) -> int:
    return db.experiment(plan.experiment).record_batch(
        plan.run_ids[rows], plan.masks[rows], train(plan)[rows], role="counterfactual", seeds=plan.seeds[rows],
        infos=plan.infos[rows])


def brute_force_change(w: np.ndarray, t: int, k: int) -> tuple[np.ndarray, float, float]:
    """Target t's top-k positive weights (ties by index), the predicted change (minus their sum) and the
    actual one: the mean over SEEDS of margins without them minus the mean over SEEDS of full-set margins."""
    col = w[:, t]
    pos = np.flatnonzero(col > 0)
    removed = pos[np.lexsort((pos, -col[pos]))][:k]
    full = np.ones((len(SEEDS), SPEC.n_train), bool)
    without = full.copy()
    without[:, removed] = False
    actual = synth_margins(SPEC, without, SEEDS)[:, t].mean() - synth_margins(SPEC, full, SEEDS)[:, t].mean()
    return removed, -float(col[removed].sum()), float(actual)


def test_verification_of_planned_and_recorded_runs_matches_numpy(study: tuple[dmdb.Database, int]) -> None:
    db, fid = study
    w = A.load_weights(db, fid).csr.toarray()
    plan = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)
    # the baseline first, then each (target, k), each with every seed; run ids after every recorded run
    assert plan.infos[0] == {"fit_id": fid, "target": None, "k": 0, "mode": "top", "purpose": "baseline", "removed": []}
    assert [(i["target"], i["k"]) for i in plan.infos[3::3]] == [(t, k) for t in TARGETS for k in KS]
    assert plan.seeds.tolist() == SEEDS * (1 + len(TARGETS) * len(KS))
    assert plan.run_ids.tolist() == list(range(200, 200 + len(plan)))
    for mask, info in zip(plan.masks, plan.infos):
        assert np.flatnonzero(~mask).tolist() == sorted(info["removed"])
    assert record(db, plan) == len(plan) == 27

    v = A.verification(db, fid)
    assert v.rows.select("target", "k").rows() == [(t, k) for t in TARGETS for k in KS]
    assert (v.rows["purpose"] == "counterfactual").all() and (v.rows["seeds"] == 3).all()
    for row in v.rows.iter_rows(named=True):
        removed, predicted, actual = brute_force_change(w, row["target"], row["k"])
        assert row["n_removed"] == removed.size and removed.size > 0
        assert row["predicted_change"] == pytest.approx(predicted, abs=1e-6)
        assert row["actual_change"] == pytest.approx(actual, abs=1e-5)
    assert not np.allclose(v.rows["predicted_change"], v.rows["actual_change"], atol=1e-3)  # a real check
    pred, act = v.rows["predicted_change"].to_numpy(), v.rows["actual_change"].to_numpy()
    assert v.pearson == pytest.approx(np.corrcoef(pred, act)[0, 1], abs=1e-9)
    assert v.spearman == pytest.approx(spearmanr(pred, act).statistic, abs=1e-9)
    assert v.summary().row(0, named=True)["counterfactuals"] == 8


def test_every_recorded_removal_is_predicted_as_numpy_sums_it(study: tuple[dmdb.Database, int],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Many removals of many sizes per target (unsorted, with repeats), and runs recorded without their
    removed list: each row's figures are numpy's sums over the dense weights, to the last bit."""
    db, fid = study
    monkeypatch.setattr(importlib.import_module("dmdb.analyses.counterfactual"), "DENSE_ELEMENTS", 3 * SPEC.n_train)
    fw = A.load_weights(db, fid)
    w, bias = fw.csr.toarray(), fw.bias
    rng = np.random.default_rng(7)
    infos = [run_info(fid, "baseline", [])]
    for t in range(SPEC.n_targets):
        for size in rng.choice(np.arange(1, 40), size=4, replace=False):
            infos.append(run_info(fid, "counterfactual", rng.integers(0, SPEC.n_train, size).tolist(), t, int(size)))
    listless = [{"fit_id": fid, "target": t, "k": 3, "mode": mode, "purpose": "counterfactual"}
                for t, mode in [(2, "bottom"), (5, "top")]]
    infos += listless
    masks = np.ones((len(infos), SPEC.n_train), bool)
    for mask, info in zip(masks, infos):
        mask[info.get("removed") or []] = False
    for mask, t in zip(masks[-2:], (2, 5)):
        mask[A.removal_set(db, t, 3, mode=infos[-2 if t == 2 else -1]["mode"], fit=fid)] = False
    seeds = np.zeros(len(infos), np.int64)
    exp = db.experiment("s")
    exp.record_batch(np.arange(len(infos)) + exp.next_run_id(), masks, synth_margins(SPEC, masks, seeds),
                     role="counterfactual", seeds=seeds, infos=infos)

    rows = A.verification(db, fid).rows
    assert rows.height == len(infos) - 1
    sets = []
    for row, info, mask in zip(rows.iter_rows(named=True), infos[1:], masks[1:]):
        t = info["target"]
        removed = np.flatnonzero(~mask)  # as numpy sums them: ascending, each once
        if "removed" not in info:  # the k of mode: its removal order
            col = w[:, t]
            sel = np.flatnonzero(col < 0 if info["mode"] == "bottom" else col > 0)
            removed = sel[np.lexsort((sel, col[sel] if info["mode"] == "bottom" else -col[sel]))][:3]
        base = bias[t] + np.ascontiguousarray(w[:, t]).sum()
        change = 0.0 - w[removed, t].sum()
        assert (row["target"], row["k"], row["n_removed"]) == (t, info["k"], removed.size)
        assert (row["predicted_base"], row["predicted_change"]) == (base, change)
        assert row["predicted_margin"] == base + change
        sets.append((t, removed))
    # another fit on the same runs: fid's removals (those recorded without a list: fid's k of mode), its weights
    other = exp.import_scores(np.random.default_rng(8).normal(size=(SPEC.n_train, SPEC.n_targets)), name="o",
                              calibrate=False).fit_id
    w2 = A.load_weights(db, other).csr.toarray()
    assert not np.allclose(w2, w)
    rows = A.verification(db, other, runs_of=fid).rows
    assert [(r["target"], r["n_removed"]) for r in rows.iter_rows(named=True)] == [(t, r.size) for t, r in sets]
    assert rows["predicted_change"].to_list() == pytest.approx([-w2[r, t].sum() for t, r in sets], abs=1e-12)


def test_planning_again_plans_only_what_is_not_recorded(study: tuple[dmdb.Database, int]) -> None:
    db, fid = study
    plan = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)
    assert record(db, plan, slice(0, 10)) == 10
    rest = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)
    assert rest.infos == plan.infos[10:] and rest.seeds.tolist() == plan.seeds[10:].tolist()
    assert (rest.masks == plan.masks[10:]).all() and rest.run_ids.tolist() == plan.run_ids[10:].tolist()
    assert record(db, rest) == len(rest) == 17
    assert len(A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)) == 0
    more = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=[*SEEDS, 9])  # one more seed only
    assert more.seeds.tolist() == [9] * 9 and more.run_ids[0] == 227


def test_plans_for_two_fits_get_their_own_ids_and_record_in_any_order(study: tuple[dmdb.Database, int]) -> None:
    db, fid = study
    exp = db.experiment("s")
    other = exp.fit("diff-means", val_frac=0.3).fit_id  # another split: other weights, other removals
    first = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)
    second = A.plan_counterfactuals(db, fit=other, targets=TARGETS, ks=KS, seeds=SEEDS)
    assert first.run_ids.tolist() == list(range(200, 227)) and second.run_ids.tolist() == list(range(227, 254))
    assert exp.missing("counterfactual") == list(range(200, 254)) and exp.next_run_id() == 254
    assert A.plan_counterfactuals(db, fit=other, targets=TARGETS, ks=KS, seeds=SEEDS).run_ids.tolist() == \
        second.run_ids.tolist()  # planned again: the ids it was given, not next_run_id's
    seeded = exp.plan(5, seed=9, role="holdout")  # a seeded plan made now starts after both
    assert list(seeded.run_ids) == list(range(254, 259))
    assert record(db, second) == record(db, first) == 27  # the second plan first: no clash
    assert exp.missing("counterfactual") == []
    w = A.load_weights(db, other).csr.toarray()
    rows = A.verification(db, other).rows
    assert rows.height == 8
    for row in rows.iter_rows(named=True):  # the second fit's rows: its own weights' removals
        removed, predicted, actual = brute_force_change(w, row["target"], row["k"])
        assert (row["n_removed"], row["predicted_change"]) == (removed.size, pytest.approx(predicted, abs=1e-6))
        assert row["actual_change"] == pytest.approx(actual, abs=1e-5)
    assert A.verification(db, fid).rows.height == 8


def stored_weights(db: dmdb.Database, fid: int) -> tuple[np.ndarray, np.ndarray]:
    """A fit's dense weights (n_train x n_targets, zero for targets it lacks) and biases, read by SQL."""
    w = np.zeros((SPEC.n_train, SPEC.n_targets))
    for i, t, v in db.con.execute("SELECT train_idx, target, weight FROM weights WHERE fit_id = ?", [fid]).fetchall():
        w[i, t] = v
    bias = np.zeros(SPEC.n_targets)
    for t, b in db.con.execute("SELECT target, bias FROM fit_targets WHERE fit_id = ?", [fid]).fetchall():
        bias[t] = b
    return w, bias


def test_any_fit_predicts_the_runs_another_fit_planned(study: tuple[dmdb.Database, int]) -> None:
    """One plan (fit A's top-k removals and estimated supports), recorded once; A and an imported score
    matrix B each predict it: each row's change is minus that fit's own sum over the recorded removal,
    the correlations are scipy's, and the brittleness flips are the runs' with each fit's predicted flips."""
    db, a = study
    exp = db.experiment("s")
    scores = np.random.default_rng(11).normal(size=(SPEC.n_train, SPEC.n_targets))
    b = exp.import_scores(scores, name="trak", calibrate=False).fit_id
    part = exp.import_scores(scores[:, :3], name="part", targets=[0, 1, 2], calibrate=False).fit_id
    brittle = A.brittleness(db, fit=a).filter(pl.col("support") > 0)["target"].to_list()[:4]
    plan = A.plan_counterfactuals(db, fit=a, targets=TARGETS, ks=KS, brittle=brittle, seeds=SEEDS)
    margins = train(plan)
    record(db, plan)
    full = margins[[i for i, info in enumerate(plan.infos) if info["purpose"] == "baseline"]].mean(axis=0)
    removals = [(info["purpose"], info["target"], np.flatnonzero(~plan.masks[i]), margins[i:i + len(SEEDS)])
                for i, info in enumerate(plan.infos) if info["purpose"] != "baseline" and plan.seeds[i] == SEEDS[0]]

    summaries = []
    changes = {}
    for fid in (a, b):
        w, bias = stored_weights(db, fid)
        v = A.verification(db, fid, runs_of=a)
        assert (v.fit_id, v.runs_of) == (fid, a)
        assert v.rows.select("purpose", "target").rows() == [(p, t) for p, t, _, _ in removals]
        agreed = 0
        for row, (purpose, t, removed, m) in zip(v.rows.iter_rows(named=True), removals):
            base, change = bias[t] + w[:, t].sum(), -w[removed, t].sum()
            after = m[:, t].mean()
            assert row["n_removed"] == removed.size > 0
            assert (row["predicted_base"], row["predicted_change"]) == (pytest.approx(base, abs=1e-9),
                                                                       pytest.approx(change, abs=1e-9))
            assert (row["actual_base"], row["actual_margin"]) == (pytest.approx(full[t]), pytest.approx(after))
            if purpose == "brittleness" and full[t] >= 0:
                agreed += bool((base >= 0) and (base + change < 0)) == bool(after < 0)
        cf = v.rows.filter(pl.col("purpose") == "counterfactual")
        pred, act = cf["predicted_change"].to_numpy(), cf["actual_change"].to_numpy()
        assert v.spearman == pytest.approx(spearmanr(pred, act).statistic, abs=1e-12)
        assert v.pearson == pytest.approx(pearsonr(pred, act).statistic, abs=1e-12)
        br = [(full[t], m[:, t].mean()) for p, t, _, m in removals if p == "brittleness"]
        assert (v.brittle_tested, v.brittle_flipped, v.brittle_already_wrong, v.brittle_agreed) == (
            len(brittle), sum(x >= 0 > y for x, y in br), sum(x < 0 for x, _ in br), agreed)
        changes[fid] = pred
        summaries.append(v.summary())
    assert not np.allclose(changes[a], changes[b], atol=1e-2)  # two estimators, two sets of predictions
    assert A.verification(db, a).summary().equals(summaries[0])  # a fit's own runs: the default
    assert summaries[0]["brittle_agreed"].item() == summaries[0]["brittle_flipped"].item()  # a predicted every flip

    table = A.compare_verifications(db)  # every fit of the experiment, on the one recorded plan
    assert table.columns == ["runs_of", "fit_id", "estimator", *summaries[0].columns[2:], "missing_targets"]
    assert table.select("runs_of", "fit_id", "estimator").rows() == [
        (a, a, "diff-means"), (a, b, "scores:trak"), (a, part, "scores:part")]
    assert table.head(2).select(summaries[0].columns).equals(pl.concat(summaries))
    lacking = sorted({t for _, t, _, _ in removals} - {0, 1, 2})
    assert table.row(2, named=True) | {"missing_targets": None} == {
        "runs_of": a, "fit_id": part, "estimator": "scores:part", "missing_targets": None,
        **dict.fromkeys(summaries[0].columns[2:])}
    assert table["missing_targets"].to_list() == [[], [], lacking]
    assert A.compare_verifications(db, runs_of=a).equals(table)
    with pytest.raises(BadInputError, match=f"^fit {part} has no datamodel for target\\(s\\) "
                                            f"{', '.join(map(str, lacking))} of the runs of fit {a}: "):
        A.verification(db, part, runs_of=a)


def test_cli_verify_runs_of_and_compare(study: tuple[dmdb.Database, int], capsys: pytest.CaptureFixture[str]) -> None:
    db, a = study
    record(db, A.plan_counterfactuals(db, fit=a, targets=TARGETS, ks=KS, seeds=SEEDS))
    scores = np.random.default_rng(5).normal(size=(SPEC.n_train, SPEC.n_targets))
    b = db.experiment("s").import_scores(scores, name="trak", calibrate=False).fit_id
    want, table = A.verification(db, b, runs_of=a), A.compare_verifications(db)
    path = db.path
    db.close()
    assert main(["verify", "--db", path, "--fit", str(b), "--runs-of", str(a), "--format", "csv"]) == 0
    got = pl.read_csv(capsys.readouterr()[0].encode())
    assert got["predicted_change"].to_list() == pytest.approx(want.rows["predicted_change"].to_list(), rel=1e-9)
    assert main(["verify", "--db", path, "--compare", "--format", "csv"]) == 0
    got = pl.read_csv(capsys.readouterr()[0].encode())
    assert got.select("runs_of", "fit_id", "estimator").rows() == [(a, a, "diff-means"), (a, b, "scores:trak")]
    for c in ("spearman", "pearson"):
        assert got[c].to_list() == pytest.approx(table[c].to_list(), rel=1e-12)
    assert got["pearson"][1] == pytest.approx(want.pearson, rel=1e-12) and want.pearson != table["pearson"][0]
    assert main(["verify", "--db", path, "--compare", "--runs-of", str(b)]) == 1
    assert capsys.readouterr()[1].startswith(f"dmdb verify: error: fit {b} has no counterfactual runs recorded")
    with pytest.raises(SystemExit):
        main(["verify", "--db", path, "--compare", "--summary"])
    assert "not allowed with argument" in capsys.readouterr()[1]


def test_runs_of_another_experiment_or_no_runs_say_so(study: tuple[dmdb.Database, int]) -> None:
    db, a = study
    record(db, A.plan_counterfactuals(db, fit=a, targets=TARGETS[:1], ks=KS[:1], seeds=[0]))
    other, _ = create_synthetic(db, "t", SPEC, fit_runs=200, truth_fit=False)
    elsewhere = other.fit("diff-means").fit_id
    with pytest.raises(BadInputError, match=f"^fit {elsewhere} \\(experiment 't'\\) cannot predict the runs of fit "
                                            f"{a} \\(experiment 's'\\): their train sets differ"):
        A.verification(db, elsewhere, runs_of=a)
    with pytest.raises(BadInputError, match=f"^fit {elsewhere} belongs to experiment 't', not 's'"):
        A.compare_verifications(db, "s", runs_of=elsewhere)
    with pytest.raises(DmdbError, match="^experiment 't' has no counterfactual runs recorded: plan them"):
        A.compare_verifications(db)  # the latest fit's experiment
    assert (A.planning_fits(db, "s"), A.planning_fits(db, "t")) == ([a], [])
    b = db.experiment("s").fit("diff-means", val_frac=0.3).fit_id
    with pytest.raises(DmdbError, match=f"^fit {b} has no counterfactual runs recorded \\(the recorded ones were "
                                        f"planned by fit {a}: `dmdb verify --fit {a}` checks them\\): plan them"):
        A.verification(db, a, runs_of=b)  # runs_of names a fit without runs: which fits have them


def test_planning_again_before_recording_gives_the_same_runs(study: tuple[dmdb.Database, int]) -> None:
    """A script that plans, crashes before recording and plans again gets the same runs and ids; a
    planned run recorded with other data than planned is refused, writing nothing."""
    db, fid = study
    path = db.path
    plan = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)
    db.close()  # the crash
    db = dmdb.open(path)
    again = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)
    assert again.run_ids.tolist() == plan.run_ids.tolist() and again.infos == plan.infos
    assert (again.masks == plan.masks).all() and again.seeds.tolist() == plan.seeds.tolist()
    wider = A.plan_counterfactuals(db, fit=fid, targets=[*TARGETS, 9], ks=KS, seeds=SEEDS)  # target 9 is new
    assert wider.run_ids[:27].tolist() == plan.run_ids.tolist() and wider.run_ids[27:].tolist() == [
        227 + i for i in range(len(wider) - 27)]
    exp = db.experiment("s")
    margins = train(plan)
    one = dict(role="counterfactual", seeds=plan.seeds[3:4], infos=plan.infos[3:4])  # run 203: target 1, k 2, seed 0
    for mask_row, bad, says in [
        (3, dict(infos=plan.infos[6:7]), "another info"),  # target 1, k 5's
        (6, {}, "another mask"),
        (3, dict(seeds=None), "seed None, not 0"),
        (3, dict(seeds=[2]), "seed 2, not 0"),
        (3, dict(role="fit"), "role 'fit', not 'counterfactual'"),
    ]:
        with pytest.raises(BadInputError, match=f"^run 203 is planned by plan_counterfactuals \\(fit {fid}, "
                                                f"counterfactual, target 1, k 2\\) but was given {says}: record "):
            exp.record_batch(plan.run_ids[3:4], plan.masks[mask_row:mask_row + 1], margins[3:4], **(one | bad))
    assert exp.n_runs("counterfactual") == 0
    assert record(db, plan) == 27 and A.verification(db, fid).rows.height == 8
    db.close()
    with dmdb.open(path, read_only=True) as ro:  # planned before: no write needed; new runs need one
        assert A.plan_counterfactuals(ro, fit=fid, targets=[*TARGETS, 9], ks=KS, seeds=SEEDS).run_ids.tolist() == \
            wider.run_ids[27:].tolist()
        with pytest.raises(dmdb.ReadOnlyError):
            A.plan_counterfactuals(ro, fit=fid, targets=[0], ks=KS, seeds=SEEDS)


def test_brittleness_checks_remove_the_estimated_support(study: tuple[dmdb.Database, int]) -> None:
    db, fid = study
    br = A.brittleness(db, fit=fid).filter(pl.col("support") > 0)
    targets = br["target"].to_list()[:3]
    plan = A.plan_counterfactuals(db, fit=fid, brittle=targets, seeds=[5])
    assert [(i["purpose"], i["target"], i["k"]) for i in plan.infos] == [("baseline", None, 0)] + [
        ("brittleness", t, s) for t, s in zip(targets, br["support"].to_list()[:3])]
    record(db, plan)
    v = A.verification(db, fid)
    margins = synth_margins(SPEC, plan.masks, plan.seeds)
    base, after = margins[0, targets], margins[np.arange(1, 4), targets]
    assert v.rows["actual_margin"].to_list() == pytest.approx(after.tolist(), abs=1e-6)
    assert (v.brittle_tested, v.brittle_flipped, v.brittle_already_wrong) == (
        3, int(((base >= 0) & (after < 0)).sum()), int((base < 0).sum()))
    assert v.spearman is None and v.pearson is None  # no counterfactual rows


def test_bad_plans_and_missing_runs_say_what_to_do(study: tuple[dmdb.Database, int]) -> None:
    db, fid = study
    with pytest.raises(DmdbError, match=f"^fit {fid} has no counterfactual runs recorded: plan them with "
                                        "dmdb.analyses.plan_counterfactuals"):
        A.verification(db, fid)
    br = A.brittleness(db, fit=fid)
    wrong = br.filter(pl.col("support") == 0)["target"][0]
    with pytest.raises(BadInputError, match=f"^target {wrong} has no estimated support to remove \\(it is predicted "
                                            "wrong on the full train set already\\)"):
        A.plan_counterfactuals(db, fit=fid, brittle=[wrong])
    with pytest.raises(BadInputError, match="^targets need ks="):
        A.plan_counterfactuals(db, fit=fid, targets=[1])
    with pytest.raises(BadInputError, match="^seeds must hold at least one training seed"):
        A.plan_counterfactuals(db, fit=fid, seeds=[])
    assert len(A.plan_counterfactuals(db, fit=fid, targets=[1, 1], ks=[3, 3], seeds=[2, 2])) == 2  # baseline, (1, 3)
    n_pos = int((A.load_weights(db, fid).dense_column(1) > 0).sum())
    every = A.plan_counterfactuals(db, fit=fid, targets=[1], ks=[n_pos, n_pos + 5, 3], seeds=[0])
    assert [(i["k"], len(i["removed"])) for i in every.infos[1:]] == [(n_pos, n_pos), (3, 3)]  # n_pos + 5: the same
    with pytest.raises(BadInputError, match=r"^ks must be >= 1, got 0"):
        A.plan_counterfactuals(db, fit=fid, targets=[1], ks=[0])
    plan = A.plan_counterfactuals(db, fit=fid, targets=[1], ks=[3])
    record(db, plan, slice(1, None))  # no baseline
    with pytest.raises(DmdbError, match=f"^fit {fid} has counterfactual runs but no baseline"):
        A.verification(db, fid)


def test_a_fit_without_runs_names_the_fits_that_have_them(study: tuple[dmdb.Database, int],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Runs recorded for one fit, then a new fit: it became the default, and `dmdb verify` said only that
    it had no counterfactual runs recorded, as if none were."""
    db, fid = study
    record(db, A.plan_counterfactuals(db, fit=fid, targets=TARGETS[:1], ks=KS[:1], seeds=[0]))
    later = db.experiment("s").fit("diff-means").fit_id
    with pytest.raises(DmdbError, match=f"^fit {later} has no counterfactual runs recorded \\(the recorded ones were "
                                        f"planned by fit {fid}: `dmdb verify --fit {later} --runs-of {fid}` checks "
                                        f"fit {later}'s predictions on them, in Python runs_of={fid}; `dmdb verify "
                                        f"--fit {fid}` fit {fid}'s own; `dmdb verify --compare` every fit's\\): plan them"):
        A.verification(db)
    assert A.verification(db, fid).rows.height == 1
    assert A.verification(db, later, runs_of=fid).rows.height == 1
    path = db.path
    db.close()
    assert main(["verify", "--db", path]) == 1
    assert f"`dmdb verify --fit {later} --runs-of {fid}` checks" in capsys.readouterr()[1]
    assert main(["verify", "--db", path, "--fit", str(fid)]) == 0
    capsys.readouterr()
    assert main(["verify", "--db", path, "--runs-of", str(fid)]) == 0  # the latest fit, on fit fid's runs
    assert capsys.readouterr()[0].lstrip().startswith(f"fit {later} on the runs of fit {fid}: predicted vs actual change")


def test_sample_draws_sorted_distinct_targets_of_the_fit(study: tuple[dmdb.Database, int]) -> None:
    db, fid = study
    plan = A.plan_counterfactuals(db, fit=fid, sample=4, sample_seed=3, ks=[1], seeds=[0])
    want = np.sort(np.random.default_rng(3).choice(SPEC.n_targets, size=4, replace=False)).tolist()
    assert [i["target"] for i in plan.infos[1:]] == [t for t in want if (A.load_weights(db, fid).dense_column(t) > 0).any()]


def test_cli_verify(study: tuple[dmdb.Database, int], capsys: pytest.CaptureFixture[str]) -> None:
    db, fid = study
    path = db.path
    plan = A.plan_counterfactuals(db, fit=fid, targets=TARGETS, ks=KS, seeds=SEEDS)
    db.close()
    assert main(["verify", "--db", path]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"dmdb verify: error: fit {fid} has no counterfactual runs recorded") and \
        err.count("\n") == 1 and "README: Verifying counterfactuals with your own training code" in err
    with dmdb.open(path) as db:
        record(db, plan)
        want = A.verification(db, fid)
    assert main(["verify", "--db", path, "--format", "csv"]) == 0
    got = pl.read_csv(capsys.readouterr()[0].encode())
    assert got["actual_change"].to_list() == pytest.approx(want.rows["actual_change"].to_list(), rel=1e-5)
    assert main(["verify", "--db", path, "--summary", "--format", "json", "--fit", str(fid)]) == 0
    assert f'"spearman":{want.spearman}' in capsys.readouterr()[0].replace(" ", "")
    assert main(["verify", "--db", path]) == 0
    assert f"Spearman {want.spearman:.3f}, Pearson {want.pearson:.3f}" in capsys.readouterr()[0].replace("\n", "")


# -- the SQL macros verification and verification_summary -----------------------------------------

def record_by_hand(db: dmdb.Database, infos: list[dict]) -> None:
    """Counterfactual runs recorded with these infos (not planned); each mask without the info's removal."""
    masks = np.ones((len(infos), SPEC.n_train), bool)
    for mask, info in zip(masks, infos):
        mask[info.get("removed") or []] = False
    exp = db.experiment("s")
    seeds = np.arange(len(infos))
    exp.record_batch(np.arange(len(infos)) + exp.next_run_id(), masks, synth_margins(SPEC, masks, seeds),
                     role="counterfactual", seeds=seeds, infos=infos)


def test_sql_verification_is_pythons_row_for_row(study: tuple[dmdb.Database, int]) -> None:
    """A plan of top-k removals and brittleness checks, with hand-recorded removals on top (unsorted lists
    with repeats, an empty one, two recorded without their list), verified by the planning fit, by another
    fit on its runs, and by the latest fit (fit := NULL) on them."""
    db, a = study
    exp = db.experiment("s")
    brittle = A.brittleness(db, fit=a).filter(pl.col("support") > 0)["target"].to_list()[:3]
    record(db, A.plan_counterfactuals(db, fit=a, targets=TARGETS, ks=KS, brittle=brittle, seeds=SEEDS))
    record_by_hand(db, [run_info(a, "counterfactual", [9, 3, 9, 40, 3], 2, 3), run_info(a, "counterfactual", [], 6, 0),
                        {"fit_id": a, "target": 5, "k": 4, "mode": "bottom", "purpose": "counterfactual"},
                        {"fit_id": a, "target": 1, "k": 3, "purpose": "counterfactual"},  # no mode: top
                        run_info(a, "counterfactual", [9, 3, 9, 40, 3], 2, 3)])  # a second seed of the first
    rng = np.random.default_rng(3)
    sparse = rng.normal(size=(SPEC.n_train, SPEC.n_targets)) * (rng.random((SPEC.n_train, SPEC.n_targets)) < 0.2)
    b = exp.import_scores(sparse, name="trak", calibrate=False).fit_id
    own = assert_sql_is_python(db, a, None)
    assert own.rows.height == len(TARGETS) * len(KS) + len(brittle) + 4
    assert own.rows.filter(pl.col("target") == 2)["seeds"].to_list()[-1] == 2  # the repeated removal: one row
    on_b = assert_sql_is_python(db, b, a)
    assert on_b.pearson != own.pearson
    cf = on_b.rows.filter(pl.col("purpose") == "counterfactual")["predicted_change"]
    assert cf.len() - cf.n_unique() >= 2  # removals of b's zero weights: ties, which Spearman ranks as their average
    assert_sql_is_python(db, None, a)  # the latest fit: b
    # the summary's correlations are scipy's over the SQL rows
    rows = db.sql(f"SELECT * FROM verification(fit := {b}, runs_of := {a}) WHERE purpose = 'counterfactual'")
    summary = db.sql(f"SELECT * FROM verification_summary(fit := {b}, runs_of := {a})").row(0, named=True)
    pred, act = rows["predicted_change"].to_numpy(), rows["actual_change"].to_numpy()
    assert summary["spearman"] == pytest.approx(spearmanr(pred, act).statistic, abs=1e-12)
    assert summary["pearson"] == pytest.approx(pearsonr(pred, act).statistic, abs=1e-12)


def test_sql_verification_with_baseline_runs_only_or_too_few_rows(study: tuple[dmdb.Database, int]) -> None:
    """Only baseline runs: no rows, and a summary of zeros and nulls, as Python's; two removals: no correlation."""
    db, fid = study
    record(db, A.plan_counterfactuals(db, fit=fid, seeds=[0]))
    assert db.sql(f"SELECT * FROM verification(fit := {fid})").height == A.verification(db, fid).rows.height == 0
    assert db.sql(f"SELECT * FROM verification_summary(fit := {fid})").equals(A.verification(db, fid).summary())
    record(db, A.plan_counterfactuals(db, fit=fid, targets=TARGETS[:2], ks=KS[:1], seeds=[0]))
    summary = assert_sql_is_python(db, fid, None).summary()
    assert summary.select("counterfactuals", "spearman", "pearson").row(0) == (2, None, None)


def sql_error(db: dmdb.Database, query: str) -> str:
    with pytest.raises(DmdbError) as err:
        db.sql(query)
    return str(err.value)


def assert_both_refuse(db: dmdb.Database, fit: int | None, runs_of: int | None, python: str, sql: str) -> None:
    """Python's verification raises `python`; verification, verification_summary and a query of one column of
    verification (whose check is not in that column) each raise `sql`."""
    with pytest.raises(DmdbError, match=python):
        A.verification(db, fit, runs_of=runs_of)
    args = f"fit := {'NULL' if fit is None else fit}, runs_of := {'NULL' if runs_of is None else runs_of}"
    for query in (f"SELECT * FROM verification({args})", f"SELECT * FROM verification_summary({args})",
                  f"SELECT k FROM verification({args})"):
        assert re.search(sql, sql_error(db, query)), query


def test_sql_verification_refuses_what_python_refuses(study: tuple[dmdb.Database, int]) -> None:
    db, a = study
    assert_both_refuse(db, 999, None, "no fit 999", "no fit 999 in this database")
    assert_both_refuse(db, a, 999, "no fit 999", "verification: no fit 999 in this database to take the runs of")
    assert_both_refuse(db, a, None, f"^fit {a} has no counterfactual runs recorded: plan them",
                       f"verification: fit {a} has no counterfactual runs recorded: plan them with "
                       "dmdb.analyses.plan_counterfactuals")
    plan = A.plan_counterfactuals(db, fit=a, targets=TARGETS, ks=KS, seeds=SEEDS)
    record(db, plan, slice(len(SEEDS), None))  # all but the baseline
    assert_both_refuse(db, a, None, f"^fit {a} has counterfactual runs but no baseline",
                       f"verification: fit {a} has counterfactual runs but no baseline \\(full train set\\) runs")
    record(db, plan)
    exp = db.experiment("s")
    later = exp.fit("diff-means", val_frac=0.3).fit_id  # the latest fit now, without runs of its own
    assert_both_refuse(db, None, None, f"^fit {later} has no counterfactual runs recorded \\(the recorded ones",
                       f"fit {later} has no counterfactual runs recorded \\(the recorded ones were planned by fit {a}: "
                       f"verification\\(fit := {later}, runs_of := {a}\\) checks fit {later}'s predictions on them, "
                       f"verification\\(fit := {a}\\) fit {a}'s own\\): plan them")
    assert_both_refuse(db, a, later, f"^fit {later} has no counterfactual runs recorded \\(the recorded ones",
                       f"planned by fit {a}: verification\\(fit := {a}\\) checks them\\)")
    part = exp.import_scores(np.ones((SPEC.n_train, 2)), name="part", targets=[1, 4], calibrate=False).fit_id
    assert_both_refuse(db, part, a, f"^fit {part} has no datamodel for target\\(s\\) 7, 8 of the runs of fit {a}",
                       f"verification: fit {part} has no datamodel for target\\(s\\) 7, 8 of the runs of fit {a}")
    other, _ = create_synthetic(db, "t", SPEC, fit_runs=200, truth_fit=False)
    elsewhere = other.fit("diff-means").fit_id
    assert_both_refuse(db, elsewhere, a, "their train sets differ",
                       f"verification: fit {elsewhere} \\(experiment 't'\\) cannot predict the runs of fit {a} "
                       "\\(experiment 's'\\): their train sets differ")
    record_by_hand(db, [run_info(a, "counterfactual", [3], 1, 2)])  # then its info says another mask's removal
    db.con.execute("UPDATE runs SET info = ?::JSON WHERE run_id = (SELECT max(run_id) FROM runs)",
                   [json.dumps(run_info(a, "counterfactual", [3, SPEC.n_train], 1, 2))])
    assert_both_refuse(db, a, None, f"train index {SPEC.n_train} is outside 0..{SPEC.n_train - 1}",
                       f"the runs of fit {a} for target 1 removed train index {SPEC.n_train}, "
                       f"outside 0..{SPEC.n_train - 1}")


def test_sql_verification_of_removals_recorded_without_their_list(study: tuple[dmdb.Database, int]) -> None:
    """A k or mode that names no removal: both refuse. A random removal is numpy's default_rng(0) draw, which
    SQL cannot repeat: the macro says so instead of predicting another removal; with its list it is like any
    other."""
    db, a = study
    record(db, A.plan_counterfactuals(db, fit=a, seeds=[0]))
    listless = {"fit_id": a, "target": 3, "k": 2, "mode": "top", "purpose": "counterfactual"}
    for change, python, sql in (
            ({"k": None}, "k must be a non-negative integer, got None", "no removed list and k NULL"),
            ({"mode": "middle"}, "mode must be one of top, bottom, random, got 'middle'",
             "no removed list and mode 'middle' \\(one of top, bottom, random\\)")):
        record_by_hand(db, [listless | change])
        assert_both_refuse(db, a, None, python, f"verification: the runs of fit {a} for target 3 have {sql}")
        db.con.execute("DELETE FROM runs WHERE info->>'purpose' = 'counterfactual'")
    record_by_hand(db, [listless | {"mode": "random"}])
    assert A.verification(db, a).rows["n_removed"].to_list() == [2]
    assert "have no removed list and mode 'random': use the Python API" in sql_error(
        db, f"SELECT * FROM verification(fit := {a})")
    db.con.execute("DELETE FROM runs WHERE info->>'mode' = 'random'")
    record_by_hand(db, [run_info(a, "counterfactual", A.removal_set(db, 3, 2, mode="random", fit=a).tolist(), 3, 2,
                                 mode="random")])
    assert assert_sql_is_python(db, a, None).rows["mode"].to_list() == ["random"]


def test_counterfactual_runs_without_a_target_are_named(study: tuple[dmdb.Database, int]) -> None:
    """A hand-recorded run whose info names no target: a clear error naming the run in Python (it was a
    numpy ValueError on the NaN target), the fit lacking target NULL in SQL."""
    db, a = study
    plan = A.plan_counterfactuals(db, fit=a, targets=TARGETS, ks=KS, seeds=SEEDS)
    record(db, plan)
    first = db.experiment("s").next_run_id()
    record_by_hand(db, [{"fit_id": a, "k": 1, "mode": "top", "purpose": "counterfactual", "removed": [3]}] * 2)
    assert_both_refuse(db, a, None, f"^2 counterfactual run\\(s\\) of fit {a} name no target in their info "
                                    f"\\(run ids {first}-{first + 1}\\)", "no datamodel for target\\(s\\) NULL")
