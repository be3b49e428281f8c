"""Bad input, fuzzed: record_batch, ingest and import_npy get wrong shapes, dtypes, NaN/inf, empty
arrays, huge ids, torn or garbage files. Every case either succeeds with exactly the data given,
or raises a DmdbError subclass (never a raw numpy/pyarrow/duckdb error) and leaves the database
unchanged. Examples per test: 100 by default, 1,000 with DMDB_STRESS=1.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dmdb
import reliability_procs as rp
from dmdb import ingest
from dmdb.npy_import import import_npy
from dmdb.shards import write_shard

N, T = 37, 5
FUZZ = settings(
    max_examples=rp.iterations(100, 1000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not rp.STRESS,
    database=None,  # no example store in the checkout: failures print their reproducing example
)
_ids = itertools.count(1000, 100)


def fingerprint(db: dmdb.Database) -> tuple[Any, ...]:
    """Everything recording, ingest and import may touch, reduced to comparable numbers."""
    return (
        db.con.execute("SELECT count(*), coalesce(sum(hash(name, n_train, n_targets, alpha, sampling)), 0) FROM experiments").fetchall()[0],
        db.con.execute(
            "SELECT count(*), coalesce(sum(hash(experiment, run_id, role, mask::VARCHAR, margins::VARCHAR, seed, "
            "worker, info::VARCHAR)), 0) FROM runs"
        ).fetchall()[0],
        db.con.execute("SELECT count(*) FROM ingested_shards").fetchall()[0],
        db.con.execute("SELECT count(*) FROM plans").fetchall()[0],
    )


@pytest.fixture(scope="module")
def fdb() -> Iterator[dmdb.Database]:
    with tempfile.TemporaryDirectory() as d, dmdb.open(Path(d) / "fuzz.duckdb") as db:
        exp = db.create_experiment("fz", N, T, alpha=0.5)
        exp.plan(50, seed=0)  # run ids 0..49 are planned: other masks for them must be refused
        yield db


# -- record_batch --------------------------------------------------------------------------------
def _ids_strategy(k: int) -> st.SearchStrategy[Any]:
    base = next(_ids)
    return st.one_of(
        st.just(np.arange(base, base + k)),
        st.just(np.arange(k, dtype=np.uint64) + np.uint64(2**63)),  # beyond int64
        st.just([2**64 + 5] * min(k, 1) + list(range(base, base + k - 1))),  # beyond uint64 too
        st.just(np.arange(base, base + k) + 2**62),  # huge but valid
        st.just(np.arange(k) - 3),
        st.just(np.arange(k, dtype=float) + base + 0.5),
        st.just(np.full(k, base)),  # duplicates
        st.just(np.arange(base, base + k).reshape(-1, 1)),
        st.just([str(i) for i in range(base, base + k)]),
        st.just([None] * k),
        st.just(np.arange(k)),  # planned ids, random masks: refused
        st.just(np.array([], dtype=np.int64)),
        st.just(np.ones(k, dtype=bool)),
    )


def _masks_strategy(k: int) -> st.SearchStrategy[Any]:
    rng = np.random.default_rng(k)
    good = rng.random((k, N)) < 0.5
    return st.one_of(
        st.just(good),
        st.just(good.astype(np.int8)),
        st.just(good.astype(float)),
        st.just(good[:, :-1]),
        st.just(good[:0]),
        st.just(good.T),
        st.just(good[None]),
        st.just([list(r) for r in good[:, : N - 1]] + [[True] * N] if k > 1 else [[True]]),  # ragged
        st.just(np.array([["x"] * N] * k)),
        st.just(np.empty((0,), dtype=bool)),
    )


def _margins_strategy(k: int) -> st.SearchStrategy[Any]:
    rng = np.random.default_rng(k + 1)
    good = rng.standard_normal((k, T)).astype(np.float32)

    def poke(value: float) -> np.ndarray:
        y = good.astype(np.float64)
        if y.size:
            y[rng.integers(k), rng.integers(T)] = value
        return y

    return st.one_of(
        st.just(good),
        st.just(good.astype(np.float16)),
        st.just(good.astype(np.float64)),
        st.just((good * 10).astype(np.int32)),
        st.just(poke(np.nan)),
        st.just(poke(np.inf)),
        st.just(poke(-np.inf)),
        st.just(poke(1e300)),  # finite in float64, inf in float32
        st.just(good.astype(np.complex64)),
        st.just(good.astype(str)),
        st.just(good[:, :-1]),
        st.just(good.reshape(-1)),
        st.just([list(r) for r in good[:, :-1]] + [[0.0] * T] if k > 1 else [[0.0]]),  # ragged
        st.just(np.where(good > 0, None, 1.0)),
        st.just(np.empty((k, 0), dtype=np.float32)),
    )


@st.composite
def record_args(draw: st.DrawFn) -> dict[str, Any]:
    k = draw(st.integers(0, 6))
    return {
        "run_ids": draw(_ids_strategy(k)),
        "masks": draw(_masks_strategy(k)),
        "margins": draw(_margins_strategy(k)),
        "role": draw(st.one_of(st.sampled_from(["fit", "holdout", "bogus", ""]), st.just(["fit"] * k), st.just(["fit"] * (k + 1)), st.just(3))),
        "seeds": draw(st.one_of(st.none(), st.just(list(range(k))), st.just([2**70] * k), st.just(["s"] * k), st.just([1.5] * k), st.just(list(range(k + 1))))),
        "worker": draw(st.one_of(st.none(), st.just("w1"), st.just(["a", "b"]))),
        "durations": draw(st.one_of(st.none(), st.just([0.5] * k), st.just(["slow"] * k), st.just([np.nan] * k))),
        "infos": draw(st.one_of(st.none(), st.just([{"lr": 0.1}] * k), st.just([{"lr": float("nan")}] * k), st.just([{"o": object()}] * k), st.just([{"s": {1, 2}}] * k), st.just([{}] * (k + 1)))),
    }


@FUZZ
@given(args=record_args())
def test_record_batch_fuzzed(fdb: dmdb.Database, args: dict[str, Any]) -> None:
    exp = fdb.experiment("fz")
    before = fingerprint(fdb)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a silent lossy cast (complex -> float) must not pass
            added = exp.record_batch(**args)
    except dmdb.DmdbError:
        assert fingerprint(fdb) == before
        return
    ids = np.asarray(args["run_ids"], dtype=np.int64)
    assert added == len(ids)
    np.testing.assert_array_equal(exp.masks(runs=ids.tolist()), np.asarray(args["masks"])[np.argsort(ids)])
    np.testing.assert_array_equal(
        exp.margins(runs=ids.tolist()), np.asarray(args["margins"], dtype=np.float32)[np.argsort(ids)]
    )


# -- ingest --------------------------------------------------------------------------------------
def _good_shard(directory: Path, base: int, k: int) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(base)
    masks = rng.random((k, N)) < 0.5
    margins = rng.standard_normal((k, T)).astype(np.float32)
    return write_shard(directory, "fz", np.arange(base, base + k), masks, margins, infos=[{"i": i} for i in range(k)]), masks, margins


COLUMNS = ["run_id", "role", "mask", "n_kept", "margins", "seed", "worker", "duration_s", "info"]
CHANGES = ["drop column", "mask width", "mask as ints", "margins length", "margins nan", "margins null",
           "margins strings", "negative ids", "null ids", "string ids", "bad role", "bad info", "meta", "no meta"]


def _rewrite(path: Path, change: str, detail: int) -> None:
    """Rewrite a valid shard's table with one thing wrong inside an otherwise valid Parquet file."""
    t = pq.read_table(path)
    meta = json.loads(t.schema.metadata[b"dmdb"])
    k = t.num_rows
    if change == "drop column":
        t = t.drop_columns([COLUMNS[detail % len(COLUMNS)]])
    elif change == "mask width":
        t = t.set_column(t.column_names.index("mask"), "mask", pa.array([b"\x00" * 3] * k, pa.binary(3)))
    elif change == "mask as ints":
        t = t.set_column(t.column_names.index("mask"), "mask", pa.array(range(k), pa.int64()))
    elif change == "margins length":
        t = t.set_column(t.column_names.index("margins"), "margins", pa.array([[1.0] * (T + 1)] * k, pa.list_(pa.float32())))
    elif change == "margins nan":
        t = t.set_column(t.column_names.index("margins"), "margins", pa.array([[float("nan")] * T] * k, pa.list_(pa.float32())))
    elif change == "margins null":
        t = t.set_column(t.column_names.index("margins"), "margins", pa.array([None] * k, pa.list_(pa.float32())))
    elif change == "margins strings":
        t = t.set_column(t.column_names.index("margins"), "margins", pa.array([["a"] * T] * k, pa.list_(pa.string())))
    elif change == "negative ids":
        t = t.set_column(0, "run_id", pa.array([-1 - i for i in range(k)], pa.int64()))
    elif change == "null ids":
        t = t.set_column(0, "run_id", pa.array([None] * k, pa.int64()))
    elif change == "string ids":
        t = t.set_column(0, "run_id", pa.array([str(i) for i in range(k)], pa.string()))
    elif change == "bad role":
        t = t.set_column(1, "role", pa.array(["train"] * k, pa.string()))
    elif change == "bad info":
        t = t.set_column(t.column_names.index("info"), "info", pa.array(["{not json"] * k, pa.string()))
    elif change == "meta":
        bad = (["not json", json.dumps({"version": "1"}), json.dumps({**meta, "n_train": N + 1}),
                                    json.dumps({**meta, "n_runs": k + 1}), json.dumps({**meta, "experiment": "nope"}),
                                    json.dumps({**meta, "experiment": 5}), json.dumps([1, 2]), json.dumps({**meta, "n_runs": "x"})])[detail % 8]
        t = t.replace_schema_metadata({b"dmdb": bad.encode()})
    elif change == "no meta":
        t = t.replace_schema_metadata(None)
    if change != "meta" and change != "no meta":
        t = t.replace_schema_metadata({b"dmdb": json.dumps(meta).encode()})
    pq.write_table(t, path)


