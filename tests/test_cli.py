from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

import dmdb
from runs_util import random_runs
from dmdb.cli import main
from dmdb.shards import write_shard
from test_npy_import import make_store


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_info_and_env_default(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "x.duckdb"
    monkeypatch.setenv("DMDB_DB", str(db))
    code, out, _ = run_cli(capsys, "init")
    assert code == 0 and "schema version 1" in out and db.exists()
    with dmdb.open(db) as d:
        e = d.create_experiment("e", 37, 5)
        masks, margins = random_runs(6, 37, 5)
        e.record_batch(np.arange(6), masks, margins, role=["fit"] * 4 + ["holdout"] * 2)
        e.plan(3, seed=1, role="holdout")
    code, out, _ = run_cli(capsys, "info", "--format", "json")
    info = json.loads(out)
    assert code == 0 and info[0]["name"] == "e" and info[0]["fit_runs"] == 4 and info[0]["holdout_runs"] == 2
    assert info[0]["missing_runs"] == 3


def test_sql_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "x.duckdb")
    run_cli(capsys, "init", "--db", db)
    q = "SELECT range AS i, range * 2 AS j FROM range(3)"
    code, out, _ = run_cli(capsys, "sql", q, "--db", db, "--format", "csv")
    assert code == 0 and out.splitlines() == ["i,j", "0,0", "1,2", "2,4"]
    code, out, _ = run_cli(capsys, "sql", q, "--db", db, "-f", "json")
    assert json.loads(out) == [{"i": 0, "j": 0}, {"i": 1, "j": 2}, {"i": 2, "j": 4}]
    code, out, _ = run_cli(capsys, "sql", q, "--db", db)
    assert code == 0 and "┃ i ┃ j ┃" in out and "│ 2 │ 4 │" in out
    pq = tmp_path / "out.parquet"
    code, _, _ = run_cli(capsys, "sql", q, "--db", db, "-f", "parquet", "-o", str(pq))
    assert pl.read_parquet(pq)["j"].to_list() == [0, 2, 4]
    # several statements: each query's rows, as the DuckDB shell prints them (only the last came out)
    code, out, _ = run_cli(capsys, "sql", "SELECT 41 AS first; SELECT 42 AS second", "--db", db)
    assert code == 0 and "first" in out and "41" in out and "second" in out and "42" in out
    code, out, _ = run_cli(capsys, "sql", "CREATE TEMP TABLE t AS SELECT 7 AS a; SELECT * FROM t", "--db", db, "-f", "csv")
    assert code == 0 and out.splitlines() == ["a", "7"]
    code, _, err = run_cli(capsys, "sql", "SELECT 1; SELECT 2", "--db", db, "-f", "csv")
    assert code == 1 and "2 statements return rows, and --format csv writes one result" in err
    code, _, err = run_cli(capsys, "sql", " -- nothing ", "--db", db)
    assert code == 1 and "no SQL statement given" in err


