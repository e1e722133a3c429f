"""Mediation and moderated mediation against R (lm), pingouin, statsmodels and closed forms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.psychosocial import mediation
from theramark.psychosocial.mediation import MomentBootstrap, bootstrap_counts


def _simulate(n, a, b, c=0.0, seed=0, n_cov=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    covs = rng.normal(size=(n, n_cov))
    m = a * x + covs.sum(axis=1) * 0.3 + rng.normal(size=n)
    y = b * m + c * x + covs.sum(axis=1) * 0.2 + rng.normal(size=n)
    frame = pd.DataFrame({"x": x, "m": m, "y": y})
    for j in range(n_cov):
        frame[f"c{j}"] = covs[:, j]
    return frame


@pytest.fixture(scope="module")
def tal_or() -> pd.DataFrame:
    return pd.read_csv(shared_path("data/r_datasets/tal_or.csv"))


@pytest.fixture(scope="module")
def oracle() -> dict:
    return json.loads(shared_path("oracles/r_reference.json").read_text())


def test_simple_mediation_matches_r_lm(tal_or, oracle):
    ref = oracle["mediation_simple"]
    res = mediation(tal_or, "cond", "pmi", "reaction", n_boot=500, random_state=1)
    # Same OLS fits as R's lm: agreement to floating-point precision.
    tol = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.loc["a", "estimate"], ref["a"], **tol)
    np.testing.assert_allclose(res.loc["b", "estimate"], ref["b"], **tol)
    np.testing.assert_allclose(res.loc["total", "estimate"], ref["c_total"], **tol)
    np.testing.assert_allclose(res.loc["direct", "estimate"], ref["c_direct"], **tol)
    np.testing.assert_allclose(res.loc["a", "se"], ref["se_a"], **tol)
    np.testing.assert_allclose(res.loc["b", "se"], ref["se_b"], **tol)
    np.testing.assert_allclose(res.loc["direct", "se"], ref["se_c_direct"], **tol)
    np.testing.assert_allclose(res.loc["indirect", "estimate"], ref["indirect"], **tol)
    assert res.attrs["n"] == ref["n"] and res.attrs["n_dropped"] == 0


def test_model7_matches_r(tal_or, oracle):
    ref = oracle["moderated_mediation_model7"]
    res = mediation(tal_or, "cond", "pmi", "reaction", w="age", model=7, n_boot=500,
                    random_state=1)
    tol = dict(rtol=1e-9)
    np.testing.assert_allclose(res.loc["a", "estimate"], ref["a"], **tol)
    np.testing.assert_allclose(res.loc["a", "se"], ref["se_a"], **tol)
    np.testing.assert_allclose(res.loc["a_interaction", "estimate"], ref["a_interaction"], **tol)
    np.testing.assert_allclose(res.loc["b", "estimate"], ref["b"], **tol)
    np.testing.assert_allclose(res.loc["direct", "estimate"], ref["c_direct"], **tol)
    np.testing.assert_allclose(res.loc["indirect", "estimate"], ref["indirect"], **tol)
    np.testing.assert_allclose(res.loc["index_moderated_mediation", "estimate"],
                               ref["index_moderated_mediation"], **tol)
    # Conditional indirect effects at PROCESS's 16th/50th/84th percentiles of age.
    w = np.percentile(tal_or["age"], [16, 50, 84])
    for value in w:
        row = res.loc[f"indirect[age={value:g}]"]
        np.testing.assert_allclose(row["estimate"],
                                   (ref["a"] + ref["a_interaction"] * value) * ref["b"], rtol=1e-9)


def test_indirect_equals_pingouin_and_b_is_adjusted(tal_or):
    pingouin = pytest.importorskip("pingouin")
    ref = pingouin.mediation_analysis(tal_or, x="cond", m="pmi", y="reaction",
                                      covar=["gender"], n_boot=500, seed=0).set_index("path")
    res = mediation(tal_or, "cond", "pmi", "reaction", covariates="gender", n_boot=2000,
                    random_state=0)
    np.testing.assert_allclose(res.loc["indirect", "estimate"], ref.loc["Indirect", "coef"],
                               rtol=1e-9)
    np.testing.assert_allclose(res.loc["a", "estimate"], ref.loc["pmi ~ X", "coef"], rtol=1e-9)
    np.testing.assert_allclose(res.loc["direct", "estimate"], ref.loc["Direct", "coef"], rtol=1e-9)
    np.testing.assert_allclose(res.loc["total", "estimate"], ref.loc["Total", "coef"], rtol=1e-9)
    # pingouin's "Y ~ M" row is not the b path; ours is the M coefficient adjusted for X.
    ols = smf.ols("reaction ~ cond + pmi + gender", tal_or).fit()
    np.testing.assert_allclose(res.loc["b", "estimate"], ols.params["pmi"], rtol=1e-9)
    assert not np.isclose(res.loc["b", "estimate"], ref.loc["Y ~ pmi", "coef"])
    # Bootstrap SEs of two different resampling streams agree within Monte Carlo error.
    assert abs(res.loc["indirect", "se"] - ref.loc["Indirect", "se"]) < 0.2 * ref.loc[
        "Indirect", "se"]


def test_parallel_mediators_with_covariates_match_statsmodels():
    rng = np.random.default_rng(3)
    n = 300
    x = rng.normal(size=n)
    c = rng.normal(size=n)
    m1 = 0.5 * x + 0.2 * c + rng.normal(size=n)
    m2 = -0.3 * x + rng.normal(size=n)
    y = 0.4 * m1 + 0.3 * m2 + 0.1 * x + 0.2 * c + rng.normal(size=n)
    df = pd.DataFrame({"x": x, "c": c, "m1": m1, "m2": m2, "y": y})
    res = mediation(df, "x", ["m1", "m2"], "y", covariates="c", n_boot=1000, random_state=0)
    fm1 = smf.ols("m1 ~ x + c", df).fit()
    fm2 = smf.ols("m2 ~ x + c", df).fit()
    fy = smf.ols("y ~ x + m1 + m2 + c", df).fit()
    ft = smf.ols("y ~ x + c", df).fit()
    for label, fit, term in [("a[m1]", fm1, "x"), ("a[m2]", fm2, "x"), ("b[m1]", fy, "m1"),
                             ("b[m2]", fy, "m2"), ("direct", fy, "x"), ("total", ft, "x")]:
        np.testing.assert_allclose(res.loc[label, "estimate"], fit.params[term], rtol=1e-9)
        np.testing.assert_allclose(res.loc[label, "se"], fit.bse[term], rtol=1e-9)
        np.testing.assert_allclose(res.loc[label, "p"], fit.pvalues[term], rtol=1e-6)
    # OLS decomposition: total = direct + sum of specific indirect effects (exact).
    np.testing.assert_allclose(
        res.loc["total", "estimate"],
        res.loc["direct", "estimate"] + res.loc["indirect", "estimate"], rtol=1e-9)
    np.testing.assert_allclose(
        res.loc["indirect", "estimate"],
        res.loc["indirect[m1]", "estimate"] + res.loc["indirect[m2]", "estimate"], rtol=1e-12)
    # Standardized indirect effect = ab·SD(x)/SD(y).
    np.testing.assert_allclose(res.loc["indirect[m1]", "std_estimate"],
                               res.loc["indirect[m1]", "estimate"] * x.std(ddof=1) / y.std(ddof=1))


def test_serial_mediation_chain_and_decomposition(tal_or):
    res = mediation(tal_or, "cond", ["pmi", "import"], "reaction", model=6, n_boot=500,
                    random_state=0)
    f1 = smf.ols("pmi ~ cond", tal_or).fit()
    data = tal_or.rename(columns={"import": "imp"})  # "import" is a Python keyword for patsy
    f2 = smf.ols("imp ~ cond + pmi", data).fit()
    fy = smf.ols("reaction ~ cond + pmi + imp", data).fit()
    np.testing.assert_allclose(res.loc["d[pmi->import]", "estimate"], f2.params["pmi"], rtol=1e-9)
    chain = f1.params["cond"] * f2.params["pmi"] * fy.params["imp"]
    np.testing.assert_allclose(res.loc["indirect[pmi->import]", "estimate"], chain, rtol=1e-9)
    np.testing.assert_allclose(res.loc["indirect[import]", "estimate"],
                               f2.params["cond"] * fy.params["imp"], rtol=1e-9)
    np.testing.assert_allclose(
        res.loc["total", "estimate"],
        res.loc["direct", "estimate"] + res.loc["indirect", "estimate"], rtol=1e-9)


def test_models_14_and_58_conditional_effects(tal_or):
    data = tal_or.assign(sex=np.where(tal_or["gender"] == 1, "F", "M"))
    res14 = mediation(data, "cond", "pmi", "reaction", w="sex", model=14, n_boot=300,
                      random_state=0)
    coded = data.assign(sex01=(data["sex"] == "M").astype(float))
    fm = smf.ols("pmi ~ cond", coded).fit()
    fy = smf.ols("reaction ~ cond + pmi + sex01 + pmi:sex01", coded).fit()
    for level, value in (("0", 0.0), ("1", 1.0)):
        expected = fm.params["cond"] * (fy.params["pmi"] + fy.params["pmi:sex01"] * value)
        np.testing.assert_allclose(res14.loc[f"indirect[sex={level}]", "estimate"], expected,
                                   rtol=1e-9)
    np.testing.assert_allclose(res14.loc["index_moderated_mediation", "estimate"],
                               fm.params["cond"] * fy.params["pmi:sex01"], rtol=1e-9)
    assert "sex coded F = 0, M = 1" in res14.attrs["note"]

    res58 = mediation(data, "cond", "pmi", "reaction", w="sex", model=58, n_boot=300,
                      random_state=0)
    fm58 = smf.ols("pmi ~ cond + sex01 + cond:sex01", coded).fit()
    cond = {v: (fm58.params["cond"] + fm58.params["cond:sex01"] * v)
            * (fy.params["pmi"] + fy.params["pmi:sex01"] * v) for v in (0.0, 1.0)}
    np.testing.assert_allclose(res58.loc["indirect[sex=1]", "estimate"], cond[1.0], rtol=1e-9)
    np.testing.assert_allclose(res58.loc["contrast[sex=1 vs 0]", "estimate"],
                               cond[1.0] - cond[0.0], rtol=1e-9)
    assert "index_moderated_mediation" not in res58.index  # not linear in W for model 58


def test_batched_bootstrap_equals_explicit_resampling():
    df = _simulate(60, 0.5, 0.5, seed=4)
    table = np.column_stack([np.ones(60), df[["x", "m", "y"]].to_numpy()])
    engine = MomentBootstrap(table, ["(intercept)", "x", "m", "y"])
    rng = np.random.default_rng(0)
    counts = bootstrap_counts(rng, 7, 60, block=3)  # blocks of 3: the last one is partial
    assert counts.sum(axis=1).tolist() == [60] * 7
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0
    moments = engine.moments(counts)
    beta = engine.solve(moments, ["(intercept)", "x", "m"], "y")
    sd_y = engine.sd(moments, "y")
    for k in range(7):
        rows = np.repeat(np.arange(60), counts[k].astype(int))
        design = table[rows][:, :3]
        expected, *_ = np.linalg.lstsq(design, df["y"].to_numpy()[rows], rcond=None)
        np.testing.assert_allclose(beta[k], expected, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sd_y[k], df["y"].to_numpy()[rows].std(ddof=1), rtol=1e-8)


def test_bootstrap_se_matches_delta_method_and_is_seeded():
    df = _simulate(800, 0.4, 0.4, seed=5)
    res = mediation(df, "x", "m", "y", n_boot=2000, random_state=42)
    a, sa = res.loc["a", ["estimate", "se"]]
    b, sb = res.loc["b", ["estimate", "se"]]
    sobel = np.sqrt(a**2 * sb**2 + b**2 * sa**2)
    assert abs(res.loc["indirect", "se"] / sobel - 1) < 0.1
    again = mediation(df, "x", "m", "y", n_boot=2000, random_state=42, chunk_size=300)
    pd.testing.assert_frame_equal(res, again)


def test_bias_corrected_interval_and_planted_effects():
    df = _simulate(400, 0.5, 0.4, seed=6)
    for method in ("percentile", "bias-corrected"):
        res = mediation(df, "x", "m", "y", n_boot=2000, random_state=0, ci_method=method)
        lo, hi = res.loc["indirect", ["ci_low", "ci_high"]]
        assert lo > 0 and lo < 0.2 < hi  # planted indirect 0.5 × 0.4 = 0.2 found
        assert res.loc["indirect", "ci_method"] == f"bootstrap-{method}"
    null = _simulate(400, 0.0, 0.4, seed=7)
    res = mediation(null, "x", "m", "y", n_boot=2000, random_state=0)
    assert res.loc["indirect", "ci_low"] < 0 < res.loc["indirect", "ci_high"]


@pytest.mark.slow
def test_null_coverage_at_nominal_rate():
    # a = 0 with b ≠ 0: the indirect effect is null; percentile CIs should exclude 0 about 5%
    # of the time (a = b = 0 would be conservative by construction).
    reps = 300
    misses = 0
    for rep in range(reps):
        df = _simulate(100, 0.0, 0.5, seed=1000 + rep)
        res = mediation(df, "x", "m", "y", n_boot=500, random_state=rep)
        lo, hi = res.loc["indirect", ["ci_low", "ci_high"]]
        misses += not (lo < 0 < hi)
    rate = misses / reps
    # Binomial(300, 0.05): 2.5%–8.5% holds with > 99% probability.
    assert 0.01 <= rate <= 0.085, rate


def test_ds003007_real_scales():
    path = shared_path("data/ds003007_prepost_treatment/participants.tsv")
    from theramark._io import read_tsv

    data = read_tsv(path)
    x, m, y = "ECR-anx_ses-pre", "RRS-sum_ses-pre", "BDI_ses-pre"
    res = mediation(data, x, m, y, covariates="TAS-26_ses-pre", n_boot=1000, random_state=0)
    complete = data[[x, m, y, "TAS-26_ses-pre"]].dropna()
    assert res.attrs["n"] == len(complete)
    assert res.attrs["n_dropped"] == len(data) - len(complete) > 0
    assert "dropped by listwise deletion" in res.attrs["note"]
    renamed = complete.set_axis(["x", "m", "y", "c"], axis=1)
    fy = smf.ols("y ~ x + m + c", renamed).fit()
    fm = smf.ols("m ~ x + c", renamed).fit()
    np.testing.assert_allclose(res.loc["b", "estimate"], fy.params["m"], rtol=1e-9)
    np.testing.assert_allclose(res.loc["indirect", "estimate"],
                               fm.params["x"] * fy.params["m"], rtol=1e-9)
    assert np.isfinite(res[["estimate", "se", "ci_low", "ci_high"]].to_numpy()).all()


# ---- bad input --------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    df = _simulate(50, 0.5, 0.5, seed=8)
    with pytest.raises(BadInputError, match="constant"):
        mediation(df.assign(m=1.0), "x", "m", "y", n_boot=10)
    with pytest.raises(BadInputError, match="collinear.*'c1'"):
        mediation(df.assign(c1=df["x"] * 2 + 1, c2=df["x"]), "x", "m", "y",
                  covariates=["c1", "c2"], n_boot=10)
    with pytest.raises(BadInputError, match="at least 10"):
        mediation(df.head(6), "x", "m", "y", n_boot=100)
    with pytest.raises(BadInputError, match="(?s)non-numeric.*'m'"):
        mediation(df.assign(m=["high"] * 25 + ["1.0"] * 25), "x", "m", "y", n_boot=10)
    with pytest.raises(BadInputError, match="not found: nope"):
        mediation(df, "x", "nope", "y")
    with pytest.raises(BadInputError, match="needs a moderator"):
        mediation(df, "x", "m", "y", model=7)
    with pytest.raises(BadInputError, match="not supported"):
        mediation(df, "x", "m", "y", model=5)
    with pytest.raises(BadInputError, match="more than one role"):
        mediation(df, "x", "m", "m")
    with pytest.raises(BadInputError, match="single level 'F'"):
        mediation(df.assign(w="F"), "x", "m", "y", w="w", model=7, n_boot=10)
    with pytest.raises(BadInputError, match="non-numeric"):
        mediation(df.assign(w=["F", "M", "X"] * 16 + ["F", "M"]), "x", "m", "y", w="w", model=7)


def test_missing_rows_are_dropped_and_stated():
    df = _simulate(80, 0.5, 0.5, seed=9)
    df.loc[[1, 5, 9], "m"] = np.nan
    res = mediation(df, "x", "m", "y", n_boot=200, random_state=0)
    assert res.attrs["n_dropped"] == 3 and res["n"].eq(77).all()
    full = mediation(df.dropna(), "x", "m", "y", n_boot=200, random_state=0)
    pd.testing.assert_frame_equal(res, full)


def test_bias_corrected_interval_closed_forms():
    from scipy import stats

    from theramark.psychosocial.mediation import bootstrap_interval

    draws = stats.norm.ppf((np.arange(20000) + 0.5) / 20000)  # symmetric around 0
    # Median-unbiased draws: z0 = 0, so the bias-corrected interval is the percentile one.
    np.testing.assert_allclose(bootstrap_interval(draws, 0.0, 0.95, "bias-corrected"),
                               bootstrap_interval(draws, 0.0, 0.95, "percentile"), atol=1e-3)
    np.testing.assert_allclose(bootstrap_interval(draws, 0.0, 0.95, "percentile"),
                               [-1.96, 1.96], atol=1e-3)
    # Estimate at the 69th percentile of the draws: z0 = 0.5, interval at Φ(2·0.5 ± 1.96).
    lo, hi = bootstrap_interval(draws, 0.5, 0.95, "bias-corrected")
    np.testing.assert_allclose([lo, hi], [1 - 1.959964, 1 + 1.959964], atol=5e-3)
