"""Shard files: how workers hand runs to the one process that writes the database.

A worker never opens the .duckdb file (DuckDB allows one writing process, and no readers beside
it). It writes one self-contained Parquet file per run or batch, under a temporary dot-name that
ingest ignores, then renames it into place, so a shard is either whole or invisible.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BadInputError, CorruptShardError, DmdbError, UnknownExperimentError
from .files import replaced, temporary
from .packing import margins_from_arrow, unpack_masks
from .plan import PlannedRun
from .record import RunBatch, batch_table, make_batch, write_batch
from .validate import as_array

if TYPE_CHECKING:
    from .experiment import Experiment
    from .store import Database

SHARD_VERSION = "1"
_META = b"dmdb"


def file_stem(experiment: str) -> str:
    """The experiment's name made safe as a file name inside the shard directory ('cifar/v2' ->
    'cifar_v2', '../up' -> '_up'); the shard's metadata keeps the real name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", experiment).lstrip(".")[:80] or "experiment"


def write_shard(
    directory: str | Path,
    experiment: str,
    run_ids: Any,
    masks: Any,
    margins: Any,
    role: str | Sequence[str] = "fit",
    seeds: Any = None,
    worker: str | None = None,
    durations: Any = None,
    infos: Sequence[dict[str, Any] | None] | None = None,
) -> Path:
    """Validate runs and write them as one shard file; returns its final path."""
    m = as_array(masks, "masks")
    y = as_array(margins, "margins")
    if m.ndim != 2 or y.ndim != 2:
        raise BadInputError(f"masks and margins must be 2-D (runs x ...), got {m.shape} and {y.shape}")
    shape = _Shape(experiment, m.shape[1], y.shape[1])
    batch = make_batch(shape, run_ids, m, y, role, seeds, worker, durations, infos)  # type: ignore[arg-type]
    table = batch_table(batch).replace_schema_metadata(
        {_META: json.dumps({"version": SHARD_VERSION, "experiment": experiment, "n_train": shape.n_train,
                            "n_targets": shape.n_targets, "n_runs": len(batch)})}
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    first = int(batch.run_ids.min()) if len(batch) else 0
    final = directory / f"{file_stem(experiment)}-{first}-{uuid.uuid4().hex[:12]}.parquet"
    with replaced(final) as tmp, open(tmp, "wb") as f:
        pq.write_table(table, f, write_page_checksum=True)  # a flipped bit on disk is caught at ingest
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)
    return final


def write_run(
    directory: str | Path,
    experiment: str,
    run: PlannedRun,
    margins: Any,
    worker: str | None = None,
    duration_s: float | None = None,
) -> Path:
    """The worker's one call: one planned run and its margins as a shard."""
    if not isinstance(run, PlannedRun):
        raise BadInputError(f"run must be a PlannedRun (from a plan: plan.run(run_id) or exp.pending(...)), got {run!r}")
    run.require_experiment(experiment)
    y = as_array(margins, "margins")
    if y.ndim != 1:
        raise BadInputError(f"margins of one run must be 1-D (one per target), got shape {y.shape}")
    return write_shard(
        directory, experiment, [run.run_id], run.mask[None, :], y[None, :],
        role=run.role, seeds=[run.seed], worker=worker, durations=None if duration_s is None else [duration_s],
    )


@dataclass(frozen=True)
class _Shape:
    """The experiment's shape as seen by a worker that cannot open the database."""

    name: str
    n_train: int
    n_targets: int


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
UNFINISHED_GLOB = temporary(Path("*.parquet")).name
"""What a shard's temporary name matches ('.*.parquet.tmp')."""


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


def read_shard(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """Read and check one shard file; CorruptShardError names what is wrong."""
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        names = table.column_names  # a damaged footer can hold names that are not UTF-8
    except (OSError, ValueError, pa.ArrowException) as e:
        why = " ".join(str(e).split())  # Arrow's text can span lines ("...Invalid data\nDeserializing page header failed.\n\n")
        raise CorruptShardError(f"unreadable shard (corrupt or partial Parquet file): {why}") from e
    raw = (table.schema.metadata or {}).get(_META)
    if raw is None:
        raise CorruptShardError("not a dmdb shard (no dmdb metadata in the Parquet file)")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptShardError(f"the shard's dmdb metadata is not JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("version") != SHARD_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise CorruptShardError(f"shard format version {version!r}, expected {SHARD_VERSION}")
    kinds = {"experiment": str, "n_train": int, "n_targets": int, "n_runs": int}
    wrong = [k for k, kind in kinds.items() if not isinstance(meta.get(k), kind) or isinstance(meta.get(k), bool)]
    if wrong:
        raise CorruptShardError(f"the shard's dmdb metadata lacks or garbles {', '.join(wrong)}")
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise CorruptShardError(f"shard lacks the column(s) {', '.join(missing)}")
    if table.num_rows != meta["n_runs"]:
        raise CorruptShardError(f"shard says {meta['n_runs']} runs but holds {table.num_rows}")
    return table, meta


_COLUMNS = ("run_id", "role", "mask", "margins", "seed", "worker", "duration_s", "info")


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