@st.composite
def shard_damage(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["truncate", "flip", "garbage", "empty", "rewrite"]))
    if kind == "rewrite":
        return kind, (draw(st.sampled_from(CHANGES)), draw(st.integers(0, 71)))
    if kind == "garbage":
        return kind, draw(st.binary(min_size=1, max_size=2000))
    # positions as fractions of the file, so the draw does not depend on the file's length
    return kind, draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4))


@FUZZ
@given(damage=shard_damage(), k=st.integers(1, 4))
def test_ingest_fuzzed_shards(fdb: dmdb.Database, damage: tuple[str, Any], k: int) -> None:
    exp = fdb.experiment("fz")
    kind, how = damage
    with tempfile.TemporaryDirectory() as d:
        base = next(_ids)
        path, masks, margins = _good_shard(Path(d), base, k)
        raw = path.read_bytes()
        if kind == "truncate":
            path.write_bytes(raw[: int(how[0][0] * len(raw))])
        elif kind == "flip":
            b = bytearray(raw)
            for frac, bits in how:
                b[int(frac * len(raw))] ^= bits
            path.write_bytes(bytes(b))
        elif kind == "garbage":
            path.write_bytes(how)
        elif kind == "empty":
            path.write_bytes(b"")
        else:
            _rewrite(path, *how)
        before = fingerprint(fdb)
        report = ingest(fdb, d)
    if report.bad:
        assert [name for name, _ in report.bad] == [path.name]
        assert fingerprint(fdb) == before
    else:  # the damage was harmless: the shard must have come in with exactly its original data
        assert report.files_ingested == 1
        ids = list(range(base, base + k))
        np.testing.assert_array_equal(exp.masks(runs=ids), masks)
        np.testing.assert_array_equal(exp.margins(runs=ids), margins)


