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
    ReadOnlyError,
    SchemaVersionError,
    ScoresWarning,
    UnknownExperimentError,
)
from .experiment import Experiment
from .lazy import lazy_attributes
from .plan import Plan, PlannedRun
from .store import SCHEMA_VERSION, Database, open

# Fit and the subpackages below load torch: imported on first use (`dmdb.analyses.leakage(...)`
# works after a bare `import dmdb`), so `import dmdb` stays light for workers
_SUBPACKAGES = ("analyses", "demo", "fit", "regress", "scale")
__getattr__ = lazy_attributes(__name__, {"Fit": "fit", "FitOptions": "fit"} | {m: m for m in _SUBPACKAGES})


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
    "Plan",
    "PlannedRun",
    "ReadOnlyError",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "ScoresWarning",
    "UnknownExperimentError",
    "open",
]
