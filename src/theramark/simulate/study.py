"""``simulate_study``: write a complete BIDS dataset with fMRIPrep derivatives and planted effects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from theramark import __version__
from theramark._blas import single_threaded_blas
from theramark._io import atomic_path, write_json, write_text, write_tsv
from theramark._progress import progress
from theramark.simulate import phenotype as pheno
from theramark.simulate.bold import Coupling, RunSpec, simulate_run, slice_timing, start_time
from theramark.simulate.confounds import confounds_table
from theramark.simulate.design import make_participants, participant_sessions, session_targets
from theramark.simulate.events import EVENTS_SIDECAR
from theramark.simulate.ground_truth import ground_truth
from theramark.simulate.presets import (
    PATIENT_GROUPS,
    REPETITION_TIME,
    SESSIONS,
    SPACE,
    STATE_ROIS,
    TASKS,
    THERAPY_GROUPS,
    Preset,
    get_preset,
)
from theramark.simulate.space import StudySpace

_TASK_NAMES = {"rest": "resting state (eyes open, fixation)",
               "mid": "monetary incentive delay"}

# the study space is built once per process (workers rebuild it; it is a few hundred ms)
_SPACES: dict[int, StudySpace] = {}


def _space(resolution: int) -> StudySpace:
    if resolution not in _SPACES:
        _SPACES[resolution] = StudySpace(resolution)
    return _SPACES[resolution]


def plan_runs(truth: pd.DataFrame, preset: Preset, seed: int,
              reference_time: float) -> list[RunSpec]:
    """One :class:`RunSpec` per participant × attended session × task, with planted couplings."""
    eff = preset.effects
    rng = np.random.default_rng([seed, 2])
    # Most participants lie still (a QC-excluded run is planted separately: high_motion_runs);
    # patients move slightly more, as in clinical samples.
    motion_level = rng.lognormal(0.0, 0.2, len(truth)) * np.where(truth["patient"], 1.05, 1.0)
    waitlist = list(truth.loc[truth["group"] == "waitlist", "participant_id"])
    high_motion = {(waitlist[i], s, k) for i, s, k in preset.high_motion_runs if i < len(waitlist)}
    specs = []
    for index, row in enumerate(truth.itertuples()):
        patient = row.group in PATIENT_GROUPS
        for session in participant_sessions(row.group):
            improvement = getattr(row, f"improvement_{session}")
            amygdala = eff.amygdala_acc_base + (eff.amygdala_acc_slope * improvement
                                                if patient else 0.0)
            if row.group in THERAPY_GROUPS:
                amygdala += eff.amygdala_acc_therapy[session]
            dfc = (eff.dfc_amplitude_cbt[session] if row.group == "CBT"
                   else eff.dfc_amplitude_baseline)
            sgacc = eff.sgacc_nacc_base + (eff.sgacc_nacc_slope * row.propensity_z
                                           if patient else 0.0)
            gain = eff.nacc_gain_increase[session] if row.group in THERAPY_GROUPS else 0.0
            # brain leads symptoms: this session's coupling tracks the next session's improvement
            following = SESSIONS[min(SESSIONS.index(session) + 1, len(SESSIONS) - 1)]
            lag_rho = eff.lag_rho_base + (eff.lag_rho_slope * getattr(row, f"improvement_{following}")
                                          if patient else 0.0)
            occupancy = (eff.state_occupancy_cbt[session] if row.group == "CBT"
                         else eff.state_occupancy_baseline)
            for task in TASKS:
                couplings = (
                    Coupling("amygdala_L", ("dacc",), amygdala),
                    Coupling("dlpfc_L", ("precuneus",), dfc, period=float(rng.uniform(60, 90))),
                    Coupling("sgacc", ("nacc_L", "nacc_R"), float(np.clip(sgacc, 0.02, 0.7))),
                )
                specs.append(RunSpec(
                    participant_id=row.participant_id, group=row.group, site=row.site,
                    session=session, task=task, n_volumes=preset.n_volumes[task],
                    seed=(seed, index, SESSIONS.index(session), TASKS.index(task)),
                    motion_level=float(motion_level[index]),
                    high_motion=(row.participant_id, session, task) in high_motion,
                    couplings=couplings, nacc_gain_increase=gain,
                    extra={"reference_time": reference_time},
                    own_stream_couplings=(Coupling("mfg_R", ("amygdala_R",), lag_rho),),
                    state_occupancy=occupancy if task == "rest" else None,
                    state_rois=STATE_ROIS, state_coupling=eff.state_coupling,
                    state_dwell_volumes=eff.state_dwell_volumes,
                ))
    return specs


def to_int16(values: np.ndarray) -> np.ndarray:
    """Round intensities to int16, as scanners store them (quantisation far below the noise)."""
    return np.clip(np.rint(values), -32768, 32767).astype(np.int16)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray,
               zooms: tuple[float, ...]) -> None:
    """Write a NIfTI-1 image atomically, unscaled in ``data``'s dtype.

    nibabel writes gzip with mtime 0, so the same data gives the same bytes.
    """
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, tmp)


def _run_paths(root: Path, spec: RunSpec, resolution: int) -> dict[str, Path]:
    sub, ses = spec.participant_id, f"ses-{spec.session}"
    raw = root / sub / ses / "func"
    der = root / "derivatives" / "fmriprep" / sub / ses / "func"
    stem = spec.stem
    space = f"space-{SPACE}_res-{resolution}"
    return {
        "raw_bold": raw / f"{stem}_bold.nii.gz",
        "events": raw / f"{stem}_events.tsv",
        "preproc": der / f"{stem}_{space}_desc-preproc_bold.nii.gz",
        "preproc_json": der / f"{stem}_{space}_desc-preproc_bold.json",
        "mask": der / f"{stem}_{space}_desc-brain_mask.nii.gz",
        "mask_json": der / f"{stem}_{space}_desc-brain_mask.json",
        "confounds": der / f"{stem}_desc-confounds_timeseries.tsv",
        "confounds_json": der / f"{stem}_desc-confounds_timeseries.json",
    }


def write_run(root: Path, spec: RunSpec, resolution: int, reference_time: float) -> dict[str, Any]:
    """Simulate one run and write its raw image, events and fMRIPrep derivatives."""
    # one BLAS thread: the matrices are small, and threaded OpenBLAS is far slower on them
    with single_threaded_blas():
        return _write_run(root, spec, resolution, reference_time)


def _write_run(root: Path, spec: RunSpec, resolution: int, reference_time: float) -> dict[str, Any]:
    space = _space(resolution)
    run = simulate_run(space, spec)
    paths = _run_paths(root, spec, resolution)
    r = float(resolution)
    stored = to_int16(run.data)
    save_nifti(paths["preproc"], space.to_volume(stored), space.affine,
               (r, r, r, REPETITION_TIME))
    write_json(paths["preproc_json"], {
        "RepetitionTime": REPETITION_TIME, "SkullStripped": False, "SliceTimingCorrected": True,
        "StartTime": reference_time, "TaskName": spec.task,
    })
    save_nifti(paths["mask"], space.brain.astype(np.uint8), space.affine, (r, r, r))
    write_json(paths["mask_json"], {"Type": "Brain"})
    table, metadata = confounds_table(run.data, space.wm_voxels, space.csf_voxels, run.motion,
                                      run.n_non_steady, REPETITION_TIME)
    write_tsv(paths["confounds"], table)
    write_json(paths["confounds_json"], metadata)
    raw_mm = float(space.raw_affine[0, 0])
    save_nifti(paths["raw_bold"], space.to_raw_volume(stored), space.raw_affine,
               (raw_mm, abs(float(space.raw_affine[1, 1])), float(space.raw_affine[2, 2]),
                REPETITION_TIME))
    if run.events is not None:
        write_tsv(paths["events"], run.events)
    fd = run.motion.framewise_displacement
    return {
        "participant_id": spec.participant_id, "session": spec.session, "task": spec.task,
        "group": spec.group, "site": spec.site, "n_volumes": spec.n_volumes,
        "n_non_steady": run.n_non_steady, "mean_fd": round(float(np.nanmean(fd)), 4),
        "max_fd": round(float(np.nanmax(fd)), 4), "n_spikes": int(run.motion.spikes.size),
        "n_motion_outliers": int(sum(c.startswith("motion_outlier") for c in table.columns)),
        "high_motion": spec.high_motion,
    }


def _write_metadata(root: Path, preset: Preset, seed: int, resolution: int,
                    participants: pd.DataFrame, slice_times: list[float]) -> None:
    for task in TASKS:
        write_json(root / f"task-{task}_bold.json", {
            "TaskName": task, "TaskFullName": _TASK_NAMES[task],
            "RepetitionTime": REPETITION_TIME, "SliceTiming": slice_times,
            "EchoTime": 0.03, "FlipAngle": 80, "MagneticFieldStrength": 3,
            "Manufacturer": "simulated", "SliceEncodingDirection": "k",
        })
    write_json(root / "task-mid_events.json", EVENTS_SIDECAR)
    write_tsv(root / "participants.tsv", participants[["participant_id", "age", "sex", "site",
                                                       "group"]])
    write_json(root / "participants.json", {
        "participant_id": {"Description": "participant identifier"},
        "age": {"Description": "age at baseline", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        "site": {"Description": "scanning site",
                 "Levels": {s: f"site {s}" for s in preset.sites}},
        "group": {"Description": "treatment arm",
                  "Levels": {"CBT": "cognitive behavioural therapy, 8 weeks",
                             "MBCT": "mindfulness-based cognitive therapy, 8 weeks",
                             "waitlist": "waitlist control (depressed, untreated for 8 weeks)",
                             "HC": "healthy control (scanned at pre and post only)"}},
    })
    write_text(root / "README", (
        "# theramark simulated psychotherapy study\n\n"
        f"Synthetic data made by theramark {__version__} (preset '{preset.name}', seed {seed}, "
        f"{resolution} mm). Depressed adults randomised to CBT, MBCT or waitlist and healthy "
        "controls; sessions ses-pre (week 0), ses-mid (week 4, patients only) and ses-post "
        "(week 8). Each session has a resting-state run (task-rest) and a monetary incentive "
        "delay run (task-mid), TR 2 s. Raw images are on a coarse 8 mm grid; the fMRIPrep-style "
        f"derivatives are in {SPACE} space. Questionnaire items are in phenotype/. "
        "The planted effects, their size and location are listed in "
        "sourcedata/ground_truth.json. No real person's data is included.\n"
    ))
    write_text(root / "CHANGES", "1.0.0 2024-01-01\n  - Simulated dataset created by theramark.\n")
    # BIDS 1.9 has no session column for phenotype files (1.10 adds ``session_id``); the legacy
    # validator rejects repeated participant rows, so the repeated-measures tables are ignored
    repeated = [i.id for i in pheno.INSTRUMENTS if not i.baseline_only]
    write_text(root / ".bidsignore", "".join(
        f"phenotype/{name}.tsv\n" for name in [*repeated, "financial_strain", "ema"]))


def _dataset_description(preset: Preset, seed: int, resolution: int) -> dict[str, Any]:
    return {
        "Name": f"theramark simulated psychotherapy study ({preset.name}, seed {seed})",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["theramark developers", "synthetic participants (no real person)"],
        "GeneratedBy": [{"Name": "theramark", "Version": __version__,
                         "Description": f"theramark.simulate.simulate_study(preset='{preset.name}'"
                                        f", seed={seed}, resolution={resolution})"}],
    }


def _fmriprep_description() -> dict[str, Any]:
    return {
        "Name": "fMRIPrep - fMRI PREProcessing workflow (simulated)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {"Name": "fMRIPrep", "Version": "23.2.0",
             "Description": "simulated fMRIPrep outputs (file layout, metadata and confounds "
                            "as fMRIPrep 23 writes them); made by theramark"},
            {"Name": "theramark", "Version": __version__},
        ],
        "SourceDatasets": [{"URL": "bids:raw:."}],
    }


def simulate_study(out_dir: str | os.PathLike, preset: str = "demo",
                   n_per_group: int | None = None, resolution: int = 4, seed: int = 0,
                   n_jobs: int = 1, n_volumes: int | None = None) -> Path:
    """Simulate a psychotherapy fMRI study as BIDS 1.9 with fMRIPrep derivatives.

    Parameters
    ----------
    out_dir : path-like
        BIDS root to create (files there are overwritten).
    preset : {"demo", "null", "large"}
        ``demo``: 8 participants per group, large planted effects, fast. ``null``: the same design
        and site effects without planted effects. ``large``: realistic effect sizes, 3 sites, group
        size from ``n_per_group`` (default 50).
    n_per_group : int, optional
        Participants per group (CBT, MBCT, waitlist, HC).
    resolution : {4, 2}
        Voxel size (mm) of the derivatives in MNI152NLin2009cAsym space.
    seed : int
        Random seed; the same seed writes byte-identical files.
    n_jobs : int
        Parallel processes over runs (joblib semantics: -1 uses every core).
    n_volumes : int, optional
        Volumes per run (overrides the preset; for fast tests).

    Returns
    -------
    pathlib.Path
        The BIDS root (``out_dir``).
    """
    preset_obj = get_preset(preset, n_per_group=n_per_group, n_volumes=n_volumes)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    space = _space(int(resolution))
    n_slices = space.raw_index[2][2]
    slice_times = slice_timing(n_slices)
    reference_time = start_time(slice_times)

    truth = make_participants(preset_obj, np.random.default_rng([seed, 0]))
    targets = session_targets(truth, np.random.default_rng([seed, 1]))
    pheno_rng = np.random.default_rng([seed, 3])
    tables = pheno.instrument_tables(targets, pheno_rng)
    for instrument in pheno.INSTRUMENTS:
        write_tsv(root / "phenotype" / f"{instrument.id}.tsv", tables[instrument.id])
        write_json(root / "phenotype" / f"{instrument.id}.json", pheno.instrument_sidecar(instrument))
    write_tsv(root / "phenotype" / "financial_strain.tsv", pheno.financial_strain_table(targets))
    write_json(root / "phenotype" / "financial_strain.json", pheno.FINANCIAL_STRAIN_SIDECAR)
    write_tsv(root / "phenotype" / "ema.tsv", pheno.ema_table(truth, pheno_rng,
                                                                planted=preset_obj.planted))
    write_json(root / "phenotype" / "ema.json", pheno.EMA_SIDECAR)
    _write_metadata(root, preset_obj, seed, int(resolution), truth, slice_times)

    specs = plan_runs(truth, preset_obj, seed, reference_time)
    if n_jobs is None or n_jobs == 1:
        results = (write_run(root, s, int(resolution), reference_time) for s in specs)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(write_run)(root, s, int(resolution), reference_time) for s in specs)
    summaries = list(progress(results, desc="simulating runs", total=len(specs), unit="run"))
    runs = pd.DataFrame(summaries)
    write_tsv(root / "sourcedata" / "runs.tsv", runs)
    write_tsv(root / "sourcedata" / "participant_truth.tsv", truth)
    write_json(root / "sourcedata" / "ground_truth.json",
               ground_truth(preset_obj, seed, int(resolution), space.rois, runs))
    write_json(root / "derivatives" / "fmriprep" / "dataset_description.json",
               _fmriprep_description())
    # written last: its presence marks a complete dataset (``theramark demo`` reuses one)
    write_json(root / "dataset_description.json",
               _dataset_description(preset_obj, seed, int(resolution)))
    return root
