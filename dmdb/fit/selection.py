"""Which runs and targets a fit uses: the SQL views of sql/20_fit_views.sql, narrowed by the user.

`where` narrows the fit pool and may be a boolean expression over the `runs` table's columns
(`run_id < 5000`, `worker = 'node-3'`), a SELECT query returning `run_id`, or the name of a
view or table with a `run_id` column. `targets` may be ids (`0-99,120`), a SELECT query or a
view/table returning a `target` column. Both are the user's own SQL against their own file
(as in the DuckDB shell); the experiment name is always a bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import duckdb
import numpy as np

from ..errors import BadInputError, FitError
from ..interrupt import fetchall

if TYPE_CHECKING:
    from ..experiment import Experiment

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_QUERY = re.compile(r"^\s*(select|with|from|values)\b", re.IGNORECASE)
_NEGATIVE = re.compile(r"^\s*-\s*\d")
_ID_LIST = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


@dataclass(frozen=True)
class Selection:
    """Run ids of each split (fit runs in their seeded shuffle order, the others sorted) and the
    sorted target ids of a fit."""

    fit: np.ndarray
    val: np.ndarray
    holdout: np.ndarray
    targets: np.ndarray
    runs_where: str | None
    targets_where: str | None

    def prefix(self, n_fit: int) -> "Selection":
        """The same split with only the first n_fit fit runs (in the shuffled split order)."""
        return Selection(self.fit[:n_fit], self.val, self.holdout, self.targets, self.runs_where, self.targets_where)


def _relation(spec: str, column: str) -> str:
    """SQL for a set of `column` values: a query as given, or a view/table by name."""
    # the column is qualified: a bare name would bind to an outer query's column when the
    # user's relation lacks it (--where 'SELECT 1' would then select every run)
    if _QUERY.match(spec):
        # the newline ends a trailing `-- comment` of the user's, which would otherwise hide the bracket
        return f"SELECT user_query.{column} FROM ({spec}\n) AS user_query"
    if _IDENT.match(spec):
        quoted = ".".join('"' + part.replace('"', '""') + '"' for part in spec.split("."))
        return f"SELECT user_query.{column} FROM {quoted} AS user_query"
    raise BadInputError(f"{spec!r} is neither a SELECT query nor a view or table name")


def _kind(spec: str) -> str:
    """What the user's SQL is meant to be, for its error messages."""
    if _QUERY.match(spec):
        return "a valid SQL query"
    if _IDENT.match(spec):
        return "a readable view or table"
    return "a valid SQL expression over runs columns"


def _check_parses(exp: "Experiment", what: str, spec: str) -> None:
    """Parse the user's SQL alone before dmdb wraps it in its own: a syntax error then names what
    they typed (not a bracket of dmdb's), and a fragment cannot close dmdb's brackets itself."""
    try:
        if _QUERY.match(spec):
            statements = exp.db.con.extract_statements(spec)
            if len(statements) != 1:
                raise BadInputError(f"{what} {spec!r} holds {len(statements)} SQL statements; give one query")
        elif not _IDENT.match(spec):
            duckdb.SQLExpression(spec)
    except duckdb.InvalidInputException as e:  # SQLExpression's word for a list such as `a < 1, b`
        raise BadInputError(f"{what} {spec!r} is not {_kind(spec)}: it is a comma-separated list; "
                            "join conditions with AND or OR") from e
    except duckdb.Error as e:
        raise BadInputError(f"{what} {spec!r} is not {_kind(spec)}: {str(e).splitlines()[0]}") from e


def _ids(exp: "Experiment", sql: str, params: Sequence[Any], what: str, spec: str | None) -> np.ndarray:
    if spec is not None:
        _check_parses(exp, what, spec)
    try:
        rows = fetchall(exp.db.con, sql, list(params))
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        if spec is None:  # the pool view alone failed: dropped, or a redefinition that no longer binds
            raise BadInputError(f"the view {what} cannot be read ({first}); redefine it, or restore the default of "
                                f"sql/20_fit_views.sql with `dmdb sql --write \"CREATE OR REPLACE VIEW {what} AS ...\"`") from e
        if "user_query" in first:
            column = "target" if what == "--targets" else "run_id"
            raise BadInputError(f"{what} {spec!r} must give a `{column}` column ({first})") from e
        raise BadInputError(f"{what} {spec!r} is not {_kind(spec)}: {first}") from e
    return np.unique(np.array([r[0] for r in rows if r[0] is not None], dtype=np.int64))


