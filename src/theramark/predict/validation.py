"""Nested cross-validation with fold-safe pipelines, and a permutation test of the whole procedure.

The estimator is a scikit-learn estimator or :class:`~sklearn.pipeline.Pipeline`: every step that
learns something from data (scaling, ComBat, confound regression, feature selection, the model's
hyper-parameters) is fitted on the training rows of an outer fold only. Hyper-parameters are chosen
by a :class:`~sklearn.model_selection.GridSearchCV` run on the outer training rows (the inner loop);
the outer test rows are touched once, to predict.

Outer schemes (``cv``):

- ``"stratified"``: repeated stratified k-fold (classes for classification; quintile bins of the
  outcome for regression). With ``groups`` (participant of each row) it is
  :class:`~sklearn.model_selection.StratifiedGroupKFold`, so a participant's rows never straddle
  train and test.
- ``"kfold"``: repeated k-fold (:class:`~sklearn.model_selection.GroupKFold` with ``groups``).
- ``"site"``: leave one site out (one repeat; the split is deterministic).

The inner loop uses the same kind of split on the outer training rows (stratified for
classification, grouped by participant when ``groups`` is given; for ``"site"`` the inner split is
stratified k-fold grouped by participant).

References
----------
Varma S, Simon R (2006). Bias in error estimation when using cross-validation for model selection.
BMC Bioinformatics 7:91.

Varoquaux G et al. (2017). Assessing and tuning brain decoders: cross-validation, caveats, and
guidelines. NeuroImage 145:166-179.

Ojala M, Garriga GC (2010). Permutation tests for studying classifier performance. JMLR 11:1833-1863.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from sklearn.utils import _safe_indexing

from theramark.errors import BadInputError
from theramark.group._permutation_schemes import ExchangeabilityScheme, block_codes
from theramark.predict.metrics import _metric_rows, bootstrap_metrics, check_task, metric_names

CV_SCHEMES = ("stratified", "kfold", "site")
MODEL_NAMES = ("elasticnet", "svm", "cpm")
DEFAULT_SCORING = {"classification": "roc_auc", "regression": "neg_mean_squared_error"}
DEFAULT_METRIC = {"classification": "auc", "regression": "r2"}

#: Columns of :attr:`NestedCVResult.predictions`.
PREDICTION_COLUMNS = ("participant_id", "row", "repeat", "fold", "y_true", "y_pred", "y_score",
                      "y_prob")


@dataclass(frozen=True)
class Split:
    """One outer split: ``train`` and ``test`` are row positions."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    held_out: str = ""


