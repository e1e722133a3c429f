"""Each kind of broken input yields one clear message naming the file (and exit status 2)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.study.conftest import SPACE, make_study, write_run
from theramark.cli import main
from theramark.study import validate_study


def fmriprep_confounds(n: int, seed: int = 0) -> pd.DataFrame:
    """The columns of an fMRIPrep confounds table that the default strategies and QC read."""
    rng = np.random.default_rng(seed)
    columns = {}
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter",
             "global_signal"]
    for name in names:
        x = np.cumsum(rng.normal(scale=0.01, size=n))
        d = np.r_[np.nan, np.diff(x)]
        columns.update({name: x, f"{name}_derivative1": d, f"{name}_power2": x**2,
                        f"{name}_derivative1_power2": d**2})
    columns.update({"framewise_displacement": np.r_[np.nan, rng.uniform(0.02, 0.1, n - 1)],
                    "dvars": np.r_[np.nan, rng.uniform(20, 30, n - 1)],
                    "std_dvars": np.r_[np.nan, rng.uniform(0.8, 1.2, n - 1)]})
    return pd.DataFrame(columns)


def make_clean_study(root: Path) -> Path:
    """The conftest study, with confounds tables that have fMRIPrep's columns (the default
    denoising strategy of rest runs and the GLM's of task runs need them) and MID events with the
    conditions of the default MID contrasts."""
    make_study(root, tasks=("rest", "mid"))
    for i, path in enumerate(sorted(root.rglob("*_desc-confounds_timeseries.tsv"))):
        n = len(pd.read_csv(path, sep="\t"))
        fmriprep_confounds(n, seed=i).to_csv(path, sep="\t", index=False, na_rep="n/a")
    kinds = ["gain_anticipation", "loss_anticipation", "neutral_anticipation", "gain_outcome",
             "neutral_outcome"]
    events = pd.DataFrame({"onset": np.arange(2.0, 50.0, 4.0), "duration": 2.0,
                           "trial_type": np.resize(kinds, 12)})
    for path in root.glob("sub-*/ses-*/func/*_task-mid_events.tsv"):
        events.to_csv(path, sep="\t", index=False)
    return root


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    """The conftest fixture of the same name, with fMRIPrep's confounds columns."""
    return make_clean_study(tmp_path / "study")


def deriv_func(root: Path, sub="01", ses="pre") -> Path:
    return root / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"


def problems_for(root: Path) -> pd.DataFrame:
    table = validate_study(root)
    return table


def test_clean_study_has_no_problem(tiny_study: Path, capsys):
    assert problems_for(tiny_study).empty
    assert main(["validate", str(tiny_study)]) == 0
    assert "No problems found" in capsys.readouterr().out


def test_missing_confounds_and_mask(tiny_study: Path):
    folder = deriv_func(tiny_study)
    (folder / "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv").unlink()
    (folder / f"sub-01_ses-pre_task-mid_space-{SPACE}_res-4_desc-brain_mask.nii.gz").unlink()
    table = problems_for(tiny_study)
    assert (table.severity == "error").sum() == 2
    messages = dict(zip(table.path, table.message, strict=True))
    rest = str(folder / f"sub-01_ses-pre_task-rest_space-{SPACE}_res-4_desc-preproc_bold.nii.gz")
    mid = str(folder / f"sub-01_ses-pre_task-mid_space-{SPACE}_res-4_desc-preproc_bold.nii.gz")
    assert "no confounds table" in messages[rest]
    assert "no brain mask" in messages[mid]


def test_tr_mismatch_says_which_tr_the_run_uses(tiny_study: Path):
    (tiny_study / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.5,
                                                                "TaskName": "rest"}))
    table = problems_for(tiny_study)
    assert len(table) == 4  # every rest run
    assert (table.severity == "error").all()
    assert table.message.str.contains(r"TR in the header \(2 s\) differs from RepetitionTime in the "
                                      r"sidecar \(2.5 s\) by 20%; the participant level uses the "
                                      r"sidecar's 2.5 s \(more than 1% apart").all()


def test_tr_within_one_percent_is_a_warning(tiny_study: Path):
    (tiny_study / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.01,
                                                                "TaskName": "rest"}))
    table = problems_for(tiny_study)
    assert len(table) == 4 and (table.severity == "warning").all()
    assert table.message.str.contains("the participant level uses the sidecar's 2.01 s").all()
    assert main(["validate", str(tiny_study)]) == 0


