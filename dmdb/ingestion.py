"""Ingesting shard files: the one process that writes the database loads what workers wrote
(see dmdb.shards), each shard in its own transaction, checked like recorded runs."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import duckdb
import pyarrow as pa

from .batch import RunBatch, make_batch
from .errors import BadInputError, CorruptShardError, DmdbError, UnknownExperimentError
from .packing import margins_from_arrow, unpack_masks
from .record import write_batch
from .shards import UNFINISHED_GLOB, read_shard

if TYPE_CHECKING:
    from .experiment import Experiment
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


def ingest(
    db: "Database", directory: str | Path, progress: Callable[[int, int], None] | None = None,
    move_bad: str | Path | None = None,
) -> IngestReport:
    """Ingest every finished shard under `directory`, each in its own transaction.

    Idempotent: shards ingested before are skipped by name, and runs already present with the same
    data are no-ops. A corrupt, partial or inconsistent shard is reported in `bad` and skipped; it
    never leaves part of itself in the database. It stays where it is (and is reported again by the
    next ingest) unless `move_bad` names a folder to move it to, under its name relative to
    `directory` (e.g. a second shard of a run that a duplicated array task trained again, with other
    margins). A `move_bad` folder inside `directory` is not searched for shards.
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
    done = {r[0] for r in db.con.execute("SELECT name FROM ingested_shards").fetchall()}
    report = IngestReport()
    experiments: dict[str, "Experiment"] = {}
    if progress is not None:
        progress(0, len(files))
    for i, path in enumerate(files):
        name = str(path.relative_to(directory))
        if name in done:
            report.files_already_ingested += 1
        else:
            try:
                added, n = _ingest_one(db, path, name, experiments)
                report.files_ingested += 1
                report.runs_added += added
                report.runs_already_present += n - added
            except DmdbError as e:
                why = str(e)
                if quarantine is not None:
                    dest = quarantine / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(path, dest)
                    why += f" (moved to {dest})"
                report.bad.append((name, why))
        if progress is not None:
            progress(i + 1, len(files))
    now = time.time()
    report.abandoned = sorted(str(p.relative_to(directory)) for p in directory.rglob(UNFINISHED_GLOB)
                              if now - p.stat().st_mtime > ABANDONED_AFTER_S)
    return report


def _ingest_one(db: "Database", path: Path, name: str, experiments: dict[str, "Experiment"]) -> tuple[int, int]:
    table, meta = read_shard(path)
    exp_name = meta["experiment"]
    if exp_name not in experiments:
        try:
            experiments[exp_name] = db.experiment(exp_name)
        except UnknownExperimentError as e:
            raise CorruptShardError(f"shard is for {e}") from e
    exp = experiments[exp_name]
    if (meta["n_train"], meta["n_targets"]) != (exp.n_train, exp.n_targets):
        raise CorruptShardError(
            f"shard has {meta['n_train']} train examples x {meta['n_targets']} targets, experiment "
            f"{exp.name!r} has {exp.n_train} x {exp.n_targets}"
        )
    batch = _batch_from_table(exp, table)

    def mark(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "INSERT INTO ingested_shards (name, experiment, n_runs, bytes) VALUES (?, ?, ?, ?)",
            [name, exp.name, len(batch), path.stat().st_size],
        )

    return write_batch(exp, batch, also=mark), len(batch)


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
