from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

import dmdb
from runs_util import random_runs, table_counts
from dmdb import ingest
from dmdb.plan import Plan, PlannedRun
from dmdb.shards import write_run, write_shard


def _margins_of(mask: np.ndarray) -> np.ndarray:
    return (np.flatnonzero(mask)[:5] / 37.0 + np.arange(5)).astype(np.float32)


def _worker(directory: str, plan_dict: dict, run_ids: list[int]) -> None:
    """What a training worker does: no database, just the plan and a shard per run."""
    plan = Plan.from_dict(plan_dict)
    for rid in run_ids:
        run = plan.run(rid)
        margins = _margins_of(run.mask)
        write_run(directory, plan.experiment, run, margins, worker=f"w{rid % 4}", duration_s=0.01)


def test_many_worker_processes_then_one_ingest(exp: dmdb.Experiment, tmp_path: Path) -> None:
    plan = exp.plan(40, seed=2)
    shards = tmp_path / "shards"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(shards), plan.to_dict(), list(plan.run_ids)[k::4])) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    report = ingest(exp.db, shards)
    assert (report.files_ingested, report.runs_added, report.bad) == (40, 40, [])
    assert exp.missing() == []
    np.testing.assert_array_equal(exp.masks(), plan.masks())
    np.testing.assert_array_equal(exp.margins(), np.stack([_margins_of(m) for m in plan.masks()]))
    assert sorted(set(exp.runs()["worker"])) == ["w0", "w1", "w2", "w3"]


def test_shard_file_names_stay_inside_the_directory(db: dmdb.Database, tmp_path: Path) -> None:
    """Experiment names are not paths: 'cifar/v2' and '../up' shards land in the directory and ingest."""
    for name in ("cifar/v2", "../up"):
        e = db.create_experiment(name, n_train=10, n_targets=2)
        plan = e.plan(2)
        path = write_run(tmp_path / "shards", name, plan.run(plan.first_run_id), np.zeros(2))
        assert path.parent == tmp_path / "shards"
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "shards").iterdir()) == ["_up", "cifar_v2"]
    report = ingest(db, tmp_path / "shards")
    assert (report.files_ingested, report.runs_added, report.bad) == (2, 2, [])
    assert db.experiment("cifar/v2").n_runs() == 1 and db.experiment("../up").n_runs() == 1


def test_ingest_of_a_file_says_it_is_not_a_directory(exp: dmdb.Experiment, tmp_path: Path) -> None:
    """`dmdb ingest plan.json` (or one shard's path) said the directory 'does not exist'."""
    masks, margins = random_runs(1, 37, 5)
    shard = write_shard(tmp_path, "small", [0], masks, margins)
    with pytest.raises(dmdb.DmdbError, match=f"^{shard} is a file, not a shard directory"):
        ingest(exp.db, shard)
    with pytest.raises(dmdb.DmdbError, match="does not exist"):
        ingest(exp.db, tmp_path / "nowhere")
    assert exp.n_runs() == 0


def test_a_damaged_shard_is_reported_in_one_line(exp: dmdb.Experiment, tmp_path: Path) -> None:
    """A damaged page header made Arrow's message three lines and a blank one in `dmdb ingest`'s report."""
    masks, margins = random_runs(1, 37, 5)
    shard = write_shard(tmp_path, "small", [0], masks, margins)
    b = bytearray(shard.read_bytes())
    b[4:8] = b"\xff\xff\xff\xff"  # the first page header, just after the magic bytes
    shard.write_bytes(bytes(b))
    report = ingest(exp.db, tmp_path)
    assert [name for name, _ in report.bad] == [shard.name]
    why = report.bad[0][1]
    assert why.startswith("unreadable shard (corrupt or partial Parquet file): ") and "\n" not in why
    assert exp.n_runs() == 0


