"""Polychoric correlations: bivariate normal CDF, tetrachoric closed form, recovery of latent ρ."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from theramark.errors import BadInputError
from theramark.psychosocial.polychoric import bivariate_normal_cdf, polychoric, polychoric_matrix


@pytest.mark.parametrize("rho", [-0.95, -0.5, 0.0, 0.3, 0.9, 0.99])
def test_bivariate_normal_cdf_matches_scipy(rho):
    h = np.array([0.3, 1.5, -2.0, 0.0, 8.0])
    k = np.array([-0.2, 1.4, 0.5, 0.0, 0.7])
    reference = [multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([a, b]) for a, b in zip(h, k,
                                                                                                       strict=True)]
    np.testing.assert_allclose(bivariate_normal_cdf(h, k, rho), reference, atol=1e-7)
    assert bivariate_normal_cdf(np.inf, 0.4, rho) == pytest.approx(0.6554217416, abs=1e-9)


@pytest.mark.parametrize("a", [0.3, 0.4, 0.15])
def test_tetrachoric_median_split_closed_form(a):
    # thresholds at 0: P(X ≤ 0, Y ≤ 0) = 1/4 + asin(ρ) / (2π)  ⇒  ρ = sin(2π (a − 1/4))
    n = 1000
    n11 = int(a * n)
    n12 = n // 2 - n11
    x = np.repeat([0, 0, 1, 1], [n11, n12, n12, n11])
    y = np.repeat([0, 1, 0, 1], [n11, n12, n12, n11])
    assert polychoric(x, y) == pytest.approx(np.sin(2 * np.pi * (n11 / n - 0.25)), abs=1e-6)


def test_recovers_latent_correlation_matrix():
    rng = np.random.default_rng(0)
    R = np.array([[1, 0.5, -0.3], [0.5, 1, 0.2], [-0.3, 0.2, 1]])
    Z = rng.multivariate_normal(np.zeros(3), R, size=8000)
    items = pd.DataFrame({
        "a": np.digitize(Z[:, 0], [-1.2, -0.2, 0.7, 1.5]) + 1,
        "b": np.digitize(Z[:, 1], [0.0, 1.0]) + 1,
        "c": np.digitize(Z[:, 2], [-0.5, 0.3, 0.9]),
    })
    estimate = polychoric_matrix(items).to_numpy()
    np.testing.assert_allclose(estimate, R, atol=0.04)
    # Pearson on the categories is attenuated; polychoric is not
    pearson = items.corr().to_numpy()
    assert abs(pearson[0, 1]) < abs(estimate[0, 1])


def test_bad_input():
    with pytest.raises(BadInputError, match="categories"):
        polychoric_matrix(pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0) % 3}))
    with pytest.raises(BadInputError, match="missing"):
        polychoric_matrix(pd.DataFrame({"a": [1, 2, np.nan], "b": [1, 2, 1]}))


def test_published_two_step_estimate():
    """Ruby statsample-bivariate-extension's documented two-step example (3 × 3 table): r = 0.1683,
    thresholds X 0.4307, 1.2408 and Y -0.1924, 1.2720 (SciRuby notebook "Polychoric Correlation")."""
    table = np.array([[52, 58, 8], [18, 15, 7], [5, 11, 3]])
    x = np.repeat(np.repeat(np.arange(3), 3), table.ravel())
    y = np.repeat(np.tile(np.arange(3), 3), table.ravel())
    assert polychoric(x, y) == pytest.approx(0.1683, abs=5e-5)
