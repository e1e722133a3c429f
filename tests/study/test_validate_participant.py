"""``validate`` sees what the participant level would fail on, through the same functions.

Each test breaks one file of a small clean study and checks the validator's one-line message
naming that file; where the participant level reads the file the same way, its failure message is
checked to agree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.study.conftest import SPACE
from tests.study.test_validate import deriv_func, make_clean_study
from theramark.cli import main
from theramark.study import discover_runs, validate_study

REST = f"sub-01_ses-pre_task-rest_space-{SPACE}_res-4"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """Two participants, sessions pre and post, a rest and an MID run each: no problem."""
    return make_clean_study(tmp_path / "study")


def _rois_config(tmp_path: Path) -> dict:
    """Two regions inside the tiny study's 6 × 7 × 5 grid of 4 mm voxels."""
    table = tmp_path / "rois.tsv"
    pd.DataFrame({"name": ["a", "b"], "x": [8.0, 12.0], "y": [12.0, 12.0], "z": [8.0, 8.0]}).to_csv(
        table, sep="\t", index=False)
    return {"rois": {"atlas": {"table": str(table)}}}


def _rewrite_bold(path: Path, change) -> None:
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    change(data)
    nib.Nifti1Image(data, img.affine, img.header).to_filename(path)


def _single_line(table: pd.DataFrame) -> None:
    assert not table.message.str.contains("\n").any()
    assert not table.path.str.contains("\n").any()


def test_clean_study_passes_deep(study: Path, tmp_path: Path):
    table = validate_study(study, deep=True, config=_rois_config(tmp_path))
    assert table.empty, table.to_dict("records")


@pytest.mark.parametrize("volume_only", [False, True])
def test_deep_finds_nan_voxels_and_volumes(study: Path, tmp_path: Path, volume_only: bool):
    bold = deriv_func(study) / f"{REST}_desc-preproc_bold.nii.gz"

    def spoil(data):
        if volume_only:
            data[..., 7] = np.nan
        else:
            data[2, 3, 1, 4:6] = np.nan

    _rewrite_bold(bold, spoil)
    assert validate_study(study, config=_rois_config(tmp_path)).empty  # headers are fine
    table = validate_study(study, deep=True, config=_rois_config(tmp_path))
    assert list(table.path) == [str(bold)]
    if volume_only:
        assert table.message[0] == ("210 in-mask voxel(s) contain NaN or infinite values, in 1 of 30 "
                                    "volumes (indices from 0: 7); 1 volume(s) are NaN or infinite "
                                    "throughout")
    else:
        assert table.message[0] == ("1 in-mask voxel(s) contain NaN or infinite values, in 2 of 30 "
                                    "volumes (indices from 0: 4, 5)")


def test_constant_bold_is_named_by_validate_and_by_the_participant_level(study: Path,
                                                                         tmp_path: Path):
    from theramark.imaging import participant

    bold = deriv_func(study) / f"{REST}_desc-preproc_bold.nii.gz"
    _rewrite_bold(bold, lambda data: data.__setitem__(Ellipsis, 100.0))
    config = _rois_config(tmp_path)
    table = validate_study(study, deep=True, config=config)
    assert list(table.path) == [str(bold)]
    assert table.message[0] == ("every in-mask voxel is constant over time (30 volumes, 210 voxels): "
                                "no signal to analyse")
    run = next(r for r in discover_runs(study) if r.bold == bold)
    row = participant.process_run(run, tmp_path / "out", participant.settings_from_config(config))
    assert row["status"] == "failed"
    assert row["message"] == f"{bold}: {table.message[0]}"


def test_empty_mask(study: Path, tmp_path: Path):
    mask = deriv_func(study) / f"{REST}_desc-brain_mask.nii.gz"
    img = nib.load(mask)
    nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine).to_filename(mask)
    table = validate_study(study, deep=True, config=_rois_config(tmp_path))
    assert list(table.path) == [str(mask)]
    assert table.message[0] == "the brain mask is empty (no non-zero voxel)"


