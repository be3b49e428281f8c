"""Ingesting shard files: the one process that writes the database loads what workers wrote
(see dmdb.shards), whole shards grouped into few transactions, checked like recorded runs."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import duckdb
import pyarrow as pa

from .batch import RunBatch, concat, make_batch
from .errors import BadInputError, CorruptShardError, DmdbError, DuplicateRunError, UnknownExperimentError
from .interrupt import execute, fetchall
from .packing import margins_from_arrow, unpack_masks
from .record import write_batch
from .shards import UNFINISHED_GLOB, read_shard

if TYPE_CHECKING:
    from .experiment import Experiment
    from .plan import Plan
    from .store import Database


@dataclass
class IngestReport:
    """What one `ingest` call did: shard files read, runs added, files skipped and why."""

    files_ingested: int = 0
    runs_added: int = 0
    runs_already_present: int = 0
    files_already_ingested: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    """Temporary files of shard writers that stopped mid-write (untouched for ABANDONED_AFTER_S): never
    ingested, left in place (a live writer's file has the same name pattern), listed so they can go."""


ABANDONED_AFTER_S = 3600.0
GROUP_RUNS = 500
"""Shards go into the database in groups, one transaction each, of at most this many runs (a shard
with more is a group of its own)..."""
GROUP_BYTES = 64 * 2**20
"""... and at most this many bytes of masks and margins in memory (bool masks, float32 margins)."""


def ingest(
    db: "Database", directory: str | Path, progress: Callable[[int, int], None] | None = None,
    move_bad: str | Path | None = None,
) -> IngestReport:
    """Ingest every finished shard under `directory`, whole shards in transactions of several.

    Idempotent: shards ingested before are skipped by name, and runs already present with the same
    data are no-ops. A corrupt, partial or inconsistent shard is reported in `bad` and skipped; it
    never leaves part of itself in the database, nor keeps the good shards of its group out. It stays
    where it is (and is reported again by the next ingest) unless `move_bad` names a folder to move it
    to, under its name relative to `directory` (e.g. a second shard of a run that a duplicated array
    task trained again, with other margins). A `move_bad` folder inside `directory` is not searched
    for shards. `progress(done, total)` counts the shard files handled: skipped, reported bad or committed.
    """
    db.require_writable()
    directory = Path(directory)
    if not directory.is_dir():
        if directory.exists():  # 'does not exist' misled for a file given by mistake (a shard, the plan file)
            raise DmdbError(f"{directory} is a file, not a shard directory: give the folder the workers wrote shards to")
        raise DmdbError(f"shard directory {directory} does not exist")
    quarantine = None if move_bad is None else Path(move_bad).resolve()
    files = sorted(p for p in directory.rglob("*.parquet")
                   if not p.name.startswith(".") and (quarantine is None or quarantine not in p.resolve().parents))
    done = {r[0] for r in fetchall(db.con, "SELECT name FROM ingested_shards")}
    report = IngestReport()

    def bad(shard_name: str, path: Path, e: DmdbError) -> None:
        why = str(e)
        if quarantine is not None:
            dest = quarantine / shard_name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, dest)
            why = f"{_sentence(why)} The shard was moved to {dest}."  # not '... is kept. (moved to ...)'
        report.bad.append((shard_name, why))

    targets: dict[str, _Target] = {}
    group = _Group()
    if progress is not None:
        progress(0, len(files))
    for i, path in enumerate(files):
        name = str(path.relative_to(directory))
        if name in done:
            report.files_already_ingested += 1
        else:
            try:
                shard = _read(db, path, name, targets)
            except DmdbError as e:
                bad(name, path, e)
            else:
                if not group.takes(shard):
                    _write(group.shards, report, bad)
                    group = _Group()
                group.add(shard)
        if progress is not None:
            progress(i + 1 - len(group.shards), len(files))
    _write(group.shards, report, bad)
    if progress is not None and group.shards:
        progress(len(files), len(files))
    now = time.time()
    report.abandoned = sorted(str(p.relative_to(directory)) for p in directory.rglob(UNFINISHED_GLOB)
                              if now - p.stat().st_mtime > ABANDONED_AFTER_S)
    return report


@dataclass(frozen=True)
class _Target:
    """An experiment shards are for, and its seeded plans: read once per ingest (this process is the
    one writer, so neither changes meanwhile)."""

    exp: "Experiment"
    plans: list["Plan"]


@dataclass(frozen=True)
class _Shard:
    path: Path
    name: str
    target: _Target
    batch: RunBatch


