"""The scales group step on a small study folder, and its report section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.report import Report
from theramark.report.build import analysis_sections
from theramark.workflow import group_context, run_analysis


def group_step(ctx):
    """The scales analysis, written, and its report sections drawn from the files."""
    run_analysis(ctx, "scales")
    return analysis_sections(ctx.group_dir, "scales")


def make_study(root, rng):
    pheno = root / "phenotype"
    pheno.mkdir(parents=True)
    ids = [f"sub-{i:02d}" for i in range(1, 9)]
    groups = ["CBT"] * 4 + ["waitlist"] * 4
    pd.DataFrame({"participant_id": ids, "group": groups}).to_csv(root / "participants.tsv", sep="\t",
                                                                   index=False)
    hamd_max = np.array([4, 4, 4, 2, 2, 2, 4, 4, 4, 4, 4, 2, 2, 2, 4, 2, 2])
    records = []
    for i, pid in enumerate(ids):
        for session in ("pre", "post"):
            high = hamd_max if session == "pre" or i >= 4 else np.minimum(hamd_max, 1)
            answers = rng.integers(0, high + 1)
            records.append({"participant_id": pid, "session": f"ses-{session}",
                            **{f"hamd17_{k + 1}": int(v) for k, v in enumerate(answers)}})
    hamd = pd.DataFrame(records)
    hamd.loc[0, "hamd17_3"] = 9  # an invalid answer: flagged, not fatal
    hamd.to_csv(pheno / "hamd17.tsv", sep="\t", index=False, na_rep="n/a")
    pss = pd.DataFrame({"participant_id": [i.removeprefix("sub-") for i in ids], "session": "pre",
                        **{f"pss10_{k}": rng.integers(0, 5, len(ids)) for k in range(1, 11)},
                        "financial_strain": rng.integers(0, 10, len(ids))})
    pss.to_csv(pheno / "questionnaires.tsv", sep="\t", index=False)
    return ids


def test_group_step_scores_writes_and_reports(tmp_path):
    rng = np.random.default_rng(3)
    bids = tmp_path / "bids"
    make_study(bids, rng)
    ctx = group_context(bids, tmp_path / "out", {})
    sections = group_step(ctx)
    folder = ctx.group_dir / "scales"
    for name in ("scores_hamd17.tsv", "scores_pss10.tsv", "outcomes.tsv", "flags.tsv"):
        assert (folder / name).is_file(), name
    assert set(ctx.results["scores"]) == {"hamd17", "pss10"}
    hamd = ctx.results["scores"]["hamd17"]
    assert set(hamd["session"]) == {"pre", "post"} and "group" in hamd.columns
    # the invalid answer is treated as missing and the one-item HAMD-17 proration applies
    assert hamd.loc[0, "n_invalid"] == 1 and hamd.loc[0, "prorated"]
    out = ctx.results["outcomes"]
    assert len(out) == 8 and set(out["group"]) == {"CBT", "waitlist"}
    assert set(ctx.results["outcomes_all"]["instrument"]) == {"hamd17"}  # pss10 is baseline only
    pss = ctx.results["scores"]["pss10"]  # IDs written without sub- still join their group
    assert pss["participant_id"].str.startswith("sub-").all() and pss["group"].notna().all()
    # the CBT arm was simulated with answers capped at 1 after treatment: all respond
    assert out.loc[out["group"] == "CBT", "endpoint_total"].max() <= 17
    flags = pd.read_csv(folder / "flags.tsv", sep="\t")
    assert "hamd17_3=9" in " ".join(flags["flags"])
    assert [s.order for s in sections] == [20]
    html = Report().add(*sections).to_html()
    assert "Scoring flags" in html and "data:image/png;base64" in html
    # pss10 has no problem: an empty flag read back from its TSV is not a problem
    import re

    row = re.search(r"<td>pss10</td>(.*?)</tr>", html, re.S).group(1)
    assert re.findall(r"<td>(\d+)</td>", row)[-1] == "0"


def test_group_step_respects_config_and_empty_study(tmp_path):
    bids = tmp_path / "bids"
    (bids / "phenotype").mkdir(parents=True)
    pd.DataFrame({"participant_id": ["sub-01"]}).to_csv(bids / "participants.tsv", sep="\t",
                                                         index=False)
    ctx = group_context(bids, tmp_path / "out", {"scales": {"errors": "raise"}})
    sections = group_step(ctx)
    assert ctx.results["scores"] == {} and ctx.results["outcomes"].empty
    assert "No questionnaire" in sections[0].to_html()


def test_report_builders_from_result_tables():
    from theramark.report.sections.scales import build_sections
    from theramark.scales import outcomes, rates_by_group
    from theramark.scales.outcomes import trajectory_summary

    scores = pd.DataFrame({"participant_id": ["sub-1", "sub-2"] * 2, "session": ["pre"] * 2 + ["post"] * 2,
                           "total": [20.0, 30.0, 35.0, 32.0], "group": ["CBT", "waitlist"] * 2,
                           "scored": True, "prorated": False, "flags": ""})
    out = outcomes(scores, "dars")  # no response criterion: captions must still render
    flags = pd.DataFrame(columns=["instrument", "participant_id", "session", "flags"])
    sections = build_sections({"dars": scores}, out, flags, "dars",
                              trajectory=trajectory_summary(scores), rates=rates_by_group(out))
    html = sections[0].to_html()
    assert "no criterion" in html and "No missing or invalid answers" in html
    assert sections[0].order == 20


def test_a_study_instrument_is_scored_by_the_group_level(tmp_path):
    """A questionnaire the study defines in code/theramark/instruments/ is found and scored."""
    import json

    rng = np.random.default_rng(5)
    bids = tmp_path / "bids"
    make_study(bids, rng)
    folder = bids / "code" / "theramark" / "instruments"
    folder.mkdir(parents=True)
    (folder / "mood5.json").write_text(json.dumps({
        "schema_version": 1, "id": "mood5", "name": "Our mood checklist (study-specific)",
        "source": "Study protocol.", "construct": "depression", "rater": "self",
        "higher_is_worse": True, "n_items": 5, "values": {"min": 0, "max": 3}, "reverse": [2],
        "total": {"rule": "sum", "max_missing": 0, "missing_source": "Protocol."}}))
    items = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "session": "pre",
                          **{f"mood5_{k}": [1, 2] for k in range(1, 6)}})
    items.to_csv(bids / "phenotype" / "mood5.tsv", sep="\t", index=False)
    ctx = group_context(bids, tmp_path / "out", {})
    run_analysis(ctx, "scales")
    scores = pd.read_csv(tmp_path / "out" / "group" / "scales" / "scores_mood5.tsv", sep="\t")
    assert scores["total"].tolist() == [1 + 2 + 1 + 1 + 1, 2 + 1 + 2 + 2 + 2]  # item 2 reversed
    # a broken definition stops the analysis with the file and key named
    (folder / "mood5.json").write_text(json.dumps({"schema_version": 1, "id": "mood5"}))
    with pytest.raises(BadInputError, match=r"mood5.json: (?s:.*)n_items: required key is missing"):
        run_analysis(group_context(bids, tmp_path / "out", {}), "scales")