def test_truncated_mask_is_one_line_naming_the_file(study: Path, tmp_path: Path):
    """nibabel's OSError ("Expected N bytes ...\\n - could the file be damaged?") is one line."""
    folder = deriv_func(study)
    gz = folder / f"{REST}_desc-brain_mask.nii.gz"
    mask = gz.with_name(gz.name.replace(".nii.gz", ".nii"))
    nib.save(nib.load(gz), mask)
    gz.unlink()
    mask.write_bytes(mask.read_bytes()[:-50])
    table = validate_study(study, check_data=False, deep=True, config=_rois_config(tmp_path))
    _single_line(table)
    assert list(table.path) == [str(mask)]
    assert table.message[0].startswith("brain mask is corrupt or truncated (Expected 210 bytes, got 160 "
                                       "bytes from ")
    assert table.message[0].endswith(" - could the file be damaged?)")


def test_confounds_the_strategy_cannot_use(study: Path):
    folder = deriv_func(study)
    path = folder / "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv"
    table = pd.read_csv(path, sep="\t")
    table.loc[12, "trans_y"] = np.nan
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    strings = deriv_func(study, "02") / "sub-02_ses-pre_task-rest_desc-confounds_timeseries.tsv"
    table = pd.read_csv(strings, sep="\t").astype({"csf": object})
    table.loc[3, "csf"] = "oops"
    table.to_csv(strings, sep="\t", index=False, na_rep="n/a")
    motion = deriv_func(study, "02", "post") / "sub-02_ses-post_task-rest_desc-confounds_timeseries.tsv"
    pd.read_csv(motion, sep="\t").drop(columns=["rot_z"]).to_csv(motion, sep="\t", index=False,
                                                                   na_rep="n/a")
    problems = validate_study(study)
    _single_line(problems)
    messages = dict(zip(problems.path, problems.message, strict=True))
    assert messages[str(path)] == ("confound columns have n/a values beyond the first row: "
                                   "trans_y: 1 n/a")
    assert messages[str(strings)] == ("confound columns must be numeric (or n/a): column 'csf' holds "
                                      "non-numeric values")
    assert messages[str(motion)].startswith("the confounds table cannot provide the 'simple' "
                                            "strategy: motion (full): missing column(s) ['rot_z'")


def test_each_run_is_checked_against_its_own_strategy(study: Path):
    """csf is regressed from rest runs (simple strategy), not from task runs (GLM: motion only)."""
    for task in ("rest", "mid"):
        path = deriv_func(study) / f"sub-01_ses-pre_task-{task}_desc-confounds_timeseries.tsv"
        pd.read_csv(path, sep="\t").drop(columns=["csf"]).to_csv(path, sep="\t", index=False,
                                                                   na_rep="n/a")
    table = validate_study(study)
    assert list(table.path) == [str(deriv_func(study) /
                                     "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv")]
    assert "wm_csf (basic): missing column(s) ['csf']" in table.message[0]
    config = {"denoise": {"strategy": ["motion", "high_pass"]}}
    assert validate_study(study, config=config).empty


def test_missing_motion_and_fd_fail_qc(study: Path):
    path = deriv_func(study) / "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv"
    table = pd.read_csv(path, sep="\t")
    table.drop(columns=["framewise_displacement", "trans_x"]).to_csv(path, sep="\t", index=False,
                                                                      na_rep="n/a")
    problems = validate_study(study, config={"denoise": {"strategy": ["high_pass"]}})
    assert list(problems.path) == [str(path)]
    assert problems.message[0] == "neither framewise_displacement nor the motion parameters ['trans_x']"


def test_nii_beside_nii_gz_is_a_collision(study: Path):
    folder = deriv_func(study)
    gz = folder / f"{REST}_desc-preproc_bold.nii.gz"
    plain = gz.with_name(gz.name.replace(".nii.gz", ".nii"))
    nib.save(nib.load(gz), plain)
    table = validate_study(study)
    errors = table[table.severity == "error"]
    assert len(errors) == 1
    assert errors.path[0] in (str(gz), str(plain))
    other = str(plain) if errors.path[0] == str(gz) else str(gz)
    assert errors.message[0] == (f"would write the same outputs as {other}: both name the same run; "
                                 "keep one of them")


