"""A tiny hand-built BIDS + fMRIPrep study, small enough to corrupt one file at a time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

SPACE = "MNI152NLin2009cAsym"


def write_run(root: Path, sub: str, ses: str, task: str, n_volumes: int, t_r: float = 2.0,
              confounds: Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Raw BOLD + fMRIPrep BOLD, mask and confounds for one run; returns the paths."""
    rng = np.random.default_rng(seed)
    raw = root / f"sub-{sub}" / f"ses-{ses}" / "func"
    deriv = root / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"
    raw.mkdir(parents=True, exist_ok=True)
    deriv.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{sub}_ses-{ses}_task-{task}"
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    data = (100 + rng.standard_normal((6, 7, 5, n_volumes))).astype(np.float32)
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    img = nib.Nifti1Image(data, affine, header)
    img.header.set_zooms((4.0, 4.0, 4.0, t_r))
    paths = {"raw": raw / f"{stem}_bold.nii.gz",
             "bold": deriv / f"{stem}_space-{SPACE}_res-4_desc-preproc_bold.nii.gz",
             "mask": deriv / f"{stem}_space-{SPACE}_res-4_desc-brain_mask.nii.gz",
             "confounds": deriv / f"{stem}_desc-confounds_timeseries.tsv"}
    nib.save(img, paths["raw"])
    nib.save(img, paths["bold"])
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.uint8), affine), paths["mask"])
    if confounds is not None:
        shutil.copyfile(confounds, paths["confounds"])
    else:
        table = pd.DataFrame({"framewise_displacement": np.r_[np.nan, rng.uniform(0, .2, n_volumes - 1)],
                              "trans_x": rng.normal(0, .1, n_volumes)})
        table.to_csv(paths["confounds"], sep="\t", index=False, na_rep="n/a")
    if task == "mid":
        events = pd.DataFrame({"onset": [2.0, 10.0], "duration": [2.0, 2.0],
                               "trial_type": ["gain_anticipation", "neutral_anticipation"]})
        paths["events"] = raw / f"{stem}_events.tsv"
        events.to_csv(paths["events"], sep="\t", index=False)
    return paths


def make_study(root: Path, subjects=("01", "02"), sessions=("pre", "post"), tasks=("rest",),
               n_volumes: int = 30, t_r: float = 2.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "group": "CBT"}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    for task in tasks:
        (root / f"task-{task}_bold.json").write_text(
            json.dumps({"RepetitionTime": t_r, "TaskName": task}))
    for i, sub in enumerate(subjects):
        for ses in sessions:
            for task in tasks:
                write_run(root, sub, ses, task, n_volumes, t_r, seed=i)
    return root


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "study", tasks=("rest", "mid"))
