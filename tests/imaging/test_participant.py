"""Participant-level orchestration on a tiny synthetic BIDS + fMRIPrep study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from theramark.imaging import participant, rois
from theramark.imaging.glm import DEFAULT_CONTRASTS
from theramark.study import discover_runs

T_R = 2.0
#: 4 mm MNI-aligned grid covering every literature ROI (x -64..64, y -100..72, z -32..56 mm).
AFFINE = np.array([[4.0, 0, 0, -64], [0, 4, 0, -100], [0, 0, 4, -32], [0, 0, 0, 1]])
SHAPE = (33, 44, 23)
#: Relaxed QC so that short synthetic runs are analysed.
CONFIG = {"qc": {"min_minutes_kept": 1.0}}
COUPLED = ("dacc", "insula_ant_L")  # planted rest connectivity
REWARD = ("nacc_L", "nacc_R")  # planted gain-anticipation response


def _mask() -> np.ndarray:
    ijk = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE)[:, None, None, None] - 1) / 2
    radii = np.array([17, 23, 12.5])[:, None, None, None]
    return (((ijk - centre) / radii) ** 2).sum(axis=0) < 1


def _sphere_voxels(name: str, mask: np.ndarray) -> np.ndarray:
    table = rois.literature_rois().set_index("name")
    centre = table.loc[name, ["x", "y", "z"]].to_numpy(float)
    world = nib.affines.apply_affine(AFFINE, np.indices(SHAPE).reshape(3, -1).T)
    inside = np.linalg.norm(world - centre, axis=1) <= table.loc[name, "radius_mm"]
    return inside.reshape(SHAPE) & mask


def _confounds(n: int, rng: np.random.Generator) -> pd.DataFrame:
    motion = np.cumsum(rng.normal(scale=0.01, size=(n, 6)), axis=0)
    columns = {}
    for i, name in enumerate(["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]):
        x = motion[:, i]
        d = np.r_[np.nan, np.diff(x)]
        columns.update({name: x, f"{name}_derivative1": d, f"{name}_power2": x**2,
                        f"{name}_derivative1_power2": d**2})
    for name in ("csf", "white_matter", "global_signal"):
        x = rng.normal(size=n)
        d = np.r_[np.nan, np.diff(x)]
        columns.update({name: x, f"{name}_derivative1": d, f"{name}_power2": x**2,
                        f"{name}_derivative1_power2": d**2})
    fd = np.r_[np.nan, np.abs(np.diff(motion[:, :3], axis=0)).sum(axis=1) + 0.05]
    columns.update({"framewise_displacement": fd, "dvars": np.r_[np.nan, rng.uniform(20, 30, n - 1)],
                    "std_dvars": np.r_[np.nan, rng.uniform(0.8, 1.2, n - 1)]})
    t = np.arange(n)
    for k in range(1, 3):
        columns[f"cosine{k - 1:02d}"] = np.sqrt(2 / n) * np.cos(np.pi * k * (2 * t + 1) / (2 * n))
    return pd.DataFrame(columns)


def _mid_events(n: int) -> pd.DataFrame:
    onsets = np.arange(6.0, n * T_R - 20, 8.0)
    kinds = np.resize(["gain_anticipation", "loss_anticipation", "neutral_anticipation"],
                      onsets.size)
    events = pd.DataFrame({"onset": onsets, "duration": 2.0, "trial_type": kinds})
    outcomes = events.assign(onset=events["onset"] + 4.0, duration=1.0,
                             trial_type=events["trial_type"].str.replace("anticipation", "outcome"))
    return pd.concat([events, outcomes]).sort_values("onset").reset_index(drop=True)


def _write_run(root: Path, sub: str, task: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = _mask()
    func = root / "derivatives" / "fmriprep" / f"sub-{sub}" / "ses-pre" / "func"
    raw = root / f"sub-{sub}" / "ses-pre" / "func"
    func.mkdir(parents=True, exist_ok=True)
    raw.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{sub}_ses-pre_task-{task}"
    space = f"{stem}_space-MNI152NLin2009cAsym_res-4"
    data = 1000 + 20 * rng.normal(size=SHAPE + (n,)).astype(np.float32)
    if task == "rest":
        latent = rng.normal(size=n)
        for name in COUPLED:
            data[_sphere_voxels(name, mask)] += 25 * latent
    else:
        from nilearn.glm.first_level import make_first_level_design_matrix

        events = _mid_events(n)
        events.to_csv(raw / f"{stem}_events.tsv", sep="\t", index=False)
        frame_times = (np.arange(n) + 0.5) * T_R
        design = make_first_level_design_matrix(frame_times, events, drift_model=None)
        for name in REWARD:
            data[_sphere_voxels(name, mask)] += 30 * design["gain_anticipation"].to_numpy()
    data[~mask] = 0
    nib.Nifti1Image(data.astype(np.float32), AFFINE).to_filename(
        func / f"{space}_desc-preproc_bold.nii")  # uncompressed: fast to write
    nib.Nifti1Image(mask.astype(np.uint8), AFFINE).to_filename(
        func / f"{space}_desc-brain_mask.nii.gz")
    (func / f"{space}_desc-preproc_bold.json").write_text(json.dumps(
        {"RepetitionTime": T_R, "StartTime": 1.0, "SliceTimingCorrected": True}))
    _confounds(n, rng).to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t",
                              index=False, na_rep="n/a")
    nib.Nifti1Image(np.zeros((2, 2, 2, n), np.int16), np.eye(4)).to_filename(
        raw / f"{stem}_bold.nii.gz")


def make_study(root: Path, participants=("01", "02"), n_rest: int = 60, n_task: int = 70,
               seed: int = 0) -> Path:
    """A BIDS + fMRIPrep study: each participant has a rest and an MID run in session pre."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "tiny", "BIDSVersion": "1.9.0"}))
    pd.DataFrame({"participant_id": [f"sub-{p}" for p in participants]}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    (root / "task-rest_bold.json").write_text(json.dumps({"TaskName": "rest",
                                                          "RepetitionTime": T_R}))
    (root / "task-mid_bold.json").write_text(json.dumps({"TaskName": "mid",
                                                         "RepetitionTime": T_R}))
    fmriprep = root / "derivatives" / "fmriprep"
    fmriprep.mkdir(parents=True, exist_ok=True)
    (fmriprep / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    for index, sub in enumerate(participants):
        _write_run(root, sub, "rest", n_rest, seed + 10 * index)
        _write_run(root, sub, "mid", n_task, seed + 10 * index + 1)
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = make_study(tmp_path_factory.mktemp("study") / "bids", participants=("01", "02", "03"))
    func = root / "derivatives" / "fmriprep" / "sub-03" / "ses-pre" / "func"
    confounds = func / "sub-03_ses-pre_task-rest_desc-confounds_timeseries.tsv"
    table = pd.read_csv(confounds, sep="\t")
    table.loc[30, "csf"] = np.nan  # an n/a inside the table
    table.to_csv(confounds, sep="\t", index=False, na_rep="n/a")
    events = root / "sub-03" / "ses-pre" / "func" / "sub-03_ses-pre_task-mid_events.tsv"
    table = pd.read_csv(events, sep="\t")
    table.loc[len(table)] = [900.0, 2.0, "gain_anticipation"]
    table.to_csv(events, sep="\t", index=False)
    return root


@pytest.fixture(scope="module")
def processed(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    table = participant.run_participant_level(study, out, config=CONFIG, n_jobs=1)
    return out, table


def test_runs_table_and_failures_are_isolated(processed):
    out, table = processed
    assert len(table) == 6
    assert (out / "participant_runs.tsv").is_file()
    status = table.set_index(["participant_id", "task"])["status"]
    assert (status.drop("sub-03", level=0) == "ok").all()
    failed = table[table["status"] == "failed"].set_index("task")["message"]
    assert set(failed.index) == {"rest", "mid"}
    assert "sub-03_ses-pre_task-rest_desc-confounds_timeseries.tsv" in failed["rest"]
    assert "sub-03_ses-pre_task-mid_events.tsv" in failed["mid"]
    assert "end of the run" in failed["mid"]


def test_outputs_follow_contract_names_and_sidecars(processed):
    out, _ = processed
    func = out / "sub-01" / "ses-pre" / "func"
    rest = "sub-01_ses-pre_task-rest"
    expected = [
        f"{rest}_desc-qc_metrics.tsv", f"{rest}_seg-literature_timeseries.tsv",
        f"{rest}_seg-literature_meas-pearsoncorrelation_relmat.dense.tsv",
        f"{rest}_seg-literature_meas-partialcorrelation_relmat.dense.tsv",
        f"{rest}_seg-literature_meas-dfcvariability_relmat.dense.tsv",
        f"{rest}_seg-literature_desc-windows_relmat.npy",
        "sub-01_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv",
        "sub-01_ses-pre_task-mid_desc-qc_metrics.tsv",
        "sub-01_ses-pre_task-mid_desc-gainAnticipationMinusNeutralAnticipation_stat-effect"
        "_statmap.nii.gz",
    ]
    for name in expected:
        assert (func / name).is_file(), name
        sidecar = json.loads((func / (name.split(".")[0] + ".json")).read_text())
        assert "ParameterHash" in sidecar and sidecar["Sources"]["bold"]["hash"].startswith(
            "sha256:")
    qc = pd.read_csv(func / f"{rest}_desc-qc_metrics.tsv", sep="\t")
    assert list(qc.columns[:10]) == ["mean_fd", "max_fd", "percent_fd_over_threshold",
                                     "percent_censored", "mean_dvars", "tsnr", "n_volumes",
                                     "n_volumes_kept", "minutes_kept", "excluded"] or \
        {"mean_fd", "tsnr", "excluded", "exclusion_reason"} <= set(qc.columns)
    fc = pd.read_csv(func / f"{rest}_seg-literature_meas-pearsoncorrelation_relmat.dense.tsv",
                     sep="\t")
    assert list(fc.columns) == rois.literature_rois()["name"].tolist()
    assert fc.shape == (len(fc.columns), len(fc.columns))
    windows = np.load(func / f"{rest}_seg-literature_desc-windows_relmat.npy")
    assert windows.dtype == np.float32 and windows.shape[1:] == fc.shape
    stats = pd.read_csv(func / "sub-01_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv",
                        sep="\t")
    assert {"roi", "contrast", "effect", "psc", "z"} <= set(stats.columns)
    assert set(stats["contrast"]) == {c.replace(" ", "") for c in DEFAULT_CONTRASTS["mid"]}
    glm_sidecar = json.loads((func / "sub-01_ses-pre_task-mid_seg-literature_desc-glm_roistats"
                                      ".json").read_text())
    assert glm_sidecar["SliceTimeRef"] == 0.5 and glm_sidecar["SliceTimeRefSource"] == "StartTime"


def test_planted_effects_are_found(processed):
    out, _ = processed
    for sub in ("sub-01", "sub-02"):
        func = out / sub / "ses-pre" / "func"
        fc = pd.read_csv(func / f"{sub}_ses-pre_task-rest_seg-literature_meas-pearsoncorrelation"
                                "_relmat.dense.tsv", sep="\t")
        fc.index = fc.columns
        assert fc.loc[COUPLED[0], COUPLED[1]] > 1.0  # Fisher z of a strong planted coupling
        off = fc.to_numpy()[np.triu_indices(len(fc), 1)]
        assert np.median(np.abs(off)) < 0.3  # the rest is noise
        stats = pd.read_csv(func / f"{sub}_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv",
                            sep="\t")
        gain = stats[stats["contrast"] == "gain_anticipation-neutral_anticipation"].set_index("roi")
        assert (gain.loc[list(REWARD), "z"] > 4).all()
        assert (gain.loc[list(REWARD), "psc"] > 0).all()
        others = gain.drop(index=list(REWARD))["z"]
        assert np.mean(np.abs(others) > 3) < 0.15


def test_rest_timeseries_equal_nilearn_masker_with_confounds(processed, study):
    """The pipeline's cleaned ROI series equal nilearn's masker given the same confounds."""
    import warnings

    from nilearn.maskers import NiftiSpheresMasker

    from theramark.imaging.denoise import nuisance_design

    out, _ = processed
    run = [r for r in discover_runs(study, participant_label=["01"]) if r.task == "rest"][0]
    ours = pd.read_csv(out / "sub-01" / "ses-pre" / "func" /
                       "sub-01_ses-pre_task-rest_seg-literature_timeseries.tsv", sep="\t")
    design, sample_mask = nuisance_design(run.confounds, "simple")
    table = rois.literature_rois()
    chosen = (table["radius_mm"] == 8).to_numpy()
    img = nib.load(run.bold)
    img64 = nib.Nifti1Image(img.get_fdata(), img.affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiSpheresMasker(table.loc[chosen, ["x", "y", "z"]].to_numpy(), radius=8,
                                    mask_img=str(run.mask), allow_overlap=True, detrend=True,
                                    standardize="zscore_sample", t_r=T_R)
        reference = masker.fit_transform(img64, confounds=design.to_numpy(),
                                         sample_mask=sample_mask)
    np.testing.assert_allclose(ours.loc[:, chosen].to_numpy(), reference, atol=1e-6)


def test_resume_skips_and_parameter_change_reruns(processed, study):
    out, _ = processed
    again = participant.run_participant_level(study, out, config=CONFIG, n_jobs=1,
                                              participant_label="01")
    assert again["reused"].all() and (again["status"] == "ok").all()  # statuses kept
    changed = participant.run_participant_level(
        study, out, config={**CONFIG, "connectivity": {"window_s": 40.0}}, n_jobs=1,
        participant_label="01")
    assert changed.set_index("task").loc["rest", "status"] == "ok"
    assert not changed.set_index("task").loc["rest", "reused"]
    assert changed.set_index("task").loc["mid", "reused"]  # FC settings only
    assert changed.set_index("task").loc["mid", "status"] == "ok"
    runs = pd.read_csv(out / "participant_runs.tsv", sep="\t")
    assert len(runs) == 6  # other participants' rows are kept
    func = out / "sub-01" / "ses-pre" / "func"
    pcorr = func / "sub-01_ses-pre_task-rest_seg-literature_meas-partialcorrelation_relmat.dense.tsv"
    assert pcorr.is_file()
    participant.run_participant_level(
        study, out, config={**CONFIG, "connectivity": {"measures": ["pearsoncorrelation"]}}, n_jobs=1,
        participant_label="01")
    assert not pcorr.is_file() and not pcorr.with_name(pcorr.name.split(".")[0] + ".json").exists()


def test_labels_atlas_from_config_reports_dropped_regions(study, tmp_path):
    from tests.conftest import shared_path

    folder = shared_path("data/atlases/schaefer2018_volumes")
    atlas = {"image": str(folder / "Schaefer2018_100Parcels_7Networks_order_FSLMNI152_2mm.nii.gz"),
             "labels": str(folder / "Schaefer2018_100Parcels_7Networks_order.txt")}
    settings = participant.settings_from_config(
        {**CONFIG, "rois": {"atlas": atlas, "on_empty": "drop"}})
    run = [r for r in discover_runs(study, participant_label=["01"]) if r.task == "rest"][0]
    row = participant.process_run(run, tmp_path, settings)
    assert row["status"] == "ok", row["message"]
    func = tmp_path / "sub-01" / "ses-pre" / "func"
    series = pd.read_csv(func / "sub-01_ses-pre_task-rest_seg-Schaefer2018100Parcels7Networks"
                                "orderFSLMNI1522mm_timeseries.tsv", sep="\t")
    sidecar = json.loads((func / "sub-01_ses-pre_task-rest_desc-qc_metrics.json").read_text())
    assert len(series.columns) + len(sidecar["DroppedRois"]) == 100
    assert set(series.columns) == set(sidecar["Rois"])


@pytest.mark.parametrize("problem", ["mask_grid", "missing_tr", "short_confounds", "empty_roi",
                                     "truncated_bold"])
def test_bad_inputs_fail_with_a_message_naming_the_file(study, tmp_path, problem):
    root = tmp_path / "bids"
    shutil.copytree(study, root, ignore=shutil.ignore_patterns("sub-02", "sub-03"))
    run = [r for r in discover_runs(root, participant_label=["01"]) if r.task == "rest"][0]
    settings = participant.settings_from_config(CONFIG)
    expected = run.mask.name
    if problem == "mask_grid":
        mask = nib.load(run.mask)
        nib.Nifti1Image(np.asarray(mask.dataobj), AFFINE @ np.diag([1, 1, 1.0, 1]) +
                        np.array([[0, 0, 0, 2.0]] * 3 + [[0, 0, 0, 0]])).to_filename(run.mask)
    elif problem == "missing_tr":
        (root / "task-rest_bold.json").write_text(json.dumps({"TaskName": "rest"}))
        run.bold.with_name(run.bold.name.split(".")[0] + ".json").write_text("{}")
        run = [r for r in discover_runs(root, participant_label=["01"]) if r.task == "rest"][0]
        expected = "RepetitionTime"
    elif problem == "truncated_bold":
        content = run.bold.read_bytes()
        run.bold.write_bytes(content[: len(content) // 2])
        expected = run.bold.name
    elif problem == "short_confounds":
        table = pd.read_csv(run.confounds, sep="\t")
        table.iloc[:-5].to_csv(run.confounds, sep="\t", index=False, na_rep="n/a")
        expected = run.confounds.name
    else:
        settings = participant.settings_from_config(
            {**CONFIG, "rois": {"atlas": {"table": str(tmp_path / "rois.tsv")}}})
        pd.DataFrame({"name": ["inside", "outside"], "x": [0.0, 0.0], "y": [0.0, 0.0],
                      "z": [10.0, 300.0]}).to_csv(tmp_path / "rois.tsv", sep="\t", index=False)
    row = participant.process_run(run, tmp_path / "out", settings)
    assert row["status"] == "failed"
    assert expected in row["message"]
    if problem == "empty_roi":
        assert "outside" in row["message"]
