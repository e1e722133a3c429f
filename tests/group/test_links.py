"""Brain–symptom links against pingouin/scipy, permutation p-values, planted and null links."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from theramark.errors import BadInputError
from theramark.group.links import brain_symptom_links, change_scores, partial_correlations


def _links_data(seed=0, n=40, n_features=30, n_linked=5, strength=0.6):
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"sub-{i:03d}" for i in range(n)], name="participant_id")
    covs = pd.DataFrame({"age": rng.uniform(20, 60, n), "sex": rng.choice(["F", "M"], n)},
                        index=ids)
    symptom = pd.Series(rng.normal(-5, 4, n) + 0.05 * covs["age"].to_numpy(), index=ids)
    features = rng.normal(size=(n, n_features)) + 0.02 * covs["age"].to_numpy()[:, None]
    z = (symptom - symptom.mean()) / symptom.std()
    features[:, :n_linked] += strength * z.to_numpy()[:, None]
    return pd.DataFrame(features, index=ids, columns=[f"f{i}" for i in range(n_features)]), \
        symptom, covs


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_partial_correlation_matches_pingouin(method):
    pg = pytest.importorskip("pingouin")
    change, symptom, covs = _links_data()
    covs_num = covs.assign(sex=(covs["sex"] == "M").astype(float))
    result = brain_symptom_links(change, symptom, covs_num, method=method, n_permutations=0)
    frame = change.assign(symptom=symptom, age=covs_num["age"], sex=covs_num["sex"])
    for feature in ("f0", "f7"):
        ref = pg.partial_corr(frame, x=feature, y="symptom", covar=["age", "sex"], method=method)
        row = result.set_index("feature").loc[feature]
        assert row["r"] == pytest.approx(ref["r"].iloc[0], rel=1e-10)
        p_column = "p_val" if "p_val" in ref else "p-val"
        ci_column = "CI95" if "CI95" in ref else "CI95%"
        assert row["p"] == pytest.approx(ref[p_column].iloc[0], rel=1e-8)
        np.testing.assert_allclose([row["ci_low"], row["ci_high"]], ref[ci_column].iloc[0],
                                   atol=0.006)  # pingouin rounds the CI to 2 decimals


def test_plain_correlation_matches_scipy_and_categorical_covariate():
    change, symptom, covs = _links_data(seed=1)
    result = brain_symptom_links(change, symptom, n_permutations=0).set_index("feature")
    ref = stats.pearsonr(change["f3"], symptom)
    assert result.loc["f3", "r"] == pytest.approx(ref.statistic, rel=1e-12)
    assert result.loc["f3", "p"] == pytest.approx(ref.pvalue, rel=1e-9)
    # a string covariate is dummy coded: same as the 0/1 numeric version
    coded = covs.assign(sex=(covs["sex"] == "M").astype(float))
    a = brain_symptom_links(change, symptom, covs, n_permutations=0)
    b = brain_symptom_links(change, symptom, coded, n_permutations=0)
    np.testing.assert_allclose(a["r"], b["r"])


def test_permutation_p_values_agree_with_parametric_and_find_planted_links():
    # planted r ≈ 0.7 at n = 50: the max-T threshold over 200 features is |r| ≈ 0.5
    change, symptom, covs = _links_data(seed=2, n=50, n_features=200, n_linked=10, strength=1.0)
    result = brain_symptom_links(change, symptom, covs, n_permutations=2000, random_state=1)
    # the permutation statistic is the partial-correlation t: p-values agree closely (within
    # about 4 Monte-Carlo standard errors of 2,000 permutations at p = 0.5)
    np.testing.assert_allclose(result["p_permutation"], result["p"], atol=0.045)
    linked, null = result.iloc[:10], result.iloc[10:]
    assert (linked["p_fwe"] < 0.05).mean() >= 0.9
    assert (null["p_fwe"] < 0.05).sum() <= 1
    assert (result["p_fwe"] >= result["p_permutation"] - 1e-12).all()
    assert abs((null["p"] < 0.05).mean() - 0.05) < 0.06


def test_missing_values_and_change_scores():
    wide = pd.DataFrame(
        {"a": [1.0, 2.0, 0.5, np.nan], "b": [3.0, 5.0, 1.0, 1.5]},
        index=pd.MultiIndex.from_tuples([("s1", "pre"), ("s1", "post"), ("s2", "pre"),
                                         ("s2", "post")], names=["participant_id", "session"]),
    )
    change = change_scores(wide, ["a", "b"], "pre", "post")
    assert change.loc["s1", "a"] == 1.0 and np.isnan(change.loc["s2", "a"])
    assert change.loc["s2", "b"] == 0.5
    data, symptom, _ = _links_data(seed=3, n=20, n_features=4)
    data.iloc[0, 1] = np.nan
    # a participant with a symptom change but no imaging at all (every run excluded) is left out
    data.loc["sub-no-imaging"] = np.nan
    symptom.loc["sub-no-imaging"] = -3.0
    result = brain_symptom_links(data, symptom, n_permutations=100)
    assert result.loc[1, "n"] == 19 and np.isnan(result.loc[1, "p_permutation"])
    assert result.loc[0, "n"] == 20 and np.isfinite(result.loc[0, "p_permutation"])
    with pytest.raises(BadInputError, match="too few"):
        brain_symptom_links(data.iloc[:3], symptom)
    with pytest.raises(BadInputError, match="session 'week8'"):
        change_scores(wide, ["a"], baseline="pre", endpoint="week8")


def test_partial_correlations_vectorized_shape():
    rng = np.random.default_rng(4)
    r, t, p, df = partial_correlations(rng.normal(size=(30, 7)), rng.normal(size=30),
                                       rng.normal(size=(30, 2)))
    assert r.shape == t.shape == p.shape == (7,) and df == 30 - 2 - 2
