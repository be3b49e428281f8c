"""Scale-out: training functions, plan files, workers, collect on local processes and Ray, synth, export."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import dmdb
from dmdb import ingest
from dmdb.cli import main
from dmdb.scale import (
    EngineOptions, Job, SynthSpec, collect, create_synthetic, find_shard, load_train_fn, run_one, train_synthetic,
    true_weights,
)
from dmdb.scale import export as export_module
from dmdb.scale.export import Exported, export
from dmdb.scale.synth import true_model

TESTS = Path(__file__).resolve().parent
SPEC = SynthSpec(n_train=50, n_targets=3, density=0.1, noise=0.2, seed=4)
KILLER = "scale_fns:train_or_die"


def expected(plan: dmdb.Plan, spec: SynthSpec = SPEC) -> np.ndarray:
    """Brute force: bias + mask @ W + the run's own noise, from the dense true weights."""
    runs = list(plan)
    masks = np.stack([r.mask for r in runs])
    _, _, bias = true_model(spec)
    noise = np.stack([np.random.default_rng([spec.seed, r.seed]).standard_normal(spec.n_targets) for r in runs])
    return masks @ true_weights(spec) + bias + spec.noise * noise


def make_exp(db: dmdb.Database, tmp_path: Path, **config: object) -> dmdb.Experiment:
    return db.create_experiment("syn", SPEC.n_train, SPEC.n_targets, alpha=SPEC.alpha,
                                config={**SPEC.config(), "marker_dir": str(tmp_path), **config})


