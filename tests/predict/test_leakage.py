"""No test row ever reaches a fitted step: recorded fits, null AUC, and site-confounded data.

Each test pairs the fold-safe pipeline with a deliberately leaky variant run on the same data, so
that the test demonstrably can fail.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from theramark.group.harmonize import ComBat
from theramark.predict.transformers import ComBatTransformer

#: Row labels each recording step saw, by step tag and call ("fit"/"transform").
LOG: dict[str, list[tuple[str, frozenset]]] = defaultdict(list)


class Recorder(TransformerMixin, BaseEstimator):
    """Wraps a transformer and records the row labels (DataFrame index) of every fit/transform.

    The log is module-level because cross-validation clones (deep-copies) the parameters.
    """

    def __init__(self, inner=None, tag: str = "step"):
        self.inner = inner
        self.tag = tag

    def fit(self, X, y=None):
        LOG[self.tag].append(("fit", frozenset(X.index)))
        self.inner_ = clone(self.inner).fit(X, y)
        return self

    def transform(self, X):
        LOG[self.tag].append(("transform", frozenset(X.index)))
        out = self.inner_.transform(X)
        if not isinstance(out, pd.DataFrame):
            out = pd.DataFrame(out, index=X.index)
        return out.set_axis(X.index, axis=0)

    def get_feature_names_out(self, input_features=None):
        return self.inner_.get_feature_names_out()


def _sited_null(seed: int, n: int = 60, n_features: int = 300, site_shift: float = 1.0,
                confounding: float = 0.8) -> tuple[pd.DataFrame, np.ndarray]:
    """Two sites; the label is more frequent at site B; site B shifts every feature; no label effect."""
    rng = np.random.default_rng(seed)
    label = np.repeat([0, 1], n // 2)
    p_site_b = np.where(label == 1, confounding, 1 - confounding)
    site_b = rng.random(n) < p_site_b
    site_b[:2], site_b[-2:] = [True, False], [True, False]  # both sites in both classes
    features = rng.normal(size=(n, n_features)) + site_shift * site_b[:, None]
    frame = pd.DataFrame(features, columns=[f"f{j}" for j in range(n_features)],
                         index=[f"sub-{seed}-{i:03d}" for i in range(n)])
    frame["site"] = np.where(site_b, "B", "A")
    frame["age"] = rng.normal(40, 10, n)
    return frame, label


def test_no_step_is_fitted_on_a_test_row():
    LOG.clear()
    data, label = _sited_null(0, n=50)
    pipe = make_pipeline(
        Recorder(ComBatTransformer(covariates=("age",)), "combat"),
        Recorder(StandardScaler(), "scale"),
        Recorder(SelectKBest(f_classif, k=10), "select"),
        LogisticRegression(),
    )
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    folds = [(frozenset(data.index[tr]), frozenset(data.index[te])) for tr, te in cv.split(data, label)]
    pred = cross_val_predict(pipe, data, label, cv=cv, method="decision_function")
    assert pred.shape == (50,)
    for tag in ("combat", "scale", "select"):
        fits = [rows for call, rows in LOG[tag] if call == "fit"]
        assert len(fits) == 5, tag
        for rows, (train, test) in zip(fits, folds, strict=True):
            assert rows == train and not rows & test, tag
        transformed_tests = [rows for call, rows in LOG[tag] if call == "transform" and rows in
                             {t for _, t in folds}]
        assert len(transformed_tests) == 5, tag
    # the recorder would catch a leak: a step fitted on every row shows up
    LOG.clear()
    leaky = Recorder(StandardScaler(), "leaky").fit(data.drop(columns="site"))
    assert any(rows & folds[0][1] for call, rows in LOG["leaky"] if call == "fit")
    del leaky


def _null_aucs(seeds: range, n: int = 40, n_features: int = 10_000, k: int = 10, n_splits: int = 5):
    """Out-of-fold AUC on pure-noise data, all seeds at once: selection inside vs before the folds.

    The model per fold: standardize with the training rows' mean and SD, keep the ``k`` features
    of largest ANOVA F (``f_classif``) and score by the nearest-centroid direction (difference of
    the class means of the kept features). The honest variant selects on the training rows; the
    leaky variant selects once on all rows (test rows included) and then cross-validates.
    Balanced classes and stratified folds give every seed the same fold sizes, so the folds of all
    seeds stack into one array.
    """
    label = np.repeat([0, 1], n // 2)
    n_seeds = len(seeds)
    x = np.stack([np.random.default_rng(seed).standard_normal((n, n_features), dtype=np.float32)
                  for seed in seeds]).astype(np.float64)
    splits = [list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x[0], label))
              for seed in seeds]
    leaky_keep = _top_k(_anova_f(x, np.broadcast_to(label, (n_seeds, n))), k)
    scores = {"honest": np.empty((n_seeds, n)), "leaky": np.empty((n_seeds, n))}
    for fold in range(n_splits):
        train = np.stack([s[fold][0] for s in splits])
        test = np.stack([s[fold][1] for s in splits])
        x_train = np.take_along_axis(x, train[:, :, None], axis=1)
        x_test = np.take_along_axis(x, test[:, :, None], axis=1)
        mean, sd = x_train.mean(axis=1, keepdims=True), x_train.std(axis=1, keepdims=True)
        z_train, z_test = (x_train - mean) / sd, (x_test - mean) / sd
        y_train = label[train]
        honest_keep = _top_k(_anova_f(z_train, y_train), k)
        for name, keep in (("honest", honest_keep), ("leaky", leaky_keep)):
            zt = np.take_along_axis(z_train, keep[:, None, :], axis=2)
            zs = np.take_along_axis(z_test, keep[:, None, :], axis=2)
            m1 = (zt * (y_train == 1)[:, :, None]).sum(axis=1) / (y_train == 1).sum(axis=1)[:, None]
            m0 = (zt * (y_train == 0)[:, :, None]).sum(axis=1) / (y_train == 0).sum(axis=1)[:, None]
            score = np.einsum("stk,sk->st", zs - (m1 + m0)[:, None, :] / 2, m1 - m0)
            np.put_along_axis(scores[name], test, score, axis=1)
    return _auc(scores["honest"], label), _auc(scores["leaky"], label), (x, label, splits, k)


def _anova_f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One-way ANOVA F of every feature, (S, n, F) data and (S, n) 0/1 labels -> (S, F)."""
    n = x.shape[1]
    ones = (y == 1)[:, :, None]
    n1 = ones.sum(axis=1)
    n0 = n - n1
    m1 = (x * ones).sum(axis=1) / n1
    m0 = (x * ~ones).sum(axis=1) / n0
    grand = x.mean(axis=1)
    between = n1 * (m1 - grand) ** 2 + n0 * (m0 - grand) ** 2
    within = ((x - np.where(ones, m1[:, None], m0[:, None])) ** 2).sum(axis=1)
    return between / (within / (n - 2))