def test_text_that_looks_like_rich_markup_prints_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Values, paths and messages are not rich markup: '[bold]b' lost its tag and '[/x]' raised rich's
    MarkupError ('unexpected error'); a styled word ('ok', null) keeps its style."""
    db = str(tmp_path / "a[bold]b[x].duckdb")
    code, out, _ = run_cli(capsys, "init", "--db", db)
    assert code == 0 and out.startswith(f"ok {db} (schema version")
    code, out, _ = run_cli(capsys, "sql", "SELECT '[/x] a' AS s, '[bold]b' AS t, NULL AS n", "--db", db)
    assert code == 0 and "│ [/x] a │ [bold]b │ null │" in out
    code, out, _ = run_cli(capsys, "info", "--db", db)
    assert code == 0 and out.startswith(f"{db}: ")


def test_sql_prints_nothing_for_a_statement_without_a_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SET, CREATE VIEW, DROP or CHECKPOINT print nothing, as in the DuckDB shell (an empty 'Success' or 'Count'
    table came out, 'Success' as csv); a query without rows still prints its columns, INSERT its count. Asked
    for a file or parquet, such a statement is a one-line error, not an empty file."""
    db = str(tmp_path / "x.duckdb")
    run_cli(capsys, "init", "--db", db)
    for q in ("SET threads = 1", "CREATE OR REPLACE VIEW v AS SELECT 1 AS a", "CHECKPOINT", "DROP VIEW IF EXISTS v"):
        for fmt in ("table", "csv", "json"):
            assert run_cli(capsys, "sql", "--write", q, "--db", db, "-f", fmt) == (0, "", ""), (q, fmt)
    code, out, _ = run_cli(capsys, "sql", "SELECT 1 AS a; SET threads = 1", "--db", db)
    assert code == 0 and "┃ a ┃" in out and "Success" not in out
    code, out, _ = run_cli(capsys, "sql", "SELECT 1 AS a WHERE false", "--db", db, "-f", "csv")
    assert (code, out) == (0, "a\n")
    code, out, _ = run_cli(capsys, "sql", "--write", "INSERT INTO dmdb_meta VALUES ('k', 'v')", "--db", db, "-f", "csv")
    assert (code, out) == (0, "Count\n1\n")
    for fmt, path in (("parquet", tmp_path / "out.parquet"), ("csv", tmp_path / "out.csv")):
        code, out, err = run_cli(capsys, "sql", "SET threads = 1", "--db", db, "-f", fmt, "-o", str(path))
        assert (code, out) == (1, "") and not path.exists()
        assert err == f"dmdb sql: error: SET gives no result, so nothing was written to {path} (the statement ran)\n"
    code, _, err = run_cli(capsys, "sql", "SET threads = 1", "--db", db, "-f", "parquet")
    assert code == 1 and err.endswith("nothing was written as parquet (the statement ran)\n")


