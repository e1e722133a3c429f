"""EMA multilevel models: planted within/between effects, a direct statsmodels fit, lags, compliance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from theramark.errors import BadInputError
from theramark.psychosocial import (
    ema_compliance,
    ema_multilevel,
    lag_within_day,
    person_mean_center,
)


def _simulate_ema(n_people=40, days=5, prompts=5, within=0.5, between=-0.3, slope_sd=0.2,
                  moderation=0.0, seed=0):
    """Planted effects: within-person slope ``within`` (+ moderation × baseline), person-mean
    slope ``between``."""
    rng = np.random.default_rng(seed)
    rows = []
    baseline = rng.normal(0, 1, n_people)
    person_mean_x = rng.normal(3, 1, n_people)
    intercepts = rng.normal(0, 0.5, n_people)
    slopes = within + moderation * baseline + rng.normal(0, slope_sd, n_people)
    for i in range(n_people):
        for d in range(days):
            for p in range(prompts):
                x = person_mean_x[i] + rng.normal()
                rows.append((f"sub-{i:03d}", d + 1, p + 1, x, baseline[i], intercepts[i],
                             slopes[i]))
    df = pd.DataFrame(rows, columns=["participant_id", "day", "prompt", "social_contact",
                                     "shaps_baseline", "u0", "u1"])
    pm = df.groupby("participant_id")["social_contact"].transform("mean")
    df["positive_affect"] = (df["u0"] + df["u1"] * (df["social_contact"] - pm) + between * pm
                             + rng.normal(0, 0.7, len(df)))
    return df.drop(columns=["u0", "u1"])


def test_planted_within_and_between_effects_are_recovered():
    df = _simulate_ema(seed=1)
    res = ema_multilevel(df, "positive_affect", "social_contact").set_index("term")
    w = res.loc["social_contact_within"]
    b = res.loc["social_contact_between"]
    assert w["ci_low"] < 0.5 < w["ci_high"] and w["p"] < 1e-6
    assert b["ci_low"] < -0.3 < b["ci_high"]
    assert res.attrs["n_participants"] == 40 and res.attrs["n_observations"] == 1000
    assert res.attrs["random_effects"].shape == (2, 2)


def test_matches_a_direct_statsmodels_formula_fit():
    df = _simulate_ema(n_people=25, seed=2)
    res = ema_multilevel(df, "positive_affect", "social_contact").set_index("term")
    c = person_mean_center(df, "social_contact")
    direct = smf.mixedlm("positive_affect ~ social_contact_within + social_contact_between", c,
                         groups=c["participant_id"], re_formula="~social_contact_within").fit(
        reml=True, method=["lbfgs"])
    for term in ("social_contact_within", "social_contact_between"):
        np.testing.assert_allclose(res.loc[term, "estimate"], direct.fe_params[term], rtol=1e-4)
        np.testing.assert_allclose(res.loc[term, "se"], direct.bse_fe[term], rtol=1e-3)


def test_cross_level_moderation_by_baseline_anhedonia():
    df = _simulate_ema(n_people=60, seed=3, moderation=-0.3)
    res = ema_multilevel(df, "positive_affect", "social_contact",
                         moderator="shaps_baseline").set_index("term")
    inter = res.loc["social_contact_within:shaps_baseline_c"]
    assert inter["ci_low"] < -0.3 < inter["ci_high"] and inter["p"] < 1e-4


@pytest.mark.filterwarnings("ignore:ema_multilevel")  # boundary fits are expected in small nulls
@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt")
def test_null_within_effect_is_not_found():
    p = [ema_multilevel(_simulate_ema(n_people=20, days=3, within=0.0, slope_sd=0.0,
                                      seed=50 + r), "positive_affect", "social_contact",
                        random_slope=False).set_index("term").loc["social_contact_within", "p"]
         for r in range(20)]
    assert np.mean(np.array(p) < 0.05) <= 0.2


def test_lag_stays_within_day():
    df = pd.DataFrame({"participant_id": ["a"] * 4 + ["b"] * 2, "day": [1, 1, 2, 2, 1, 1],
                       "prompt": [2, 1, 1, 2, 1, 2], "x": [20.0, 10, 30, 40, 50, 60]})
    out = lag_within_day(df, "x")
    # a/day1: prompt 1 (10) precedes prompt 2 (20); day 2 starts without a lag.
    np.testing.assert_allclose(out["x_lag1"].to_numpy(), [10, np.nan, np.nan, 30, np.nan, 50])


def test_lagged_effect_recovered():
    rng = np.random.default_rng(4)
    df = _simulate_ema(n_people=40, within=0.0, slope_sd=0.0, seed=4)
    df = df.sort_values(["participant_id", "day", "prompt"]).reset_index(drop=True)
    lagged = lag_within_day(df, "social_contact")["social_contact_lag1"]
    pm = lagged.groupby(df["participant_id"]).transform("mean")
    person = df["participant_id"].map(dict(zip(df["participant_id"].unique(),
                                               rng.normal(0, 0.5, 40), strict=True)))
    df["positive_affect"] = person + 0.4 * (lagged - pm).fillna(0) + rng.normal(0, 0.5, len(df))
    res = ema_multilevel(df, "positive_affect", "social_contact", lag=True,
                         random_slope=False).set_index("term")
    row = res.loc["social_contact_lag1_within"]
    assert row["ci_low"] < 0.4 < row["ci_high"]
    assert res.attrs["n_dropped"] == 40 * 5  # first prompt of each day has no lag


def test_compliance():
    df = _simulate_ema(n_people=3, days=2, prompts=4, seed=5)
    df.loc[[0, 1, 9], "positive_affect"] = np.nan
    table = ema_compliance(df, "positive_affect", prompts_per_day=5)
    first = table.set_index("participant_id").loc["sub-000"]
    assert first["n_scheduled"] == 10 and first["n_answered"] == 6
    np.testing.assert_allclose(first["compliance"], 0.6)
    assert table.attrs["summary"]["n_participants"] == 3


def test_bad_inputs():
    df = _simulate_ema(n_people=8, days=2, prompts=3, seed=6)
    with pytest.raises(BadInputError, match="varies within"):
        ema_multilevel(df, "positive_affect", "social_contact", moderator="prompt")
    with pytest.raises(BadInputError, match="one level"):
        ema_multilevel(df.assign(w=1.0), "positive_affect", "social_contact", moderator="w")
    with pytest.raises(BadInputError, match="within participants"):
        pm = df.groupby("participant_id")["social_contact"].transform("mean")
        ema_multilevel(df.assign(social_contact=pm), "positive_affect", "social_contact")
    with pytest.raises(BadInputError, match="non-numeric"):
        ema_multilevel(df.assign(social_contact="lots"), "positive_affect", "social_contact")
    with pytest.raises(BadInputError, match="at least 5"):
        ema_multilevel(df[df["participant_id"].isin(["sub-000", "sub-001"])],
                       "positive_affect", "social_contact")


def test_nullable_integers_and_other_participant_column():
    df = _simulate_ema(n_people=15, days=2, prompts=4, seed=7)
    df["social_contact"] = (df["social_contact"] > 3).astype("Int64")
    df.loc[[0, 5], "social_contact"] = pd.NA
    df = df.rename(columns={"participant_id": "person"})
    res = ema_multilevel(df, "positive_affect", "social_contact", participant="person",
                         random_slope=False)
    assert res.attrs["n_dropped"] == 2 and res.attrs["n_participants"] == 15
    assert np.isfinite(res[["estimate", "se"]].to_numpy()).all()
