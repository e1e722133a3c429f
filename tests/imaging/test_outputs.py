"""The tidy reader of participant-level outputs, the QC/imaging group steps and their report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.imaging.test_participant import CONFIG, COUPLED, make_study
from theramark.context import GroupContext
from theramark.imaging import outputs, participant
from theramark.report import Report
from theramark.report.build import analysis_sections
from theramark.workflow import run_analysis

#: One contrast keeps the report figures (one glass brain per contrast) few and fast.
OUTPUT_CONFIG = {**CONFIG, "glm": {"contrasts": {"mid": ["gain_anticipation - neutral_anticipation"]}}}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("study") / "bids", participants=("01", "02"),
                      n_rest=50, n_task=60, seed=5)
    out = tmp_path_factory.mktemp("out")
    participant.run_participant_level(root, out, config=OUTPUT_CONFIG, n_jobs=1)
    return root, out


def test_tidy_table_follows_the_contract(out_dir):
    _, out = out_dir
    table = outputs.read_participant_outputs(out)
    assert list(table.columns) == ["participant_id", "session", "task", "run", "measure",
                                   "feature", "value"]
    assert set(table["measure"]) == {"qc", "pearsoncorrelation", "partialcorrelation",
                                     "dfcvariability", "activation", "psc"}
    assert set(table["participant_id"]) == {"sub-01", "sub-02"}
    assert set(table["session"]) == {"pre"}
    fc = table[(table["measure"] == "pearsoncorrelation") & (table["participant_id"] == "sub-01")]
    n_rois = 31
    assert len(fc) == n_rois * (n_rois - 1) // 2
    edge = "__".join(sorted(COUPLED))
    assert fc.set_index("feature").loc[edge, "value"] > 1.0
    assert all(a < b for a, b in (f.split("__") for f in fc["feature"]))
    activation = table[table["measure"] == "activation"]
    assert "nacc_L:gain_anticipation-neutral_anticipation" in set(activation["feature"])
    assert set(table.loc[table["measure"] == "qc", "feature"]) >= {"mean_fd", "tsnr", "excluded"}
    assert table["value"].dtype == float


def test_fixed_effects_file_replaces_single_runs(out_dir, tmp_path):
    _, out = out_dir
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    func = copy / "sub-01" / "ses-pre" / "func"
    single = func / "sub-01_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv"
    stats = pd.read_csv(single, sep="\t")
    for index in (1, 2):
        stats.to_csv(func / f"sub-01_ses-pre_task-mid_run-{index}_seg-literature_desc-glm_roistats"
                            ".tsv", sep="\t", index=False)
    table = outputs.read_participant_outputs(copy, measures=("activation",))
    mine = table[table["participant_id"] == "sub-01"]
    assert mine["run"].isna().all()  # only the combination (no run entity) is read


@pytest.mark.slow  # figure rendering (nilearn glass brains) dominates: ~10 s
def test_group_steps_fill_context_and_report(out_dir):
    root, out = out_dir
    ctx = GroupContext(bids_dir=root, out_dir=out, config=OUTPUT_CONFIG,
                       participants=pd.DataFrame({"participant_id": ["sub-01", "sub-02"]}))
    run_analysis(ctx, "qc")
    qc_sections = analysis_sections(ctx.group_dir, "qc")
    assert len(ctx.results["qc"]) == 4 and len(ctx.results["runs"]) == 4
    assert (out / "group" / "qc" / "qc.tsv").is_file()
    assert [s.order for s in qc_sections] == [10]
    run_analysis(ctx, "imaging")
    imaging = analysis_sections(ctx.group_dir, "imaging")
    assert {s.id for s in imaging} == {"imaging-connectivity", "imaging-activation"}
    fc_mean = pd.read_csv(out / "group" / "imaging" / "fc_mean.tsv", sep="\t").set_index(
        "feature")["value"]
    assert np.isclose(fc_mean["__".join(sorted(COUPLED))], fc_mean.max())
    html = Report("t").add(*qc_sections, *imaging).to_html()
    assert html.count("<img") >= 5 and "Runs that failed" not in html


def test_failed_runs_are_listed_in_the_report(out_dir):
    from theramark.report.sections.imaging import _qc_sections

    runs = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "session": ["pre", "pre"],
                         "task": ["rest", "rest"], "run": [None, None], "status": ["ok", "failed"],
                         "message": ["ok", "/x/sub-02_confounds.tsv: n/a in row 31"]})
    html = _qc_sections(outputs.read_qc_table(out_dir[1]), runs, None, {"max_mean_fd": 0.55})[0].to_html()
    assert "Runs that failed" in html and "sub-02_confounds.tsv" in html
