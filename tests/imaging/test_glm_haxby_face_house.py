"""Face versus house on real BOLD (Haxby et al. 2001, subject 1, one native-resolution slice).

The data are PyMVPA's single axial slice (40 × 20 voxels of 3.1 × 3.75 × 3.75 mm, the posterior
half of the brain) for each of the 12 runs, with the runs' own events (one 22.5 s block per
category per run, TR 2.5 s) and realignment estimates. theramark's GLM (design, AR(1) fit,
contrast, precision-weighted fixed effects over runs) is run on every voxel of the slice's
brain mask (``tutorial_singleslice/mask.nii.gz``, 530 voxels, same grid and affine).

Where ventral temporal cortex is in the slice
---------------------------------------------
The 25 mm ventral temporal (VT) mask cannot be carried to the slice: the slice's affine is
centred on the cropped 40 × 20 × 1 array itself (x ±60 mm, y ±36 mm, z = 0), so it does not say
where the crop lies in the acquisition grid, and ``resample_to_img`` maps the one VT voxel onto no
voxel of the slice (asserted below; z = 0 even falls on the boundary of two 25 mm slices). The
regions are therefore defined functionally on independent data, the usual functional-localizer
practice: voxels are selected on the odd runs and tested on the even runs, so selection cannot
inflate the test statistic.

What the data show (numbers from theramark; the tests assert the signs and z > 3.1)
--------------------------------------------------------------------------------------
z is the fixed-effects t read through the summed residual degrees of freedom (12 × 100).
The slice's column 19.5 is x = 0 (midline); rows grow from the occipital pole (row 0) forwards.

- house > face dominates: over the 12 runs 102 voxels have face − house z < −3.1 (minimum
  −11.9), mostly two bilateral bands in the anterior rows about 10–25 mm from the midline, where
  the collateral sulcus / parahippocampal place area lies on the ventral surface. Selected on the
  odd runs (72 voxels), their mean signal gives z = −5.8 on the even runs.
- face > house is sparse: 9 voxels over 12 runs (maximum z = 6.4), mostly at the occipital pole
  just right of the midline (the foveal confluence, which centrally viewed faces drive more than
  houses). Selected on the odd runs (8 voxels), their mean signal gives z = +4.3 on the even runs.
- face > house in lateral ventral temporal cortex (a fusiform face area) is NOT in this slice:
  anterior rows (≥ 13) more than 6 mm lateral to the odd-run house peaks have even-run voxel
  z ≤ 1.9 and a mean-signal z of −3.2 (house > face there too). The issue's literal claim
  ("face > house is positive in VT") is therefore not tested here; it is not true of these data.
- Swapping the face and house labels within runs (all 2¹² swaps, exact) removes the effect: the
  observed maximum |z| over the slice (11.9) is matched only by the all-swapped pattern
  (FWER p = 2/4096); the median swap gives 5.0.
"""

from __future__ import annotations

import functools
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark.imaging import glm

T_R = 2.5
SLICE_TIME_REF = 0.5
N_RUNS = 12
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
CONTRAST = "face - house"


@pytest.fixture(autouse=True, scope="module")
def _clear_cache():
    yield
    _runs.cache_clear()
    _per_run_face_house.cache_clear()


def _root():
    return shared_path("data/haxby2001_sub001")


@functools.lru_cache(maxsize=1)
def _runs():
    """Per run: BOLD path, in-mask signals (121, n_voxels), design, events table, motion."""
    root = _root()
    mask = np.asarray(nib.load(root / "tutorial_singleslice" / "mask.nii.gz").dataobj) > 0
    runs = []
    for index in range(1, N_RUNS + 1):
        folder = root / "haxby2001" / "sub001" / "BOLD" / f"task001_run{index:03d}"
        bold = folder / "bold_1slice.nii.gz"
        signals = np.asarray(nib.load(bold).dataobj, dtype=np.float64)[mask].T
        motion = pd.DataFrame(np.loadtxt(folder / "bold_moest.txt"), columns=MOTION)
        events = glm.read_events(folder / "bold_events.tsv", signals.shape[0], T_R)
        design = glm.design_matrix(events, signals.shape[0], T_R, SLICE_TIME_REF, motion)
        runs.append({"bold": bold, "signals": signals, "design": design, "events": events,
                     "motion": motion})
    return mask, runs