@dataclass
class _Group:
    """Shards to write in one transaction: one experiment, one batch layout, no run id twice (a run's
    second shard waits for the next group, so that it is checked against the first, as it would be
    one shard at a time), within GROUP_RUNS and GROUP_BYTES."""

    shards: list[_Shard] = field(default_factory=list)
    run_ids: set[int] = field(default_factory=set)
    runs: int = 0
    nbytes: int = 0

    def takes(self, s: _Shard) -> bool:
        if not self.shards:
            return True
        first = self.shards[0]
        return (s.target is first.target and s.batch.layout == first.batch.layout
                and self.runs + len(s.batch) <= GROUP_RUNS and self.nbytes + s.batch.nbytes <= GROUP_BYTES
                and self.run_ids.isdisjoint(s.batch.run_ids.tolist()))

    def add(self, s: _Shard) -> None:
        self.shards.append(s)
        self.run_ids.update(s.batch.run_ids.tolist())
        self.runs += len(s.batch)
        self.nbytes += s.batch.nbytes


def _write(shards: list[_Shard], report: IngestReport, bad: Callable[[str, Path, DmdbError], None]) -> None:
    """Write the shards (of one group) in one transaction with their ingested_shards rows. When that is
    refused (a run recorded before with other data, a run not as planned), each half is tried on its
    own, down to the one shard that is reported bad: whether a shard goes in does not depend on the
    others (their run ids differ), so the outcome is that of one transaction per shard."""
    if not shards:
        return
    target = shards[0].target
    batch = concat([s.batch for s in shards])

    def mark(con: duckdb.DuckDBPyConnection) -> None:
        execute(
            con,
            "INSERT INTO ingested_shards (name, experiment, n_runs, bytes) "
            "SELECT unnest(?::VARCHAR[]), ?, unnest(?::INTEGER[]), unnest(?::BIGINT[])",
            [[s.name for s in shards], target.exp.name, [len(s.batch) for s in shards],
             [s.path.stat().st_size for s in shards]],
        )

    try:
        added = write_batch(target.exp, batch, also=mark, plans=target.plans)
    except DmdbError as e:
        if len(shards) == 1:
            bad(shards[0].name, shards[0].path, _as_shard_error(e))
            return
        half = len(shards) // 2
        _write(shards[:half], report, bad)
        _write(shards[half:], report, bad)
        return
    report.files_ingested += len(shards)
    report.runs_added += added
    report.runs_already_present += len(batch) - added


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _as_shard_error(e: DmdbError) -> DmdbError:
    """A clash told as what happened to the shard: record_batch's advice (nothing of the batch was
    written, use another run id) is wrong for an ingest, which writes the other shards."""
    if isinstance(e, DuplicateRunError):
        return DuplicateRunError(e.situation, "This shard was skipped; the run as recorded before is kept.")
    return e


def _read(db: "Database", path: Path, name: str, targets: dict[str, _Target]) -> _Shard:
    """Read and validate one shard against its experiment's shape; CorruptShardError if it is not whole and valid."""
    table, meta = read_shard(path)
    exp_name = meta["experiment"]
    if exp_name not in targets:
        try:
            exp = db.experiment(exp_name)
        except UnknownExperimentError as e:
            raise CorruptShardError(f"shard is for {e}") from e
        targets[exp_name] = _Target(exp, exp.plans())
    exp = targets[exp_name].exp
    if (meta["n_train"], meta["n_targets"]) != (exp.n_train, exp.n_targets):
        raise CorruptShardError(
            f"shard has {meta['n_train']} train examples x {meta['n_targets']} targets, experiment "
            f"{exp.name!r} has {exp.n_train} x {exp.n_targets}"
        )
    return _Shard(path, name, targets[exp_name], _batch_from_table(exp, table))


def _batch_from_table(exp: "Experiment", t: pa.Table) -> RunBatch:
    """The shard's runs, validated like recorded ones; anything malformed is a CorruptShardError."""
    try:
        masks = unpack_masks(t["mask"], exp.n_train)
        margins = margins_from_arrow(t["margins"], exp.n_targets)
        infos = [None if i is None else json.loads(i) for i in t["info"].to_pylist()]
        columns = {
            "run_ids": t["run_id"].to_numpy(zero_copy_only=False),
            "role": t["role"].to_pylist(),
            "seeds": t["seed"].to_numpy(zero_copy_only=False) if t["seed"].null_count == 0 else None,
            "worker": t["worker"].to_pylist() if t["worker"].null_count == 0 else None,
            "durations": t["duration_s"].to_numpy(zero_copy_only=False) if t["duration_s"].null_count == 0 else None,
        }
    except (KeyError, ValueError, TypeError, AttributeError, pa.ArrowException) as e:
        raise CorruptShardError(f"shard columns are malformed: {e}") from e
    try:
        return make_batch(exp, masks=masks, margins=margins, infos=infos, **columns)
    except BadInputError as e:
        raise CorruptShardError(f"shard holds invalid runs: {e}") from e
