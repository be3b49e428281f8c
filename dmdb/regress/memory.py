"""What a fit holds in device memory, checked before it starts, and the lasso's target batch sized
to what is left.

A fit that cannot fit should say so before it reads the masks, not run out of memory half an hour
later (on CUDA a raw OutOfMemoryError; on Linux the kernel's OOM killer, which leaves no message).
`Sizes.parts` lists the large arrays a solver holds at the same time: a lower bound of its peak
(temporaries and small arrays are left out), so refusing a fit whose parts exceed the free memory
never refuses one that would have run. Free memory: CUDA's free bytes plus what torch's caching
allocator holds unused; on the CPU, Linux's MemAvailable (elsewhere unknown: no check, the default
batch).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from dmdb.errors import FitError

BATCH_BUDGET = 2 << 30
"""Most bytes of solver work arrays for one batch of targets (beyond ~100 targets a batch the
GEMMs gain little on a CPU, and all 1,000 targets of N = 10,000 fit in it)."""
BATCH_ARRAYS = 16
"""(B, N) work arrays the lasso solver holds per batch: iterates, their products with G, temporaries."""


@dataclass(frozen=True)
class Sizes:
    """The shape of one fit: fit and validation runs, train examples, targets, the solver's float
    width, how G is held ('matrix' or 'masks'; difference in means holds none), whether a refit on fit +
    validation runs follows."""

    n_fit: int
    n_val: int
    N: int
    T: int
    itemsize: int
    form: str = "matrix"
    refit: bool = False

    def common(self) -> dict[str, int]:
        """What every solver with a Gram operator holds: X'Y sums (float64; those of fit and validation
        runs are added in one buffer once the correlations are formed), the correlations X'y, and G
        in its form."""
        N, T, s = self.N, self.T, self.itemsize
        parts = {"X'Y sums": N * T * 8, "correlations X'y": N * T * s}
        if self.form == "matrix":
            parts[f"G ({N:,} x {N:,})"] = N * N * s
        else:
            rows = self.n_fit + (self.n_val if self.refit else 0)
            parts[f"centred masks ({rows:,} x {N:,})"] = rows * N * s
        return parts

    def validation_masks(self) -> dict[str, int]:
        """The validation runs' masks, held as 0/1 bytes (regress/_common.py ValidationRows)."""
        return {f"validation masks ({self.n_val:,} x {self.N:,} bytes)": self.n_val * self.N}

    def validation_margins(self) -> dict[str, int]:
        return {f"validation margins ({self.n_val:,} x {self.T:,})": self.n_val * self.T * self.itemsize}

    def lasso(self) -> dict[str, int]:
        """select_lasso: the best weights so far and one target's solver work arrays throughout;
        the validation runs during the path, or the refit's weights after it."""
        N, T, s = self.N, self.T, self.itemsize
        path = self.validation_masks() | self.validation_margins()
        refit = {"refit weights": T * N * s} if self.refit else {}
        return self.common() | {"best weights on the path": T * N * s, "solver batch": batch_bytes(N, s, 1)} | _larger(path, refit)

    def lasso_path(self, k: int) -> dict[str, int]:
        """lasso_path keeps every solution: k x T x N."""
        return self.common() | {f"path of {k} solutions": k * self.T * self.N * self.itemsize,
                                "solver batch": batch_bytes(self.N, self.itemsize, 1)}

    def ridge(self) -> dict[str, int]:
        """select_ridge: an eigenbasis (G's N x N, or the n x n kernel's with its N x n image) and the
        targets' coefficients in it, of the fit runs while it scores its grid (with the validation
        margins and rows in the basis, and the validation masks until those are formed or else one
        lambda's coefficients), of all runs in a refit."""
        N, T, s = self.N, self.T, self.itemsize

        def basis(n: int) -> dict[str, int]:
            dim = N if self.form == "matrix" else n
            size = N * N if self.form == "matrix" else n * n + N * n
            return {"eigenbasis": size * s, "coefficients in the basis": dim * T * s}

        dim = N if self.form == "matrix" else self.n_fit
        grid = (basis(self.n_fit) | self.validation_margins()
                | {f"validation rows in the basis ({self.n_val:,} x {dim:,})": self.n_val * dim * s}
                | _larger(self.validation_masks(), {"one lambda's coefficients": dim * T * s}))
        refit = basis(self.n_fit + self.n_val) if self.refit else {}
        return self.common() | _larger(grid, refit)


    def diff_means(self) -> dict[str, int]:
        """diff_means: the weights in the solver's floats, beside the X'Y sums they are formed from
        (float64, in place) or after them, with validation runs, their masks, margins and predictions."""
        N, T, s = self.N, self.T, self.itemsize
        validation = self.validation_masks() | self.validation_margins() | {
            f"validation predictions ({self.n_val:,} x {T:,})": self.n_val * T * s} if self.n_val else {}
        return {"weights": N * T * s} | _larger({"X'Y sums": N * T * 8}, validation)


def _larger(*phases: dict[str, int]) -> dict[str, int]:
    """Of arrays held in turn, never together, the phase that holds the most."""
    return max(phases, key=lambda phase: sum(phase.values()))


def batch_bytes(N: int, itemsize: int, batch: int) -> int:
    return BATCH_ARRAYS * N * itemsize * batch


def available_bytes(device: torch.device) -> int | None:
    """Bytes a fit can still allocate on `device`, or None where that is unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def check_memory(parts: dict[str, int], device: torch.device) -> int | None:
    """Refuse, with what needs the memory, a fit whose large arrays exceed the device's free
    memory; otherwise return the bytes left beside them (None: free memory unknown)."""
    free = available_bytes(device)
    if free is None:
        return None
    need = sum(parts.values())
    if need > free:
        listed = ", ".join(f"{name} {_size(b)}" for name, b in sorted(parts.items(), key=lambda kv: -kv[1]) if b)
        raise FitError(f"this fit needs at least {_size(need)} of {device} memory but {_size(free)} is free "
                       f"({listed}); {_advice(device)}")
    return free - need


def _advice(device: torch.device) -> str:
    """What shrinks a fit: the target-sized arrays shrink with fewer targets (G and the masks do not)."""
    return "fit fewer targets at a time (--targets)" + (", or on the CPU (--device cpu)" if device.type == "cuda" else "")


@contextmanager
def out_of_memory_as_fit_error(device: torch.device) -> Iterator[None]:
    """An allocation that fails anyway (other processes took the memory after the check, or a
    temporary the check leaves out) becomes a FitError that says so, not torch's traceback."""
    try:
        yield
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one; the CPU allocator raises a plain one
        text = str(exc)
        if not isinstance(exc, torch.cuda.OutOfMemoryError) and "can't allocate memory" not in text:
            raise
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise FitError(f"out of {device} memory during the fit ({first}); {_advice(device)}") from exc


def spend(extra: int, left: int | None) -> tuple[bool, int | None]:
    """Whether to spend `extra` bytes beyond the counted arrays on speed (yes when they take at most a
    quarter of the memory left beside them, or that is unknown), and the memory left after."""
    if left is None:
        return True, None
    if extra <= left // 4:
        return True, left - extra
    return False, left


def lasso_batch(N: int, T: int, itemsize: int, left: int | None) -> int:
    """Targets per batch of the lasso solver: within BATCH_BUDGET, and within half of the memory
    left beside the fit's other arrays (at least one target, whose arrays the check counted)."""
    budget = BATCH_BUDGET if left is None else min(BATCH_BUDGET, batch_bytes(N, itemsize, 1) + left // 2)
    return max(1, min(T, budget // batch_bytes(N, itemsize, 1)))
