"""Verbs about the database and its runs: init, create, info, sql, ingest, import-npy."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

import duckdb
import polars as pl
from rich.text import Text

from .. import store
from ..errors import BadInputError, DmdbError
from ..ingestion import ABANDONED_AFTER_S, ingest
from ..npy_import import import_npy
from ..shards import UNFINISHED_GLOB
from ..transaction import transaction
from .argtypes import add_subset_options, at_least
from .opening import open_or_create
from .output import STDOUT, emit
from .progress import STDERR, progress_bar


# What `dmdb sql --help` names: every table, view and public macro of sql/ (tests/test_cli.py checks it
# against a new database's catalog), so a first query need not start from README.
SQL_DESCRIPTION = """\
Plain DuckDB SQL: the same text works in the DuckDB shell and in
duckdb.connect(FILE, read_only=True), without dmdb.

tables  runs (experiment, run_id, role, mask BIT, n_kept, margins FLOAT[], seed, worker, duration_s,
          info): get_bit(mask, i) is train example i; lists count from 1: target t is margins[t + 1]
        weights (fit_id, target, train_idx, weight: the nonzeros, in raw 0/1 mask units), fits,
        fit_targets, fit_runs, fit_curve, experiments, train_examples and targets (idx, label,
        source_id, text, image, image_shape, image_dtype), plans, planned_counterfactuals,
        ingested_shards, dmdb_meta; after `dmdb embed`: embedding_runs, embedding_components,
        embeddings, embedding_loadings, clusters, cluster_train
views   margins_long (experiment, run_id, role, target from 0, margin; it unnests every run, so for
          one target margins[t + 1] on runs is ~10x faster), fit_overview, missing_runs,
        planned_runs, fit_pool, holdout_pool, target_pool, cluster_sizes
