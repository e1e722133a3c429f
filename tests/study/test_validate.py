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


def test_tr_mismatch(tiny_study: Path):
    (tiny_study / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.5,
                                                                "TaskName": "rest"}))
    table = problems_for(tiny_study)
    assert len(table) == 4  # every rest run
    assert table.message.str.contains(r"TR in the header \(2 s\) differs from RepetitionTime in the "
                                      r"sidecar \(2.5 s\)").all()


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
    assert table.message.str.contains("duplicate participant IDs").any()
    assert table.message.str.contains("sub-01 appears 2 times").any()
    assert table.message.str.contains("not a readable tab-separated table").any()


def test_missing_session_and_mixed_spaces_are_warnings(tmp_path: Path, capsys):
    root = make_study(tmp_path / "s", subjects=("01", "02", "03"))
    for path in deriv_func(root, "03", "post").glob("*"):
        path.unlink()
    write_run(root, "01", "pre", "rest", 30)  # same run again, other resolution below
    folder = deriv_func(root)
    for path in folder.glob("*res-4*"):
        path.rename(path.with_name(path.name.replace("res-4", "res-2")))
    write_run(root, "01", "pre", "rest", 30)
    table = validate_study(root)
    assert (table.severity == "warning").all(), table
    assert table.message.str.contains(r"missing session\(s\) ses-post \(others in group CBT").any()
    assert table.message.str.contains("several spaces/resolutions").any()
    assert main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "0 error(s)" in out


def test_events_beyond_the_run(tiny_study: Path):
    events = tiny_study / "sub-02" / "ses-post" / "func" / "sub-02_ses-post_task-mid_events.tsv"
    pd.DataFrame({"onset": [2.0, 75.0], "duration": [1.0, 1.0]}).to_csv(events, sep="\t", index=False)
    table = problems_for(tiny_study)
    assert list(table.path) == [str(events)]
    assert "onset 75 s is beyond the end of the run (30 volumes × 2 s = 60 s)" in table.message[0]


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


def test_nonexistent_folder(tmp_path: Path):
    assert main(["validate", str(tmp_path / "nope")]) == 2


def test_bad_volume_count_never_crashes(tiny_study: Path):
    folder = deriv_func(tiny_study)
    bold = folder / f"sub-01_ses-pre_task-rest_space-{SPACE}_res-4_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), np.diag([4.0, 4, 4, 1])), bold)
    table = problems_for(tiny_study)
    assert table.message.str.contains("expected a 4D image").any()
