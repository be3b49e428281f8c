"""Metadata of train examples and targets: a label and an optional payload (image, text, source id)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from .errors import BadInputError
from .interrupt import execute, fetchall
from .transaction import transaction

if TYPE_CHECKING:
    from .experiment import Experiment

# The two tables share one shape; the name is picked from this map, never from user text.
TABLES = {"train": "train_examples", "targets": "targets"}


def set_examples(
    exp: "Experiment",
    kind: str,
    labels: Sequence[int] | np.ndarray | None = None,
    images: np.ndarray | Sequence[np.ndarray] | None = None,
    texts: Sequence[str | None] | None = None,
    source_ids: Sequence[str | None] | None = None,
) -> None:
    """Replace the metadata of all train examples or all targets of an experiment in one transaction."""
    exp.db.require_writable()
    table = TABLES[kind]
    n = _count(exp, kind)
    cols: dict[str, pa.Array] = {"idx": pa.array(np.arange(n, dtype=np.int32))}
    cols["label"] = _column(labels, n, "labels", pa.int32())
    cols["text"] = _column(texts, n, "texts", pa.string())
    cols["source_id"] = _column(source_ids, n, "source_ids", pa.string())
    blobs, shapes, dtypes = _images(images, n)
    cols["image"], cols["image_shape"], cols["image_dtype"] = blobs, shapes, dtypes
    name = f"_dmdb_examples_{uuid.uuid4().hex}"
    con = exp.db.con
    try:
        with transaction(con):
            con.register(name, pa.table(cols))
            execute(con, f"DELETE FROM {table} WHERE experiment = ?", [exp.name])
            execute(
                con,
                f"""INSERT INTO {table} (experiment, idx, label, source_id, text, image, image_shape, image_dtype)
                    SELECT ?, idx, label, source_id, text, image, image_shape, image_dtype FROM {name}""",
                [exp.name],
            )
    finally:
        con.unregister(name)


def _count(exp: "Experiment", kind: str) -> int:
    return exp.n_train if kind == "train" else exp.n_targets


def _column(values: Any, n: int, what: str, typ: pa.DataType) -> pa.Array:
    if values is None:
        return pa.nulls(n, typ)
    values = list(values) if not isinstance(values, np.ndarray) else values
    if len(values) != n:
        raise BadInputError(f"{what} must have one entry per example ({n}), got {len(values)}")
    try:
        return pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
        raise BadInputError(f"{what} must be {typ} values: {e}") from e


def _images(images: Any, n: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    if images is None:
        return pa.nulls(n, pa.binary()), pa.nulls(n, pa.list_(pa.int32())), pa.nulls(n, pa.string())
    if len(images) != n:
        raise BadInputError(f"images must have one entry per example ({n}), got {len(images)}")
    arrays = [np.ascontiguousarray(im) for im in images]
    for i, im in enumerate(arrays):
        # bool, integers and floats of at most 8 bytes: the dtypes SQL's dmdb_image_values decodes
        if im.dtype.kind not in "biuf" or im.dtype.itemsize > 8 or im.ndim not in (2, 3):
            raise BadInputError(f"image {i} must be a 2-D (H, W) or 3-D (H, W, C) array of bool, integers or floats "
                                f"of at most 8 bytes, got {im.shape} {im.dtype}")
    return (
        pa.array([im.tobytes() for im in arrays], pa.binary()),
        pa.array([list(im.shape) for im in arrays], pa.list_(pa.int32())),
        pa.array([im.dtype.str for im in arrays], pa.string()),
    )


def examples_frame(exp: "Experiment", kind: str) -> pl.DataFrame:
    """idx, label, source_id, text and whether an image is stored, as a polars frame."""
    table = TABLES[kind]
    return exp.db.sql(
        f"SELECT idx, label, source_id, text, image_shape IS NOT NULL AS has_image FROM {table} "
        "WHERE experiment = ? ORDER BY idx",
        [exp.name],
    )


def image(exp: "Experiment", kind: str, idx: int) -> np.ndarray | None:
    """The stored image of one example as a numpy array, or None when it has none."""
    if kind not in TABLES:  # a bare KeyError: 'target' said nothing of the two kinds there are
        raise BadInputError(f"kind must be 'train' or 'targets', got {kind!r}")
    n = _count(exp, kind)
    if not 0 <= idx < n:  # else None, as for an example without an image
        what = "train example" if kind == "train" else "target"
        raise BadInputError(f"experiment {exp.name!r} has no {what} {idx} (it has {what}s 0-{n - 1})")
    table = TABLES[kind]
    rows = fetchall(
        exp.db.con,
        f"SELECT image, image_shape, image_dtype FROM {table} WHERE experiment = ? AND idx = ?", [exp.name, idx]
    )
    row = rows[0] if rows else None
    if row is None or row[0] is None:
        return None
    return np.frombuffer(row[0], dtype=np.dtype(row[2])).reshape(row[1])
