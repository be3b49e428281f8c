"""Import of the reference datamodels store: masks.npy (bool [M, N]), margins.npy (float16 [M, T]),
_completed.npy (bool [M]). Only completed rows come in; row i becomes run id first_run_id + i."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .batch import make_batch
from .errors import BadInputError, DmdbError, DuplicateRunError
from .interrupt import arrow_table
from .record import check_batch
from .validate import as_int

if TYPE_CHECKING:
    from .experiment import Experiment
    from .store import Database

CHUNK_BYTES = 256 * 2**20


def _load(directory: Path, name: str) -> np.ndarray:
    path = directory / f"{name}.npy"
    if not path.exists():
        raise DmdbError(f"{path} is missing: a reference store holds masks.npy, margins.npy and _completed.npy")
    try:
        _check_length(path)
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise DmdbError(f"{path} is not a readable .npy file: {e}") from e


def _check_length(path: Path) -> None:
    """Refuse a .npy file shorter than its header says (a copy cut short), naming both sizes:
    memory-mapping it fails with numpy's 'mmap length is greater than file size'."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        # version 3.0 differs from 2.0 only in allowing utf-8 field names in the header
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        data_start = f.tell()
    if dtype.hasobject:
        return  # pickled objects: np.load says it cannot memory-map them
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise DmdbError(f"{path} is truncated: its header promises a {dtype} array of shape {shape}, "
                        f"{expected:,} bytes in all, but the file has {actual:,} (was its copy cut short?)")


