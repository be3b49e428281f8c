"""SQL safety: `dmdb sql` and the TUI open read-only, and library code binds values as parameters.

The parameter check reads every execute/sql call in dmdb/ and tui/ with the ast module. SQL text
built at run time (f-strings, %, .format, +) may only splice in identifiers or SQL fragments made
by dmdb itself, never values; each such splice is listed below with why it is safe, so a new one
fails this test until someone has looked at it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dmdb
from dmdb.cli import main

ROOT = Path(__file__).resolve().parents[1]
SQL_METHODS = {"execute", "executemany", "sql", "query"}

# (file, spliced expression) -> why it cannot carry a value from outside.
REVIEWED_SPLICES: dict[tuple[str, str], str] = {
    ("dmdb/record.py", "name"): "a view name made from uuid4 hex",
    ("dmdb/fit/write.py", "table"): "a table name from a fixed list in the module",
    ("dmdb/fit/write.py", "cols"): "column names of an Arrow table built by dmdb",
    ("dmdb/fit/write.py", "name"): "a view name derived from the fixed table name",
    ("dmdb/examples.py", "table"): "'train_examples' or 'targets', chosen by dmdb",
    ("dmdb/analyses/embeddings.py", "t"): "a table name from a fixed list in the module",
    ("dmdb/analyses/embeddings.py", "cols"): "column names of an Arrow table built by dmdb",
    ("dmdb/analyses/embeddings.py", "names[t]"): "view names made by dmdb",
    ("dmdb/readback.py", "columns"): "column lists written as literals by the callers in dmdb",
    ("dmdb/readback.py", "cols"): "column lists written as literals in the module",
    ("dmdb/readback.py", "where"): "where_clause(): fixed text with ? placeholders, values go to params",
    ("dmdb/record.py", "in_span"): "a literal condition with ? placeholders",
    ("dmdb/examples.py", "name"): "a view name made from uuid4 hex",
    ("dmdb/schema.py", "name"): "a pool view name from dmdb's own sql/ (an identifier, \\w+)",
    ("dmdb/analyses/leakage.py", "table"): "asserted to be 'targets' or 'train_examples'",
    ("dmdb/analyses/labels.py", "table"): "asserted to be 'targets' or 'train_examples'",
    ("dmdb/experiment.py", "sql + ' ORDER BY run_id'"): "literal text with ? placeholders, values go to params",
    ("dmdb/scale/export.py", "where"): "literal conditions with ? placeholders, values go to params",
}


def _sql_text_arg(call: ast.Call) -> ast.expr | None:
    if isinstance(call.func, ast.Attribute) and call.func.attr in SQL_METHODS and call.args:
        return call.args[0]
    return None


def _splices(node: ast.expr) -> list[str]:
    """Expressions spliced into SQL text built at run time; [] for a plain literal."""
    if isinstance(node, ast.JoinedStr):
        return [ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return [ast.unparse(node)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return [ast.unparse(node)]
    return []


def test_library_sql_binds_values_as_parameters() -> None:
    found: dict[tuple[str, str], int] = {}
    for path in sorted([*ROOT.glob("dmdb/**/*.py"), *ROOT.glob("tui/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            arg = _sql_text_arg(node) if isinstance(node, ast.Call) else None
            for splice in _splices(arg) if arg is not None else []:
                found[(rel, splice)] = node.lineno
    unreviewed = {k: line for k, line in found.items() if k not in REVIEWED_SPLICES}
    assert not unreviewed, (
        "SQL text built from expressions not reviewed as identifiers (bind values with ? and params instead, "
        f"or add the splice to REVIEWED_SPLICES with the reason it is safe): {unreviewed}"
    )


def test_the_parameter_check_catches_a_formatted_value() -> None:
    bad = ast.parse('con.execute(f"SELECT * FROM runs WHERE run_id = {run_id}")').body[0].value  # type: ignore[attr-defined]
    assert _splices(_sql_text_arg(bad)) == ["run_id"]  # type: ignore[arg-type]
    assert _splices(ast.parse('con.execute("... = %s" % x)').body[0].value.args[0])  # type: ignore[attr-defined]
    assert _splices(ast.parse('con.sql("... = ?", params=[x])').body[0].value.args[0]) == []  # type: ignore[attr-defined]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "s.duckdb"
    with dmdb.open(path) as db:
        db.create_experiment("e", 10, 2)
    return path


@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM experiments", "UPDATE experiments SET n_train = 1", "DROP TABLE runs", "CREATE TABLE t (x INT)",
     "INSERT INTO dmdb_meta VALUES ('k', 'v')"],
)
def test_dmdb_sql_is_read_only_by_default(study: Path, statement: str, capsys: pytest.CaptureFixture[str]) -> None:
    def state() -> tuple[list[str], int, int]:
        with dmdb.open(study, read_only=True) as db:
            tables = db.sql("SELECT count(*) AS n FROM information_schema.tables")["n"][0]
            return db.experiments()["name"].to_list(), db.sql("SELECT count(*) AS n FROM dmdb_meta")["n"][0], tables

    before = state()
    assert main(["sql", statement, "--db", str(study)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "open read-only" in err and "--write" in err
    assert state() == before and before[0] == ["e"]


def test_dmdb_sql_write_flag_allows_writes(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "DELETE FROM experiments WHERE name = 'e'", "--db", str(study), "--write"]) == 0
    with dmdb.open(study, read_only=True) as db:
        assert db.experiments().height == 0


def test_tui_opens_read_only(study: Path) -> None:
    from tui.service import Service

    service = Service.open(study)
    try:
        assert service.db.read_only
        with pytest.raises(dmdb.ReadOnlyError):
            service.sql("DELETE FROM experiments")
    finally:
        service.close()
    with dmdb.open(study, read_only=True) as db:
        assert db.experiments()["name"].to_list() == ["e"]
