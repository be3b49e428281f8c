"""Crash injection: SIGKILL a shard worker, an ingester, a recorder and a fit at random moments.

After every kill the database opens, holds only whole runs (or no part of a fit), missing() lists
exactly what is absent, and resuming completes the plan with every run exactly once and the values
the deterministic generator says. Default: ~10 kills per scenario; DMDB_STRESS=1: 50+.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import dmdb
import reliability_procs as rp
from dmdb import ingest
from dmdb.shards import write_shard

N_TRAIN, N_TARGETS = 3000, 16


def _new_db(path: Path, n_runs: int, seed: int = 1) -> dmdb.Plan:
    with dmdb.open(path) as db:
        exp = db.create_experiment("crash", N_TRAIN, N_TARGETS, alpha=0.5)
        return exp.plan(n_runs, seed=seed)


def _resume_and_check(db: dmdb.Database, plan: dmdb.Plan, shards: Path) -> tuple[int, int]:
    """Finish the plan the way a restarted study does; returns (lost, duplicated) runs, both must be 0."""
    exp = db.experiment(plan.experiment)
    todo = exp.missing()
    if todo:  # one shard for the rest, as a restarted worker would write
        masks = plan.masks(todo)
        margins = np.stack([rp.margins_of(r, m, N_TARGETS) for r, m in zip(todo, masks)])
        write_shard(shards, plan.experiment, todo, masks, margins)
    report = ingest(db, shards)
    assert report.bad == []
    rows, distinct = rp.run_counts(db, plan.experiment)
    ids = rp.check_runs_whole(exp, plan)
    lost = len(set(plan.run_ids) - set(ids.tolist()))
    assert exp.missing() == []
    return lost, rows - distinct


def test_kill_shard_worker_at_random_moments(tmp_path: Path) -> None:
    """No partial shard is ever ingested: a torn write stays under its temporary name."""
    rng = random.Random(7)
    ctx = rp.context()
    n, kills_mid_write, lost, dup = rp.iterations(10, 60), 0, 0, 0
    for it in range(n):
        d = tmp_path / f"it{it}"
        d.mkdir()
        plan = _new_db(d / "db.duckdb", 200)
        shards, acks = d / "shards", d / "acks"
        shards.mkdir()
        out = rp.run_and_kill(
            ctx, rp.shard_worker, (str(shards), plan.to_dict(), list(plan.run_ids), N_TARGETS, str(acks), 10),
            acks, rp.random_delay(rng, 0.4),
        )
        kills_mid_write += out.killed_alive
        written = [int(x) for line in rp.read_acks(acks)[1:] for x in line.split()]
        with dmdb.open(d / "db.duckdb") as db:
            report = ingest(db, shards)
            assert report.bad == [], report.bad  # a killed writer leaves no visible partial shard
            exp = db.experiment("crash")
            got = rp.check_runs_whole(exp, plan)
            assert set(written) <= set(got.tolist())  # every shard the worker finished is in
            assert exp.missing() == sorted(set(plan.run_ids) - set(got.tolist()))
            l, du = _resume_and_check(db, plan, shards)
        lost, dup = lost + l, dup + du
        shutil.rmtree(d)
    print(f"[reliability] shard worker: {n} kills, {kills_mid_write} mid-write, lost {lost}, duplicated {dup}")
    assert (lost, dup) == (0, 0)
    assert kills_mid_write >= 1, "no kill landed while the worker was still writing: the scenario tested nothing"


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """15 shards of 20 runs of plan ('fit', seed 1) of a fresh 'crash' experiment: first run id 0."""
    root = tmp_path_factory.mktemp("ingest_src")
    plan = _new_db(root / "template.duckdb", 300)
    masks = plan.masks()
    margins = rp.expected_margins(plan, N_TARGETS)

    for s in range(0, 300, 20):
        write_shard(root / "shards", "crash", np.arange(s, s + 20), masks[s : s + 20], margins[s : s + 20])
    return root / "shards", plan.to_dict()


def test_kill_ingester_mid_ingest(tmp_path: Path, shard_folder: tuple[Path, dict]) -> None:
    """The ingester holds one transaction per group of shards (here 3 shards, 60 runs): a kill leaves
    whole shards only; a rerun completes."""
    shards, plan_dict = shard_folder
    rng = random.Random(11)
    ctx = rp.context()
    _new_db(tmp_path / "timing.duckdb", 300)
    # kills fall within the time the whole ingest takes here (ready + done), so most land mid-ingest
    span = rp.time_to_finish(ctx, rp.ingester, (str(tmp_path / "timing.duckdb"), str(shards), str(tmp_path / "acks-t"), 60),
                             tmp_path / "acks-t", acks=2)
    n, partial_states, lost, dup = rp.iterations(10, 60), 0, 0, 0
    for it in range(n):
        path = tmp_path / f"it{it}.duckdb"
        plan = _new_db(path, 300)
        assert plan.to_dict() == plan_dict
        acks = tmp_path / f"acks{it}"
        rp.run_and_kill(ctx, rp.ingester, (str(path), str(shards), str(acks), 60), acks, rp.random_delay(rng, 1.2 * span))
        with dmdb.open(path) as db:
            exp = db.experiment("crash")
            ids = rp.check_runs_whole(exp, plan)
            marked = db.con.execute("SELECT coalesce(sum(n_runs), 0) FROM ingested_shards").fetchall()[0][0]
            assert marked == len(ids), "runs and the shard markers are written in one transaction"
            assert len(ids) % 20 == 0, "a shard's runs come in together or not at all"
            partial_states += 0 < len(ids) < 300
            report = ingest(db, shards)
            assert report.bad == [] and report.runs_already_present == 0
            assert report.files_already_ingested == len(ids) // 20
            rows, distinct = rp.run_counts(db, "crash")
            got = rp.check_runs_whole(exp, plan)
            lost += 300 - len(got)
            dup += rows - distinct
        path.unlink()
    print(f"[reliability] ingester: {n} kills, {partial_states} left a partial ingest, lost {lost}, duplicated {dup}")
    assert (lost, dup) == (0, 0)
    assert partial_states >= 1, "some kills must land mid-ingest"


def test_kill_recorder_mid_record_batch(tmp_path: Path) -> None:
    """record_batch is all-or-nothing, and every batch it acknowledged survives the kill."""
    rng = random.Random(13)
    ctx = rp.context()
    _new_db(tmp_path / "timing.duckdb", 200)
    # kills fall within the time a whole recording takes here (ready + 20 acknowledged batches), so
    # that most land mid-recording on any machine (a fixed 1 s window let a faster run finish first)
    span = rp.time_to_finish(ctx, rp.recorder, (str(tmp_path / "timing.duckdb"), "crash", 10, str(tmp_path / "acks-t")),
                             tmp_path / "acks-t", acks=21)
    n, partial_states, lost, dup, acked_total = rp.iterations(10, 60), 0, 0, 0, 0
    for it in range(n):
        path = tmp_path / f"it{it}.duckdb"
        plan = _new_db(path, 200)
        acks = tmp_path / f"acks{it}"
        rp.run_and_kill(ctx, rp.recorder, (str(path), "crash", 10, str(acks)), acks, rp.random_delay(rng, 1.2 * span))
        acked = [tuple(map(int, line.split())) for line in rp.read_acks(acks)[1:]]
        acked_total += len(acked)
        with dmdb.open(path) as db:
            exp = db.experiment("crash")
            ids = set(rp.check_runs_whole(exp, plan).tolist())
            for first, last in acked:
                assert set(range(first, last + 1)) <= ids, f"acknowledged runs {first}..{last} were lost"
            for s in range(0, 200, 10):  # all or nothing per record_batch call
                assert len(ids & set(range(s, s + 10))) in (0, 10)
            partial_states += 0 < len(ids) < 200
            todo = exp.missing()
            if todo:
                masks = plan.masks(todo)
                exp.record_batch(todo, masks, np.stack([rp.margins_of(r, m, N_TARGETS) for r, m in zip(todo, masks)]))
            rows, distinct = rp.run_counts(db, "crash")
            lost += 200 - len(rp.check_runs_whole(exp, plan))
            dup += rows - distinct
            assert exp.missing() == []
        path.unlink()
    print(f"[reliability] recorder: {n} kills, {partial_states} partial, {acked_total} acknowledged batches, lost {lost}, duplicated {dup}")
    assert (lost, dup) == (0, 0)
    assert partial_states >= n // 3 and acked_total > 0


def test_acknowledged_record_and_ingest_survive_kill_right_after_return(tmp_path: Path) -> None:
    """Durability: kill -9 the moment record_batch / ingest has returned; everything it reported is there."""
    ctx = rp.context()
    for it in range(rp.iterations(3, 10)):
        d = tmp_path / f"it{it}"
        d.mkdir()
        with dmdb.open(d / "db.duckdb") as db:
            plan = db.create_experiment("crash", N_TRAIN, N_TARGETS, alpha=0.5).plan(60, seed=1)
            other = db.create_experiment("sharded", N_TRAIN, N_TARGETS, alpha=0.5).plan(40, seed=2)
        rp.shard_worker(str(d / "shards"), other.to_dict(), list(other.run_ids), N_TARGETS, str(d / "wacks"), 10)
        acks = d / "acks"
        p = ctx.Process(target=rp.recorder, args=(str(d / "db.duckdb"), "crash", 30, str(acks), str(d / "shards")))
        p.start()
        while not any(a.startswith("ingested") for a in rp.read_acks(acks)):
            assert p.is_alive()
            time.sleep(0.001)
        p.kill()  # right after ingest returned
        p.join()
        assert rp.read_acks(acks)[-1] == "ingested 40"
        assert (d / "db.duckdb.wal").exists()  # the killed writer's log: read-only opens replay it in memory
        for read_only in (True, False):
            with dmdb.open(d / "db.duckdb", read_only=read_only) as db:
                for name, pl_ in (("crash", plan), ("sharded", other)):
                    exp = db.experiment(name)
                    assert exp.missing() == []
                    assert rp.run_counts(db, name) == (len(pl_), len(pl_))
                    rp.check_runs_whole(exp, pl_)


FIT_TABLES = ("fit_targets", "fit_runs", "weights", "fit_curve")


def _check_fits_whole(db: dmdb.Database, n_train: int, n_targets: int, n_runs: int) -> int:
    """No row of a fit without its fits row, and every stored fit complete; returns the number of fits."""
    fits = [r[0] for r in db.con.execute("SELECT fit_id FROM fits").fetchall()]
    for table in FIT_TABLES:
        orphans = db.con.execute(f"SELECT count(*) FROM {table} WHERE fit_id NOT IN (SELECT fit_id FROM fits)").fetchall()
        assert orphans[0][0] == 0, f"{table} holds rows of a fit that has no fits row"
    for fit_id in fits:
        counts = [db.con.execute(f"SELECT count(*) FROM {t} WHERE fit_id = ?", [fit_id]).fetchall()[0][0] for t in FIT_TABLES[:3]]
        assert counts == [n_targets, n_runs, n_train * n_targets], f"fit {fit_id} is incomplete: {counts}"
    return len(fits)


def test_kill_fit_midway(tmp_path: Path) -> None:
    """`dmdb fit` (difference in means: dense weights, so the final write takes a while) killed at
    random moments leaves no partial fit; the killed fits never appear and a rerun completes."""
    n_train, n_targets = 3000, 200
    path = tmp_path / "fit.duckdb"
    with dmdb.open(path) as db:
        exp = db.create_experiment("f", n_train, n_targets, alpha=0.5)
        rng = np.random.default_rng(0)
        w = rng.standard_normal((n_train, n_targets)).astype(np.float32)
        for role, n in (("fit", 300), ("holdout", 60)):
            plan = exp.plan(n, seed=0, role=role)
            m = plan.masks()
            exp.record_batch(list(plan.run_ids), m, m @ w / 100, role=role)
    ctx = rp.context()
    argv = ["fit", "f", "--estimator", "diff-means", "--device", "cpu", "--db", str(path), "-q"]
    rng_kill = random.Random(17)
    committed = 0
    for it in range(rp.iterations(4, 50)):
        acks = tmp_path / f"acks{it}"
        rp.run_and_kill(ctx, rp.cli, (argv, str(tmp_path / "err"), str(acks)), acks, rp.random_delay(rng_kill, 3.0))
        with dmdb.open(path) as db:
            committed = _check_fits_whole(db, n_train, n_targets, 360)
    print(f"[reliability] fit: {rp.iterations(4, 50)} kills, {committed} fits committed before a kill, no partial fit")
    p = ctx.Process(target=rp.cli, args=(argv, str(tmp_path / "err")))
    p.start()
    p.join(300)
    assert p.exitcode == 0, (tmp_path / "err").read_text()
    with dmdb.open(path) as db:
        assert _check_fits_whole(db, n_train, n_targets, 360) == committed + 1


def test_file_size_limit_reports_the_write_error_and_writes_nothing(tmp_path: Path) -> None:
    """A write that hits the file-size limit (as a full disk would) fails naming it ("File too
    large"), never with DuckDB's complaint about the aborted transaction that hid it: inside the
    transaction (a fit's weights, written to the database file) and at COMMIT (the WAL); the
    database is left as it was."""
    from test_npy_import import make_store

    n_train, n_targets = 3000, 200
    path = tmp_path / "lim.duckdb"
    with dmdb.open(path) as db:
        exp = db.create_experiment("f", n_train, n_targets, alpha=0.5)
        w = np.random.default_rng(0).standard_normal((n_train, n_targets)).astype(np.float32)
        for role, n in (("fit", 300), ("holdout", 60)):
            plan = exp.plan(n, seed=0, role=role)
            m = plan.masks()
            exp.record_batch(list(plan.run_ids), m, m @ w / 100, role=role)
        db.con.execute("CHECKPOINT")
    store = tmp_path / "store"
    make_store(store, m=8000, n=n_train, t=n_targets, seed=1)
    ctx = rp.context()
    before = path.read_bytes()
    for argv in (["fit", "f", "--estimator", "diff-means", "--device", "cpu"], ["import-npy", str(store), "--name", "g"]):
        err = tmp_path / "err"
        limit = len(before) + (64 << 10)
        p = ctx.Process(target=rp.cli_with_file_limit, args=(argv + ["--db", str(path), "-q"], str(err), limit))
        p.start()
        p.join(300)
        msg = err.read_text()
        assert p.exitcode != 0 and "File too large" in msg, msg
        assert "aborted" not in msg and "cannot rollback" not in msg, msg
        with dmdb.open(path) as db:
            assert db.sql("SELECT count(*) AS n FROM fits")["n"][0] == 0
            assert db.sql("SELECT count(*) AS n FROM runs")["n"][0] == 360
            assert [r[0] for r in db.con.execute("SELECT name FROM experiments ORDER BY name").fetchall()] in (["f"], ["f", "g"])


def test_export_that_fails_midway_leaves_no_partial_file(tmp_path: Path) -> None:
    """`dmdb export` that hits the file-size limit (as a full disk would) left its partial
    `runs.parquet.tmp` beside the target, as big as the disk allowed; now the error names the limit,
    nothing is left but the export that was there before, unchanged."""
    path = tmp_path / "x.duckdb"
    with dmdb.open(path) as db:
        plan = db.create_experiment("crash", N_TRAIN, N_TARGETS, alpha=0.5).plan(400, seed=1)
        db.experiment("crash").record_batch(list(plan.run_ids), plan.masks(), rp.expected_margins(plan, N_TARGETS))
    out = tmp_path / "out" / "runs.parquet"
    out.parent.mkdir()
    out.write_bytes(b"an earlier export")
    err = tmp_path / "err"
    argv = ["export", "crash", "--runs-out", str(out), "--db", str(path), "-q"]
    p = rp.context().Process(target=rp.cli_with_file_limit, args=(argv, str(err), 64 << 10))
    p.start()
    p.join(120)
    assert p.exitcode == 1 and "File too large" in err.read_text(), err.read_text()
    assert sorted(f.name for f in out.parent.iterdir()) == ["runs.parquet"]
    assert out.read_bytes() == b"an earlier export"
