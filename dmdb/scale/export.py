"""Parquet out: an experiment's runs and a fit's weights as files other engines (Spark, polars) read.

Runs are exported in the shard format, so an export is also a shard: `dmdb ingest` loads it into
another database and the `read_shards` SQL macro queries it. Masks stay packed: column `mask`
holds ceil(n_train / 8) bytes per run in np.packbits order (train example i is bit 7 - i % 8 of
byte i // 8), `n_kept` the subset size, `margins` a list of n_targets floats. Both exports stream
in record batches, so memory stays bounded whatever the experiment's size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import BadInputError
from ..files import replaced
from ..shards import _META, SHARD_VERSION
from ..validate import as_role

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..fit import Fit

BATCH_ROWS = 2048


def export_runs(exp: "Experiment", path: str | Path, role: str | None = None) -> int:
    """Write the experiment's runs (one role, or all) to a Parquet file; returns the number of runs."""
    where, params = "experiment = ?", [exp.name]
    if role is not None:
        where += " AND role = ?"
        params.append(as_role(role))
    con = exp.db.con
    n = con.execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchall()[0][0]
    meta = {"version": SHARD_VERSION, "experiment": exp.name, "n_train": exp.n_train,
            "n_targets": exp.n_targets, "n_runs": n}
    schema = pa.schema(
        [("run_id", pa.int64()), ("role", pa.string()), ("mask", pa.binary((exp.n_train + 7) // 8)),
         ("n_kept", pa.int32()), ("margins", pa.list_(pa.float32())), ("seed", pa.int64()),
         ("worker", pa.string()), ("duration_s", pa.float64()), ("info", pa.string())],
        metadata={_META: json.dumps(meta)},
    )
    rel = con.sql(
        "SELECT run_id, role, mask::BLOB AS mask, n_kept, margins, seed, worker, duration_s, info::VARCHAR AS info "
        f"FROM runs WHERE {where} ORDER BY run_id",
        params=params,
    )
    with rel.to_arrow_reader(batch_size=BATCH_ROWS) as reader:
        _write(path, schema, (pa.Table.from_batches([b]).cast(schema) for b in reader))
    return int(n)


def export_weights(fit: "Fit", weights_path: str | Path | None, targets_path: str | Path | None = None) -> int:
    """Write a fit's nonzero weights (target, train_idx, weight) and/or its per-target table
    (target, bias, lam, ...: the bias is needed to predict margins); returns the weight rows."""
    if weights_path is None and targets_path is None:
        raise BadInputError("give a weights file, a fit-targets file or both")
    con = fit.db.con
    meta = {_META: json.dumps({"fit_id": fit.fit_id, "experiment": fit.experiment, "estimator": fit.estimator,
                               "n_train": fit.n_train})}
    n = 0
    if weights_path is not None:
        n = con.execute("SELECT count(*) FROM weights WHERE fit_id = ?", [fit.fit_id]).fetchall()[0][0]
        rel = con.sql("SELECT target, train_idx, weight FROM weights WHERE fit_id = ? ORDER BY target, train_idx",
                      params=[fit.fit_id])
        with rel.to_arrow_reader(batch_size=1 << 16) as reader:
            schema = reader.schema.with_metadata(meta)
            _write(weights_path, schema, (pa.Table.from_batches([b]).cast(schema) for b in reader))
    if targets_path is not None:
        table = con.sql("SELECT * EXCLUDE (fit_id) FROM fit_targets WHERE fit_id = ? ORDER BY target",
                        params=[fit.fit_id]).to_arrow_table()
        _write(targets_path, table.schema.with_metadata(meta), [table.replace_schema_metadata(meta)])
    return int(n)


def _write(path: str | Path, schema: pa.Schema, tables: Any) -> None:
    """Write under a temporary name, then rename: a reader never sees half a file."""
    with replaced(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for t in tables:
            writer.write_table(t)
