"""Nested cross-validation and the permutation test of the whole procedure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import theramark.predict.validation as validation
from theramark.errors import BadInputError
from theramark.predict.validation import (
    PREDICTION_COLUMNS,
    cross_validate_nested,
    make_model,
    make_outer_splits,
    permutation_test_nested,
)

FITS: list[np.ndarray] = []


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Records the ids (column 0) of the rows it is fitted on; predicts from column 1."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, X, y):
        FITS.append(np.asarray(X)[:, 0].copy())
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-self.C * np.asarray(X)[:, 1]))
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def _signal_data(n=100, p=20, effect=1.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = (effect * X[:, 0] + rng.normal(size=n) > 0).astype(int)
    return X, y


def test_inner_tuning_never_sees_outer_test_rows():
    rng = np.random.default_rng(1)
    n = 60
    X = np.column_stack([np.arange(n), rng.normal(size=n)])
    y = rng.integers(0, 2, n)
    FITS.clear()
    grid = {"C": [0.5, 1.0, 2.0]}
    res = cross_validate_nested(RecordingClassifier(), X, y, param_grid=grid, n_splits=4, n_repeats=2,
                                inner_splits=3, n_jobs=1)
    per_fold = len(grid["C"]) * 3 + 1  # inner fits + refit on the outer training rows
    assert len(FITS) == per_fold * len(res.splits)
    for k, split in enumerate(res.splits):
        fits = FITS[k * per_fold:(k + 1) * per_fold]
        test_ids = set(split.test.tolist())
        for ids in fits:
            assert not test_ids & set(ids.astype(int).tolist())
        assert set(fits[-1].astype(int)) == set(split.train.tolist())  # refit on all outer training rows
    # every row predicted exactly once per repeat, from the fold that held it out
    assert list(res.predictions.columns) == list(PREDICTION_COLUMNS)
    counts = res.predictions.groupby(["repeat", "row"]).size()
    assert (counts == 1).all() and len(counts) == 2 * n
    assert set(res.best_params.columns) == {"repeat", "fold", "inner_score", "C"}


def test_grouped_splits_keep_a_participants_rows_together():
    rng = np.random.default_rng(2)
    n_part, per = 30, 3
    groups = np.repeat([f"sub-{i:02d}" for i in range(n_part)], per)
    y = np.repeat(rng.integers(0, 2, n_part), per)
    X = rng.normal(size=(n_part * per, 4))
    res = cross_validate_nested(make_pipeline(StandardScaler(), LogisticRegression()), X, y,
                                param_grid={"logisticregression__C": [0.1, 1.0]}, groups=groups,
                                n_splits=5, n_repeats=2, inner_splits=3)
    for split in res.splits:
        assert not set(groups[split.train]) & set(groups[split.test])
    folds = res.predictions.groupby(["repeat", "participant_id"])["fold"].nunique()
    assert (folds == 1).all()


def test_leave_one_site_out_holds_out_exactly_one_site():
    rng = np.random.default_rng(3)
    sites = np.repeat(["a", "b", "c", "d"], [20, 25, 15, 30])
    X = rng.normal(size=(90, 3))
    y = rng.integers(0, 2, 90)
    res = cross_validate_nested(LogisticRegression(), X, y, cv="site", sites=sites, inner_splits=3)
    assert len(res.splits) == 4
    for split in res.splits:
        assert np.unique(sites[split.test]).size == 1
        site = sites[split.test[0]]
        assert split.held_out == site
        assert set(split.test) == set(np.flatnonzero(sites == site))
    assert sorted(res.fold_metrics["held_out"].unique()) == ["a", "b", "c", "d"]
    with pytest.raises(BadInputError, match="sites="):
        cross_validate_nested(LogisticRegression(), X, y, cv="site")


def test_bad_input_is_named():
    X = np.zeros((20, 2))
    y = np.repeat([0, 1], [17, 3])
    with pytest.raises(BadInputError, match="class 1 has 3"):
        cross_validate_nested(LogisticRegression(), X, y, n_splits=5)
    with pytest.raises(BadInputError, match="missing"):
        cross_validate_nested(Ridge(), X, np.r_[np.nan, np.ones(19)], task="regression")
    with pytest.raises(BadInputError, match="binary"):
        cross_validate_nested(LogisticRegression(), X, np.arange(20) % 3)
    with pytest.raises(BadInputError, match="cv must be"):
        cross_validate_nested(LogisticRegression(), X, np.arange(20) % 2, cv="loo")
    with pytest.raises(BadInputError, match="metric 'r2'"):
        permutation_test_nested(LogisticRegression(), X, np.arange(20) % 2, metric="r2")


def test_null_data_with_selection_inside_cv_is_at_chance_and_signal_is_found():
    pipe = make_pipeline(SelectKBest(f_classif, k=10), GaussianNB())
    null_aucs, leaky_aucs = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(80, 200))
        y = rng.integers(0, 2, 80)
        null_aucs.append(cross_validate_nested(pipe, X, y, n_splits=5, n_repeats=1).score("auc"))
        # the same selection done before the CV leaks: what the nesting prevents
        leaked = SelectKBest(f_classif, k=10).fit_transform(X, y)
        leaky = cross_validate_nested(GaussianNB(), leaked, y, n_splits=5, n_repeats=1)
        leaky_aucs.append(leaky.score("auc"))
    assert abs(np.mean(null_aucs) - 0.5) < 0.06
    assert np.mean(leaky_aucs) > 0.7
    X[:, 0] += 1.5 * (y - 0.5) * 2
    found = cross_validate_nested(pipe, X, y, param_grid={"selectkbest__k": [5, 20]}, n_splits=5,
                                  n_repeats=2, inner_splits=3)
    assert found.score("auc") >= 0.7


def test_fold_metrics_match_sklearn_on_the_fold_predictions():
    X, y = _signal_data(seed=5)
    res = cross_validate_nested(make_pipeline(StandardScaler(), LogisticRegression()), X, y,
                                n_splits=5, n_repeats=2)
    fm = res.fold_metrics.pivot_table(index=["repeat", "fold"], columns="metric", values="value")
    for (repeat, fold), part in res.predictions.groupby(["repeat", "fold"]):
        assert fm.loc[(repeat, fold), "auc"] == pytest.approx(skm.roc_auc_score(part.y_true, part.y_prob))
        assert fm.loc[(repeat, fold), "brier"] == pytest.approx(
            skm.brier_score_loss(part.y_true, part.y_prob))
        assert fm.loc[(repeat, fold), "balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(part.y_true, part.y_pred))
    summary = res.summary(n_boot=200)
    assert set(summary["metric"]) >= {"auc", "brier", "calibration_slope"}
    assert summary.set_index("metric").loc["auc", "estimate"] > 0.75


def test_regression_and_identical_results_for_any_n_jobs():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(80, 6))
    y = X[:, 0] + rng.normal(size=80)
    kwargs = dict(param_grid={"ridge__alpha": [0.1, 10.0]}, task="regression", n_splits=3, n_repeats=2,
                  inner_splits=3)
    pipe = make_pipeline(StandardScaler(), Ridge())
    one = cross_validate_nested(pipe, X, y, n_jobs=1, **kwargs)
    two = cross_validate_nested(pipe, X, y, n_jobs=2, **kwargs)
    pd.testing.assert_frame_equal(one.predictions, two.predictions)
    pd.testing.assert_frame_equal(one.fold_metrics, two.fold_metrics)
    pd.testing.assert_frame_equal(one.best_params, two.best_params)
    r2 = one.fold_metrics.query("metric == 'r2'")
    part = one.predictions.query("repeat == 0 and fold == 0")
    assert r2.iloc[0]["value"] == pytest.approx(skm.r2_score(part.y_true, part.y_pred))
    assert one.score("r2") > 0.3


def test_outer_splits_are_stratified_and_reproducible():
    y = np.repeat([0, 1], [70, 30])
    splits = make_outer_splits(y, n_splits=5, n_repeats=3, random_state=7)
    for s in splits:
        assert y[s.test].sum() == 6
    again = make_outer_splits(y, n_splits=5, n_repeats=3, random_state=7)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again, strict=True))
    assert not np.array_equal(splits[0].test, splits[5].test)  # repeats differ


def test_make_model_pipelines_run():
    X, y = _signal_data(n=60, p=5, seed=8)
    for name in ("elasticnet", "svm"):
        est, grid = make_model(name, "classification")
        res = cross_validate_nested(est, X, y, param_grid={k: v[:2] for k, v in grid.items()},
                                    n_splits=3, n_repeats=1, inner_splits=3)
        assert res.score("auc") > 0.7
    est, grid = make_model("svm", "classification", probability=True)
    assert hasattr(est.fit(X, y), "predict_proba")
    est, _ = make_model("elasticnet", "regression")
    assert est.fit(X, X[:, 0]).predict(X).shape == (60,)
    with pytest.raises(BadInputError, match="regression"):
        make_model("cpm", "classification")
    with pytest.raises(BadInputError, match="unknown model"):
        make_model("forest", "classification")


# ---------------------------------------------------------------------------------------------
# Permutation test

class _FakeClient:
    """Stands in for a dask.distributed Client: map runs the calls locally, gather returns them."""

    def __init__(self):
        self.n_calls = 0

    def map(self, fn, items, pure=True, **kwargs):
        self.n_calls += len(items)
        return [fn(item, **kwargs) for item in items]

    def gather(self, futures):
        return futures


def test_permutation_test_finds_signal_and_is_the_same_for_any_backend():
    X, y = _signal_data(n=60, p=3, seed=9)
    kwargs = dict(n_permutations=19, n_splits=3, n_repeats=1, random_state=3)
    res = permutation_test_nested(LogisticRegression(), X, y, n_jobs=1, **kwargs)
    assert res.p_value == pytest.approx(1 / 20)
    assert res.null.shape == (19,) and res.observed > 0.8
    two = permutation_test_nested(LogisticRegression(), X, y, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(res.null, two.null)
    client = _FakeClient()
    via_client = permutation_test_nested(LogisticRegression(), X, y, client=client, **kwargs)
    np.testing.assert_array_equal(res.null, via_client.null)
    assert client.n_calls == 19
    table = res.to_frame()
    assert table.loc[0, "p_value"] == res.p_value and table.loc[0, "n_permutations"] == 19
    expected = (1 + np.sum(res.null >= res.observed)) / 20
    assert res.p_value == expected


def test_permutations_stay_within_blocks_and_move_participants_whole(monkeypatch):
    rng = np.random.default_rng(10)
    n_part = 24
    groups = np.repeat(np.arange(n_part), 2)
    blocks = np.repeat(np.repeat(["s1", "s2", "s3"], 8), 2)
    y = np.repeat(rng.normal(size=n_part), 2)
    X = rng.normal(size=(2 * n_part, 2))
    seen = []
    real = validation._run_folds

    def recording(estimator, X, y, *args):
        seen.append(np.asarray(y).copy())
        return real(estimator, X, y, *args)

    monkeypatch.setattr(validation, "_run_folds", recording)
    permutation_test_nested(Ridge(), X, y, task="regression", groups=groups, blocks=blocks,
                            n_permutations=10, n_splits=3, n_repeats=1)
    assert len(seen) == 11
    np.testing.assert_array_equal(seen[0], y)
    moved = 0
    for y_perm in seen[1:]:
        for b in np.unique(blocks):
            np.testing.assert_array_equal(np.sort(y_perm[blocks == b]), np.sort(y[blocks == b]))
        assert (y_perm[::2] == y_perm[1::2]).all()  # a participant's rows keep one outcome
        moved += not np.array_equal(y_perm, y)
    assert moved == 10
    with pytest.raises(BadInputError, match="same on every row"):
        permutation_test_nested(Ridge(), X, np.arange(48.0), task="regression", groups=groups,
                                n_permutations=2)


def test_permuted_statistic_is_the_nested_cv_score_of_the_permuted_outcome(monkeypatch):
    X, y = _signal_data(n=40, p=2, seed=14)
    seen = []
    real = validation._run_folds

    def recording(estimator, X, y, *args):
        seen.append(np.asarray(y).copy())
        return real(estimator, X, y, *args)

    monkeypatch.setattr(validation, "_run_folds", recording)
    res = permutation_test_nested(GaussianNB(), X, y, n_permutations=3, n_splits=4, n_repeats=2,
                                  random_state=5)
    monkeypatch.setattr(validation, "_run_folds", real)
    for y_perm, value in zip(seen[1:], res.null, strict=True):
        again = cross_validate_nested(GaussianNB(), X, y_perm, n_splits=4, n_repeats=2, random_state=5)
        assert value == pytest.approx(again.score("auc"))


@pytest.mark.slow
def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(11)
    p_values = []
    for seed in range(30):
        X = rng.normal(size=(40, 2))
        y = rng.integers(0, 2, 40)
        res = permutation_test_nested(GaussianNB(), X, y, n_permutations=19, n_splits=4,
                                      n_repeats=1, random_state=seed)
        p_values.append(res.p_value)
    # p is discrete on k/20; compare with the discrete uniform through a small jitter inside each step
    jittered = np.asarray(p_values) - rng.random(len(p_values)) / 20
    assert stats.kstest(jittered, "uniform").pvalue > 0.01


# ---------------------------------------------------------------------------------------------
# With the package's own fold-safe pieces (written alongside this module)

def test_nested_cv_with_combat_transformer_in_the_pipeline():
    transformers = pytest.importorskip("theramark.predict.transformers")
    rng = np.random.default_rng(12)
    n = 120
    site = np.repeat(["a", "b", "c"], 40)
    age = rng.uniform(20, 60, n)
    sex = rng.integers(0, 2, n)
    y = rng.integers(0, 2, n)
    shift = {"a": 0.0, "b": 2.0, "c": -2.0}
    feats = rng.normal(size=(n, 5)) + np.array([shift[s] for s in site])[:, None]
    feats[:, 0] += 1.2 * y
    X = pd.DataFrame(feats, columns=[f"f{i}" for i in range(5)]).assign(site=site, age=age, sex=sex)
    pipe = make_pipeline(transformers.ComBatTransformer(site="site", covariates=("age", "sex")),
                         StandardScaler(), LogisticRegression())
    res = cross_validate_nested(pipe, X, y, param_grid={"logisticregression__C": [0.1, 1.0]},
                                n_splits=4, n_repeats=1, inner_splits=3)
    assert res.score("auc") > 0.7


def test_nested_cv_with_cpm():
    pytest.importorskip("theramark.predict.cpm")
    rng = np.random.default_rng(13)
    n, p = 80, 200
    X = rng.normal(size=(n, p))
    y = X[:, :10].sum(axis=1) + rng.normal(size=n) * 2
    est, grid = make_model("cpm", "regression")
    res = cross_validate_nested(est, X, y, param_grid=grid, task="regression", n_splits=4, n_repeats=1,
                                inner_splits=3)
    assert res.score("pearson_r") > 0.4
    assert set(res.best_params["model__p_threshold"]) <= set(grid["model__p_threshold"])
