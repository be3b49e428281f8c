"""The memory check before a fit and the lasso's batch sized to what is left (dmdb/regress/memory.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dmdb
from dmdb.cli import main
from dmdb.errors import FitError
from dmdb.regress import _fista, diff_means, lasso, lasso_path, memory, select_lasso, select_ridge
from dmdb.regress.memory import Sizes, batch_bytes, lasso_batch, out_of_memory_as_fit_error, spend

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def data(n: int, N: int, T: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, N)) < 0.5
    W = rng.normal(size=(N, T)) * (rng.random((N, T)) < 0.1)
    return X, (X @ W + rng.normal(size=(n, T))).astype(np.float32)


def test_the_parts_are_the_arrays_each_solver_holds_at_once() -> None:
    # 400 fit + 100 validation runs, 300 examples, 7 targets, float32: G as a matrix (400 > 150)
    s = Sizes(n_fit=400, n_val=100, N=300, T=7, itemsize=4, form="matrix", refit=True)
    xty, c, G = 300 * 7 * 8, 300 * 7 * 4, 300 * 300 * 4  # one X'Y: fit and validation runs' are summed in one
    W, val_masks, val_margins, batch = 300 * 7 * 4, 100 * 300, 100 * 7 * 4, 16 * 300 * 4
    # the validation masks (one byte an entry, 30,000 B) and margins (2,800 B) outweigh the refit's
    # weights (8,400)
    assert sum(s.lasso().values()) == xty + c + G + W + batch + val_masks + val_margins
    no_val = Sizes(n_fit=400, n_val=2, N=300, T=7, itemsize=4, form="matrix", refit=True)
    assert sum(no_val.lasso().values()) == xty + c + G + W + batch + W
    masks = Sizes(n_fit=100, n_val=30, N=300, T=7, itemsize=8, form="masks", refit=True)
    # the masks form holds fit + validation rows; float64 doubles every float array
    assert masks.common() == {"X'Y sums": xty, "correlations X'y": 2 * c,
                              "centred masks (130 x 300)": 130 * 300 * 8}
    assert sum(s.lasso_path(20).values()) == xty + c + G + 20 * 7 * 300 * 4 + batch
    # ridge, matrix form: the grid phase (basis 300 x 300, its coefficients, validation margins and rows
    # in the basis, the larger of the validation masks and one lambda's coefficients) against the
    # refit's (basis, coefficients)
    grid = G + 300 * 7 * 4 + val_margins + 100 * 300 * 4 + max(val_masks, 300 * 7 * 4)
    assert sum(s.ridge().values()) == xty + c + G + max(grid, G + 300 * 7 * 4)
    # kernel form: the basis of n runs is n x n plus its N x n image; the refit's has 130 runs
    refit_basis = (130 * 130 + 300 * 130) * 8 + 130 * 7 * 8
    grid_basis = (100 * 100 + 300 * 100) * 8 + 100 * 7 * 8 + 30 * 7 * 8 + 30 * 100 * 8 + max(30 * 300, 100 * 7 * 8)
    assert sum(masks.ridge().values()) == sum(masks.common().values()) + max(refit_basis, grid_basis)
    # difference in means: its float32 weights, beside the float64 X'Y sums they are formed from, or
    # after them beside the validation masks, margins and predictions (30,000 + 2,800 + 2,800 B)
    assert sum(Sizes(400, 100, 300, 7, 4).diff_means().values()) == W + max(300 * 7 * 8, val_masks + 2 * val_margins)
    assert Sizes(400, 0, 300, 7, 8).diff_means() == {"weights": 300 * 7 * 8, "X'Y sums": 300 * 7 * 8}


PEAK_PROBE = """
import json, sys
from pathlib import Path
import numpy as np
from dmdb.regress import diff_means, lasso_path, memory, select_lasso, select_ridge
from dmdb.regress.memory import Sizes, batch_bytes, lasso_batch

