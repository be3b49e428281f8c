"""Parquet out: an experiment's runs and a fit's weights as files other engines (Spark, polars) read.

Runs are exported in the shard format, so an export is also a shard: `dmdb ingest` loads it into
another database and the `read_shards` SQL macro queries it. Masks stay packed: column `mask`
holds ceil(n_train / 8) bytes per run in np.packbits order (train example i is bit 7 - i % 8 of
byte i // 8), `n_kept` the subset size, `margins` a list of n_targets floats. Both exports stream
in record batches, so memory stays bounded whatever the experiment's size. The files of one export
are written under temporary names and renamed once all are written: a failed export leaves none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import BadInputError
from ..files import replaced_together
from ..interrupt import arrow_reader, arrow_table, fetchall, interruptible_batches
from ..shards import _META, SHARD_VERSION
from ..validate import as_role

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..fit import Fit

BATCH_ROWS = 2048


@dataclass(frozen=True)
class Exported:
    runs: int  # runs written, 0 without a runs file
    weights: int  # nonzero weights written, 0 without a weights file


def export(exp: "Experiment", runs_path: str | Path | None = None, *, role: str | None = None,
           fit: "Fit | None" = None, weights_path: str | Path | None = None,
           targets_path: str | Path | None = None) -> Exported:
    """Write the experiment's runs (one role, or all) and/or a fit's nonzero weights (target, train_idx,
    weight) and per-target table (target, bias, lam, ...: the bias is needed to predict margins).
    The files are written together: none appears unless every one was written."""
    if fit is None and (weights_path is not None or targets_path is not None):
        raise BadInputError("a weights or fit-targets file needs the fit to write to it")
    if fit is not None and weights_path is None and targets_path is None:
        raise BadInputError("give a weights file, a fit-targets file or both")
    if fit is not None and fit.experiment != exp.name:
        raise BadInputError(f"fit {fit.fit_id} belongs to experiment {fit.experiment!r}, not {exp.name!r}")
    wanted = {what: p for what, p in (("runs", runs_path), ("weights", weights_path), ("targets", targets_path))
              if p is not None}
    if not wanted:
        raise BadInputError("nothing to export: give a runs file and/or a fit with its files")
    with replaced_together(list(wanted.values())) as tmps:
        tmp = dict(zip(wanted, tmps))
        n_runs = _write_runs(exp, tmp["runs"], role) if "runs" in tmp else 0
        n_weights = 0
        if fit is not None:
            n_weights = _write_fit(fit, tmp.get("weights"), tmp.get("targets"))
    return Exported(n_runs, n_weights)


def _write_runs(exp: "Experiment", path: Path, role: str | None) -> int:
    where, params = "experiment = ?", [exp.name]
    if role is not None:
        where += " AND role = ?"
        params.append(as_role(role))
    con = exp.db.con
    n = fetchall(con, f"SELECT count(*) FROM runs WHERE {where}", params)[0][0]
    meta = {"version": SHARD_VERSION, "experiment": exp.name, "n_train": exp.n_train,
            "n_targets": exp.n_targets, "n_runs": n}
    schema = pa.schema(
        [("run_id", pa.int64()), ("role", pa.string()), ("mask", pa.binary((exp.n_train + 7) // 8)),
         ("n_kept", pa.int32()), ("margins", pa.list_(pa.float32())), ("seed", pa.int64()),
         ("worker", pa.string()), ("duration_s", pa.float64()), ("info", pa.string())],
        metadata={_META: json.dumps(meta)},
    )
    sql = ("SELECT run_id, role, mask::BLOB AS mask, n_kept, margins, seed, worker, duration_s, info::VARCHAR AS info "
           f"FROM runs WHERE {where} ORDER BY run_id")
    with arrow_reader(con, sql, params, BATCH_ROWS) as reader:
        _write(path, schema, (pa.Table.from_batches([b]).cast(schema) for b in interruptible_batches(con, reader)))
    return int(n)


def _write_fit(fit: "Fit", weights_path: Path | None, targets_path: Path | None) -> int:
    con = fit.db.con
    meta = {_META: json.dumps({"fit_id": fit.fit_id, "experiment": fit.experiment, "estimator": fit.estimator,
                               "n_train": fit.n_train})}
    n = 0
    if weights_path is not None:
        n = fetchall(con, "SELECT count(*) FROM weights WHERE fit_id = ?", [fit.fit_id])[0][0]
        sql = "SELECT target, train_idx, weight FROM weights WHERE fit_id = ? ORDER BY target, train_idx"
        with arrow_reader(con, sql, [fit.fit_id], 1 << 16) as reader:
            schema = reader.schema.with_metadata(meta)
            _write(weights_path, schema,
                   (pa.Table.from_batches([b]).cast(schema) for b in interruptible_batches(con, reader)))
    if targets_path is not None:
        table = arrow_table(con, "SELECT * EXCLUDE (fit_id) FROM fit_targets WHERE fit_id = ? ORDER BY target",
                            [fit.fit_id])
        _write(targets_path, table.schema.with_metadata(meta), [table.replace_schema_metadata(meta)])
    return int(n)


def _write(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    with pq.ParquetWriter(path, schema) as writer:
        for t in tables:
            writer.write_table(t)
