"""The study design: declared in [study] or inferred from the dataset, never the simulator's labels."""

from __future__ import annotations

import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.study.design import infer_design, session_order


@pytest.mark.parametrize(("found", "expected"), [
    (["post", "pre", "mid"], ["pre", "mid", "post"]),
    (["3", "1", "10", "2"], ["1", "2", "3", "10"]),
    (["w12", "w0", "w4"], ["w0", "w4", "w12"]),
    (["followup", "baseline", "post"], ["baseline", "post", "followup"]),
    (["ses-post", "ses-pre"], ["pre", "post"]),
])
def test_sessions_are_put_in_visit_order(found, expected):
    assert session_order(found) == expected


@pytest.mark.parametrize(("groups", "reference", "control"), [
    (["CBT", "MBCT", "waitlist", "HC"], "waitlist", "HC"),
    (["cbt", "mbct", "tau", "hc"], "tau", "hc"),
    (["depr_cbt", "depr_nfb", "depr_no_treatment"], "depr_no_treatment", ""),
    (["iCBT", "WL", "healthy_controls"], "WL", "healthy_controls"),
    (["CBT", "IPT"], "", ""),  # two active therapies: no reference is guessed
    (["CBT", "waitlist", "placebo"], "", ""),  # two candidates: none is guessed
])
def test_roles_are_inferred_from_group_names(groups, reference, control):
    design = infer_design(pd.DataFrame({"group": groups}), ["1", "2"])
    assert (design.reference_group, design.control_group) == (reference, control)
    assert design.groups == groups and (design.baseline, design.endpoint) == ("1", "2")
    assert design.arms == [g for g in groups if g not in (reference, control)]
    assert design.sources["reference_group"] != "config"


def test_declared_values_win_and_are_checked():
    participants = pd.DataFrame({"arm": ["A", "B", "C"]})
    design = infer_design(participants, ["pre", "post", "fu"],
                          {"group_column": "arm", "groups": ["C", "B", "A"], "reference_group": "C",
                           "baseline": "pre", "endpoint": "post"})
    assert design.groups == ["C", "B", "A"] and design.reference_group == "C"
    assert (design.baseline, design.endpoint) == ("pre", "post") and design.sessions[-1] == "fu"
    assert design.sources["reference_group"] == "config"
    with pytest.raises(BadInputError, match=r"reference_group = 'waitlist' is not a group.*'A'"):
        infer_design(participants, ["pre"], {"group_column": "arm", "reference_group": "waitlist"})
    with pytest.raises(BadInputError, match=r"endpoint = 'post' is not a session"):
        infer_design(participants, ["1", "2"], {"group_column": "arm", "endpoint": "post"})
    with pytest.raises(BadInputError, match="leaves out session.*'fu'"):
        infer_design(participants, ["pre", "post", "fu"], {"sessions": ["pre", "post"]})
    with pytest.raises(BadInputError, match="baseline and endpoint are both"):
        infer_design(participants, ["pre", "post"], {"baseline": "pre", "endpoint": "pre"})


def test_a_single_session_has_no_change():
    design = infer_design(pd.DataFrame({"group": ["a"]}), ["pre"])
    assert design.sessions == ["pre"] and design.baseline == design.endpoint == ""


def test_tables_are_put_in_the_study_order():
    from theramark.study.design import in_study_order

    table = pd.DataFrame({"group": ["HC", "CBT", "other", "CBT"],
                          "session": ["post", "post", "pre", "pre"], "n": [1, 2, 3, 4]})
    ordered = in_study_order(table, {"group": ["CBT", "HC"], "session": ["pre", "post"],
                                     "absent": ["x"]})
    assert ordered["n"].tolist() == [4, 2, 1, 3]  # unknown labels last, stable
    assert in_study_order(table, {"group": []}) is table
