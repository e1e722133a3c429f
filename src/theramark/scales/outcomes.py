"""Treatment outcomes from scored totals: change, response, remission, reliable and clinically
significant change (Jacobson & Truax 1991), and time to response.

Every function takes a tidy scores table (``participant_id, session, total`` and optionally
``group``), so totals from :func:`theramark.scales.score` and totals recorded in a real dataset
(OpenNeuro tables carry totals, not items) are handled the same way: a table with one total column
per session becomes a scores table with :func:`theramark.study.session_columns_to_long`
(``columns={"total": {"pre": "BDI_ses-pre", "post": "BDI_ses-post"}}``).

Conventions
-----------
- ``change = endpoint - baseline`` (negative = fewer symptoms on symptom scales).
- ``percent_change = 100 * change / (baseline - floor)``, with ``floor`` the instrument's lowest
  possible total (0 for HAMD-17, MADRS, BDI-II, PHQ-9; 20 for the Zung SDS raw score), so percent
  change measures the share of the distance to the floor that was covered. Undefined (n/a) when the
  baseline is at the floor.
- Response: ``percent_change <= -100 * reduction`` (default reduction 0.5, the usual >= 50%), on
  instruments where higher is worse. Remission: the instrument's cut-off on the endpoint total.
- Reliable change index (Jacobson & Truax 1991): ``RCI = change / S_diff`` with
  ``S_diff = sqrt(2) * SD * sqrt(1 - r)``; ``SD`` is the dysfunctional-norm SD stored with the
  instrument (or given), else the SD of the sample's baseline totals; ``r`` the reliability.
  ``|RCI| > 1.96`` is reliable change.
- Criterion c: ``(SD_f * M_d + SD_d * M_f) / (SD_f + SD_d)`` from functional (f) and dysfunctional
  (d) norms. Clinically significant improvement = reliable improvement and an endpoint on the
  functional side of c. Categories: ``recovered`` (both), ``improved`` (reliable only),
  ``unchanged``, ``deteriorated`` (reliable worsening).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from theramark.errors import BadInputError
from theramark.scales.definitions import Instrument, load_instrument
from theramark.study.entities import without_ses_prefix
from theramark.tables import check_columns

RCI_CRITICAL = 1.96


def _check_scores(scores: pd.DataFrame, source: str) -> pd.DataFrame:
    check_columns(scores, ["participant_id", "session", "total"], source)
    table = scores.copy()
    table["session"] = without_ses_prefix(table["session"].astype("string"))
    table["participant_id"] = table["participant_id"].astype("string")
    total = pd.to_numeric(table["total"], errors="coerce")
    bad = total.isna() & table["total"].notna()
    if bad.any():
        raise BadInputError(
            f"{source}: non-numeric totals",
            [f"participant {p}, session {s}: total '{v}'" for p, s, v in
             table.loc[bad, ["participant_id", "session", "total"]].itertuples(index=False)],
        )
    table["total"] = total.astype(float)
    duplicated = table.duplicated(subset=["participant_id", "session"], keep=False)
    if duplicated.any():
        raise BadInputError(
            f"{source}: participant and session repeated",
            [f"{p}, {s}" for p, s in table.loc[duplicated, ["participant_id", "session"]]
             .drop_duplicates().itertuples(index=False)],
        )
    return table


def criterion_c(functional: Mapping[str, float], dysfunctional: Mapping[str, float]) -> float:
    """Jacobson & Truax (1991) cut-off c between functional and dysfunctional populations.

    Parameters
    ----------
    functional, dysfunctional : mapping with ``mean`` and ``sd``
        Normative (functional) and patient (dysfunctional) means and SDs, in total-score units.
    """
    m_f, s_f = float(functional["mean"]), float(functional["sd"])
    m_d, s_d = float(dysfunctional["mean"]), float(dysfunctional["sd"])
    if s_f <= 0 or s_d <= 0:
        raise BadInputError(f"norm SDs must be positive, got {s_f} and {s_d}")
    return (s_f * m_d + s_d * m_f) / (s_f + s_d)


def reliable_change_index(baseline: np.ndarray, endpoint: np.ndarray, sd: float,
                          reliability: float) -> np.ndarray:
    """Jacobson & Truax (1991) RCI, ``(endpoint - baseline) / (sqrt(2) * sd * sqrt(1 - r))``.

    Parameters
    ----------
    baseline, endpoint : array, shape (n,)
        Totals.
    sd : float
        Standard deviation of baseline (dysfunctional) totals.
    reliability : float
        Reliability of the total, in (0, 1).
    """
    if not 0 < reliability < 1:
        raise BadInputError(f"reliability must be between 0 and 1, got {reliability}")
    if not sd > 0:
        raise BadInputError(f"the SD for the reliable change index must be positive, got {sd}")
    s_diff = np.sqrt(2.0) * sd * np.sqrt(1.0 - reliability)
    return (np.asarray(endpoint, float) - np.asarray(baseline, float)) / s_diff


def _bool(values: np.ndarray) -> pd.arrays.BooleanArray:
    """0/1/NaN floats → nullable booleans (NaN → <NA>)."""
    return pd.array(np.asarray(values, dtype=float), dtype="Float64").astype("boolean")


def outcomes(
    scores: pd.DataFrame,
    instrument: str | Instrument,
    baseline: str = "pre",
    endpoint: str = "post",
    *,
    reduction: float | None = None,
    reliability: float | None = None,
    norms: Mapping[str, Mapping[str, float]] | None = None,
    sd_baseline: float | None = None,
    sessions: Sequence[str] | None = None,
    time: Mapping[str, float] | None = None,
    source: str = "scores table",
) -> pd.DataFrame:
    """Per-participant treatment outcomes between two sessions.

    Parameters
    ----------
    scores : DataFrame
        ``participant_id, session, total`` (one row per participant × session); a ``group`` column
        is carried through. Sessions may be written ``ses-pre`` or ``pre``.
    instrument : str or Instrument
        Gives the remission cut-off, the floor for percent change, the direction (higher is worse),
        the reliability and the norms, unless given here.
    baseline, endpoint : str
        Session labels.
    reduction : float, optional
        Fractional change toward health that counts as response (default: the instrument's
        criterion, 0.5 for the depression scales; without one, ``response`` is n/a).
    reliability : float, optional
        Reliability for the RCI (default: the instrument file's). Without one, RCI columns are n/a.
    norms : mapping, optional
        ``{"functional": {"mean", "sd"}, "dysfunctional": {"mean", "sd"}}`` for criterion c
        (default: the instrument file's, when it has both).
    sd_baseline : float, optional
        SD used in the RCI (default: the dysfunctional norm SD, else the sample SD of baseline totals).
    sessions : sequence of str, optional
        All sessions in time order (baseline first) for time to response; default: the baseline,
        the sessions in the table in order of appearance, and the endpoint.
    time : mapping of str to float, optional
        Time of each session (e.g. weeks since baseline), reported as ``time_to_response``.

    Returns
    -------
    DataFrame
        One row per participant in the table (totals n/a where a session is missing, so nobody
        drops out silently): ``participant_id``, ``group`` (if given),
        ``instrument``, ``baseline_total``, ``endpoint_total``, ``change``, ``percent_change``,
        ``response``, ``remission`` (nullable booleans; n/a when a total is missing), ``rci``,
        ``reliable_change`` (``improved``/``deteriorated``/``no reliable change``),
        ``criterion_c``, ``clinically_significant``, ``jt_category``, ``response_session``
        (first session after baseline meeting the response criterion) and ``time_to_response``.
        ``attrs`` holds the parameters used (SD, reliability, criterion c and their sources).
    """
    inst = load_instrument(instrument)
    table = _check_scores(scores, source)
    baseline = baseline.removeprefix("ses-")
    endpoint = endpoint.removeprefix("ses-")
    present = set(table["session"].dropna())
    for label in (baseline, endpoint):
        if label not in present:
            raise BadInputError(
                f"{source}: no rows for session '{label}'; sessions present: {', '.join(sorted(present))}"
            )
    wide = table.pivot(index="participant_id", columns="session", values="total")
    pre = wide[baseline].to_numpy(float)
    post = wide[endpoint].to_numpy(float)
    floor = float(inst.range[0]) if inst.range else 0.0
    worse_up = inst.higher_is_worse is not False
    change = post - pre
    with np.errstate(invalid="ignore", divide="ignore"):
        span = pre - floor
        percent = np.where(span > 0, 100.0 * change / np.where(span > 0, span, 1.0), np.nan)
        percent = np.where(np.isnan(change), np.nan, percent)

    if reduction is None and inst.response:
        reduction = float(inst.response["reduction"])
    direction = -1.0 if worse_up else 1.0
    if reduction is None:  # no published response criterion and none given
        response = np.full(len(pre), np.nan)
    else:
        with np.errstate(invalid="ignore"):
            response = np.where(np.isnan(percent), np.nan,
                                (direction * percent >= 100 * reduction).astype(float))
    remission = inst.remission_of(post) if inst.remission else np.full(len(post), np.nan)

    info: dict[str, Any] = {"instrument": inst.id, "baseline": baseline, "endpoint": endpoint,
                            "reduction": reduction}
    rel_source = "given"
    if reliability is None and inst.reliability:
        reliability, rel_source = float(inst.reliability["value"]), inst.reliability["source"]
    if norms is None and inst.norms and {"functional", "dysfunctional"} <= set(inst.norms):
        norms = inst.norms
    sd_source = "given"
    if sd_baseline is None:
        if norms and "dysfunctional" in norms:
            sd_baseline, sd_source = float(norms["dysfunctional"]["sd"]), "dysfunctional norm"
        else:
            sd_baseline = float(np.nanstd(pre, ddof=1)) if np.isfinite(pre).sum() > 1 else np.nan
            sd_source = "sample SD of baseline totals"
    rci = np.full(len(pre), np.nan)
    if reliability is not None and np.isfinite(sd_baseline) and sd_baseline > 0:
        rci = reliable_change_index(pre, post, sd_baseline, reliability)
    c_value = (criterion_c(norms["functional"], norms["dysfunctional"])
               if norms and {"functional", "dysfunctional"} <= set(norms) else np.nan)
    info.update({"reliability": reliability, "reliability_source": rel_source,
                 "sd_baseline": sd_baseline, "sd_source": sd_source, "criterion_c": c_value})

    improved = direction * rci > RCI_CRITICAL
    worsened = direction * rci < -RCI_CRITICAL
    reliable = np.where(improved, "improved", np.where(worsened, "deteriorated", "no reliable change"))
    reliable = np.where(np.isnan(rci), None, reliable).astype(object)
    functional_side = (post < c_value) if worse_up else (post > c_value)
    clin = np.where(np.isnan(rci) | np.isnan(c_value) | np.isnan(post), np.nan,
                    (improved & functional_side).astype(float))
    category = np.where(improved & functional_side & np.isfinite(c_value), "recovered",
                        np.where(improved, "improved",
                                 np.where(worsened, "deteriorated", "unchanged")))
    category = np.where(np.isnan(rci), None, category).astype(object)

    out = pd.DataFrame({"participant_id": wide.index.to_numpy(dtype=object)})
    if "group" in table.columns:
        groups = table.dropna(subset=["group"]).drop_duplicates("participant_id")
        out["group"] = out["participant_id"].map(groups.set_index("participant_id")["group"])
    out["instrument"] = inst.id
    out["baseline_total"] = pre
    out["endpoint_total"] = post
    out["change"] = change
    out["percent_change"] = percent
    out["response"] = _bool(response)
    out["remission"] = _bool(remission)
    out["rci"] = rci
    out["reliable_change"] = reliable
    out["criterion_c"] = c_value
    out["clinically_significant"] = _bool(clin)
    out["jt_category"] = category
    first, when = _time_to_response(wide, baseline, endpoint, sessions, time, floor, direction,
                                    reduction if reduction is not None else np.inf)
    out["response_session"] = first
    out["time_to_response"] = when
    out.attrs.update(info)
    return out


def _time_to_response(wide: pd.DataFrame, baseline: str, endpoint: str,
                      sessions: Sequence[str] | None, time: Mapping[str, float] | None,
                      floor: float, direction: float, reduction: float):
    """First session after baseline whose total meets the response criterion (vectorized)."""
    if sessions is None:
        ordered = [baseline] + [s for s in wide.columns if s not in (baseline, endpoint)] + [endpoint]
    else:
        ordered = [s.removeprefix("ses-") for s in sessions]
        unknown = [s for s in ordered if s not in wide.columns]
        if unknown:
            raise BadInputError(f"sessions {unknown} are not in the scores table")
    later = [s for s in ordered[ordered.index(baseline) + 1:]] if baseline in ordered else []
    n = len(wide)
    if not later:
        return np.full(n, None, dtype=object), np.full(n, np.nan)
    pre = wide[baseline].to_numpy(float)[:, None]
    follow = wide[later].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * (follow - pre) / (pre - floor)
        met = (pre - floor > 0) & (direction * pct >= 100 * reduction)
    any_met = met.any(axis=1)
    first_idx = met.argmax(axis=1)
    labels = np.asarray(later, dtype=object)[first_idx]
    session = np.where(any_met, labels, None).astype(object)
    if time is None:
        return session, np.full(n, np.nan)
    times = np.array([float(time.get(s, np.nan)) for s in later])
    return session, np.where(any_met, times[first_idx], np.nan)


def rates_by_group(outcome_table: pd.DataFrame, by: str = "group") -> pd.DataFrame:
    """Response and remission counts and rates per group (participants with both totals).

    Returns
    -------
    DataFrame
        ``<by>, n, n_response, response_rate, n_remission, remission_rate`` (rates in [0, 1]).
    """
    table = outcome_table.dropna(subset=["endpoint_total", "baseline_total"])
    if by not in table.columns:
        table = table.assign(**{by: "all"})
    grouped = table.groupby(by, dropna=False)
    out = pd.DataFrame({
        "n": grouped.size(),
        "n_response": grouped["response"].sum(min_count=0).astype(int),
        "n_remission": grouped["remission"].sum(min_count=0).astype(int),
    })
    for kind in ("response", "remission"):
        defined = grouped[kind].count()
        out[f"n_{kind}_defined"] = defined
        out[f"{kind}_rate"] = out[f"n_{kind}"] / defined.where(defined > 0)
    return out.reset_index()


def trajectory_summary(scores: pd.DataFrame, by: str = "group", value: str = "total") -> pd.DataFrame:
    """Mean, SD and t-based 95% CI of a score per group and session (for trajectory plots).

    Returns
    -------
    DataFrame
        ``<by>, session, n, mean, sd, ci_low, ci_high``; sessions keep their order of appearance.
    """
    from scipy import stats

    table = scores.dropna(subset=[value])
    if by not in table.columns:
        table = table.assign(**{by: "all"})
    order = list(dict.fromkeys(table["session"]))
    grouped = table.groupby([by, "session"], sort=False)[value]
    out = grouped.agg(n="count", mean="mean", sd="std").reset_index()
    half = stats.t.ppf(0.975, np.maximum(out["n"] - 1, 1)) * out["sd"] / np.sqrt(out["n"])
    half = half.where(out["n"] > 1)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out["session"] = pd.Categorical(out["session"], categories=order, ordered=True)
    return out.sort_values([by, "session"]).reset_index(drop=True).assign(
        session=lambda f: f["session"].astype(str))