@functools.lru_cache(maxsize=1)
def _per_run_face_house():
    """theramark's per-run face − house effect, variance (12, n_voxels) and residual dof (12,)."""
    _, runs = _runs()
    effects, variances, dofs = [], [], []
    for run in runs:
        vector = glm.contrast_vectors([CONTRAST], run["design"].columns)
        fitted = glm.fit_contrasts(run["signals"], run["design"], vector)[glm.contrast_name(CONTRAST)]
        effects.append(fitted["effect"])
        variances.append(fitted["variance"])
        dofs.append(fitted["dof"][0])
    return np.array(effects), np.array(variances), np.array(dofs)


def _fixed_z(runs_index):
    effects, variances, dofs = _per_run_face_house()
    return glm.fixed_effects(effects[runs_index], variances[runs_index], dofs=dofs[runs_index])[2]


ODD = np.arange(0, N_RUNS, 2)  # runs 1, 3, ..., 11: select voxels
EVEN = np.arange(1, N_RUNS, 2)  # runs 2, 4, ..., 12: test them


def _roi_z(selected, runs_index):
    """Fixed-effects face − house z of the mean signal of ``selected`` voxels over some runs."""
    _, runs = _runs()
    tables = []
    for index in runs_index:
        run = runs[index]
        roi_signal = run["signals"][:, selected].mean(axis=1, keepdims=True)
        tables.append(glm.roi_statistics(roi_signal, ["roi"], run["design"],
                                         glm.contrast_vectors([CONTRAST], run["design"].columns)))
    return float(glm.combine_runs(tables)["z"].iloc[0])


def test_vt_mask_affine_does_not_reach_the_slice():
    """Why the regions are defined functionally: the 25 mm VT mask resamples to no slice voxel."""
    from nilearn.image import resample_to_img

    root = _root()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vt = resample_to_img(str(root / "haxby2001" / "sub001" / "masks" / "25mm" / "vt.nii.gz"),
                             str(root / "tutorial_singleslice" / "mask.nii.gz"),
                             interpolation="nearest")
    assert np.asarray(vt.dataobj).sum() == 0


