"""An externally computed score matrix (N x T, e.g. from TRAK or influence functions) stored as a
fit, so it is scored on the same holdout runs and queried by the same analyses as any other."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import BadInputError, ScoresWarning
from ..regress import predict
from .options import FitOptions
from .runner import holdout_scores, read_data
from .selection import select
from .write import FitRecord, write_fit

if TYPE_CHECKING:
    from ..experiment import Experiment


def load_scores(source: str | Path | np.ndarray) -> np.ndarray:
    """The score matrix of a .npy file, of an .npz archive that holds one array, or an array."""
    if not isinstance(source, (str, Path)):
        return np.asarray(source)
    try:
        loaded = np.load(source, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read a score matrix from {source}: {e}") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return _only_array(source, loaded)
    return loaded


def _only_array(source: str | Path, archive: np.lib.npyio.NpzFile) -> np.ndarray:
    if len(archive.files) != 1:
        raise BadInputError(f"{source} is an .npz archive of {len(archive.files)} arrays "
                            f"({', '.join(archive.files) or 'none'}); a score matrix file holds one: "
                            "save it alone (np.save, or np.savez with one array)")
    try:
        return archive[archive.files[0]]
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read a score matrix from {source}: {e}") from e


def _check_finite(S: np.ndarray) -> None:
    """Scores are stored as float32 weights: NaN, inf and values beyond float32 are refused, the
    first one named by its train example and column."""
    bad = ~np.isfinite(S) | (np.abs(S) > float(np.finfo(np.float32).max))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise BadInputError(
            f"score matrix must hold finite numbers within float32 range (weights are stored as float32): "
            f"{int(bad.sum())} entr{'y does' if bad.sum() == 1 else 'ies do'} not, the first at train example "
            f"{i}, column {j} ({S[i, j]})"
        )


def _given_targets(targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """The target of each score column, in column order: integers, each once."""
    tgt = np.asarray(targets)
    if tgt.ndim != 1 or not np.issubdtype(tgt.dtype, np.integer):
        raise BadInputError("targets must be a 1-D sequence of integer target ids, one per score column")
    if np.unique(tgt).size != tgt.size:
        raise BadInputError("targets repeat an id: give each score column's target once")
    return tgt.astype(np.int64)


def import_scores(
    exp: "Experiment",
    scores: str | Path | np.ndarray,
    *,
    name: str = "scores",
    targets: Sequence[int] | np.ndarray | None = None,
    calibrate: bool = True,
) -> int:
    """Store scores (n_train x targets) as a fit named `scores:<name>`; returns the fit_id.

    Scores from other methods have arbitrary units, so with `calibrate` each target's column is
    rescaled and given a bias by least squares of the recorded fit-run margins on the scores'
    predictions (b + a * mask @ s), so that counterfactual predictions come out in margin units.
    The scale is kept >= 0: a negative one would flip the scores' sign per target and raise the
    LDS above what the scores themselves earn. A target whose scores run against its fit-run
    margins gets scale 0 (one margin for every run, which counts 0 in the LDS), is listed in
    `config.anticorrelated` and named in a warning. With scales >= 0 the holdout Spearman is the
    scores' own. A column whose prediction is the same for every run (a constant column when every
    run keeps the same number of examples) explains nothing and gets scale 0 as well. Without
    `calibrate`, the bias alone is fitted.
    """
    exp.db.require_writable()
    S = load_scores(scores)
    tgt = np.arange(exp.n_targets) if targets is None else _given_targets(targets)
    if S.ndim != 2 or S.shape != (exp.n_train, tgt.size):
        raise BadInputError(
            f"score matrix has shape {S.shape}; experiment {exp.name!r} needs ({exp.n_train}, {tgt.size}) "
            "(train examples x targets)"
        )
    if not (np.issubdtype(S.dtype, np.integer) or np.issubdtype(S.dtype, np.floating)):
        raise BadInputError(f"score matrix must hold real numbers, got dtype {S.dtype}")
    _check_finite(S)
    t0 = time.perf_counter()
    split = FitOptions()  # the default fit/validation split, so every fit of the experiment shares it
    sel = select(exp, None, tgt, split.val_frac, split.split_seed)
    data = read_data(exp, sel)
    # column j of S is target tgt[j]; the fit's targets come sorted (and, without `targets`,
    # narrowed by target_pool): take each one's own column
    W = np.asarray(S, dtype=np.float64)[:, np.argsort(tgt)[np.searchsorted(np.sort(tgt), sel.targets)]]
    pred = predict(data.X, W, np.zeros(W.shape[1]))  # by row blocks: a float64 copy of all masks would be 8 N bytes a run
    y = data.Y.astype(np.float64)
    if calibrate:
        pc = pred - pred.mean(axis=0)
        var = (pc * pc).mean(axis=0)
        # a prediction that is the same for every run (a constant column under 'fixed' sampling) varies only
        # by rounding: dividing by that variance gave weights near 1e9; it explains nothing, so scale 0
        varies = var > (1e-9 * np.abs(pred).max(axis=0, initial=0.0)) ** 2
        scale = np.where(varies, (pc * (y - y.mean(axis=0))).mean(axis=0) / np.where(varies, var, 1), 0.0)
        against = sel.targets[scale < 0]
        scale = np.maximum(scale, 0.0)
        W = W * scale[None, :]
        pred = pred * scale[None, :]
    else:
        against = sel.targets[:0]
    bias = (y - pred).mean(axis=0)
    rho, lds = holdout_scores(data, W, bias)
    nan = np.full(sel.targets.size, np.nan)
    rec = FitRecord(
        experiment=exp.name, estimator=f"scores:{name}",
        config={"source": str(scores) if isinstance(scores, (str, Path)) else "array", "calibrate": calibrate,
                "anticorrelated": [int(t) for t in against]},
        selection=sel, W=W, bias=bias, lam=nan, val_mse=nan, val_r2=nan, holdout_spearman=rho, lds=lds,
        device="cpu", seconds=time.perf_counter() - t0,
    )
    fit_id = write_fit(exp.db, rec)
    if against.size:
        warnings.warn(
            f"fit {fit_id} ({rec.estimator}): the scores of {against.size} target(s) run against their fit-run margins "
            f"(first: {', '.join(map(str, against[:5].tolist()))}); calibration gave them scale 0, so they predict one "
            "margin for every run and count 0 in the LDS (the fit's config lists them as 'anticorrelated'). "
            "Check the scores' sign convention.",
            ScoresWarning, stacklevel=3,
        )
    return fit_id
