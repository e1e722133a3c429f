"""Worked cases from the published scoring rules, per instrument, plus input handling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.scales.helpers import one_row, rows
from theramark.errors import BadInputError
from theramark.scales import score

NA = np.nan


def total_of(ident, answers, **kwargs):
    return score(ident, one_row(ident, answers), **kwargs).iloc[0]


# ---------------------------------------------------------------- worked cases, one per instrument
def test_hamd17_maximum_bands_and_no_proration():
    top = [4, 4, 4, 2, 2, 2, 4, 4, 4, 4, 4, 2, 2, 2, 4, 2, 2]
    assert total_of("hamd17", top)["total"] == 52
    edges = {7: "no depression", 8: "mild", 16: "mild", 17: "moderate", 23: "moderate",
             24: "severe", 36: "severe"}  # Zimmerman et al. 2013
    answers = []
    for target in edges:
        row, left = [0] * 17, target
        for j in [0, 1, 2, 6, 7, 8, 9, 10, 14]:  # fill 0-4 items first
            take = min(4, left)
            row[j], left = take, left - take
        answers.append(row)
    table = rows("hamd17", answers)
    result = score("hamd17", table)
    assert list(result["total"]) == list(edges)
    assert list(result["severity"]) == list(edges.values())
    # one missing item is prorated over the answered items' range (item 1 spans 0-4, the rest 48)
    missing_one = total_of("hamd17", [NA] + [1] * 16)
    assert missing_one["total"] == pytest.approx(16 * 52 / 48) and missing_one["prorated"]
    missing_two = total_of("hamd17", [NA, NA] + [1] * 15)
    assert np.isnan(missing_two["total"]) and not missing_two["scored"]
    assert "not scored (at most 1 may be missing)" in missing_two["flags"]
    strict = total_of("hamd17", [NA] + [1] * 16, max_missing=0)
    assert np.isnan(strict["total"])


def test_madrs_band_edges():
    totals = [6, 7, 19, 20, 34, 35, 60]
    answers = [[min(6, max(0, t - 6 * j)) for j in range(10)] for t in totals]
    result = score("madrs", rows("madrs", answers))
    assert list(result["total"]) == totals
    assert list(result["severity"]) == ["normal", "mild", "mild", "moderate", "moderate",
                                        "severe", "severe"]


def test_bdi2_band_edges():
    totals = [13, 14, 19, 20, 28, 29, 63]
    answers = [[min(3, max(0, t - 3 * j)) for j in range(21)] for t in totals]
    result = score("bdi2", rows("bdi2", answers))
    assert list(result["total"]) == totals
    assert list(result["severity"]) == ["minimal", "mild", "mild", "moderate", "moderate",
                                        "severe", "severe"]


def test_phq9_sum_bands_and_proration_at_and_beyond_the_limit():
    case = total_of("phq9", [1, 2, 3, 0, 1, 2, 3, 0, 1])
    assert case["total"] == 13 and case["severity"] == "moderate" and not case["prorated"]
    one = total_of("phq9", [NA, 2, 3, 0, 1, 2, 3, 0, 1])  # 12 over 8 items
    assert one["total"] == pytest.approx(12 * 9 / 8) and one["prorated"]
    two = total_of("phq9", [NA, NA, 3, 0, 1, 2, 3, 0, 1])  # 10 over 7 items, the limit
    assert two["total"] == pytest.approx(10 * 9 / 7) and two["prorated"]
    three = total_of("phq9", [NA, NA, NA, 0, 1, 2, 3, 0, 1])
    assert np.isnan(three["total"]) and three["n_missing"] == 3 and three["severity"] is None
    assert three["missing_items"] == "phq9_1, phq9_2, phq9_3"
    edges = score("phq9", rows("phq9", [[min(3, max(0, t - 3 * j)) for j in range(9)]
                                        for t in (4, 5, 9, 10, 14, 15, 19, 20)]))
    assert list(edges["severity"]) == ["minimal", "mild", "mild", "moderate", "moderate",
                                       "moderately severe", "moderately severe", "severe"]


def test_qids_sr16_takes_the_highest_item_of_each_domain():
    answers = [1, 3, 0, 2, 2, 0, 1, 2, 0, 1, 1, 1, 1, 1, 0, 3]
    case = total_of("qids_sr16", answers)
    # sleep 3 + mood 2 + appetite/weight 2 + five single items 5 + psychomotor 3
    assert case["total"] == 15 and case["severity"] == "moderate"
    assert sum(answers) == 19  # a plain sum would be wrong
    partial = total_of("qids_sr16", [NA, 3, NA, NA] + answers[4:])
    assert partial["total"] == 15 and partial["prorated"]
    empty_domain = total_of("qids_sr16", [NA] * 4 + answers[4:])
    assert np.isnan(empty_domain["total"])


def test_cesd_reverse_keys_and_four_missing_rule():
    assert total_of("cesd", [0] * 20)["total"] == 12  # items 4, 8, 12, 16 reversed to 3
    assert total_of("cesd", [3] * 20)["total"] == 48
    four = total_of("cesd", [NA] * 4 + [1] * 16)  # items 1-4 missing, the limit
    # answered: items 5-20; items 8, 12, 16 reversed (3 - 1 = 2): 3 * 2 + 13 * 1 = 19
    assert four["total"] == pytest.approx(19 * 20 / 16)
    five = total_of("cesd", [NA] * 5 + [1] * 15)
    assert np.isnan(five["total"])


def test_zung_reverse_keys_and_index_bands():
    case = total_of("zung_sds", [1] * 20)
    assert case["total"] == 50 and case["index"] == 62.5 and case["severity"] == "moderate"
    low = total_of("zung_sds", [1 if i + 1 not in (2, 5, 6, 11, 12, 14, 16, 17, 18, 20) else 4
                                for i in range(20)])
    assert low["total"] == 20 and low["severity"] == "normal"


def test_hama_subscales():
    case = total_of("hama", [4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 4])
    assert (case["psychic"], case["somatic"], case["total"]) == (28, 7, 35)
    assert case["severity"] == "severe"


def test_gds15_reverse_keyed_no_answers():
    assert total_of("gds15", [0] * 15)["total"] == 5
    assert total_of("gds15", [0] * 15)["severity"] == "mild"
    assert total_of("gds15", [1] * 15)["total"] == 10


def test_shaps_original_and_continuous():
    answers = [1, 2, 3, 4] * 3 + [1, 2]
    original = total_of("shaps", answers)
    assert original["total"] == 6 and original["severity"] == "abnormal"
    assert total_of("shaps", [1, 2] * 7)["severity"] == "normal"
    assert total_of("shaps", [3, 3] + [2] * 12)["total"] == 2
    assert total_of("shaps", [3, 3] + [2] * 12)["severity"] == "normal"   # abnormal is > 2
    assert total_of("shaps", [3, 3, 4] + [2] * 11)["severity"] == "abnormal"
    continuous = total_of("shaps", answers, scoring="continuous")
    assert continuous["total"] == 33 and "severity" not in continuous


def test_teps_subscales_and_reverse_item_13():
    case = total_of("teps", [6] * 18)
    assert (case["anticipatory"], case["consummatory"], case["total"]) == (55, 48, 103)
    answers = [1] * 18
    answers[10] = 6  # item 11 is anticipatory; item 13 (reversed) scores 7 - 1 = 6
    case = total_of("teps", answers)
    assert (case["anticipatory"], case["consummatory"]) == (8 + 6 + 6, 8)


def test_dars_domains():
    case = total_of("dars", [i % 5 for i in range(1, 18)])
    assert (case["hobbies"], case["food_drink"], case["social"], case["sensory"]) == (10, 10, 6, 7)
    assert case["total"] == 33


def test_ctq_sf_subscales_reverse_keys_minimization_and_thresholds():
    case = total_of("ctq_sf", [1] * 28)
    assert case["emotional_abuse"] == 5 and case["emotional_neglect"] == 25
    assert case["physical_neglect"] == 13 and case["total"] == 18 + 7 * 5
    assert case["emotional_neglect_severity"] == "severe to extreme"
    assert case["physical_neglect_severity"] == "severe to extreme"
    assert case["minimization_denial"] == 0
    answers = [1] * 28
    answers[9] = answers[15] = 5
    assert total_of("ctq_sf", answers)["minimization_denial"] == 2
    # emotional abuse at its thresholds 8 | 9, 12 | 13, 15 | 16
    table = []
    for target in (8, 9, 12, 13, 15, 16):
        row, left = [1] * 28, target - 5
        for item in (3, 8, 14, 18, 25):
            add = min(4, left)
            row[item - 1], left = 1 + add, left - add
        table.append(row)
    result = score("ctq_sf", rows("ctq_sf", table))
    assert list(result["emotional_abuse"]) == [8, 9, 12, 13, 15, 16]
    assert list(result["emotional_abuse_severity"]) == [
        "none to minimal", "low to moderate", "low to moderate", "moderate to severe",
        "moderate to severe", "severe to extreme"]


def test_pss10_reverse_keys():
    assert total_of("pss10", [4] * 10)["total"] == 24
    assert total_of("pss10", [0] * 10)["total"] == 16


def test_mspss_means_and_band_edges():
    answers = [7, 7, 1, 1, 7, 4, 4, 1, 4, 7, 1, 4]
    case = total_of("mspss", answers)
    assert (case["significant_other"], case["family"], case["friends"]) == (7, 1, 4)
    assert case["total"] == 4 and case["severity"] == "moderate"
    assert total_of("mspss", [5] * 12)["severity"] == "moderate"
    assert total_of("mspss", [6] + [5] * 11)["severity"] == "high"
    assert total_of("mspss", [3] * 12)["severity"] == "moderate"
    assert total_of("mspss", [2] * 12)["severity"] == "low"


def test_ucla_short_and_long():
    assert total_of("ucla3", [1, 2, 3])["severity"] == "lonely"
    assert total_of("ucla3", [1, 2, 2])["severity"] == "not lonely"
    assert total_of("ucla20", [1] * 20)["total"] == 11 + 9 * 4


def test_bfi10_trait_means_and_no_total():
    case = total_of("bfi_short", [5, 4, 2, 1, 3, 4, 2, 5, 5, 1])
    assert case["extraversion"] == 2.5 and case["agreeableness"] == 4
    assert case["conscientiousness"] == 4.5 and case["neuroticism"] == 5 and case["openness"] == 2
    assert np.isnan(case["total"]) and case["scored"]


def test_rrs_subscales():
    answers = [4 if i in (5, 10, 13, 15, 16) else 1 for i in range(1, 23)]
    case = total_of("rrs", answers)
    assert (case["brooding"], case["reflection"], case["depression"], case["total"]) == (20, 5, 12, 37)


# ---------------------------------------------------------------- engine behaviour
def test_matches_a_plain_per_row_reference_on_random_data():
    """Vectorized engine vs an independent row-by-row implementation of the CES-D rules."""
    rng = np.random.default_rng(0)
    answers = rng.integers(0, 4, size=(300, 20)).astype(float)
    answers[rng.random(answers.shape) < 0.1] = np.nan
    result = score("cesd", rows("cesd", answers.tolist()))
    expected = []
    for row in answers:
        keyed = [3 - v if i + 1 in (4, 8, 12, 16) else v for i, v in enumerate(row)]
        answered = [v for v in keyed if not np.isnan(v)]
        expected.append(sum(answered) * 20 / len(answered) if 20 - len(answered) <= 4 else np.nan)
    np.testing.assert_allclose(result["total"], expected)


def test_bad_answers_raise_one_error_naming_everything():
    table = rows("phq9", [[1] * 9, [2] * 9])
    table["phq9_4"] = table["phq9_4"].astype(object)
    table.loc[0, "phq9_4"] = 7
    table.loc[1, "phq9_4"] = "often"
    table.loc[1, "phq9_9"] = 1.5
    table.loc[1, "session"] = "ses-post"
    with pytest.raises(BadInputError) as info:
        score("phq9", table)
    text = str(info.value)
    assert "3 answer(s) not allowed" in text
    assert ("participant sub-00, session pre, item phq9_4: value '7' not allowed "
            "(allowed: integers 0-3)") in text
    assert "sub-01, session post, item phq9_4: value 'often'" in text
    assert "item phq9_9: value '1.5'" in text


def test_flag_mode_scores_the_rest():
    table = rows("phq9", [[1] * 9, [2] * 9])
    table.loc[0, "phq9_4"] = 9
    result = score("phq9", table, errors="flag")
    assert result.loc[0, "total"] == pytest.approx(8 * 9 / 8) and result.loc[0, "prorated"]
    assert result.loc[0, "n_invalid"] == 1 and result.loc[0, "invalid_items"] == "phq9_4=9"
    assert "invalid" in result.loc[0, "flags"] and result.loc[1, "flags"] == ""
    assert result.loc[1, "total"] == 18


def test_absent_item_column_and_errors_argument():
    table = rows("phq9", [[1] * 9]).drop(columns="phq9_9")
    with pytest.raises(BadInputError, match="phq9_9"):
        score("phq9", table)
    flagged = score("phq9", table, errors="flag")
    assert flagged.loc[0, "prorated"] and flagged.loc[0, "missing_items"] == "phq9_9"
    with pytest.raises(BadInputError, match="no item column of phq9"):
        score("phq9", pd.DataFrame({"participant_id": ["sub-1"], "x": [1]}))
    with pytest.raises(BadInputError, match="errors must be"):
        score("phq9", rows("phq9", [[1] * 9]), errors="ignore")


def test_items_beyond_the_instrument_are_an_error():
    table = one_row("hamd17", [1] * 21)  # a HAMD-21 table
    with pytest.raises(BadInputError, match="hamd17_18, hamd17_19, hamd17_20, hamd17_21 look like items"):
        score("hamd17", table, errors="flag")


def test_duplicate_rows_and_missing_ids_are_errors():
    table = pd.concat([rows("phq9", [[1] * 9])] * 2)
    with pytest.raises(BadInputError, match="more than once"):
        score("phq9", table)
    with pytest.raises(BadInputError, match="participant_id"):
        score("phq9", rows("phq9", [[1] * 9]).drop(columns="participant_id"))


def test_long_format_and_item_map_give_the_same_scores():
    wide = rows("pss10", [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4], [4] * 10])
    long = wide.melt(id_vars=["participant_id", "session"], var_name="item", value_name="value")
    long["item"] = long["item"].str.replace("pss10_", "")  # bare item numbers are accepted
    from_long = score("pss10", long).sort_values("participant_id").reset_index(drop=True)
    from_wide = score("pss10", wide)
    pd.testing.assert_series_equal(from_long["total"], from_wide["total"])
    renamed = wide.rename(columns={f"pss10_{i}": f"PSS{i:02d}" for i in range(1, 11)})
    mapped = score("pss10", renamed, items={f"PSS{i:02d}": f"pss10_{i}" for i in range(1, 11)})
    pd.testing.assert_series_equal(mapped["total"], from_wide["total"])
    with pytest.raises(BadInputError, match="not an item column"):
        score("pss10", renamed, items={"PSS01": "pss10_11"})


def test_session_prefix_is_stripped_and_output_is_tidy():
    table = rows("ucla3", [[1, 2, 3]])
    table["session"] = "ses-post"
    result = score("ucla3", table)
    assert result.loc[0, "session"] == "post"
    assert list(result.columns[:3]) == ["participant_id", "session", "total"]
    assert result.attrs["instrument"] == "ucla3"