def test_ingest_is_idempotent(exp: dmdb.Experiment, tmp_path: Path) -> None:
    masks, margins = random_runs(10, 37, 5)
    for i in range(0, 10, 5):
        write_shard(tmp_path, "small", np.arange(i, i + 5), masks[i : i + 5], margins[i : i + 5])
    first = ingest(exp.db, tmp_path)
    before = table_counts(exp.db)
    second = ingest(exp.db, tmp_path)
    assert (first.files_ingested, first.runs_added) == (2, 10)
    assert (second.files_ingested, second.runs_added, second.files_already_ingested) == (0, 0, 2)
    assert table_counts(exp.db) == before
    # a worker that was retried wrote the same run again under a new file name: a no-op
    write_shard(tmp_path, "small", [3], masks[3:4], margins[3:4])
    third = ingest(exp.db, tmp_path)
    assert (third.files_ingested, third.runs_added, third.runs_already_present) == (1, 0, 1)
    np.testing.assert_array_equal(exp.margins(), margins)


def test_bad_shards_can_be_moved_aside(exp: dmdb.Experiment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A duplicated array task that trained run 3 again with other margins left a shard that every
    later ingest reported (exit 1) until deleted by hand; --move-bad puts such shards aside."""
    from dmdb.cli import main

    masks, margins = random_runs(5, 37, 5)
    shards = tmp_path / "sh"
    write_shard(shards, "small", np.arange(5), masks, margins)
    ingest(exp.db, shards)
    twin = write_shard(shards / "node2", "small", [3], masks[3:4], margins[3:4] + 1)
    (shards / "junk.parquet").write_bytes(b"junk")
    bad_dir = shards / "_bad"  # inside the shard folder: not searched
    report = ingest(exp.db, shards, move_bad=bad_dir)
    why = dict(report.bad)
    assert sorted(why) == ["junk.parquet", f"node2/{twin.name}"]
    # the note is a sentence of its own, after the reason's full stop (was '... is kept. (moved to X)')
    assert why[f"node2/{twin.name}"] == (
        "run 3 of experiment 'small' was already recorded with other data (different margins). This shard was "
        f"skipped; the run as recorded before is kept. The shard was moved to {bad_dir.resolve() / 'node2' / twin.name}.")
    assert why["junk.parquet"].startswith("unreadable shard")
    assert why["junk.parquet"].endswith(f". The shard was moved to {bad_dir.resolve() / 'junk.parquet'}.")
    assert why["junk.parquet"].count("..") == 0
    assert (bad_dir / "node2" / twin.name).exists() and (bad_dir / "junk.parquet").exists() and not twin.exists()
    np.testing.assert_array_equal(exp.margins(), margins)  # the good shard is in, run 3 as first recorded
    # the same command again: nothing bad left to report (the folder inside the shards is not searched)
    assert main(["ingest", str(shards), "--move-bad", str(bad_dir), "--db", exp.db.path, "-q"]) == 0


def test_bad_shards_are_reported_and_skipped(exp: dmdb.Experiment, db: dmdb.Database, tmp_path: Path) -> None:
    masks, margins = random_runs(6, 37, 5)
    good = write_shard(tmp_path, "small", [0, 1], masks[:2], margins[:2])
    truncated = write_shard(tmp_path, "small", [2, 3], masks[2:4], margins[2:4])
    truncated.write_bytes(truncated.read_bytes()[:-40])
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 not really")
    write_shard(tmp_path, "ghost", [4], masks[4:5], margins[4:5])
    write_shard(tmp_path, "small", [4], masks[4:5, :30], margins[4:5])  # wrong n_train
    db.create_experiment("other", 37, 5)
    (tmp_path / ".in-progress.parquet.tmp").write_bytes(b"half")  # a worker still writing
    exp.record_batch([5], masks[5:6], margins[5:6])
    write_shard(tmp_path, "small", [5], masks[5:6], margins[5:6] + 1)  # conflicts with the recorded run 5
    report = ingest(db, tmp_path)
    bad = dict(report.bad)
    assert report.files_ingested == 1 and report.runs_added == 2 and len(bad) == 5
    assert "unreadable shard" in bad[truncated.name]
    assert "unreadable shard" in bad["garbage.parquet"]
    assert any("unknown experiment 'ghost'" in why for why in bad.values())
    assert any("30 train examples" in why for why in bad.values())
    assert any("already recorded with other data" in why for why in bad.values())
    np.testing.assert_array_equal(exp.run_ids(), [0, 1, 5])
    assert db.sql("SELECT name FROM ingested_shards")["name"].to_list() == [good.name]


def test_a_conflicting_shard_is_reported_as_skipped_not_as_a_batch_written_in_full(exp: dmdb.Experiment,
                                                                                   tmp_path: Path) -> None:
    """record_batch's advice for a clash (nothing of the batch was written, use another run id) is
    false of an ingest, which writes the other shards: the report says what became of the shard."""
    masks, margins = random_runs(3, 37, 5)
    exp.record_batch([1], masks[1:2], margins[1:2])
    _one_run_shards(tmp_path, masks, np.vstack([margins[0], margins[1] + 1, margins[2]]), range(3))
    report = ingest(exp.db, tmp_path)
    (why,) = dict(report.bad).values()
    assert why == ("run 1 of experiment 'small' was already recorded with other data (different margins). "
                   "This shard was skipped; the run as recorded before is kept.")
    assert (report.files_ingested, report.runs_added) == (2, 2)
    np.testing.assert_array_equal(exp.margins(), margins)
    with pytest.raises(dmdb.DuplicateRunError, match=r"\(different margins\)\. Nothing of this batch was written"):
        exp.record_batch([2], masks[2:3], margins[2:3] + 1)


def test_write_run_checks_the_margins_against_the_plans_targets(exp: dmdb.Experiment, tmp_path: Path) -> None:
    """A worker's wrong margin count is refused by write_run, not found at ingest once every run has
    trained; a plan carried as JSON (to_dict, from_dict) keeps the check, and an older plan dict
    without n_targets still loads."""
    plan_dict = json.loads(json.dumps(exp.plan(2, seed=1).to_dict()))
    run = Plan.from_dict(plan_dict).run(plan_dict["first_run_id"])
    shards = tmp_path / "shards"
    with pytest.raises(dmdb.BadInputError, match=r"^margins of one run must hold one value per target \(5\), got 4$"):
        write_run(shards, "small", run, np.zeros(4))
    assert not shards.exists()
    write_run(shards, "small", run, np.arange(5))
    older = Plan.from_dict({k: v for k, v in plan_dict.items() if k != "n_targets"})
    assert older.n_targets is None and np.array_equal(older.run(run.run_id).mask, run.mask)
    assert (ingest(exp.db, shards).runs_added, exp.margins().tolist()) == (1, [[0.0, 1.0, 2.0, 3.0, 4.0]])


def test_write_shard_validates_before_writing(tmp_path: Path) -> None:
    masks, margins = random_runs(2, 37, 5)
    with pytest.raises(dmdb.BadInputError, match="NaN"):
        write_shard(tmp_path, "small", [0, 1], masks, np.full_like(margins, np.nan))
    with pytest.raises(dmdb.BadInputError, match="dtype bool"):
        write_shard(tmp_path, "small", [0, 1], masks.astype(int), margins)
    # a run id instead of the PlannedRun raised AttributeError ('int' object has no attribute 'require_experiment')
    with pytest.raises(dmdb.BadInputError, match="run must be a PlannedRun"):
        write_run(tmp_path, "small", 3, margins[0])  # type: ignore[arg-type]
    # wrong shapes are bad input, not a corrupt shard (CorruptShardError is for files that fail to read)
    with pytest.raises(dmdb.BadInputError, match="must be 2-D") as e:
        write_shard(tmp_path, "small", [0, 1], masks[0], margins)
    assert not isinstance(e.value, dmdb.CorruptShardError)
    run = PlannedRun(run_id=0, role="fit", mask=masks[0], seed=0, experiment="small")
    with pytest.raises(dmdb.BadInputError, match=r"margins of one run must be 1-D \(one per target\), got shape \(1, 5\)"):
        write_run(tmp_path, "small", run, margins[:1])  # said 'must be 2-D ... (1, 1, 5)', a CorruptShardError
    assert list(tmp_path.iterdir()) == []


def test_unfinished_shard_files_of_stopped_writers_are_listed(exp: dmdb.Experiment, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A worker killed mid-write leaves its shard under a temporary name; ingest never reads it, and
    nothing said it was there (it stayed forever, as large as the shard). Ingest now lists those not
    written to for over an hour (a live writer's is newer) and says how to delete them; it deletes none."""
    import os
    import time

    from dmdb.cli import main
    from dmdb.ingestion import ABANDONED_AFTER_S

    masks, margins = random_runs(2, 37, 5)
    shards = tmp_path / "sh"
    write_shard(shards, "small", np.arange(2), masks, margins)
    old = shards / "node1" / ".small-7-ab.parquet.tmp"
    old.parent.mkdir()
    old.write_bytes(b"half a shard")
    then = time.time() - ABANDONED_AFTER_S - 60
    os.utime(old, (then, then))
    live = shards / ".small-8-cd.parquet.tmp"
    live.write_bytes(b"being written")
    report = ingest(exp.db, shards)
    assert report.abandoned == ["node1/.small-7-ab.parquet.tmp"] and report.bad == [] and report.runs_added == 2
    assert main(["ingest", str(shards), "--db", exp.db.path, "-q"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "1 unfinished shard files" in err and "node1/.small-7-ab.parquet.tmp" in err
    assert f"find {shards} -name '.*.parquet.tmp' -mmin +60 -delete" in err
    assert old.exists() and live.exists()


# -- grouped ingest: many shards a transaction, each shard still in whole or not at all ---------------
def _one_run_shards(directory: Path, masks: np.ndarray, margins: np.ndarray, ids: range) -> dict[int, Path]:
    """One shard per run id (below 10, so that file name order is run id order)."""
    return {int(r): write_shard(directory, "small", [r], masks[r : r + 1], margins[r : r + 1]) for r in ids}


def _counting_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the number of runs of each write_batch call ingest makes (one per transaction)."""
    import dmdb.ingestion

    sizes: list[int] = []
    real = dmdb.ingestion.write_batch

    def counted(exp, batch, also=None, plans=None):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return real(exp, batch, also=also, plans=plans)

    monkeypatch.setattr(dmdb.ingestion, "write_batch", counted)
    return sizes


def test_a_corrupt_shard_in_a_group_keeps_only_itself_out(exp: dmdb.Experiment, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    masks, margins = random_runs(10, 37, 5)
    paths = _one_run_shards(tmp_path, masks, margins, range(10))
    paths[4].write_bytes(paths[4].read_bytes()[:-40])  # torn in the middle of the folder
    sizes = _counting_writes(monkeypatch)
    seen: list[tuple[int, int]] = []
    report = ingest(exp.db, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert [name for name, _ in report.bad] == [paths[4].name] and "unreadable shard" in report.bad[0][1]
    assert (report.files_ingested, report.runs_added) == (9, 9)
    assert sizes == [9], "the nine good shards go in in one transaction"
    keep = [r for r in range(10) if r != 4]
    np.testing.assert_array_equal(exp.run_ids(), keep)
    np.testing.assert_array_equal(exp.masks(), masks[keep])
    np.testing.assert_array_equal(exp.margins(), margins[keep])
    assert sorted(exp.db.sql("SELECT name FROM ingested_shards")["name"].to_list()) == sorted(paths[r].name for r in keep)
    dones = [d for d, _ in seen]
    assert seen[0] == (0, 10) and seen[-1] == (10, 10) and dones == sorted(dones) and {t for _, t in seen} == {10}


def test_a_conflicting_shard_in_a_group_keeps_only_itself_out(exp: dmdb.Experiment, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Run 1 recorded before with other data and a twin of run 5 with other margins are refused; their
    groups' other shards (an identical twin of run 6, runs already recorded identically) go in."""
    masks, margins = random_runs(10, 37, 5)
    exp.record_batch([0, 1, 2], masks[:3], np.vstack([margins[0], margins[1] + 1, margins[2]]))
    paths = _one_run_shards(tmp_path, masks, margins, range(10))
    twin5 = write_shard(tmp_path / "z", "small", [5], masks[5:6], margins[5:6] + 1)  # after the originals by name
    twin6 = write_shard(tmp_path / "z", "small", [6], masks[6:7], margins[6:7])
    sizes = _counting_writes(monkeypatch)
    report = ingest(exp.db, tmp_path)
    bad = dict(report.bad)
    assert sorted(bad) == sorted([paths[1].name, f"z/{twin5.name}"])
    assert all("already recorded with other data" in why for why in bad.values())
    assert (report.files_ingested, report.runs_added, report.runs_already_present) == (10, 7, 3)
    # the group of runs 0-9 is refused, then halved down to run 1's shard; the twins form a second group
    assert sizes == [10, 5, 2, 1, 1, 3, 5, 2, 1, 1]
    np.testing.assert_array_equal(exp.run_ids(), range(10))
    np.testing.assert_array_equal(exp.masks(), masks)
    expected = margins.copy()
    expected[1] += 1  # as first recorded
    np.testing.assert_array_equal(exp.margins(), expected)
    names = set(exp.db.sql("SELECT name FROM ingested_shards")["name"].to_list())
    assert names == {p.name for r, p in paths.items() if r != 1} | {f"z/{twin6.name}"}
    again = ingest(exp.db, tmp_path)
    assert (again.files_ingested, again.runs_added, again.files_already_ingested, len(again.bad)) == (0, 0, 10, 2)


def test_an_interrupted_group_write_leaves_whole_groups_and_the_next_ingest_completes(
    exp: dmdb.Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dmdb.ingestion

    masks, margins = random_runs(10, 37, 5)
    paths = _one_run_shards(tmp_path, masks, margins, range(10))
    monkeypatch.setattr(dmdb.ingestion, "GROUP_RUNS", 4)
    real = dmdb.ingestion.write_batch
    writes: list[int] = []

    def interrupted_in_the_second(exp, batch, also=None, plans=None):  # type: ignore[no-untyped-def]
        writes.append(len(batch))

        def mark_then_stop(con) -> None:  # type: ignore[no-untyped-def]
            also(con)
            if len(writes) == 2:  # Ctrl-C inside the second group's transaction, its runs and marks inserted
                raise KeyboardInterrupt

        return real(exp, batch, also=mark_then_stop, plans=plans)

    monkeypatch.setattr(dmdb.ingestion, "write_batch", interrupted_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        ingest(exp.db, tmp_path)
    assert writes == [4, 4]
    np.testing.assert_array_equal(exp.run_ids(), range(4))
    assert sorted(exp.db.sql("SELECT name FROM ingested_shards")["name"].to_list()) == sorted(paths[r].name for r in range(4))
    monkeypatch.setattr(dmdb.ingestion, "write_batch", real)
    report = ingest(exp.db, tmp_path)
    assert (report.files_already_ingested, report.files_ingested, report.runs_added, report.bad) == (4, 6, 6, [])
    np.testing.assert_array_equal(exp.masks(), masks)
    np.testing.assert_array_equal(exp.margins(), margins)


def test_shards_with_different_columns_ingest_together(exp: dmdb.Experiment, tmp_path: Path) -> None:
    """Shards with and without worker, seed and duration (grouped only with their like) keep their own."""
    masks, margins = random_runs(6, 37, 5)
    for r in range(6):
        extra = {"worker": f"w{r}", "seeds": [r * 10], "durations": [r / 4]} if r % 2 else {}
        write_shard(tmp_path, "small", [r], masks[r : r + 1], margins[r : r + 1], **extra)
    report = ingest(exp.db, tmp_path)
    assert (report.files_ingested, report.runs_added, report.bad) == (6, 6, [])
    runs = exp.runs()
    assert runs["worker"].to_list() == [None, "w1", None, "w3", None, "w5"]
    assert runs["seed"].to_list() == [None, 10, None, 30, None, 50]
    assert runs["duration_s"].to_list() == [None, 0.25, None, 0.75, None, 1.25]
    np.testing.assert_array_equal(exp.margins(), margins)
