"""Reshaping per-session columns: the one reshaper of wide tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.study import session_columns_to_long
from theramark.study.participants import check_participants


@pytest.fixture
def wide() -> pd.DataFrame:
    return pd.DataFrame({
        "participant_id": ["sub-01", "sub-02"], "group": ["CBT", "WL"], "age": [30, 41],
        "BDI_ses-pre": [30.0, 25.0], "BDI_ses-post": [12.0, 24.0], "MADRS_ses-pre": [28.0, 20.0],
        "CES-D_1": [20, 30], "CES-D_2": [10, 31],
    })


def test_every_stem_by_default(wide):
    long = session_columns_to_long(wide)
    assert list(long.columns) == ["participant_id", "session", "group", "age", "CES-D_1", "CES-D_2",
                                  "BDI", "MADRS"]
    assert list(long["session"]) == ["pre", "pre", "post", "post"]
    np.testing.assert_array_equal(long["BDI"], [30, 25, 12, 24])
    np.testing.assert_array_equal(long["MADRS"], [28, 20, np.nan, np.nan])  # no post column


def test_selected_measures_and_kept_columns(wide):
    long = session_columns_to_long(wide, ["BDI"], keep=["group"])
    assert list(long.columns) == ["participant_id", "session", "group", "BDI"]
    with pytest.raises(BadInputError, match="no '<measure>_ses-<label>' columns for HAMD"):
        session_columns_to_long(wide, ["BDI", "HAMD"])
    with pytest.raises(BadInputError, match="not found: sex"):
        session_columns_to_long(wide, ["BDI"], keep=["sex"])


def test_explicit_columns_make_a_scores_table(wide):
    scores = session_columns_to_long(wide, columns={"total": {"t1": "CES-D_1", "ses-t2": "CES-D_2"}},
                                     keep=["group"])
    assert list(scores.columns) == ["participant_id", "session", "group", "total"]
    assert list(scores["session"]) == ["t1", "t1", "t2", "t2"]
    np.testing.assert_array_equal(scores["total"], [20, 30, 10, 31])
    with pytest.raises(BadInputError, match="not found: CES-D_3"):
        session_columns_to_long(wide, columns={"total": {"t3": "CES-D_3"}})
    with pytest.raises(BadInputError, match="not both"):
        session_columns_to_long(wide, ["BDI"], columns={"total": {"t1": "CES-D_1"}})


def test_bad_tables(wide):
    with pytest.raises(BadInputError, match="no '<measure>_ses-<label>' columns to reshape"):
        session_columns_to_long(wide[["participant_id", "group"]])
    with pytest.raises(BadInputError, match="not found: participant_id"):
        session_columns_to_long(wide.drop(columns="participant_id"))
    with pytest.raises(BadInputError, match="also participant-level"):
        session_columns_to_long(wide.assign(BDI=1), ["BDI"])
    with pytest.raises(BadInputError, match=r"participants.tsv: column\(s\) not found: participant_id"):
        check_participants(wide.rename(columns={"participant_id": "participant"}))
