"""Prediction metrics and bootstrap confidence intervals over participants.

Every metric is written for a matrix of non-negative case weights ``W`` of shape (B, n): the
point estimate uses one row of ones, and a bootstrap over participants uses one row of resampling
counts per draw, so B bootstrap replicates are computed in a handful of array operations rather than
a Python loop over draws.

Definitions
-----------
Classification (binary, positive class = the larger label):

- ``auc``: area under the ROC curve, ties counted one half (Mann–Whitney), as
  :func:`sklearn.metrics.roc_auc_score`.
- ``balanced_accuracy``: mean of sensitivity and specificity of the hard predictions, as
  :func:`sklearn.metrics.balanced_accuracy_score`.
- ``brier``: mean of ``(p - y)**2`` with ``p`` the predicted probability of the positive class, as
  :func:`sklearn.metrics.brier_score_loss`.
- ``calibration_slope``: ``b`` in the logistic recalibration model
  ``logit P(y = 1) = a + b * logit(p)`` (1 = ideal; < 1 = predictions too extreme).
- ``calibration_intercept``: calibration-in-the-large, ``a`` in ``logit P(y = 1) = a + logit(p)``
  (``logit(p)`` entered as an offset, slope fixed at 1; 0 = ideal; > 0 = risks underestimated)
  (Van Calster et al. 2016; Steyerberg 2019, ch. 15). Both are maximum-likelihood fits, the same as
  a statsmodels ``GLM(y, X, family=Binomial(), offset=...)``. Probabilities are clipped to
  ``[1e-12, 1 - 1e-12]`` before the logit.

Regression:

- ``r2``: ``1 - SS_res / SS_tot`` with ``SS_tot`` taken around the mean of the observed outcomes
  being scored (the test fold for a per-fold value; all participants for pooled out-of-fold
  predictions), as :func:`sklearn.metrics.r2_score`. It is negative when the predictions are worse
  than that mean; it is not the squared correlation.
- ``mae``: mean absolute error; ``rmse``: root mean squared error; ``pearson_r``: Pearson
  correlation of predicted and observed values.

References
----------
Van Calster B et al. (2016). A calibration hierarchy for risk models was defined: from utopia to
empirical data. J Clin Epidemiol 74:167-176.

Efron B, Tibshirani RJ (1993). An Introduction to the Bootstrap. Chapman & Hall (percentile CIs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from theramark.errors import BadInputError

CLASSIFICATION_METRICS = ("auc", "balanced_accuracy", "brier", "calibration_slope",
                          "calibration_intercept")
REGRESSION_METRICS = ("r2", "mae", "rmse", "pearson_r")
_EPS = 1e-12


def metric_names(task: str) -> tuple[str, ...]:
    """Metric names computed for ``task`` ("classification" or "regression")."""
    check_task(task)
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def check_task(task: str) -> str:
    """``task`` if it is "classification" or "regression", else a :class:`BadInputError`."""
    if task not in ("classification", "regression"):
        raise BadInputError(f"task must be 'classification' or 'regression', got {task!r}")
    return task


def binary_labels(y_true, what: str = "y_true") -> np.ndarray:
    """0/1 labels from a binary outcome (the larger label is the positive class)."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise BadInputError(f"{what} must be one-dimensional, got shape {y.shape}")
    if pd.isna(y).any():
        raise BadInputError(f"{what} has missing values; drop or impute them first")
    classes = np.unique(y)
    if classes.size != 2:
        raise BadInputError(f"{what} must have exactly two classes for binary classification metrics, "
                            f"got {classes.size}: {classes[:10].tolist()}")
    return (y == classes[1]).astype(float)


# ---------------------------------------------------------------------------------------------
# Weighted metrics: y, scores of shape (n,), W of shape (B, n); each returns shape (B,).