macros  arguments by name; fit := NULL, the default, is the latest fit of any experiment,
        fit := latest_fit('study') the latest of one:
        top_weights(target := 17, k := 10), counterfactual(target := 17, k := 40, mode := 'top'),
        counterfactual_all(remove := [3, 17]), brittleness(), brittleness_summary(),
        nearest_targets(target := 17, k := 10), leakage_candidates(min_z := 6.0),
        component_ends(component := 0), cluster_ends(cluster := 0), read_shards('shards/*.parquet'),
        verification() and verification_summary(): predicted vs actual change of recorded retraining
          runs (runs_of := 2: the fit's predictions of the runs fit 2 planned);
        scalar: mask_indices(mask), dmdb_image_values(image, image_dtype)

example: dmdb sql "SELECT train_idx, weight, label FROM top_weights(target := 17, k := 10)" -f csv"""


def register(sub: Any, parents: tuple[argparse.ArgumentParser, argparse.ArgumentParser]) -> None:
    common, fmt = parents
    p = sub.add_parser("init", parents=[common], help="create a database (or check an existing one)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("create", parents=[common],
                       help="create an experiment (and the database, if new): its train examples, targets and sampling")
    p.add_argument("experiment")
    p.add_argument("--n-train", type=at_least(1), required=True, help="train examples N (mask length)")
    p.add_argument("--n-targets", type=at_least(1), required=True, help="targets T (margins per run)")
    add_subset_options(p)
    p.add_argument("--exist-ok", action="store_true", help="succeed if it exists with the same shape")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("info", parents=[common, fmt], help="experiments, run counts by role, fits, file size")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("sql", parents=[common, fmt], help="run SQL against the database (read-only unless --write)",
                       description=SQL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", help="the SQL text")
    p.add_argument("--write", action="store_true", help="open read-write, to allow statements that modify data")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser(
        "ingest", parents=[common], help="ingest shard files written by workers (idempotent)",
        description="Each shard goes in whole or not at all (many shards a transaction, up to 500 runs); shards "
                    "ingested before are skipped by name. A corrupt, partial or inconsistent shard is reported, "
                    "left on disk and skipped, and the exit status is then 1 (the good shards are in).")
    p.add_argument("directory", help="folder of .parquet shards (searched recursively)")
    p.add_argument("--move-bad", metavar="FOLDER",
                   help="move every shard that cannot be ingested there (keeping its relative path), so the next "
                        "ingest does not report it again; that includes a shard of an experiment this database "
                        "lacks. By default they stay in place. Inside DIRECTORY it is skipped when given again")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("import-npy", parents=[common], help="import a reference store (masks.npy, margins.npy, _completed.npy)")
    p.add_argument("directory", help="folder holding masks.npy, margins.npy and _completed.npy")
    p.add_argument("--name", required=True, help="experiment to create or extend")
    p.add_argument("--role", default="fit", choices=["fit", "holdout"], help="role of the imported runs (default: fit)")
    p.add_argument("--alpha", type=float, help="subset fraction (default: estimated from the masks)")
    p.add_argument("--chunk-rows", type=at_least(1), help="rows read per chunk (default: about 256 MB of masks)")
    p.add_argument("--first-run-id", type=at_least(0), default=0,
                   help="run id of the store's row 0 (default 0): import a second store, e.g. the holdout runs, "
                        "into the same experiment after the first's ids")
    p.set_defaults(func=cmd_import_npy)


def cmd_init(args: argparse.Namespace) -> int:
    with store.open(args.db) as db:
        n = db.sql("SELECT count(*) AS n FROM experiments")["n"][0]
        STDOUT.print(Text.assemble(("ok", "green"), f" {db.path} (schema version {store.SCHEMA_VERSION}, {n} experiments)"))
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    with open_or_create(args.db) as db:
        exp = db.create_experiment(args.experiment, args.n_train, args.n_targets, alpha=args.alpha,
                                   sampling=args.sampling, exist_ok=args.exist_ok)
    STDOUT.print(Text.assemble(("ok", "green"), f" experiment {exp.name!r} in {args.db}: {exp.n_train} train examples, "
                               f"{exp.n_targets} targets, alpha {exp.alpha}, {exp.sampling} sampling"))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with store.open(args.db, read_only=True) as db:
        exps = db.experiments()
        fits = db.sql(
            "SELECT experiment, count(*) AS fits, max(fit_id) AS latest_fit FROM fits GROUP BY ALL ORDER BY experiment"
        )
        plans = db.sql("SELECT experiment, count(*) AS missing_runs FROM missing_runs GROUP BY ALL")
    info = exps.join(fits, left_on="name", right_on="experiment", how="left").join(
        plans, left_on="name", right_on="experiment", how="left"
    )
    info = info.with_columns(pl.col("fits").fill_null(0), pl.col("missing_runs").fill_null(0))
    if args.format == "table":
        size = os.path.getsize(args.db)
        STDOUT.print(Text.assemble((str(args.db), "bold"), f": {size / 2**20:.1f} MiB, schema version {store.SCHEMA_VERSION}"))
    emit(info, args.format, args.output, title="experiments")
    return 0


# statements that run inside one transaction; a script with any other kind (BEGIN/COMMIT of its
# own, CHECKPOINT, VACUUM, ATTACH, EXPORT, PRAGMA, SET, ...) runs as written, statement by statement
_WRAPPABLE = {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "EXPLAIN", "ANALYZE"}


def _statements(db: store.Database, query: str) -> list:
    try:
        return db.con.extract_statements(query)
    except duckdb.Error as e:
        raise DmdbError(f"SQL error: {e}") from e


def _shows_rows(statement: Any) -> bool:
    """A statement whose only result is rows (SELECT, PRAGMA, EXPLAIN, ...), as the DuckDB shell prints."""
    return statement.expected_result_type == [duckdb.ExpectedResultType.QUERY_RESULT]


def cmd_sql(args: argparse.Namespace) -> int:
    """Run the statements in order; print what each query returns (and the last statement's result
    whatever it is; nothing for one without a result, such as SET), as the DuckDB shell does. Other
    formats than a table on stdout take one result."""
    with store.open(args.db, read_only=not args.write, create=False) as db:
        stmts = _statements(db, args.query)
        if not stmts:
            raise BadInputError("no SQL statement given")
        shown = [i for i, st in enumerate(stmts) if _shows_rows(st) or i == len(stmts) - 1]
        if len(shown) > 1 and (args.format != "table" or args.output):
            raise BadInputError(
                f"{len(shown)} statements return rows, and --format {args.format}"
                f"{' with --output' if args.output else ''} writes one result: run them one at a time, "
                "or print them as tables"
            )
        kinds = {st.type.name for st in stmts}
        with transaction(db.con) if args.write and kinds <= _WRAPPABLE else contextlib.nullcontext():
            frames = [(i, db.sql(st.query)) for i, st in enumerate(stmts)]
    for i, frame in frames:
        if i not in shown:
            continue
        if frame.width:
            emit(frame, args.format, args.output)
        elif args.format == "parquet" or args.output:  # (a table or text on stdout: nothing, as in the DuckDB shell)
            where = f"to {args.output}" if args.output else "as parquet"
            raise BadInputError(f"{stmts[i].type.name} gives no result, so nothing was written {where} (the statement ran)")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    with store.open(args.db, create=False) as db, progress_bar("ingesting shards", args.quiet) as bar:
        report = ingest(db, args.directory, progress=bar, move_bad=args.move_bad)
    STDOUT.print(
        f"ingested {report.files_ingested} shard files: {report.runs_added} new runs, "
        f"{report.runs_already_present} already present; {report.files_already_ingested} files skipped "
        f"(ingested before); {len(report.bad)} bad"
    )
    for name, why in report.bad:
        STDERR.print(Text.assemble(("bad shard", "red"), f" {name}: {why}"))
    if report.abandoned:
        hours, minutes = ABANDONED_AFTER_S / 3600, ABANDONED_AFTER_S / 60
        STDERR.print(
            f"{len(report.abandoned)} unfinished shard files (temporary names untouched for over {hours:g} h: their "
            f"writers were stopped, and their runs are retrained on resume) are never ingested, e.g. "
            f"{report.abandoned[0]}; delete them with: find {args.directory} -name '{UNFINISHED_GLOB}' -mmin +{minutes:g} -delete"
        )
    return 1 if report.bad else 0


def cmd_import_npy(args: argparse.Namespace) -> int:
    with open_or_create(args.db) as db, progress_bar("importing runs", args.quiet) as bar:
        exp, added = import_npy(db, args.directory, args.name, args.role, args.alpha, args.chunk_rows, progress=bar,
                                first_run_id=args.first_run_id)
        total = exp.n_runs()
    STDOUT.print(f"imported {added} new runs into {exp.name!r} ({total} runs in all)")
    return 0