def test_sql_text_formats_hold_masks_lists_and_structs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A BIT mask comes out as its bit string (zero-padded to whole bytes), lists and arrays joined as '1,2' in csv and the
    table, as lists in json; structs as JSON text in csv; a BLOB as hex."""
    db = tmp_path / "x.duckdb"
    with dmdb.open(db) as d:
        d.create_experiment("e", 10, 2).record_batch([0], np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1, 1]], bool),
                                                      np.array([[0.5, -1.0]]), role="fit")
    q = "SELECT run_id, mask, margins, [1, 2]::INT[2] AS arr, {'a': 1} AS st, '\\xAB'::BLOB AS b FROM runs"
    code, out, err = run_cli(capsys, "sql", q, "--db", str(db), "-f", "csv")
    assert code == 0, err
    assert out.splitlines() == ["run_id,mask,margins,arr,st,b", '0,1011000011000000,"0.5,-1.0","1,2","{""a"":1}",ab']
    code, out, err = run_cli(capsys, "sql", q, "--db", str(db), "-f", "json")
    assert code == 0, err
    assert json.loads(out) == [{"run_id": 0, "mask": "1011000011000000", "margins": [0.5, -1.0], "arr": [1, 2], "st": {"a": 1},
                                "b": "ab"}]
    code, out, err = run_cli(capsys, "sql", q, "--db", str(db))
    assert code == 0 and "1011000011000000" in out and "0.5,-1.0" in out
    # DECIMALs (DuckDB's type for literals such as 1.25) are numbers in json and inside nested values,
    # as DuckDB's own json gives them (polars wrote "1.25")
    dec = "SELECT 1.25 AS d, [[1.5]] AS n, {'a': 2.5} AS s, [1.5, 2] AS l"
    code, out, err = run_cli(capsys, "sql", dec, "--db", str(db), "-f", "json")
    assert code == 0 and json.loads(out) == [{"d": 1.25, "n": [[1.5]], "s": {"a": 2.5}, "l": [1.5, 2.0]}]
    code, out, err = run_cli(capsys, "sql", dec, "--db", str(db), "-f", "csv")
    assert code == 0 and out.splitlines()[1] == '1.25,[[1.5]],"{""a"":2.5}","1.5,2.0"'
    # a decimal beside a blob in one struct: the blob is still hex (polars panicked writing it to json)
    mixed = "SELECT {'a': 1.25, 'b': '\\x01'::BLOB} AS s"
    code, out, err = run_cli(capsys, "sql", mixed, "--db", str(db), "-f", "json")
    assert code == 0 and json.loads(json.loads(out)[0]["s"]) == {"a": 1.25, "b": "01"}


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "info", "--db", str(tmp_path / "missing.duckdb"))
    assert code == 1 and out == "" and err.startswith("dmdb info: error: no database at") and err.count("\n") == 1
    code, _, err = run_cli(capsys, "sql", "SELEC 1", "--db", str(tmp_path / "missing.duckdb"))
    assert code == 1 and "Traceback" not in err
    with pytest.raises(dmdb.DmdbError):
        main(["info", "--db", str(tmp_path / "missing.duckdb"), "--debug"])


def test_a_verb_with_progress_bars_that_fails_before_any_prints_its_error_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "x.duckdb"
    with dmdb.open(db) as d:
        masks, margins = random_runs(12, 20, 3)
        d.create_experiment("e", 20, 3).record_batch(np.arange(12), masks, margins, role=["fit"] * 10 + ["holdout"] * 2)
    code, out, err = run_cli(capsys, "fit", "e", "--targets", "7", "--db", str(db))
    assert (code, out, err) == (1, "", "dmdb fit: error: target 7 is not in experiment 'e' (it has targets 0-2)\n")


def test_verbs_with_one_bar_that_fail_before_a_report_print_their_error_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ingest, import-npy and collect drew their bar before the library had checked anything: a
    missing folder or a bad masks.npy printed 'importing runs ━━━ 0/? 0:00:00' above the error line.
    A verb that gets as far as its work still shows the bar."""
    db = str(tmp_path / "x.duckdb")
    dmdb.open(db).close()
    code, out, err = run_cli(capsys, "ingest", str(tmp_path / "nowhere"), "--db", db)
    assert (code, out, err) == (1, "", f"dmdb ingest: error: shard directory {tmp_path / 'nowhere'} does not exist\n")
    make_store(tmp_path / "store")
    np.save(tmp_path / "store" / "masks.npy", np.load(tmp_path / "store" / "masks.npy").astype(np.uint8))
    code, out, err = run_cli(capsys, "import-npy", str(tmp_path / "store"), "--name", "e", "--db", db)
    assert (code, out, err) == (1, "", "dmdb import-npy: error: masks and _completed must be bool arrays, got uint8 and bool\n")
    make_store(tmp_path / "store")
    code, _, err = run_cli(capsys, "import-npy", str(tmp_path / "store"), "--name", "e", "--db", db)
    assert code == 0 and err.startswith("importing runs") and " 0:00:00" in err.splitlines()[0]


def test_every_option_of_every_verb_says_what_it_does() -> None:
    """`dmdb VERB --help` is where a user looks: an option listed there without a line (fit's --max-iter,
    --split-seed, --dtype, embed's --seed, collect's --engine were) leaves them guessing."""
    import argparse

    from dmdb.cli.parser import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    bare = [f"{verb} {'/'.join(action.option_strings) or action.dest}"
            for verb, parser in verbs.items() for action in parser._actions
            if action.option_strings and not action.help]
    assert {"fit", "sql", "ingest", "counterfactual"} <= set(verbs) and bare == []  # the walk saw the verbs


def test_each_verb_loads_only_its_module() -> None:
    """main builds the parser of `dmdb VERB` from VERBS[VERB] alone: each module must register
    exactly the verbs VERBS gives it, and all of them in VERBS' order make `dmdb --help`."""
    import argparse

    from dmdb.cli.parser import MODULES, VERBS, build_parser

    def verbs(modules: tuple[str, ...]) -> list[str]:
        return list(next(a for a in build_parser(modules)._actions if isinstance(a, argparse._SubParsersAction)).choices)

    assert {verb: module for module in MODULES for verb in verbs((module,))} == VERBS
    assert verbs(MODULES) == list(VERBS)


