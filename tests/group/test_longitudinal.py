"""Mixed models against lme4 (R oracle) and statsmodels; change-score closed form; calibration."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import shared_path
from theramark.errors import AnalysisError, BadInputError
from theramark.group.longitudinal import (
    fit_mixed_model,
    group_time_effects,
    hedges_g,
    mixed_model,
)

GROUPS = ["depr_no_treatment", "depr_cbt", "depr_nfb"]


def ds003007_long() -> pd.DataFrame:
    table = pd.read_csv(
        shared_path("data/ds003007_prepost_treatment/participants.tsv"), sep="\t",
        na_values=["n/a"], keep_default_na=False,
    )
    frames = []
    for session in ("pre", "post"):
        frames.append(pd.DataFrame({
            "participant": table["participant_id"], "group": table["group"], "session": session,
            "age": table["age"], "bdi": table[f"BDI_ses-{session}"],
            "madrs": table[f"MADRS_ses-{session}"],
        }))
    long = pd.concat(frames, ignore_index=True)
    long["group"] = pd.Categorical(long["group"], GROUPS)
    long["session"] = pd.Categorical(long["session"], ["pre", "post"])
    return long


def test_lme4_oracle_ds003007_bdi():
    oracle = json.loads(shared_path("oracles/r_reference.json").read_text())["lmm_ds003007_bdi"]
    result = fit_mixed_model(ds003007_long(), "bdi ~ group * session + (1 | participant)",
                             "participant")
    assert result.n_obs == oracle["n_obs"]
    fe = result.fixed_effects
    # lme4 names: groupdepr_cbt:sessionpost; patsy: group[T.depr_cbt]:session[T.post]
    lme4_names = [t.replace("[T.", "").replace("]", "").replace("Intercept", "(Intercept)")
                  for t in fe["term"]]
    assert lme4_names == oracle["terms"]
    np.testing.assert_allclose(fe["estimate"], oracle["estimate"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fe["se"], oracle["se"], rtol=1e-5)
    np.testing.assert_allclose(fe["statistic"], oracle["t"], rtol=1e-5)
    assert result.participant_sd == pytest.approx(oracle["random_intercept_sd"], rel=1e-5)
    assert result.residual_sd == pytest.approx(oracle["residual_sd"], rel=1e-5)
    # Satterthwaite df lie between the residual df of the change model and N - p
    assert ((fe["df"] > 10) & (fe["df"] < oracle["n_obs"] - 6)).all()
    # the plain interface returns the same table
    plain = mixed_model(ds003007_long(), "bdi ~ group * session", groups="participant")
    np.testing.assert_allclose(plain["estimate"], fe["estimate"])


def _simulated_long(seed=0, n_per_arm=(15, 15, 15), effect=(0.0, -0.8, -0.4), missing=0.1,
                    n_sessions=2):
    rng = np.random.default_rng(seed)
    rows = []
    arms = ["waitlist", "CBT", "MBCT"]
    k = 0
    for arm, n, eff in zip(arms, n_per_arm, effect, strict=True):
        for _ in range(n):
            k += 1
            intercept = rng.normal(0, 1.0)
            age = rng.uniform(20, 60)
            for t in range(n_sessions):
                if t > 0 and rng.random() < missing:
                    continue
                value = 10 + intercept + 0.02 * age - 0.3 * t + eff * t + rng.normal(0, 0.7)
                rows.append((f"sub-{k:03d}", arm, ["pre", "mid", "post"][t if n_sessions == 3
                             else 2 * t], age, value))
    return pd.DataFrame(rows, columns=["participant_id", "group", "session", "age", "y"])


def test_matches_statsmodels_mixedlm():
    from statsmodels.regression.mixed_linear_model import MixedLM

    long = _simulated_long(seed=1, missing=0.2, n_sessions=3)
    long["group"] = pd.Categorical(long["group"], ["waitlist", "CBT", "MBCT"])
    long["session"] = pd.Categorical(long["session"], ["pre", "mid", "post"])
    formula = "y ~ group * session + age"
    ours = fit_mixed_model(long, formula, groups="participant_id")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MixedLM.from_formula(formula, long, groups=long["participant_id"]).fit(
            reml=True, method=["lbfgs"], gtol=1e-10)
    fe = ours.fixed_effects.set_index("term")
    np.testing.assert_allclose(fe["estimate"], ref.fe_params[fe.index], rtol=1e-4, atol=1e-5)
    tau2, sigma2 = float(ref.cov_re.iloc[0, 0]), float(ref.scale)
    assert ours.participant_sd**2 == pytest.approx(tau2, rel=1e-4)
    assert ours.residual_sd**2 == pytest.approx(sigma2, rel=1e-4)
    # the same REML optimum (ours is at least as good)
    assert ours.reml_criterion <= -2 * ref.llf + 1e-6
    assert ours.reml_criterion == pytest.approx(-2 * ref.llf, abs=1e-5)
    # lme4's standard errors are the GLS ones, sqrt(diag((X'V^-1 X)^-1)); statsmodels' bse_fe
    # come from its joint Hessian and differ by up to ~1e-3, so build the GLS SEs from its fit
    x = np.asarray(ref.model.exog)
    labels = np.asarray(long["participant_id"], dtype=str)
    v = sigma2 * np.eye(len(labels)) + tau2 * (labels[:, None] == labels[None, :])
    gls_se = np.sqrt(np.diag(np.linalg.inv(x.T @ np.linalg.solve(v, x))))
    np.testing.assert_allclose(fe.loc[ref.model.exog_names, "se"], gls_se, rtol=1e-4)
    np.testing.assert_allclose(fe.loc[ref.model.exog_names, "se"], ref.bse_fe, rtol=2e-3)


def test_change_score_closed_form_equals_mixed_model_and_ols():
    import statsmodels.formula.api as smf

    long = _simulated_long(seed=2, missing=0.0)
    feats = long.assign(y2=lambda d: d["y"] * 0.5 + np.random.default_rng(0).normal(size=len(d)))
    closed = group_time_effects(feats, ["y", "y2"], method="change", reference_group="waitlist")
    mixed = group_time_effects(feats, ["y", "y2"], method="mixed", reference_group="waitlist")
    assert set(closed["method"]) == {"change_ols"} and set(mixed["method"]) == {"mixed_reml"}
    for column in ("estimate", "se", "statistic", "p", "ci_low", "ci_high"):
        np.testing.assert_allclose(closed[column], mixed[column], rtol=1e-6, atol=1e-8)
    # Satterthwaite df of the interaction equals the change-score residual df (n - 3)
    np.testing.assert_allclose(mixed["df"], 45 - 3, rtol=1e-4)
    # and the change-score OLS is statsmodels' OLS on change ~ group
    wide = feats.pivot(index="participant_id", columns="session", values="y")
    arm = feats.drop_duplicates("participant_id").set_index("participant_id")["group"]
    change = pd.DataFrame({"change": wide["post"] - wide["pre"], "group": arm})
    ols = smf.ols("change ~ C(group, Treatment('waitlist'))", change).fit()
    row = closed[(closed["feature"] == "y") & (closed["arm"] == "CBT")].iloc[0]
    name = "C(group, Treatment('waitlist'))[T.CBT]"
    assert row["estimate"] == pytest.approx(ols.params[name], rel=1e-10)
    assert row["se"] == pytest.approx(ols.bse[name], rel=1e-10)
    assert row["p"] == pytest.approx(ols.pvalues[name], rel=1e-8)


def test_change_covariates_enter_the_change_model():
    import statsmodels.formula.api as smf

    long = _simulated_long(seed=3, missing=0.0)
    closed = group_time_effects(long, ["y"], change_covariates=["age"], reference_group="waitlist")
    mixed = group_time_effects(long, ["y"], change_covariates=["age"], method="mixed",
                               reference_group="waitlist")
    np.testing.assert_allclose(closed["estimate"], mixed["estimate"], rtol=1e-6)
    np.testing.assert_allclose(closed["se"], mixed["se"], rtol=1e-6)
    wide = long.pivot(index="participant_id", columns="session", values="y")
    info = long.drop_duplicates("participant_id").set_index("participant_id")
    change = pd.DataFrame({"change": wide["post"] - wide["pre"], "group": info["group"],
                           "age": info["age"]})
    ols = smf.ols("change ~ C(group, Treatment('waitlist')) + age", change).fit()
    row = closed[closed["arm"] == "MBCT"].iloc[0]
    assert row["estimate"] == pytest.approx(ols.params["C(group, Treatment('waitlist'))[T.MBCT]"])


def test_missing_sessions_use_the_mixed_model():
    long = _simulated_long(seed=4, missing=0.25)
    result = group_time_effects(long, ["y"], reference_group="waitlist")
    assert set(result["method"]) == {"mixed_reml"}
    direct = fit_mixed_model(
        long.assign(group=pd.Categorical(long["group"], ["waitlist", "CBT", "MBCT"]),
                    session=pd.Categorical(long["session"], ["pre", "post"])),
        "y ~ group * session", groups="participant_id",
    ).fixed_effects.set_index("term")
    got = result.set_index("arm")
    assert got.loc["CBT", "estimate"] == pytest.approx(
        direct.loc["group[T.CBT]:session[T.post]", "estimate"], rel=1e-8)
    assert got.loc["CBT", "df"] == pytest.approx(
        direct.loc["group[T.CBT]:session[T.post]", "df"], rel=1e-6)


def test_hedges_g_matches_pingouin():
    pg = pytest.importorskip("pingouin")
    rng = np.random.default_rng(5)
    change = np.concatenate([rng.normal(-1, 1, 12), rng.normal(0, 1.3, 17)])[:, None]
    arm = np.arange(29) < 12
    g, low, high, n1, n0 = hedges_g(change, arm, ~arm)
    expected = pg.compute_effsize(change[arm, 0], change[~arm, 0], eftype="hedges")
    assert g[0] == pytest.approx(expected, rel=1e-10)
    ci = pg.compute_esci(expected, nx=12, ny=17, eftype="hedges", decimals=10)
    np.testing.assert_allclose([low[0], high[0]], ci, atol=1e-9)
    assert (n1[0], n0[0]) == (12, 17)


def test_emmeans_are_cell_means_in_a_saturated_balanced_model():
    long = _simulated_long(seed=6, missing=0.0)
    long["group"] = pd.Categorical(long["group"], ["waitlist", "CBT", "MBCT"])
    long["session"] = pd.Categorical(long["session"], ["pre", "post"])
    result = fit_mixed_model(long, "y ~ group * session", groups="participant_id")
    emm = result.emmeans(["group", "session"]).set_index(["group", "session"])["emmean"]
    cell = long.groupby(["group", "session"], observed=True)["y"].mean()
    np.testing.assert_allclose(emm.loc[cell.index], cell, rtol=1e-10)


def test_ds003007_group_time_effects_bdi_and_madrs():
    long = ds003007_long()
    result = group_time_effects(long, ["bdi"], participant="participant",
                                reference_group="depr_no_treatment")
    assert list(result["arm"]) == ["depr_cbt", "depr_nfb"]
    assert (result["method"] == "mixed_reml").all()  # some BDI pairs are incomplete
    oracle = json.loads(shared_path("oracles/r_reference.json").read_text())["lmm_ds003007_bdi"]
    np.testing.assert_allclose(result["estimate"], oracle["estimate"][4:], rtol=1e-6)
    np.testing.assert_allclose(result["statistic"], oracle["t"][4:], rtol=1e-5)
    assert list(result["n_arm"]) == [5, 6] and list(result["n_reference"]) == [14, 14]
    # MADRS: no untreated participant has scores, so the model against no-treatment is not
    # estimable; CBT vs neurofeedback is
    with pytest.raises(AnalysisError, match="rank deficient"):
        group_time_effects(long, ["madrs"], participant="participant",
                           reference_group="depr_no_treatment")
    both = group_time_effects(long, ["bdi", "madrs"], participant="participant",
                              reference_group="depr_no_treatment", skip_inestimable=True)
    assert (both.loc[both["feature"] == "madrs", "method"] == "not_estimable").all()
    assert both.loc[both["feature"] == "madrs", "p"].isna().all()
    np.testing.assert_allclose(both.loc[both["feature"] == "bdi", "estimate"],
                               oracle["estimate"][4:], rtol=1e-6)
    madrs = group_time_effects(long, ["madrs"], participant="participant",
                               reference_group="depr_nfb", arms=["depr_cbt"])
    assert np.isfinite(madrs["estimate"]).all() and len(madrs) == 1


def test_planted_effects_found_and_null_calibrated():
    rng = np.random.default_rng(7)
    n_per_arm, n_null, n_true = 20, 2000, 200
    arms = np.repeat(["waitlist", "CBT", "MBCT"], n_per_arm)
    n = len(arms)
    subject = rng.normal(0, 1, (n, n_null + n_true))
    pre = subject + rng.normal(0, 0.6, subject.shape)
    post = subject + rng.normal(0, 0.6, subject.shape)
    post[arms == "CBT", n_null:] += 0.8  # d ≈ 0.8 / (0.6 * sqrt 2) ≈ 0.94 on change scores
    features = [f"f{i}" for i in range(subject.shape[1])]
    ids = [f"sub-{i:03d}" for i in range(n)]
    table = pd.concat([
        pd.DataFrame(pre, columns=features).assign(participant_id=ids, group=arms, session="pre"),
        pd.DataFrame(post, columns=features).assign(participant_id=ids, group=arms,
                                                    session="post"),
    ], ignore_index=True)
    result = group_time_effects(table, features, reference_group="waitlist")
    cbt = result[result["arm"] == "CBT"]
    p = cbt["p"].to_numpy()
    false_positive = np.mean(p[:n_null] < 0.05)
    power = np.mean(p[n_null:] < 0.05)
    # binomial SD of the rate at 2000 null features is 0.005: allow 3 SD
    assert abs(false_positive - 0.05) < 0.015
    theoretical = stats.nct.sf(stats.t.ppf(0.975, 57), 57, 0.8 / (0.6 * np.sqrt(2))
                               / np.sqrt(2 / n_per_arm))
    assert power == pytest.approx(theoretical, abs=0.08)
    # 95% CIs cover the truth: the estimate's on null features, Hedges' g's on planted ones
    null_rows = cbt.iloc[:n_null]
    covered = (null_rows["ci_low"] < 0) & (null_rows["ci_high"] > 0)
    assert abs(covered.mean() - 0.95) < 0.015
    true_g = 0.8 / (0.6 * np.sqrt(2))
    planted = cbt.iloc[n_null:]
    g_covered = (planted["hedges_g_ci_low"] < true_g) & (planted["hedges_g_ci_high"] > true_g)
    assert abs(g_covered.mean() - 0.95) < 0.05
    mbct_p = result.loc[result["arm"] == "MBCT", "p"].to_numpy()
    assert abs(np.mean(mbct_p < 0.05) - 0.05) < 0.015  # no MBCT effect planted anywhere


@pytest.mark.slow
def test_mixed_path_calibrated_under_missing_data():
    rng = np.random.default_rng(8)
    n_per_arm, n_features = 15, 1500
    arms = np.repeat(["waitlist", "CBT"], n_per_arm)
    n = len(arms)
    subject = rng.normal(0, 1, (n, n_features))
    frames = []
    for session in ("pre", "post"):
        values = subject + rng.normal(0, 0.7, subject.shape)
        frames.append(pd.DataFrame(values, columns=[f"f{i}" for i in range(n_features)]).assign(
            participant_id=[f"s{i}" for i in range(n)], group=arms, session=session))
    table = pd.concat(frames, ignore_index=True)
    drop = rng.random(n) < 0.2
    table.loc[(table["session"] == "post") & np.tile(drop, 2), "f0":] = np.nan
    result = group_time_effects(table, [f"f{i}" for i in range(n_features)], reference_group="waitlist")
    assert set(result["method"]) == {"mixed_reml"}
    assert abs(np.mean(result["p"] < 0.05) - 0.05) < 0.02


def test_bad_inputs():
    long = _simulated_long(seed=9, missing=0.0)
    with pytest.raises(BadInputError, match="not in the table"):
        group_time_effects(long, ["nope"], reference_group="waitlist")
    with pytest.raises(BadInputError, match="reference group"):
        group_time_effects(long, ["y"], reference_group="control")
    with pytest.raises(BadInputError, match="random intercept"):
        mixed_model(long, "y ~ group + (1 | site)", groups="participant_id")
    with pytest.raises(BadInputError, match="cannot build"):
        mixed_model(long, "y ~ nothing_here", groups="participant_id")
    doubled = pd.concat([long, long.iloc[:1]])
    with pytest.raises(BadInputError, match="more than one row"):
        group_time_effects(doubled, ["y"], reference_group="waitlist")
    with pytest.raises(BadInputError, match="closed form"):
        group_time_effects(_simulated_long(seed=9, missing=0.3), ["y"], method="change",
                           reference_group="waitlist")
