"""Prediction metrics against scikit-learn, scipy and statsmodels; bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from theramark.errors import BadInputError
from theramark.predict.metrics import (
    _metric_rows,
    bootstrap_counts,
    bootstrap_metrics,
    calibration_slope_intercept,
    compute_metrics,
    reliability_curve,
)


def _classification_data(seed=0, n=300, slope=0.7, intercept=0.3):
    rng = np.random.default_rng(seed)
    lp = rng.normal(0, 1.5, n)
    p = np.round(1 / (1 + np.exp(-lp)), 2)  # rounding makes ties
    y = rng.binomial(1, 1 / (1 + np.exp(-(intercept + slope * lp))))
    return y, p


def test_classification_metrics_match_sklearn():
    y, p = _classification_data()
    labels = np.where(y == 1, "responder", "nonresponder")  # "responder" sorts last: positive class
    m = compute_metrics(labels, y_score=p)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p >= 0.5), abs=1e-12)
    # decision scores: AUC only
    m = compute_metrics(y, y_score=np.log(p / (1 - p) + 1e-3), y_pred=(p >= 0.3).astype(int))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, np.log(p / (1 - p) + 1e-3)), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p >= 0.3), abs=1e-12)
    assert np.isnan(m["brier"]) and np.isnan(m["calibration_slope"])


def test_calibration_matches_statsmodels_glm():
    y, p = _classification_data(seed=1)
    slope, intercept = calibration_slope_intercept(y, p)
    lp = np.log(p / (1 - p))
    fit = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    assert slope == pytest.approx(fit.params[1], abs=1e-7)
    offset_fit = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit()
    assert intercept == pytest.approx(offset_fit.params[0], abs=1e-7)


def test_calibration_of_well_calibrated_and_overfitted_probabilities():
    rng = np.random.default_rng(2)
    lp = rng.normal(0, 1.2, 20000)
    y = rng.binomial(1, 1 / (1 + np.exp(-lp)))
    slope, intercept = calibration_slope_intercept(y, 1 / (1 + np.exp(-lp)))
    assert slope == pytest.approx(1.0, abs=0.06)
    assert intercept == pytest.approx(0.0, abs=0.05)
    # predictions twice too extreme (overfitting) → slope ≈ 0.5; risks shifted down → intercept > 0
    slope, _ = calibration_slope_intercept(y, 1 / (1 + np.exp(-2 * lp)))
    assert slope == pytest.approx(0.5, abs=0.04)
    _, intercept = calibration_slope_intercept(y, 1 / (1 + np.exp(-(lp - 1.0))))
    assert intercept == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn(strategy):
    rng = np.random.default_rng(3)
    p = np.round(rng.random(500), 2)
    y = rng.binomial(1, p)
    table = reliability_curve(y, p, n_bins=7, strategy=strategy)
    frac, mean = calibration_curve(y, p, n_bins=7, strategy=strategy)
    np.testing.assert_allclose(table["fraction_positive"], frac)
    np.testing.assert_allclose(table["mean_predicted"], mean)
    assert table["n"].sum() == 500


def test_regression_metrics_match_sklearn_and_scipy():
    rng = np.random.default_rng(4)
    y = rng.normal(size=80)
    pred = 0.5 * y + rng.normal(size=80)
    m = compute_metrics(y, pred, task="regression")
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-12)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), abs=1e-12)
    assert m["pearson_r"] == pytest.approx(stats.pearsonr(y, pred)[0], abs=1e-12)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_vectorized_bootstrap_equals_explicit_resampling(task):
    """Count weights give the same metric as computing it on the resampled rows (sklearn / scipy)."""
    rng = np.random.default_rng(5)
    n = 60
    if task == "classification":
        y, score = _classification_data(seed=5, n=n)
        pred = (score >= 0.5).astype(float)
        y = y.astype(float)
    else:
        y = rng.normal(size=n)
        score = pred = y + rng.normal(size=n)
    counts = bootstrap_counts(np.random.default_rng(0), n, 5)
    rows = _metric_rows(task, y, pred, score, counts)
    for b in range(5):
        idx = np.repeat(np.arange(n), counts[b].astype(int))
        if task == "classification":
            assert rows["auc"][b] == pytest.approx(skm.roc_auc_score(y[idx], score[idx]), abs=1e-12)
            assert rows["brier"][b] == pytest.approx(skm.brier_score_loss(y[idx], score[idx]), abs=1e-12)
            assert rows["balanced_accuracy"][b] == pytest.approx(
                skm.balanced_accuracy_score(y[idx], pred[idx]), abs=1e-12)
            lp = np.log(score[idx] / (1 - score[idx]))
            fit = sm.GLM(y[idx], sm.add_constant(lp), family=sm.families.Binomial()).fit()
            assert rows["calibration_slope"][b] == pytest.approx(fit.params[1], abs=1e-6)
        else:
            assert rows["r2"][b] == pytest.approx(skm.r2_score(y[idx], pred[idx]), abs=1e-12)
            assert rows["pearson_r"][b] == pytest.approx(stats.pearsonr(y[idx], pred[idx])[0], abs=1e-12)
            assert rows["mae"][b] == pytest.approx(skm.mean_absolute_error(y[idx], pred[idx]), abs=1e-12)


def test_bootstrap_table_and_participant_resampling():
    rng = np.random.default_rng(6)
    y = rng.normal(size=50)
    pred = y + rng.normal(size=50)
    table = bootstrap_metrics(y, pred, task="regression", n_boot=300, random_state=1)
    assert list(table.columns) == ["metric", "estimate", "ci_low", "ci_high", "n_boot_valid", "n", "n_boot"]
    assert (table["ci_low"] <= table["estimate"]).all() and (table["estimate"] <= table["ci_high"]).all()
    again = bootstrap_metrics(y, pred, task="regression", n_boot=300, random_state=1)
    pd.testing.assert_frame_equal(table, again)
    # Duplicating every participant's row under the same id is the same participant-level bootstrap.
    doubled = bootstrap_metrics(np.repeat(y, 2), np.repeat(pred, 2), task="regression",
                                groups=np.repeat(np.arange(50), 2), n_boot=300, random_state=1)
    np.testing.assert_allclose(doubled[["estimate", "ci_low", "ci_high"]],
                               table[["estimate", "ci_low", "ci_high"]], rtol=1e-10, atol=1e-12)


def test_bootstrap_ci_coverage():
    """95% percentile CIs of the MAE and the AUC cover the true value at about the nominal rate."""
    from scipy.stats import norm

    rng = np.random.default_rng(7)
    n, reps = 120, 120
    true_mae = np.sqrt(2 / np.pi)
    true_auc = norm.cdf(1.0 / np.sqrt(2))  # binormal, unit separation
    hits_mae = hits_auc = 0
    for rep in range(reps):
        y = rng.normal(size=n)
        t = bootstrap_metrics(y, y + rng.normal(size=n), task="regression", n_boot=400, random_state=rep)
        lo, hi = t.set_index("metric").loc["mae", ["ci_low", "ci_high"]]
        hits_mae += lo <= true_mae <= hi
        lab = np.repeat([0, 1], n // 2)
        score = rng.normal(size=n) + lab
        t = bootstrap_metrics(lab, y_score=score, y_pred=(score > 0.5).astype(int), n_boot=400,
                              random_state=rep)
        lo, hi = t.set_index("metric").loc["auc", ["ci_low", "ci_high"]]
        hits_auc += lo <= true_auc <= hi
    assert 0.88 <= hits_mae / reps <= 0.99
    assert 0.88 <= hits_auc / reps <= 0.99


def test_bad_input_is_named():
    with pytest.raises(BadInputError, match="exactly two classes"):
        compute_metrics([0, 1, 2], y_score=[0.1, 0.2, 0.3])
    with pytest.raises(BadInputError, match="y_score"):
        compute_metrics([0, 1, 1], y_score=[0.1, 0.2])
    with pytest.raises(BadInputError, match="task"):
        compute_metrics([0, 1], [0, 1], task="ranking")
    with pytest.raises(BadInputError, match="probabilities"):
        calibration_slope_intercept([0, 1], [0.2, 1.4])
