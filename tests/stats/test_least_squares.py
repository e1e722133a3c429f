"""The least-squares engine against statsmodels' OLS, outcome by outcome."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from theramark.errors import AnalysisError, BadInputError
from theramark.stats import Projection, ols, solve_normal_equations


def _data(seed: int, n: int = 60, p: int = 4, k: int = 5):
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    beta = rng.normal(size=(p, k))
    y = x @ beta + rng.normal(scale=rng.uniform(0.5, 2.0, size=k), size=(n, k))
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_outcomes_match_statsmodels(seed):
    x, y = _data(seed)
    fit = ols(x, y)
    assert fit.coef.shape == (4, 5) and fit.se.shape == (4, 5) and fit.resid.shape == (60, 5)
    assert fit.rank == 4
    for j in range(y.shape[1]):
        ref = sm.OLS(y[:, j], x).fit()
        np.testing.assert_allclose(fit.coef[:, j], ref.params, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fit.se[:, j], ref.bse, rtol=1e-10)
        np.testing.assert_allclose(fit.resid[:, j], ref.resid, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fit.sigma2[j], ref.scale, rtol=1e-10)
        np.testing.assert_allclose(fit.cov(j), ref.cov_params(), rtol=1e-9, atol=1e-14)
        assert fit.df_resid == ref.df_resid
        np.testing.assert_allclose(fit.rss[j], ref.ssr, rtol=1e-10)
    np.testing.assert_allclose(fit.cov_unscaled, np.linalg.inv(x.T @ x), rtol=1e-9)


def test_one_outcome_gives_two_dimensional_arrays():
    x, y = _data(3, k=1)
    fit = ols(x, y[:, 0])
    ref = sm.OLS(y[:, 0], x).fit()
    assert fit.coef.shape == (4, 1)
    np.testing.assert_allclose(fit.coef[:, 0], ref.params, rtol=1e-10)


def test_contrasts_match_statsmodels_t_test():
    x, y = _data(4)
    fit = ols(x, y)
    vector = np.array([0.0, 1.0, -1.0, 0.0])
    matrix = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]])
    one = fit.contrast(vector)
    many = fit.contrast(matrix)
    assert one.estimate.shape == (5,) and many.t.shape == (2, 5) and one.df == 56
    for j in range(y.shape[1]):
        ref = sm.OLS(y[:, j], x).fit()
        test = ref.t_test(vector)
        np.testing.assert_allclose(one.estimate[j], test.effect[0], rtol=1e-10)
        np.testing.assert_allclose(one.se[j], test.sd[0, 0], rtol=1e-10)
        np.testing.assert_allclose(one.t[j], test.tvalue[0, 0], rtol=1e-10)
        test = ref.t_test(matrix)
        np.testing.assert_allclose(many.t[:, j], np.ravel(test.tvalue), rtol=1e-10)
    with pytest.raises(BadInputError, match="contrast"):
        fit.contrast(np.ones(3))


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
def test_rank_deficient_design():
    x, y = _data(5)
    deficient = np.column_stack([x, x[:, 1] - 2 * x[:, 2]])  # a fifth column inside the span
    with pytest.raises(AnalysisError, match="rank deficient.*rank 4 for 5"):
        ols(deficient, y, what="test model")
    fit = ols(deficient, y, rank_deficient="minimum_norm")
    assert fit.rank == 4 and fit.df_resid == 60 - 4
    lstsq, *_ = np.linalg.lstsq(deficient, y, rcond=None)
    np.testing.assert_allclose(fit.coef, lstsq, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.cov_unscaled, np.linalg.pinv(deficient.T @ deficient),
                               rtol=1e-6, atol=1e-10)
    for j in range(y.shape[1]):
        ref = sm.OLS(y[:, j], deficient).fit()  # statsmodels uses the pseudo-inverse too
        np.testing.assert_allclose(fit.coef[:, j], ref.params, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.se[:, j], ref.bse, rtol=1e-6)
        np.testing.assert_allclose(fit.resid[:, j], ref.resid, rtol=1e-8, atol=1e-10)
        assert fit.df_resid == ref.df_resid
    # b1 + b5 (estimable: the coefficient of x1 once x1 - 2 x2 is expanded) equals the full fit's b1
    full = ols(x, y)
    np.testing.assert_allclose(fit.contrast(np.r_[0, 1.0, 0, 0, 1.0]).estimate,
                               full.contrast(np.r_[0, 1.0, 0, 0]).estimate, rtol=1e-8)


def test_no_residual_dof_and_bad_shapes():
    x, y = _data(6, n=4)
    fit = ols(x, y)
    assert fit.df_resid == 0 and np.isnan(fit.sigma2).all()
    with pytest.raises(BadInputError, match="same rows"):
        ols(x, y[:3])
    with pytest.raises(BadInputError, match="rank_deficient"):
        ols(x, y, rank_deficient="ignore")


def test_projection_residuals_equal_ols_residuals():
    x, y = _data(7)
    projection = Projection(np.column_stack([x, x[:, 1]]))  # rank deficient: still a projector
    assert projection.rank == 4
    np.testing.assert_allclose(projection.residualize(y), ols(x, y).resid, atol=1e-10)
    np.testing.assert_allclose(projection.fitted(y) + projection.residualize(y), y, atol=1e-12)
    empty = Projection(np.zeros((60, 0)))
    assert empty.rank == 0 and np.array_equal(empty.residualize(y), y)


def test_batched_normal_equations_flag_singular_systems():
    x, y = _data(8, k=1)
    x[:, 3] = np.arange(60) % 2  # a dummy
    rng = np.random.default_rng(8)
    counts = rng.integers(0, 3, size=(6, 60)).astype(float)
    counts[2, 1::2] = 0.0  # a resample without the dummy's second level: singular
    gram = np.einsum("bn,np,nq->bpq", counts, x, x)
    rhs = np.einsum("bn,np,n->bp", counts, x, y[:, 0])
    beta = solve_normal_equations(gram, rhs)
    assert np.isnan(beta[2]).all() and np.isfinite(np.delete(beta, 2, axis=0)).all()
    for b in (0, 1, 3):
        weighted = sm.WLS(y[:, 0], x, weights=counts[b]).fit()
        np.testing.assert_allclose(beta[b], weighted.params, rtol=1e-9)
