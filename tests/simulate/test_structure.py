"""Layout, BIDS naming, metadata and image headers of a simulated study."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pandas as pd

from theramark._io import read_tsv

SPACE = "space-MNI152NLin2009cAsym_res-4"


def test_participants_and_sessions(small_study):
    participants = read_tsv(small_study / "participants.tsv")
    assert list(participants.columns) == ["participant_id", "age", "sex", "site", "group"]
    assert sorted(participants["group"].unique()) == ["CBT", "HC", "MBCT", "waitlist"]
    assert (participants["group"].value_counts() == 2).all()
    assert participants["site"].nunique() >= 2
    assert set(participants["sex"]) <= {"F", "M"}
    for row in participants.itertuples():
        sessions = sorted(p.name for p in (small_study / row.participant_id).iterdir())
        expected = ["ses-post", "ses-pre"] if row.group == "HC" else ["ses-mid", "ses-post",
                                                                       "ses-pre"]
        assert sessions == expected, row.participant_id
    sidecar = json.loads((small_study / "participants.json").read_text())
    assert set(sidecar) == {"participant_id", "age", "sex", "site", "group"}


def test_bids_names_and_derivatives(small_study):
    raw = sorted(p.name for p in small_study.glob("sub-*/ses-*/func/*"))
    pattern = re.compile(r"^sub-\d{3}_ses-(pre|mid|post)_task-(rest|mid)_(bold\.nii\.gz|events\.tsv)$")
    assert raw and all(pattern.match(name) for name in raw), raw[:5]
    assert sum(n.endswith("_task-mid_events.tsv") for n in raw) == sum(
        n.endswith("_task-mid_bold.nii.gz") for n in raw)
    fmriprep = small_study / "derivatives" / "fmriprep"
    description = json.loads((fmriprep / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "fMRIPrep"
    for bold in small_study.glob("sub-*/ses-*/func/*_bold.nii.gz"):
        stem = bold.name.replace("_bold.nii.gz", "")
        func = fmriprep / bold.parent.relative_to(small_study)
        for suffix in (f"{SPACE}_desc-preproc_bold.nii.gz", f"{SPACE}_desc-preproc_bold.json",
                       f"{SPACE}_desc-brain_mask.nii.gz", "desc-confounds_timeseries.tsv",
                       "desc-confounds_timeseries.json"):
            assert (func / f"{stem}_{suffix}").is_file(), f"{stem}_{suffix}"
    for name in ("dataset_description.json", "README", "CHANGES", "participants.json",
                 "task-rest_bold.json", "task-mid_bold.json", "task-mid_events.json",
                 "sourcedata/ground_truth.json"):
        assert (small_study / name).is_file(), name
    raw_description = json.loads((small_study / "dataset_description.json").read_text())
    assert raw_description["BIDSVersion"] == "1.9.0"


def test_repetition_time_header_matches_sidecars(small_study):
    root_sidecar = json.loads((small_study / "task-rest_bold.json").read_text())
    assert root_sidecar["RepetitionTime"] == 2.0
    raw = nib.load(next(small_study.glob("sub-*/ses-pre/func/*task-rest_bold.nii.gz")))
    assert raw.header.get_zooms()[3] == root_sidecar["RepetitionTime"]
    assert raw.header.get_xyzt_units() == ("mm", "sec")
    # one slice time per slice along k, all within the TR
    assert len(root_sidecar["SliceTiming"]) == raw.shape[2]
    assert max(root_sidecar["SliceTiming"]) < root_sidecar["RepetitionTime"]
    preproc = next(small_study.glob(f"derivatives/fmriprep/sub-*/ses-*/func/*{SPACE}"
                                    "_desc-preproc_bold.nii.gz"))
    sidecar = json.loads(preproc.with_name(preproc.name.replace(".nii.gz", ".json")).read_text())
    image = nib.load(preproc)
    assert image.header.get_zooms() == (4.0, 4.0, 4.0, sidecar["RepetitionTime"])
    assert 0 < sidecar["StartTime"] < sidecar["RepetitionTime"]
    assert image.shape[3] == 40
    mask = nib.load(preproc.with_name(preproc.name.replace("desc-preproc_bold", "desc-brain_mask")))
    np.testing.assert_allclose(mask.affine, image.affine)
    data = np.asarray(image.dataobj)
    inside = np.asarray(mask.dataobj) > 0
    assert (data[~inside] == 0).all() and (data[inside].mean(axis=-1) > 500).all()


def test_events_follow_the_mid_design(small_study):
    events = read_tsv(next(small_study.glob("sub-*/ses-*/func/*task-mid_events.tsv")))
    assert list(events.columns[:3]) == ["onset", "duration", "trial_type"]
    assert set(events["trial_type"]) == {f"{c}_{p}" for c in ("gain", "loss", "neutral")
                                         for p in ("anticipation", "outcome")}
    assert events["onset"].is_monotonic_increasing
    assert (events["onset"] + events["duration"]).max() <= 40 * 2.0


def test_ground_truth_is_complete(small_study):
    truth = json.loads((small_study / "sourcedata" / "ground_truth.json").read_text())
    assert truth["preset"] == "demo"
    names = {effect["name"] for effect in truth["effects"]}
    assert {"cbt_dfc_variability_dlpfc_precuneus", "amygdala_acc_fc_tracks_hamd_improvement",
            "nacc_gain_anticipation_after_therapy", "baseline_sgacc_nacc_fc_predicts_response",
            "neglect_stress_anhedonia_moderated_by_sex", "financial_strain_threshold",
            "loneliness_most_central", "cbt_state_occupancy_thalamo_occipital",
            "mfg_amygdala_fc_leads_hamd_improvement"} <= names
    rois = set(pd.read_csv(small_study / "sourcedata" / "participant_truth.tsv", sep="\t").columns)
    assert "propensity_z" in rois
    for effect in truth["effects"]:
        assert {"name", "kind", "size", "planted"} <= set(effect)
        assert effect["planted"] is True
        features = effect.get("feature", [])
        for feature in [features] if isinstance(features, str) else features:
            if ":" in feature:
                continue
            a, b = feature.split("__")
            assert a < b, f"edge names must be sorted: {feature}"
    assert {s["site"] for s in truth["site_effects"]} == {"A", "B"}