def test_ingest_and_import_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Summaries on stdout (`dmdb ingest DIR > log` kept nothing), a bad shard on stderr."""
    db = str(tmp_path / "x.duckdb")
    masks, margins, completed = make_store(tmp_path / "store")
    code, out, err = run_cli(capsys, "import-npy", str(tmp_path / "store"), "--name", "ref", "--db", db, "--quiet")
    n = completed.sum()
    assert (code, out, err) == (0, f"imported {n} new runs into 'ref' ({n} runs in all)\n", "")
    m2, y2 = random_runs(2, 45, 7)
    write_shard(tmp_path / "shards", "ref", [1000, 1001], m2, y2)
    (tmp_path / "shards" / "bad.parquet").write_bytes(b"junk")
    code, out, err = run_cli(capsys, "ingest", str(tmp_path / "shards"), "--db", db, "-q")
    assert code == 1 and out == ("ingested 1 shard files: 2 new runs, 0 already present; "
                                 "0 files skipped (ingested before); 1 bad\n")
    assert err.startswith("bad shard bad.parquet: ") and len(err.splitlines()) == 1
    code, out, _ = run_cli(capsys, "sql", "SELECT count(*) AS n FROM runs", "--db", db, "-f", "csv")
    assert out.splitlines()[1] == str(completed.sum() + 2)


def test_a_missing_default_database_says_no_db_was_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --db or $DMDB_DB, `dmdb sql` in a folder without dmdb.duckdb says that no database was named,
    not only that `dmdb init` would create one (a new empty file, not the user's)."""
    monkeypatch.delenv("DMDB_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    note = " (no --db was given, nor $DMDB_DB: name your database with --db FILE or DMDB_DB=FILE)"
    code, _, err = run_cli(capsys, "sql", "SELECT 1")
    missing = "no database at dmdb.duckdb; create one with `dmdb init --db dmdb.duckdb`"
    assert (code, err) == (1, f"dmdb sql: error: {missing}{note}\n")
    for named in (["--db", "dmdb.duckdb"], ["--db", "other.duckdb"]):  # a path the user gave: no note
        code, _, err = run_cli(capsys, "sql", "SELECT 1", *named)
        assert code == 1 and "no database at" in err and note not in err
    monkeypatch.setenv("DMDB_DB", "env.duckdb")
    code, _, err = run_cli(capsys, "info")
    assert code == 1 and "no database at env.duckdb" in err and note not in err
    monkeypatch.delenv("DMDB_DB")
    code, out, _ = run_cli(capsys, "init")  # the default still creates ./dmdb.duckdb
    assert code == 0 and (tmp_path / "dmdb.duckdb").exists()
    assert run_cli(capsys, "sql", "SELECT 1 AS x", "-f", "csv")[1] == "x\n1\n"


def test_create_then_plan_and_verbs_that_refuse_bad_input_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command-line-only flow starts with `dmdb create`; verbs that add to a database refuse a
    mistyped --db (no new empty file), bad numbers fail while parsing, and nothing is half-written."""
    db = tmp_path / "x.duckdb"
    code, out, _ = run_cli(capsys, "create", "cifar", "--n-train", "40", "--n-targets", "3", "--db", str(db))
    assert code == 0 and "40 train examples" in out
    code, _, err = run_cli(capsys, "create", "cifar", "--n-train", "41", "--n-targets", "3", "--db", str(db))
    assert code == 1 and "already exists" in err
    code, out, _ = run_cli(capsys, "plan", "cifar", "--runs", "5", "--db", str(db), "--out", str(tmp_path / "p.json"))
    assert code == 0 and (tmp_path / "p.json").exists()
    assert out.startswith(f"plan of 5 fit runs (ids 0..4) written to {tmp_path / 'p.json'}; ")
    typo = tmp_path / "typo.duckdb"
    for argv in (["fit", "cifar"], ["plan", "cifar", "--runs", "5"], ["ingest", str(tmp_path)],
                 ["sql", "--write", "CREATE TABLE t (x INT)"], ["embed"]):
        code, _, err = run_cli(capsys, *argv, "--db", str(typo))
        assert code == 1 and "no database at" in err and not typo.exists(), argv
    # several statements under --write: all or none
    code, _, _ = run_cli(capsys, "sql", "--write", "CREATE TABLE t (x INT)", "--db", str(db))
    code, _, err = run_cli(capsys, "sql", "--write", "INSERT INTO t VALUES (5); INSERT INTO nope VALUES (1)", "--db", str(db))
    assert code == 1 and "nope" in err
    code, out, _ = run_cli(capsys, "sql", "SELECT count(*) AS n FROM t", "--db", str(db), "-f", "csv")
    assert out.splitlines() == ["n", "0"]
    # a mistyped --train or a missing engine fails before the plan is stored
    code, _, err = run_cli(capsys, "collect", "cifar", "--train", "nosuch_module:fn", "--runs", "7", "--seed", "9", "--db", str(db))
    assert code == 1 and "nosuch_module" in err
    with dmdb.open(db, read_only=True) as d:
        assert [p.seed for p in d.experiment("cifar").plans()] == [0]
    # numbers refused while parsing (usage error, exit 2), before any file is made
    for argv in (["synth", "s", "--runs", "0", "--train", "10", "--targets", "2"], ["demo", "--runs", "2"],
                 ["create", "e", "--n-train", "3", "--n-targets", "1", "--alpha", "1.5"],
                 ["fit", "cifar", "--split-seed", "-1"], ["import-npy", str(tmp_path), "--name", "z", "--chunk-rows", "0"]):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--db", str(tmp_path / "fresh.duckdb")])
        assert exc.value.code == 2 and "must be" in capsys.readouterr().err
    assert not (tmp_path / "fresh.duckdb").exists()
    # a file it cannot write, a Slurm index that is not one: one clear line, exit 1
    code, _, err = run_cli(capsys, "info", "--db", str(db), "-f", "csv", "-o", str(tmp_path / "no" / "such" / "x.csv"))
    assert code == 1 and err.startswith(f"dmdb info: error: cannot write --output {tmp_path}/no/such/x.csv: the folder {tmp_path}/no/such does not exist") and len(err.strip().splitlines()) == 1
    # files written under a temporary dot-name and renamed: the error names the missing folder, not the dot-name
    for argv in (["plan", "cifar", "--runs", "5", "--out", str(tmp_path / "no" / "p.json")],
                 ["export", "cifar", "--runs-out", str(tmp_path / "no" / "r.parquet")]):
        code, _, err = run_cli(capsys, *argv, "--db", str(db))
        assert (code, err) == (1, f"dmdb {argv[0]}: error: No such file or directory: {tmp_path / 'no'}\n")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "abc")
    code, _, err = run_cli(capsys, "worker", "cifar", "--train", "x:y", "--shards", str(tmp_path / "s"), "--db", str(db))
    assert code == 1 and "SLURM_ARRAY_TASK_ID is 'abc'" in err


def test_sql_help_names_every_table_view_and_public_macro(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dmdb sql --help` is where a first query starts: it names every table, view and public macro a new
    database has, and every function it shows a call of exists."""
    db = str(tmp_path / "x.duckdb")
    run_cli(capsys, "init", "--db", db)
    with pytest.raises(SystemExit) as exc:
        main(["sql", "--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    with duckdb.connect(db, read_only=True) as con:
        names = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() UNION SELECT view_name FROM duckdb_views() WHERE NOT internal "
            "UNION SELECT function_name FROM duckdb_functions() WHERE NOT internal AND function_type LIKE '%macro' "
            "AND (function_name NOT LIKE 'dmdb\\_%' ESCAPE '\\' OR function_name = 'dmdb_image_values')").fetchall()}
        functions = {r[0] for r in con.execute("SELECT function_name FROM duckdb_functions()").fetchall()}
    assert {"runs", "weights", "margins_long", "top_weights", "mask_indices", "dmdb_image_values"} <= names
    assert sorted(n for n in names if not re.search(rf"\b{n}\b", text)) == []
    assert sorted(set(re.findall(r"(?<![.\w])([a-z_]+)\(", text)) - functions) == []  # not duckdb.connect(
    # one target's margins through margins_long took 0.25 s, through runs' margins[t + 1] 0.025 s (README)
    assert re.search(r"margins_long \([^)]*for\s+one target margins\[t \+ 1\] on runs is ~10x faster\)", text)


def test_sql_text_formats_keep_nulls_commas_and_nested_binary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "x.duckdb")
    run_cli(capsys, "init", "--db", db)
    q = "SELECT [1, NULL, 3] AS ln, ['a,b', 'c'] AS ls, ['ab'::BLOB, NULL] AS lb"
    code, out, err = run_cli(capsys, "sql", q, "--db", db, "-f", "csv")
    assert code == 0, err
    assert out.splitlines()[1] == '"1,null,3","[""a,b"",""c""]","[""6162"", null]"'
    code, out, err = run_cli(capsys, "sql", q, "--db", db, "-f", "json")
    assert code == 0 and json.loads(out) == [{"ln": [1, None, 3], "ls": ["a,b", "c"], "lb": '["6162", null]'}]