# -- import_npy ----------------------------------------------------------------------------------
M = 8
MASK_VARIANTS = ["good", "int8", "float", "1-D", "3-D", "more rows", "no columns", "no rows", "garbage", "empty file", "missing", "object"]
MARGIN_VARIANTS = ["good", "float32", "float64", "int32", "complex", "strings", "nan", "inf", "more rows", "no columns",
                   "1-D", "garbage", "missing", "object"]
COMPLETED_VARIANTS = ["good", "ints", "none done", "more rows", "2-D", "garbage", "missing"]


def _save(path: Path, variant: str, good: np.ndarray, rng: np.random.Generator) -> None:
    if variant == "missing":
        return
    if variant == "garbage":
        path.write_bytes(b"\x93NUMPY" + rng.bytes(40))
    elif variant == "empty file":
        path.write_bytes(b"")
    elif variant == "object":
        np.save(path, good.astype(object), allow_pickle=True)
    else:
        np.save(path, good)


def _variant(variant: str, good: np.ndarray, completed: np.ndarray) -> np.ndarray:
    if variant in ("nan", "inf"):
        out = good.copy()
        out[np.flatnonzero(completed)[0], 1] = np.nan if variant == "nan" else np.inf
        return out
    make: dict[str, Any] = {
        "int8": lambda: good.astype(np.int8), "float": lambda: good.astype(float), "float32": lambda: good.astype(np.float32),
        "float64": lambda: good.astype(np.float64), "int32": lambda: (good * 10).astype(np.int32),
        "complex": lambda: good.astype(np.complex64), "strings": lambda: good.astype(str), "1-D": lambda: good[:, 0],
        "3-D": lambda: good[None], "more rows": lambda: np.concatenate([good, good[:1]]), "no columns": lambda: good[:, :0],
        "no rows": lambda: good[:0], "ints": lambda: good.astype(np.int64), "none done": lambda: np.zeros_like(good),
        "2-D": lambda: good[:, None],
    }
    return make[variant]() if variant in make else good


