"""Early change as a predictor: baseline features vs change from baseline to an early session.

Three steps, each a pure function:

1. :func:`early_change_features` turns a features table (one row per participant × session, one
   column per feature) into baseline features and early-change features
   (``mid-treatment − baseline``).
2. :func:`treatment_outcomes` defines the outcome to predict from clinical scores on a declared
   instrument: response (≥ 50% reduction from baseline to endpoint, by default), remission
   (endpoint ≤ a declared cut-off, default the instrument's) or percent change, using
   :func:`theramark.scales.outcomes.outcomes`.
3. :func:`compare_early_change` cross-validates a baseline-only model and an early-change model on
   the same outer folds (:func:`~theramark.predict.validation.cross_validate_nested`) and compares
   them with the Nadeau–Bengio corrected t-test (:func:`~theramark.predict.compare.compare_models`).

Participants who lack a needed session, feature value or score are listed with the reason in a
``dropped`` table (``participant_id, reason``); nobody is left out silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from theramark.errors import BadInputError
from theramark.predict.compare import compare_models
from theramark.predict.validation import NestedCVResult, cross_validate_nested, make_model
from theramark.scales.definitions import load_instrument
from theramark.scales.outcomes import outcomes as scale_outcomes
from theramark.tables import check_columns

OUTCOMES = ("response", "remission", "percent_change", "change")
CHANGE_SUFFIX = "_change"
DROPPED_COLUMNS = ("participant_id", "reason")


def _dropped(ids, reason) -> pd.DataFrame:
    ids = list(ids)
    reasons = [reason] * len(ids) if isinstance(reason, str) else list(reason)
    return pd.DataFrame({"participant_id": pd.Series(ids, dtype=object),
                         "reason": pd.Series(reasons, dtype=object)})


def _session_labels(values: pd.Series) -> pd.Series:
    return values.astype(str).str.removeprefix("ses-")


@dataclass
class EarlyChangeFeatures:
    """Output of :func:`early_change_features`.

    Attributes
    ----------
    baseline : DataFrame
        Index ``participant_id``; one column per feature (values at the baseline session).
    change : DataFrame
        Index ``participant_id``; ``<feature>_change`` = mid-session − baseline value.
    dropped : DataFrame
        ``participant_id, reason`` for participants without both sessions or with a missing value.
    """

    baseline: pd.DataFrame
    change: pd.DataFrame
    dropped: pd.DataFrame


def early_change_features(features: pd.DataFrame, *, baseline: str = "pre", mid: str = "mid",
                          feature_columns: Sequence[str] | None = None,
                          participant: str = "participant_id",
                          session: str = "session") -> EarlyChangeFeatures:
    """Baseline features and early change (mid-session − baseline) per participant.

    Parameters
    ----------
    features : DataFrame
        One row per participant × session with the feature columns (a table from
        :func:`theramark.group.features.wide_features`, whose index is
        ``(participant_id, session)``, is accepted as is). Sessions may be written ``ses-pre``.
    baseline, mid : str
        Session labels of the baseline and the early (mid-treatment) measurement.
    feature_columns : sequence of str, optional
        Default: every numeric column other than the participant and session.

    Returns
    -------
    EarlyChangeFeatures
        Both tables hold the same participants (those with every feature at both sessions).
    """
    table = features.reset_index() if participant in (features.index.names or []) else features
    check_columns(table, [participant, session], "features table")
    if feature_columns is None:
        numeric = table.select_dtypes("number").columns
        feature_columns = [c for c in numeric if c not in (participant, session)]
    feature_columns = list(feature_columns)
    if not feature_columns:
        raise BadInputError("features table: no numeric feature columns found")
    check_columns(table, feature_columns, "features table")
    baseline, mid = baseline.removeprefix("ses-"), mid.removeprefix("ses-")
    table = table.assign(**{session: _session_labels(table[session])})
    present = set(table[session])
    for label in (baseline, mid):
        if label not in present:
            raise BadInputError(f"features table: no rows for session {label!r}; sessions present: "
                                f"{', '.join(sorted(present))}")
    keyed = table[table[session].isin([baseline, mid])]
    dup = keyed.duplicated([participant, session])
    if dup.any():
        raise BadInputError("features table: more than one row per participant × session for "
                            f"{', '.join(keyed.loc[dup, participant].astype(str).unique()[:10])}")
    pre = keyed[keyed[session] == baseline].set_index(participant)[feature_columns]
    early = keyed[keyed[session] == mid].set_index(participant)[feature_columns]
    everyone = list(dict.fromkeys(table[participant]))
    reasons = {}
    for pid in everyone:
        why = []
        if pid not in pre.index:
            why.append(f"no {baseline} session")
        elif pre.loc[pid].isna().any():
            why.append(f"missing {', '.join(pre.columns[pre.loc[pid].isna()][:5])} at {baseline}")
        if pid not in early.index:
            why.append(f"no {mid} session")
        elif early.loc[pid].isna().any():
            why.append(f"missing {', '.join(early.columns[early.loc[pid].isna()][:5])} at {mid}")
        if why:
            reasons[pid] = "; ".join(why)
    keep = [p for p in everyone if p not in reasons]
    base = pre.loc[keep].astype(float)
    change = (early.loc[keep].astype(float) - base).add_suffix(CHANGE_SUFFIX)
    base.index.name = change.index.name = "participant_id"
    return EarlyChangeFeatures(base, change, _dropped(reasons.keys(), reasons.values()))


def treatment_outcomes(scores: pd.DataFrame, instrument: str = "hamd17", *, baseline: str = "pre",
                       endpoint: str = "post", reduction: float = 0.5,
                       remission_threshold: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Response, remission and percent change on a declared instrument.

    Parameters
    ----------
    scores : DataFrame
        ``participant_id, session, total`` (one row per participant × session), as for
        :func:`theramark.scales.outcomes.outcomes`.
    instrument : str
        Instrument id (e.g. ``"hamd17"``, ``"madrs"``, ``"bdi2"``); gives the floor for percent
        change, the direction and the default remission cut-off.
    baseline, endpoint : str
        Session labels.
    reduction : float
        Fractional reduction from baseline that counts as response (default 0.5, i.e. ≥ 50%).
    remission_threshold : float, optional
        Remission is ``endpoint total <= remission_threshold``; default: the instrument's published
        cut-off (e.g. HAMD-17 ≤ 7).

    Returns
    -------
    outcomes : DataFrame
        Index ``participant_id``: ``instrument, baseline_total, endpoint_total, change,
        percent_change`` (floats), ``response``, ``remission`` (bool); participants with both totals.
        ``attrs`` record the instrument, reduction and remission cut-off used.
    dropped : DataFrame
        ``participant_id, reason`` for participants without a baseline or endpoint total, or whose
        baseline is at the scale's floor (percent change undefined).
    """
    full = scale_outcomes(scores, instrument, baseline, endpoint, reduction=reduction)
    base_missing = full["baseline_total"].isna()
    end_missing = full["endpoint_total"].isna()
    pct_missing = full["percent_change"].isna() & ~base_missing & ~end_missing
    reason = np.where(base_missing & end_missing, f"no {baseline} and no {endpoint} total",
                      np.where(base_missing, f"no {baseline} total",
                               np.where(end_missing, f"no {endpoint} total",
                                        np.where(pct_missing, "baseline at the scale floor: percent "
                                                              "change undefined", ""))))
    bad = reason != ""
    dropped = _dropped(full.loc[bad, "participant_id"], reason[bad])
    kept = full.loc[~bad].set_index("participant_id")
    out = kept[["instrument", "baseline_total", "endpoint_total", "change", "percent_change"]].copy()
    out["response"] = kept["response"].astype(bool)
    if remission_threshold is None:
        out["remission"] = kept["remission"].astype(bool)
        rule = load_instrument(instrument).remission
        cut = f"{rule['op']} {rule['value']} (instrument cut-off)"
    else:
        out["remission"] = kept["endpoint_total"].to_numpy(float) <= remission_threshold
        cut = float(remission_threshold)
    out.attrs.update({"instrument": full.attrs.get("instrument", instrument), "baseline": baseline,
                      "endpoint": endpoint, "reduction": reduction, "remission_threshold": cut})
    return out, dropped