def import_npy(
    db: "Database",
    directory: str | Path,
    name: str,
    role: str = "fit",
    alpha: float | None = None,
    chunk_rows: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    first_run_id: int = 0,
) -> tuple["Experiment", int]:
    """Bring a reference store into experiment `name` (created if absent); returns it and the runs added.

    Row i becomes run id first_run_id + i: a second store (e.g. the holdout runs) goes into the
    same experiment under ids after the first's. Arrays are memory-mapped and read in chunks of
    `chunk_rows` rows (by default about 256 MB of masks), so memory stays bounded whatever M is.
    Each chunk is its own transaction, but everything that would stop the import (a non-finite
    margin, a run id recorded before with other data) is found before the first is written.
    Running it again adds nothing.
    """
    first_run_id = as_int(first_run_id, "first_run_id", 0)
    directory = Path(directory)
    masks = _load(directory, "masks")
    margins = _load(directory, "margins")
    completed = _load(directory, "_completed")
    if masks.ndim != 2 or margins.ndim != 2 or completed.ndim != 1:
        raise BadInputError(
            f"expected masks [M, N], margins [M, T], _completed [M]; got {masks.shape}, {margins.shape}, {completed.shape}"
        )
    m = masks.shape[0]
    if margins.shape[0] != m or completed.shape[0] != m:
        raise BadInputError(
            f"row counts differ: masks has {m}, margins {margins.shape[0]}, _completed {completed.shape[0]}"
        )
    if masks.dtype != np.bool_ or completed.dtype != np.bool_:
        raise BadInputError(f"masks and _completed must be bool arrays, got {masks.dtype} and {completed.dtype}")
    if not (np.issubdtype(margins.dtype, np.floating) or np.issubdtype(margins.dtype, np.integer)):
        raise BadInputError(f"margins must be a float array, got {margins.dtype}")
    if masks.shape[1] == 0 or margins.shape[1] == 0:
        raise BadInputError(f"masks and margins need at least one column, got {masks.shape} and {margins.shape}")
    done_rows = np.flatnonzero(np.asarray(completed))
    if len(done_rows) == 0:
        raise DmdbError(f"no completed rows in {directory / '_completed.npy'}: nothing to import")
    if first_run_id + m - 1 > np.iinfo(np.int64).max:
        raise BadInputError(f"first_run_id {first_run_id} + {m} rows goes beyond int64")
    rows = chunk_rows or max(1, CHUNK_BYTES // max(1, masks.shape[1]))
    _check_finite(margins, done_rows, rows)
    n_train = masks.shape[1]
    if name in db.experiments()["name"].to_list():  # more runs for it: its settings stand, its shape must match
        exp = db.experiment(name)
        if (exp.n_train, exp.n_targets) != (n_train, margins.shape[1]):
            raise BadInputError(
                f"experiment {name!r} has {exp.n_train} train examples and {exp.n_targets} targets; the store in "
                f"{directory} has {n_train} and {margins.shape[1]}: import it under another --name"
            )
        _check_clashes(exp, masks, margins, done_rows, first_run_id, role, rows)
    else:
        sample = np.asarray(masks[done_rows[:1000]])
        kept = sample.sum(axis=1)
        if alpha is None:
            alpha = round(float(kept.mean()) / n_train, 4)
            if not 0 < alpha < 1:  # the experiment's own check would name an alpha the user never gave
                raise BadInputError(
                    f"the masks in {directory / 'masks.npy'} keep {alpha:.0%} of the train examples on average, "
                    "so no subset fraction (alpha) can be estimated from them; give it with --alpha"
                )
        exp = db.create_experiment(
            name,
            n_train=n_train,
            n_targets=margins.shape[1],
            alpha=float(alpha),
            sampling="fixed" if kept.min() == kept.max() else "bernoulli",
            config={"imported_from": str(directory.resolve())},
        )
    added = 0
    if progress is not None:
        progress(0, len(done_rows))
    for start in range(0, len(done_rows), rows):
        ids = done_rows[start : start + rows]
        added += exp.record_batch(first_run_id + ids, np.asarray(masks[ids]), np.asarray(margins[ids], dtype=np.float32),
                                  role=role)
        if progress is not None:
            progress(min(start + rows, len(done_rows)), len(done_rows))
    return exp, added


def _check_clashes(exp: "Experiment", masks: np.ndarray, margins: np.ndarray, done_rows: np.ndarray,
                   first_run_id: int, role: str, rows: int) -> None:
    """The rows whose run ids the experiment has recorded or planned, checked as record_batch would
    check them, before any chunk is written (a clash in a late chunk left the earlier ones in)."""
    run_ids = first_run_id + done_rows
    lo, hi = int(run_ids.min()), int(run_ids.max())
    taken = arrow_table(
        exp.db.con, "SELECT run_id FROM runs WHERE experiment = ? AND run_id BETWEEN ? AND ?", [exp.name, lo, hi]
    )["run_id"].to_numpy()
    check = np.isin(run_ids, taken)
    for plan in exp.plans():
        check |= (run_ids >= plan.run_ids.start) & (run_ids < plan.run_ids.stop)
    sel = done_rows[check]
    for start in range(0, len(sel), rows):
        ids = sel[start : start + rows]
        try:
            check_batch(exp, make_batch(exp, first_run_id + ids, np.asarray(masks[ids]),
                                        np.asarray(margins[ids], dtype=np.float32), role))
        except DuplicateRunError as e:  # record_batch's advice: a store's rows cannot take other run ids one by one
            raise DuplicateRunError(
                e.situation,
                f"Nothing was imported; a second store of the experiment (its holdout runs, say) takes --first-run-id "
                f"(first_run_id= in Python) past the runs there are: {exp.next_run_id()} is free",
            ) from e


def _check_finite(margins: np.ndarray, done_rows: np.ndarray, rows: int) -> None:
    """A pass over the margins before anything is written, so a bad row aborts the import cleanly."""
    for start in range(0, len(done_rows), rows):
        ids = done_rows[start : start + rows]
        bad = ~np.isfinite(np.asarray(margins[ids], dtype=np.float32))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise BadInputError(
                f"margins.npy row {int(ids[r])} (marked completed) has a non-finite margin at target {int(c)}; "
                "nothing was imported"
            )