memory.available_bytes = lambda device: None  # the default batch, whatever this machine has free
def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024
out = {}
rng = np.random.default_rng(0)
for name, n, N, T in json.loads(sys.argv[1]):
    X = rng.random((n, N)) < 0.5
    Y = rng.standard_normal((n, T)).astype(np.float32)
    fit, val = np.arange(n * 4 // 5), np.arange(n * 4 // 5, n)
    form = "matrix" if 2 * fit.size > N else "masks"
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    base = status("VmRSS")
    more_targets = batch_bytes(N, 4, lasso_batch(N, T, 4, None) - 1)  # the batch beyond the one target counted
    if name == "lasso":
        select_lasso(X, Y, fit, val, n_lambdas=2, max_iter=2, block_rows=256)  # memory, not convergence
        parts = Sizes(fit.size, val.size, N, T, 4, form, True).lasso()
    elif name == "ridge":
        select_ridge(X, Y, fit, val, lambdas=[0.1], block_rows=256)
        parts, more_targets = Sizes(fit.size, val.size, N, T, 4, form, True).ridge(), 0
    elif name == "diff":
        diff_means(X, Y, fit_rows=fit, val_rows=val, block_rows=256)
        parts, more_targets = Sizes(fit.size, val.size, N, T, 4).diff_means(), 0
    else:
        lasso_path(X, Y, rows=np.arange(n), n_lambdas=20, max_iter=1, block_rows=256)
        parts = Sizes(n, 0, N, T, 4, "matrix" if 2 * n > N else "masks", False).lasso_path(20)
    out[f"{name} {form}"] = [sum(parts.values()) + more_targets, status("VmHWM") - base]
print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
def test_the_parts_bound_the_measured_peak_from_below_and_not_far_below() -> None:
    """Each solver's peak resident memory (VmHWM, reset just before it) against its parts: at least
    them (so the check never refuses a fit that would have run), and within 2x + 64 MiB of them (so
    the check misses no large array). Large allocations are fresh mappings (MALLOC_MMAP_THRESHOLD_),
    so reused heap cannot hide them."""
    cases = [["lasso", 4000, 1500, 2000], ["lasso", 1000, 3000, 1500], ["ridge", 4000, 1500, 2000],
             ["ridge", 1000, 3000, 1500], ["path", 3000, 1000, 300], ["diff", 4000, 1500, 2000]]
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", PEAK_PROBE, json.dumps(cases)], env=env, capture_output=True,
                              text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("the peak probe ran past 10 minutes")
    if "clear_refs" in done.stderr and "Permission" in done.stderr:
        pytest.skip("this system refuses the peak-RSS reset")
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert set(measured) == {"lasso matrix", "lasso masks", "ridge matrix", "ridge masks", "path matrix", "diff matrix"}
    for case, (parts, peak) in measured.items():
        assert parts <= peak <= 2 * parts + 64 * MiB, (case, parts / MiB, peak / MiB)


def says(size: str, n: int) -> bool:
    """Whether a size as the error writes it ('12.3 KiB', '1.5 MiB', '2.25 GiB') is n bytes, rounded."""
    number, unit = size.split()
    expected = "GiB" if n >= 2**30 else "MiB" if n >= 2**20 else "KiB"
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    return unit == expected and abs(float(number) * scale - n) <= (0.00501 if unit == "GiB" else 0.0501) * scale


def counting_progress() -> tuple[list[str], object]:
    seen: list[str] = []
    return seen, lambda stage, done, total: seen.append(stage)


@pytest.mark.parametrize("solver", ["lasso", "ridge", "path", "diff"])
def test_a_fit_larger_than_the_free_memory_is_refused_before_any_work(solver: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    X, Y = data(500, 300, 7)
    fit, val = np.arange(400), np.arange(400, 500)
    s = Sizes(n_fit=400, n_val=100, N=300, T=7, itemsize=4, form="matrix", refit=True)
    parts = {"lasso": s.lasso(), "ridge": s.ridge(), "path": Sizes(500, 0, 300, 7, 4, "matrix", False).lasso_path(100),
             "diff": Sizes(400, 100, 300, 7, 4).diff_means()}[solver]
    need = sum(parts.values())
    monkeypatch.setattr(memory, "available_bytes", lambda device: need - 1)
    seen, progress = counting_progress()
    with pytest.raises(FitError) as err:
        if solver == "lasso":
            select_lasso(X, Y, fit, val, progress=progress)  # type: ignore[arg-type]
        elif solver == "ridge":
            select_ridge(X, Y, fit, val, progress=progress)  # type: ignore[arg-type]
        elif solver == "diff":
            diff_means(X, Y, fit_rows=fit, val_rows=val, progress=progress)  # type: ignore[arg-type]
        else:
            lasso_path(X, Y, progress=progress)  # type: ignore[arg-type]
    text = str(err.value)
    said = re.match(r"this fit needs at least ([\d.]+ [KMG]iB) of cpu memory but ([\d.]+ [KMG]iB) is free \((.+)\); ", text)
    assert said, text
    assert says(said[1], need) and says(said[2], need - 1)
    listed = [re.fullmatch(r"(.+) ([\d.]+ [KMG]iB)", item) for item in said[3].split(", ")]
    assert [m[1] for m in listed] == sorted(parts, key=lambda k: -parts[k])  # type: ignore[index]  # largest first
    assert all(says(m[2], parts[m[1]]) for m in listed)  # type: ignore[index]
    assert "--targets" in text
    assert seen == []  # refused before the statistics pass read a mask
    # with exactly the bytes it needs, the same call runs
    monkeypatch.setattr(memory, "available_bytes", lambda device: need)
    if solver == "path":
        assert lasso_path(X, Y, n_lambdas=100).coefs.shape == (100, 300, 7)
    elif solver == "diff":
        assert diff_means(X, Y, fit_rows=fit, val_rows=val).W.shape == (300, 7)
    else:
        assert (select_lasso if solver == "lasso" else select_ridge)(X, Y, fit, val).W.shape == (300, 7)


def test_the_lasso_batch_takes_half_the_memory_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """...and the validation masks stay bytes when their floats (150 x 200 x 3 more bytes) would take
    more than a quarter of it; either way the fit is the same."""
    X, Y = data(600, 200, 40, seed=1)
    fit, val = np.arange(450), np.arange(450, 600)
    need = sum(Sizes(n_fit=450, n_val=150, N=200, T=40, itemsize=4, form="matrix", refit=True).lasso().values())
    per_target = 16 * 200 * 4
    # left: room for 10 more targets' arrays, of which the batch takes half: 1 + 5 targets
    monkeypatch.setattr(memory, "available_bytes", lambda device: need + 10 * per_target + 7)
    chunks: list[int] = []
    real = _fista.solve_paths

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        chunks.append(kwargs["chunk"])
        return real(*args, **kwargs)

    monkeypatch.setattr("dmdb.regress.lasso.solve_paths", spy)
    forms: list[torch.dtype] = []
    rows_class = lasso.ValidationRows

    def rows_spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        vr = rows_class(*args, **kwargs)
        forms.append(vr.masks.dtype)
        return vr

    monkeypatch.setattr(lasso, "ValidationRows", rows_spy)
    small = select_lasso(X, Y, fit, val, n_lambdas=30)
    assert chunks == [6, 6] and forms == [torch.uint8]  # the path, then the refit
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    whole = select_lasso(X, Y, fit, val, n_lambdas=30)
    # unknown free memory: the 2 GiB budget holds all 40 targets, the validation masks are floats
    assert chunks[2:] == [40, 40] and forms[1:] == [torch.float32]
    np.testing.assert_array_equal(small.lam, whole.lam)
    np.testing.assert_allclose(small.W, whole.W, atol=1e-6)


def test_lasso_batch_arithmetic() -> None:
    per = batch_bytes(1000, 4, 1)
    assert per == 64_000
    assert lasso_batch(1000, 500, 4, None) == 500  # 2 GiB holds 33,554 targets of N = 1,000
    assert lasso_batch(1000, 50_000, 4, None) == (2 << 30) // per
    assert lasso_batch(1000, 500, 4, 0) == 1  # nothing left: the one target the check counted
    assert lasso_batch(1000, 500, 4, 2 * 7 * per + 1) == 8
    assert lasso_batch(1000, 500, 4, 10**15) == 500
    assert spend(25, 100) == (True, 75) and spend(26, 100) == (False, 100) and spend(10**12, None) == (True, None)


def test_memory_that_runs_out_during_a_fit_is_a_fit_error() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    with pytest.raises(FitError, match=r"^out of cuda:0 memory during the fit \(CUDA out of memory\. Tried to "
                                       r"allocate 20\.00 GiB\); fit fewer targets at a time \(--targets\), or on "
                                       r"the CPU \(--device cpu\)$"):
        with out_of_memory_as_fit_error(cuda):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")
    cpu_text = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes."
    with pytest.raises(FitError, match=r"^out of cpu memory during the fit \(\[enforce fail") as err:
        with out_of_memory_as_fit_error(cpu):
            raise RuntimeError(cpu_text)
    assert "--device cpu" not in str(err.value)
    with pytest.raises(RuntimeError, match="^shapes cannot be multiplied$"):  # anything else passes through
        with out_of_memory_as_fit_error(cpu):
            raise RuntimeError("shapes cannot be multiplied")


def study(path: Path) -> None:
    X, Y = data(500, 50, 6, seed=2)
    with dmdb.open(path) as db:
        exp = db.create_experiment("mem", n_train=50, n_targets=6, alpha=0.5)
        for n, role in ((400, "fit"), (100, "holdout")):
            runs = list(exp.pending(exp.plan(n, seed=n, role=role)))
            rows = slice(0, n) if role == "fit" else slice(400, 500)
            exp.record_batch([r.run_id for r in runs], np.stack([r.mask for r in runs]), Y[rows], role=role)


def test_the_cli_says_in_one_line_that_a_fit_does_not_fit_and_writes_no_fit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.duckdb"
    study(path)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    code = main(["fit", "mem", "--db", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    need = sum(Sizes(n_fit=360, n_val=40, N=50, T=6, itemsize=4, form="matrix", refit=True).lasso().values())
    assert err.startswith(f"dmdb fit: error: this fit needs at least {need / 1024:.1f} KiB of cpu memory "
                          "but 1.0 KiB is free (")
    assert err.count("\n") == 1
    with dmdb.open(path, read_only=True) as db:
        assert db.sql("SELECT count(*) AS n FROM fits").item() == 0
