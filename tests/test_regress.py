"""dmdb.regress against independent oracles: scikit-learn, brute-force numpy, known datamodels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import Lasso, Ridge
from sklearn.linear_model import lasso_path as sk_lasso_path
from sklearn.metrics import r2_score

from dmdb.errors import FitError
from dmdb.regress import _fista
from dmdb.regress import (
    diff_means,
    lasso_path,
    predict,
    r2_per_target,
    select_lasso,
    select_ridge,
    spearman_per_target,
)

F64 = dict(dtype=torch.float64, device="cpu")


def _data(n: int, N: int, T: int, seed: int, k_true: int = 5, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    X = rng.random((n, N)) < 0.5
    W = np.zeros((N, T))
    for t in range(T):
        W[rng.choice(N, k_true, replace=False), t] = rng.normal(size=k_true)
    Y = X @ W + 2.0 + noise * rng.normal(size=(n, T))
    return X, Y.astype(np.float64), W


def _sk_path(X, y, alphas):
    """scikit-learn's lasso path with an intercept: centre, solve, then b = ybar - xbar.w."""
    xm, ym = X.mean(axis=0), y.mean()
    _, coefs, _ = sk_lasso_path(X - xm, y - ym, alphas=alphas, tol=1e-14, max_iter=200_000)
    return coefs.T, ym - coefs.T @ xm  # (k, N), (k,)


# ---------------------------------------------------------------- lasso path vs scikit-learn


@pytest.mark.parametrize("gram", ["matrix", "masks"])
def test_lasso_path_matches_sklearn_along_whole_path_including_constant_target(gram: str):
    X, Y, _ = _data(300, 40, 4, seed=1)
    Y[:, 2] = 1.25  # a constant target
    path = lasso_path(X, Y, n_lambdas=25, eps=1e-3, tol=1e-14, max_iter=100_000, gram=gram, **F64)
    assert path.coefs.shape == (25, 40, 4) and path.lambdas.shape == (25, 4)
    assert path.converged.all()
    Xf = X.astype(np.float64)
    for t in (0, 1, 3):
        lam = path.lambdas[:, t]
        # the grid's top is lambda_max = max |Xc'yc| / n, where every weight is exactly 0
        xc, yc = Xf - Xf.mean(0), Y[:, t] - Y[:, t].mean()
        assert lam[0] == pytest.approx(np.abs(xc.T @ yc).max() / 300, rel=1e-12)
        assert lam[-1] == pytest.approx(1e-3 * lam[0], rel=1e-9)
        coefs, intercepts = _sk_path(Xf, Y[:, t], lam)
        np.testing.assert_allclose(path.coefs[:, :, t], coefs, atol=1e-7)
        np.testing.assert_allclose(path.intercepts[:, t], intercepts, atol=1e-7)
        assert not path.coefs[0, :, t].any()
        assert np.count_nonzero(path.coefs[-1, :, t]) > 30  # nearly dense at the bottom
    # the constant target: no weights, bias is the constant
    assert not path.coefs[:, :, 2].any()
    np.testing.assert_allclose(path.intercepts[:, 2], 1.25)
    assert path.constant.tolist() == [False, False, True, False]


@pytest.mark.parametrize("gram, n", [("matrix", 300), ("masks", 30)])
def test_lasso_path_retakes_steps_too_long_for_the_curvature(gram: str, n: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each target's step starts at 1/(0.01 L), far too long for G (its Rayleigh quotient along a
    step reaches L), so nearly every target's first steps must be retaken with a larger estimate;
    the path still equals scikit-learn's, with fewer runs than examples too (G singular)."""
    monkeypatch.setattr(_fista, "STEP_START", 0.01)
    retaken = []
    real = _fista._backtrack

    def counting(*args):  # type: ignore[no-untyped-def]
        Lb_in = args[7].clone()
        out = real(*args)
        retaken.append(int((out[2] > Lb_in).sum()))  # targets whose estimate had to grow
        return out

    monkeypatch.setattr(_fista, "_backtrack", counting)
    X, Y, _ = _data(n, 40, 3, seed=5)
    path = lasso_path(X, Y, n_lambdas=15, eps=1e-2, tol=1e-14, max_iter=100_000, gram=gram, **F64)
    assert path.converged.all()
    Xf = X.astype(np.float64)
    for t in range(3):
        coefs, intercepts = _sk_path(Xf, Y[:, t], path.lambdas[:, t])
        np.testing.assert_allclose(path.coefs[:, :, t], coefs, atol=1e-7)
        np.testing.assert_allclose(path.intercepts[:, t], intercepts, atol=1e-7)
    assert retaken[:2] == [0, 3]  # at lambda_max every weight stays 0; the next step is retaken by all 3