@FUZZ
@given(
    mv=st.sampled_from(MASK_VARIANTS), yv=st.sampled_from(MARGIN_VARIANTS), cv=st.sampled_from(COMPLETED_VARIANTS),
    existing=st.booleans(), seed=st.integers(0, 2**16),
)
def test_import_npy_fuzzed(fdb: dmdb.Database, mv: str, yv: str, cv: str, existing: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = rng.random((M, N + 3)) < 0.5
    margins = rng.standard_normal((M, T)).astype(np.float16)
    completed = np.arange(M) % 3 != 1
    name = "fz" if existing else f"npy{next(_ids)}"  # 'fz' exists with another shape: refused
    with tempfile.TemporaryDirectory() as d:
        _save(Path(d) / "masks.npy", mv, _variant(mv, masks, completed), rng)
        _save(Path(d) / "margins.npy", yv, _variant(yv, margins, completed), rng)
        _save(Path(d) / "_completed.npy", cv, _variant(cv, completed, completed), rng)
        before = fingerprint(fdb)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                exp, added = import_npy(fdb, d, name)
        except dmdb.DmdbError:
            assert fingerprint(fdb) == before
            return
    done = np.flatnonzero(_variant(cv, completed, completed).astype(bool))
    assert added == len(done)
    np.testing.assert_array_equal(exp.run_ids(), done)
    np.testing.assert_array_equal(exp.masks(), _variant(mv, masks, completed)[done])
    np.testing.assert_array_equal(exp.margins(), _variant(yv, margins, completed)[done].astype(np.float32))


def test_single_byte_flips_never_ingest_wrong_data(fdb: dmdb.Database) -> None:
    """Each of 100 (DMDB_STRESS: 1,000) shards gets one flipped byte anywhere; without Parquet page
    checksums about 4% of them were ingested with silently changed masks or margins."""
    exp = fdb.experiment("fz")
    rnd = np.random.default_rng(5)
    outcomes = {"reported": 0, "harmless": 0}
    for _ in range(rp.iterations(100, 1000)):
        with tempfile.TemporaryDirectory() as d:
            base = next(_ids)
            path, masks, margins = _good_shard(Path(d), base, 3)
            b = bytearray(path.read_bytes())
            b[int(rnd.integers(len(b)))] ^= int(rnd.integers(1, 256))
            path.write_bytes(bytes(b))
            before = fingerprint(fdb)
            report = ingest(fdb, d)
        if report.bad:
            assert fingerprint(fdb) == before
            outcomes["reported"] += 1
        else:
            np.testing.assert_array_equal(exp.masks(runs=range(base, base + 3)), masks)
            np.testing.assert_array_equal(exp.margins(runs=range(base, base + 3)), margins)
            outcomes["harmless"] += 1
    print(f"[reliability] single-byte flips: {outcomes}, none ingested changed data")
    assert outcomes["reported"] > outcomes["harmless"]
