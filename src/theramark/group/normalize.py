"""Normalization: does treatment move patients toward healthy controls?

For every feature the healthy-control distribution (mean ``mu_c`` and SD ``sd_c``) defines a z scale:
``z = (x - mu_c) / sd_c``. For each patient arm the table reports, at baseline and at endpoint,

- the group deviation ``mean z`` (signed) and the group distance ``|mean z|`` in control-SD units;
- ``percent_normalized = 100 * (distance_pre - distance_post) / distance_pre``: how much of the
  baseline abnormality of the arm's mean is gone at endpoint (100 = back to the control mean,
  negative = further away), the group-level index used for abnormal connectivity in the
  treatment literature;
- the participant-level distances ``|z|`` (mean at each session), their paired change with a paired
  t test (is each patient closer to the control mean after treatment?), and the fraction of
  patients who are closer;
- among patients abnormal at baseline (``|z_pre| > z_threshold``), the fraction within the control
  range at endpoint (``|z_post| <= z_threshold``).

:func:`normalization_contrast` then asks whether an arm normalizes more than the reference arm
(waitlist): a Welch t test on the per-participant change in distance.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import BadInputError

__all__ = ["control_distances", "normalization", "normalization_contrast"]


def _prepare(table, features, participant, group, session, control_group, baseline, endpoint):
    missing = [c for c in (participant, group, session, *features) if c not in table.columns]
    if missing:
        raise BadInputError(f"normalization: column(s) {missing} not in the table")
    if not len(features):
        raise BadInputError("normalization: no feature columns given")
    groups = set(table[group].dropna().astype(str))
    if control_group not in groups:
        raise BadInputError(f"normalization: control group '{control_group}' not found in "
                            f"'{group}' (levels: {sorted(groups)})")
    sessions = set(table[session].dropna().astype(str))
    for label in (baseline, endpoint):
        if label not in sessions:
            raise BadInputError(f"normalization: session '{label}' not in '{session}' "
                                f"(found {sorted(sessions)})")
    if table.duplicated([participant, session]).any():
        raise BadInputError("normalization: more than one row per participant × session")


def control_distances(
    table: pd.DataFrame,
    features: Sequence[str],
    *,
    participant: str = "participant_id",
    group: str = "group",
    session: str = "session",
    control_group: str,
    control_session: str | None = None,
    baseline: str,
    endpoint: str,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Signed z scores of every patient against the controls at baseline and endpoint.

    Parameters
    ----------
    control_session : str, optional
        Session of the controls that defines the reference; by default every control session,
        each control contributing the mean of their sessions (so retest controls are not counted
        twice).

    Returns
    -------
    z_pre, z_post : DataFrame (patients × features)
        Indexed by participant; NaN where a session is missing.
    arm : Series
        The group of each patient.
    """
    features = list(features)
    _prepare(table, features, participant, group, session, control_group, baseline, endpoint)
    is_control = table[group].astype(str) == control_group
    controls = table[is_control]
    if control_session is not None:
        controls = controls[controls[session].astype(str) == control_session]
    per_control = controls.groupby(participant)[features].mean()
    n_controls = per_control.notna().sum(axis=0)
    if (n_controls < 3).any():
        few = list(n_controls[n_controls < 3].index[:5])
        raise BadInputError(f"normalization: fewer than 3 controls observed for {few}")
    mu = per_control.mean(axis=0)
    sd = per_control.std(axis=0, ddof=1)
    if (sd == 0).any():
        raise BadInputError(f"normalization: controls have zero SD for {list(sd[sd == 0].index)[:5]}")
    patients = table[~is_control]
    ids = pd.Index(sorted(set(patients[participant])), name=participant)

    def at(label):
        rows = patients[patients[session].astype(str) == label].set_index(participant)[features]
        return ((rows - mu) / sd).reindex(ids)

    arm = patients.drop_duplicates(participant).set_index(participant)[group].astype(str)
    return at(baseline), at(endpoint), arm.reindex(ids)


