from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dmdb
from runs_util import table_counts
from dmdb.npy_import import import_npy


def make_store(directory: Path, m: int = 60, n: int = 45, t: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((m, n), dtype=bool)
    for i in range(m):
        masks[i, rng.permutation(n)[: n // 3]] = True  # fixed-size subsets, alpha = 15/45
    margins = rng.standard_normal((m, t)).astype(np.float16)
    completed = rng.random(m) < 0.7
    margins[~completed] = np.nan  # unfinished rows hold garbage in the reference store
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "masks.npy", masks)
    np.save(directory / "margins.npy", margins)
    np.save(directory / "_completed.npy", completed)
    return masks, margins, completed


def test_imports_only_completed_rows_in_chunks(db: dmdb.Database, tmp_path: Path) -> None:
    masks, margins, completed = make_store(tmp_path / "store")
    seen: list[tuple[int, int]] = []
    exp, added = import_npy(db, tmp_path / "store", "ref", chunk_rows=8, progress=lambda d, t: seen.append((d, t)))
    rows = np.flatnonzero(completed)
    assert added == len(rows) and seen[0] == (0, len(rows))  # once the input is checked: the CLI's bar starts there
    assert len(seen) == 1 + -(-len(rows) // 8) and seen[-1] == (len(rows), len(rows))
    assert (exp.n_train, exp.n_targets, exp.sampling) == (45, 7, "fixed")
    assert exp.alpha == pytest.approx(1 / 3, abs=1e-4)
    np.testing.assert_array_equal(exp.run_ids(), rows)
    np.testing.assert_array_equal(exp.masks(), masks[rows])
    np.testing.assert_array_equal(exp.margins(), margins[rows].astype(np.float32))
    _, again = import_npy(db, tmp_path / "store", "ref")
    assert again == 0 and exp.n_runs() == len(rows)


def test_mismatched_rows_refused(db: dmdb.Database, tmp_path: Path) -> None:
    make_store(tmp_path)
    np.save(tmp_path / "_completed.npy", np.ones(59, bool))
    with pytest.raises(dmdb.BadInputError, match="row counts differ: masks has 60, margins 60, _completed 59"):
        import_npy(db, tmp_path, "ref")
    assert table_counts(db)["experiments"] == 0


def test_nan_in_completed_row_writes_nothing(db: dmdb.Database, tmp_path: Path) -> None:
    _, margins, completed = make_store(tmp_path)
    last = np.flatnonzero(completed)[-1]
    margins[last, 3] = np.nan
    np.save(tmp_path / "margins.npy", margins)
    with pytest.raises(dmdb.BadInputError, match=f"row {last} .* target 3"):
        import_npy(db, tmp_path, "ref", chunk_rows=4)
    assert table_counts(db)["runs"] == 0 and table_counts(db)["experiments"] == 0


def test_missing_file(db: dmdb.Database, tmp_path: Path) -> None:
    with pytest.raises(dmdb.DmdbError, match="masks.npy is missing"):
        import_npy(db, tmp_path, "ref")


def test_a_truncated_file_is_called_truncated(db: dmdb.Database, tmp_path: Path) -> None:
    """A copy cut short was 'not a readable .npy file: mmap length is greater than file size'."""
    _, margins, _ = make_store(tmp_path)
    path = tmp_path / "margins.npy"
    full = path.stat().st_size  # np.save writes the header and the data, nothing more
    with path.open("r+b") as f:
        f.truncate(full - 100)
    with pytest.raises(dmdb.DmdbError) as e:
        import_npy(db, tmp_path, "ref")
    assert str(e.value) == (f"{path} is truncated: its header promises a float16 array of shape {margins.shape}, "
                            f"{full:,} bytes in all, but the file has {full - 100:,} (was its copy cut short?)")
    assert table_counts(db)["experiments"] == 0


def test_a_grown_store_adds_to_its_experiment(db: dmdb.Database, tmp_path: Path) -> None:
    """Re-importing the store after more rows completed adds them under the experiment's own settings
    (with Bernoulli masks the new rows changed the estimated alpha, and the import was refused as
    'already exists'); a store of another shape is refused by name."""
    rng = np.random.default_rng(5)
    masks = rng.random((40, 30)) < 0.5
    margins = rng.standard_normal((40, 4)).astype(np.float16)
    completed = np.arange(40) % 3 != 0
    for name, arr in (("masks", masks), ("margins", margins), ("_completed", completed)):
        np.save(tmp_path / f"{name}.npy", arr)
    exp, first = import_npy(db, tmp_path, "ref")
    assert exp.sampling == "bernoulli" and first == completed.sum()
    np.save(tmp_path / "_completed.npy", np.ones(40, bool))
    exp, more = import_npy(db, tmp_path, "ref")
    assert more == 40 - first and exp.n_runs() == 40
    np.testing.assert_array_equal(exp.masks(), masks)
    make_store(tmp_path / "other", n=31)
    with pytest.raises(dmdb.BadInputError, match="'ref' has 30 train examples and 4 targets; the store in .* has 31 and 7"):
        import_npy(db, tmp_path / "other", "ref")


def test_a_holdout_store_joins_its_experiment_after_the_fit_ids(db: dmdb.Database, tmp_path: Path) -> None:
    """The reference data keeps fit and holdout runs in separate stores; row i was always run id i,
    so the second store clashed with the first ('already recorded with other data')."""
    masks, margins, completed = make_store(tmp_path / "fit")
    h_masks, h_margins, h_completed = make_store(tmp_path / "holdout", m=20, seed=1)
    import_npy(db, tmp_path / "fit", "ref")
    free = int(np.flatnonzero(completed).max()) + 1  # the fit store's row i is run i
    with pytest.raises(dmdb.DuplicateRunError, match=r"run \d+ of experiment 'ref' was already recorded with other data "
                                                     r"\(role 'fit' vs 'holdout'.*\)\. Nothing was imported; a second store "
                                                     r".* takes --first-run-id \(first_run_id= in Python\) past the runs "
                                                     rf"there are: {free} is free$"):
        import_npy(db, tmp_path / "holdout", "ref", role="holdout")
    exp, added = import_npy(db, tmp_path / "holdout", "ref", role="holdout", first_run_id=1000)
    rows = np.flatnonzero(h_completed)
    assert added == len(rows)
    np.testing.assert_array_equal(exp.run_ids("holdout"), 1000 + rows)
    np.testing.assert_array_equal(exp.masks("holdout"), h_masks[rows])
    np.testing.assert_array_equal(exp.margins("holdout"), h_margins[rows].astype(np.float32))
    np.testing.assert_array_equal(exp.run_ids("fit"), np.flatnonzero(completed))


def test_a_clash_in_a_late_chunk_writes_no_chunk(db: dmdb.Database, tmp_path: Path) -> None:
    """Each chunk is a transaction: a run id recorded before with other data, met in the last
    chunk, left the earlier chunks imported while the message said nothing was written."""
    masks, margins, completed = make_store(tmp_path)
    rows = np.flatnonzero(completed)
    exp = db.create_experiment("ref", n_train=45, n_targets=7, alpha=1 / 3)
    exp.record_batch([rows[-1]], ~masks[rows[-1:]], margins[rows[-1:]].astype(np.float32))
    before = table_counts(db)
    with pytest.raises(dmdb.DuplicateRunError, match=rf"run {rows[-1]} .*\(a different mask\)"):
        import_npy(db, tmp_path, "ref", chunk_rows=4)
    assert table_counts(db) == before


def test_cli_first_run_id(tmp_path: Path) -> None:
    from dmdb.cli import main

    _, _, completed = make_store(tmp_path / "store")
    path = str(tmp_path / "x.duckdb")
    assert main(["import-npy", str(tmp_path / "store"), "--name", "ref", "--role", "holdout", "--first-run-id", "500",
                 "--db", path, "-q"]) == 0
    with dmdb.open(path, read_only=True) as db:
        np.testing.assert_array_equal(db.experiment("ref").run_ids("holdout"), 500 + np.flatnonzero(completed))


def test_masks_that_keep_everything_ask_for_alpha(db: dmdb.Database, tmp_path: Path) -> None:
    for name, arr in (("masks", np.ones((5, 8), bool)), ("margins", np.zeros((5, 2), np.float16)),
                      ("_completed", np.ones(5, bool))):
        np.save(tmp_path / f"{name}.npy", arr)
    with pytest.raises(dmdb.BadInputError, match="keep 100% of the train examples .* give it with --alpha"):
        import_npy(db, tmp_path, "ref")  # was "alpha ... must be in (0, 1), got 1.0", an alpha nobody gave
    exp, added = import_npy(db, tmp_path, "ref", alpha=0.5)
    assert added == 5 and exp.alpha == 0.5
