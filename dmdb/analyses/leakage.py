"""Train-test leakage: (target, train example) pairs whose weight stands far above the target's others.

Rule (same as the SQL macro leakage_candidates). For each target with at least min_nnz nonzero
weights, over its NONZERO weights (zeros are the LASSO's "no effect", and with them median and
MAD would be 0):
    robust_z      = (weight - median) / (1.4826 * MAD)       (1.4826: MAD -> sigma for a normal)
    ratio_to_next = weight / the target's next-largest positive weight (null if there is none)
A pair is a candidate when weight > 0 and robust_z >= min_z (targets with MAD = 0 are skipped).
Candidates are ranked by robust_z, highest first. ratio_to_next tells a lone outlier (large ratio)
from one of several near-equal large weights (ratio near 1).

Second opinion, where both the target and the train example have image payloads of one shape:
    pixel_dist = ||a - b|| / (||a|| + ||b||)  in [0, 1]; 0 = identical pixels
    pixel_corr = Pearson correlation of the pixels (null where either image is constant)
The macro computes these too (decoding the stored bytes in SQL, 0.5-2 ms a 32x32x3 image); here they are
computed in numpy for the rows returned only, on the candidates of dmdb_leakage_ranked (the macro's
columns without these two).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..errors import BadInputError
from ..interrupt import fetchall
from ..validate import as_real, is_int
from .weights import resolve_fit

if TYPE_CHECKING:
    from ..store import Database


def leakage(
    db: "Database",
    *,
    fit: int | None = None,
    min_z: float = 6.0,
    min_nnz: int = 3,
    limit: int | None = 100,
    pixels: bool = True,
) -> pl.DataFrame:
    """Ranked leakage candidates: the SQL macro leakage_candidates, its pixel_dist and pixel_corr computed here.

    Columns: rank, fit_id, target, train_idx, weight, robust_z, ratio_to_next, rank_in_target,
    target_nnz, target_label, train_label, same_label, both_images, n_candidates, pixel_dist,
    pixel_corr. n_candidates is how many candidates there are in all, beyond `limit` too (counted in
    the same query). limit=None returns every candidate.
    """
    if not is_int(min_nnz) or min_nnz < 3:
        raise BadInputError(f"min_nnz must be at least 3 (a median and MAD of fewer weights mean nothing), got {min_nnz!r}")
    min_z = as_real(min_z, "min_z")  # None or text reached SQL's cast as a TypeError
    if math.isnan(min_z):  # no weight's z is >= NaN: it listed no candidates, as if there were no leakage
        raise BadInputError("min_z must be a number, got nan")
    if limit is not None and (not is_int(limit) or limit < 1):
        raise BadInputError(f"limit must be a positive integer or None, got {limit!r}")
    info = resolve_fit(db, fit)
    q = ("SELECT *, count(*) OVER () AS n_candidates FROM dmdb_leakage_ranked(fit := ?, min_z := ?, min_nnz := ?) "
         'ORDER BY "rank"')
    params: list[object] = [info.fit_id, float(min_z), int(min_nnz)]
    if limit is not None:
        q += " LIMIT ?"
        params.append(int(limit))
    frame = db.sql(q, params)
    dist: list[float | None] = [None] * frame.height
    corr: list[float | None] = [None] * frame.height
    if pixels and frame.height and frame["both_images"].any():
        sel = frame.filter(pl.col("both_images"))
        timgs = _images(db, info.experiment, "targets", sel["target"].to_list())
        eimgs = _images(db, info.experiment, "train_examples", sel["train_idx"].to_list())
        pos = {(t, i): n for n, (t, i) in enumerate(zip(frame["target"].to_list(), frame["train_idx"].to_list()))}
        for t, i in zip(sel["target"].to_list(), sel["train_idx"].to_list()):
            d, c = pixel_distance(timgs.get(t), eimgs.get(i))
            dist[pos[(t, i)]], corr[pos[(t, i)]] = d, c
    return frame.with_columns(
        pixel_dist=pl.Series(dist, dtype=pl.Float64), pixel_corr=pl.Series(corr, dtype=pl.Float64)
    )


def pixel_distance(a: np.ndarray | None, b: np.ndarray | None) -> tuple[float | None, float | None]:
    """(normalised L2 distance, Pearson correlation) of two images; (None, None) if not comparable."""
    if a is None or b is None or a.shape != b.shape:
        return None, None
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    den = np.linalg.norm(x) + np.linalg.norm(y)
    dist = float(np.linalg.norm(x - y) / den) if den > 0 else 0.0
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # constant: x - mean would be 0 or rounding noise
        return dist, None
    xc, yc = x - x.mean(), y - y.mean()
    corr = float(xc @ yc / (np.linalg.norm(xc) * np.linalg.norm(yc)))
    return dist, corr


def _images(db: "Database", experiment: str, table: str, idx: list[int]) -> dict[int, np.ndarray]:
    assert table in ("targets", "train_examples")
    rows = fetchall(
        db.con,
        f"SELECT idx, image, image_shape, image_dtype FROM {table} "
        "WHERE experiment = ? AND image IS NOT NULL AND idx IN (SELECT unnest(?))",
        [experiment, sorted(set(int(i) for i in idx))],
    )
    return {int(i): np.frombuffer(img, dtype=np.dtype(dt)).reshape(shape) for i, img, shape, dt in rows}
