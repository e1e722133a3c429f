"""The one column check every stage uses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.tables import check_columns


def test_present_columns_pass():
    check_columns(pd.DataFrame({"a": [1], "b": [2]}), ["a", "b", "a"], "t.tsv")


def test_message_names_table_every_missing_column_and_close_names():
    table = pd.DataFrame({"participant_id": ["sub-01"], "BDI_total": [3], "session_id": ["pre"]})
    with pytest.raises(BadInputError) as info:
        check_columns(table, ["participant_id", "bdi_total", "session", "zzz"], Path("scores.tsv"))
    message = str(info.value)
    assert message.startswith("scores.tsv: column(s) not found: bdi_total, session, zzz")
    assert "whose columns are participant_id, BDI_total, session_id" in message
    assert info.value.problems == ["'bdi_total': did you mean 'BDI_total'?",
                                   "'session': did you mean 'session_id'?"]


def test_long_tables_are_listed_in_part():
    table = pd.DataFrame({f"c{i}": [0] for i in range(40)})
    with pytest.raises(BadInputError, match=r"c29, \.\.\. \(10 more\)"):
        check_columns(table, ["x"], "wide")