def test_sql_write_wraps_only_what_a_transaction_can_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Plain statements run all-or-nothing; a script with CHECKPOINT or its own BEGIN/COMMIT (after a
    comment, too) runs as written."""
    db = str(tmp_path / "x.duckdb")
    run_cli(capsys, "init", "--db", db)
    for q in ("CREATE TABLE z (a INT); FORCE CHECKPOINT", "/* c */ BEGIN; INSERT INTO z VALUES (7); COMMIT",
              "INSERT INTO z VALUES (8); -- x\nCHECKPOINT"):
        code, _, err = run_cli(capsys, "sql", "--write", q, "--db", db)
        assert code == 0, (q, err)
    code, out, _ = run_cli(capsys, "sql", "SELECT list(a ORDER BY a) AS a FROM z", "--db", db, "-f", "csv")
    assert out.splitlines() == ["a", '"7,8"']


def test_a_verb_that_fails_removes_the_database_it_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import-npy of a mistyped store folder, or a synth refused for too few runs, into a new --db path
    left an empty database file (800 KB) behind. A database that was there before stays."""
    db = tmp_path / "new.duckdb"
    for argv, why in ((["import-npy", str(tmp_path / "no_store"), "--name", "r"], "no_store/masks.npy is missing"),
                      (["synth", "s", "--runs", "2", "--train", "10", "--targets", "2"], "at least 6 fit runs")):
        code, _, err = run_cli(capsys, *argv, "--db", str(db))
        assert code == 1 and why in err and err.count("\n") == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    run_cli(capsys, "init", "--db", str(db))
    code, _, err = run_cli(capsys, "import-npy", str(tmp_path / "no_store"), "--name", "r", "--db", str(db))
    assert code == 1 and db.exists()