@dataclass
class NestedCVResult:
    """What :func:`cross_validate_nested` returns.

    Attributes
    ----------
    predictions : DataFrame
        One row per test row × repeat: ``participant_id`` (the ``groups`` label, else the index of a
        DataFrame ``X``, else the row number), ``row`` (position in ``X``), ``repeat``, ``fold``,
        ``y_true``, ``y_pred`` (class or value), ``y_score`` (probability of the positive class
        when the model has ``predict_proba``, else its decision function; the prediction for
        regression) and ``y_prob`` (probability, n/a without ``predict_proba``).
    fold_metrics : DataFrame
        Tidy: ``repeat, fold, held_out, n_train, n_test, metric, value`` (metrics of
        :mod:`theramark.predict.metrics` on each test fold).
    best_params : DataFrame
        One row per outer fold: ``repeat, fold, inner_score`` (mean inner-CV score of the chosen
        setting, ``scoring`` units; n/a without a grid) and one column per tuned parameter.
    task, cv, scoring : str
    splits : list of Split
    """

    predictions: pd.DataFrame
    fold_metrics: pd.DataFrame
    best_params: pd.DataFrame
    task: str
    cv: str
    scoring: str
    splits: list[Split] = field(repr=False, default_factory=list)

    def score(self, metric: str | None = None) -> float:
        """Mean of ``metric`` over outer folds and repeats (default: AUC or R²), NaN folds ignored."""
        metric = metric or DEFAULT_METRIC[self.task]
        values = self.fold_metrics.loc[self.fold_metrics["metric"] == metric, "value"]
        if values.empty:
            raise BadInputError(f"unknown metric {metric!r}; choose from "
                                f"{', '.join(self.fold_metrics['metric'].unique())}")
        return float(np.nanmean(values.to_numpy(float)))

    def metric_table(self) -> pd.DataFrame:
        """Mean, SD and number of folds of every fold metric: ``metric, mean, sd, n_folds``."""
        g = self.fold_metrics.groupby("metric", sort=False)["value"]
        return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n_folds": g.count()}).reset_index()

    def pooled_predictions(self) -> pd.DataFrame:
        """Out-of-fold predictions averaged over repeats: one row per ``row`` of ``X``."""
        agg = {"participant_id": "first", "y_true": "first", "y_score": "mean", "y_prob": "mean"}
        if self.task == "regression":
            agg["y_pred"] = "mean"
        out = self.predictions.groupby("row", sort=True).agg(agg).reset_index()
        if self.task == "classification":  # majority vote would tie; threshold the mean instead
            out["y_pred"] = np.nan
        return out

    def summary(self, *, n_boot: int = 2000, ci: float = 0.95, random_state: int | None = 0
                ) -> pd.DataFrame:
        """Metrics of the repeat-averaged out-of-fold predictions with bootstrap CIs over participants.

        Classification uses the averaged probability (or decision score) with hard predictions at
        0.5 (probabilities) or 0 (decision scores). Returns the table of
        :func:`~theramark.predict.metrics.bootstrap_metrics`.
        """
        pooled = self.pooled_predictions()
        if self.task == "classification":
            score = pooled["y_prob"] if pooled["y_prob"].notna().all() else pooled["y_score"]
            threshold = 0.5 if pooled["y_prob"].notna().all() else 0.0
            return bootstrap_metrics(pooled["y_true"], y_score=score.to_numpy(float), task="classification",
                                     groups=pooled["participant_id"].to_numpy(), n_boot=n_boot, ci=ci,
                                     threshold=threshold, random_state=random_state)
        return bootstrap_metrics(pooled["y_true"], y_pred=pooled["y_pred"].to_numpy(float),
                                 task="regression", groups=pooled["participant_id"].to_numpy(),
                                 n_boot=n_boot, ci=ci, random_state=random_state)


# ---------------------------------------------------------------------------------------------
# Input checks and splits