def _weighted_auc(y: np.ndarray, score: np.ndarray, W: np.ndarray) -> np.ndarray:
    order = np.argsort(score, kind="stable")
    s = score[order]
    pos = y[order] == 1
    Ws = W[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first row of each tied-score run
    neg_w = np.add.reduceat(np.where(pos, 0.0, Ws), starts, axis=1)
    pos_w = np.add.reduceat(np.where(pos, Ws, 0.0), starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w
    num = np.sum(pos_w * (below + 0.5 * neg_w), axis=1)
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_balanced_accuracy(y: np.ndarray, pred: np.ndarray, W: np.ndarray) -> np.ndarray:
    hit = (pred == y).astype(float)
    n_pos, n_neg = W @ y, W @ (1.0 - y)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (W @ (hit * y)) / n_pos
        spec = (W @ (hit * (1.0 - y))) / n_neg
    return 0.5 * (sens + spec)


def _weighted_mean(values: np.ndarray, W: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (W @ values) / W.sum(axis=1)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _weighted_calibration(y: np.ndarray, prob: np.ndarray, W: np.ndarray,
                          max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Calibration slope and intercept for every row of W (Newton–Raphson, all rows at once)."""
    lp = _logit(prob)
    B = W.shape[0]
    # Intercept with logit(p) as offset: one-parameter logistic model, batched Newton steps.
    a = np.zeros(B)
    for _ in range(max_iter):
        mu = _expit(a[:, None] + lp)
        grad = (W * (y - mu)).sum(axis=1)
        hess = (W * mu * (1.0 - mu)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            step = grad / hess
        a = a + step
        if np.all(~np.isfinite(step) | (np.abs(step) < tol)):
            break
    # Slope: logistic regression of y on [1, logit(p)], batched 2 x 2 Newton steps.
    beta = np.tile([0.0, 1.0], (B, 1))
    X = np.column_stack([np.ones_like(lp), lp])
    for _ in range(max_iter):
        # A resample with perfect separation sends beta to ±inf; such rows end as NaN below.
        with np.errstate(invalid="ignore", over="ignore"):
            mu = _expit(beta[:, :1] + beta[:, 1:] * lp)
        r = W * (y - mu)
        grad = r @ X
        v = W * mu * (1.0 - mu)
        h00, h01, h11 = v.sum(axis=1), v @ lp, v @ (lp * lp)
        det = h00 * h11 - h01 * h01
        with np.errstate(invalid="ignore", divide="ignore"):
            step = np.column_stack([(h11 * grad[:, 0] - h01 * grad[:, 1]) / det,
                                    (h00 * grad[:, 1] - h01 * grad[:, 0]) / det])
        beta = beta + step
        if np.all(~np.isfinite(step).all(axis=1) | (np.abs(step).max(axis=1) < tol)):
            break
    slope = beta[:, 1]
    bad_slope = ~np.isfinite(slope) | (np.abs(slope) > 1e6)
    bad_int = ~np.isfinite(a) | (np.abs(a) > 1e6)
    return np.where(bad_slope, np.nan, slope), np.where(bad_int, np.nan, a)


def _weighted_regression(y: np.ndarray, pred: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    wsum = W.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        my = (W @ y) / wsum
        mp = (W @ pred) / wsum
        res = W @ (y - pred) ** 2
        yy = W @ (y * y) - wsum * my * my
        pp = W @ (pred * pred) - wsum * mp * mp
        yp = W @ (y * pred) - wsum * my * mp
        r2 = np.where(yy > 0, 1.0 - res / np.where(yy > 0, yy, 1.0), np.nan)
        r = np.where((yy > 0) & (pp > 0), yp / np.sqrt(np.abs(yy * pp)), np.nan)
        mae = (W @ np.abs(y - pred)) / wsum
        rmse = np.sqrt(res / wsum)
    return {"r2": r2, "mae": mae, "rmse": rmse, "pearson_r": np.clip(r, -1.0, 1.0)}


def _prepare(task: str, y_true, y_pred, y_score, threshold: float):
    """Checked float arrays (y, pred, score) for ``task``."""
    check_task(task)
    if task == "classification":
        y = binary_labels(y_true)
        if y_score is None:
            raise BadInputError("classification metrics need y_score (probability or decision score "
                                "of the positive class)")
        score = np.asarray(y_score, dtype=float)
        if score.shape != y.shape:
            raise BadInputError(f"y_score has shape {score.shape}, expected {y.shape}")
        if not np.isfinite(score).all():
            raise BadInputError("y_score has missing or infinite values")
        if y_pred is None:
            pred = (score >= threshold).astype(float)
        else:
            pred = np.asarray(y_pred)
            classes = np.unique(np.asarray(y_true))
            pred = (pred == classes[1]).astype(float)
            if pred.shape != y.shape:
                raise BadInputError(f"y_pred has shape {pred.shape}, expected {y.shape}")
        return y, pred, score
    y = np.asarray(y_true, dtype=float)
    pred = np.asarray(y_pred if y_pred is not None else y_score, dtype=float)
    if y.ndim != 1 or pred.shape != y.shape:
        raise BadInputError(f"y_true and y_pred must be 1-D of equal length, got {y.shape} and "
                            f"{pred.shape}")
    if not (np.isfinite(y).all() and np.isfinite(pred).all()):
        raise BadInputError("y_true or y_pred has missing or infinite values")
    return y, pred, pred


def _metric_rows(task: str, y: np.ndarray, pred: np.ndarray, score: np.ndarray,
                 W: np.ndarray) -> dict[str, np.ndarray]:
    if task == "regression":
        return _weighted_regression(y, pred, W)
    out = {"auc": _weighted_auc(y, score, W),
           "balanced_accuracy": _weighted_balanced_accuracy(y, pred, W)}
    if score.min() >= 0.0 and score.max() <= 1.0:
        out["brier"] = _weighted_mean((score - y) ** 2, W)
        out["calibration_slope"], out["calibration_intercept"] = _weighted_calibration(y, score, W)
    else:  # decision-function scores are not probabilities
        nan = np.full(W.shape[0], np.nan)
        out.update(brier=nan, calibration_slope=nan, calibration_intercept=nan)
    return out


def compute_metrics(y_true, y_pred=None, y_score=None, *, task: str = "classification",
                    threshold: float = 0.5) -> dict[str, float]:
    """Point estimates of every metric of ``task`` (see the module docstring for definitions).

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Observed outcome (binary labels for classification).
    y_pred : array-like, shape (n,), optional
        Hard class predictions (classification; default ``y_score >= threshold``) or predicted
        values (regression).
    y_score : array-like, shape (n,), optional
        Probability (or decision score) of the positive class. With scores outside [0, 1] the
        probability metrics (Brier, calibration) are n/a.
    task : {"classification", "regression"}
    threshold : float
        Probability cut-off for hard predictions when ``y_pred`` is not given.

    Returns
    -------
    dict of str to float
    """
    y, pred, score = _prepare(task, y_true, y_pred, y_score, threshold)
    rows = _metric_rows(task, y, pred, score, np.ones((1, y.size)))
    return {k: float(v[0]) for k, v in rows.items()}


def calibration_slope_intercept(y_true, y_prob) -> tuple[float, float]:
    """Calibration slope and calibration-in-the-large of predicted probabilities.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Binary outcome.
    y_prob : array-like, shape (n,)
        Predicted probability of the positive class.

    Returns
    -------
    slope, intercept : float
        ``b`` of ``logit P(y=1) = a + b logit(p)`` and ``a`` of ``logit P(y=1) = a + logit(p)``
        (offset). Ideal calibration: slope 1, intercept 0.
    """
    y = binary_labels(y_true)
    p = np.asarray(y_prob, dtype=float)
    if p.shape != y.shape or p.min() < 0 or p.max() > 1:
        raise BadInputError("y_prob must be probabilities in [0, 1], one per element of y_true")
    slope, intercept = _weighted_calibration(y, p, np.ones((1, y.size)))
    return float(slope[0]), float(intercept[0])


def reliability_curve(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Binned reliability (calibration) curve.

    Same bins as :func:`sklearn.calibration.calibration_curve`: ``"uniform"`` splits [0, 1] into
    ``n_bins`` equal-width bins, ``"quantile"`` uses quantiles of ``y_prob``; bins are closed on the
    right (a probability on an inner edge falls in the lower bin); empty bins are left out.

    Returns
    -------
    DataFrame
        ``bin`` (0-based), ``bin_low``, ``bin_high``, ``mean_predicted``, ``fraction_positive``,
        ``n`` — one row per non-empty bin.
    """
    y = binary_labels(y_true)
    p = np.asarray(y_prob, dtype=float)
    if p.shape != y.shape or p.min() < 0 or p.max() > 1:
        raise BadInputError("y_prob must be probabilities in [0, 1], one per element of y_true")
    if strategy == "quantile":
        edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise BadInputError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    ids = np.searchsorted(edges[1:-1], p)  # right-closed bins, as sklearn
    n_edges = len(edges) - 1
    count = np.bincount(ids, minlength=n_edges)
    sum_p = np.bincount(ids, weights=p, minlength=n_edges)
    sum_y = np.bincount(ids, weights=y, minlength=n_edges)
    keep = count > 0
    return pd.DataFrame({"bin": np.flatnonzero(keep), "bin_low": edges[:-1][keep],
                         "bin_high": edges[1:][keep], "mean_predicted": sum_p[keep] / count[keep],
                         "fraction_positive": sum_y[keep] / count[keep], "n": count[keep]})


def bootstrap_counts(rng: np.random.Generator, n_units: int, n_draws: int) -> np.ndarray:
    """Resampling counts, shape (n_draws, n_units): how often each unit is drawn in each replicate."""
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_draws).astype(float)


def bootstrap_ci(stat: Callable[[np.ndarray], dict[str, np.ndarray]], groups, *, n_boot: int = 2000,
                 ci: float = 0.95, random_state: int | None = 0, chunk_size: int = 256) -> pd.DataFrame:
    """Percentile bootstrap over participants of weighted statistics.

    Parameters
    ----------
    stat : callable
        ``stat(W)`` with ``W`` of shape (B, n_rows) (case weights) → dict of name → array (B,).
    groups : array-like, shape (n_rows,)
        Participant of each row; participants are resampled, their rows move together.
    n_boot, ci, random_state, chunk_size
        Replicates, coverage, seed, replicates per vectorized batch (memory: chunk × rows floats).

    Returns
    -------
    DataFrame
        ``metric, estimate, ci_low, ci_high, n_boot_valid``.
    """
    if not 0 < ci < 1:
        raise BadInputError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 1:
        raise BadInputError(f"n_boot must be at least 1, got {n_boot}")
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    n_units = int(codes.max()) + 1
    point = stat(np.ones((1, codes.size)))
    rng = np.random.default_rng(random_state)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, n_boot, chunk_size):
        counts = bootstrap_counts(rng, n_units, min(chunk_size, n_boot - start))
        for k, v in stat(counts[:, codes]).items():
            draws[k].append(v)
    alpha = (1.0 - ci) / 2.0
    rows = []
    for k, v in point.items():
        d = np.concatenate(draws[k])
        ok = np.isfinite(d)
        low, high = (np.quantile(d[ok], [alpha, 1 - alpha]) if ok.any() else (np.nan, np.nan))
        rows.append({"metric": k, "estimate": float(v[0]), "ci_low": float(low), "ci_high": float(high),
                     "n_boot_valid": int(ok.sum())})
    return pd.DataFrame(rows)


def bootstrap_metrics(y_true, y_pred=None, y_score=None, *, task: str = "classification",
                      groups=None, n_boot: int = 2000, ci: float = 0.95, threshold: float = 0.5,
                      random_state: int | None = 0) -> pd.DataFrame:
    """Every metric of ``task`` with a percentile bootstrap CI over participants.

    Parameters
    ----------
    y_true, y_pred, y_score, task, threshold
        As in :func:`compute_metrics`.
    groups : array-like, shape (n,), optional
        Participant of each row (rows of a participant are resampled together); default: one row
        per participant.
    n_boot : int
        Bootstrap replicates (default 2000).
    ci : float
        Coverage of the percentile interval (default 0.95).
    random_state : int or None
        Seed of the resampling.

    Returns
    -------
    DataFrame
        One row per metric: ``metric, estimate, ci_low, ci_high, n_boot_valid`` (replicates where
        the metric was defined, e.g. both classes drawn for the AUC), plus ``n`` (rows) and
        ``n_boot``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 200), 0, 1)
    >>> table = bootstrap_metrics(y, y_score=p, n_boot=200)
    >>> table.columns.tolist()[:4]
    ['metric', 'estimate', 'ci_low', 'ci_high']
    """
    y, pred, score = _prepare(task, y_true, y_pred, y_score, threshold)
    groups = np.arange(y.size) if groups is None else np.asarray(groups)
    if groups.shape != y.shape:
        raise BadInputError(f"groups must have one label per row ({y.size}), got shape {groups.shape}")
    table = bootstrap_ci(lambda W: _metric_rows(task, y, pred, score, W), groups, n_boot=n_boot,
                         ci=ci, random_state=random_state)
    table["n"] = y.size
    table["n_boot"] = n_boot
    return table