def test_lasso_matches_sklearn_lasso_estimator_with_intercept_float32():
    X, Y, _ = _data(400, 30, 3, seed=2)
    lams = np.array([0.2, 0.05, 0.01])
    path = lasso_path(X, Y.astype(np.float32), lambdas=lams, tol=1e-8, dtype=torch.float32, device="cpu")
    for t in range(3):
        for j, lam in enumerate(lams):
            sk = Lasso(alpha=lam, fit_intercept=True, tol=1e-12, max_iter=100_000).fit(X.astype(float), Y[:, t])
            # float32 solver: agreement to ~1e-4 of weights of order 1
            np.testing.assert_allclose(path.coefs[j, :, t], sk.coef_, atol=2e-4)
            assert path.intercepts[j, t] == pytest.approx(sk.intercept_, abs=5e-4)


# ---------------------------------------------------------------- recovery of a known datamodel


def test_select_lasso_recovers_sparse_truth_and_reaches_noise_ceiling():
    rng = np.random.default_rng(3)
    n, N, T, k_true, sigma = 5000, 300, 20, 10, 1.0
    X = rng.random((n, N)) < 0.5
    W = np.zeros((N, T))
    support = [np.sort(rng.choice(N, k_true, replace=False)) for _ in range(T)]
    for t in range(T):
        W[support[t], t] = rng.choice([-1, 1], k_true) * rng.uniform(0.5, 1.5, k_true)
    Y = (X @ W + 5.0 + sigma * rng.normal(size=(n, T))).astype(np.float32)
    fit, val, test = np.arange(0, 3000), np.arange(3000, 4000), np.arange(4000, 5000)
    res = select_lasso(X, Y, fit, val, device="cpu")
    assert res.W.shape == (N, T) and res.bias.shape == (T,) and res.path_mse.shape == (100, T)
    for t in range(T):
        top = np.sort(np.argsort(-np.abs(res.W[:, t]))[:k_true])
        assert top.tolist() == support[t].tolist()
    # noise ceiling: Var(signal) / (Var(signal) + sigma^2), with Var(x_i) = 1/4 per example
    var_signal = 0.25 * (W**2).sum(axis=0)
    ceiling = var_signal / (var_signal + sigma**2)
    pred = predict(X[test], res.W, res.bias)
    resid = Y[test] - pred
    r2 = 1 - (resid**2).mean(0) / Y[test].var(0)
    assert np.all(r2 > ceiling - 0.03), (r2 - ceiling).min()
    assert abs(r2.mean() - ceiling.mean()) < 0.01
    # weights are in raw 0/1 coordinates: the true weights, not a standardised version
    assert np.abs(res.W - W).max() < 0.15
    assert np.abs(res.bias - 5.0).max() < 0.6
    assert np.all(res.val_r2 > ceiling - 0.05)


# ---------------------------------------------------------------- model selection


@pytest.mark.parametrize("gram", ["matrix", "masks"])
def test_selected_lambda_is_brute_force_argmin_of_validation_mse_with_sklearn_coefficients(gram: str):
    X, Y, _ = _data(500, 30, 3, seed=4, noise=1.5)
    Y[:, 1] = -0.5  # constant target
    fit, val = np.arange(0, 350), np.arange(350, 500)
    res = select_lasso(X, Y, fit, val, n_lambdas=20, eps=1e-2, tol=1e-14, max_iter=100_000, gram=gram, **F64)
    Xf = X.astype(np.float64)
    for t in (0, 2):
        lam = res.lambdas[:, t]
        coefs, intercepts = _sk_path(Xf[fit], Y[fit, t], lam)
        mse = (((Y[val, t][:, None] - intercepts[None, :] - Xf[val] @ coefs.T)) ** 2).mean(0)
        np.testing.assert_allclose(res.path_mse[:, t], mse, rtol=1e-8)
        j = int(np.argmin(mse))
        assert res.lam[t] == lam[j]
        assert res.val_mse[t] == pytest.approx(mse[j], rel=1e-8)
        assert res.val_r2[t] == pytest.approx(1 - mse[j] / Y[val, t].var(), rel=1e-8)
        # refit on fit+val at the chosen lambda equals scikit-learn's fit there
        sk = Lasso(alpha=lam[j], tol=1e-14, max_iter=200_000).fit(Xf, Y[:, t])
        np.testing.assert_allclose(res.W[:, t], sk.coef_, atol=1e-6)
        assert res.bias[t] == pytest.approx(sk.intercept_, abs=1e-6)
        assert res.nnz[t] == np.count_nonzero(sk.coef_)
    assert not res.W[:, 1].any() and res.bias[1] == pytest.approx(-0.5) and res.lam[1] == 0
    assert np.isnan(res.val_r2[1]) and res.val_mse[1] == pytest.approx(0.0)


