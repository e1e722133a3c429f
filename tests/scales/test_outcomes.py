"""Outcomes: closed-form checks of change, response, remission, RCI, criterion c and time to response."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.scales import criterion_c, outcomes, rates_by_group, reliable_change_index
from theramark.scales.outcomes import trajectory_summary


def scores_table(pairs, sessions=("pre", "post"), group=None):
    records = []
    for i, values in enumerate(pairs):
        for session, value in zip(sessions, values, strict=True):
            record = {"participant_id": f"sub-{i:02d}", "session": session, "total": value}
            if group is not None:
                record["group"] = group[i]
            records.append(record)
    return pd.DataFrame(records)


def test_change_response_and_remission_at_their_edges():
    table = scores_table([(20, 10), (20, 11), (20, 7), (20, 8), (0, 3), (16, np.nan)])
    out = outcomes(table, "hamd17")
    assert list(out["change"][:5]) == [-10, -9, -13, -12, 3]
    assert list(out["percent_change"][:4]) == [-50, -45, -65, -60]
    assert np.isnan(out.loc[4, "percent_change"])  # baseline at the floor
    assert list(out["response"][:4]) == [True, False, True, True]
    assert pd.isna(out.loc[4, "response"]) and pd.isna(out.loc[5, "response"])
    assert list(out["remission"][:4]) == [False, False, True, False]  # HAMD-17 <= 7
    assert pd.isna(out.loc[5, "remission"])
    phq = outcomes(scores_table([(12, 4), (12, 5)]), "phq9")
    assert list(phq["remission"]) == [True, False]  # PHQ-9 < 5
    madrs = outcomes(scores_table([(30, 10), (30, 11)]), "madrs")
    assert list(madrs["remission"]) == [True, False]
    bdi = outcomes(scores_table([(30, 13), (30, 14)]), "bdi2")
    assert list(bdi["remission"]) == [True, False]


def test_percent_change_is_relative_to_the_floor():
    out = outcomes(scores_table([(60, 40)]), "zung_sds")  # floor 20: half-way down
    assert out.loc[0, "percent_change"] == -50 and bool(out.loc[0, "response"])


def test_reliable_change_index_and_criterion_c_closed_form():
    rci = reliable_change_index(np.array([30.0, 30.0]), np.array([17.0, 25.0]), sd=10, reliability=0.8)
    s_diff = np.sqrt(2) * 10 * np.sqrt(0.2)
    np.testing.assert_allclose(rci, [-13 / s_diff, -5 / s_diff])
    assert criterion_c({"mean": 10, "sd": 5}, {"mean": 30, "sd": 10}) == pytest.approx(50 / 3)
    norms = {"functional": {"mean": 10, "sd": 5}, "dysfunctional": {"mean": 30, "sd": 10}}
    table = scores_table([(30, 12), (30, 17), (30, 28), (20, 40)])
    out = outcomes(table, "phq9", reliability=0.8, norms=norms)
    assert out.attrs["sd_baseline"] == 10 and out.attrs["criterion_c"] == pytest.approx(50 / 3)
    assert list(out["jt_category"]) == ["recovered", "improved", "unchanged", "deteriorated"]
    assert list(out["clinically_significant"]) == [True, False, False, False]
    with pytest.raises(BadInputError):
        reliable_change_index(np.zeros(1), np.zeros(1), sd=1, reliability=1.2)


def test_bdi2_uses_stored_reliability_and_norms():
    out = outcomes(scores_table([(30, 5)]), "bdi2")
    assert out.attrs["reliability"] == 0.92 and out.attrs["sd_baseline"] == 12.75
    expected_c = (9.93 * 22.45 + 12.75 * 12.56) / (9.93 + 12.75)
    assert out.loc[0, "criterion_c"] == pytest.approx(expected_c)
    assert out.loc[0, "rci"] == pytest.approx(-25 / (np.sqrt(2) * 12.75 * np.sqrt(0.08)))


def test_without_reliability_rci_is_missing_not_invented():
    out = outcomes(scores_table([(30, 5), (25, 20)]), "madrs")
    assert out["rci"].isna().all() and out["jt_category"].isna().all()


def test_higher_is_better_scales_improve_upward():
    out = outcomes(scores_table([(20, 40), (20, 25)]), "dars", reduction=0.5)
    assert list(out["response"]) == [True, False]
    assert outcomes(scores_table([(20, 40)]), "dars")["response"].isna().all()  # no criterion


def test_time_to_response_over_sessions():
    table = scores_table([(20, 15, 10, 8), (20, 18, 16, 12), (20, 8, 12, 9)],
                         sessions=("pre", "w2", "w4", "post"))
    out = outcomes(table, "hamd17", sessions=["pre", "w2", "w4", "post"],
                   time={"w2": 2, "w4": 4, "post": 8})
    assert [None if pd.isna(v) else v for v in out["response_session"]] == ["w4", None, "w2"]
    np.testing.assert_array_equal(out["time_to_response"], [4, np.nan, 2])


def test_bad_scores_tables():
    with pytest.raises(BadInputError, match=r"column\(s\) not found: session"):
        outcomes(pd.DataFrame({"participant_id": ["a"], "total": [1]}), "phq9")
    with pytest.raises(BadInputError, match="no rows for session 'post'"):
        outcomes(scores_table([(1, 2)], sessions=("pre", "mid")), "phq9")
    with pytest.raises(BadInputError, match="non-numeric"):
        outcomes(scores_table([("x", 2)]), "phq9")


def test_rates_and_trajectory_summary():
    table = scores_table([(20, 8), (20, 15), (30, 5), (30, 29)], group=["A", "A", "B", "B"])
    out = outcomes(table, "hamd17")
    rates = rates_by_group(out).set_index("group")
    assert rates.loc["A", "n_response"] == 1 and rates.loc["A", "response_rate"] == 0.5
    assert rates.loc["B", "n_remission"] == 1
    summary = trajectory_summary(table).set_index(["group", "session"])
    from scipy import stats
    half = stats.t.ppf(0.975, 1) * np.std([8, 15], ddof=1) / np.sqrt(2)
    assert summary.loc[("A", "post"), "mean"] == 11.5
    assert summary.loc[("A", "post"), "ci_high"] == pytest.approx(11.5 + half)
