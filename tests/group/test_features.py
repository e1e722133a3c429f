"""The features table: joins, run averaging, exclusions, pivots, writing, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.group.features import (
    build_features,
    feature_key,
    session_table,
    split_feature_key,
    wide_features,
    write_features,
)


def _long_outputs():
    rows = []
    for pid in ("sub-01", "sub-02"):
        for session in ("pre", "post"):
            for run in (1, 2):
                base = 0.1 * run + (session == "post") * 0.5 + (pid == "sub-02")
                rows.append((pid, f"ses-{session}", "rest", run, "pearsoncorrelation",
                             "amygdala_L__dacc", base))
                rows.append((pid, session, "rest", run, "qc", "mean_fd", 0.1 * run))
                rows.append((pid, session, "rest", run, "qc", "excluded",
                             float(pid == "sub-02" and session == "post" and run == 2)))
            rows.append((pid, session, "mid", np.nan, "activation",
                         "nacc_L:gain-neutral", 2.0 if session == "pre" else 3.0))
    return pd.DataFrame(rows, columns=["participant_id", "session", "task", "run", "measure",
                                       "feature", "value"])


def _participants():
    return pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "age": [30, 41],
                         "sex": ["F", "M"], "site": ["a", "b"], "group": ["CBT", "waitlist"]})


def _scores():
    return {"hamd17": pd.DataFrame({"participant_id": ["sub-01", "sub-01", "sub-02"],
                                    "session": ["pre", "post", "pre"], "total": [20, 10, 18],
                                    "anxiety": [4, 2, 5]})}


def test_build_features_joins_and_averages_runs():
    table = build_features(_long_outputs(), _participants(), _scores())
    fc = table[(table["measure"] == "pearsoncorrelation")].set_index(["participant_id", "session"])
    # runs averaged; the excluded run (sub-02 post run 2) is dropped from the FC average
    assert fc.loc[("sub-01", "pre"), "value"] == pytest.approx(0.15)
    assert fc.loc[("sub-01", "pre"), "n_runs"] == 2
    assert fc.loc[("sub-02", "post"), "value"] == pytest.approx(1.6)
    assert fc.loc[("sub-02", "post"), "n_runs"] == 1
    assert set(table["session"]) == {"pre", "post"}  # ses- prefix stripped
    assert {"age", "sex", "site", "group", "hamd17_total", "hamd17_anxiety"} <= set(table.columns)
    row = table[(table["participant_id"] == "sub-02") & (table["session"] == "post")].iloc[0]
    assert np.isnan(row["hamd17_total"])  # no score: missing, not dropped
    assert table.loc[table["participant_id"] == "sub-01", "age"].eq(30).all()


def test_wide_and_session_tables():
    table = build_features(_long_outputs(), _participants(), _scores())
    wide = wide_features(table, measures=["pearsoncorrelation", "activation"])
    key = feature_key("pearsoncorrelation", "rest", "amygdala_L__dacc")
    assert list(wide.columns) == [feature_key("activation", "mid", "nacc_L:gain-neutral"), key]
    assert wide.loc[("sub-02", "pre"), key] == pytest.approx(1.15)
    assert split_feature_key(key) == ("pearsoncorrelation", "rest", "amygdala_L__dacc")
    sessions = session_table(table)
    assert sessions.loc[("sub-01", "post"), "hamd17_total"] == 10
    assert "value" not in sessions.columns


def test_write_features(tmp_path):
    table = build_features(_long_outputs(), _participants())
    paths = write_features(table, tmp_path)
    assert {p.name for p in paths} == {"features.parquet", "features.tsv", "features.json"}
    back = pd.read_parquet(tmp_path / "features.parquet")
    pd.testing.assert_frame_equal(back, table)
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    paths = write_features(table, tmp_path / "big", tsv_max_rows=3)
    assert "features.tsv" not in {p.name for p in paths}


def test_bad_inputs():
    long = _long_outputs()
    with pytest.raises(BadInputError, match="missing"):
        build_features(long.drop(columns="measure"), _participants())
    bad = long.copy()
    bad.loc[0, "measure"] = "alff"
    with pytest.raises(BadInputError, match="unknown measure"):
        build_features(bad, _participants())
    bad = long.copy().astype({"value": object})
    bad.loc[0, "value"] = "high"
    with pytest.raises(BadInputError, match="non-numeric value 'high'"):
        build_features(bad, _participants())
    with pytest.raises(BadInputError, match="duplicated"):
        build_features(pd.concat([long, long.iloc[:1]]), _participants())
    with pytest.raises(BadInputError, match="not in participants"):
        build_features(long, _participants().iloc[:1])


def test_runs_of_two_acquisitions_stay_apart():
    """The reader gives a run with other entities than run- its own task (``rest_acq-b``)."""
    long = _long_outputs()
    other = long[long["task"] == "rest"].assign(task="rest_acq-b")
    other.loc[other["measure"] == "pearsoncorrelation", "value"] += 10
    table = build_features(pd.concat([long, other], ignore_index=True), _participants())
    fc = table[table["measure"] == "pearsoncorrelation"].set_index(["participant_id", "session",
                                                                    "task"])
    assert fc.loc[("sub-01", "pre", "rest"), "value"] == pytest.approx(0.15)
    assert fc.loc[("sub-01", "pre", "rest_acq-b"), "value"] == pytest.approx(10.15)
    assert (fc["n_runs"] <= 2).all()  # two runs each, never the four of both acquisitions
    wide = wide_features(table, measures=["pearsoncorrelation"])
    assert list(wide.columns) == [feature_key("pearsoncorrelation", "rest", "amygdala_L__dacc"),
                                  feature_key("pearsoncorrelation", "rest_acq-b", "amygdala_L__dacc")]
    assert split_feature_key(wide.columns[1]) == ("pearsoncorrelation", "rest_acq-b",
                                                  "amygdala_L__dacc")
