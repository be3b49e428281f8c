"""Concurrency: two ingesters at once, a writer holding the file while others open it, many workers
writing shards at once. Either it works or a clear DatabaseLockedError says what to do; never a
corrupt database or a duplicated run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import dmdb
import reliability_procs as rp
from dmdb import ingest
from dmdb.cli import main
from dmdb.shards import write_shard

N_TRAIN, N_TARGETS = 500, 8


def _wait_ready(acks: Path, p: object) -> None:
    deadline = time.monotonic() + 60
    while "ready" not in rp.read_acks(acks):
        assert p.is_alive() and time.monotonic() < deadline  # type: ignore[attr-defined]
        time.sleep(0.005)


def test_two_ingesters_at_once(tmp_path: Path) -> None:
    ctx = rp.context()
    outcomes: dict[str, int] = {"both succeeded": 0, "one locked out": 0}
    for it in range(rp.iterations(4, 20)):
        d = tmp_path / f"it{it}"
        with dmdb.open(d.with_suffix(".duckdb")) as db:
            plan = db.create_experiment("c", N_TRAIN, N_TARGETS, alpha=0.5).plan(120, seed=it)
        masks, margins = plan.masks(), rp.expected_margins(plan, N_TARGETS)
        for s in range(0, 120, 20):
            write_shard(d, "c", np.arange(s, s + 20), masks[s : s + 20], margins[s : s + 20])
        argv = ["ingest", str(d), "--db", str(d.with_suffix(".duckdb")), "-q"]
        procs = [ctx.Process(target=rp.cli, args=(argv, str(d / f"err{k}"))) for k in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        codes = [p.exitcode for p in procs]
        errs = [(d / f"err{k}").read_text() for k in range(2)]
        for code, err in zip(codes, errs):
            assert code == 0 or (code == 1 and "is locked" in err and "PID" in err and len(err.splitlines()) == 1), (code, err)
        assert 0 in codes
        outcomes["both succeeded" if codes == [0, 0] else "one locked out"] += 1
        with dmdb.open(d.with_suffix(".duckdb")) as db:
            exp = db.experiment("c")
            assert rp.run_counts(db, "c") == (120, 120)
            assert exp.missing() == []
            rp.check_runs_whole(exp, plan)
            assert ingest(db, d).runs_added == 0
    print(f"[reliability] two ingesters: {outcomes}, no duplicates")
    assert sum(outcomes.values()) == rp.iterations(4, 20)


def test_writer_holds_the_file_while_others_open_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "held.duckdb"
    with dmdb.open(path) as db:
        exp = db.create_experiment("c", N_TRAIN, N_TARGETS, alpha=0.5)
        plan = exp.plan(20, seed=0)
        exp.record_batch(list(plan.run_ids), plan.masks(), rp.expected_margins(plan, N_TARGETS))
    acks = tmp_path / "acks"
    p = rp.context().Process(target=rp.hold_open, args=(str(path), str(acks)))
    p.start()
    try:
        _wait_ready(acks, p)
        for read_only, held in ((True, "has it open for writing"), (False, "has it open, for writing or read-only")):
            with pytest.raises(dmdb.DatabaseLockedError, match=rf"locked: another process .*PID {p.pid}.* {held}"):
                dmdb.open(path, read_only=read_only)
        assert main(["sql", "SELECT count(*) FROM runs", "--db", str(path)]) == 1
        err = capsys.readouterr().err
        assert "is locked" in err and "Wait for that process" in err and len(err.strip().splitlines()) == 1
        # a worker without --plan reads the plan from the database: told to use a plan file, not to wait
        assert main(["worker", "c", "--index", "0", "--train", "dmdb.scale.synth:train_synthetic",
                     "--shards", str(tmp_path / "sh"), "--db", str(path)]) == 1
        err = capsys.readouterr().err
        assert "is locked: another process (" in err and f"PID {p.pid}) has it open for writing" in err
        assert "`dmdb plan c --runs N --seed 0 --role fit --out plan.json`" in err and "Wait for" not in err
        assert len(err.strip().splitlines()) == 1
        from tui.service import Service  # the TUI opens through the same read-only path

        with pytest.raises(dmdb.DatabaseLockedError):
            Service.open(path)
    finally:
        p.kill()
        p.join()
    with dmdb.open(path, read_only=True) as db:  # the writer was killed: the file opens, data intact
        rp.check_runs_whole(db.experiment("c"), plan)
        assert rp.run_counts(db, "c") == (20, 20)
    # a reader (the TUI, dmdb sql) keeps writers out, and the message says a reader may be the holder
    acks2 = tmp_path / "acks2"
    p = rp.context().Process(target=rp.hold_open, args=(str(path), str(acks2), True))
    p.start()
    try:
        _wait_ready(acks2, p)
        with pytest.raises(dmdb.DatabaseLockedError, match=rf"PID {p.pid}.* has it open, for writing or read-only"):
            dmdb.open(path)
        with dmdb.open(path, read_only=True) as db:  # readers share the file
            assert rp.run_counts(db, "c") == (20, 20)
    finally:
        p.kill()
        p.join()


def test_many_workers_write_shards_at_once_then_one_ingest(tmp_path: Path) -> None:
    with dmdb.open(tmp_path / "db.duckdb") as db:
        plan = db.create_experiment("c", N_TRAIN, N_TARGETS, alpha=0.5).plan(120, seed=3)
    ctx = rp.context()
    ids = list(plan.run_ids)
    workers = 12
    procs = [
        ctx.Process(
            target=rp.shard_worker,
            args=(str(tmp_path / "shards"), plan.to_dict(), ids[k::workers], N_TARGETS, str(tmp_path / f"a{k}"), 1 + k % 3),
        )
        for k in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with dmdb.open(tmp_path / "db.duckdb") as db:
        report = ingest(db, tmp_path / "shards")
        assert report.bad == [] and report.runs_added == 120
        exp = db.experiment("c")
        assert exp.missing() == [] and rp.run_counts(db, "c") == (120, 120)
        rp.check_runs_whole(exp, plan)
        assert exp.runs()["worker"].n_unique() == workers