def _n_rows(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _check_y(y, n: int, task: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise BadInputError(f"y must be one-dimensional with one value per row of X ({n}), got shape "
                            f"{y.shape}")
    if pd.isna(y).any():
        raise BadInputError(f"y has {int(pd.isna(y).sum())} missing value(s); drop those rows first")
    if task == "classification" and np.unique(y).size != 2:
        raise BadInputError(f"classification needs a binary outcome, got {np.unique(y).size} classes")
    if task == "regression":
        y = y.astype(float)
    return y


def _labels(values, n: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise BadInputError(f"{what} must have one label per row of X ({n}), got shape {arr.shape}")
    if pd.isna(arr).any():
        raise BadInputError(f"{what} has missing labels")
    return arr


def _stratify_labels(y: np.ndarray, task: str, n_splits: int) -> np.ndarray:
    if task == "classification":
        return y
    # Regression: stratify on quantile bins so every fold spans the outcome's range.
    edges = np.quantile(y, np.linspace(0, 1, n_splits + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def _seeds(random_state: int | None, n: int) -> list[int]:
    return [int(s) for s in np.random.default_rng(random_state).integers(0, 2**31 - 1, size=n)]


def make_outer_splits(y, *, task: str = "classification", cv: str = "stratified", n_splits: int = 5,
                      n_repeats: int = 10, groups=None, sites=None,
                      random_state: int | None = 0) -> list[Split]:
    """The outer splits of :func:`cross_validate_nested` (same arguments); deterministic in the seed.

    Returns
    -------
    list of Split
        ``n_repeats × n_splits`` splits (one per site for ``cv="site"``).
    """
    check_task(task)
    y = np.asarray(y)
    n = y.shape[0]
    groups = _labels(groups, n, "groups")
    sites = _labels(sites, n, "sites")
    if cv not in CV_SCHEMES:
        raise BadInputError(f"cv must be one of {', '.join(CV_SCHEMES)}, got {cv!r}")
    if cv == "site":
        if sites is None:
            raise BadInputError("cv='site' (leave one site out) needs sites=, one site label per row")
        names = np.unique(sites)
        if names.size < 2:
            raise BadInputError(f"leave-one-site-out needs at least 2 sites, got {names.size}")
        if groups is not None:
            per = pd.Series(sites).groupby(groups).nunique()
            if (per > 1).any():
                raise BadInputError("participants found at more than one site: "
                                    f"{', '.join(map(str, per.index[per > 1][:10]))}")
        out = []
        for fold, (train, test) in enumerate(LeaveOneGroupOut().split(np.zeros(n), y, sites)):
            out.append(Split(0, fold, train, test, held_out=str(sites[test[0]])))
        return out
    if n_splits < 2:
        raise BadInputError(f"n_splits must be at least 2, got {n_splits}")
    if n_repeats < 1:
        raise BadInputError(f"n_repeats must be at least 1, got {n_repeats}")
    strat = _stratify_labels(y, task, n_splits)
    n_units = n if groups is None else np.unique(groups).size
    if n_units < n_splits:
        raise BadInputError(f"n_splits={n_splits} folds need at least {n_splits} participants, got {n_units}")
    if task == "classification" and cv == "stratified":
        labels, counts = np.unique(y if groups is None else pd.Series(y).groupby(groups).first(),
                                   return_counts=True)
        if counts.min() < n_splits:
            raise BadInputError(f"stratified {n_splits}-fold CV needs at least {n_splits} participants per "
                                f"class; class {labels[counts.argmin()]} has {counts.min()}")
    out = []
    for repeat, seed in enumerate(_seeds(random_state, n_repeats)):
        if cv == "stratified":
            splitter = (StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed) if groups is not None
                        else StratifiedKFold(n_splits, shuffle=True, random_state=seed))
        else:
            splitter = (GroupKFold(n_splits, shuffle=True, random_state=seed) if groups is not None
                        else KFold(n_splits, shuffle=True, random_state=seed))
        for fold, (train, test) in enumerate(splitter.split(np.zeros(n), strat, groups)):
            out.append(Split(repeat, fold, train, test))
    return out


def _inner_splits(task: str, y_train: np.ndarray, groups_train, inner_splits: int, seed: int):
    strat = _stratify_labels(y_train, task, inner_splits)
    if groups_train is not None:
        splitter = StratifiedGroupKFold(inner_splits, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(inner_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y_train)), strat, groups_train))


def _fit_fold(estimator, param_grid, X, y, split: Split, task: str, scoring: str, inner_splits: int,
              groups, seed: int) -> dict[str, Any]:
    """Tune on the outer training rows (inner CV), refit there, predict the outer test rows."""
    X_train, X_test = _safe_indexing(X, split.train), _safe_indexing(X, split.test)
    y_train = y[split.train]
    g_train = None if groups is None else groups[split.train]
    params: dict[str, Any] = {}
    inner_score = np.nan
    if param_grid:
        inner = _inner_splits(task, y_train, g_train, inner_splits, seed)
        search = GridSearchCV(clone(estimator), param_grid, scoring=scoring, cv=inner, refit=True,
                              n_jobs=None, error_score="raise")
        search.fit(X_train, y_train)
        model = search.best_estimator_
        params, inner_score = dict(search.best_params_), float(search.best_score_)
    else:
        model = clone(estimator).fit(X_train, y_train)
    y_pred = model.predict(X_test)
    y_prob = np.full(len(split.test), np.nan)
    if task == "classification":
        if hasattr(model, "predict_proba"):
            y_prob = model.predict_proba(X_test)[:, 1]
            y_score = y_prob
        else:
            y_score = np.asarray(model.decision_function(X_test), dtype=float)
    else:
        y_score = np.asarray(y_pred, dtype=float)
    return {"split": split, "y_pred": np.asarray(y_pred), "y_score": np.asarray(y_score, float),
            "y_prob": y_prob, "params": params, "inner_score": inner_score}


def _parallel(n_jobs):
    return Parallel(n_jobs=n_jobs)


def cross_validate_nested(
    estimator,
    X,
    y,
    *,
    param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None = None,
    task: str = "classification",
    cv: str | None = None,
    n_splits: int = 5,
    n_repeats: int = 10,
    inner_splits: int = 5,
    groups=None,
    sites=None,
    scoring: str | None = None,
    random_state: int | None = 0,
    n_jobs: int | None = None,
) -> NestedCVResult:
    """Repeated nested cross-validation of a scikit-learn estimator or Pipeline.

    Parameters
    ----------
    estimator : estimator or Pipeline
        Cloned for every fit; put every data-dependent transformer inside it.
    X : array-like or DataFrame, shape (n_rows, n_features)
        Passed to the estimator as is (DataFrame columns such as ``site`` reach a
        ``ComBatTransformer`` step).
    y : array-like, shape (n_rows,)
        Binary labels (classification) or values (regression).
    param_grid : dict or list of dict, optional
        :class:`~sklearn.model_selection.GridSearchCV` grid tuned in the inner loop; None fits the
        estimator as given.
    task : {"classification", "regression"}
    cv : {"stratified", "kfold", "site"}, optional
        Outer scheme (default: "stratified" for classification, "kfold" for regression).
    n_splits, n_repeats : int
        Outer folds and repeats (``cv="site"``: one fold per site, one repeat).
    inner_splits : int
        Folds of the inner (tuning) loop.
    groups : array-like, shape (n_rows,), optional
        Participant of each row: a participant's rows stay together in outer and inner splits.
    sites : array-like, shape (n_rows,), optional
        Site of each row (needed for ``cv="site"``).
    scoring : str, optional
        Inner-loop criterion (default "roc_auc" for classification, "neg_mean_squared_error" for
        regression).
    random_state : int or None
        Seed of the splits (outer repeat r and its inner loops get seeds drawn from it).
    n_jobs : int, optional
        Outer folds run in parallel with joblib; results do not depend on ``n_jobs``.

    Returns
    -------
    NestedCVResult
        ``predictions``, ``fold_metrics``, ``best_params`` (see :class:`NestedCVResult`).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 5)); y = (X[:, 0] + rng.normal(size=80) > 0).astype(int)
    >>> res = cross_validate_nested(make_pipeline(StandardScaler(), LogisticRegression()), X, y,
    ...                             param_grid={"logisticregression__C": [0.1, 1.0]}, n_repeats=2)
    >>> res.score("auc") > 0.7
    True
    """
    check_task(task)
    cv = cv or ("stratified" if task == "classification" else "kfold")
    n = _n_rows(X)
    y = _check_y(y, n, task)
    groups = _labels(groups, n, "groups")
    sites = _labels(sites, n, "sites")
    if inner_splits < 2:
        raise BadInputError(f"inner_splits must be at least 2, got {inner_splits}")
    scoring = scoring or DEFAULT_SCORING[task]
    splits, fits = _run_folds(estimator, X, y, param_grid, task, cv, n_splits, n_repeats, inner_splits,
                              groups, sites, scoring, random_state, n_jobs)
    ids = groups if groups is not None else (X.index.to_numpy() if isinstance(X, pd.DataFrame)
                                              else np.arange(n))
    return _assemble(fits, y, ids, task, cv, scoring, splits)


def _run_folds(estimator, X, y, param_grid, task, cv, n_splits, n_repeats, inner_splits, groups, sites,
               scoring, random_state, n_jobs) -> tuple[list[Split], list[dict[str, Any]]]:
    splits = make_outer_splits(y, task=task, cv=cv, n_splits=n_splits, n_repeats=n_repeats,
                               groups=groups, sites=sites, random_state=random_state)
    inner_seeds = _seeds(None if random_state is None else random_state + 1, len(splits))
    jobs = (delayed(_fit_fold)(estimator, param_grid, X, y, s, task, scoring, inner_splits, groups, seed)
            for s, seed in zip(splits, inner_seeds, strict=True))
    fits = list(_parallel(n_jobs)(jobs)) if (n_jobs or 1) != 1 else [j[0](*j[1], **j[2]) for j in jobs]
    return splits, fits


def _fold_values(fit: dict[str, Any], y: np.ndarray, task: str, classes) -> dict[str, np.ndarray]:
    """Every metric of one outer fold (arrays of shape (1,))."""
    s: Split = fit["split"]
    if task == "classification":
        yt = (y[s.test] == classes[1]).astype(float)
        yp = (fit["y_pred"] == classes[1]).astype(float)
    else:
        yt, yp = y[s.test].astype(float), fit["y_pred"].astype(float)
    prob_ok = task == "classification" and np.isfinite(fit["y_prob"]).all()
    score = fit["y_prob"] if prob_ok else fit["y_score"]
    return _metric_rows(task, yt, yp, score, np.ones((1, yt.size)))


def _assemble(fits, y, ids, task, cv, scoring, splits) -> NestedCVResult:
    classes = np.unique(y) if task == "classification" else None
    pred_parts, metric_rows, param_rows = [], [], []
    for f in fits:
        s: Split = f["split"]
        pred_parts.append(pd.DataFrame({
            "participant_id": ids[s.test], "row": s.test, "repeat": s.repeat, "fold": s.fold,
            "y_true": y[s.test], "y_pred": f["y_pred"], "y_score": f["y_score"], "y_prob": f["y_prob"]}))
        values = _fold_values(f, y, task, classes)
        for name in metric_names(task):
            metric_rows.append((s.repeat, s.fold, s.held_out, s.train.size, s.test.size, name,
                                float(values[name][0])))
        param_rows.append({"repeat": s.repeat, "fold": s.fold, "inner_score": f["inner_score"],
                           **f["params"]})
    predictions = pd.concat(pred_parts, ignore_index=True)
    fold_metrics = pd.DataFrame(metric_rows, columns=["repeat", "fold", "held_out", "n_train", "n_test",
                                                      "metric", "value"])
    return NestedCVResult(predictions, fold_metrics, pd.DataFrame(param_rows), task, cv, scoring,
                          list(splits))


# ---------------------------------------------------------------------------------------------
# Model factories

def make_model(name: str, task: str = "classification", *, random_state: int | None = 0,
               probability: bool = False):
    """A Pipeline and its default inner-loop grid.

    Parameters
    ----------
    name : {"elasticnet", "svm", "cpm"}
        ``"elasticnet"``: StandardScaler + LogisticRegression (elastic-net penalty, saga solver) or
        ElasticNet; grid over the regularization strength and the L1 ratio. ``"svm"``:
        StandardScaler + linear SVM (LinearSVC / LinearSVR); grid over C. The classifier scores with
        its decision function (AUC); ``probability=True`` wraps it in a sigmoid
        :class:`~sklearn.calibration.CalibratedClassifierCV` (3 internal folds) to give
        probabilities. ``"cpm"``: connectome-based predictive modelling
        (:class:`theramark.predict.cpm.CPM`, regression only, no scaling: CPM sums raw edge
        strengths); grid over the edge-selection p threshold.
    task : {"classification", "regression"}
    random_state : int or None
        Seed of the stochastic solvers.

    Returns
    -------
    estimator : Pipeline
    param_grid : dict
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import ElasticNet, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC, LinearSVR

    check_task(task)
    if name == "elasticnet":
        if task == "classification":
            model = LogisticRegression(l1_ratio=0.5, solver="saga", max_iter=5000, random_state=random_state)
            if "deprecated" not in str(LogisticRegression().penalty):  # scikit-learn < 1.8 needs it named
                model.set_params(penalty="elasticnet")
            grid = {"model__C": [0.01, 0.1, 1.0, 10.0], "model__l1_ratio": [0.1, 0.5, 0.9]}
        else:
            model = ElasticNet(max_iter=10000, random_state=random_state)
            grid = {"model__alpha": [0.001, 0.01, 0.1, 1.0], "model__l1_ratio": [0.1, 0.5, 0.9]}
        return Pipeline([("scale", StandardScaler()), ("model", model)]), grid
    if name == "svm":
        if task == "regression":
            model = LinearSVR(max_iter=20000, random_state=random_state)
            return (Pipeline([("scale", StandardScaler()), ("model", model)]),
                    {"model__C": [0.001, 0.01, 0.1, 1.0]})
        svc = LinearSVC(max_iter=20000, random_state=random_state)
        if probability:
            model = CalibratedClassifierCV(svc, method="sigmoid", cv=3)
            return (Pipeline([("scale", StandardScaler()), ("model", model)]),
                    {"model__estimator__C": [0.001, 0.01, 0.1, 1.0]})
        return Pipeline([("scale", StandardScaler()), ("model", svc)]), {"model__C": [0.001, 0.01, 0.1, 1.0]}
    if name == "cpm":
        if task != "regression":
            raise BadInputError("the 'cpm' model predicts a continuous outcome: use task='regression'")
        from theramark.predict.cpm import CPM

        return Pipeline([("model", CPM())]), {"model__p_threshold": [0.001, 0.01, 0.05]}
    raise BadInputError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


# ---------------------------------------------------------------------------------------------
# Permutation test of the whole nested procedure

@dataclass
class PermutationResult:
    """What :func:`permutation_test_nested` returns.

    Attributes
    ----------
    metric : str
    observed : float
        Mean fold metric of the unpermuted data.
    null : ndarray, shape (n_permutations,)
        The same statistic after each permutation of ``y``.
    p_value : float
        ``(1 + #{null >= observed}) / (1 + n_permutations)``; for error metrics (``mae``, ``rmse``,
        ``brier``) the comparison is ``<=``.
    result : NestedCVResult
        The unpermuted run.
    """

    metric: str
    observed: float
    null: np.ndarray
    p_value: float
    result: NestedCVResult

    def to_frame(self) -> pd.DataFrame:
        """One row: ``metric, observed, null_mean, null_sd, p_value, n_permutations``."""
        return pd.DataFrame([{"metric": self.metric, "observed": self.observed,
                              "null_mean": float(np.nanmean(self.null)),
                              "null_sd": (float(np.nanstd(self.null, ddof=1)) if self.null.size > 1
                                          else np.nan),
                              "p_value": self.p_value, "n_permutations": int(self.null.size)}])


LOWER_IS_BETTER = frozenset({"mae", "rmse", "brier"})


def _permuted_score(perm_unit: np.ndarray, unit_of_row: np.ndarray, rows_of_unit: np.ndarray,
                    estimator, X, y, metric: str, cv_options: dict) -> float:
    # Unit u takes the outcome of unit perm_unit[u]; every row of a unit carries its unit's outcome.
    y_perm = y[rows_of_unit[perm_unit]][unit_of_row]
    # Same computation as cross_validate_nested(...).score(metric), without building the tables.
    o = cv_options
    task = o.get("task", "classification")
    _, fits = _run_folds(estimator, X, y_perm, o.get("param_grid"), task,
                         o.get("cv") or ("stratified" if task == "classification" else "kfold"),
                         o.get("n_splits", 5), o.get("n_repeats", 10), o.get("inner_splits", 5),
                         o.get("groups"), o.get("sites"), o.get("scoring") or DEFAULT_SCORING[task],
                         o.get("random_state"), 1)
    classes = np.unique(y) if task == "classification" else None
    values = [_fold_values(f, y_perm, task, classes)[metric][0] for f in fits]
    return float(np.nanmean(values))


def permutation_test_nested(
    estimator,
    X,
    y,
    *,
    metric: str | None = None,
    n_permutations: int = 1000,
    blocks=None,
    random_state: int | None = 0,
    n_jobs: int | None = None,
    client=None,
    **cv_options,
) -> PermutationResult:
    """Permutation test of nested cross-validated performance, rerunning the whole procedure.

    Each permutation reshuffles ``y``, then reruns :func:`cross_validate_nested` (splits, inner
    tuning and every transformer) with the same options, so the null distribution includes the
    optimism of tuning (Ojala & Garriga 2010, test 1).

    Parameters
    ----------
    estimator, X, y
        As in :func:`cross_validate_nested`.
    metric : str, optional
        Fold metric averaged over folds and repeats (default "auc" / "r2").
    n_permutations : int
        Number of permutations (default 1000).
    blocks : array-like, shape (n_rows,), optional
        Exchangeability blocks (e.g. site): outcomes are permuted only within a block.
    random_state : int or None
        Seed of the permutations and of the splits. All permutations are drawn up front from this
        seed, so the result is the same for any ``n_jobs`` or ``client``.
    n_jobs : int, optional
        Permutations run in parallel with joblib (each run is sequential inside).
    client : dask.distributed.Client, optional
        Runs the permutations with ``client.map`` / ``client.gather`` instead of joblib.
    **cv_options
        Passed to :func:`cross_validate_nested` (``param_grid``, ``task``, ``cv``, ``n_splits``,
        ``n_repeats``, ``inner_splits``, ``groups``, ``sites``, ``scoring``). With ``groups`` the
        outcome must be constant within a participant, and participants (not rows) are permuted.

    Returns
    -------
    PermutationResult
    """
    if n_permutations < 1:
        raise BadInputError(f"n_permutations must be at least 1, got {n_permutations}")
    if "n_jobs" in cv_options:
        raise BadInputError("pass n_jobs to permutation_test_nested itself, not as a CV option")
    task = check_task(cv_options.get("task", "classification"))
    metric = metric or DEFAULT_METRIC[task]
    if metric not in metric_names(task):
        raise BadInputError(f"metric {metric!r} is not a {task} metric; choose from "
                            f"{', '.join(metric_names(task))}")
    cv_options = {**cv_options, "random_state": random_state}
    n = _n_rows(X)
    y = _check_y(y, n, task)
    groups = _labels(cv_options.get("groups"), n, "groups")
    blocks = _labels(blocks, n, "blocks")
    cv_options["groups"] = groups
    cv_options["sites"] = _labels(cv_options.get("sites"), n, "sites")
    # Units that are exchanged: participants when rows are grouped, else rows.
    if groups is None:
        unit_of_row = np.arange(n)
    else:
        _, unit_of_row = np.unique(groups, return_inverse=True)
    n_units = int(unit_of_row.max()) + 1
    rows_of_unit = np.zeros(n_units, dtype=np.intp)
    rows_of_unit[unit_of_row[::-1]] = np.arange(n)[::-1]  # first row of each unit
    if not np.array_equal(y[rows_of_unit][unit_of_row], y):
        raise BadInputError("with groups=, y must be the same on every row of a participant "
                            "(participants are permuted as wholes)")
    unit_blocks = None
    if blocks is not None:
        if not np.array_equal(blocks[rows_of_unit][unit_of_row], blocks):
            raise BadInputError("with groups=, each participant's rows must lie in one block")
        unit_blocks = blocks[rows_of_unit]
    scheme = ExchangeabilityScheme(n_units, "permute", block_codes(unit_blocks, n_units))
    perms = scheme.draw(np.random.default_rng(random_state), n_permutations)

    known = {"param_grid", "task", "cv", "n_splits", "n_repeats", "inner_splits", "groups", "sites",
             "scoring", "random_state"}
    unknown = set(cv_options) - known
    if unknown:
        raise BadInputError(f"unknown option(s) for cross_validate_nested: {', '.join(sorted(unknown))}")
    observed_result = cross_validate_nested(estimator, X, y, n_jobs=n_jobs, **cv_options)
    observed = observed_result.score(metric)
    args = (unit_of_row, rows_of_unit, estimator, X, y, metric, cv_options)
    if client is not None:
        names = ("unit_of_row", "rows_of_unit", "estimator", "X", "y", "metric", "cv_options")
        futures = client.map(_permuted_score, list(perms), pure=False, **dict(zip(names, args, strict=True)))
        null = np.asarray(client.gather(futures), dtype=float)
    elif (n_jobs or 1) == 1:
        null = np.array([_permuted_score(p, *args) for p in perms])
    else:
        null = np.asarray(_parallel(n_jobs)(delayed(_permuted_score)(p, *args) for p in perms), float)
    valid = np.isfinite(null)
    if metric in LOWER_IS_BETTER:
        hits = np.sum(null[valid] <= observed)
    else:
        hits = np.sum(null[valid] >= observed)
    p_value = float((1 + hits) / (1 + valid.sum()))
    return PermutationResult(metric, observed, null, p_value, observed_result)
