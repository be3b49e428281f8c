"""The fast paths of recording and reading back: Arrow layouts of margins, the id-range dedupe shortcut."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import dmdb
from runs_util import random_runs, table_counts
from dmdb import readback
from dmdb.packing import PackedMasks, margins_from_arrow, margins_to_arrow, pack_masks, packed_to_arrow, unpack_masks


def test_margins_from_arrow_layouts() -> None:
    y = np.arange(24, dtype=np.float32).reshape(6, 4)
    lst = margins_to_arrow(y)
    fsl = margins_to_arrow(y, fixed=True)
    assert fsl.type == pa.list_(pa.float32(), 4) and lst.type == pa.list_(pa.float32())
    for col in (lst, fsl, pa.chunked_array([lst[:2], lst[2:]]), pa.chunked_array([fsl[:5], fsl[5:]])):
        np.testing.assert_array_equal(margins_from_arrow(col, 4), y)
    np.testing.assert_array_equal(margins_from_arrow(lst[3:5], 4), y[3:5])  # a slice: offsets start past 0
    np.testing.assert_array_equal(margins_from_arrow(fsl[1:3], 4), y[1:3])
    large = pa.LargeListArray.from_arrays(pa.array(np.arange(0, 28, 4, dtype=np.int64)), pa.array(y.reshape(-1)))
    np.testing.assert_array_equal(margins_from_arrow(large, 4), y)
    assert margins_from_arrow(pa.chunked_array([], pa.list_(pa.float32())), 4).shape == (0, 4)


def test_margins_from_arrow_rejects_ragged_and_null() -> None:
    ragged = pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match="must hold 2 values"):
        margins_from_arrow(ragged, 2)
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6, np.float32)), 3)
    with pytest.raises(ValueError, match="must hold 2 values, got 3"):
        margins_from_arrow(fsl, 2)
    with pytest.raises(ValueError, match="must not be null"):
        margins_from_arrow(pa.array([[1.0, 2.0], None], pa.list_(pa.float32())), 2)


def test_ids_in_range_but_not_recorded_are_new(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(6, 37, 5)
    assert exp.record_batch([2, 4], masks[[2, 4]], margins[[2, 4]]) == 2
    # 0..5 spans the recorded 2 and 4: those are identical and skipped, the rest written
    assert exp.record_batch(np.arange(6), masks, margins) == 4
    np.testing.assert_array_equal(exp.margins(), margins)
    np.testing.assert_array_equal(exp.masks(), masks)
    # the same ids in another experiment do not clash
    other = exp.db.create_experiment("other", n_train=37, n_targets=5)
    assert other.record_batch(np.arange(6), masks[::-1], margins[::-1]) == 6
    np.testing.assert_array_equal(other.margins(), margins[::-1])


def test_conflict_inside_range_rolls_back(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(5, 37, 5)
    exp.record_batch([1, 3], masks[[1, 3]], margins[[1, 3]])
    before = table_counts(exp.db)
    changed = margins.copy()
    changed[3, 4] = -changed[3, 4] - 1
    with pytest.raises(dmdb.DuplicateRunError, match="run 3 .*different margins"):
        exp.record_batch([0, 1, 2, 3, 4], masks, changed)
    assert table_counts(exp.db) == before


def test_ragged_margins_in_the_table_are_a_clear_error(exp: dmdb.Experiment) -> None:
    masks, margins = random_runs(3, 37, 5)
    exp.record_batch(np.arange(3), masks, margins)
    exp.db.con.execute("UPDATE runs SET margins = [1.0, 2.0] WHERE run_id = 1")
    with pytest.raises(dmdb.DmdbError, match="margins list whose length is not n_targets = 5"):
        exp.margins()
    np.testing.assert_array_equal(exp.margins(runs=[0, 2]), margins[[0, 2]])


def test_unpack_masks_in_any_chunking() -> None:
    masks, _ = random_runs(23, 37, 1, seed=3)
    col = packed_to_arrow(pack_masks(masks))
    chunked = pa.chunked_array([col[:5], col[5:6], col[6:]])
    for c in (col, chunked):
        np.testing.assert_array_equal(unpack_masks(c, 37), masks)
    assert unpack_masks(pa.chunked_array([], pa.binary(5)), 37).shape == (0, 37)


@pytest.mark.parametrize("block_bytes", [1, 7 * 24, 16 << 20])  # one row per block, a few rows, one block
def test_streamed_read_back_puts_every_run_in_its_row(
    exp: dmdb.Experiment, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """Runs recorded out of id order, in several batches, read in blocks of every size: bit for bit."""
    monkeypatch.setattr(readback, "_BLOCK_BYTES", block_bytes)
    masks, margins = random_runs(40, 37, 5, seed=2)
    ids = np.random.default_rng(1).permutation(40) * 3 + 7  # not contiguous either
    roles = np.where(ids % 2 == 0, "fit", "holdout")
    for part in np.array_split(np.arange(40), 3):
        exp.record_batch(ids[part], masks[part], margins[part], role=roles[part].tolist())
    by_id = np.argsort(ids)
    m, y = exp.masks_and_margins()
    np.testing.assert_array_equal(m, masks[by_id])
    np.testing.assert_array_equal(y, margins[by_id])
    np.testing.assert_array_equal(exp.masks(), masks[by_id])
    np.testing.assert_array_equal(exp.margins(), margins[by_id])
    np.testing.assert_array_equal(exp.run_ids(), ids[by_id])
    fit = by_id[roles[by_id] == "fit"]
    m, y = exp.masks_and_margins(role="fit")
    np.testing.assert_array_equal(m, masks[fit])
    np.testing.assert_array_equal(y, margins[fit])
    some = [int(ids[5]), int(ids[0]), int(ids[33])]
    pick = [int(np.flatnonzero(ids == r)[0]) for r in sorted(some)]
    np.testing.assert_array_equal(exp.masks(runs=some), masks[pick])
    np.testing.assert_array_equal(exp.margins_frame(runs=some)["margins"].to_numpy(), margins[pick])
    m, y = exp.masks_and_margins(runs=range(0, 7))  # selects nothing
    assert m.shape == (0, 37) and y.shape == (0, 5) and m.dtype == bool and y.dtype == np.float32
    # held packed (as the fit reads them): the same rows once unpacked, 8 examples a byte
    for kw, rows in (({}, by_id), ({"role": "fit"}, fit), ({"runs": some}, pick)):
        p, y = exp.masks_and_margins(packed=True, **kw)
        assert isinstance(p, PackedMasks) and p.shape == (len(rows), 37) and p.packed.shape == (len(rows), 5)
        np.testing.assert_array_equal(p[:], masks[rows])
        np.testing.assert_array_equal(y, margins[rows])
    p, _ = exp.masks_and_margins(runs=range(0, 7), packed=True)
    assert p.shape == (0, 37) and p[:].shape == (0, 37)


def test_packed_masks_unpack_the_rows_asked_for() -> None:
    masks, _ = random_runs(30, 13, 1, seed=5)  # 13 examples: the last byte is part padding
    p = PackedMasks(pack_masks(masks), 13)
    assert p.shape == (30, 13)
    np.testing.assert_array_equal(p[:], masks)
    np.testing.assert_array_equal(p[4:9], masks[4:9])
    idx = np.array([29, 0, 7, 7])
    np.testing.assert_array_equal(p[idx], masks[idx])
    assert p[idx].dtype == bool
    with pytest.raises(ValueError, match=r"\(runs, 3\) uint8"):
        PackedMasks(pack_masks(masks), 20)


@pytest.mark.parametrize(
    "write",
    [
        "DELETE FROM runs WHERE run_id = 1",
        "INSERT INTO runs BY NAME SELECT * REPLACE (run_id + 10 AS run_id) FROM runs WHERE run_id = 1",
    ],
)
def test_a_write_between_listing_and_streaming_is_detected(exp: dmdb.Experiment, write: str) -> None:
    """read_arrays lists run ids, then streams rows: a run written in between must not go unnoticed."""
    masks, margins = random_runs(3, 37, 5, seed=4)
    exp.record_batch(np.arange(3), masks, margins)
    con = exp.db.con

    class WriteAfterFirstQuery:
        def __init__(self) -> None:
            self.queries = 0

        def sql(self, *args: object, **kwargs: object) -> object:
            self.queries += 1
            if self.queries == 2:  # the id list is taken; a cursor of this process writes
                con.cursor().execute(write)
            return con.sql(*args, **kwargs)  # type: ignore[arg-type]

    exp.db.con = WriteAfterFirstQuery()  # type: ignore[assignment]
    try:
        with pytest.raises(dmdb.DmdbError, match="changed while they were read"):
            exp.masks()
    finally:
        exp.db.con = con
    ids = exp.run_ids()  # read again: consistent with what is there now
    np.testing.assert_array_equal(exp.masks(), masks[ids % 10])
