"""Personalized Advantage Index: planted treatment × moderator interactions, null data, inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import StratifiedKFold

from theramark.errors import BadInputError
from theramark.predict.pai import pai_summary, personalized_advantage

FEATURES = ["moderator", "severity", "noise"]


def _simulate(seed: int, n: int = 200, interaction: float = 3.0, main: float = 0.0):
    """HAMD-17 change (lower = better). CBT helps more with a high moderator, SSRI with a low one."""
    rng = np.random.default_rng(seed)
    arm = np.where(rng.random(n) < 0.5, "cbt", "ssri")
    m, sev = rng.normal(size=n), rng.normal(size=n)
    mu_cbt = -8 - 1.0 * sev - interaction * m / 2
    mu_ssri = -8 - 1.0 * sev + interaction * m / 2 + main
    y = np.where(arm == "cbt", mu_cbt, mu_ssri) + rng.normal(0, 4, n)
    table = pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "group": arm,
                          "moderator": m, "severity": sev, "noise": rng.normal(size=n),
                          "hamd17_change": y})
    return table, mu_cbt, mu_ssri


def test_planted_interaction_is_recovered():
    table, mu_cbt, mu_ssri = _simulate(0, n=300)
    out = personalized_advantage(table, features=FEATURES, threshold=3.0)
    assert list(out.columns) == ["participant_id", "arm", "outcome", "fold", "pred_cbt", "pred_ssri",
                                 "indicated_arm", "pai", "received_indicated", "meaningful"]
    assert (out["pai"] >= 0).all()
    true_advantage = np.abs(mu_cbt - mu_ssri)
    assert np.corrcoef(out["pai"], true_advantage)[0, 1] >= 0.5
    true_best = np.where(mu_cbt < mu_ssri, "cbt", "ssri")
    assert np.mean(out["indicated_arm"] == true_best) > 0.8
    summary = pai_summary(table, features=FEATURES, threshold=3.0, n_boot=300).iloc[0]
    assert summary["difference"] < 0 and summary["ci_high"] < 0  # indicated arm → lower (better) change
    assert summary["advantage"] == -summary["difference"]
    assert summary["share_meaningful"] == pytest.approx(np.mean(out["pai"] >= 3.0))
    assert summary["n_indicated"] == out["received_indicated"].sum()


def test_predictions_are_per_arm_out_of_fold_fits():
    """Independent check: refit sklearn's LinearRegression per fold and arm by hand."""
    table, _, _ = _simulate(1, n=120)
    out = personalized_advantage(table, features=FEATURES, random_state=4)
    X, y, arm = table[FEATURES].to_numpy(), table["hamd17_change"].to_numpy(), table["group"].to_numpy()
    expected = np.empty((len(y), 2))
    folds = StratifiedKFold(5, shuffle=True, random_state=4).split(X, np.unique(arm, return_inverse=True)[1])
    for train, test in folds:
        for k, a in enumerate(["cbt", "ssri"]):
            rows = train[arm[train] == a]
            expected[test, k] = LinearRegression().fit(X[rows], y[rows]).predict(X[test])
    np.testing.assert_allclose(out[["pred_cbt", "pred_ssri"]], expected, atol=1e-8)
    # a user model goes through the same folds
    same = personalized_advantage(table, features=FEATURES, random_state=4, model=LinearRegression())
    np.testing.assert_allclose(same[["pred_cbt", "pred_ssri"]], expected, atol=1e-8)
    ridge = personalized_advantage(table, features=FEATURES, random_state=4, model=Ridge(alpha=5.0))
    assert not np.allclose(ridge["pred_cbt"], expected[:, 0])


def test_sign_convention_when_higher_is_better():
    table, _, _ = _simulate(2, n=120)
    table["improvement"] = -table["hamd17_change"]
    low = personalized_advantage(table, features=FEATURES)
    high = personalized_advantage(table, outcome="improvement", features=FEATURES, lower_is_better=False)
    np.testing.assert_allclose(high["pai"], low["pai"], atol=1e-9)
    assert (high["indicated_arm"] == low["indicated_arm"]).all()
    np.testing.assert_allclose(low["pai"], np.abs(low["pred_cbt"] - low["pred_ssri"]))
    # three arms: best minus next best
    table["group"] = np.resize(["a", "b", "c"], len(table))
    three = personalized_advantage(table, features=FEATURES)
    preds = np.sort(three[["pred_a", "pred_b", "pred_c"]].to_numpy(), axis=1)
    np.testing.assert_allclose(three["pai"], preds[:, 1] - preds[:, 0])


def test_user_model_bootstrap_runs():
    table, _, _ = _simulate(3, n=120)
    row = pai_summary(table, features=FEATURES, model=Ridge(alpha=1.0), n_boot=20).iloc[0]
    assert row["n_boot_valid"] == 20 and row["ci_low"] <= row["ci_high"]


def test_missing_rows_are_listed_and_small_arms_rejected():
    table, _, _ = _simulate(4, n=100)
    table.loc[3, "hamd17_change"] = np.nan
    table.loc[7, "severity"] = np.nan
    out = personalized_advantage(table, features=FEATURES)
    dropped = out.attrs["dropped"]
    assert list(dropped["participant_id"]) == ["sub-003", "sub-007"]
    assert dropped["reason"].tolist() == ["missing hamd17_change", "missing severity"]
    assert len(out) == 98
    small = table.copy()
    small.loc[small.index[10:18], "group"] = "placebo"
    with pytest.raises(BadInputError, match="placebo: 8 participants"):
        personalized_advantage(small, features=FEATURES)
    with pytest.raises(BadInputError, match="column"):
        personalized_advantage(table, features=["absent"])
    with pytest.raises(BadInputError, match="two arms"):
        personalized_advantage(table.assign(group="cbt"), features=FEATURES)


@pytest.mark.slow
def test_no_interaction_ci_covers_zero_at_least_at_the_nominal_rate():
    """Whole-procedure bootstrap: covers 0 in ≥ 90% of null data sets (it is somewhat conservative);
    a bootstrap that holds the indicated arms fixed covers far less often (about 75%)."""
    covered = 0
    for seed in range(100):
        table, _, _ = _simulate(100 + seed, n=200, interaction=0.0)
        row = pai_summary(table, features=FEATURES, n_boot=200, random_state=seed).iloc[0]
        covered += row["ci_low"] <= 0 <= row["ci_high"]
    assert covered >= 90