def test_acq_copy_is_not_a_collision(study: Path):
    for folder in (deriv_func(study), study / "sub-01" / "ses-pre" / "func"):
        for path in folder.glob("sub-01_ses-pre_task-rest_*"):
            shutil.copyfile(path, path.with_name(path.name.replace("task-rest_", "task-rest_acq-b_")))
    assert validate_study(study).empty


def test_participants_without_group_or_site(study: Path, capsys):
    path = study / "participants.tsv"
    path.write_text("participant_id\tgroup\tsite\nsub-01\tn/a\tA\nsub-02\tCBT\t\n")
    table = validate_study(study)
    _single_line(table)
    errors = table[table.severity == "error"]
    assert list(errors.path) == [str(path)] * 2
    assert set(errors.message) == {
        "column 'group' is n/a or empty on line(s) 2 (sub-01): every participant needs one ([study] "
        "group_column in study.toml names the column)",
        "column 'site' is n/a or empty on line(s) 3 (sub-02): every participant needs one ([study] "
        "site_column in study.toml names the column)"}
    assert main(["validate", str(study)]) == 2
    config = study / "study.toml"
    config.write_text('[study]\ngroup_column = "arm"\nsite_column = "scanner"\n')
    path.write_text("participant_id\tgroup\tarm\tscanner\nsub-01\tn/a\tCBT\tA\nsub-02\tCBT\tn/a\tB\n")
    capsys.readouterr()
    assert main(["validate", str(study), "--config", str(config)]) == 2
    out = capsys.readouterr().out
    assert "participants.tsv: column 'arm' is n/a or empty on line(s) 3 (sub-02)" in out
    assert "'group'" not in out


def test_trailing_tab_in_participants_is_one_message(study: Path):
    path = study / "participants.tsv"
    path.write_text("participant_id\tgroup\nsub-01\tCBT\t\nsub-02\tCBT\t\n")
    table = validate_study(study)
    assert list(table.path) == [str(path)]
    assert table.message[0] == ("line 2 has 3 fields, the header has 2 (a trailing tab?); 1 other "
                                "line(s) differ from the header too: 3")


@pytest.mark.parametrize("kind", ["phenotype", "events"])
def test_row_length_of_other_tables(study: Path, kind: str):
    if kind == "phenotype":
        path = study / "phenotype" / "bdi.tsv"
        path.parent.mkdir()
        path.write_text("participant_id\tbdi_total\nsub-01\t12\nsub-02\n")
        expected = "line 3 has 1 fields, the header has 2"
    else:
        path = study / "sub-02" / "ses-post" / "func" / "sub-02_ses-post_task-mid_events.tsv"
        path.write_text("onset\tduration\ttrial_type\n2\t2\tgain_anticipation\t\n")
        expected = "line 2 has 4 fields, the header has 3 (a trailing tab?)"
    table = validate_study(study)
    assert list(table.path) == [str(path)]
    assert table.message[0] == expected


def test_near_miss_mask_and_confounds_names(study: Path):
    folder = deriv_func(study)
    mask = folder / f"{REST}_desc-brain_mask.nii.gz"
    mask.rename(folder / f"{REST}_label-brain_mask.nii.gz")
    confounds = folder / "sub-01_ses-pre_task-mid_desc-confounds_timeseries.tsv"
    confounds.rename(folder / "sub-01_ses-pre_task-mid_timeseries.tsv")
    table = validate_study(study)
    messages = dict(zip(table.path, table.message, strict=True))
    assert messages[str(folder / f"{REST}_desc-preproc_bold.nii.gz")] == (
        f"no brain mask (desc-brain_mask) beside the BOLD; found {REST}_label-brain_mask.nii.gz: did "
        f"you mean {REST}_desc-brain_mask.nii.gz (fMRIPrep's name)?")
    mid = f"sub-01_ses-pre_task-mid_space-{SPACE}_res-4_desc-preproc_bold.nii.gz"
    assert messages[str(folder / mid)] == (
        "no confounds table (desc-confounds_timeseries.tsv); found sub-01_ses-pre_task-mid_timeseries"
        ".tsv: did you mean sub-01_ses-pre_task-mid_desc-confounds_timeseries.tsv (fMRIPrep's name)?")


