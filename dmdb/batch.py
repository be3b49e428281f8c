"""A batch of runs built from user arrays and validated against an experiment's shape, and its
Arrow form (the shape of the runs table and of shard files). No database: workers build batches too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import pyarrow as pa

from .packing import count_kept, margins_to_arrow, pack_masks, packed_to_arrow
from .validate import as_infos, as_margins, as_masks, as_optional_column, as_roles, as_run_ids


class Shape(Protocol):
    """What a batch is checked against: an Experiment, or a worker's copy of its shape."""

    @property
    def n_train(self) -> int: ...

    @property
    def n_targets(self) -> int: ...


@dataclass(frozen=True)
class RunBatch:
    """A validated batch of runs of one experiment, ready to insert."""

    run_ids: np.ndarray  # int64 (R,)
    roles: np.ndarray  # str (R,)
    masks: np.ndarray  # bool (R, N)
    margins: np.ndarray  # float32 (R, T)
    seeds: np.ndarray | None
    workers: np.ndarray | None
    durations: np.ndarray | None
    infos: list[str | None] | None

    def __len__(self) -> int:
        return len(self.run_ids)

    def take(self, rows: np.ndarray) -> "RunBatch":
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return RunBatch(
            self.run_ids[rows],
            self.roles[rows],
            self.masks[rows],
            self.margins[rows],
            pick(self.seeds),
            pick(self.workers),
            pick(self.durations),
            None if self.infos is None else [self.infos[i] for i in rows],
        )

    @property
    def layout(self) -> tuple[bool, bool, bool, bool]:
        """Which optional columns (seeds, workers, durations, infos) it has: batches of one layout concatenate."""
        return (self.seeds is not None, self.workers is not None, self.durations is not None, self.infos is not None)

    @property
    def nbytes(self) -> int:
        """Bytes its masks and margins take in memory."""
        return self.masks.nbytes + self.margins.nbytes


def concat(batches: Sequence[RunBatch]) -> RunBatch:
    """The runs of several batches (at least one, all of one layout) as one batch, in order. It does not
    check that their run ids are distinct: make_batch checked each batch's own, the caller the rest."""
    if len({b.layout for b in batches}) != 1:
        raise ValueError("only batches with the same optional columns concatenate")

    def cat(a: Sequence[np.ndarray | None]) -> np.ndarray | None:
        return None if a[0] is None else np.concatenate(a)  # type: ignore[arg-type]

    first = batches[0]
    return RunBatch(
        np.concatenate([b.run_ids for b in batches]),
        np.concatenate([b.roles for b in batches]),
        np.concatenate([b.masks for b in batches]),
        np.concatenate([b.margins for b in batches]),
        cat([b.seeds for b in batches]),
        cat([b.workers for b in batches]),
        cat([b.durations for b in batches]),
        None if first.infos is None else [i for b in batches for i in b.infos],  # type: ignore[union-attr]
    )


def make_batch(
    exp: Shape,
    run_ids: Any,
    masks: Any,
    margins: Any,
    role: str | Sequence[str],
    seeds: Any = None,
    worker: Any = None,
    durations: Any = None,
    infos: Sequence[dict[str, Any] | None] | None = None,
) -> RunBatch:
    """Validate user arrays against the experiment's shape; raises BadInputError naming the problem."""
    ids = as_run_ids(run_ids)
    r = len(ids)
    m = as_masks(masks, r, exp.n_train)
    y = as_margins(margins, r, exp.n_targets)
    roles = as_roles(role, r)
    info_json = None if infos is None else as_infos(infos, r)
    return RunBatch(
        ids,
        roles,
        m,
        y,
        as_optional_column(seeds, r, "seeds", np.int64),
        as_optional_column(worker, r, "worker", str),
        as_optional_column(durations, r, "durations", np.float64),
        info_json,
    )


def batch_table(b: RunBatch, fixed_margins: bool = False) -> pa.Table:
    """The batch as an Arrow table with packed masks: the shape of the runs table and of shard files.
    `fixed_margins`: margins as fixed_size_list (faster to insert; see margins_to_arrow)."""
    r = len(b)
    packed = pack_masks(b.masks)

    def col(a: np.ndarray | None, typ: pa.DataType) -> pa.Array:
        return pa.nulls(r, typ) if a is None else pa.array(a, typ)

    return pa.table(
        {
            "run_id": pa.array(b.run_ids, pa.int64()),
            "role": pa.array(b.roles.tolist(), pa.string()),
            "mask": packed_to_arrow(packed),
            "n_kept": pa.array(count_kept(packed), pa.int32()),
            "margins": margins_to_arrow(b.margins, fixed=fixed_margins),
            "seed": col(b.seeds, pa.int64()),
            "worker": pa.nulls(r, pa.string()) if b.workers is None else pa.array(b.workers.tolist(), pa.string()),
            "duration_s": col(b.durations, pa.float64()),
            "info": pa.array(b.infos if b.infos is not None else [None] * r, pa.string()),
        }
    )
