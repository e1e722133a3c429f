"""Segmented regression against R's segmented (psych::bfi), brute force and planted thresholds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.psychosocial import breakpoint


@pytest.fixture(scope="module")
def bfi() -> pd.DataFrame:
    data = pd.read_csv(shared_path("data/r_datasets/bfi.csv"))
    # N-mean as in the oracle (complete N items: n = 2694).
    return data.assign(neuroticism=data[["N1", "N2", "N3", "N4", "N5"]].mean(axis=1, skipna=False))


@pytest.fixture(scope="module")
def oracle() -> dict:
    return json.loads(shared_path("oracles/r_reference.json").read_text())["breakpoint_bfi_age_neuroticism"]


def _rss_at(x, y, psi):
    design = np.column_stack([np.ones_like(x), x, np.maximum(x - psi, 0)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.sum((y - design @ coef) ** 2))


def test_reproduces_segmented_local_optimum(bfi, oracle):
    # segmented's iterations stop at ψ ≈ 40; searching near it reproduces R's numbers.
    res = breakpoint(bfi, "age", "neuroticism", bounds=(35, 45)).iloc[0]
    assert res["n"] == oracle["n"] and res["n_dropped"] == 2800 - oracle["n"]
    np.testing.assert_allclose(res["breakpoint"], oracle["breakpoint"], atol=1e-4)
    np.testing.assert_allclose(res["slope_left"], oracle["slope_left"], rtol=1e-4)
    np.testing.assert_allclose(res["slope_right"], oracle["slope_right"], rtol=1e-4)
    np.testing.assert_allclose(res["davies_p"], oracle["davies_p"], rtol=1e-8)
    # SE(ψ) = SE(γ)/|β| (Muggeo); segmented takes β from its previous iteration, which differs a
    # little from the converged β when ψ sits on a data value (integer ages): within 3%.
    np.testing.assert_allclose(res["breakpoint_se"], oracle["breakpoint_se"], rtol=0.03)


def test_finds_the_global_optimum(bfi, oracle):
    res = breakpoint(bfi, "age", "neuroticism").iloc[0]
    data = bfi[["age", "neuroticism"]].dropna()
    x, y = data["age"].to_numpy(float), data["neuroticism"].to_numpy()
    # Lower RSS than R's reported (local) optimum, and no point of a fine grid does better.
    assert res["rss"] < _rss_at(x, y, oracle["breakpoint"]) - 1e-3
    grid = np.linspace(np.unique(x)[1], np.unique(x)[-2], 3001)
    brute = min(_rss_at(x, y, p) for p in grid[::10])
    assert res["rss"] <= brute + 1e-9
    np.testing.assert_allclose(res["rss"], _rss_at(x, y, res["breakpoint"]), rtol=1e-12)
    # Davies' test does not depend on the estimate.
    np.testing.assert_allclose(res["davies_p"], oracle["davies_p"], rtol=1e-8)


def _threshold_data(n, psi, left, right, seed, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=n)
    y = 2 + left * x + (right - left) * np.maximum(x - psi, 0) + noise * rng.normal(size=n)
    return pd.DataFrame({"strain": x, "shaps": y, "age": rng.normal(40, 10, size=n)})


@pytest.mark.parametrize("n", [150, 600])  # the two branches of Davies' test (n ≤ 300, n > 300)
def test_planted_threshold_is_recovered(n):
    res = breakpoint(_threshold_data(n, 6.0, 0.0, 1.5, seed=n), "strain", "shaps").iloc[0]
    assert res["ci_low"] < 6.0 < res["ci_high"]
    assert abs(res["breakpoint"] - 6.0) < 0.5
    assert abs(res["slope_left"]) < 3 * res["slope_left_se"]
    assert abs(res["slope_right"] - 1.5) < 3 * res["slope_right_se"]
    assert res["davies_p"] < 1e-6


def test_covariates_and_missing_rows():
    df = _threshold_data(200, 4.0, 0.2, 1.0, seed=3)
    df.loc[:4, "shaps"] = np.nan
    res = breakpoint(df, "strain", "shaps", covariates="age")
    assert res.loc[0, "n_dropped"] == 5 and res.loc[0, "n"] == 195
    assert "age" in set(res.attrs["coefficients"]["term"])


@pytest.mark.slow
def test_davies_false_positive_rate_on_linear_data():
    # Davies' p is an upper bound: under a straight line it rejects at most at the nominal rate.
    p = np.array([breakpoint(_threshold_data(80, 5.0, 0.5, 0.5, seed=500 + r), "strain",
                             "shaps").loc[0, "davies_p"] for r in range(150)])
    rate = np.mean(p < 0.05)
    assert rate <= 0.09, rate


def test_bad_inputs():
    df = _threshold_data(50, 5.0, 0.0, 1.0, seed=1)
    with pytest.raises(BadInputError, match="distinct value"):
        breakpoint(df.assign(strain=np.repeat([1.0, 2.0, 3.0], [20, 20, 10])), "strain", "shaps")
    with pytest.raises(BadInputError, match="at least 10"):
        breakpoint(df.head(8), "strain", "shaps")
    with pytest.raises(BadInputError, match="constant"):
        breakpoint(df.assign(shaps=1.0), "strain", "shaps")
    with pytest.raises(BadInputError, match="no room"):
        breakpoint(df, "strain", "shaps", bounds=(20, 30))