def _top_k(f: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-f, k - 1, axis=1)[:, :k]


def _auc(scores: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row of scores (S, n)."""
    ranks = stats.rankdata(scores, axis=1)
    n1, n0 = (label == 1).sum(), (label == 0).sum()
    return (ranks[:, label == 1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def test_null_auc_is_chance_with_selection_inside_the_folds():
    # 4 batches of 25 seeds bound the memory (~0.3 GB a batch)
    batches = [_null_aucs(range(start, start + 25)) for start in range(0, 100, 25)]
    honest = np.concatenate([b[0] for b in batches])
    leaky = np.concatenate([b[1] for b in batches])
    x, label, splits, k = batches[0][2]
    assert abs(honest.mean() - 0.5) < 0.03, honest.mean()
    assert leaky.mean() > 0.75, leaky.mean()
    # the vectorized pieces equal scikit-learn's on one seed and fold
    train, test = splits[3][1]
    scaler = StandardScaler().fit(x[3][train])
    z = scaler.transform(x[3][train])
    np.testing.assert_allclose(_anova_f(z[None], label[train][None])[0], f_classif(z, label[train])[0],
                               rtol=1e-8)
    chosen = SelectKBest(f_classif, k=k).fit(z, label[train]).get_support(indices=True)
    np.testing.assert_array_equal(np.sort(_top_k(_anova_f(z[None], label[train][None]), k)[0]), chosen)
    scores = np.random.default_rng(0).normal(size=(1, label.size))
    assert _auc(scores, label)[0] == pytest.approx(roc_auc_score(label, scores[0]))


def _cv_auc(model, x, label, cv) -> float:
    return roc_auc_score(label, cross_val_predict(model, x, label, cv=cv, method="decision_function"))


@pytest.mark.slow
def test_site_confounded_label_combat_with_label_outside_cv_inflates_auc():
    """What is compared, and why.

    Data (20 seeds, n = 40, 1,000 features): two sites; the label has no effect on any feature
    but is four times as frequent at site B as at site A, and site B shifts every feature by 1 SD.
    The classifier is StandardScaler -> SelectKBest(20) -> LogisticRegression; out-of-fold AUCs on
    the same stratified folds, averaged over seeds:

    - raw: no harmonization. Site predicts the label, so AUC is well above 0.5: the confound is
      real (honest prediction through site, not leakage; it shows the simulation works).
    - leaky: ``ComBat`` fitted once on all rows with the label as a covariate to preserve
      (neurocombat_sklearn's usage), then cross-validated. Site is removed, but every row, test
      rows included, gets ``label * beta_label`` added back with ``beta_label`` estimated on all
      rows, so the test rows' own labels are written into their features: AUC well above chance
      although, with site removed, no information about the label is left.
    - fold-safe: :class:`ComBatTransformer` (age only; never the label) fitted inside each
      training fold. Site, the only route from features to label, is removed: AUC at chance.

    The fold-safe and leaky variants both remove site, so their difference is the leak.
    """
    raw, leaky, safe = [], [], []
    classifier = make_pipeline(StandardScaler(), SelectKBest(f_classif, k=20), LogisticRegression())
    for seed in range(20):
        data, label = _sited_null(seed, n=40, n_features=1000)
        features = [c for c in data.columns if c.startswith("f")]
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        raw.append(_cv_auc(classifier, data[features], label, cv))
        covariates = pd.DataFrame({"age": data["age"], "label": label.astype(str)})
        harmonized = ComBat().fit_transform(data[features].to_numpy(), data["site"], covariates)
        leaky.append(_cv_auc(classifier, harmonized, label, cv))
        safe_model = make_pipeline(ComBatTransformer(covariates=("age",)), clone(classifier))
        safe.append(_cv_auc(safe_model, data, label, cv))
    raw, leaky, safe = map(np.mean, (raw, leaky, safe))
    assert raw > 0.65, raw
    assert abs(safe - 0.5) < 0.08, safe
    assert leaky > safe + 0.1, (leaky, safe)
