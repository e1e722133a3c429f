"""Moderation (PROCESS model 1): statsmodels refits at centred W and the Johnson–Neyman closed form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.psychosocial import moderation


def _simulate(n, slope, interaction, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    w = rng.uniform(0, 10, size=n)
    y = slope * x + 0.1 * w + interaction * x * w + rng.normal(size=n)
    return pd.DataFrame({"x": x, "w": w, "y": y, "c": rng.normal(size=n)})


def test_conditional_effects_equal_refits_with_centred_moderator():
    df = _simulate(250, 0.2, 0.12, seed=1)
    res = moderation(df, "x", "w", "y", covariates="c")
    for value in np.percentile(df["w"], [16, 50, 84]):
        fit = smf.ols("y ~ x * wc + c", df.assign(wc=df["w"] - value)).fit()
        row = res.loc[f"conditional[w={value:g}]"]
        np.testing.assert_allclose(row["estimate"], fit.params["x"], rtol=1e-9)
        np.testing.assert_allclose(row["se"], fit.bse["x"], rtol=1e-9)
        np.testing.assert_allclose(row["p"], fit.pvalues["x"], rtol=1e-6)
    full = smf.ols("y ~ x * w + c", df).fit()
    np.testing.assert_allclose(res.loc["interaction", "estimate"], full.params["x:w"], rtol=1e-9)
    np.testing.assert_allclose(res.loc["interaction", "p"], full.pvalues["x:w"], rtol=1e-6)
    assert res.loc["interaction", "p"] < 1e-3  # planted interaction found


def test_johnson_neyman_boundaries_are_where_t_equals_critical_value():
    df = _simulate(300, -0.3, 0.1, seed=2)
    res = moderation(df, "x", "w", "y")
    jn = res.attrs["johnson_neyman"]
    boundaries = jn["w_high"].to_numpy()[:-1]
    assert boundaries.size >= 1
    crit = stats.t.ppf(0.975, res.loc["x", "df"])
    for value in boundaries:
        fit = smf.ols("y ~ x * wc", df.assign(wc=df["w"] - value)).fit()
        np.testing.assert_allclose(abs(fit.tvalues["x"]), crit, rtol=1e-7)
    # Regions alternate between significant and not.
    flags = jn["significant"].to_numpy()
    assert all(flags[i] != flags[i + 1] for i in range(len(flags) - 1))
    np.testing.assert_allclose(jn["proportion_of_sample"].sum(), 1.0)
    curve = res.attrs["curve"]
    assert len(curve) == 101 and (curve["ci_low"] <= curve["estimate"]).all()


def test_two_level_text_moderator_is_coded_and_stated():
    rng = np.random.default_rng(3)
    n = 200
    sex = rng.choice(["F", "M"], size=n)
    x = rng.normal(size=n)
    y = np.where(sex == "F", 0.6, 0.0) * x + rng.normal(size=n)
    res = moderation(pd.DataFrame({"x": x, "sex": sex, "y": y}), "x", "sex", "y")
    assert set(res.index) >= {"conditional[sex=0]", "conditional[sex=1]"}
    assert "sex coded F = 0, M = 1" in res.attrs["note"]
    assert "johnson_neyman" not in res.attrs
    assert res.loc["conditional[sex=0]", "p"] < 1e-4 < res.loc["conditional[sex=1]", "p"]


@pytest.mark.slow
def test_null_interaction_false_positive_rate():
    p = [moderation(_simulate(60, 0.3, 0.0, seed=100 + r), "x", "w", "y").loc["interaction", "p"]
         for r in range(200)]
    rate = np.mean(np.array(p) < 0.05)
    assert 0.01 <= rate <= 0.1, rate


def test_bad_inputs():
    df = _simulate(40, 0.2, 0.1)
    with pytest.raises(BadInputError, match="constant"):
        moderation(df.assign(w=3.0), "x", "w", "y")
    with pytest.raises(BadInputError, match="non-numeric"):
        moderation(df.assign(w=["a", "b", "c", "d"] * 10), "x", "w", "y")


def test_tal_or_real_data():
    data = pd.read_csv(shared_path("data/r_datasets/tal_or.csv"))
    res = moderation(data, "cond", "age", "reaction")
    fit = smf.ols("reaction ~ cond * age", data).fit()
    np.testing.assert_allclose(res.loc["x", "estimate"], fit.params["cond"], rtol=1e-9)
    np.testing.assert_allclose(res.loc["interaction", "se"], fit.bse["cond:age"], rtol=1e-9)