def test_near_miss_bold_name(study: Path):
    folder = deriv_func(study, "02", "post")
    for path in folder.glob(f"sub-02_ses-post_task-rest_space-{SPACE}_res-4_desc-preproc_bold.nii.gz"):
        path.rename(path.with_name(path.name.replace("_desc-preproc", "")))
    table = validate_study(study)
    wrong = folder / f"sub-02_ses-post_task-rest_space-{SPACE}_res-4_bold.nii.gz"
    row = table[table.path == str(wrong)]
    assert list(row.severity) == ["warning"]
    assert row.message.iloc[0] == (
        "not read: the participant level reads preprocessed BOLD named *_desc-preproc_bold.nii[.gz]; "
        f"did you mean sub-02_ses-post_task-rest_space-{SPACE}_res-4_desc-preproc_bold.nii.gz?")


def test_wrong_space_points_to_the_config_key(study: Path, capsys):
    for path in (study / "derivatives").rglob(f"*space-{SPACE}*"):
        path.rename(path.with_name(path.name.replace(f"space-{SPACE}", "space-T1w")))
    table = validate_study(study)
    assert list(table.message) == [
        f"no desc-preproc_bold in space {SPACE} ([participant] space in study.toml); found "
        "space-T1w: 8 run(s): to use them, set space = \"T1w\" in the [participant] table of "
        "study.toml"]
    assert not table.message.str.contains("--space").any()
    config = study / "study.toml"
    config.write_text('[participant]\nspace = "T1w"\n')
    assert main(["validate", str(study), "--config", str(config)]) == 0
    assert "No problems found" in capsys.readouterr().out


def test_run_only_in_another_space_is_a_warning(study: Path):
    folder = deriv_func(study, "02", "post")
    for path in folder.glob(f"sub-02_ses-post_task-mid_space-{SPACE}*"):
        path.rename(path.with_name(path.name.replace(f"space-{SPACE}", "space-T1w")))
    table = validate_study(study)
    moved = folder / "sub-02_ses-post_task-mid_space-T1w_res-4_desc-preproc_bold.nii.gz"
    assert list(table.path) == [str(moved)]
    assert list(table.severity) == ["warning"]
    assert table.message[0] == (f"only in space-T1w: the participant level reads space {SPACE} "
                                "([participant] space in study.toml) and skips this run")


def test_invalid_json_sidecar_is_reported_not_raised(study: Path):
    sidecar = study / "task-rest_bold.json"
    sidecar.write_text("{not json")
    table = validate_study(study)
    assert list(table.path) == [str(sidecar)]
    assert table.message[0].startswith("not valid JSON")


def test_listing_is_one_line_per_problem_and_the_tsv_has_one_line_cells(study: Path,
                                                                      tmp_path: Path, capsys):
    folder = deriv_func(study)
    path = folder / "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv"
    pd.read_csv(path, sep="\t").drop(columns=["rot_z", "csf"]).to_csv(path, sep="\t", index=False,
                                                                       na_rep="n/a")
    output = tmp_path / "problems.tsv"
    assert main(["validate", str(study), "-o", str(output)]) == 2
    lines = capsys.readouterr().out.splitlines()
    rel = path.relative_to(study)
    assert [line for line in lines if line.startswith("ERROR")] == [
        f"ERROR    {rel}: the confounds table cannot provide the 'simple' strategy: motion (full): "
        "missing column(s) ['rot_z']",
        f"ERROR    {rel}: the confounds table cannot provide the 'simple' strategy: wm_csf (basic): "
        "missing column(s) ['csf']"]
    written = pd.read_csv(output, sep="\t")
    assert len(written) == 2 and len(output.read_text().splitlines()) == 3


