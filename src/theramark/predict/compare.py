"""Comparing two models scored on the same cross-validation folds (Nadeau–Bengio corrected t-test).

Fold scores from repeated k-fold are not independent (training sets overlap), so the ordinary paired
t-test on the J = k × r fold differences is far too liberal. Nadeau & Bengio (2003) replace the
variance of the mean difference ``σ² / J`` by ``(1/J + n_test/n_train) σ²``, with ``σ²`` the sample
variance (ddof 1) of the J differences; the statistic is referred to a t distribution with J − 1
degrees of freedom (Bouckaert & Frank 2004).

References
----------
Nadeau C, Bengio Y (2003). Inference for the generalization error. Machine Learning 52:239-281.

Bouckaert RR, Frank E (2004). Evaluating the replicability of significance tests for comparing
learning algorithms. PAKDD 2004, LNCS 3056:3-12.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import BadInputError
from theramark.predict.validation import NestedCVResult

#: Columns of the table returned by :func:`corrected_resampled_ttest` and :func:`compare_models`.
COMPARE_COLUMNS = ("metric", "model_a", "model_b", "mean_a", "mean_b", "mean_difference", "se", "t",
                   "df", "p_value", "ci_low", "ci_high", "n_folds", "n_train", "n_test")


def corrected_resampled_ttest(scores_a, scores_b, *, n_train: float, n_test: float, ci: float = 0.95,
                              metric: str = "", model_a: str = "a", model_b: str = "b") -> pd.DataFrame:
    """Nadeau–Bengio corrected resampled t-test of ``mean(scores_a - scores_b)``.

    Parameters
    ----------
    scores_a, scores_b : array-like, shape (J,)
        Scores of two models on the same J folds (same order).
    n_train, n_test : float
        Training and test set sizes (rows) of a fold (the mean over folds when they differ by one).
    ci : float
        Coverage of the confidence interval of the mean difference.
    metric, model_a, model_b : str
        Labels carried into the table.

    Returns
    -------
    DataFrame
        One row, columns :data:`COMPARE_COLUMNS`: ``mean_difference = mean(a − b)``,
        ``se = sqrt((1/J + n_test/n_train) σ²)``, ``t = mean_difference / se``, ``df = J − 1``,
        two-sided ``p_value``, ``ci_low``/``ci_high`` = ``mean ± t_{df, (1+ci)/2} se``.

    Examples
    --------
    >>> corrected_resampled_ttest([0.8, 0.7, 0.75], [0.7, 0.7, 0.65], n_train=80, n_test=20)["t"].round(3)
    0    1.512
    Name: t, dtype: float64
    """
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise BadInputError(f"scores_a and scores_b must be 1-D of equal length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    J = d.size
    if J < 2:
        raise BadInputError(f"the corrected t-test needs at least 2 folds with finite scores, got {J}")
    if not (n_train > 0 and n_test > 0):
        raise BadInputError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    se = float(np.sqrt((1.0 / J + n_test / n_train) * var))
    df = J - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        t = mean / se if se > 0 else (0.0 if mean == 0 else np.sign(mean) * np.inf)
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + ci / 2, df) * se)
    return pd.DataFrame([{"metric": metric, "model_a": model_a, "model_b": model_b,
                          "mean_a": float(a[ok].mean()), "mean_b": float(b[ok].mean()),
                          "mean_difference": mean, "se": se, "t": float(t), "df": df, "p_value": p,
                          "ci_low": mean - half, "ci_high": mean + half, "n_folds": J,
                          "n_train": float(n_train), "n_test": float(n_test)}])


def same_splits(a: NestedCVResult, b: NestedCVResult) -> bool:
    """True when two results used the same outer folds (same test rows in every repeat × fold)."""
    cols = ["repeat", "fold", "row"]
    pa = a.predictions[cols].sort_values(cols, ignore_index=True)
    pb = b.predictions[cols].sort_values(cols, ignore_index=True)
    return pa.shape == pb.shape and bool((pa.to_numpy() == pb.to_numpy()).all())


def compare_models(result_a: NestedCVResult, result_b: NestedCVResult, metric: str | None = None, *,
                   ci: float = 0.95, model_a: str = "a", model_b: str = "b") -> pd.DataFrame:
    """Corrected resampled t-test between two :func:`cross_validate_nested` results.

    Parameters
    ----------
    result_a, result_b : NestedCVResult
        Runs on the same rows with the same outer splits (same ``y``, ``cv``, ``n_splits``,
        ``n_repeats``, ``groups`` and ``random_state``); checked.
    metric : str, optional
        Fold metric to compare (default "auc" / "r2").

    Returns
    -------
    DataFrame
        One row, as :func:`corrected_resampled_ttest` (difference = a − b).
    """
    if result_a.task != result_b.task:
        raise BadInputError(f"cannot compare a {result_a.task} result with a {result_b.task} result")
    if not same_splits(result_a, result_b):
        raise BadInputError("the two results used different outer folds; rerun both with the same y, cv, "
                            "n_splits, n_repeats, groups and random_state")
    metric = metric or ("auc" if result_a.task == "classification" else "r2")
    keys = ["repeat", "fold"]
    fa = result_a.fold_metrics[result_a.fold_metrics["metric"] == metric]
    fb = result_b.fold_metrics[result_b.fold_metrics["metric"] == metric]
    if fa.empty:
        raise BadInputError(f"metric {metric!r} is not among the fold metrics: "
                            f"{', '.join(result_a.fold_metrics['metric'].unique())}")
    merged = fa.merge(fb[keys + ["value"]], on=keys, suffixes=("_a", "_b")).sort_values(keys)
    return corrected_resampled_ttest(merged["value_a"], merged["value_b"],
                                     n_train=float(merged["n_train"].mean()),
                                     n_test=float(merged["n_test"].mean()), ci=ci, metric=metric,
                                     model_a=model_a, model_b=model_b)