def test_fixed_effects_face_house_map_equals_nilearn():
    """Per-voxel face − house over 12 runs equals nilearn's FirstLevelModel + fixed effects.

    Reference: one ``FirstLevelModel`` per run (same events, motion, TR, slice-time reference,
    AR(1), no signal scaling) and ``nilearn.glm.compute_fixed_effects(precision_weighted=True)``
    with each run's residual degrees of freedom. theramark's fixed-effects z converts the t
    through the summed degrees of freedom (12 × 100) as nilearn does: equal to 1e-6. Without the
    degrees of freedom theramark's z is the t itself (nilearn's ``stat``), whose normal reading
    overstates |z| in the far tail (12.3 for 11.9 at the peak here).
    """
    from nilearn.glm import compute_fixed_effects
    from nilearn.glm.first_level import FirstLevelModel

    mask, runs = _runs()
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), nib.load(runs[0]["bold"]).affine)
    effects, variances, _ = _per_run_face_house()
    reference_effects, reference_variances, dofs = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for run in runs:
            model = FirstLevelModel(t_r=T_R, slice_time_ref=SLICE_TIME_REF, mask_img=mask_img,
                                    signal_scaling=False, high_pass=0.01, noise_model="ar1",
                                    minimize_memory=False)
            model.fit(str(run["bold"]), events=run["events"][["onset", "duration", "trial_type"]],
                      confounds=run["motion"])
            maps = model.compute_contrast(CONTRAST, stat_type="t", output_type="all")
            reference_effects.append(maps["effect_size"])
            reference_variances.append(maps["effect_variance"])
            design = model.design_matrices_[0]
            dofs.append(len(design) - np.linalg.matrix_rank(design.to_numpy()))
        _, _, stat, z_score = compute_fixed_effects(
            reference_effects, reference_variances, mask_img, precision_weighted=True, dofs=dofs)
    inside = np.asarray(mask_img.dataobj) > 0
    np.testing.assert_allclose(
        effects, np.array([img.get_fdata()[inside] for img in reference_effects]),
        rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(_per_run_face_house()[2], dofs)
    z = _fixed_z(np.arange(N_RUNS))
    np.testing.assert_allclose(z, z_score.get_fdata()[inside], rtol=1e-6, atol=1e-6)
    t = glm.fixed_effects(effects, variances)[2]
    np.testing.assert_allclose(t, stat.get_fdata()[inside], rtol=1e-6, atol=1e-6)
    # the normal reading of t is liberal in the far tail, never in the other direction
    assert np.all(np.abs(t) >= np.abs(z) - 1e-9) and np.abs(t).max() - np.abs(z).max() > 0.2


def test_house_over_face_band_and_face_over_house_pole_replicate_in_independent_runs():
    """Regions selected on odd runs (|z| > 3.1) keep their sign and significance on even runs."""
    mask, _ = _runs()
    z_select = _fixed_z(ODD)
    house_roi, face_roi = z_select < -3.1, z_select > 3.1
    assert house_roi.sum() >= 20 and face_roi.sum() >= 3, (house_roi.sum(), face_roi.sum())

    # where they are: the house band in the anterior half of the slice on both sides of the
    # midline (x = 0 lies between columns 19 and 20), the face cluster at the posterior pole
    i, j, _ = np.nonzero(mask)
    assert np.median(j[house_roi]) >= 10
    assert (i[house_roi] < 19).sum() >= 5 and (i[house_roi] > 20).sum() >= 5
    assert np.median(j[face_roi]) <= 6

    z_house_test = _roi_z(house_roi, EVEN)
    z_face_test = _roi_z(face_roi, EVEN)
    assert z_house_test < -3.1, z_house_test
    assert z_face_test > 3.1, z_face_test


def test_swapping_face_and_house_labels_removes_the_effect():
    """Exact within-run label swaps (2¹² patterns): the observed max |z| is the most extreme.

    Swapping the two labels of one run negates its face − house effect and keeps its variance,
    so the fixed-effects z of every swap pattern follows from the per-run fits without refitting.
    """
    effects, variances, dofs = _per_run_face_house()
    # the shortcut, checked by refitting the first run with its face and house blocks swapped
    _, runs = _runs()
    events = runs[0]["events"].copy()
    events["trial_type"] = events["trial_type"].replace({"face": "house", "house": "face"})
    design = glm.design_matrix(events, runs[0]["signals"].shape[0], T_R,
                               SLICE_TIME_REF, runs[0]["motion"])
    swapped = glm.fit_contrasts(runs[0]["signals"], design,
                                glm.contrast_vectors([CONTRAST], design.columns))
    swapped = swapped[glm.contrast_name(CONTRAST)]
    np.testing.assert_allclose(swapped["effect"], -effects[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(swapped["variance"], variances[0], rtol=1e-6)

    signs = 1.0 - 2.0 * ((np.arange(2**N_RUNS)[:, None] >> np.arange(N_RUNS)) & 1)
    precision = 1.0 / variances
    z = glm.t_to_z((signs @ (effects * precision)) / np.sqrt(precision.sum(axis=0)), dofs.sum())
    max_abs = np.abs(z).max(axis=1)
    observed = max_abs[0]  # pattern 0 keeps every label
    p_value = float((max_abs >= observed - 1e-9).mean())
    assert p_value <= 2 / 2**N_RUNS + 1e-12, p_value
    assert np.median(max_abs) < observed / 2
    # and the map under a swap pattern balanced over runs holds far fewer |z| > 3.1 voxels
    balanced = (np.abs(signs.sum(axis=1)) == 0)
    counts = (np.abs(z[balanced]) > 3.1).sum(axis=1)
    assert (np.abs(z[0]) > 3.1).sum() > 4 * np.median(counts)
