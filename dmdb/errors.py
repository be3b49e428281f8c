"""One exception family, so callers (and the CLI) can catch every dmdb problem at once. No imports:
the `dmdb` command loads this module before its Ctrl-C handler (dmdb/cli/__init__.py)."""


class DmdbError(Exception):
    """Base of every error dmdb raises on purpose; the message says what was wrong and what to do."""


class BadInputError(DmdbError, ValueError):
    """Arrays or arguments of the wrong shape, dtype or value; nothing was written."""


class UnknownExperimentError(DmdbError, KeyError):
    """The named experiment does not exist in this database."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AdvisedError(DmdbError):
    """An error told as two parts: `situation` says what is wrong, `advice` what to do, which a caller
    that knows better can replace."""

    def __init__(self, situation: str, advice: str) -> None:
        super().__init__(situation, advice)  # both in args: it pickles (from a worker process) whole
        self.situation, self.advice = situation, advice

    def __str__(self) -> str:
        return f"{self.situation}. {self.advice}"


class DuplicateRunError(AdvisedError):
    """A run id was recorded before with different data."""


class NoDatabaseError(DmdbError):
    """No database file at the path given to an open that does not create one (read-only, or a verb
    that only adds to a database)."""


class SchemaVersionError(DmdbError):
    """The database was written by a dmdb with a schema this version does not know."""


class DatabaseLockedError(AdvisedError):
    """Another process holds the database file open for writing. `situation` says who holds it and
    how, `advice` what to do."""


class CorruptShardError(DmdbError):
    """A shard file is unreadable, partial or inconsistent with its experiment."""


class ReadOnlyError(DmdbError):
    """A write was attempted through a read-only connection."""


class FitError(DmdbError):
    """A fit cannot be computed from the runs given (too few runs, bad data, no device)."""


class DmdbWarning(UserWarning):
    """Something about a result the user should know; the CLI prints these as one line each."""


class ConvergenceWarning(DmdbWarning):
    """Some targets of a fit stopped at max_iter before the solver's tolerance (see Fit.not_converged)."""


class ScoresWarning(DmdbWarning):
    """Imported scores of some targets run against their margins (see import_scores)."""
