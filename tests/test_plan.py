from __future__ import annotations

import pickle

import numpy as np
import pytest

import dmdb
from dmdb.plan import Plan, sample_mask


def test_fixed_sampling_keeps_exactly_round_alpha_n() -> None:
    for index in range(20):
        m, _ = sample_mask(101, 0.3, "fixed", seed=5, role="fit", index=index)
        assert m.dtype == bool and m.sum() == round(0.3 * 101)


def test_bernoulli_sampling_rate() -> None:
    kept = [sample_mask(1000, 0.25, "bernoulli", 1, "fit", i)[0].mean() for i in range(200)]
    assert abs(np.mean(kept) - 0.25) < 0.005  # std of the mean is ~0.001
    assert np.std(kept) > 0.005  # not fixed-size


def test_masks_are_reproducible_and_independent() -> None:
    a, sa = sample_mask(500, 0.5, "fixed", 3, "fit", 7)
    b, sb = sample_mask(500, 0.5, "fixed", 3, "fit", 7)
    c, _ = sample_mask(500, 0.5, "fixed", 3, "holdout", 7)
    d, _ = sample_mask(500, 0.5, "fixed", 3, "fit", 8)
    assert np.array_equal(a, b) and sa == sb
    # independent subsets overlap in about half of the kept examples
    assert 0.35 < (a & c).sum() / a.sum() < 0.65 and 0.35 < (a & d).sum() / a.sum() < 0.65


def test_plan_is_idempotent_and_allocates_fresh_ids(exp: dmdb.Experiment) -> None:
    p = exp.plan(10, seed=0)
    assert p.run_ids == range(0, 10)
    again = exp.plan(10, seed=0)
    assert again == p and np.array_equal(again.masks(), p.masks())
    h = exp.plan(4, seed=0, role="holdout")
    assert h.run_ids == range(10, 14)
    assert not np.array_equal(h.masks(), p.masks()[:4])
    with pytest.raises(dmdb.BadInputError, match="already exists with 10 runs"):
        exp.plan(12, seed=0)
    assert Plan.from_dict(p.to_dict()) == p
    # README: a plan and its runs go to multiprocessing workers as they are
    assert pickle.loads(pickle.dumps(p)) == p and np.array_equal(pickle.loads(pickle.dumps(p.run(3))).mask,
                                                                 p.masks()[3])
    assert [q.role for q in exp.plans()] == ["fit", "holdout"]
    # a plan that numpy could not sample from is refused before it is stored
    for n, seed, msg in ((3, -1, "seed must be >= 0, got -1"), (3, 2**64, "seed must be in 0..9223372036854775807"),
                         (2.5, 1, "n_runs must be an integer"), (0, 1, "n_runs must be >= 1, got 0")):
        with pytest.raises(dmdb.BadInputError, match=msg):
            exp.plan(n, seed=seed)
    assert len(exp.plans()) == 2


def test_a_plan_asked_for_at_another_size_says_what_to_ask_instead(exp: dmdb.Experiment) -> None:
    """'plan more runs under another seed' read as: ask for the new total under a new seed, which plans
    the old and the new size together (240 + 400 where 400 in all were meant)."""
    exp.plan(10, seed=0)
    exp.plan(3, seed=1)
    exp.plan(3, seed=2, role="holdout")
    with pytest.raises(dmdb.BadInputError, match=r"^a 'fit' plan with seed 0 already exists with 10 runs \(asked for "
                                                 r"12\); a plan keeps its size: for 2 more, plan 2 runs under a seed "
                                                 r"not used yet \(seed 2 is free\)$"):
        exp.plan(12, seed=0)
    with pytest.raises(dmdb.BadInputError, match=r"with 10 runs \(asked for 4\); a plan keeps its size: ask for 10 runs"):
        exp.plan(4, seed=0)
    assert exp.plan(2, seed=2).run_ids == range(16, 18)


def test_missing_and_pending(exp: dmdb.Experiment) -> None:
    p = exp.plan(6, seed=1)
    h = exp.plan(2, seed=1, role="holdout")
    for run in list(exp.pending(p))[::2]:
        assert exp.record(run, margins=np.zeros(5))
    assert exp.missing() == [1, 3, 5, 6, 7]
    assert exp.missing("holdout") == [6, 7]
    pend = list(exp.pending())
    assert [r.run_id for r in pend] == [1, 3, 5, 6, 7]
    assert np.array_equal(pend[0].mask, p.run(1).mask) and pend[-1].role == "holdout"
    assert np.array_equal(pend[0].indices, np.flatnonzero(p.run(1).mask))
    assert exp.db.sql("SELECT count(*) AS n FROM missing_runs")["n"][0] == 5
    assert [r.run_id for r in exp.pending(h)] == [6, 7]
    # a run or plan of another experiment (same sizes) is refused, not recorded under this one
    other = exp.db.create_experiment("other", n_train=37, n_targets=5, alpha=0.5)
    with pytest.raises(dmdb.BadInputError, match="run 1 was planned for experiment 'small', not 'other'"):
        other.record(p.run(1), margins=np.zeros(5))
    with pytest.raises(dmdb.BadInputError, match="that plan is of experiment 'small', not 'other'"):
        next(other.pending(p))
    assert other.n_runs() == 0 and p.run(1).experiment == "small"


def test_plan_after_unplanned_runs_starts_past_them(exp: dmdb.Experiment) -> None:
    exp.record(100, np.zeros(5), mask=np.ones(37, bool), role="fit")
    assert exp.plan(3, seed=9).run_ids == range(101, 104)


def test_plan_refuses_run_ids_past_int64(exp: dmdb.Experiment) -> None:
    """After a run recorded near int64's maximum, a plan that would pass it is refused; it was stored,
    and missing(), pending() and every later plan then failed with DuckDB's overflow error."""
    top = 2**63 - 1
    exp.record_batch([top - 100], np.ones((1, exp.n_train), bool), np.zeros((1, exp.n_targets)))
    with pytest.raises(dmdb.BadInputError, match="no room for 1000 more run ids"):
        exp.plan(1000, seed=0)
    assert exp.missing() == [] and list(exp.pending()) == []
    plan = exp.plan(100, seed=1)  # exactly fits
    assert plan.run_ids[-1] == top and len(exp.missing()) == 100
    exp.record_batch([top], plan.masks([top]), np.zeros((1, exp.n_targets)))
    with pytest.raises(dmdb.BadInputError, match="pass int64's maximum"):
        exp.plan(1, seed=2)
