"""dmdb: a datamodels database.

    db = dmdb.open("study.duckdb")
    exp = db.create_experiment("cifar", n_train=50_000, n_targets=10_000, alpha=0.5, exist_ok=True)
    for run in exp.pending(exp.plan(1000, seed=0)):
        exp.record(run, margins=train_and_eval(run.indices, seed=run.seed))
"""

from .errors import (
    BadInputError,
    ConvergenceWarning,
    CorruptShardError,
    DatabaseLockedError,
    DmdbError,
    DmdbWarning,
    DuplicateRunError,
    FitError,
    NoDatabaseError,
    ReadOnlyError,
    SchemaVersionError,
    ScoresWarning,
    UnknownExperimentError,
)
from .lazy import lazy_attributes

# The database side (duckdb, polars), Fit, Plan (numpy) and the subpackages (torch) load on first
# use (`dmdb.open(...)`, `dmdb.ingest(...)`, `dmdb.analyses.leakage(...)`, `dmdb.shards.write_run(...)`
# work after a bare `import dmdb`), so that `import dmdb` stays light for workers, `dmdb.regress` needs
# only torch and numpy (e.g. on a GPU machine whose image has no duckdb), and the `dmdb` command
# reaches its Ctrl-C handler in milliseconds (numpy alone took 0.3 s, during which Ctrl-C was a traceback).
_SUBPACKAGES = ("analyses", "demo", "fit", "regress", "scale", "shards")
_HOMES = {"Experiment": "experiment", "Database": "store", "open": "store", "SCHEMA_VERSION": "store",
          "Fit": "fit", "FitOptions": "fit", "ingest": "ingestion", "IngestReport": "ingestion",
          "Plan": "plan", "PlannedRun": "plan"}
__getattr__ = lazy_attributes(__name__, _HOMES | {m: m for m in _SUBPACKAGES})

TYPE_CHECKING = False  # typing.TYPE_CHECKING without loading typing (17 ms, before the CLI's Ctrl-C handler: dmdb/cli)
if TYPE_CHECKING:  # what type checkers see instead of __getattr__ (tests/test_packaging.py keeps it equal to _HOMES)
    from . import analyses, demo, fit, regress, scale, shards
    from .experiment import Experiment
    from .fit import Fit, FitOptions
    from .ingestion import IngestReport, ingest
    from .plan import Plan, PlannedRun
    from .store import SCHEMA_VERSION, Database, open


__all__ = [
    "BadInputError",
    "ConvergenceWarning",
    "CorruptShardError",
    "Database",
    "DatabaseLockedError",
    "DmdbError",
    "DmdbWarning",
    "DuplicateRunError",
    "Experiment",
    "Fit",
    "FitOptions",
    "FitError",
    "IngestReport",
    "NoDatabaseError",
    "Plan",
    "PlannedRun",
    "ReadOnlyError",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "ScoresWarning",
    "UnknownExperimentError",
    "ingest",
    "open",
]
