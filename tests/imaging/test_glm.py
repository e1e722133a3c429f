"""Task GLM against nilearn's FirstLevelModel, on synthetic and real (Haxby 2001) data."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.imaging import _image, glm

T_R = 2.0
N_VOLUMES = 160


def _events() -> pd.DataFrame:
    onsets = np.arange(10, N_VOLUMES * T_R - 30, 24.0)
    kinds = np.resize(["gain", "neutral"], onsets.size)
    return pd.DataFrame({"onset": onsets, "duration": 8.0, "trial_type": kinds})


@pytest.fixture(scope="module")
def synthetic_task():
    """Three ROI signals: a planted gain > neutral effect in the first, null in the others."""
    rng = np.random.default_rng(42)
    events = _events()
    design = glm.design_matrix(events, N_VOLUMES, T_R, slice_time_ref=0.5)
    signals = 500 + rng.normal(scale=2.0, size=(N_VOLUMES, 3)).cumsum(axis=0) * 0.1
    signals += rng.normal(scale=3.0, size=signals.shape)
    signals[:, 0] += 6.0 * design["gain"].to_numpy()
    confounds = pd.DataFrame(rng.normal(size=(N_VOLUMES, 2)), columns=["trans_x", "rot_z"])
    sample_mask = np.setdiff1d(np.arange(N_VOLUMES), [40, 41, 90])
    return events, signals, confounds, sample_mask


def test_roi_statistics_equal_first_level_model(synthetic_task):
    from nilearn.glm.first_level import FirstLevelModel

    events, signals, confounds, sample_mask = synthetic_task
    design = glm.design_matrix(events, N_VOLUMES, T_R, slice_time_ref=0.5, confounds=confounds)
    vectors = glm.contrast_vectors(["gain - neutral"], design.columns)
    ours = glm.roi_statistics(signals[sample_mask], ["a", "b", "c"], design.iloc[sample_mask],
                              vectors)
    img = nib.Nifti1Image(signals.T.reshape(3, 1, 1, N_VOLUMES).astype(np.float64), np.eye(4))
    mask = nib.Nifti1Image(np.ones((3, 1, 1), np.uint8), np.eye(4))
    results = {}
    for key, scaling in (("raw", False), ("percent", 0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = FirstLevelModel(t_r=T_R, slice_time_ref=0.5, hrf_model="glover",
                                    drift_model="cosine", high_pass=0.01, noise_model="ar1",
                                    signal_scaling=scaling, mask_img=mask, minimize_memory=False)
            model.fit(img, events=events, confounds=confounds, sample_masks=[sample_mask])
            results[key] = model.compute_contrast("gain - neutral", output_type="all")
    unscaled = results["raw"]
    np.testing.assert_allclose(ours["effect"], unscaled["effect_size"].get_fdata().ravel(),
                               rtol=1e-6)
    np.testing.assert_allclose(ours["variance"],
                               unscaled["effect_variance"].get_fdata().ravel(), rtol=1e-6)
    np.testing.assert_allclose(ours["z"], unscaled["z_score"].get_fdata().ravel(), rtol=1e-6)
    np.testing.assert_allclose(ours["psc"], results["percent"]["effect_size"].get_fdata().ravel(),
                               rtol=1e-6)
    # the planted effect is found, the null regions are not
    assert ours["z"].iloc[0] > 5 and np.all(np.abs(ours["z"].iloc[1:]) < 3)


def test_fixed_effects_equal_nilearn():
    from nilearn.glm import compute_fixed_effects

    rng = np.random.default_rng(3)
    effects = rng.normal(size=(3, 2, 2, 2))
    variances = rng.uniform(0.5, 2.0, size=(3, 2, 2, 2))
    affine = np.eye(4)
    imgs = [nib.Nifti1Image(e, affine) for e in effects]
    var_imgs = [nib.Nifti1Image(v, affine) for v in variances]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = compute_fixed_effects(imgs, var_imgs, mask=nib.Nifti1Image(np.ones((2, 2, 2),
                                    np.uint8), affine), precision_weighted=True)
    effect, variance, z = glm.fixed_effects(effects, variances)
    np.testing.assert_allclose(effect, ref[0].get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(variance, ref[1].get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(z, ref[2].get_fdata(), rtol=1e-6)  # effect / sd

    # with each run's residual degrees of freedom, z is nilearn's z_score of that t
    # (effects scaled so that |t| reaches the far tail, where the two conversions differ most)
    dofs = [12, 7, 20]
    big = effects * 6.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = compute_fixed_effects([nib.Nifti1Image(e, affine) for e in big], var_imgs,
                                    mask=nib.Nifti1Image(np.ones((2, 2, 2), np.uint8), affine),
                                    precision_weighted=True, dofs=dofs)
    _, _, z_dof = glm.fixed_effects(big, variances, dofs=dofs)
    np.testing.assert_allclose(z_dof, ref[3].get_fdata(), rtol=1e-6, atol=1e-9)
    t = ref[2].get_fdata()
    assert np.abs(t).max() > 6
    # the t → z conversion shrinks |z| below |t|, and more so in the tail
    assert np.all(np.abs(z_dof) <= np.abs(t) + 1e-12)
    with pytest.raises(BadInputError, match="degrees of freedom"):
        glm.fixed_effects(big, variances, dofs=[12, 7])


def test_t_to_z_matches_the_tail_probability():
    from scipy import stats

    t = np.array([-40.0, -3.0, -0.5, 0.0, 0.5, 3.0, 40.0])
    z = glm.t_to_z(t, 10)
    np.testing.assert_allclose(stats.norm.sf(z), stats.t.sf(t, 10), rtol=1e-9)
    assert np.all(np.isfinite(z)) and z[0] == -z[-1] and z[3] == 0
    # a large dof gives z ≈ t
    np.testing.assert_allclose(glm.t_to_z(t[1:-1], 1e7), t[1:-1], atol=1e-5)


def test_combine_runs_uses_the_summed_degrees_of_freedom():
    rng = np.random.default_rng(5)
    tables = [pd.DataFrame({"roi": ["a", "b"], "contrast": "c", "effect": rng.normal(2, 1, 2),
                            "psc": rng.normal(0.5, 0.1, 2), "variance": rng.uniform(0.1, 0.3, 2),
                            "z": 0.0, "dof": float(dof)}) for dof in (30, 40)]
    from scipy import stats

    combined = glm.combine_runs(tables)
    effects = np.stack([t["effect"] for t in tables])
    variances = np.stack([t["variance"] for t in tables])
    # by hand: precision weights, then the t's tail probability on 30 + 40 dof read as a z
    precision = 1.0 / variances
    effect = (effects * precision).sum(axis=0) / precision.sum(axis=0)
    variance = 1.0 / precision.sum(axis=0)
    t = effect / np.sqrt(variance)
    np.testing.assert_allclose(combined["effect"], effect)
    np.testing.assert_allclose(stats.norm.sf(combined["z"]), stats.t.sf(t, 70), rtol=1e-9)
    assert (combined["dof"] == 70).all()
    # a dof per run or per run and row gives the same fixed effects
    np.testing.assert_allclose(glm.fixed_effects(effects, variances, dofs=[30, 40])[2],
                               combined["z"])
    # tables of an earlier version, without dof: the normal approximation, no dof column
    old = glm.combine_runs([t.drop(columns="dof") for t in tables])
    np.testing.assert_allclose(old["z"], effect / np.sqrt(variance))
    assert "dof" not in old


def test_slice_time_reference_comes_from_metadata():
    assert glm.slice_time_reference({"StartTime": 0.75, "SliceTiming": [0, 1]}, 1.5) == (
        0.5, "StartTime")
    assert glm.slice_time_reference({"SliceTimingRef": 0.3}, 2.0)[0] == 0.3
    value, source = glm.slice_time_reference({"SliceTiming": [0.0, 0.5, 1.0, 1.5]}, 2.0)
    assert value == pytest.approx(0.375) and "SliceTiming" in source
    value, source = glm.slice_time_reference({}, 2.0)
    assert value == 0 and "assumed" in source
    with pytest.raises(BadInputError, match="StartTime"):
        glm.slice_time_reference({"StartTime": 3.0}, 2.0)


def test_events_beyond_the_run_are_rejected_naming_the_file(tmp_path):
    path = tmp_path / "sub-01_task-mid_events.tsv"
    path.write_text("onset\tduration\ttrial_type\n10\t2\tgain\n500\t2\tgain\n")
    with pytest.raises(BadInputError, match=r"sub-01_task-mid_events\.tsv.*end of the run"):
        glm.read_events(path, n_volumes=100, t_r=2.0)
    path.write_text("onset\tduration\ttrial_type\nn/a\t2\tgain\n")
    with pytest.raises(BadInputError, match="onset is missing"):
        glm.read_events(path, n_volumes=100, t_r=2.0)


def test_unknown_condition_in_contrast_is_named():
    design = glm.design_matrix(_events(), N_VOLUMES, T_R)
    with pytest.raises(BadInputError, match="loss"):
        glm.contrast_vectors(["loss - neutral"], design.columns, source="events.tsv")


def test_contrast_names():
    assert glm.contrast_name("gain_anticipation - neutral_anticipation") == \
        "gain_anticipation-neutral_anticipation"
    assert glm.contrast_label("gain_anticipation - neutral_anticipation") == \
        "gainAnticipationMinusNeutralAnticipation"


def _haxby_runs():
    root = shared_path("data/haxby2001_sub001/haxby2001/sub001")
    runs = []
    for index in range(1, 13):
        folder = root / "BOLD" / f"task001_run{index:03d}"
        motion = pd.DataFrame(np.loadtxt(folder / "bold_moest.txt"),
                              columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])
        runs.append((folder / "bold_25mm.nii.gz", folder / "bold_events.tsv", motion))
    return root, runs


def test_haxby_multirun_maps_equal_first_level_model_and_vt_responds():
    """Real BOLD (Haxby 2001, 12 runs): voxel z maps with fixed effects over runs equal nilearn's.

    At 25 mm the ventral temporal mask is one voxel that mixes fusiform face and parahippocampal
    place responses, so face > house is not separable there (z ≈ -0.4); what the data do show is
    the visual response of ventral temporal cortex to faces and to houses against the rest blocks.
    """
    from nilearn.glm.first_level import FirstLevelModel

    root, runs = _haxby_runs()
    brain = root / "masks" / "25mm" / "brain.nii.gz"
    vt = np.asarray(nib.load(root / "masks" / "25mm" / "vt.nii.gz").dataobj) > 0
    per_run = {"face-house": ([], []), "face": ([], [])}
    for bold, events_path, motion in runs:
        data, _, mask_img = _image.load_masked_bold(bold, brain)
        events = glm.read_events(events_path, data.shape[0], 2.5)
        design = glm.design_matrix(events, data.shape[0], 2.5, 0.5, motion)
        fitted = glm.fit_contrasts(data, design, glm.contrast_vectors(["face - house", "face"],
                                                                      design.columns))
        for name, (effects, variances) in per_run.items():
            effects.append(fitted[name]["effect"])
            variances.append(fitted[name]["variance"])
    z_maps = {name: _image.unmask(glm.fixed_effects(np.array(e), np.array(v))[2], mask_img)
              for name, (e, v) in per_run.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FirstLevelModel(t_r=2.5, slice_time_ref=0.5, mask_img=str(brain),
                                signal_scaling=False, high_pass=0.01)
        model.fit([str(r[0]) for r in runs], events=[pd.read_csv(r[1], sep="\t") for r in runs],
                  confounds=[r[2] for r in runs])
        reference = model.compute_contrast("face - house", stat_type="t", output_type="all")
    # nilearn's multi-run contrast is the plain mean of the runs' effects (variance Σv / n²);
    # combining our per-run fits the same way checks every run's fit on real data
    inside = np.asarray(nib.load(brain).dataobj) > 0
    effects, variances = (np.array(a) for a in per_run["face-house"])
    n_runs = len(runs)
    np.testing.assert_allclose(_image.unmask(effects.mean(axis=0), mask_img).get_fdata()[inside],
                               reference["effect_size"].get_fdata()[inside], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _image.unmask(variances.sum(axis=0) / n_runs**2, mask_img).get_fdata()[inside],
        reference["effect_variance"].get_fdata()[inside], rtol=1e-5)
    assert z_maps["face"].get_fdata()[vt].mean() > 2


def test_null_rois_give_nominal_false_positive_rate():
    """AR(1) noise without any response: |z| > 1.96 in about 5% of regions."""
    rng = np.random.default_rng(7)
    n_rois = 400
    noise = rng.normal(size=(N_VOLUMES, n_rois))
    series = np.empty_like(noise)
    series[0] = noise[0]
    for t in range(1, N_VOLUMES):  # AR(1), rho = 0.3: the GLM's noise model must absorb it
        series[t] = 0.3 * series[t - 1] + noise[t]
    design = glm.design_matrix(_events(), N_VOLUMES, T_R, slice_time_ref=0.5)
    stats = glm.roi_statistics(100 + series, [f"r{i}" for i in range(n_rois)], design,
                               glm.contrast_vectors(["gain - neutral"], design.columns))
    rate = float((np.abs(stats["z"]) > 1.96).mean())
    assert 0.02 <= rate <= 0.09, rate