def test_t_r_problem_tolerance():
    from theramark.study.validate import t_r_problem

    assert t_r_problem(2.0, 2.0005) is None
    assert t_r_problem(0.0, 2.0) is None  # a header without a TR is not compared
    assert t_r_problem(2.0, 2.02)[0] == "warning"
    assert t_r_problem(2.0, 2.03)[0] == "error"
    assert t_r_problem(2000 / 1000, 2.5)[0] == "error"


@pytest.mark.parametrize("value", [None, "2s", 0, -1.0])
def test_repetition_time_the_run_cannot_use(tiny_study: Path, value):
    metadata = {"TaskName": "rest"} if value is None else {"TaskName": "rest", "RepetitionTime": value}
    (tiny_study / "task-rest_bold.json").write_text(json.dumps(metadata))
    table = problems_for(tiny_study)
    assert len(table) == 4
    expected = "RepetitionTime missing" if value is None else "is not a positive number of seconds"
    assert table.message.str.contains(expected).all()


def test_confounds_length_mismatch_names_the_file(tiny_study: Path):
    path = deriv_func(tiny_study, "02", "post") / "sub-02_ses-post_task-rest_desc-confounds_timeseries.tsv"
    pd.read_csv(path, sep="\t").iloc[:25].to_csv(path, sep="\t", index=False, na_rep="n/a")
    table = problems_for(tiny_study)
    assert list(table.path) == [str(path)]
    assert table.message[0] == "25 rows but the BOLD has 30 volumes"


def test_truncated_and_corrupt_nifti(tiny_study: Path):
    folder = deriv_func(tiny_study)
    bold = folder / f"sub-01_ses-pre_task-rest_space-{SPACE}_res-4_desc-preproc_bold.nii.gz"
    bold.write_bytes(bold.read_bytes()[:400])
    other = folder / f"sub-01_ses-pre_task-mid_space-{SPACE}_res-4_desc-preproc_bold.nii.gz"
    other.write_bytes(b"this is not a nifti file at all" * 20)
    table = problems_for(tiny_study)
    messages = dict(zip(table.path, table.message, strict=True))
    assert "corrupt or truncated" in messages[str(bold)] or "truncated" in messages[str(bold)]
    assert "unreadable NIfTI header" in messages[str(other)] or "corrupt" in messages[str(other)]


def test_uncompressed_truncated_nifti(tiny_study: Path):
    folder = deriv_func(tiny_study)
    bold = folder / f"sub-01_ses-pre_task-rest_space-{SPACE}_res-4_desc-preproc_bold.nii.gz"
    img = nib.load(bold)
    plain = bold.with_name(bold.name.replace(".nii.gz", ".nii"))
    nib.save(img, plain)
    bold.unlink()
    plain.write_bytes(plain.read_bytes()[:-1000])
    table = problems_for(tiny_study)
    assert table.message.str.startswith("truncated:").sum() == 1


def test_duplicate_ids_and_malformed_tsv(tiny_study: Path):
    pd.DataFrame({"participant_id": ["sub-01", "sub-01", "sub-02"]}).to_csv(
        tiny_study / "participants.tsv", sep="\t", index=False)
    folder = deriv_func(tiny_study, "02", "pre")
    (folder / "sub-02_ses-pre_task-rest_desc-confounds_timeseries.tsv").write_text(
        "a\tb\n1\t2\n1\t2\t3\t4\n")
    table = problems_for(tiny_study)
    assert table.message.str.contains("duplicate participant IDs: sub-01 appears 2 times").any()
    confounds = table[table.path.str.endswith("sub-02_ses-pre_task-rest_desc-confounds_timeseries.tsv")]
    assert list(confounds.message) == ["line 3 has 4 fields, the header has 2"]


