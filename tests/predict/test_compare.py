"""Nadeau–Bengio corrected resampled t-test: hand computation and calibration on null data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.model_selection import RepeatedKFold

from theramark.errors import BadInputError
from theramark.predict.compare import COMPARE_COLUMNS, corrected_resampled_ttest


def test_matches_hand_computation():
    a = np.array([0.71, 0.68, 0.75, 0.66, 0.73, 0.70])
    b = np.array([0.65, 0.69, 0.70, 0.60, 0.69, 0.64])
    out = corrected_resampled_ttest(a, b, n_train=120, n_test=30, metric="auc")
    assert list(out.columns) == list(COMPARE_COLUMNS)
    row = out.iloc[0]
    d = [0.06, -0.01, 0.05, 0.06, 0.04, 0.06]
    mean = sum(d) / 6
    var = sum((x - mean) ** 2 for x in d) / 5
    se = ((1 / 6 + 30 / 120) * var) ** 0.5
    t = mean / se
    assert row["mean_difference"] == pytest.approx(mean)
    assert row["se"] == pytest.approx(se)
    assert row["t"] == pytest.approx(t)
    assert row["df"] == 5
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 5))
    half = stats.t.ppf(0.975, 5) * se
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
    # the uncorrected paired t-test is the special case n_test/n_train → 0
    naive = corrected_resampled_ttest(a, b, n_train=1e12, n_test=1e-12).iloc[0]
    assert naive["t"] == pytest.approx(stats.ttest_rel(a, b).statistic)


def _fold_mse(X, y, train, test):
    design = np.column_stack([np.ones(len(train)), X[train]])
    beta = np.linalg.lstsq(design, y[train], rcond=None)[0]
    pred = np.column_stack([np.ones(len(test)), X[test]]) @ beta
    return np.mean((y[test] - pred) ** 2)


@pytest.mark.slow
def test_calibrated_on_null_where_the_naive_test_is_not():
    """Two equally good models (different but equally informative predictors): the corrected test
    rejects at about the nominal rate or below; the naive paired t-test on fold scores does not."""
    rng = np.random.default_rng(0)
    n, reps = 60, 150
    corrected = naive = 0
    for rep in range(reps):
        X = rng.normal(size=(n, 2))
        y = 0.5 * X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=n)
        cv = RepeatedKFold(n_splits=5, n_repeats=10, random_state=rep)
        a, b = [], []
        for train, test in cv.split(X):
            a.append(_fold_mse(X[:, :1], y, train, test))
            b.append(_fold_mse(X[:, 1:], y, train, test))
        res = corrected_resampled_ttest(a, b, n_train=48, n_test=12).iloc[0]
        corrected += res["p_value"] < 0.05
        naive += stats.ttest_rel(a, b).pvalue < 0.05
    assert corrected / reps <= 0.09
    assert naive / reps >= 0.2


def test_needs_two_folds():
    with pytest.raises(BadInputError, match="at least 2 folds"):
        corrected_resampled_ttest([0.7], [0.6], n_train=10, n_test=5)
    with pytest.raises(BadInputError, match="equal length"):
        corrected_resampled_ttest([0.7, 0.6], [0.6], n_train=10, n_test=5)