def test_ctrl_c_inside_a_duckdb_query_reads_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Ctrl-C while DuckDB runs a statement (seen at an ingest's COMMIT) comes back as DuckDB's
    RuntimeError('Query interrupted'): the CLI said 'unexpected error (RuntimeError)', exit 2."""
    from dmdb.cli import store_cmds

    def interrupted(args: object) -> int:
        raise RuntimeError("Query interrupted")

    monkeypatch.setattr(store_cmds, "cmd_info", interrupted)
    assert main(["info", "--db", str(tmp_path / "x.duckdb")]) == 130
    assert capsys.readouterr().err.strip() == "dmdb info: interrupted"


def test_ctrl_c_during_a_long_sql_query_exits_130(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGINT to `dmdb sql` while DuckDB runs a long query: one line, exit 130 (it was often not
    answered at all: the query ran on to its end). A --write statement leaves nothing behind."""
    from ctrl_c import SLOW_QUERY, ctrl_c_while_running

    db = str(tmp_path / "x.duckdb")
    run_cli(capsys, "init", "--db", db)
    for argv in (["sql", SLOW_QUERY], ["sql", "--write", f"CREATE TABLE t AS {SLOW_QUERY}"]):
        run = ctrl_c_while_running(f"import sys\nfrom dmdb.cli import main\nsys.exit(main({argv + ['--db', db]!r}))\n")
        assert (run.returncode, run.stderr) == (130, "dmdb sql: interrupted\n")
    code, out, _ = run_cli(capsys, "sql", "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 't'", "--db", db, "-f", "csv")
    assert (code, out.split()) == (0, ["n", "0"])


@pytest.mark.parametrize("library", ["first", "numpy", "polars"])
def test_ctrl_c_while_the_cli_loads_reads_interrupted(tmp_path: Path, library: str) -> None:
    """Ctrl-C in the first second or more of any command, while its libraries load, printed Python's
    KeyboardInterrupt traceback through the import machinery; now one line, 130. numpy loaded with
    `import dmdb` itself (for dmdb.Plan), before the command's handler was reached. "first": SIGINT
    as the command imports its first module that is not dmdb's own (as the `dmdb` script does:
    `from dmdb.cli import main`); typing and argparse, loaded with dmdb.cli, gave the traceback."""
    import subprocess
    import sys

    child = (
        "import os, signal, sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {library!r} or ({library!r} == 'first' and name.partition('.')[0] != 'dmdb'):\n"
        "            sys.meta_path.remove(self)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "from dmdb.cli import main\n"
        f"sys.exit(main(['info', '--db', {str(tmp_path / 'x.duckdb')!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr) == (130, "dmdb: interrupted\n")


@pytest.mark.parametrize(
    "error",
    [
        'IO Error: Could not write file "x.duckdb.wal": File too large',
        "TransactionContext Error: Failed to commit: Could not write file: No space left on device",
        "Corrupt database file: computed checksum 123 does not match stored checksum 456 in block 7",
    ],
)
def test_a_failing_database_file_is_named_not_unexpected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, error: str
) -> None:
    """Disk full, a file-size limit or a damaged block: one line that names the file's failure, exit 1
    (it read 'unexpected error (IOException)', exit 2)."""
    import duckdb

    from dmdb.cli import store_cmds

    kind = duckdb.IOException if error.startswith("IO") else duckdb.TransactionException if "commit" in error else duckdb.Error

    def failing(args: object) -> int:
        raise kind(error)

    monkeypatch.setattr(store_cmds, "cmd_info", failing)
    assert main(["info", "--db", str(tmp_path / "x.duckdb")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dmdb info: error: the database file could not be written or read ({error})")
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv, option, low", [
    (["leakage", "--top", "0"], "--top", 1),
    (["leakage", "--min-nnz", "2"], "--min-nnz", 3),
    (["similar", "-t", "0", "--k", "0"], "--k", 1),
    (["embed", "--components", "0"], "--components", 1),
    (["embed", "--clusters", "0"], "--clusters", 1),
    (["fit", "e", "--k", "0"], "--k", 1),
    (["fit", "e", "--max-iter", "0"], "--max-iter", 1),
    (["fit", "e", "--patience", "-1"], "--patience", 0),
])
def test_a_count_out_of_range_is_refused_under_its_option_name(
    argv: list[str], option: str, low: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not later by the library under its parameter name (`leakage --top 0` said 'limit must be a
    positive integer', `fit --k 0` 'k must be in 1..9223372036854775807')."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--db", str(tmp_path / "x.duckdb")])
    err = capsys.readouterr().err.splitlines()
    assert exited.value.code == 2 and err[-1].endswith(f"error: argument {option}: must be at least {low}, got {argv[-1]}")