def normalization(
    table: pd.DataFrame,
    features: Sequence[str],
    *,
    participant: str = "participant_id",
    group: str = "group",
    session: str = "session",
    control_group: str,
    control_session: str | None = None,
    baseline: str,
    endpoint: str,
    z_threshold: float = 1.0,
    min_baseline_distance: float = 0.2,
) -> pd.DataFrame:
    """Distance of each patient arm to the healthy-control mean before and after treatment.

    Parameters
    ----------
    table : DataFrame
        Wide table, one row per participant × session, one column per feature.
    features : sequence of str
    control_group : str
        The healthy-control label of ``group``.
    baseline, endpoint : str
        Session labels.
    z_threshold : float
        ``|z|`` above which a patient counts as abnormal (control-SD units).
    min_baseline_distance : float
        ``percent_normalized`` is reported only where the arm's baseline distance is at least this
        (control-SD units); below it the arm was not abnormal and the ratio is meaningless (NaN).

    Returns
    -------
    DataFrame
        One row per feature × arm: ``feature, arm, n, mean_z_pre, mean_z_post, distance_pre,
        distance_post, percent_normalized, mean_abs_z_pre, mean_abs_z_post, distance_change,
        statistic, df, p, fraction_closer, n_abnormal_pre, fraction_normalized``. ``n`` counts
        patients with both sessions; every statistic uses those patients. ``statistic``/``p`` are
        the paired t test of ``|z_post| - |z_pre|`` (negative = closer to controls).
    """
    features = list(features)
    z_pre, z_post, arm = control_distances(
        table, features, participant=participant, group=group, session=session,
        control_group=control_group, control_session=control_session, baseline=baseline,
        endpoint=endpoint)
    rows = []
    for label in sorted(arm.dropna().unique()):
        mask = (arm == label).to_numpy()
        pre = z_pre.to_numpy(float)[mask]
        post = z_post.to_numpy(float)[mask]
        paired = np.isfinite(pre) & np.isfinite(post)
        pre = np.where(paired, pre, np.nan)
        post = np.where(paired, post, np.nan)
        n = paired.sum(axis=0)
        # A feature with fewer than two paired patients has no SD: its t and p are NaN, and n says
        # why; numpy's warnings about empty slices would only repeat that.
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_pre = np.nanmean(pre, axis=0)
            mean_post = np.nanmean(post, axis=0)
            dist_pre, dist_post = np.abs(mean_pre), np.abs(mean_post)
            percent = np.where(dist_pre >= min_baseline_distance,
                               100.0 * (dist_pre - dist_post) / dist_pre, np.nan)
            change = np.abs(post) - np.abs(pre)
            mean_change = np.nanmean(change, axis=0)
            sd_change = np.nanstd(change, axis=0, ddof=1)
            t = mean_change / (sd_change / np.sqrt(n))
            p = 2 * stats.t.sf(np.abs(t), n - 1)
            closer = np.nansum(change < 0, axis=0) / n
            abnormal = np.abs(pre) > z_threshold
            n_abnormal = abnormal.sum(axis=0)
            normalized = (abnormal & (np.abs(post) <= z_threshold)).sum(axis=0) / n_abnormal
        rows.append(pd.DataFrame({
            "feature": features, "arm": label, "n": n, "mean_z_pre": mean_pre,
            "mean_z_post": mean_post, "distance_pre": dist_pre, "distance_post": dist_post,
            "percent_normalized": percent, "mean_abs_z_pre": np.nanmean(np.abs(pre), axis=0),
            "mean_abs_z_post": np.nanmean(np.abs(post), axis=0), "distance_change": mean_change,
            "statistic": t, "df": n - 1, "p": p, "fraction_closer": closer,
            "n_abnormal_pre": n_abnormal, "fraction_normalized": normalized,
        }))
    out = pd.concat(rows, ignore_index=True)
    order = {f: i for i, f in enumerate(features)}
    return out.sort_values("feature", key=lambda s: s.map(order), kind="stable").reset_index(
        drop=True)


def normalization_contrast(
    table: pd.DataFrame,
    features: Sequence[str],
    *,
    reference_group: str,
    participant: str = "participant_id",
    group: str = "group",
    session: str = "session",
    control_group: str,
    control_session: str | None = None,
    baseline: str,
    endpoint: str,
) -> pd.DataFrame:
    """Does an arm move closer to the controls than the reference arm does?

    Welch t test, per feature, of the per-participant change in distance ``|z_post| - |z_pre|``
    between each arm and ``reference_group``.

    Returns
    -------
    DataFrame
        ``feature, arm, estimate (difference in mean distance change; negative = the arm
        normalizes more), statistic, df, p, n_arm, n_reference``.
    """
    features = list(features)
    z_pre, z_post, arm = control_distances(
        table, features, participant=participant, group=group, session=session,
        control_group=control_group, control_session=control_session, baseline=baseline,
        endpoint=endpoint)
    if reference_group not in set(arm):
        raise BadInputError(f"normalization_contrast: reference group '{reference_group}' has no "
                            "patients")
    change = (z_post.abs() - z_pre.abs()).to_numpy(float)
    ref = change[(arm == reference_group).to_numpy()]
    rows = []
    for label in sorted(set(arm.dropna()) - {reference_group}):
        other = change[(arm == label).to_numpy()]
        res = stats.ttest_ind(other, ref, axis=0, equal_var=False, nan_policy="omit")
        n1 = np.isfinite(other).sum(axis=0)
        n0 = np.isfinite(ref).sum(axis=0)
        with np.errstate(invalid="ignore"):
            estimate = np.nanmean(other, axis=0) - np.nanmean(ref, axis=0)
        rows.append(pd.DataFrame({
            "feature": features, "arm": label, "estimate": estimate,
            "statistic": np.asarray(res.statistic, float), "df": np.asarray(res.df, float),
            "p": np.asarray(res.pvalue, float), "n_arm": n1, "n_reference": n0,
        }))
    return pd.concat(rows, ignore_index=True)
