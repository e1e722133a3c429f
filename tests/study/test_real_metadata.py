"""Discovery and validation on real tables and real fMRIPrep confounds (../shared/data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import shared_path
from tests.study.conftest import SPACE, make_study, write_run
from theramark.study import discover_runs, load_participants, session_columns_to_long, validate_study


def test_ds003007_participants_with_na_and_session_columns():
    root = shared_path("data/ds003007_prepost_treatment")
    table = load_participants(root)
    assert len(table) == 29
    assert table["group"].value_counts().to_dict() == {
        "depr_no_treatment": 15, "depr_cbt": 8, "depr_nfb": 6}
    assert table["MADRS_ses-pre"].isna().sum() > 0  # n/a read as missing, not as text
    long = session_columns_to_long(table)
    assert set(long["session"]) == {"pre", "post"} and len(long) == 58
    assert {"BDI", "MADRS", "RRS-brooding", "ECR-anx"} <= set(long.columns)
    cbt = long[long.group == "depr_cbt"].pivot(index="participant_id", columns="session", values="BDI")
    pairs = cbt.dropna()
    # SOURCE.md: CBT pairs with both BDI values n=5, mean 23.0 -> 13.0
    assert len(pairs) == 5
    assert np.isclose(pairs["pre"].mean(), 23.0) and np.isclose(pairs["post"].mean(), 13.0)


def test_other_real_participant_tables_load():
    for folder in ("ds002748_depression_rest", "ds003478_depression_scales", "ds003799_running_cesd"):
        table = load_participants(shared_path(f"data/{folder}"))
        assert table["participant_id"].str.startswith("sub-").all()
        assert not table["participant_id"].duplicated().any()
    scales = load_participants(shared_path("data/ds003478_depression_scales"))
    assert scales["HamD"].dtype.kind == "f"  # 'NaN' and 'n/a' both read as missing


def test_real_fmriprep_confounds_new_and_old_naming(tmp_path: Path):
    new = shared_path("data/fmriprep_confounds/neurocaps_ds000031/"
                      "sub-01_ses-002_task-rest_run-001_desc-confounds_timeseries.tsv")
    old = shared_path("data/fmriprep_confounds/nilearn_test_data/test_desc-confounds_regressors.tsv")
    root = make_study(tmp_path / "study", subjects=("01",), sessions=("pre",), n_volumes=40, t_r=1.2)
    func = root / "derivatives" / "fmriprep" / "sub-01" / "ses-pre" / "func"
    shutil.copyfile(new, func / "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv")
    # a second participant whose fMRIPrep (< 1.2) wrote desc-confounds_regressors.tsv
    paths = write_run(root, "02", "pre", "rest", 30, t_r=1.2)
    paths["confounds"].unlink()
    old_name = paths["confounds"].with_name("sub-02_ses-pre_task-rest_desc-confounds_regressors.tsv")
    shutil.copyfile(old, old_name)
    pd.DataFrame({"participant_id": ["sub-01", "sub-02"]}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    runs = discover_runs(root)
    assert [r.confounds.name for r in runs] == [
        "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv",
        "sub-02_ses-pre_task-rest_desc-confounds_regressors.tsv"]
    assert all(r.t_r == 1.2 for r in runs)
    # the real neurocaps table lacks the motion derivatives and csf the default 'simple' strategy
    # needs (validate says so, as the participant level would fail): use a strategy it supports
    config = {"denoise": {"strategy": ["motion", "high_pass"], "motion": "basic"}}
    assert validate_study(root, config=config).empty
    # the real 40-row table against a 30-volume run is caught and named
    shutil.copyfile(new, old_name)
    table = validate_study(root, config=config)
    assert list(table.message) == ["40 rows but the BOLD has 30 volumes"]
    assert table.path[0].endswith("sub-02_ses-pre_task-rest_desc-confounds_regressors.tsv")
    assert SPACE in runs[0].bold.name