def test_participant_failures_are_validator_errors(study: Path, tmp_path: Path):
    """Every run the participant level fails on, deep validation reports, naming the same file."""
    from theramark.imaging import participant

    folder = deriv_func(study)
    _rewrite_bold(folder / f"{REST}_desc-preproc_bold.nii.gz",
                  lambda data: data.__setitem__((1, 1, 1, 3), np.inf))
    confounds = deriv_func(study, "02") / "sub-02_ses-pre_task-rest_desc-confounds_timeseries.tsv"
    pd.read_csv(confounds, sep="\t").drop(columns=["white_matter"]).to_csv(
        confounds, sep="\t", index=False, na_rep="n/a")
    events = study / "sub-02" / "ses-post" / "func" / "sub-02_ses-post_task-mid_events.tsv"
    events.write_text("onset\tduration\ttrial_type\n2\tn/a\tgain_anticipation\n")
    config = {**_rois_config(tmp_path), "qc": {"min_minutes_kept": None},
              "connectivity": {"measures": ["pearsoncorrelation"]}}
    table = validate_study(study, deep=True, config=config)
    settings = participant.settings_from_config(config)
    failed = {}
    for run in discover_runs(study):
        row = participant.process_run(run, tmp_path / "out", settings)
        if row["status"] == "failed":
            failed[str(run.bold)] = row["message"]
    assert len(failed) == 3 and len(table) == 3
    for message in failed.values():
        named = [path for path in table.path if path in message]
        assert len(named) == 1, (message, list(table.path))
        problem = table.message[table.path == named[0]].iloc[0]
        assert problem.split(":")[0] in message


def test_format_problems_keeps_paths_outside_the_root(tmp_path: Path):
    from theramark.study.validate import format_problems

    table = pd.DataFrame({"severity": ["error", "warning"],
                          "path": [str(tmp_path), "sub-01"], "message": ["a", "b"]})
    assert format_problems(table, root=tmp_path).splitlines()[:2] == [
        f"ERROR    {tmp_path}: a", "WARNING  sub-01: b"]
    assert format_problems(table.iloc[:0]) == "No problems found."


def test_events_without_the_conditions_of_the_contrasts(study: Path):
    events = study / "sub-01" / "ses-post" / "func" / "sub-01_ses-post_task-mid_events.tsv"
    pd.DataFrame({"onset": [2.0, 10.0], "duration": 2.0,
                  "trial_type": ["gain_anticipation", "neutral_anticipation"]}).to_csv(
        events, sep="\t", index=False)
    table = validate_study(study)
    assert list(table.path) == [str(events)]
    assert table.message[0].startswith("contrast 'loss_anticipation - neutral_anticipation' names "
                                       "condition(s) loss_anticipation that the events do not have")
    config = {"glm": {"contrasts": {"mid": ["gain_anticipation - neutral_anticipation"]}}}
    assert validate_study(study, config=config).empty


def test_truncated_bold_read_deep_is_named_once(study: Path, tmp_path: Path):
    folder = deriv_func(study)
    gz = folder / f"{REST}_desc-preproc_bold.nii.gz"
    bold = gz.with_name(gz.name.replace(".nii.gz", ".nii"))
    nib.save(nib.load(gz), bold)
    gz.unlink()
    bold.write_bytes(bold.read_bytes()[:-5000])
    table = validate_study(study, deep=True, config=_rois_config(tmp_path))
    assert list(table.path) == [str(bold)]
    assert table.message[0].startswith("file is truncated (expected 30 volumes of (6, 7, 5), data ends "
                                       "inside volume ")


def test_one_line():
    from theramark.errors import BadInputError, one_line

    assert one_line(BadInputError("x.tsv: bad", ["a: 1 n/a", "b: 2 n/a"])) == "x.tsv: bad: a: 1 n/a; b: 2 n/a"
    assert one_line(OSError("Expected 8 bytes, got 4 bytes from m.nii\n - could the file be damaged?")) == (
        "Expected 8 bytes, got 4 bytes from m.nii - could the file be damaged?")