def test_patience_stops_paths_early_but_keeps_the_same_choice():
    X, Y, _ = _data(600, 40, 4, seed=5, noise=2.0)
    fit, val = np.arange(400), np.arange(400, 600)
    full = select_lasso(X, Y, fit, val, n_lambdas=40, refit=False, tol=1e-10, **F64)
    early = select_lasso(X, Y, fit, val, n_lambdas=40, refit=False, tol=1e-10, patience=40, **F64)
    np.testing.assert_array_equal(full.lam, early.lam)
    short = select_lasso(X, Y, fit, val, n_lambdas=40, refit=False, tol=1e-10, patience=3, **F64)
    assert np.isnan(short.path_mse).any()
    for t in range(4):  # each path ran exactly `patience` lambdas past its best one
        k_best = int(np.nanargmin(short.path_mse[:, t]))
        ran = np.flatnonzero(~np.isnan(short.path_mse[:, t]))
        assert ran.max() == min(k_best + 3, 39)
        np.testing.assert_allclose(short.path_mse[: ran.max() + 1, t], full.path_mse[: ran.max() + 1, t], rtol=1e-9)
    assert short.n_iter.sum() < full.n_iter.sum()


# ---------------------------------------------------------------- difference in means and ridge


def test_diff_means_matches_brute_force_loop():
    X, Y, _ = _data(200, 25, 3, seed=6)
    X[:, 3] = True  # always in: weight 0
    X[:, 7] = False  # never in: weight 0
    fit, val = np.arange(150), np.arange(150, 200)
    res = diff_means(X, Y, fit_rows=fit, val_rows=val, **F64)
    Xf, Yf = X[fit], Y[fit]
    expect = np.zeros((25, 3))
    for i in range(25):
        inn = Xf[:, i]
        if inn.any() and (~inn).any():
            for t in range(3):
                expect[i, t] = Yf[inn, t].mean() - Yf[~inn, t].mean()
    np.testing.assert_allclose(res.W, expect, atol=1e-12)
    assert not res.W[3].any() and not res.W[7].any()
    np.testing.assert_allclose(res.bias, Yf.mean(0) - Xf.mean(0) @ expect, atol=1e-12)
    pv = res.bias + X[val] @ expect
    np.testing.assert_allclose(res.val_mse, ((Y[val] - pv) ** 2).mean(0), rtol=1e-10)
    np.testing.assert_allclose(res.val_r2, [r2_score(Y[val, t], pv[:, t]) for t in range(3)], rtol=1e-10)
    assert np.isnan(res.lam).all()


def test_row_spread_is_numpy_variance_and_constancy_by_blocks() -> None:
    from dmdb.regress._inputs import row_spread

    rng = np.random.default_rng(4)
    Y = (rng.normal(size=(50, 3)) + 1000.0).astype(np.float32)
    Y[:, 1] = 7.25  # constant
    rows = np.arange(2, 50, 3)
    var, constant = row_spread(Y, rows, block_rows=4)
    np.testing.assert_allclose(var, Y[rows].astype(np.float64).var(axis=0), rtol=1e-9, atol=1e-12)
    assert constant.tolist() == [False, True, False] and var[1] == 0.0


def test_examples_in_every_run_or_none_get_no_weight_along_the_whole_lasso_path() -> None:
    """Example 5 is in every run, 4 in none: their centred columns are 0, so is their weight at
    every lambda (scikit-learn's too). The float32 X'Y sums left example 5 a correlation of
    rounding noise (margins near 1000), and below that lambda the path grew it a weight of 0.16."""
    rng = np.random.default_rng(1)
    X = rng.random((800, 30)) < 0.5
    X[:, 5], X[:, 4] = True, False
    Y = (1000 + X[:, :2] @ np.array([[1.0], [0.5]]) + 5 * rng.normal(size=(800, 1))).astype(np.float32)
    path = lasso_path(X, Y, n_lambdas=30, eps=1e-6, device="cpu")
    assert not path.coefs[:, 4:6, :].any()
    assert np.delete(path.coefs[-1, :, 0], [4, 5]).all()  # at lambda near 0 every other example has one


