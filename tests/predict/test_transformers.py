"""ComBatTransformer and ConfoundRegressor: equal to their references, fold-safe, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from theramark.errors import BadInputError
from theramark.group.harmonize import ComBat
from theramark.predict.transformers import ComBatTransformer, ConfoundRegressor


def _sited(seed: int = 0, n: int = 90, n_features: int = 25, sites=("A", "B", "C")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = rng.choice(list(sites), n)
    age = rng.normal(40, 10, n)
    sex = rng.choice(["F", "M"], n)
    shift = {s: rng.normal(0, 1.0, n_features) for s in sites}
    scale = {s: rng.uniform(0.5, 2.0, n_features) for s in sites}
    values = np.empty((n, n_features))
    for i in range(n):
        values[i] = (5 + 0.05 * age[i] + 0.3 * (sex[i] == "M") + shift[site[i]]
                     + scale[site[i]] * rng.normal(size=n_features))
    frame = pd.DataFrame(values, columns=[f"f{j}" for j in range(n_features)],
                         index=[f"sub-{i:03d}" for i in range(n)])
    frame["site"], frame["age"], frame["sex"] = site, age, sex
    return frame


FEATURES = [f"f{j}" for j in range(25)]


@pytest.mark.parametrize("options", [
    {}, {"parametric": False}, {"empirical_bayes": False}, {"ref_site": "B"}, {"mean_only": True},
])
def test_combat_transformer_equals_combat_on_all_rows(options):
    data = _sited()
    ours = ComBatTransformer(**options).fit_transform(data)
    reference = ComBat(**options).fit_transform(data[FEATURES].to_numpy(), data["site"].to_numpy(),
                                                data[["age", "sex"]])
    assert list(ours.columns) == FEATURES
    assert ours.index.equals(data.index)
    np.testing.assert_allclose(ours.to_numpy(), reference, rtol=0, atol=1e-12)


def test_combat_transformer_fit_on_train_applies_to_test_and_ignores_y():
    data = _sited(1)
    train, test = data.iloc[:60], data.iloc[60:]
    model = ComBatTransformer().fit(train, y=np.arange(60.0))
    reference = ComBat().fit(train[FEATURES].to_numpy(), train["site"], train[["age", "sex"]])
    np.testing.assert_allclose(model.transform(test).to_numpy(),
                               reference.transform(test[FEATURES].to_numpy(), test["site"],
                                                   test[["age", "sex"]]), atol=1e-12)
    other_y = ComBatTransformer().fit(train, y=-np.arange(60.0)).transform(test)
    np.testing.assert_array_equal(model.transform(test).to_numpy(), other_y.to_numpy())


def test_combat_transformer_removes_planted_site_effects_on_held_out_rows():
    data = _sited(2, n=300)
    train, test = data.iloc[:200], data.iloc[200:]
    out = ComBatTransformer().fit(train).transform(test)

    def site_spread(frame):
        means = frame.groupby(test["site"].to_numpy()).mean()
        return float(means.std(axis=0).mean())

    assert site_spread(test[FEATURES]) > 0.5
    assert site_spread(out) < 0.25
    # the age effect (0.05 per year) survives harmonization
    slope = np.polyfit(test["age"], out.mean(axis=1), 1)[0]
    assert 0.03 < slope < 0.07


def test_unseen_site_error_names_the_site():
    data = _sited(3)
    model = ComBatTransformer().fit(data[data["site"] != "C"])
    with pytest.raises(BadInputError, match=r"\['C'\].*'site'"):
        model.transform(data)


def test_unseen_site_pooled_semantics():
    data = _sited(4)
    seen = data["site"] != "C"
    model = ComBatTransformer(unseen="pooled").fit(data[seen])
    out = model.transform(data)
    # seen rows: exactly the ComBat transform
    reference = model.combat_.transform(data.loc[seen, FEATURES].to_numpy(), data.loc[seen, "site"],
                                        data.loc[seen, ["age", "sex"]])
    np.testing.assert_allclose(out[seen].to_numpy(), reference, atol=1e-12)
    # unseen rows: ComBat's formula with the pooled site effect (gamma = 0, delta = 1)
    c = model.combat_
    unseen = data.loc[~seen]
    covs = np.column_stack([unseen["age"], (unseen["sex"] == "M").astype(float)])
    mod_mean = covs @ c.beta_covariates_
    scale = np.sqrt(c.var_pooled_)
    standardized = (unseen[FEATURES].to_numpy() - c.grand_mean_ - mod_mean) / scale
    formula = (standardized - 0.0) / np.sqrt(1.0) * scale + c.grand_mean_ + mod_mean
    np.testing.assert_allclose(out[~seen].to_numpy(), formula, atol=1e-10)
    np.testing.assert_allclose(out[~seen].to_numpy(), unseen[FEATURES].to_numpy(), atol=1e-10)
    # the pooled site effect is zero: the size-weighted mean of the fitted site locations
    counts = data.loc[seen, "site"].value_counts().sort_index().to_numpy()
    np.testing.assert_allclose(counts @ c.gamma_hat_ / counts.sum(), 0.0, atol=1e-10)


def test_combat_transformer_bad_input():
    data = _sited(5)
    with pytest.raises(BadInputError, match="'scanner'"):
        ComBatTransformer(site="scanner").fit(data)
    with pytest.raises(BadInputError, match=r"\['bmi'\]"):
        ComBatTransformer(covariates=("age", "bmi")).fit(data)
    broken = data.copy()
    broken.loc[broken.index[3], "age"] = np.nan
    with pytest.raises(BadInputError, match="'age'.*sub-003"):
        ComBatTransformer().fit(broken)
    broken = data.copy()
    broken.loc[broken.index[3], "f7"] = np.nan
    with pytest.raises(BadInputError, match="f7"):
        ComBatTransformer().fit(broken)
    with pytest.raises(BadInputError, match="DataFrame"):
        ComBatTransformer().fit(data[FEATURES].to_numpy())
    with pytest.raises(BadInputError, match="unseen"):
        ComBatTransformer(unseen="ignore").fit(data)


def test_combat_transformer_in_pipeline_cross_val_predict():
    data = _sited(6, n=120)
    y = data["f0"].to_numpy() + np.random.default_rng(0).normal(size=120)
    pipe = make_pipeline(ComBatTransformer(), StandardScaler(), Ridge())
    pred = cross_val_predict(pipe, data, y, cv=KFold(5, shuffle=True, random_state=0))
    assert pred.shape == (120,) and np.isfinite(pred).all()


# --- ConfoundRegressor ------------------------------------------------------------------------------
def test_confound_regressor_equals_statsmodels_on_held_out_rows():
    data = _sited(7, n=80)
    train, test = data.iloc[:55], data.iloc[55:]
    model = ConfoundRegressor(confounds=("age", "sex")).fit(train)
    out = model.transform(test)
    for feature in ("f0", "f3", "f24"):
        fit = sm.OLS.from_formula(f"{feature} ~ age + C(sex)", data=train).fit()
        expected = test[feature] - fit.predict(test) + train[feature].mean()
        np.testing.assert_allclose(out[feature].to_numpy(), expected.to_numpy(), atol=1e-10)
    plain = ConfoundRegressor(confounds=("age", "sex"), keep_mean=False).fit(train)
    fit = sm.OLS.from_formula("f5 ~ age + C(sex)", data=train).fit()
    np.testing.assert_allclose(plain.transform(train)["f5"].to_numpy(), fit.resid.to_numpy(),
                               atol=1e-10)
    design = np.column_stack([np.ones(55), train["age"], train["sex"] == "M"]).astype(float)
    beta = np.linalg.lstsq(design, train[FEATURES].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(model.coef_, beta[1:], atol=1e-10)


def test_confound_regressor_removes_planted_confound_and_keeps_signal():
    rng = np.random.default_rng(8)
    n = 3100
    motion = rng.gamma(2, 0.5, n)
    signal = rng.normal(size=n)
    frame = pd.DataFrame({"edge": signal + 3.0 * motion, "mean_fd": motion})
    model = ConfoundRegressor(confounds=("mean_fd",)).fit(frame.iloc[:3000])
    out = model.transform(frame.iloc[3000:])["edge"]
    assert np.corrcoef(frame["edge"], motion)[0, 1] > 0.8
    # held-out rows keep only the signal: their correlation with motion is the signal's own
    chance = np.corrcoef(signal[3000:], motion[3000:])[0, 1]
    assert abs(np.corrcoef(out, motion[3000:])[0, 1] - chance) < 0.05
    assert np.corrcoef(out, signal[3000:])[0, 1] > 0.99
    assert abs(model.coef_[0, 0] - 3.0) < 0.3


def test_confound_regressor_bad_input():
    data = _sited(9)
    with pytest.raises(BadInputError, match=r"\['mean_fd'\]"):
        ConfoundRegressor(confounds=("mean_fd",)).fit(data)
    model = ConfoundRegressor(confounds=("age", "sex")).fit(data)
    other = data.copy()
    other["sex"] = "X"
    with pytest.raises(BadInputError, match="'sex'.*'X'"):
        model.transform(other)
    with pytest.raises(BadInputError, match="f2"):
        model.transform(data.drop(columns="f2"))
