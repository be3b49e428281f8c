from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

import dmdb
from runs_util import random_runs, table_counts


def test_round_trip_bit_for_bit(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(50, 37, 5)
    margins[3, 2] = np.float32(1e-30)  # denormal-ish values survive too
    assert exp.record_batch(np.arange(50), masks, margins, role=["fit"] * 40 + ["holdout"] * 10) == 50
    np.testing.assert_array_equal(exp.masks(), masks)
    np.testing.assert_array_equal(exp.margins(), margins)
    assert exp.margins().dtype == np.float32 and exp.masks().dtype == bool
    np.testing.assert_array_equal(exp.masks(role="holdout"), masks[40:])
    np.testing.assert_array_equal(exp.margins(role="fit", runs=range(10, 20)), margins[10:20])
    np.testing.assert_array_equal(exp.masks(runs=[49, 2, 7]), masks[[2, 7, 49]])  # run id order
    np.testing.assert_array_equal(exp.run_ids(role=["holdout"]), np.arange(40, 50))
    mf = exp.masks_frame(role="fit")
    assert mf["run_id"].to_list() == list(range(40))
    np.testing.assert_array_equal(mf["mask"].to_numpy(), masks[:40])
    yf = exp.margins_frame(runs=range(45, 50))
    assert yf.schema["margins"] == pl.Array(pl.Float32, 5)
    np.testing.assert_array_equal(yf["margins"].to_numpy(), margins[45:])
    # ids asked for by name must all be there (runs=[5, 9999] gave 1 row, unalignable with the ids);
    # a range is a filter and takes what there is
    with pytest.raises(dmdb.BadInputError, match=r"experiment 'small' has no run 9999$"):
        exp.masks(runs=[5, 9999])
    with pytest.raises(dmdb.BadInputError, match=r"has no runs 2, 7 with role 'holdout'"):
        exp.margins(role="holdout", runs=[2, 7, 45])
    with pytest.raises(dmdb.BadInputError, match=r"experiment 'small' has no run 9999$"):
        exp.runs(runs=[5, 9999])  # README: runs=[ids] needs every id (runs() gave the 1 row there was)
    assert exp.runs(runs=[7, 5])["run_id"].to_list() == [5, 7]
    assert exp.run_ids(runs=range(45, 60)).tolist() == list(range(45, 50))


def test_sql_sees_the_same_bits_and_margins(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(8, 37, 5, seed=1)
    exp.record_batch(np.arange(8), masks, margins)
    got = exp.db.sql(
        "SELECT run_id, n_kept, bit_count(mask) AS bc, [get_bit(mask, i::INT) FOR i IN range(37)] AS bits "
        "FROM runs ORDER BY run_id"
    )
    np.testing.assert_array_equal(got["bits"].to_list(), masks.astype(int))
    np.testing.assert_array_equal(got["n_kept"], masks.sum(1))
    np.testing.assert_array_equal(got["bc"], masks.sum(1))
    long = exp.db.sql("SELECT run_id, target, margin FROM margins_long ORDER BY run_id, target")
    np.testing.assert_array_equal(long["margin"].to_numpy().reshape(8, 5), margins)
    assert long["target"].to_list()[:6] == [0, 1, 2, 3, 4, 0]
    assert long.schema["target"] == pl.Int32  # as fit_targets.target, so frames stack and join (it was Int64)
    # masks as bit strings, intervals (e.g. between two created_at) as text: DuckDB shell's forms
    # (polars refused intervals: "POLARS_IMPORT_INTERVAL_AS_STRUCT")
    row = exp.db.sql("SELECT mask, INTERVAL 90 MINUTE AS took, created_at - TIMESTAMP '2000-01-01' AS span "
                     "FROM runs WHERE run_id = 0").row(0, named=True)
    assert row["mask"][:37] == "".join("1" if b else "0" for b in masks[0]) and row["took"] == "01:30:00"
    assert isinstance(row["span"], str)
    # the same inside lists, structs and maps (Arrow carried the BIT's internal bytes, b"\x07...")
    nested = exp.db.sql("SELECT [mask] AS l, [mask]::BIT[1] AS a, {'m': mask, 'n': 1} AS s, "
                        "map([1], [INTERVAL 2 DAY]) AS m, [1, 2]::INT[2] AS ints FROM runs WHERE run_id = 0").row(0, named=True)
    assert nested["l"] == nested["a"] == f"[{row['mask']}]" and nested["s"] == f"{{'m': {row['mask']}, 'n': 1}}"
    assert nested["ints"] == [1, 2]
    assert nested["m"] == "{1=2 days}"


def test_plain_duckdb_reads_masks_as_the_readme_says(db: dmdb.Database, db_path: Path) -> None:
    """A user without dmdb: a read-only duckdb connection, the macros stored in the file."""
    exp = db.create_experiment("small", n_train=37, n_targets=5, alpha=0.5)  # 37: pad bits
    masks, margins = random_runs(6, 37, 5, seed=2)
    masks[0] = False  # an empty subset gives an empty list, not NULL
    exp.record_batch(np.arange(6), masks, margins)
    db.close()
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute("SELECT mask_indices(mask), mask::BLOB, margins[3] FROM runs ORDER BY run_id").fetchall()
    assert [r[0] for r in rows] == [np.flatnonzero(m).tolist() for m in masks]  # there was no way but get_bit per index
    assert [r[1] for r in rows] == [np.packbits(m).tobytes() for m in masks]
    np.testing.assert_array_equal([r[2] for r in rows], margins[:, 2])  # margins[t + 1] is target t


def test_metadata_columns(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(3, 37, 5)
    exp.record_batch([5, 6, 7], masks, margins, seeds=[1, 2, 3], worker="node-1", durations=[0.5, 0.6, 0.7],
                     infos=[{"removed": [1, 2]}, None, {"k": 3}])
    runs = exp.runs()
    assert runs["seed"].to_list() == [1, 2, 3] and runs["worker"].to_list() == ["node-1"] * 3
    assert runs["duration_s"].to_list() == [0.5, 0.6, 0.7]
    assert exp.db.sql("SELECT info->>'k' AS k FROM runs WHERE run_id = 7")["k"][0] == "3"


def test_identical_rerecord_is_a_noop(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(4, 37, 5)
    assert exp.record_batch(np.arange(4), masks, margins) == 4
    assert exp.record_batch(np.arange(4), masks, margins) == 0
    more, more_y = random_runs(2, 37, 5, seed=3)
    # a batch mixing known identical runs and new ones writes only the new ones
    assert exp.record_batch([2, 3, 4, 5], np.vstack([masks[2:], more]), np.vstack([margins[2:], more_y])) == 2
    assert exp.n_runs() == 6
    assert not exp.record(3, margins[3], mask=masks[3], role="fit")


BAD_CASES = [
    ("wrong mask length", lambda m, y: (m[:, :36], y), r"masks must have shape \(runs, n_train\) = \(4, 37\), got \(4, 36\)"),
    ("mask dtype", lambda m, y: (m.astype(np.uint8), y), "masks must have dtype bool"),
    ("margins length", lambda m, y: (m, y[:, :4]), r"margins must have shape \(runs, n_targets\) = \(4, 5\)"),
    ("nan margin", lambda m, y: (m, np.where(np.arange(5) == 2, np.nan, y)), "NaN at run row 0, target 2"),
    ("inf margin", lambda m, y: (m, np.where(np.arange(5) == 4, np.inf, y)), "inf"),
    ("float64 overflow", lambda m, y: (m, y.astype(np.float64) * 1e300), "non-finite"),
    ("string margins", lambda m, y: (m, y.astype(str)), "margins must be numbers"),
    ("masked margins", lambda m, y: (m, np.ma.masked_array(y, mask=y > 1.5)), "margins has masked entries"),
]


@pytest.mark.parametrize("name, mutate, match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_writes_nothing(exp: dmdb.Experiment, name: str, mutate, match: str) -> None:
    masks, margins = random_runs(4, 37, 5)
    exp.record_batch([100], masks[:1], margins[:1])
    before = table_counts(exp.db)
    m, y = mutate(masks, margins)
    with pytest.raises(dmdb.BadInputError, match=match):
        exp.record_batch(np.arange(4), m, y)
    assert table_counts(exp.db) == before


def test_bad_ids_and_roles(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(2, 37, 5)
    with pytest.raises(dmdb.BadInputError, match="appears more than once"):
        exp.record_batch([1, 1], masks, margins)
    with pytest.raises(dmdb.BadInputError, match=">= 0"):
        exp.record_batch([-1, 2], masks, margins)
    with pytest.raises(dmdb.BadInputError, match="integers"):
        exp.record_batch([1.5, 2.5], masks, margins)
    with pytest.raises(dmdb.BadInputError, match=r"must fit in int64 .* got 1180591620717411303424"):
        exp.record_batch([1, 2**70], masks, margins)  # numpy gives dtype object, which named nothing
    with pytest.raises(dmdb.BadInputError, match="role must be one of"):
        exp.record_batch([1, 2], masks, margins, role="validation")
    with pytest.raises(dmdb.BadInputError, match="1-D"):
        exp.record(1, margins, mask=masks[0], role="fit")
    # one run's lengths in its own terms (said 'margins must have shape (runs, n_targets) = (1, 5), got (1, 6)')
    with pytest.raises(dmdb.BadInputError, match=r"^margins of one run must hold one value per target \(5\), got 6$"):
        exp.record(1, np.zeros(6), mask=masks[0], role="fit")
    with pytest.raises(dmdb.BadInputError, match=r"^the mask of one run must hold one value per train example \(37\), got 36$"):
        exp.record(1, margins[0], mask=masks[0][:36], role="fit")
    with pytest.raises(dmdb.BadInputError, match=r"first: NaN at target 2$"):  # one run: no 'run row 0'
        exp.record(1, np.where(np.arange(5) == 2, np.nan, margins[0]), mask=masks[0], role="fit")
    assert exp.n_runs() == 0
    assert exp.record_batch(np.array([1, 2], dtype=object), masks, margins) == 2  # said 'must fit in int64, got 2'
    assert exp.run_ids().tolist() == [1, 2]


def test_empty_batch_records_nothing(exp: dmdb.Experiment) -> None:
    # plain empty lists have no dtype (numpy says float64) or shape: an empty batch is not bad input
    assert exp.record_batch([], [], []) == 0
    assert exp.record_batch(np.arange(0), np.zeros((0, 37), bool), np.zeros((0, 5), np.float32)) == 0
    with pytest.raises(dmdb.BadInputError, match="masks must have shape"):
        exp.record_batch([], np.zeros((1, 37), bool), [])
    with pytest.raises(dmdb.BadInputError, match=r"masks must have shape \(runs, n_train\) = \(0, 37\), got \(0, 36\)"):
        exp.record_batch([], np.zeros((0, 36), bool), [])  # rows of the wrong length, even none of them
    assert exp.n_runs() == 0


def test_conflicting_duplicate_rolls_back_whole_batch(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(6, 37, 5)
    exp.record_batch([3], masks[3:4], margins[3:4])
    before = table_counts(exp.db)
    changed = margins.copy()
    changed[3, 0] += 1.0
    with pytest.raises(dmdb.DuplicateRunError, match="run 3 .*different margins"):
        exp.record_batch(np.arange(6), masks, changed)
    assert table_counts(exp.db) == before
    flipped = masks.copy()
    flipped[3, 5] = ~flipped[3, 5]
    with pytest.raises(dmdb.DuplicateRunError, match="a different mask"):
        exp.record_batch([3], flipped[3:4], margins[3:4])
    with pytest.raises(dmdb.DuplicateRunError, match="role 'fit' vs 'holdout'"):
        exp.record_batch([3], masks[3:4], margins[3:4], role="holdout")
    np.testing.assert_array_equal(exp.margins(), margins[3:4])


def test_a_conflicting_duplicate_says_how_to_delete_the_recorded_run(exp: dmdb.Experiment) -> None:
    """'delete the old run first' named no way to; the advice, run as given, lets the new data in."""
    masks, margins = random_runs(2, 37, 5)
    exp.record_batch([0, 1], masks, margins)
    with pytest.raises(dmdb.DuplicateRunError) as e:
        exp.record_batch([1], masks[1:2], margins[1:2] + 1)
    advice = str(e.value).split("delete it first: ")[1]
    assert advice == "db.sql('DELETE FROM runs WHERE experiment = ? AND run_id = ?', ['small', 1])"
    eval(advice, {"db": exp.db})
    assert exp.missing() == [] and exp.run_ids().tolist() == [0]
    assert exp.record_batch([1], masks[1:2], margins[1:2] + 1) == 1
    np.testing.assert_array_equal(exp.margins(), (margins + [[0], [1]]).astype(np.float32))


def test_the_delete_advice_names_the_fits_that_used_the_run(exp: dmdb.Experiment) -> None:
    """Deleting a run leaves the fits that used it listing it (fit_runs): their weights and LDS came
    from the old data. The advice said nothing of it; now it names them (and stays as it was for a
    run no fit used)."""
    masks, margins = random_runs(61, 37, 5)
    exp.record_batch(np.arange(60), masks[:60], margins[:60], role=["fit"] * 50 + ["holdout"] * 10)
    first, other = exp.fit("ridge"), exp.db.create_experiment("other", n_train=37, n_targets=5, alpha=0.5)
    other.record_batch(np.arange(60), masks[:60], margins[:60], role=["fit"] * 50 + ["holdout"] * 10)
    other.fit("ridge")  # fit 2, of another experiment: its run 7 is not this run 7
    second = exp.fit("ridge")
    exp.record_batch([60], masks[60:], margins[60:])  # recorded after both fits
    used = first.runs()["run_id"].to_list()
    assert 7 in used and second.runs()["run_id"].to_list() == used
    delete = "db.sql('DELETE FROM runs WHERE experiment = ? AND run_id = ?', ['small', {}])"
    with pytest.raises(dmdb.DuplicateRunError) as e:
        exp.record_batch([7], masks[7:8], margins[7:8] + 1)
    assert str(e.value).split("delete it first: ")[1] == (
        delete.format(7) + f". Fits {first.fit_id}, {second.fit_id} used run 7: after the delete they still list it "
        "(fit.runs()), with weights and LDS made from the old data; fit again to use the new run")
    with pytest.raises(dmdb.DuplicateRunError) as e:
        exp.record_batch([60], masks[60:], margins[60:] + 1)
    assert str(e.value).split("delete it first: ")[1] == delete.format(60)
    # what the note says: the run deleted, the fits still list it; the fit overview is unchanged
    exp.db.sql("DELETE FROM runs WHERE experiment = ? AND run_id = ?", ["small", 7])
    assert first.runs()["run_id"].to_list() == used and 7 not in exp.run_ids().tolist()
    assert exp.db.fits()["n_fit_runs"].to_list() == [45, 45, 45]


def test_planned_runs_must_keep_their_mask_and_role(exp: dmdb.Experiment) -> None:
    plan = exp.plan(3, seed=0)
    run = plan.run(1)
    # the plan's seed named as such (the run's own training seed is another number), nothing said recorded
    with pytest.raises(dmdb.BadInputError, match=r"^run 1 is planned \(by exp\.plan\(\.\.\., seed=0, role='fit'\)\) "
                                                 r"with another mask than the one given: record the planned run's mask"):
        exp.record(1, np.zeros(5), mask=~run.mask, role="fit")
    with pytest.raises(dmdb.BadInputError, match=r"^run 1 is planned with role 'fit', not 'holdout'$"):
        exp.record(1, np.zeros(5), mask=run.mask, role="holdout")
    assert exp.n_runs() == 0
    assert exp.record(run, np.arange(5.0))
    assert exp.runs()["seed"].to_list() == [run.seed]


def test_unknown_experiment_via_api(db: dmdb.Database) -> None:
    with pytest.raises(dmdb.UnknownExperimentError):
        db.experiment("ghost").record_batch([0], np.zeros((1, 3), bool), np.zeros((1, 1)))


def test_torch_tensors_from_a_training_loop_are_taken(exp: dmdb.Experiment, tmp_path: Path) -> None:
    """Margins straight from a model (a tensor that requires grad; on a GPU in real use) and torch
    masks are recorded as their values, by record, record_batch and a worker's write_run."""
    torch = pytest.importorskip("torch")
    from dmdb import ingest
    from dmdb.shards import write_run

    plan = exp.plan(4, seed=0)
    runs = list(exp.pending(plan))
    w = torch.ones(5, requires_grad=True)
    ys = [w * float(i) for i in range(4)]
    assert exp.record(runs[0], margins=ys[0])
    assert exp.record_batch([runs[1].run_id], torch.from_numpy(runs[1].mask[None, :]), ys[1][None, :]) == 1
    write_run(tmp_path, exp.name, runs[2], ys[2])
    assert ingest(exp.db, tmp_path).runs_added == 1
    np.testing.assert_array_equal(exp.margins(), np.arange(3, dtype=np.float32)[:, None] * np.ones(5, np.float32))
    np.testing.assert_array_equal(exp.masks(), np.stack([r.mask for r in runs[:3]]))
    exp.db.create_experiment("other", n_train=37, n_targets=5)
    with pytest.raises(dmdb.BadInputError, match="planned for experiment 'small', not 'other'"):
        write_run(tmp_path, "other", runs[3], ys[3])
