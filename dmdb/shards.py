"""Shard files: how workers hand runs to the one process that writes the database.

A worker never opens the .duckdb file (DuckDB allows one writing process, and no readers beside
it). It writes one self-contained Parquet file per run or batch, under a temporary dot-name that
ingest ignores, then renames it into place, so a shard is either whole or invisible. This module
writes and reads the files; dmdb.ingestion loads them into the database. It needs numpy and
pyarrow only, so a worker importing it loads neither duckdb nor polars.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .batch import batch_table, make_batch
from .errors import BadInputError, CorruptShardError
from .files import replaced, temporary
from .plan import PlannedRun
from .validate import as_array, as_run_margins

SHARD_VERSION = "1"
_META = b"dmdb"
UNFINISHED_GLOB = temporary(Path("*.parquet")).name
"""What a shard's temporary name matches ('.*.parquet.tmp')."""


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
    batch = make_batch(shape, run_ids, m, y, role, seeds, worker, durations, infos)
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
    y = as_run_margins(margins, run.n_targets)  # here, not at ingest after every run has trained
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


def read_shard(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """Read and check one shard file; CorruptShardError names what is wrong."""
    try:
        # ParquetFile without threads: ~0.5 ms for a one-run shard, where read_table (datasets, a thread
        # pool) took ~1.9 ms; a large shard costs far more to insert than to decode on one thread
        with pq.ParquetFile(path, page_checksum_verification=True) as f:
            table = f.read(use_threads=False)
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