def assert_exactly_once(exp: dmdb.Experiment, plan: dmdb.Plan) -> None:
    ids = exp.run_ids()
    assert ids.tolist() == list(plan.run_ids)  # each planned run once, nothing else
    np.testing.assert_allclose(exp.margins(), expected(plan), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(exp.masks(), plan.masks())


# -- the training-function interface and workers ----------------------------------------------


def test_load_train_fn_names_the_problem() -> None:
    assert load_train_fn("dmdb.scale.synth:train_synthetic").__name__ == "train_synthetic"
    for spec, words in (("nocolon", "module:function"), ("no_such_mod:f", "cannot import"),
                        ("dmdb.scale.synth:nope", "has no 'nope'"), ("dmdb.scale.synth:GATHER_ELEMENTS", "not callable")):
        with pytest.raises(dmdb.BadInputError, match=words):
            load_train_fn(spec)


def test_plan_file_round_trip(db: dmdb.Database, tmp_path: Path) -> None:
    exp = make_exp(db, tmp_path)
    job = Job.of(exp, exp.plan(5, seed=2))
    job.save(tmp_path / "plan.json")
    back = Job.load(tmp_path / "plan.json")
    assert back == job
    np.testing.assert_array_equal(back.plan.masks(), job.plan.masks())
    (tmp_path / "bad.json").write_text(json.dumps({"plan": {}}))
    with pytest.raises(dmdb.BadInputError, match="not a dmdb plan file"):
        Job.load(tmp_path / "bad.json")


@pytest.mark.parametrize("edit, words", [
    ({"n_runs": "6"}, "plan.n_runs must be an integer >= 1, got '6'"),
    ({"sampling": "xx"}, "plan.sampling must be one of fixed, bernoulli, got 'xx'"),
    ({"alpha": 2}, "plan.alpha must be a number between 0 and 1 (exclusive), got 2"),
    ({"seed": -1}, "plan.seed must be an integer >= 0, got -1"),
    ({"n_train": 50.0}, "plan.n_train must be an integer >= 1, got 50.0"),
    ({"role": "train"}, "plan.role must be one of fit, holdout, counterfactual, got 'train'"),
])
def test_a_plan_file_edited_by_hand_is_refused_naming_the_field(db_path: Path, tmp_path: Path, edit: dict,
                                                                words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Not an 'unexpected error' (exit 2), nor a run trained on a subset the database never planned."""
    with dmdb.open(db_path) as db:
        make_exp(db, tmp_path)
    base = ["--db", str(db_path), "-q"]
    assert main(["plan", "syn", "--runs", "6", "--out", str(tmp_path / "p.json"), *base]) == 0
    capsys.readouterr()
    d = json.loads((tmp_path / "p.json").read_text())
    d["plan"].update(edit)
    (tmp_path / "p.json").write_text(json.dumps(d))
    assert main(["worker", "syn", "--plan", str(tmp_path / "p.json"), "--shards", str(tmp_path / "sh"),
                 "--train", "dmdb.scale.synth:train_synthetic", "--index", "0", *base]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"dmdb worker: error: not a dmdb plan file (write one with `dmdb plan`): {words}"
    assert not list((tmp_path / "sh").glob("*.parquet"))


def test_run_one_writes_once_and_checks_shape(db: dmdb.Database, tmp_path: Path) -> None:
    exp = make_exp(db, tmp_path)
    plan = exp.plan(2)
    job, shards = Job.of(exp, plan), tmp_path / "shards"
    first = run_one(job, plan.first_run_id, "dmdb.scale.synth:train_synthetic", shards)
    assert run_one(job, plan.first_run_id, "scale_fns:always_raise", shards) == first  # done: not trained again
    with pytest.raises(dmdb.BadInputError, match="has no 'nofn'"):  # done, but a typo is still a typo
        run_one(job, plan.first_run_id, "scale_fns:nofn", shards)
    assert find_shard(shards, "syn", plan.first_run_id) == first
    with pytest.raises(dmdb.DmdbError, match=r"must return shape \(3,\)"):
        run_one(job, plan.first_run_id + 1, "scale_fns:wrong_shape", shards)
    assert find_shard(shards, "syn", plan.first_run_id + 1) is None


def test_find_shard_with_a_name_that_is_not_a_file_name(db: dmdb.Database, tmp_path: Path) -> None:
    """Shards of 'cifar10 (resnet)/v2' are written under a safe file stem; a worker still finds its own."""
    from dmdb.shards import write_run

    exp = db.create_experiment("cifar10 (resnet)/v2", n_train=10, n_targets=2)
    plan = exp.plan(1)
    path = write_run(tmp_path, exp.name, plan.run(plan.first_run_id), np.zeros(2))
    assert find_shard(tmp_path, exp.name, plan.first_run_id) == path
    assert find_shard(tmp_path, "cifar10 _resnet__v2", plan.first_run_id) is None  # same stem, other experiment


def test_worker_cli_plan_file_range_and_slurm_index(db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with dmdb.open(db_path) as db:
        make_exp(db, tmp_path)
    base = ["--db", str(db_path), "-q"]
    assert main(["plan", "syn", "--runs", "6", "--seed", "1", "--out", str(tmp_path / "p.json"), *base]) == 0
    work = ["worker", "syn", "--plan", str(tmp_path / "p.json"), "--shards", str(tmp_path / "sh"), *base]
    assert main([*work, "--train", "dmdb.scale.synth:train_synthetic", "--range", "0:4"]) == 0
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    assert main([*work, "--train", "dmdb.scale.synth:train_synthetic"]) == 0
    assert main([*work, "--train", "scale_fns:always_raise", "--index", "5"]) == 1
    assert "run 5 (index 5) failed: RuntimeError: training of run 5 diverged" in capsys.readouterr().err
    assert main([*work, "--train", "dmdb.scale.synth:train_synthetic", "--index", "6"]) == 1
    assert main([*work, "--train", "dmdb.scale.synth:train_synthetic", "--index", "0", "--role", "holdout"]) == 1
    # the database route: the plan read from the database, opened read-only
    assert main(["worker", "syn", "--plan-seed", "1", "--index", "5", "--train", "dmdb.scale.synth:train_synthetic",
                 "--shards", str(tmp_path / "sh"), *base]) == 0
    assert main(["ingest", str(tmp_path / "sh"), *base]) == 0
    with dmdb.open(db_path) as db:
        exp = db.experiment("syn")
        assert_exactly_once(exp, exp.plan(6, seed=1))
    # a rerun of an index whose shard exists says it did not train (it printed the same line as a training)
    capsys.readouterr()
    assert main([*work[:-1], "--train", "scale_fns:always_raise", "--index", "2"]) == 0
    out = capsys.readouterr().out
    assert "run 2 (index 2): shard there already, not trained again: " in out and str(tmp_path / "sh") in out
    # a typo in --train fails as it does for a new index, not exit 0 because nothing was left to train
    assert main([*work[:-1], "--train", "scale_fns:nofn", "--index", "2"]) == 1
    assert capsys.readouterr().err.strip() == "dmdb worker: error: module 'scale_fns' has no 'nofn'"


def test_worker_range_goes_on_after_a_run_with_nan_margins(db_path: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN from one run is that run's failure, named by run id: the rest of the range is trained."""
    with dmdb.open(db_path) as db:
        make_exp(db, tmp_path, nan_on=[0])
    base = ["--db", str(db_path), "-q"]
    assert main(["plan", "syn", "--runs", "3", "--out", str(tmp_path / "p.json"), *base]) == 0
    assert main(["worker", "syn", "--plan", str(tmp_path / "p.json"), "--shards", str(tmp_path / "sh"),
                 "--train", "scale_fns:nan_on", "--range", "0:3", *base]) == 1
    err = capsys.readouterr().err
    assert "run 0 (index 0) failed: DmdbError: scale_fns:nan_on returned unusable margins for run 0: " \
           "margins hold 1 non-finite values; first: NaN at target 1" in err
    assert find_shard(tmp_path / "sh", "syn", 0) is None
    assert find_shard(tmp_path / "sh", "syn", 1) is not None and find_shard(tmp_path / "sh", "syn", 2) is not None
    assert main(["ingest", str(tmp_path / "sh"), *base]) == 0
    with dmdb.open(db_path, read_only=True) as db:
        exp = db.experiment("syn")
        assert exp.run_ids().tolist() == [1, 2] and exp.missing() == [0]
        plan = exp.plan(3)
        np.testing.assert_allclose(exp.margins(), expected(plan)[1:], rtol=1e-5, atol=1e-5)


def test_run_one_takes_a_torch_tensor_that_requires_grad(db: dmdb.Database, tmp_path: Path) -> None:
    """record() accepts a GPU tensor or one that requires grad; a worker's function may return one too."""
    exp = make_exp(db, tmp_path)
    plan = exp.plan(1)
    run_one(Job.of(exp, plan), 0, "scale_fns:grad_tensor", tmp_path / "sh")
    ingest(db, tmp_path / "sh")
    np.testing.assert_allclose(exp.margins(), expected(plan), rtol=1e-5, atol=1e-5)


# -- collect ----------------------------------------------------------------------------------


def test_collect_local_retries_a_killed_worker(db: dmdb.Database, tmp_path: Path) -> None:
    exp = make_exp(db, tmp_path, die_on=[1, 4])  # run ids 1 and 4 kill their worker process mid-run once
    plan = exp.plan(8)
    seen: list[tuple[int, int]] = []
    rep = collect(exp, plan, KILLER, EngineOptions(workers=2), tmp_path / "sh", progress=lambda d, t: seen.append((d, t)))
    assert rep.ok and rep.trained == 8 and rep.already_recorded == 0
    assert rep.retried >= 2  # the killed runs, and any run that shared the broken pool
    assert sorted(p.name for p in tmp_path.glob("died-*")) == ["died-1", "died-4"]
    assert seen[-1] == (8, 8)
    assert_exactly_once(exp, plan)
    again = collect(exp, plan, KILLER, EngineOptions(workers=2), tmp_path / "sh")
    assert (again.already_recorded, again.trained) == (8, 0)


def test_collect_counts_runs_left_as_shards_apart(db: dmdb.Database, tmp_path: Path) -> None:
    """Runs in the database, runs an interrupted collect left as shards, runs trained now."""
    from dmdb.shards import write_run

    exp = make_exp(db, tmp_path)
    plan = exp.plan(6)
    runs = list(plan)
    exp.record(runs[0], margins=expected(plan)[0])
    for r in runs[1:3]:
        write_run(tmp_path / "sh", exp.name, r, train_synthetic(r, exp.config))
    rep = collect(exp, plan, "dmdb.scale.synth:train_synthetic", EngineOptions(workers=1), tmp_path / "sh")
    assert (rep.already_recorded, rep.from_earlier_shards, rep.trained) == (1, 2, 3) and rep.ok
    assert_exactly_once(exp, plan)


def test_collect_gives_up_after_retries(db: dmdb.Database, tmp_path: Path) -> None:
    exp = make_exp(db, tmp_path)
    plan = exp.plan(2)
    rep = collect(exp, plan, "scale_fns:always_raise", EngineOptions(workers=1, retries=1), tmp_path / "sh")
    assert not rep.ok and rep.trained == 0
    assert rep.retried == 0  # 'N trained now (M after a retry)': failed runs are not among them
    assert sorted(rep.failed) == [0, 1] and "diverged" in rep.failed[0]
    assert exp.n_runs() == 0


def start_collect(db_path: Path, tmp_path: Path, runs: int, shards: int, train: str = KILLER,
                  **config: object) -> tuple[list[str], dict[str, str], subprocess.Popen]:
    """`dmdb collect` of a slow synthetic experiment in its own process group, once `shards` runs are done."""
    with dmdb.open(db_path) as db:
        make_exp(db, tmp_path, **(config or {"sleep": 0.3}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "dmdb", "collect", "syn", "--train", train, "--runs", str(runs), "--workers", "2",
           "--shards", str(tmp_path / "sh"), "--db", str(db_path), "-q"]
    with open(tmp_path / "collect.err", "w") as err:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=err)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "sh").glob("*.parquet"))) < shards and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    return cmd, env, proc


