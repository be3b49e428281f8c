"""The labels of targets and train examples, for the analyses that show them beside their ids."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..interrupt import fetchall

if TYPE_CHECKING:
    from ..store import Database


def labels_of(db: "Database", experiment: str, table: str, idx: np.ndarray) -> list[int | None]:
    """Labels of examples (table is 'targets' or 'train_examples', never user text), None if unset."""
    assert table in ("targets", "train_examples")
    if len(idx) == 0:
        return []
    rows = fetchall(
        db.con,
        f"SELECT idx, label FROM {table} WHERE experiment = ? AND idx IN (SELECT unnest(?))",
        [experiment, [int(i) for i in idx]],
    )
    m = dict(rows)
    return [m.get(int(i)) for i in idx]