def test_missing_session_and_mixed_spaces_are_warnings(tmp_path: Path, capsys):
    root = make_study(tmp_path / "s", subjects=("01", "02", "03"))
    for path in deriv_func(root, "03", "post").glob("*"):
        path.unlink()
    write_run(root, "01", "pre", "rest", 30)  # same run again, other resolution below
    folder = deriv_func(root)
    for path in folder.glob("*res-4*"):
        path.rename(path.with_name(path.name.replace("res-4", "res-2")))
    write_run(root, "01", "pre", "rest", 30)
    for path in root.rglob("*_desc-confounds_timeseries.tsv"):
        fmriprep_confounds(30).to_csv(path, sep="\t", index=False, na_rep="n/a")
    table = validate_study(root)
    assert (table.severity == "warning").all(), table
    assert table.message.str.contains(r"missing session\(s\) ses-post \(others in group CBT").any()
    assert table.message.str.contains(
        rf"runs of space {SPACE} in several resolutions \(res-2: 1 run\(s\), res-4: 5 run\(s\)\)").any()
    assert main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "0 error(s)" in out


def test_events_beyond_the_run(tiny_study: Path):
    events = tiny_study / "sub-02" / "ses-post" / "func" / "sub-02_ses-post_task-mid_events.tsv"
    pd.DataFrame({"onset": [2.0, 75.0], "duration": [1.0, 1.0], "trial_type": ["a", "b"]}).to_csv(
        events, sep="\t", index=False)
    table = problems_for(tiny_study)
    assert list(table.path) == [str(events)]
    assert table.message[0] == ("1 event(s) start at or after the end of the run (30 volumes × 2.0 s "
                                "= 60 s), first at onset 75 s (row 3)")


def test_cli_exit_status_and_no_traceback(tiny_study: Path, capsys):
    (deriv_func(tiny_study) / "sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv").unlink()
    assert main(["validate", str(tiny_study)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "ERROR" in captured.out and "sub-01_ses-pre_task-rest_space-" in captured.out


@pytest.mark.parametrize("missing", ["participants.tsv", "dataset_description.json"])
def test_missing_top_level_files(tiny_study: Path, missing: str):
    (tiny_study / missing).unlink()
    table = problems_for(tiny_study)
    assert table.path.str.endswith(missing).any()
    assert (table.severity == "error").any()


def test_nonexistent_folder_is_named(tmp_path: Path, capsys):
    assert main(["validate", str(tmp_path / "nope")]) == 2
    out = capsys.readouterr().out
    assert f"ERROR    {tmp_path / 'nope'}: BIDS folder not found" in out


def test_bad_volume_count_never_crashes(tiny_study: Path):
    folder = deriv_func(tiny_study)
    bold = folder / f"sub-01_ses-pre_task-rest_space-{SPACE}_res-4_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), np.diag([4.0, 4, 4, 1])), bold)
    table = problems_for(tiny_study)
    assert table.message.str.contains("expected a 4D image").any()


def test_open_nifti_and_open_bold_share_the_checks(tmp_path: Path):
    from theramark.errors import BadInputError
    from theramark.imaging._image import load_mask, open_bold
    from theramark.study.validate import nifti_problem, open_nifti

    bold = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3, 5), np.float32), np.eye(4)), bold)
    assert open_bold(bold).shape == (4, 4, 3, 5)
    assert nifti_problem(bold) is None
    with pytest.raises(BadInputError, match=rf"^{tmp_path / 'nope.nii.gz'}: BOLD image not found"):
        open_bold(tmp_path / "nope.nii.gz")
    with pytest.raises(BadInputError, match="brain mask not found"):
        load_mask(tmp_path / "nope.nii.gz")
    with pytest.raises(BadInputError, match=r"bold.nii.gz: expected a 3D image, got shape \(4, 4, 3, 5\)"):
        open_nifti(bold, ndim=3)
    assert nifti_problem(bold, ndim=3) == "expected a 3D image, got shape (4, 4, 3, 5)"
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti" * 40)
    with pytest.raises(BadInputError, match="junk.nii.gz: unreadable NIfTI header"):
        open_bold(junk)
    assert nifti_problem(junk).startswith("unreadable NIfTI header")
    plain = tmp_path / "bold.nii"
    nib.save(nib.load(bold), plain)
    plain.write_bytes(plain.read_bytes()[:-100])
    open_bold(plain)  # the header is fine; read_masked finds the truncation while streaming
    with pytest.raises(BadInputError, match=r"bold.nii: truncated: \d+ bytes of data where"):
        open_nifti(plain, check_data=True)