def fit_pool_ids(exp: "Experiment", where: str | None) -> np.ndarray:
    """Sorted run ids of fit_pool for this experiment, narrowed by `where`."""
    if where is not None and not isinstance(where, str):
        raise BadInputError(f"where must be SQL text (an expression over runs columns, a query or a view name), got {where!r}")
    sql = "SELECT run_id FROM fit_pool WHERE experiment = ?"
    params: list[Any] = [exp.name]
    if where is None or not where.strip():
        return _ids(exp, sql, params, "fit_pool", None)
    if _QUERY.match(where) or _IDENT.match(where):
        sql += f" AND run_id IN ({_relation(where, 'run_id')})"
    else:
        sql += f" AND run_id IN (SELECT run_id FROM runs WHERE experiment = ? AND ({where}\n))"
        params.append(exp.name)
    return _ids(exp, sql, params, "--where", where)


def holdout_ids(exp: "Experiment") -> np.ndarray:
    return _ids(exp, "SELECT run_id FROM holdout_pool WHERE experiment = ?", [exp.name], "holdout_pool", None)


def _id_ranges(spec: str) -> list[tuple[int, int]]:
    """'0-9,12' -> [(0, 9), (12, 12)], without expanding the ranges."""
    out: list[tuple[int, int]] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        a = int(lo)
        b = int(hi) if hi else a
        if b < a:
            raise BadInputError(f"range {part.strip()!r} in {spec!r} runs backwards")
        if b > np.iinfo(np.int64).max:
            raise BadInputError(f"id {b} in {spec!r} is beyond int64")
        out.append((a, b))
    return out


