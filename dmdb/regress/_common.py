"""Plumbing shared by the estimators: checked inputs on a device, and validation scoring."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._inputs import ArrayLike, check_dtype, check_masks, margins_to_numpy, mask_block, resolve_device


@dataclass
class Prepared:
    """Checked inputs: the masks stay where they are; margins a float32 or float64 array."""

    X: ArrayLike
    Y: np.ndarray
    n_runs: int
    n_train: int
    device: torch.device
    dtype: torch.dtype


def prepare(X: ArrayLike, Y: ArrayLike, device: str | torch.device | None, dtype: torch.dtype) -> Prepared:
    n, N = check_masks(X)
    dev = resolve_device(device)
    check_dtype(dtype)
    Ynp = margins_to_numpy(Y, n)
    return Prepared(X=X, Y=Ynp, n_runs=n, n_train=N, device=dev, dtype=dtype)


def centred_rows(p: Prepared, rows: np.ndarray, x_mean: torch.Tensor, y_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation rows centred by the fit means: residuals then need no intercept term."""
    Xv = mask_block(p.X, rows, p.device, p.dtype) - x_mean.to(p.dtype)
    yv = (torch.as_tensor(p.Y[rows], dtype=torch.float64, device=p.device) - y_mean).to(p.dtype)
    return Xv, yv


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def r2_from(mse: torch.Tensor, var: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    """R^2 against the validation variance; NaN where validation margins do not vary."""
    r2 = 1.0 - mse / torch.where(constant, torch.ones_like(var), var)
    return torch.where(constant, torch.full_like(r2, float("nan")), r2)