@pytest.mark.parametrize("gram", ["matrix", "masks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ridge_gives_examples_in_every_run_or_none_exactly_zero(dtype: torch.dtype, gram: str) -> None:
    """The ridge solution's row of such an example is 0 (lambda w_i = 0), as scikit-learn's; the
    eigenbasis of G mixed rounding into it (7.9e-07 in float32, 6e-16 in float64)."""
    rng = np.random.default_rng(1)
    X = rng.random((300, 6)) < 0.5
    X[:, 5], X[:, 4] = True, False
    Y = 50 + X[:, :2] @ np.array([[1.0, -2.0], [0.5, 0.0]]) + 0.5 * rng.normal(size=(300, 2))
    fit, val = np.arange(225), np.arange(225, 300)
    res = select_ridge(X, Y, fit, val, dtype=dtype, gram=gram, device="cpu")
    assert not res.W[4:6].any()
    for t in (0, 1):
        sk = Ridge(alpha=300 * res.lam[t]).fit(X.astype(np.float64), Y[:, t])
        assert not sk.coef_[4:6].any()
        np.testing.assert_allclose(res.W[:, t], sk.coef_, atol=1e-9 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("gram", ["matrix", "masks"])
def test_lasso_when_no_example_varies(gram: str) -> None:
    """N = 1, or every example in every run or none: G = 0 and nothing to fit; the weights are 0
    and the bias is the mean margin. It was a RuntimeError (1/L overflowed float32)."""
    rng = np.random.default_rng(2)
    X = np.zeros((20, 3), dtype=bool)
    X[:, 1] = True
    Y = rng.normal(size=(20, 2))
    res = select_lasso(X, Y, np.arange(15), np.arange(15, 20), gram=gram, device="cpu")
    assert not res.W.any() and res.converged.all()
    np.testing.assert_allclose(res.bias, Y.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(res.val_mse, ((Y[15:] - Y[:15].mean(axis=0)) ** 2).mean(axis=0), rtol=1e-6)
    one = lasso_path(X[:, 1:2], Y, n_lambdas=3, gram=gram, device="cpu")
    assert not one.coefs.any()
    np.testing.assert_allclose(one.intercepts, np.tile(Y.mean(axis=0), (3, 1)), rtol=1e-6)


@pytest.mark.parametrize("n, N, gram", [(300, 20, "matrix"), (300, 20, "masks"), (300, 500, None), (300, 500, "matrix")])
def test_ridge_matches_sklearn_ridge_with_alpha_n_lambda(n: int, N: int, gram: str | None):
    """Both forms (G's eigendecomposition; the kernel form, the default with fit runs <= N/2)."""
    X, Y, _ = _data(n, N, 3, seed=7)
    Y[:, 1] = 0.5  # a constant target
    fit, val = np.arange(200), np.arange(200, 300)
    grid = [1e-3, 1e-2, 0.1, 1.0]
    res = select_ridge(X, Y, fit, val, lambdas=grid, gram=gram, **F64)
    assert not res.W[:, 1].any() and res.bias[1] == pytest.approx(0.5)
    assert res.lam[1] == 0  # as the lasso records for a constant target (it was the grid's first value)
    Xf = X.astype(np.float64)
    for t in (0, 2):
        mses = []
        for lam in grid:  # scikit-learn minimises ||y - Xw||^2 + alpha ||w||^2: alpha = n * lambda
            sk = Ridge(alpha=200 * lam).fit(Xf[fit], Y[fit, t])
            mses.append(((Y[val, t] - sk.predict(Xf[val])) ** 2).mean())
        np.testing.assert_allclose(res.path_mse[:, t], mses, rtol=1e-9)
        j = int(np.argmin(mses))
        assert res.lam[t] == grid[j]
        sk = Ridge(alpha=300 * grid[j]).fit(Xf, Y[:, t])
        np.testing.assert_allclose(res.W[:, t], sk.coef_, atol=1e-9)
        assert res.bias[t] == pytest.approx(sk.intercept_, abs=1e-9)
    # the default grid scales with the mean diagonal of G either way
    auto = select_ridge(X, Y, fit, val, gram=gram, **F64)
    Xc = Xf[fit] - Xf[fit].mean(axis=0)
    scale = (Xc**2).mean()
    assert np.isclose(auto.lambdas[:, 0], scale, rtol=1e-12).sum() == 1
    assert np.isclose(auto.lambdas[:, 0], 1e-3 * scale, rtol=1e-12).sum() == 1


def test_ridge_grid_grows_where_targets_want_more() -> None:
    """Fewer runs than examples and little noise want less shrinkage than the default grid offers;
    pure noise wants more. The grid grows at that end until the best lambda is inside it (float64;
    float32 stops near the default bottom, where smaller lambdas would be rounding noise), and the
    choice is still the brute-force argmin of scikit-learn's validation MSE over the grid used."""
    X, Y, _ = _data(300, 500, 2, seed=7, k_true=400, noise=0.01)
    Y[:, 1] = np.random.default_rng(0).normal(size=300)  # no signal at all
    fit, val = np.arange(200), np.arange(200, 300)
    reports: list[tuple[int, int]] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage == "ridge grid":
            reports.append((done, total))

    res = select_ridge(X, Y, fit, val, **F64, progress=progress)
    Xf = X.astype(np.float64)
    scale = ((Xf[fit] - Xf[fit].mean(axis=0)) ** 2).mean()
    grid = res.lambdas[:, 0]
    assert grid[0] < 1e-6 * scale and grid[-1] > 1e6 * scale  # grown at both ends
    # one bar over every lambda evaluated: it counted 1..4 again for each widening, ending at "4/4"
    assert [d for d, _ in reports] == list(range(1, grid.size + 1)) and reports[-1] == (grid.size, grid.size)
    assert all(t >= d for d, t in reports) and reports[12] == (13, 13)
    assert res.lam[0] < 1e-3 * scale and res.lam[1] > 1e3 * scale  # both outside the default grid
    for t in (0, 1):
        mses = [((Y[val, t] - Ridge(alpha=200 * lam).fit(Xf[fit], Y[fit, t]).predict(Xf[val])) ** 2).mean()
                for lam in grid]
        np.testing.assert_allclose(res.path_mse[:, t], mses, rtol=1e-6)
        assert res.lam[t] == grid[int(np.argmin(mses))]
    f32 = select_ridge(X, Y, fit, val, dtype=torch.float32)
    assert f32.lambdas[0, 0] == pytest.approx(1e-3 * scale, rel=1e-5) and f32.lambdas[-1, 0] > 1e6 * scale


# ---------------------------------------------------------------- metrics


def test_spearman_matches_scipy_with_ties_and_nan_for_constant():
    rng = np.random.default_rng(8)
    pred = rng.integers(0, 5, size=(60, 3)).astype(float)  # many ties
    actual = pred + rng.integers(0, 3, size=(60, 3))
    actual[:, 2] = 7.0
    rho = spearman_per_target(pred, actual)
    for t in range(2):
        assert rho[t] == pytest.approx(spearmanr(pred[:, t], actual[:, t]).statistic, abs=1e-12)
    assert np.isnan(rho[2])


def test_r2_matches_sklearn_and_nan_for_constant():
    rng = np.random.default_rng(9)
    actual = rng.normal(size=(40, 3))
    pred = actual + rng.normal(scale=0.5, size=(40, 3))
    actual[:, 2] = 3.0
    r2 = r2_per_target(pred, actual)
    np.testing.assert_allclose(r2[:2], r2_score(actual[:, :2], pred[:, :2], multioutput="raw_values"), rtol=1e-12)
    assert 0.5 < r2[0] < 1
    assert np.isnan(r2[2])


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_fit_error():
    X, Y, _ = _data(50, 10, 2, seed=9)
    Ynan = Y.copy()
    Ynan[3, 1] = np.nan
    with pytest.raises(FitError, match="NaN"):
        lasso_path(X, Ynan, device="cpu")
    with pytest.raises(FitError, match="too few"):
        lasso_path(X[:1], Y[:1], device="cpu")
    with pytest.raises(FitError, match="too few"):
        select_lasso(X, Y, [0], [1, 2], device="cpu")
    with pytest.raises(FitError, match="runs"):
        select_ridge(X, Y[:40], np.arange(30), np.arange(30, 40), device="cpu")
    with pytest.raises(FitError, match="overlap"):
        select_lasso(X, Y, np.arange(30), np.arange(20, 50), device="cpu")
    with pytest.raises(FitError, match="0 and 1"):
        diff_means(X.astype(float) * 2, Y, device="cpu")
    with pytest.raises(FitError, match="2-D"):
        diff_means(X[0], Y, device="cpu")
    with pytest.raises(FitError, match="W has"):
        predict(X, np.zeros((11, 2)), np.zeros(2))
    if not torch.cuda.is_available():
        with pytest.raises(FitError, match="CUDA"):
            lasso_path(X, Y, device="cuda")


@pytest.mark.parametrize("vnni, amx, cuda, int8", [(False, False, False, False), (True, False, False, True),
                                                   (False, True, False, True), (True, True, True, False)])
def test_int8_products_only_where_the_cpu_has_int8_instructions(
    vnni: bool, amx: bool, cuda: bool, int8: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch._int_mm without VNNI or AMX is a plain loop (69 s of a 76 s lasso path on an AVX2 AMD
    CPU, where the float32 products take about 1 s): the int8 path is taken only with them."""
    from dmdb.regress import stats

    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert stats._use_int8(torch.device("cuda" if cuda else "cpu")) is int8


@pytest.mark.parametrize("int8", [True, False])
@pytest.mark.parametrize("n, N", [(7, 5), (513, 17), (300, 1030), (50, 1)])
def test_mask_counts_are_exact(int8: bool, n: int, N: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """X'X from int8 products (the CPU path) and from float32 panels equals numpy's count, with
    several row panels, and across a float64 flush of the float32 sums."""
    from dmdb.regress import stats

    monkeypatch.setattr(stats, "_PANEL_BYTES", 4 * N * 3)  # panels of 3 rows
    monkeypatch.setattr(stats, "_EXACT_F32_ROWS", 250)  # float32 sums flush every ~250 rows
    X = np.random.default_rng(n).random((n, N)) < 0.4
    counts = stats._Counts(N, torch.device("cpu"), torch.float32, int8)
    for a in range(0, n, 200):
        counts.add(torch.from_numpy(X[a : a + 200]).float())
    np.testing.assert_array_equal(counts.total().numpy(), X.astype(np.float64).T @ X)


@pytest.mark.parametrize("int8", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_centred_in_place_then_extended(dtype: torch.dtype, int8: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """take_gram gives numpy's centred Gram of the fit rows (written over the counts when the
    widths match); extend_gram turns it into the Gram of fit + extra rows, panel by panel.
    int8=False runs the float products that CUDA uses, here on the CPU."""
    from dmdb.regress import stats

    monkeypatch.setattr(stats, "_PANEL_BYTES", 8 * 40 * 7)  # panels of 7 rows
    monkeypatch.setattr(stats, "_use_int8", lambda device: int8)
    rng = np.random.default_rng(3)
    X = rng.random((500, 40)) < 0.3
    Y = rng.normal(size=(500, 2))
    fit, extra = np.arange(0, 350), np.arange(350, 500)
    dev = torch.device("cpu")
    st_fit = stats.gram_stats(X, Y, fit, device=dev, dtype=dtype, block_rows=64)
    st_extra = stats.gram_stats(X, Y, extra, device=dev, dtype=dtype, with_gram=False, shift=st_fit.shift)
    counts = st_fit.xtx
    G = st_fit.take_gram(dtype)
    assert st_fit.xtx is None and G.dtype == dtype
    # counts are int32 (int8 products) or the solver's dtype: G reuses them when the widths match
    assert (G.data_ptr() == counts.data_ptr()) == (dtype == torch.float32 or not int8)

    def centred(rows: np.ndarray) -> np.ndarray:
        Xc = X[rows] - X[rows].mean(axis=0)
        return Xc.T @ Xc / rows.size

    atol = 1e-6 if dtype == torch.float32 else 1e-13
    np.testing.assert_allclose(G.numpy(), centred(fit), atol=atol)
    xty_buffer = st_fit.xty
    st_all = st_fit.take_sum(st_extra)
    # the sum is written in the fit runs' X'Y buffer, and taken from both
    assert st_all.xty is xty_buffer and st_fit.xty is None and st_extra.xty is None
    with pytest.raises(FitError, match="hold no X'Y sums"):
        st_fit.cross(dtype)
    with pytest.raises(FitError, match="add 150 runs to the held ones but 149 rows"):
        stats.extend_gram(G, st_fit, st_all, X, extra[1:])
    stats.extend_gram(G, st_fit, st_all, X, extra, block_rows=64)
    np.testing.assert_allclose(G.numpy(), centred(np.arange(500)), atol=atol)
    c, yy = st_all.cross(torch.float64)
    Yc = Y - Y.mean(axis=0)
    Xc = X - X.mean(axis=0)
    np.testing.assert_allclose(c.numpy(), Xc.T @ Yc / 500, atol=atol)  # X'Y blocks in the solver dtype
    np.testing.assert_allclose(yy.numpy(), (Yc**2).mean(axis=0), atol=1e-12)


@pytest.mark.parametrize("n, N", [(3000, 400), (5000, 1200), (300, 400), (400, 1100)])
def test_curvature_brackets_the_spectrum(n: int, N: int) -> None:
    """L is never below G's top eigenvalue, mu never above its bottom one (0 when singular);
    G held as a matrix or applied through the centred masks gives the same step."""
    from dmdb.regress._fista import curvature
    from dmdb.regress.operators import CentredMasks, GramMatrix

    X = (np.random.default_rng(N).random((n, N)) < 0.5).astype(np.float64)
    Xc = X - X.mean(axis=0)
    G = Xc.T @ Xc / n
    ev = np.linalg.eigvalsh(G)
    masks = CentredMasks(X, np.arange(n), torch.from_numpy(X.mean(axis=0)), device=torch.device("cpu"),
                         dtype=torch.float64, block_rows=128)
    for op in (GramMatrix(torch.from_numpy(G), n), masks):
        c = curvature(op)
        assert ev[-1] <= c.L <= 1.05 * ev[-1]
        assert 0 <= c.mu <= ev[0] + 1e-12
        if n > 2 * N:
            assert c.mu >= 0.3 * ev[0]  # strongly convex: momentum is actually used
        else:
            assert c.mu == 0.0


def test_masks_form_holds_centred_rows_and_extends_like_the_matrix() -> None:
    """CentredMasks applies exactly numpy's centred Gram of its rows, before and after `extend`
    re-centres them and appends more rows (the refit); the automatic choice takes it for runs
    <= N/2 and agrees with the matrix form and scikit-learn on such a problem."""
    from dmdb.regress import stats
    from dmdb.regress.operators import CentredMasks, choose_form

    rng = np.random.default_rng(8)
    X = rng.random((90, 200)) < 0.5
    Y = rng.normal(size=(90, 2))
    fit, extra = np.arange(60), np.arange(60, 90)
    dev = torch.device("cpu")
    st_fit = stats.gram_stats(X, Y, fit, device=dev, dtype=torch.float64, with_gram=False)
    st_extra = stats.gram_stats(X, Y, extra, device=dev, dtype=torch.float64, with_gram=False, shift=st_fit.shift)
    op = CentredMasks(X, fit, st_fit.x_mean, reserve=extra.size, device=dev, dtype=torch.float64, block_rows=16)
    Z = torch.from_numpy(rng.normal(size=(3, 200)))

    def gram(rows: np.ndarray) -> np.ndarray:
        Xc = X[rows] - X[rows].mean(axis=0)
        return Xc.T @ Xc / rows.size

    np.testing.assert_allclose(op.product(Z).numpy(), Z.numpy() @ gram(fit), atol=1e-12)
    st_all = st_fit.take_sum(st_extra)
    op.extend(st_fit, st_all, X, extra)
    np.testing.assert_allclose(op.product(Z).numpy(), Z.numpy() @ gram(np.arange(90)), atol=1e-12)
    with pytest.raises(FitError, match="room for 90 runs"):
        more = stats.gram_stats(X, Y, extra, device=dev, dtype=torch.float64, with_gram=False, shift=st_fit.shift)
        op.extend(st_all, st_all.take_sum(more), X, extra)
    # ...and the refused extend left the held rows as they were
    np.testing.assert_allclose(op.product(Z).numpy(), Z.numpy() @ gram(np.arange(90)), atol=1e-12)
    assert choose_form(100, 200) == "masks" and choose_form(101, 200) == "matrix"
    with pytest.raises(FitError, match="gram form"):
        choose_form(10, 20, "dense")
    # runs < N: the automatic (masks) form and the matrix form both match scikit-learn
    Xw, Yw, _ = _data(80, 200, 2, seed=9)
    lams = np.array([0.3, 0.1, 0.03])
    auto = lasso_path(Xw, Yw, lambdas=lams, tol=1e-14, max_iter=200_000, **F64)
    held = lasso_path(Xw, Yw, lambdas=lams, tol=1e-14, max_iter=200_000, gram="matrix", **F64)
    for t in range(2):
        coefs, intercepts = _sk_path(Xw.astype(np.float64), Yw[:, t], lams)
        np.testing.assert_allclose(auto.coefs[:, :, t], coefs, atol=1e-7)
        np.testing.assert_allclose(held.coefs[:, :, t], coefs, atol=1e-7)
        np.testing.assert_allclose(auto.intercepts[:, t], intercepts, atol=1e-7)


@pytest.mark.parametrize("as_floats", [False, True])
@pytest.mark.parametrize("kind", ["bool", "tensor", "packed"])
def test_validation_rows_are_held_as_bytes_and_multiply_as_the_centred_masks(kind: str, as_floats: bool) -> None:
    """The validation masks are held as one byte an entry (or centred floats, when asked), and their
    products, taken in row blocks (here 7 rows, the last block short), are numpy's product of the
    centred rows."""
    from dmdb.packing import PackedMasks, pack_masks
    from dmdb.regress._common import ValidationRows, prepare

    rng = np.random.default_rng(11)
    X = rng.random((60, 13)) < 0.5
    Y = rng.normal(size=(60, 4))
    rows = np.arange(1, 60, 3)  # 20 rows, not contiguous
    m, ym = rng.random(13), rng.normal(size=4)
    given = {"bool": X, "tensor": torch.from_numpy(X.astype(np.float32)), "packed": PackedMasks(pack_masks(X), 13)}[kind]
    vr = ValidationRows(prepare(given, Y, "cpu", torch.float64), rows, torch.from_numpy(m), torch.from_numpy(ym),
                        block_rows=7, as_floats=as_floats)
    assert vr.masks.dtype == (torch.float64 if as_floats else torch.uint8) and vr.masks.shape == (20, 13)
    M = rng.normal(size=(13, 5))
    np.testing.assert_allclose(vr.times(torch.from_numpy(M)).numpy(), (X[rows] - m) @ M, atol=1e-12)
    np.testing.assert_allclose(vr.y.numpy(), Y[rows] - ym, atol=1e-12)
    with pytest.raises(FitError, match="only 0 and 1"):
        ValidationRows(prepare(np.where(X, 2, 0), Y, "cpu", torch.float64), rows, torch.from_numpy(m),
                       torch.from_numpy(ym))


def test_float32_margins_stay_float32_and_fit_like_float64() -> None:
    """Margins given as float32 are not widened to a float64 copy, and every estimator fits them
    as it fits the same values in float64 (sums run in float64 by blocks)."""
    from dmdb.regress._common import prepare
    from dmdb.regress._inputs import row_mean

    rng = np.random.default_rng(5)
    X = rng.random((400, 30)) < 0.5
    Y32 = (X[:, :3] @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=400) + 100.0).astype(np.float32)[:, None]
    Y64 = Y32.astype(np.float64)
    assert prepare(X, Y32, "cpu", torch.float64).Y.dtype == np.float32
    rows = np.arange(3, 400, 7)
    np.testing.assert_allclose(row_mean(Y32, rows, block_rows=5), Y64[rows].mean(axis=0), rtol=1e-12)
    fit, val = np.arange(320), np.arange(320, 400)
    for solve in (select_lasso, select_ridge):
        a, b = solve(X, Y32, fit, val, **F64), solve(X, Y64, fit, val, **F64)
        np.testing.assert_allclose(a.W, b.W, atol=1e-10)
        np.testing.assert_allclose(a.bias, b.bias, atol=1e-9)
    np.testing.assert_allclose(diff_means(X, Y32, **F64).W, diff_means(X, Y64, **F64).W, atol=1e-10)


@pytest.mark.parametrize("gram", ["matrix", "masks"])
def test_solvers_take_packed_masks_as_the_bool_matrix(gram: str) -> None:
    """The fit holds its masks packed (8 examples a byte): every solver and predict must give
    exactly what they give on the bool matrix, in either form of G."""
    from dmdb.packing import PackedMasks, pack_masks

    X, Y, _ = _data(120, 21, 3, seed=9)  # 21 examples: the last byte is part padding
    P = PackedMasks(pack_masks(X), 21)
    fit, val = np.arange(0, 120, 2)[:50], np.arange(1, 120, 2)[:30]  # not contiguous
    for solve in (
        lambda M: select_lasso(M, Y, fit, val, n_lambdas=8, gram=gram, **F64),
        lambda M: select_ridge(M, Y, fit, val, gram=gram, **F64),
        lambda M: diff_means(M, Y, fit_rows=fit, val_rows=val, **F64),
    ):
        a, b = solve(X), solve(P)
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.bias, b.bias)
        np.testing.assert_array_equal(a.val_mse, b.val_mse)
    np.testing.assert_array_equal(predict(P, a.W, a.bias), predict(X, a.W, a.bias))
