"""CPM and its batched permutation test against an independent, loop-based Shen et al. protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin
import pytest
import statsmodels.api as sm
from scipy import stats
from sklearn.model_selection import KFold, cross_val_predict

from theramark.errors import BadInputError
from theramark.predict.cpm import CPM, cpm_permutation_test


# --- an independent implementation of the protocol (loops, scipy, numpy.polyfit) -------------------
def reference_fit(x, y, p_threshold, tail, covariates=None):
    """Edge masks and a predictor, edge by edge, as in Shen et al. (2017)'s protocol code."""
    n, n_edges = x.shape
    r = np.zeros(n_edges)
    p = np.ones(n_edges)
    if covariates is None:
        for e in range(n_edges):
            if np.ptp(x[:, e]) > 0:
                r[e], p[e] = stats.pearsonr(x[:, e], y)
    else:
        design = sm.add_constant(covariates, has_constant="add")
        y_res = sm.OLS(y, design).fit().resid
        df = n - 2 - covariates.shape[1]
        for e in range(n_edges):
            if np.ptp(x[:, e]) > 0:
                x_res = sm.OLS(x[:, e], design).fit().resid
                r[e] = stats.pearsonr(x_res, y_res)[0]
                t = r[e] * np.sqrt(df / (1 - r[e] ** 2))
                p[e] = 2 * stats.t.sf(abs(t), df)
    pos = (r > 0) & (p < p_threshold) if tail in ("positive", "both") else np.zeros(n_edges, bool)
    neg = (r < 0) & (p < p_threshold) if tail in ("negative", "both") else np.zeros(n_edges, bool)
    s_pos, s_neg = x[:, pos].sum(axis=1), x[:, neg].sum(axis=1)
    if tail == "positive" and pos.any():
        slope, intercept = np.polyfit(s_pos, y, 1)
        return pos, neg, lambda z: intercept + slope * z[:, pos].sum(axis=1)
    if tail == "negative" and neg.any():
        slope, intercept = np.polyfit(s_neg, y, 1)
        return pos, neg, lambda z: intercept + slope * z[:, neg].sum(axis=1)
    if tail == "both" and (pos.any() or neg.any()):
        used = [m for m in (pos, neg) if m.any()]
        design = np.column_stack([np.ones(n)] + [x[:, m].sum(axis=1) for m in used])
        beta = np.linalg.lstsq(design, y, rcond=None)[0]
        return pos, neg, lambda z: beta[0] + sum(b * z[:, m].sum(axis=1)
                                                 for b, m in zip(beta[1:], used, strict=True))
    mean = y.mean()
    return pos, neg, lambda z: np.full(z.shape[0], mean)


def reference_cv(x, y, folds, p_threshold, tail, covariates=None):
    pred = np.empty(len(y))
    for train, test in folds:
        cov = None if covariates is None else covariates[train]
        *_, predict = reference_fit(x[train], y[train], p_threshold, tail, cov)
        pred[test] = predict(x[test])
    return pred


