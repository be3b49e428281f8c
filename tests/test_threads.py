"""The solvers' thread rule: one torch thread for small problems, torch's setting otherwise, restored
after; and the CLI's cap on OpenMP spinning."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from dmdb.cli import main
from dmdb.errors import FitError
from dmdb.regress import select_lasso
from dmdb.regress.threads import SMALL_PRODUCT_FLOPS, product_flops, threads_by_size


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@threads_by_size
def threads_seen(X: np.ndarray, Y: np.ndarray, *, device: str | None = None, fail: bool = False) -> int:
    if fail:
        raise ValueError("solver failed")
    return torch.get_num_threads()


def shaped(*shape: int) -> np.ndarray:
    """An array of this shape without its memory (the rule reads shapes only)."""
    return np.broadcast_to(np.zeros((1,) * len(shape), dtype=bool), shape)


def test_product_flops_counts_the_cheaper_form_of_g():
    # 64 targets of 1,000 examples: G as a matrix (1,000 runs: 2 x 64 x 1,000 x 1,000) or through
    # the centred masks when there are fewer runs than half the examples (300 runs: 4 x 64 x 300 x 1,000)
    assert product_flops(1000, 1000, 500) == 2 * 64 * 1000 * 1000
    assert product_flops(300, 1000, 500) == 4 * 64 * 300 * 1000
    assert product_flops(5000, 50, 5) == 2 * 5 * 50 * 50


def test_small_problems_run_on_one_thread_and_torch_is_restored(two_threads):
    assert product_flops(540, 50, 5) < SMALL_PRODUCT_FLOPS
    assert threads_seen(shaped(540, 50), shaped(540, 5)) == 1
    assert threads_seen(shaped(540, 50), shaped(540)) == 1  # one target as a vector
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="solver failed"):
        threads_seen(shaped(540, 50), shaped(540, 5), fail=True)
    assert torch.get_num_threads() == 2


def test_large_problems_keep_torchs_threads(two_threads):
    assert product_flops(10_000, 2_000, 200) >= SMALL_PRODUCT_FLOPS
    assert threads_seen(shaped(10_000, 2_000), shaped(10_000, 200)) == 2
    assert threads_seen(shaped(10_000, 2_000), shaped(10_000, 200), device="cpu") == 2


def test_a_wrapped_solver_still_checks_its_input(two_threads):
    with pytest.raises(FitError, match="2-D"):
        select_lasso(np.zeros(10, dtype=bool), np.zeros(10), [0, 1], [2, 3])
    assert torch.get_num_threads() == 2


def test_one_thread_gives_the_two_thread_solution(two_threads):
    rng = np.random.default_rng(0)
    X = rng.random((300, 40)) < 0.5
    w = np.zeros(40)
    w[:5] = [1.0, -2.0, 0.5, 3.0, -1.0]
    Y = X @ w[:, None] + 0.1 * rng.standard_normal((300, 1))
    small = select_lasso(X, Y, np.arange(200), np.arange(200, 300), dtype=torch.float64)
    both = select_lasso.__wrapped__(  # type: ignore[attr-defined]  # the solver without the rule: two threads
        X, Y, np.arange(200), np.arange(200, 300), dtype=torch.float64)
    np.testing.assert_allclose(small.W, both.W, atol=1e-10)
    np.testing.assert_allclose(small.W[:5, 0], w[:5], atol=0.05)


def test_the_cli_caps_openmp_spinning_unless_the_user_chose(monkeypatch, tmp_path):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert main(["init", "--db", str(tmp_path / "a.duckdb")]) == 0
    assert os.environ["GOMP_SPINCOUNT"] == "10000"
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    assert main(["init", "--db", str(tmp_path / "b.duckdb")]) == 0
    assert os.environ["GOMP_SPINCOUNT"] == "300000"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a policy chosen: no spin count added under it
    assert main(["init", "--db", str(tmp_path / "c.duckdb")]) == 0
    assert "GOMP_SPINCOUNT" not in os.environ


def test_every_iterative_solver_follows_the_rule():
    from dmdb.regress import lasso_path, select_ridge

    for solver in (lasso_path, select_lasso, select_ridge):
        assert solver.__wrapped__.__name__ == solver.__name__  # type: ignore[attr-defined]
