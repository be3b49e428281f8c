"""A non-editable install must carry the SQL files inside the package and work from any folder."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    (whl,) = out.glob("dmdb-*.whl")
    return whl


def test_wheel_ships_sql_and_both_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("dmdb/sql/"))
    assert shipped and shipped == sorted(f"dmdb/sql/{p.name}" for p in (ROOT / "sql").glob("*.sql"))
    assert "tui/__init__.py" in names and "dmdb/cli/__init__.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)


# DuckDB features the code uses, with the first release that has them (from DuckDB's release notes and docs).
DUCKDB_FEATURES = (
    ("sql", r"USING COMPRESSION zstd", (1, 2), "zstd column compression (duckdb/duckdb#14514, v1.2.0)"),
    ("sql", r"\blambda \w+:", (1, 3), "the `lambda x: ...` syntax (duckdb/duckdb#17235, v1.3.0)"),
    ("py", r"\.to_arrow_reader\(", (1, 5), "Relation.to_arrow_reader (duckdb/duckdb-python#287, v1.5.0)"),
)


def test_duckdb_floor_covers_what_the_code_uses() -> None:
    """pyproject said duckdb>=1.2, but sql/ uses `lambda x:` (1.3) and the export `to_arrow_reader` (1.5)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = (d for d in deps if d.startswith("duckdb>="))
    floor = tuple(int(x) for x in spec.removeprefix("duckdb>=").split("."))
    files = {"sql": sorted((ROOT / "sql").glob("*.sql")),
             "py": sorted([*(ROOT / "dmdb").rglob("*.py"), *(ROOT / "tui").rglob("*.py")])}
    for kind, pattern, since, what in DUCKDB_FEATURES:
        users = [p.relative_to(ROOT) for p in files[kind] if re.search(pattern, p.read_text())]
        assert users, f"nothing uses {what} any more: drop its row"
        assert floor >= since, f"{users[0]} uses {what}, but pyproject.toml asks for {spec}"


def test_installed_copy_finds_its_sql(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    code = (
        "import dmdb, dmdb.sqlfiles as s; "
        "assert dmdb.__file__.startswith(%r), dmdb.__file__; "
        "assert str(s.sql_dir()).startswith(%r), s.sql_dir(); "
        "db = dmdb.open('t.duckdb'); db.create_experiment('e', 3, 2); print(db.experiments()['name'][0])"
    ) % (str(target), str(target))
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "e"


@pytest.mark.parametrize("module", ["dmdb", "dmdb.cli", "tui"])
def test_light_imports_do_not_load_torch(module: str) -> None:
    """Workers (`import dmdb`), the CLI's start (every `dmdb ...` command) and the TUI stay torch-free."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_subpackages_load_on_first_use() -> None:
    """After a bare `import dmdb`, dmdb.analyses (and the other subpackages) are reachable as
    attributes, loaded on first use; before that torch stays unloaded."""
    code = (
        "import sys, dmdb; light = 'torch' not in sys.modules; "
        "f = dmdb.analyses.removal_set; print(light, callable(f), dmdb.regress.select_lasso.__name__, "
        "dmdb.scale.SynthSpec.__name__, dmdb.fit.FitOptions is dmdb.FitOptions)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "select_lasso", "SynthSpec", "True"]


def test_shards_reachable_after_bare_import() -> None:
    """README's worker and ingest calls, `dmdb.shards.write_run(...)` and `dmdb.ingest(...)`, work
    after a bare `import dmdb`."""
    code = "import dmdb; print(dmdb.shards.write_run.__name__, dmdb.ingest.__name__, dmdb.IngestReport.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["write_run", "ingest", "IngestReport"]



HEAVY = ("duckdb", "polars", "torch")


@pytest.mark.parametrize("module", ["dmdb.shards", "dmdb.batch", "dmdb.plan", "dmdb.scale.task", "dmdb.cli.worker_cmds"])
def test_worker_path_imports_no_database_side(module: str) -> None:
    """What a training worker imports to write its results loads neither duckdb, polars nor torch
    (the worker's own training may need torch; dmdb does not make it pay for the rest)."""
    code = f"import sys, {module}; print(*[m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []


def test_dmdb_worker_trains_and_writes_a_shard_without_the_database_side(tmp_path: Path) -> None:
    """`dmdb worker --plan FILE`, run to the end (parse, read the plan, train, write the shard), in a
    fresh interpreter: none of duckdb, polars, torch is loaded, and the shard holds what the
    training function returned for the planned subset."""
    from dmdb.plan import Plan
    from dmdb.scale.task import Job
    from dmdb.shards import read_shard

    (tmp_path / "light_train.py").write_text(
        "import numpy as np\n"
        "def train(run, config):\n"
        "    return np.bincount(run.indices % config['k'], minlength=config['k']).astype(np.float32)\n"
    )
    plan = Plan("light", "fit", seed=3, first_run_id=10, n_runs=4, n_train=50, alpha=0.5, sampling="fixed")
    Job(plan, n_targets=3, config={"k": 3}).save(tmp_path / "plan.json")
    argv = ["worker", "light", "--plan", str(tmp_path / "plan.json"), "--index", "2", "--train", "light_train:train",
            "--shards", str(tmp_path / "sh"), "-q"]
    code = f"import sys; from dmdb.cli import main; print(main({argv!r}), *[m for m in {HEAVY!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"]
    (shard,) = (tmp_path / "sh").glob("*.parquet")
    table, meta = read_shard(shard)
    mask = plan.run(12).mask
    assert meta["experiment"] == "light" and table["run_id"].to_pylist() == [12]
    assert table["margins"].to_pylist() == [[float(np.sum(np.flatnonzero(mask) % 3 == r)) for r in range(3)]]


def test_solvers_import_without_the_database_side() -> None:
    """dmdb.regress needs torch and numpy only (a GPU machine's image may have no duckdb or polars);
    the database side loads on first use and is the same object however it is reached."""
    code = (
        "import sys, dmdb, dmdb.regress; print(any(m in sys.modules for m in ('duckdb', 'polars'))); "
        "from dmdb import open as o, Database; import dmdb.store as s; "
        "print(o is dmdb.open is s.open, Database is s.Database, dmdb.SCHEMA_VERSION == s.SCHEMA_VERSION)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True", "True"]


@pytest.mark.parametrize("package", ["dmdb", "dmdb.fit", "dmdb.demo", "dmdb.scale"])
def test_type_checking_imports_match_the_lazy_names(package: str) -> None:
    """Python resolves these packages' names through the lazy table, type checkers and IDEs through
    the `if TYPE_CHECKING:` imports: both must give the same names from the same modules."""
    mod = importlib.import_module(package)
    lazy = mod._HOMES | {m: m for m in mod._SUBPACKAGES} if package == "dmdb" else mod._HOME
    checked: dict[str, str] = {}
    for node in ast.parse(Path(mod.__file__).read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1
                checked |= {a.name: imp.module or a.name for a in imp.names}
    assert checked == lazy


@pytest.mark.parametrize("package", ["dmdb", "dmdb.fit", "dmdb.demo", "dmdb.scale"])
def test_lazy_names_are_not_module_names(package: str) -> None:
    """A lazy name spelled like a module of its package (dmdb.scale's `collect` when it lived in
    collect.py) becomes that module once the module is loaded: `from dmdb.scale import collect` then
    gave the module, not the function."""
    mod = importlib.import_module(package)
    lazy = mod._HOMES if package == "dmdb" else mod._HOME
    assert [name for name in lazy if importlib.util.find_spec(f"{package}.{name}") is not None] == []