def test_collect_cli_resumes_after_the_collector_is_killed(db_path: Path, tmp_path: Path) -> None:
    cmd, env, proc = start_collect(db_path, tmp_path, runs=12, shards=3)
    os.killpg(proc.pid, signal.SIGKILL)  # the collector and its workers, mid-collection
    proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("12 planned runs: ")  # the summary, on stdout
    with dmdb.open(db_path) as db:
        exp = db.experiment("syn")
        assert_exactly_once(exp, exp.plan(12))


def test_workers_die_with_a_killed_collector(db_path: Path, tmp_path: Path) -> None:
    """SIGKILL of the collecting process alone (not its group) must not leave its forkserver and
    pool workers behind (on a GPU node they would hold their devices)."""
    _, _, proc = start_collect(db_path, tmp_path, runs=40, shards=2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert group_ends(proc.pid, 30), "the collector's workers outlived it"


def group_ends(pgid: int, within: float) -> bool:
    """Whether every process of the group has exited within `within` seconds (those left are killed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)  # anyone left in the collector's process group?
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
    return False


def test_collector_interrupted_alone_stops_at_once(db_path: Path, tmp_path: Path) -> None:
    """SIGINT to the collecting process alone (`kill -INT`, a notebook's interrupt) while runs 2 and
    3 train for a minute: it gave up only once both had finished (under polars' SIGINT handler its
    untimed wait is restarted, not interrupted, and the pool's shutdown waited for its workers).
    Now: one line, exit 130 within seconds, no worker left, no shard of the killed runs; a rerun
    collects every run once."""
    cmd, env, proc = start_collect(db_path, tmp_path, runs=4, shards=2, train="scale_fns:slow_on",
                                   slow_on=[2, 3], slow_s=60)
    time.sleep(0.5)  # runs 2 and 3 are in flight
    os.kill(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - t0 < 10 and proc.returncode == 130
    assert (tmp_path / "collect.err").read_text().strip() == "dmdb collect: interrupted"
    assert group_ends(proc.pid, 10), "a worker of the interrupted collector is still running"
    with dmdb.open(db_path) as db:
        exp = db.experiment("syn")
        plan = exp.plan(4)
        assert set(exp.run_ids().tolist()) <= {0, 1}  # run 1 may not have been ingested yet
        assert [find_shard(tmp_path / "sh", "syn", r) is None for r in plan.run_ids] == [False, False, True, True]
        rep = collect(exp, plan, "dmdb.scale.synth:train_synthetic", EngineOptions(workers=2), tmp_path / "sh")
        assert (rep.already_recorded + rep.from_earlier_shards, rep.trained) == (2, 2) and rep.ok
        assert_exactly_once(exp, plan)


def test_leaving_the_local_engine_early_kills_the_runs_in_flight(db: dmdb.Database, tmp_path: Path) -> None:
    """The caller stops iterating (an ingest error in collect, an interrupt between two runs): the
    run still training is killed instead of waited for."""
    from dmdb.scale.engines import run_local

    exp = make_exp(db, tmp_path, slow_on=[1], slow_s=60)
    plan = exp.plan(2)
    engine = run_local(EngineOptions(workers=2), Job.of(exp, plan), [0, 1], "scale_fns:slow_on", tmp_path / "sh")
    assert next(engine).run_id == 0
    t0 = time.monotonic()
    engine.close()
    assert time.monotonic() - t0 < 10
    assert find_shard(tmp_path / "sh", "syn", 1) is None


def test_collect_on_ray_retries_a_killed_task(db: dmdb.Database, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    exp = make_exp(db, tmp_path, die_on=[2])
    plan = exp.plan(6)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    try:
        rep = collect(exp, plan, KILLER, EngineOptions(engine="ray", retries=2), tmp_path / "sh")
    finally:
        ray.shutdown()
    assert rep.ok and rep.trained == 6, rep
    assert (tmp_path / "died-2").exists()
    assert_exactly_once(exp, plan)


# -- synthetic studies ------------------------------------------------------------------------


def test_synth_margins_follow_the_true_model(db: dmdb.Database) -> None:
    exp, truth = create_synthetic(db, "syn", SPEC, fit_runs=40, holdout_runs=10, chunk=7)
    np.testing.assert_allclose(exp.margins("fit"), expected(exp.plan(40, seed=SPEC.seed)), rtol=1e-5, atol=1e-5)
    assert truth is not None and truth.estimator == "scores:truth"
    w = truth.weights()
    W = true_weights(SPEC)
    assert len(w) == SPEC.k * SPEC.n_targets == np.count_nonzero(W)
    np.testing.assert_allclose(w["weight"].to_numpy(), W[w["train_idx"].to_numpy(), w["target"].to_numpy()], rtol=1e-6)
    again, same = create_synthetic(db, "syn", SPEC, fit_runs=40, holdout_runs=10)  # resumes: no-op
    assert again.n_runs() == 50
    assert same is not None and same.fit_id == truth.fit_id and len(db.fits()) == 1  # no second truth fit
    with pytest.raises(dmdb.BadInputError, match="another synthetic spec"):
        create_synthetic(db, "syn", SynthSpec(50, 3, seed=5), fit_runs=1, truth_fit=False)
    with pytest.raises(dmdb.BadInputError, match="truth fit needs at least 6 fit runs"):
        create_synthetic(db, "tiny", SPEC, fit_runs=3)
    assert "tiny" not in db.experiments()["name"].to_list()


def test_lasso_recovers_the_synthetic_truth(db: dmdb.Database) -> None:
    spec = SynthSpec(n_train=120, n_targets=4, density=0.05, noise=0.2, seed=1)
    exp, truth = create_synthetic(db, "syn", spec, fit_runs=1500, holdout_runs=200)
    fit = exp.fit("lasso")
    W = true_weights(spec)
    w = fit.weights()
    est = np.zeros_like(W)
    est[w["train_idx"].to_numpy(), w["target"].to_numpy()] = w["weight"].to_numpy()
    assert np.corrcoef(est.ravel(), W.ravel())[0, 1] > 0.99
    big = np.abs(W) > 0.3
    assert (np.sign(est[big]) == np.sign(W[big])).all()
    assert np.abs(est - W).max() < 0.1
    assert truth is not None and fit.lds is not None and fit.lds > truth.lds - 0.02


def test_synth_cli(db_path: Path) -> None:
    assert main(["synth", "s", "--runs", "60", "--train", "30", "--targets", "2", "--density", "0.1",
                 "--db", str(db_path), "-q"]) == 0
    with dmdb.open(db_path, read_only=True) as db:
        exp = db.experiment("s")
        assert (exp.n_runs("fit"), exp.n_runs("holdout")) == (60, 6)
        assert SynthSpec.from_config(exp.config) == SynthSpec(30, 2, density=0.1)
        assert db.fits()["estimator"].to_list() == ["scores:truth"]


def test_synth_cli_bernoulli_sampling(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """alpha 0.01 of 50 examples keeps none under 'fixed' sampling; the error's advice, --sampling
    bernoulli, used to exist only on `dmdb create`, so a synth user had no way to follow it."""
    args = ["synth", "s", "--runs", "200", "--train", "50", "--targets", "2", "--alpha", "0.01", "--db", str(db_path), "-q"]
    assert main(args) == 1
    assert "(CLI: --sampling bernoulli)" in capsys.readouterr().err
    assert main([*args, "--sampling", "bernoulli", "--alpha", "0.2"]) == 0
    assert capsys.readouterr().out.startswith("synthetic experiment 's': 220 runs x 50 train x 2 targets, ")  # 200 + 20 holdout
    with dmdb.open(db_path, read_only=True) as db:
        exp = db.experiment("s")
        assert (exp.sampling, exp.alpha) == ("bernoulli", 0.2)
        kept = exp.masks().sum(axis=1)
        assert kept.min() < kept.max()  # subsets of varying size, as Bernoulli(0.2) draws them
        assert abs(kept.mean() / 50 - 0.2) < 0.02
    # a rerun under the other rule is refused, naming the difference
    assert main([*args[:-3], "--alpha", "0.2", "--db", str(db_path), "-q"]) == 1
    assert "asked for sampling fixed (it has bernoulli)" in capsys.readouterr().err


# -- Parquet out, and shards queried in place ---------------------------------------------------


def _unpack(col: pl.Series, n_train: int) -> np.ndarray:
    packed = np.stack([np.frombuffer(b, dtype=np.uint8) for b in col.to_list()])
    return np.unpackbits(packed, axis=1, count=n_train).astype(bool)


@pytest.mark.parametrize("noise", ["nan", "inf"])
def test_synth_refuses_a_noise_that_is_not_a_finite_number(db_path: Path, noise: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--noise nan passed the check and left an empty experiment that a corrected rerun then refused."""
    assert main(["init", "--db", str(db_path)]) == 0
    capsys.readouterr()
    args = ["synth", "syn", "--runs", "20", "--train", "50", "--targets", "2", "--db", str(db_path), "-q"]
    assert main([*args, "--noise", noise]) == 1
    assert capsys.readouterr().err.strip() == f"dmdb synth: error: noise must be a finite number >= 0, got {float(noise)}"
    with dmdb.open(db_path, read_only=True) as db:
        assert db.experiments().height == 0
    assert main([*args, "--noise", "0.5"]) == 0


def test_export_runs_and_weights(db: dmdb.Database, tmp_path: Path) -> None:
    exp, truth = create_synthetic(db, "syn", SPEC, fit_runs=30, holdout_runs=5)
    assert truth is not None
    assert export(exp, tmp_path / "runs.parquet") == Exported(runs=35, weights=0)
    runs = pl.read_parquet(tmp_path / "runs.parquet")
    assert runs["run_id"].to_list() == exp.run_ids().tolist()
    np.testing.assert_array_equal(_unpack(runs["mask"], exp.n_train), exp.masks())
    np.testing.assert_array_equal(np.stack(runs["margins"].to_numpy()), exp.margins())
    assert runs["n_kept"].to_list() == exp.masks().sum(axis=1).tolist()
    assert export(exp, tmp_path / "holdout.parquet", role="holdout").runs == 5

    written = export(exp, fit=truth, weights_path=tmp_path / "w.parquet", targets_path=tmp_path / "t.parquet")
    assert written == Exported(runs=0, weights=SPEC.k * SPEC.n_targets)
    assert pl.read_parquet(tmp_path / "w.parquet").equals(truth.weights())
    # read_shards over the folder counts the runs of the run exports, not the weights' and targets' rows
    counts = db.sql("SELECT file, count(*) AS n FROM read_shards(?) GROUP BY file ORDER BY file",
                    [str(tmp_path / "*.parquet")])
    assert counts.rows() == [(str(tmp_path / "holdout.parquet"), 5), (str(tmp_path / "runs.parquet"), 35)]
    targets = pl.read_parquet(tmp_path / "t.parquet")
    np.testing.assert_array_equal(targets["bias"].to_numpy(), truth.targets()["bias"].to_numpy())

    # an export is a shard: another database ingests it
    with dmdb.open(tmp_path / "other.duckdb") as other:
        copy = other.create_experiment("syn", SPEC.n_train, SPEC.n_targets, config=exp.config)
        (tmp_path / "in").mkdir()
        os.replace(tmp_path / "runs.parquet", tmp_path / "in" / "runs.parquet")
        assert ingest(other, tmp_path / "in").runs_added == 35
        np.testing.assert_array_equal(copy.masks(), exp.masks())


def test_export_cli(db_path: Path, tmp_path: Path) -> None:
    with dmdb.open(db_path) as db:
        exp, truth = create_synthetic(db, "syn", SPEC, fit_runs=20, holdout_runs=4)
        assert truth is not None
        expected_w, fit_id = truth.weights(), truth.fit_id
    base = ["--db", str(db_path), "-q"]
    assert main(["export", "syn", "--runs-out", str(tmp_path / "r.parquet"), "--fit", str(fit_id),
                 "--weights-out", str(tmp_path / "w.parquet"), *base]) == 0
    assert pl.read_parquet(tmp_path / "r.parquet").height == 24
    assert pl.read_parquet(tmp_path / "w.parquet").equals(expected_w)
    assert main(["export", "syn", *base]) == 1
    assert main(["export", "syn", "--weights-out", str(tmp_path / "x.parquet"), *base]) == 1
    # a --fit that cannot be written (no file for it, unknown, another experiment's) fails before the runs file
    with dmdb.open(db_path) as db:
        create_synthetic(db, "other", SPEC, fit_runs=6, holdout_runs=2)
        other_fit = db.fits().filter(pl.col("experiment") == "other")["fit_id"][0]
    for fit_args in (["--fit", str(fit_id)], ["--fit", "99", "--weights-out", str(tmp_path / "x.parquet")],
                     ["--fit", str(other_fit), "--weights-out", str(tmp_path / "x.parquet")]):
        assert main(["export", "syn", "--runs-out", str(tmp_path / "r2.parquet"), *fit_args, *base]) == 1
        assert not (tmp_path / "r2.parquet").exists() and not (tmp_path / "x.parquet").exists()


def test_export_writes_every_file_or_none(db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A weights file that cannot be written (its folder missing, a folder in its place, the runs file's own name)
    left the runs file written beside the error; now no file is made and one that was there is kept as it was."""
    with dmdb.open(db_path) as db:
        _, truth = create_synthetic(db, "syn", SPEC, fit_runs=20, holdout_runs=4)
        assert truth is not None
        fit_id = truth.fit_id
    out = tmp_path / "out"
    (out / "dir.parquet").mkdir(parents=True)
    (out / "old.parquet").write_bytes(b"earlier export")
    base = ["--db", str(db_path), "-q", "--fit", str(fit_id)]
    for runs_out, weights_out, targets_out, why in (
            ("r.parquet", "no/w.parquet", "t.parquet", f"No such file or directory: {out / 'no'}"),
            ("r.parquet", "dir.parquet", "t.parquet", f"Is a directory: {out / 'dir.parquet'}"),
            ("old.parquet", "w.parquet", "no/t.parquet", f"No such file or directory: {out / 'no'}"),
            ("r.parquet", "w.parquet", "r.parquet", f"{out / 'r.parquet'} is named twice: give each file its own name")):
        assert main(["export", "syn", "--runs-out", str(out / runs_out), "--weights-out", str(out / weights_out),
                     "--fit-targets-out", str(out / targets_out), *base]) == 1
        assert capsys.readouterr().err == f"dmdb export: error: {why}\n"
        assert sorted(p.name for p in out.iterdir()) == ["dir.parquet", "old.parquet"]
        assert (out / "old.parquet").read_bytes() == b"earlier export"


def test_export_that_fails_while_writing_leaves_no_file(db: dmdb.Database, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills while the weights are written (after the runs file): no runs file, no dot-names."""
    exp, truth = create_synthetic(db, "syn", SPEC, fit_runs=10, holdout_runs=2)
    out = tmp_path / "out"
    out.mkdir()

    def disk_full(fit: dmdb.Fit, weights_path: Path, targets_path: None) -> int:
        weights_path.write_bytes(b"PAR1 half a file")
        assert sorted(p.name for p in out.iterdir()) == [".r.parquet.tmp", ".w.parquet.tmp"]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export_module, "_write_fit", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export(exp, out / "r.parquet", fit=truth, weights_path=out / "w.parquet")
    assert list(out.iterdir()) == []


def test_read_shards_macro_matches_the_ingested_runs(db: dmdb.Database, tmp_path: Path) -> None:
    exp = make_exp(db, tmp_path)
    plan = exp.plan(4)
    job = Job.of(exp, plan)
    for run_id in plan.run_ids:
        run_one(job, run_id, "dmdb.scale.synth:train_synthetic", tmp_path / "sh")
    glob = str(tmp_path / "sh" / "*.parquet")
    direct = db.sql("SELECT experiment, run_id, bit_count(mask) AS kept, get_bit(mask, 7) AS bit7, margins "
                    "FROM read_shards(?) ORDER BY run_id", [glob])
    assert direct["experiment"].unique().to_list() == ["syn"]
    masks = plan.masks()
    assert direct["kept"].to_list() == masks.sum(axis=1).tolist()
    assert direct["bit7"].to_list() == masks[:, 7].astype(int).tolist()
    np.testing.assert_allclose(np.stack(direct["margins"].to_numpy()), expected(plan), rtol=1e-5, atol=1e-5)
    ingest(db, tmp_path / "sh")
    same = db.sql("SELECT count(*) AS n FROM runs r JOIN read_shards(?) s USING (experiment, run_id) "
                  "WHERE r.mask = s.mask AND r.margins = s.margins", [glob])
    assert same["n"][0] == 4


# -- the digits training function ---------------------------------------------------------------


def test_train_digits_matches_train_models(db: dmdb.Database) -> None:
    from dmdb.demo.data import load_digits_split
    from dmdb.demo.train import train_models
    from dmdb.demo.worker_fn import digits_config, train_digits

    data = load_digits_split(n_train=200, n_targets=30)
    exp = db.create_experiment("digits", 200, 30, config=digits_config(n_targets=30))
    run = exp.plan(1).run(0)
    got = train_digits(run, exp.config)
    want = train_models(data, run.mask[None, :], [run.seed], kind="linear", device="cpu").margins[0]
    assert got.shape == (30,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- the scale benchmark's projection (arithmetic only: no timing) ------------------------------


def _bench_scale():  # type: ignore[no-untyped-def]
    import importlib.util

    path = TESTS.parent / "bench" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scale_projection_scales_each_component_by_its_own_law() -> None:
    bs = _bench_scale()
    slice_ = {"n_runs": 2000, "n_val": 200, "n_holdout": 200, "pairs": 10 * 20, "gemm_flops_per_s": 5e9,
              "stages": {"reading runs": 0.5, "statistics": 2.0, "lasso path": 10.0, "scoring and writing": 0.1}}
    same = {"runs": 2000, "n_train": 2000, "targets": 10}
    # projecting the slice onto itself gives back its measured times
    p = bs.project(slice_, 2000, 10, same)
    assert p["not_projected"] == []
    for stage, sec in slice_["stages"].items():
        assert p["seconds"][stage] == pytest.approx(sec)
    # statistics: Gram (runs N^2) and X'Y (runs N T) each scale by their own law
    w = bs.work(2000, 200, 200, 2000, 10, 20.0)
    gram, xty = w["statistics"]["Gram X'X"], w["statistics"]["X'Y"]
    # the laws of bench/README.md's table, by hand: R = 2,000 runs (V = 200 val), H = 200, N = 2,000, T = 10, k = 20
    assert w["reading runs"] == {"masks": 2200 * 2000, "margins": 2200 * 4 * 10}
    assert xty == 2 * 2000 * 2000 * 10
    assert 2 * 1800 * 2000 * 2001 / 2 <= gram <= 2 * 1800 * 2000**2  # upper-triangle panels: at least N(N+1)/2 entries
    assert w["lasso path"]["curvature"] == 2 * 2 * 61 * 16 * 2000**2  # fit and refit runs <= N: top ends only
    assert w["lasso path"]["validation MSE"] == 2 * 200 * 2000 * 10 * 20
    assert w["lasso path"]["FISTA"] == 2 * 2000**2 * 10
    assert w["scoring and writing"] == {"holdout predictions": 2 * 200 * 2000 * 10, "writing": 2000 + 200 + 10}
    more_targets = bs.project(slice_, 2000, 10, {"runs": 2000, "n_train": 2000, "targets": 1000})
    assert more_targets["seconds"]["statistics"] == pytest.approx(2.0 * (gram + 100 * xty) / (gram + xty))
    # lasso path: the curvature estimate does not grow with targets, validation MSE and FISTA do
    rate = p["flops_per_s"]
    assert rate == 5e9
    lp = w["lasso path"]
    known = lp["curvature"] + lp["validation Gram (refit)"] + lp["validation MSE"]
    fista = 10.0 - known / rate
    expect = (lp["curvature"] + lp["validation Gram (refit)"] + 100 * lp["validation MSE"]) / rate + 100 * fista
    assert more_targets["seconds"]["lasso path"] == pytest.approx(expect)
    # scoring and writing: holdout predictions at the GEMM rate, the writes by rows written
    hold = w["scoring and writing"]["holdout predictions"]
    writes = (0.1 - hold / rate) * (2000 + 200 + 1000) / (2000 + 200 + 10)
    assert more_targets["seconds"]["scoring and writing"] == pytest.approx(100 * hold / rate + writes)
    # a stage without a cost law is reported, not silently scaled
    odd = bs.project({**slice_, "stages": {**slice_["stages"], "new stage": 1.0}}, 2000, 10, same)
    assert odd["not_projected"] == ["new stage"] and "new stage" not in odd["seconds"]
