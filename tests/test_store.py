from __future__ import annotations

import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

import dmdb
from dmdb import analyses as A
from dmdb.plan import PlannedRun
from dmdb.sqlfiles import sql_files


def test_open_creates_schema_and_version(db_path: Path) -> None:
    with dmdb.open(db_path) as db:
        assert db.sql("SELECT value FROM dmdb_meta WHERE key = 'schema_version'")["value"][0] == str(dmdb.SCHEMA_VERSION)
        tables = set(db.sql("SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"experiments", "runs", "plans", "fits", "fit_targets", "weights", "margins_long", "missing_runs"} <= tables
    assert [f.name for f in sql_files()][:2] == ["00_schema.sql", "10_runs_views.sql"]


def test_reopen_keeps_data(db_path: Path) -> None:
    with dmdb.open(db_path) as db:
        db.create_experiment("a", 10, 2)
    with dmdb.open(db_path) as db:  # re-applying the schema must not wipe anything
        assert db.experiments()["name"].to_list() == ["a"]
    with dmdb.open(db_path, read_only=True) as db:
        assert db.experiment("a").n_train == 10


def _fitted_study(db_path: Path) -> list[PlannedRun]:
    """Experiment 'e' (6 examples, 2 targets), 12 fit runs (returned) and one diff-means fit (fit 1)."""
    with dmdb.open(db_path) as db:
        exp = db.create_experiment("e", n_train=6, n_targets=2)
        runs = list(exp.plan(12, seed=0))
        exp.record_batch([r.run_id for r in runs], np.stack([r.mask for r in runs]),
                         np.random.default_rng(0).normal(size=(12, 2)))
        exp.fit("diff-means")
    return runs


def test_a_database_from_before_fit_order_gains_the_column(db_path: Path) -> None:
    """fit_runs.fit_order came after schema version 1 shipped: an older file opened read-only (the
    TUI, dmdb sql) gives fit.runs() with fit_order NULL, and gets the column (NULL for its fits) on
    its next writable open, keeping its rows."""
    _fitted_study(db_path)
    con = duckdb.connect(str(db_path))
    con.execute("ALTER TABLE fit_runs DROP COLUMN fit_order")
    con.execute("DELETE FROM dmdb_meta WHERE key = 'sql_sha256'")  # as written by the older sql/
    con.close()
    with dmdb.open(db_path, read_only=True) as db:
        old = db.fit(1).runs()
        assert old.height == 12 and old["fit_order"].null_count() == 12
    with dmdb.open(db_path) as db:
        assert db.fit(1).runs().equals(old)
        assert db.sql("SELECT count(*) AS n FROM fit_runs WHERE fit_order IS NULL")["n"][0] == 12


def _as_an_older_release(db_path: Path, *statements: str) -> None:
    """Give a file written by this dmdb the shape an older release left (the statements undo what
    came since) and the older release's mark, so opens see it as not yet brought up to date."""
    con = duckdb.connect(str(db_path))
    for statement in statements:
        con.execute(statement)
    con.execute("UPDATE dmdb_meta SET value = 'older' WHERE key = 'sql_sha256'")
    con.close()


def test_a_file_from_an_older_release_reads_as_current_read_only(db_path: Path) -> None:
    """A read-only open (dmdb sql, info, fits, the TUI) used to see an older file's own views and
    macros: one added since was 'does not exist' (mask_indices; fit_overview for `dmdb fits` on a file
    from before fits), a changed one kept its old behaviour (margins_long.target BIGINT), a table added
    since was a catalog error. Now it sees this release's, as temporary objects: the file is unchanged,
    and a pool view the file has (perhaps a user's redefinition) is kept."""
    runs = _fitted_study(db_path)
    _as_an_older_release(
        db_path,
        "DROP MACRO mask_indices",
        "CREATE OR REPLACE VIEW margins_long AS SELECT experiment, run_id, role, "
        "unnest(range(len(margins))) AS target, unnest(margins) AS margin FROM runs",
        "DROP VIEW fit_overview",
        "DROP TABLE fit_curve",
        "CREATE OR REPLACE VIEW fit_pool AS SELECT experiment, run_id FROM runs WHERE role = 'fit' AND run_id < 5",
        "CREATE OR REPLACE VIEW planned_runs AS SELECT p.experiment, p.first_run_id + i AS run_id, p.role, "
        "p.seed AS plan_seed, i AS plan_index FROM plans p, range(p.n_runs) t(i)",
        "DROP TABLE planned_counterfactuals",
    )
    with dmdb.open(db_path, read_only=True) as db:
        exp = db.experiment("e")
        assert exp.missing() == [] and exp.next_run_id() == 12  # planned_counterfactuals: an empty TEMP table
        with pytest.raises(dmdb.ReadOnlyError):  # planning counterfactuals writes them down
            A.plan_counterfactuals(db, fit=1)
        first = db.sql("SELECT mask_indices(mask) AS kept FROM runs ORDER BY run_id LIMIT 1")["kept"].to_list()
        assert first == [np.flatnonzero(runs[0].mask).tolist()]
        assert db.sql("SELECT target FROM margins_long LIMIT 1").dtypes == [pl.Int32]
        assert db.fits()["estimator"].to_list() == ["diff-means"]
        assert db.fit(1).curve().height == 0
        assert db.sql("SELECT run_id FROM fit_pool ORDER BY run_id")["run_id"].to_list() == [0, 1, 2, 3, 4]
    con = duckdb.connect(str(db_path), read_only=True)  # untouched
    assert con.execute("SELECT value FROM dmdb_meta WHERE key = 'sql_sha256'").fetchall() == [("older",)]
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'fit_curve'").fetchall() == [(0,)]
    con.close()
    with dmdb.open(db_path) as db:  # a writable open adds the table: the baseline run is planned as run 12
        assert A.plan_counterfactuals(db, fit=1).run_ids.tolist() == [12]
        assert db.experiment("e").missing() == [12] and db.experiment("e").next_run_id() == 13


@pytest.mark.parametrize("extra, says", [
    ("CREATE OR REPLACE VIEW broken AS SELECT no_such_column FROM runs;",
     "was written by an older dmdb, and this one cannot read it read-only .*no_such_column.*; open it once for "
     "writing \\(`dmdb init --db .*study.duckdb`\\)"),
    ("CREATE INDEX run_roles ON runs (role);", "holds a statement a read-only open cannot stand in for"),
])
def test_an_older_file_this_release_cannot_read_read_only_says_what_to_do(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, says: str
) -> None:
    dmdb.open(db_path).close()
    _as_an_older_release(db_path)
    (tmp_path / "99_extra.sql").write_text(extra)
    monkeypatch.setattr("dmdb.schema.sql_files", lambda: [*sql_files(), tmp_path / "99_extra.sql"])
    with pytest.raises(dmdb.DmdbError, match=says):
        dmdb.open(db_path, read_only=True)


def test_a_redefined_pool_view_survives_a_new_release(db_path: Path) -> None:
    """README: redefine fit_pool (or holdout_pool, target_pool) to change what every fit uses. A new
    dmdb release re-applies sql/ on the next writable open; that put fit_pool back on every run."""
    with dmdb.open(db_path) as db:
        exp = db.create_experiment("e", n_train=6, n_targets=3)
        runs = list(exp.plan(12, seed=0))
        exp.record_batch([r.run_id for r in runs], np.stack([r.mask for r in runs]), np.zeros((12, 3)))
        db.sql("CREATE OR REPLACE VIEW fit_pool AS SELECT experiment, run_id FROM runs WHERE role = 'fit' AND run_id < 8")
        db.sql("CREATE OR REPLACE VIEW target_pool AS SELECT 'e' AS experiment, 1 AS target")
        db.sql("UPDATE dmdb_meta SET value = 'older' WHERE key = 'sql_sha256'")  # as written by another release
    with dmdb.open(db_path) as db:
        assert db.sql("SELECT value FROM dmdb_meta WHERE key = 'sql_sha256'")["value"][0] != "older"  # re-applied
        assert db.sql("SELECT run_id FROM fit_pool ORDER BY run_id")["run_id"].to_list() == list(range(8))
        assert db.sql("SELECT target FROM target_pool")["target"].to_list() == [1]


def test_a_pool_view_as_dmdb_made_it_takes_a_new_release_default(db_path: Path) -> None:
    """The pool views are created IF NOT EXISTS, so a redefinition survives a release; that also kept an
    older release's default in every older file when a release changed it. dmdb_meta now records each
    as dmdb created it: one still so takes the new default (read-only opens see it too), one its user
    redefined stays."""
    with dmdb.open(db_path) as db:
        exp = db.create_experiment("e", n_train=6, n_targets=3)
        runs = [*exp.plan(6, seed=0), *exp.plan(4, seed=1, role="holdout")]
        exp.record_batch([r.run_id for r in runs], np.stack([r.mask for r in runs]), np.zeros((10, 3)),
                         role=[r.role for r in runs])
        marks = db.sql("SELECT key FROM dmdb_meta WHERE key LIKE 'pool_view:%' ORDER BY key")["key"].to_list()
        assert marks == ["pool_view:fit_pool", "pool_view:holdout_pool", "pool_view:target_pool"]
        db.sql("CREATE OR REPLACE VIEW fit_pool AS SELECT experiment, run_id FROM runs "
               "WHERE role = 'fit' AND run_id < 2")
    older_default = "CREATE OR REPLACE VIEW holdout_pool AS SELECT experiment, run_id FROM runs WHERE run_id < 1"
    _as_an_older_release(  # an older release whose holdout_pool default was older_default
        db_path, older_default, "UPDATE dmdb_meta SET value = (SELECT sql FROM duckdb_views() WHERE view_name = "
        "'holdout_pool') WHERE key = 'pool_view:holdout_pool'")
    for read_only in (True, False):
        with dmdb.open(db_path, read_only=read_only) as db:
            assert db.sql("SELECT run_id FROM holdout_pool ORDER BY run_id")["run_id"].to_list() == [6, 7, 8, 9]
            assert db.sql("SELECT run_id FROM fit_pool ORDER BY run_id")["run_id"].to_list() == [0, 1]
    con = duckdb.connect(str(db_path), read_only=True)
    assert con.execute("SELECT count(*) FROM holdout_pool").fetchall() == [(4,)]  # in the file now
    con.close()


def test_a_file_from_before_the_pool_marks_gets_them_for_its_default_views_only(db_path: Path) -> None:
    dmdb.open(db_path).close()
    _as_an_older_release(
        db_path, "DELETE FROM dmdb_meta WHERE key LIKE 'pool_view:%'",
        "CREATE OR REPLACE VIEW target_pool AS SELECT 'e' AS experiment, 1 AS target")
    with dmdb.open(db_path) as db:
        marks = db.sql("SELECT key FROM dmdb_meta WHERE key LIKE 'pool_view:%' ORDER BY key")["key"].to_list()
        assert marks == ["pool_view:fit_pool", "pool_view:holdout_pool"]
        assert db.sql("SELECT target FROM target_pool")["target"].to_list() == [1]


def test_unknown_schema_version_refused(db_path: Path) -> None:
    dmdb.open(db_path).close()
    con = duckdb.connect(str(db_path))
    con.execute("UPDATE dmdb_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(dmdb.SchemaVersionError, match="version 99"):
        dmdb.open(db_path)
    with pytest.raises(dmdb.SchemaVersionError):
        dmdb.open(db_path, read_only=True)


@pytest.mark.parametrize("edit, says", [
    ("UPDATE dmdb_meta SET value = 'abc' WHERE key = 'schema_version'", "schema version abc"),
    ("UPDATE dmdb_meta SET value = '1.0' WHERE key = 'schema_version'", "schema version 1.0"),
    ("DELETE FROM dmdb_meta WHERE key = 'schema_version'", "no dmdb schema version"),
])
def test_schema_version_edited_by_hand_refused(db_path: Path, edit: str, says: str) -> None:
    """A version that is not a whole number (a ValueError from int() before) or no version at all
    (reported as 'version None') is a SchemaVersionError that says what the file holds."""
    dmdb.open(db_path).close()
    con = duckdb.connect(str(db_path))
    con.execute(edit)
    con.close()
    for read_only in (False, True):
        with pytest.raises(dmdb.SchemaVersionError, match=says):
            dmdb.open(db_path, read_only=read_only)


def test_empty_path_refused_not_opened_in_memory(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty path (`--db ''`, `DMDB_DB=`) is DuckDB's in-memory database: `dmdb create` and
    `import-npy` reported success and kept nothing."""
    from dmdb.cli import main

    for read_only in (False, True):
        with pytest.raises(dmdb.DmdbError, match="no database path given"):
            dmdb.open("", read_only=read_only)
    assert main(["create", "x", "--n-train", "10", "--n-targets", "3", "--db", ""]) == 1
    monkeypatch.setenv("DMDB_DB", "")
    assert main(["init"]) == 1
    assert capsys.readouterr().err.count("no database path given") == 2


def test_foreign_duckdb_file_refused(db_path: Path) -> None:
    con = duckdb.connect(str(db_path))
    con.execute("CREATE TABLE t (a INT)")
    con.close()
    with pytest.raises(dmdb.DmdbError, match="not a dmdb one"):
        dmdb.open(db_path)


def test_empty_duckdb_file_needs_init_to_read(db_path: Path) -> None:
    duckdb.connect(str(db_path)).close()
    with pytest.raises(dmdb.DmdbError, match="empty database.*dmdb init"):
        dmdb.open(db_path, read_only=True)
    with dmdb.open(db_path) as db:  # a writable open initialises it
        assert db.experiments().is_empty()
    dmdb.open(db_path, read_only=True).close()


def test_garbage_file_refused(tmp_path: Path) -> None:
    p = tmp_path / "junk.duckdb"
    p.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(dmdb.DmdbError, match="junk.duckdb"):
        dmdb.open(p)


def test_empty_file_left_by_a_stopped_creation(tmp_path: Path) -> None:
    """A process killed while creating the database leaves a 0-byte file, which DuckDB refuses as 'not a
    valid DuckDB database' on every later open: a creating open now replaces it (it holds nothing),
    the others say what it is; a non-empty file that is not a database is never replaced."""
    p = tmp_path / "half.duckdb"
    p.touch()
    for kwargs in (dict(read_only=True), dict(create=False)):
        with pytest.raises(dmdb.DmdbError, match=r"half.duckdb is an empty file \(0 bytes\).*dmdb init"):
            dmdb.open(p, **kwargs)
        assert p.stat().st_size == 0
    with dmdb.open(p) as db:
        db.create_experiment("a", 10, 2)
    with dmdb.open(p, read_only=True) as db:
        assert db.experiments()["name"].to_list() == ["a"]
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"x")
    with pytest.raises(dmdb.DmdbError, match="not a DuckDB database file"):
        dmdb.open(junk)
    assert junk.read_bytes() == b"x"


def test_read_only_needs_existing_file_and_refuses_writes(db_path: Path) -> None:
    with pytest.raises(dmdb.DmdbError, match="dmdb init"):
        dmdb.open(db_path, read_only=True)
    dmdb.open(db_path).close()
    with dmdb.open(db_path, read_only=True) as db:
        with pytest.raises(dmdb.ReadOnlyError):
            db.create_experiment("a", 10, 2)


def test_locked_database_gives_clear_error(db_path: Path) -> None:
    dmdb.open(db_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import dmdb, time; db = dmdb.open({str(db_path)!r}); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        for read_only in (False, True):
            with pytest.raises(dmdb.DatabaseLockedError, match=rf"locked: another process .*PID {holder.pid}"):
                dmdb.open(db_path, read_only=read_only)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while True:  # the lock goes with the process
        try:
            dmdb.open(db_path).close()
            break
        except dmdb.DatabaseLockedError:
            assert time.time() < deadline
            time.sleep(0.1)


def test_open_in_another_mode_in_the_same_process_says_so(db_path: Path) -> None:
    """A notebook that holds the file read-write and opens it read-only (or the other way round)
    got DuckDB's 'Can't open a connection to same database file with a different configuration'."""
    for first, then, other in ((False, True, "read-write"), (True, False, "read-only")):
        with dmdb.open(db_path, read_only=first):
            with pytest.raises(dmdb.DatabaseLockedError) as e:
                dmdb.open(db_path, read_only=then)
            assert str(pickle.loads(pickle.dumps(e.value))) == str(e.value)  # as a worker process sends it
            assert str(e.value) == (
                f"{db_path} is open {other} in this process already (an earlier dmdb.open or duckdb.connect of it "
                "is still open), and DuckDB opens a file in one mode per process. Use that connection, or close it "
                "(db.close()) before opening the file again."
            )
            with dmdb.open(db_path, read_only=first) as same:  # the same mode shares the file
                assert same.sql("SELECT count(*) AS n FROM experiments")["n"][0] == 0
        with dmdb.open(db_path, read_only=then) as db:  # closed: the other mode opens
            assert db.read_only is then


def test_an_experiment_handed_to_a_process_pool_says_what_to_hand_instead(exp: dmdb.Experiment) -> None:
    """pool.map(partial(train_and_record, exp), runs) pickles the experiment: pickle's own error named
    only a DuckDBPyConnection. The plan and its runs, what to hand instead, pickle."""
    for obj in (exp, exp.db):
        with pytest.raises(TypeError, match=rf"does not pickle into another process: it holds {re.escape(exp.db.path)} open.*"
                                            r"Give workers the plan or its runs"):
            pickle.dumps(obj)
    plan = exp.plan(3, seed=0)
    assert pickle.loads(pickle.dumps(plan)) == plan
    assert np.array_equal(pickle.loads(pickle.dumps(plan.run(1))).mask, plan.run(1).mask)


def test_sql_errors_are_dmdb_errors(db: dmdb.Database) -> None:
    with pytest.raises(dmdb.DmdbError, match="SQL error"):
        db.sql("SELECT * FROM no_such_table")
    assert db.sql("SELECT ?::INT + 1 AS x", [41])["x"][0] == 42


def test_ctrl_c_during_a_query_raises_keyboard_interrupt(db_path: Path) -> None:
    """Ctrl-C while db.sql ran a long query raised DuckDB's RuntimeError('Query interrupted'), or,
    when one of DuckDB's worker threads held the long piece of work, was never answered (the
    query ran to its end). Now KeyboardInterrupt, and the connection still works."""
    from ctrl_c import SLOW_QUERY, ctrl_c_while_running

    run = ctrl_c_while_running(
        "import dmdb\n"
        f"db = dmdb.open({str(db_path)!r})\n"
        "try:\n"
        f"    db.sql({SLOW_QUERY!r})\n"
        "except BaseException as e:\n"
        "    print(type(e).__name__)\n"
        "print(db.sql('SELECT 42 AS x')['x'][0])\n"
    )
    assert run.stdout.split() == ["KeyboardInterrupt", "42"], run.stderr


def test_ctrl_c_in_a_statement_of_a_transaction_or_an_open_raises_keyboard_interrupt(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a statement DuckDB runs on the main thread (the schema's DDL as a database opens, one
    inside a transaction) comes back as DuckDB's RuntimeError('Query interrupted'): the API raised
    that, not KeyboardInterrupt. The transaction is rolled back and the connection writes on."""
    from dmdb import schema
    from dmdb.transaction import transaction

    def interrupted(*args: object) -> None:
        raise RuntimeError("Query interrupted")

    with dmdb.open(db_path) as db:
        exp = db.create_experiment("e", 8, 2)
        with pytest.raises(KeyboardInterrupt):
            with transaction(db.con):
                db.con.execute("DELETE FROM experiments")
                interrupted()
        assert exp.record_batch([0], np.ones((1, 8), bool), np.zeros((1, 2))) == 1
    monkeypatch.setattr(schema, "overlay", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dmdb.open(db_path, read_only=True)
    monkeypatch.undo()
    with dmdb.open(db_path, read_only=True) as db:  # the file was let go of, and holds what was committed
        assert db.sql("SELECT name FROM experiments")["name"].to_list() == ["e"]
        assert db.experiment("e").run_ids().tolist() == [0]


def test_a_forked_child_runs_its_statements(db_path: Path) -> None:
    """The main thread's statements run on one thread kept for them (dmdb.interrupt), which a forked
    child has no copy of: the child starts its own, rather than hand its statements to none and wait
    for ever. The parent goes on with its own."""
    child = (
        "import os, signal, dmdb\n"
        f"db = dmdb.open({str(db_path)!r})\n"
        "print(db.sql('SELECT 41 + 1 AS x')['x'][0], flush=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    signal.alarm(30)  # a child that hangs ends, not left behind\n"
        "    print(dmdb.open(':memory:').sql('SELECT 7 AS x')['x'][0], flush=True)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(db.experiments().height)\n"
    )
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["42", "7", "0"], run.stderr


def test_ctrl_c_as_begin_returns_leaves_no_transaction_open(db: dmdb.Database) -> None:
    """A KeyboardInterrupt that arrives while BEGIN runs is raised as it returns, outside the block
    that rolled back: the transaction stayed open, so a notebook's next record_batch failed with
    'cannot start a transaction within a transaction' and later statements were never committed."""
    from dmdb.transaction import transaction

    class CtrlCDuringBegin:
        def execute(self, query: str) -> object:
            result = db.con.execute(query)
            if query == "BEGIN TRANSACTION":
                raise KeyboardInterrupt
            return result

    with pytest.raises(KeyboardInterrupt):
        with transaction(CtrlCDuringBegin()):  # type: ignore[arg-type]
            pass
    exp = db.create_experiment("e", 8, 2)
    plan = exp.plan(2)
    assert exp.record_batch(list(plan.run_ids), plan.masks(), np.zeros((2, 2))) == 2
    db.close()
    with dmdb.open(db.path, read_only=True) as again:  # committed, not left in a transaction that closing dropped
        assert again.experiment("e").run_ids().tolist() == [0, 1]