def _above(ranges: list[tuple[int, int]], below: int) -> list[tuple[int, int]]:
    """The parts of `ranges` at or above `below`, sorted and merged, without expanding them."""
    parts = sorted((max(a, below), b) for a, b in ranges if b >= below)
    merged: list[tuple[int, int]] = []
    for a, b in parts:
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _runs(ids: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique ids as (first, last) of each run of consecutive ids: [0..9, 12] -> [(0, 9), (12, 12)]."""
    a = np.unique(np.asarray(ids, dtype=np.int64))
    if a.size == 0:
        return []
    breaks = np.nonzero(np.diff(a) != 1)[0]
    return [(int(a[s]), int(a[e])) for s, e in zip(np.concatenate([[0], breaks + 1]), np.concatenate([breaks, [a.size - 1]]))]


def _ranges_text(ranges: list[tuple[int, int]], shown: int | None = 4) -> str:
    """'5-9,12', or for more than `shown` ranges the first `shown` of them and how many more:
    '5-9,12,14,16 and 3 more ranges' (None: all of them)."""
    text = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges[:shown])
    return text + (f" and {len(ranges) - shown} more ranges" if shown is not None and len(ranges) > shown else "")


def _name_ids(ranges: list[tuple[int, int]], what: tuple[str, str], problem: str) -> str:
    """A message naming the ids of `ranges` (sorted, merged): 'target 7 is not ...', or with their
    count '5 targets (5-9) are not ...'. `what` is the noun, singular and plural."""
    count = sum(b - a + 1 for a, b in ranges)
    if count == 1:
        return f"{what[0]} {ranges[0][0]} is {problem}"
    return f"{count} {what[1]} ({_ranges_text(ranges)}) are {problem}"


def parse_id_list(spec: str, below: int | None = None, what: tuple[str, str] = ("id", "ids"),
                  outside: str | None = None) -> np.ndarray:
    """'0-9,12' -> [0..9, 12] (ranges inclusive). With `below`, ids >= below are refused before
    the ranges are expanded (a typo such as 0-99999999999 would fill memory first), by a message
    naming them (`what`: the noun, singular and plural) as `outside` (default: outside 0..below-1)."""
    ranges = _id_ranges(spec)
    if below is not None and (bad := _above(ranges, below)):
        raise BadInputError(_name_ids(bad, what, outside or f"outside 0..{below - 1}"))
    return np.unique(np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in ranges]))


def format_id_list(ids: Sequence[int] | np.ndarray) -> str:
    """[0..9, 12] -> '0-9,12', the inverse of parse_id_list, so a fit records its targets compactly."""
    return _ranges_text(_runs(np.asarray(ids)), shown=None)


def target_ids(exp: "Experiment", targets: str | Sequence[int] | np.ndarray | None) -> np.ndarray:
    """Sorted target ids from target_pool, narrowed by `targets`."""
    pool = _ids(exp, "SELECT target FROM target_pool WHERE experiment = ?", [exp.name], "target_pool", None)
    everything = pool.size == exp.n_targets  # target_pool as sql/20_fit_views.sql defines it
    where = (f"not in experiment {exp.name!r} (it has targets 0-{exp.n_targets - 1})" if everything else
             f"not in the target_pool of experiment {exp.name!r} "
             + (f"(targets {_ranges_text(_runs(pool))})" if pool.size else "(it is empty)"))
    if targets is None:
        chosen = pool
    elif isinstance(targets, str):
        if _ID_LIST.match(targets):
            chosen = parse_id_list(targets, below=exp.n_targets, what=("target", "targets"), outside=where)
        elif _NEGATIVE.match(targets):
            raise BadInputError(f"target ids are >= 0, got {targets!r}")
        elif not (_QUERY.match(targets) or _IDENT.match(targets)):
            raise BadInputError(f"--targets {targets!r} is neither target ids like 0-99,120 nor a SELECT query "
                                "or a view name returning `target`")
        else:
            chosen = _ids(exp, _relation(targets, "target"), [], "--targets", targets)
    else:
        arr = np.asarray(targets)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise BadInputError("targets must be a 1-D sequence of integer target ids")
        chosen = np.unique(arr.astype(np.int64))
    outside = np.setdiff1d(chosen, pool)
    if outside.size:
        raise BadInputError(_name_ids(_runs(outside), ("target", "targets"), where))
    if chosen.size == 0:
        raise BadInputError(f"the target selection {targets!r} is empty")
    return chosen


def _n_val(pool: int, val_frac: float) -> int:
    return int(round(val_frac * pool))


def _splits(pool: int, val_frac: float) -> bool:
    """Whether a fit pool of this size gives at least 2 fit runs and 1 validation run."""
    return _n_val(pool, val_frac) >= 1 and pool - _n_val(pool, val_frac) >= 2


def min_fit_pool(val_frac: float) -> int:
    """The fewest fit-pool runs that split into 2 fit runs and 1 validation run at val_frac."""
    n = 3
    while not _splits(n, val_frac):
        n += 1
    return n


def select(
    exp: "Experiment",
    where: str | None,
    targets: str | Sequence[int] | np.ndarray | None,
    val_frac: float,
    split_seed: int,
) -> Selection:
    """Split the fit pool into fit and validation runs by a seeded shuffle; holdout from its own pool.

    The fit ids keep the shuffled order, so a prefix of them is a random subset (learning curve).
    """
    if not 0 < val_frac < 1:
        raise BadInputError(f"val_frac must be in (0, 1), got {val_frac}")
    pool = fit_pool_ids(exp, where)
    if isinstance(where, str) and not where.strip():
        where = None  # a blank --where narrows nothing: the fit records none
    n_val = _n_val(pool.size, val_frac)
    if not _splits(pool.size, val_frac):
        raise FitError(
            f"experiment {exp.name!r} has {pool.size} runs in its fit pool"
            + (f" matching {where!r}" if where else "")
            + f", which split into {pool.size - n_val} fit and {n_val} validation runs (val_frac={val_frac}); "
            f"a fit needs at least 2 fit runs and 1 validation run, so {min_fit_pool(val_frac)} runs at this "
            f"val_frac. {'Widen --where, or record' if where else 'Record'} more runs"
        )
    perm = np.random.default_rng(split_seed).permutation(pool.size)
    shuffled = pool[perm]
    return Selection(
        fit=shuffled[n_val:],
        val=np.sort(shuffled[:n_val]),
        holdout=holdout_ids(exp),
        targets=target_ids(exp, targets),
        runs_where=where,
        targets_where=None if targets is None else (targets if isinstance(targets, str) else format_id_list(targets)),
    )
