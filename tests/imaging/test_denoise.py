"""Denoising against nilearn (load_confounds presets and signal.clean) on real fMRIPrep tables and a
real surface resting-state run."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.imaging.denoise import clean, nuisance_design, read_confounds

NILEARN_TABLES = {
    "v1": "test_desc-confounds_regressors",  # fMRIPrep 1.x naming, with AROMA columns
    "v21": "test-v21_desc-confounds_timeseries",  # fMRIPrep 21.x naming
}
NEUROCAPS = (
    "data/fmriprep_confounds/neurocaps_ds000031/"
    "sub-01_ses-002_task-rest_run-001_desc-confounds_timeseries.tsv"
)
SURFACE = "data/mbb_surface_rest/sub-010188_ses-02_task-rest_acq-AP_run-01"
TREND_LIKE = [26, 27]


def _bids_copy(tmp_path: Path, key: str) -> tuple[Path, Path, Path]:
    """Put a nilearn test table beside BIDS-named (empty) images, as load_confounds expects.

    The copy goes to pytest's temporary folder, never into the repository.
    """
    name = NILEARN_TABLES[key]
    source = shared_path(f"data/fmriprep_confounds/nilearn_test_data/{name}.tsv")
    suffix = name.split("_desc-confounds")[1]
    table = tmp_path / f"sub-01_task-rest_desc-confounds{suffix}.tsv"
    shutil.copy(source, table)
    if source.with_suffix(".json").exists():
        shutil.copy(source.with_suffix(".json"), table.with_suffix(".json"))
    image = tmp_path / "sub-01_task-rest_desc-preproc_bold.nii.gz"
    aroma = tmp_path / "sub-01_task-rest_desc-smoothAROMAnonaggr_bold.nii.gz"
    image.touch()
    aroma.touch()
    return table, image, aroma


def _nilearn_strategy(image: Path, preset: str, **kwargs):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_confounds_strategy(str(image), preset, **kwargs)


def _assert_same_design(ours, theirs):
    design, mask = ours
    ref_design, ref_mask = theirs
    assert list(design.columns) == list(ref_design.columns)
    np.testing.assert_allclose(design.to_numpy(), ref_design.to_numpy(), atol=1e-10)
    if ref_mask is None:
        assert mask is None
    else:
        np.testing.assert_array_equal(mask, ref_mask)


# ------------------------------------------------------------------------------- nuisance design


@pytest.mark.parametrize("preset", ["simple", "scrubbing", "compcor"])
@pytest.mark.parametrize("key", ["v1", "v21"])
def test_presets_equal_nilearn(tmp_path, key, preset):
    table, image, _ = _bids_copy(tmp_path, key)
    reference = _nilearn_strategy(image, preset)
    if reference[1] is not None and reference[1].size == 0:
        # nilearn only warns when every volume is censored; theramark refuses the run.
        with pytest.raises(BadInputError, match="every volume is censored"):
            nuisance_design(table, preset)
        return
    _assert_same_design(nuisance_design(table, preset), reference)


def test_ica_aroma_preset(tmp_path):
    table, _, aroma = _bids_copy(tmp_path, "v1")
    _assert_same_design(nuisance_design(table, "ica_aroma"), _nilearn_strategy(aroma, "ica_aroma"))
    basic = nuisance_design(table, "ica_aroma", ica_aroma="basic")[0]
    assert sum(c.startswith("aroma_motion_") for c in basic.columns) == 13
    (tmp_path / "v21").mkdir()
    v21, _, _ = _bids_copy(tmp_path / "v21", "v21")
    with pytest.raises(BadInputError, match=r"(?s)v21/sub-01.*ica_aroma.*aroma_motion"):
        nuisance_design(v21, "ica_aroma")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"global_signal": "full"},
        {"motion": "basic", "wm_csf": "derivatives", "global_signal": "power2"},
    ],
)
def test_preset_overrides_equal_nilearn(tmp_path, kwargs):
    table, image, _ = _bids_copy(tmp_path, "v1")
    _assert_same_design(
        nuisance_design(table, "simple", **kwargs), _nilearn_strategy(image, "simple", **kwargs)
    )


def test_component_tuple_equals_nilearn_load_confounds(tmp_path):
    from nilearn.interfaces.fmriprep import load_confounds

    table, image, _ = _bids_copy(tmp_path, "v21")
    strategy = ("high_pass", "motion", "compcor", "global_signal", "scrub")
    kwargs = {
        "compcor": "temporal_anat_separated", "n_compcor": 2, "global_signal": "full",
        "scrub": 0, "fd_threshold": 4.0, "std_dvars_threshold": 3.0, "motion": "derivatives",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = load_confounds(str(image), strategy, **kwargs)
    ours = nuisance_design(table, strategy, **kwargs)
    _assert_same_design(ours, reference)
    assert ours[1] is not None and 0 < ours[1].size < 30


def test_scrubbing_censors_short_segments_and_non_steady_state(tmp_path):
    table, _, _ = _bids_copy(tmp_path, "v1")
    raw = read_confounds(table)
    _, mask = nuisance_design(table, "scrubbing", fd_threshold=0.2, scrub=5)
    kept = np.zeros(len(raw), dtype=bool)
    kept[mask] = True
    flagged = (raw["framewise_displacement"] > 0.2) | (raw["std_dvars"] > 1.5)
    assert not kept[flagged.to_numpy()].any()
    assert not kept[raw["non_steady_state_outlier00"].to_numpy() == 1].any()
    # every kept segment is at least 5 volumes long
    edges = np.flatnonzero(np.diff(np.r_[0, kept.astype(int), 0]))
    assert np.all(edges[1::2] - edges[::2] >= 5)


def test_old_camelcase_table_gets_fmriprep_expansions(tmp_path):
    table, _, _ = _bids_copy(tmp_path, "v21")
    raw = read_confounds(table)
    old_names = {
        "trans_x": "X", "trans_y": "Y", "trans_z": "Z", "rot_x": "RotX", "rot_y": "RotY",
        "rot_z": "RotZ", "csf": "CSF", "white_matter": "WhiteMatter",
        "framewise_displacement": "FramewiseDisplacement", "std_dvars": "stdDVARS",
        "non_steady_state_outlier00": "NonSteadyStateOutlier00",
        "non_steady_state_outlier01": "NonSteadyStateOutlier01",
        "non_steady_state_outlier02": "NonSteadyStateOutlier02",
    }
    old = raw[list(old_names)].rename(columns=old_names)
    old_path = tmp_path / "old" / "sub-01_task-rest_bold_confounds.tsv"
    old_path.parent.mkdir()
    old.to_csv(old_path, sep="\t", index=False, na_rep="n/a")
    design, mask = nuisance_design(old_path, ("motion", "wm_csf"), motion="full", wm_csf="full")
    new_design, new_mask = nuisance_design(table, ("motion", "wm_csf"), motion="full", wm_csf="full")
    # fMRIPrep's own derivative / power columns are reproduced from the base columns.
    assert list(design.columns) == list(new_design.columns)
    scale = new_design.abs().max().to_numpy()
    np.testing.assert_allclose(design.to_numpy() / scale, new_design.to_numpy() / scale, atol=1e-9)
    np.testing.assert_array_equal(mask, new_mask)


def test_design_bad_input_names_the_file(tmp_path):
    neurocaps = shared_path(NEUROCAPS)
    with pytest.raises(BadInputError, match=r"(?s)sub-01_ses-002.*csf"):
        nuisance_design(neurocaps, "simple")  # no csf column in that table
    with pytest.raises(BadInputError, match=r"(?s)sub-01_ses-002.*sidecar.*json"):
        nuisance_design(neurocaps, "compcor")  # no JSON sidecar
    with pytest.raises(BadInputError, match="unknown denoising strategy"):
        nuisance_design(neurocaps, "aggressive")
    with pytest.raises(BadInputError, match=r"40 rows but the BOLD run has 41"):
        nuisance_design(neurocaps, ("motion",), n_volumes=41)
    holes = read_confounds(neurocaps)
    holes.loc[7, "trans_x"] = np.nan
    path = tmp_path / "sub-02_task-rest_desc-confounds_timeseries.tsv"
    holes.to_csv(path, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(BadInputError, match=r"(?s)sub-02.*beyond the first row.*trans_x: 1 n/a"):
        nuisance_design(path, ("motion",), motion="basic")
    with pytest.raises(BadInputError, match="file not found"):
        nuisance_design(tmp_path / "absent_desc-confounds_timeseries.tsv")


def test_design_fills_first_row_like_nilearn():
    design, _ = nuisance_design(shared_path(NEUROCAPS), ("motion",), motion="basic", demean=False)
    raw = read_confounds(shared_path(NEUROCAPS))
    np.testing.assert_allclose(design["trans_x"], raw["trans_x"])
    assert design.attrs["source"].endswith("confounds_timeseries.tsv")


# -------------------------------------------------------------------------------------- clean


@pytest.fixture(scope="module")
def surface_run():
    """Real fMRIPrep surface run (652 volumes), 400 varying vertices, with its confounds."""
    import nibabel as nib

    img = nib.load(shared_path(f"{SURFACE}.fsa5.lh.mgz"))
    data = np.asarray(img.dataobj[:600], dtype=np.float64)[:, 0, 0, :].T  # (652, 600)
    # Medial-wall vertices are constant: cleaning them amplifies rounding noise in nilearn (what
    # comes out is arbitrary), so they are tested on their own below.
    data = data[:, data.std(axis=0) > 0][:, :400]
    confounds = np.loadtxt(shared_path(f"{SURFACE}_confounds.txt"))
    # Column 26 is constant and column 27 a linear trend: both vanish when detrending, and
    # nilearn then regresses out rounding residue (see test_trend_confounds_are_dropped).
    confounds = np.delete(confounds, TREND_LIKE, axis=1)
    # add a realistic baseline so psc and detrending have something to do
    return data * 50.0 + 800.0, confounds


def _nilearn_clean(signals, **kwargs):
    from nilearn.signal import clean as nilearn_clean

    if kwargs.get("sample_mask") is not None:
        kwargs["sample_mask"] = np.array(kwargs["sample_mask"]).copy()  # nilearn edits it in place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nilearn_clean(np.array(signals, copy=True), **kwargs)


# Censored volumes whose mirror image (n - 1 - i) is kept: nilearn's interpolation is right there.
CENSORED = np.array([0, 1, 2, 100, 101, 102, 103, 250, 251, 300])
TR = 1.4  # unverified (SOURCE.md); any value exercises the same code


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"detrend": False},
        {"standardize": None},
        {"standardize": "psc"},
        {"high_pass": 0.01, "t_r": TR},
        {"high_pass": 0.01, "low_pass": 0.08, "t_r": TR},
        {"low_pass": 0.1, "t_r": TR, "standardize": "psc"},
        {"filter": "cosine", "high_pass": 0.01, "t_r": TR},
    ],
)
@pytest.mark.parametrize("censor", [False, True])
def test_clean_equals_nilearn_on_real_surface_run(surface_run, kwargs, censor):
    data, confounds = surface_run
    mask = np.setdiff1d(np.arange(data.shape[0]), CENSORED) if censor else None
    expected = _nilearn_clean(data, confounds=confounds, sample_mask=mask, **kwargs)
    ours = clean(data, confounds=confounds, sample_mask=mask, block_size=150, **kwargs)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


def test_trend_confounds_are_dropped(surface_run):
    data, confounds = surface_run
    full = np.loadtxt(shared_path(f"{SURFACE}_confounds.txt"))
    assert np.ptp(full[:, 26]) == 0 and abs(np.corrcoef(full[:, 27], np.arange(652))[0, 1]) > 0.999
    ours_full = clean(data, confounds=full)
    np.testing.assert_allclose(ours_full, clean(data, confounds=confounds), atol=1e-10)
    # nilearn keeps the trend's rounding residue: its result moves with the design's memory order.
    a = _nilearn_clean(data, confounds=full, standardize=None)
    b = _nilearn_clean(data, confounds=np.asfortranarray(full), standardize=None)
    assert np.abs(a - b).max() > 1e-7


def test_clean_float32_in_float32_out(surface_run):
    data, confounds = surface_run
    data32 = data.astype(np.float32)
    ours = clean(data32, confounds=confounds, high_pass=0.01, low_pass=0.1, t_r=TR)
    assert ours.dtype == np.float32
    expected = _nilearn_clean(data32.astype(np.float64), confounds=confounds, high_pass=0.01,
                              low_pass=0.1, t_r=TR)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_clean_with_design_from_nuisance_design():
    path = shared_path(NEUROCAPS)
    # (this table's cosines were computed before truncation to 40 volumes: nearly collinear)
    design, mask = nuisance_design(path, ("motion",), motion="basic")
    rng = np.random.default_rng(0)
    signals = rng.standard_normal((40, 30)) + design.to_numpy()[:, :2] @ rng.standard_normal((2, 30))
    expected = _nilearn_clean(signals, confounds=design.to_numpy(), sample_mask=mask)
    np.testing.assert_allclose(clean(signals, confounds=design, sample_mask=mask), expected,
                               atol=1e-6)


def test_butterworth_censoring_interpolates_every_censored_volume(surface_run):
    """Where nilearn 0.14's mirrored-index interpolation misses volumes, compare with nilearn's
    own building blocks applied to a correctly interpolated series."""
    from scipy.interpolate import CubicSpline

    data, confounds = surface_run
    data, confounds = data[:200, :300], confounds[:200]
    censored = np.array([20, 21, 60, 139, 178, 179])  # 60 ↔ 139 and 20/21 ↔ 178/179: mirrors
    kept = np.setdiff1d(np.arange(200), censored)
    times = np.arange(200) * TR

    def interpolate(x):
        x = x.copy()
        x[censored] = CubicSpline(times[kept], x[kept])(times[censored])
        return x

    band = {"high_pass": 0.01, "low_pass": 0.1, "t_r": TR}
    filtered = _nilearn_clean(interpolate(data), standardize=None, **band)[kept]
    filtered_conf = _nilearn_clean(interpolate(confounds), standardize=None, **band)[kept]
    expected = _nilearn_clean(filtered, confounds=filtered_conf, detrend=False)
    ours = clean(data, confounds=confounds, sample_mask=kept, **band)
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)
    buggy = _nilearn_clean(data, confounds=confounds, sample_mask=kept, **band)
    assert np.abs(buggy - ours).max() > 1e-3  # documents the nilearn discrepancy


def test_clean_leading_and_trailing_censoring_is_cut_not_extrapolated(surface_run):
    data, confounds = surface_run
    data, confounds = data[:150, :50], confounds[:150]
    kept = np.arange(5, 145)
    ours = clean(data, confounds=confounds, sample_mask=kept, high_pass=0.01, t_r=TR)
    expected = clean(data[5:145], confounds=confounds[5:145], high_pass=0.01, t_r=TR)
    np.testing.assert_allclose(ours, expected, atol=1e-10)


def test_clean_removes_planted_nuisance_keeps_planted_signal():
    rng = np.random.default_rng(7)
    n = 300
    nuisance = rng.standard_normal((n, 3))
    neural = rng.standard_normal(n)
    neural -= nuisance @ np.linalg.lstsq(nuisance, neural, rcond=None)[0]
    signals = np.column_stack(
        [neural + nuisance @ [2.0, -1.0, 0.5], rng.standard_normal(n) + 3 * nuisance[:, 0]]
    )
    cleaned = clean(signals, confounds=nuisance, detrend=False)
    assert np.corrcoef(cleaned[:, 0], neural)[0, 1] > 0.99
    assert np.abs(cleaned.T @ (nuisance - nuisance.mean(0))).max() < 1e-8
    # null: pure noise unrelated to the nuisance keeps its variance almost entirely
    noise = rng.standard_normal((n, 200))
    kept_var = clean(noise, confounds=nuisance, standardize=None).var(axis=0, ddof=1)
    assert 0.97 < np.median(kept_var / noise.var(axis=0, ddof=1)) < 1.0


@pytest.mark.parametrize("kwargs", [{}, {"high_pass": 0.01, "t_r": TR}])
def test_constant_features_come_out_zero(surface_run, kwargs):
    data, confounds = surface_run
    signals = np.column_stack([np.full(data.shape[0], 800.0), data[:, :3]])
    out = clean(signals, confounds=confounds, **kwargs)
    assert np.all(out[:, 0] == 0.0) and np.all(out[:, 1:].std(axis=0) > 0.5)


def test_clean_does_not_modify_its_input(surface_run):
    data, confounds = surface_run
    before = data.copy()
    clean(data, confounds=confounds)
    np.testing.assert_array_equal(data, before)


def test_clean_bad_input():
    path = shared_path(NEUROCAPS)
    design, _ = nuisance_design(path, ("motion",), motion="basic")
    signals = np.random.default_rng(1).standard_normal((41, 5))
    with pytest.raises(BadInputError, match=r"sub-01_ses-002.*40 rows.*41 volumes"):
        clean(signals, confounds=design)
    with pytest.raises(BadInputError, match="t_r"):
        clean(signals, high_pass=0.01)
    with pytest.warns(UserWarning, match="no filtering"):
        clean(signals, filter=None, high_pass=0.01, t_r=2.0)
    with pytest.raises(BadInputError, match="sample_mask"):
        clean(signals, sample_mask=np.array([0, 5, 41]))
    bad = signals.copy()
    bad[3, 2] = np.nan
    with pytest.raises(BadInputError, match="non-finite"):
        clean(bad)
    with pytest.raises(BadInputError, match="confounds hold n/a"):
        clean(signals, confounds=np.full((41, 1), np.nan))
    frame = pd.DataFrame(np.zeros((40, 1)))
    with pytest.raises(BadInputError, match=r"^confounds: .*40 rows"):
        clean(signals, confounds=frame)


def test_parameters_a_strategy_does_not_use_are_reported():
    with pytest.warns(UserWarning, match=r"\['fd_threshold'\] have no effect"):
        nuisance_design(shared_path(NEUROCAPS), ("motion",), motion="basic", fd_threshold=0.3)