@dataclass
class EarlyChangeComparison:
    """Output of :func:`compare_early_change`.

    Attributes
    ----------
    baseline_result, early_result : NestedCVResult
        The two nested CV runs (same outer folds).
    comparison : DataFrame
        One row of :func:`~theramark.predict.compare.compare_models`, difference = early − baseline.
    dropped : DataFrame
        ``participant_id, reason`` for everyone left out (features or outcome).
    """

    baseline_result: NestedCVResult
    early_result: NestedCVResult
    comparison: pd.DataFrame
    dropped: pd.DataFrame

    def metrics(self) -> pd.DataFrame:
        """``model, metric, mean, sd, n_folds`` for both models."""
        a = self.baseline_result.metric_table().assign(model="baseline")
        b = self.early_result.metric_table().assign(model="early_change")
        return pd.concat([a, b], ignore_index=True)[["model", "metric", "mean", "sd", "n_folds"]]


def compare_early_change(
    features: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    outcome: str = "response",
    baseline: str = "pre",
    mid: str = "mid",
    feature_columns: Sequence[str] | None = None,
    include_baseline: bool = True,
    estimator=None,
    param_grid: Mapping[str, Sequence[Any]] | None = None,
    metric: str | None = None,
    n_splits: int = 5,
    n_repeats: int = 10,
    inner_splits: int = 5,
    random_state: int | None = 0,
    n_jobs: int | None = None,
) -> EarlyChangeComparison:
    """Does early change predict the outcome better than baseline features alone?

    Parameters
    ----------
    features : DataFrame
        As for :func:`early_change_features`.
    outcomes : DataFrame
        Index (or column) ``participant_id`` and the ``outcome`` column, e.g. the first output of
        :func:`treatment_outcomes`.
    outcome : str
        ``"response"`` or ``"remission"`` (classification) or a numeric column such as
        ``"percent_change"`` (regression).
    include_baseline : bool
        The early-change model uses baseline + change features (True, default: does early change add
        to baseline?) or change features alone.
    estimator, param_grid
        Default: ``make_model("elasticnet", task)`` and its grid.
    metric : str, optional
        Compared fold metric (default AUC / R²).
    n_splits, n_repeats, inner_splits, random_state, n_jobs
        As in :func:`~theramark.predict.validation.cross_validate_nested`; both models get the same
        outer folds.

    Returns
    -------
    EarlyChangeComparison
    """
    feats = early_change_features(features, baseline=baseline, mid=mid, feature_columns=feature_columns)
    out_table = outcomes.set_index("participant_id") if "participant_id" in outcomes.columns else outcomes
    if outcome not in out_table.columns:
        raise BadInputError(f"outcomes table: no column {outcome!r}; columns: {', '.join(out_table.columns)}")
    target = out_table[outcome]
    dropped = [feats.dropped]
    missing_y = [p for p in feats.baseline.index if p not in target.index or pd.isna(target.get(p))]
    dropped.append(_dropped(missing_y, f"no {outcome} outcome"))
    no_feats = [p for p in target.index if p not in feats.baseline.index
                and p not in set(feats.dropped["participant_id"])]
    dropped.append(_dropped(no_feats, "not in the features table"))
    keep = [p for p in feats.baseline.index if p not in set(missing_y)]
    y = target.loc[keep]
    task = "classification" if (y.dtype == bool or y.nunique() == 2) else "regression"
    y = y.astype(int if task == "classification" else float).to_numpy()
    if estimator is None:
        estimator, grid = make_model("elasticnet", task, random_state=random_state)
        param_grid = grid if param_grid is None else param_grid
    X_base = feats.baseline.loc[keep]
    X_early = (pd.concat([X_base, feats.change.loc[keep]], axis=1) if include_baseline
               else feats.change.loc[keep])
    options = dict(param_grid=param_grid, task=task, n_splits=n_splits, n_repeats=n_repeats,
                   inner_splits=inner_splits, random_state=random_state, n_jobs=n_jobs)
    res_base = cross_validate_nested(estimator, X_base, y, **options)
    res_early = cross_validate_nested(estimator, X_early, y, **options)
    comparison = compare_models(res_early, res_base, metric, model_a="early_change", model_b="baseline")
    return EarlyChangeComparison(res_base, res_early, comparison,
                                 pd.concat(dropped, ignore_index=True))