def _data(seed=0, n=47, n_edges=120, n_signal=6, k=0, noise=1.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_edges))
    cov = rng.normal(size=(n, k)) if k else None
    y = x[:, :n_signal // 2].sum(axis=1) - x[:, n_signal // 2:n_signal].sum(axis=1) \
        + noise * rng.normal(size=n)
    if k:
        y = y + cov @ rng.normal(size=k)
        x[:, n_signal:n_signal + 10] += cov[:, :1]
    return x, y, cov


# --- the estimator -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tail", ["positive", "negative", "both"])
@pytest.mark.parametrize("k", [0, 2])
def test_cpm_equals_reference_protocol_fold_by_fold(tail, k):
    x, y, cov = _data(seed=k + 1, k=k)
    folds = list(KFold(5, shuffle=True, random_state=3).split(x))   # 47 rows: not divisible by 5
    ours = np.empty(len(y))
    for train, test in folds:
        model = CPM(p_threshold=0.05, tail=tail).fit(
            x[train], y[train], covariates=None if cov is None else cov[train])
        pos, neg, _ = reference_fit(x[train], y[train], 0.05, tail,
                                    None if cov is None else cov[train])
        np.testing.assert_array_equal(model.positive_edges_, pos)
        np.testing.assert_array_equal(model.negative_edges_, neg)
        assert (pos | neg).any()
        ours[test] = model.predict(x[test])
    np.testing.assert_allclose(ours, reference_cv(x, y, folds, 0.05, tail, cov), rtol=0,
                               atol=1e-10)


def test_partial_correlation_matches_pingouin():
    x, y, cov = _data(seed=5, n=60, k=2)
    model = CPM(p_threshold=0.05).fit(x, y, covariates=cov)
    frame = pd.DataFrame({"y": y, "c0": cov[:, 0], "c1": cov[:, 1]})
    for edge in (0, 4, 7, 50):
        frame["e"] = x[:, edge]
        ref = pingouin.partial_corr(frame, x="e", y="y", covar=["c0", "c1"])
        assert model.r_[edge] == pytest.approx(ref["r"].iloc[0], abs=1e-10)
        assert model.p_values_[edge] == pytest.approx(ref["p_val"].iloc[0], rel=1e-8)


def test_dataframe_covariate_columns_equal_covariate_array():
    x, y, cov = _data(seed=6, k=2)
    frame = pd.DataFrame(x, columns=[f"e{i}" for i in range(x.shape[1])])
    frame.insert(3, "age", cov[:, 0])
    frame["fd"] = cov[:, 1]
    by_name = CPM(p_threshold=0.05, covariates=["age", "fd"]).fit(frame, y)
    by_array = CPM(p_threshold=0.05).fit(x, y, covariates=cov)
    np.testing.assert_array_equal(by_name.positive_edges_, by_array.positive_edges_)
    np.testing.assert_allclose(by_name.predict(frame), by_array.predict(x), atol=1e-12)
    assert by_name.edge_names_ == [f"e{i}" for i in range(x.shape[1])]


def test_both_tails_is_two_regressor_model():
    x, y, _ = _data(seed=7, n=80)
    model = CPM(p_threshold=0.01, tail="both").fit(x, y)
    strength = model.network_strength(x)
    design = np.column_stack([np.ones(80), strength])
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose([model.intercept_, *model.coef_], beta, atol=1e-10)
    assert model.coef_[0] > 0 and model.coef_[1] < 0


def test_constant_edges_and_no_selection():
    x, y, _ = _data(seed=8)
    x[:, [10, 11]] = 3.0
    model = CPM(p_threshold=0.05).fit(x, y)
    assert model.constant_edges_[[10, 11]].all() and model.constant_edges_.sum() == 2
    assert not (model.positive_edges_ | model.negative_edges_)[[10, 11]].any()
    assert model.p_values_[10] == 1.0
    flat = CPM().fit(np.ones((20, 30)), y[:20])
    assert flat.fallback_ and flat.intercept_ == pytest.approx(y[:20].mean())
    np.testing.assert_allclose(flat.predict(np.zeros((4, 30))), y[:20].mean())
    rng = np.random.default_rng(0)
    none = CPM(p_threshold=1e-12).fit(rng.normal(size=(30, 40)), rng.normal(size=30))
    assert none.fallback_ and not none.positive_edges_.any()


def test_cpm_bad_input():
    x, y, _ = _data(seed=9)
    frame = pd.DataFrame(x, columns=[f"e{i}" for i in range(x.shape[1])])
    frame.loc[4, "e17"] = np.nan
    with pytest.raises(BadInputError, match="e17"):
        CPM().fit(frame, y)
    y_bad = pd.Series(y.copy(), index=[f"sub-{i}" for i in range(len(y))])
    y_bad.iloc[2] = np.nan
    with pytest.raises(BadInputError, match="sub-2"):
        CPM().fit(x, y_bad)
    with pytest.raises(BadInputError, match="at least 3"):
        CPM().fit(x[:2], y[:2])
    with pytest.raises(BadInputError, match="at least 5"):
        CPM().fit(x[:4], y[:4], covariates=np.arange(8.0).reshape(4, 2) ** 2)
    with pytest.raises(BadInputError, match="tail"):
        CPM(tail="two").fit(x, y)
    with pytest.raises(BadInputError, match=r"\['age'\]"):
        CPM(covariates=["age"]).fit(pd.DataFrame(x), y)
    with pytest.raises(BadInputError, match="constant"):
        CPM().fit(x, np.ones(len(y)))


# --- the permutation test ---------------------------------------------------------------------------
@pytest.mark.parametrize("tail,k", [("positive", 0), ("both", 2), ("negative", 1)])
def test_permutation_test_equals_estimator_loops(tail, k):
    x, y, cov = _data(seed=10 + k, n=43, n_edges=150, k=k)
    result = cpm_permutation_test(x, y, n_permutations=20, n_splits=10, p_threshold=0.05,
                                  tail=tail, random_state=4, covariates=cov, chunk_size=7)
    # folds: seeded KFold, 43 rows in 10 folds
    expected = list(KFold(10, shuffle=True, random_state=4).split(x))
    assert len(result.folds) == 10
    for (a, b), (c, d) in zip(result.folds, expected, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)

    def loop(target):
        pred = np.empty(len(target))
        for train, test in result.folds:
            model = CPM(p_threshold=0.05, tail=tail).fit(
                x[train], target[train], covariates=None if cov is None else cov[train])
            pred[test] = model.predict(x[test])
        return pred

    observed = loop(y)
    np.testing.assert_allclose(result.predictions, observed, atol=1e-10)
    np.testing.assert_allclose(result.predictions, reference_cv(x, y, result.folds, 0.05, tail, cov),
                               atol=1e-10)
    assert result.r == pytest.approx(stats.pearsonr(y, observed)[0], abs=1e-10)
    null = [stats.pearsonr(y[perm], loop(y[perm]))[0] for perm in result.permutations]
    np.testing.assert_allclose(result.null, null, atol=1e-10)
    assert result.p_value == (1 + np.sum(result.null >= result.r)) / 21
    # the chunking does not change anything
    again = cpm_permutation_test(x, y, n_permutations=20, n_splits=10, p_threshold=0.05, tail=tail,
                                 random_state=4, covariates=cov, chunk_size=100)
    np.testing.assert_allclose(again.null, result.null, atol=1e-12)


def test_permutation_test_finds_planted_edges():
    x, y, _ = _data(seed=11, n=100, n_edges=2000, n_signal=6, noise=1.0)
    result = cpm_permutation_test(x, y, n_permutations=199, n_splits=10, p_threshold=0.001,
                                  tail="both", random_state=0)
    assert result.r > 0.3
    assert result.p_value < 0.05
    assert result.null.shape == (199,)
    assert (result.n_selected > 0).all()


def test_permutation_p_values_uniform_under_null():
    p_values = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(30, 40)), rng.normal(size=30)
        result = cpm_permutation_test(x, y, n_permutations=49, n_splits=5, p_threshold=0.05,
                                      tail="positive", random_state=seed)
        p_values.append(result.p_value)
    p_values = np.array(p_values)
    # p is on the grid k / 50; compare with the uniform on (0, 1] at the grid's resolution
    assert stats.kstest(p_values - 0.01, "uniform").pvalue > 0.01
    assert np.mean(p_values <= 0.05) < 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def test_permutation_test_groups_and_bad_input():
    x, y, _ = _data(seed=12, n=40)
    groups = np.repeat(np.arange(20), 2)
    result = cpm_permutation_test(x, y, n_permutations=5, n_splits=4, groups=groups,
                                  p_threshold=0.05)
    for train, test in result.folds:
        assert not set(groups[train]) & set(groups[test])
    # whole groups move together
    perm_groups = groups[result.permutations]
    assert (perm_groups[:, ::2] == perm_groups[:, 1::2]).all()
    with pytest.raises(BadInputError, match="equal size"):
        cpm_permutation_test(x, y, n_permutations=5, n_splits=4, groups=np.r_[0, groups[:-1]])
    with pytest.raises(BadInputError, match="n_splits"):
        cpm_permutation_test(x[:8], y[:8], n_permutations=5, n_splits=10)
    with pytest.raises(BadInputError, match="at least 3"):
        cpm_permutation_test(x[:4], y[:4], n_permutations=5, n_splits=2)
    frame = pd.DataFrame(x, columns=[f"e{i}" for i in range(x.shape[1])])
    frame.loc[0, "e3"] = np.inf
    with pytest.raises(BadInputError, match="e3"):
        cpm_permutation_test(frame, y, n_permutations=5)


def test_cpm_in_cross_val_predict_and_threads_match_permutation_test():
    x, y, cov = _data(seed=13, n=45, k=1)
    frame = pd.DataFrame(x, columns=[f"e{i}" for i in range(x.shape[1])])
    frame["age"] = cov[:, 0]
    cv = KFold(7, shuffle=True, random_state=2)
    pred = cross_val_predict(CPM(p_threshold=0.05, tail="both", covariates=["age"]), frame, y, cv=cv)
    result = cpm_permutation_test(frame, y, n_permutations=10, n_splits=7, p_threshold=0.05,
                                  tail="both", random_state=2, covariates=["age"])
    np.testing.assert_allclose(result.predictions, pred, atol=1e-10)
    threaded = cpm_permutation_test(frame, y, n_permutations=10, n_splits=7, p_threshold=0.05,
                                    tail="both", random_state=2, covariates=["age"], n_jobs=2)
    np.testing.assert_array_equal(threaded.null, result.null)
