"""The simulated fMRIPrep confounds match fMRIPrep 21's table and load in nilearn."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark.simulate.confounds import compcor, cosine_basis, dvars

REAL_V21 = "data/fmriprep_confounds/nilearn_test_data/test-v21_desc-confounds_timeseries.tsv"


def _family(column: str) -> str:
    """Column name without its component/outlier number (``a_comp_cor_03`` -> ``a_comp_cor_``)."""
    return re.sub(r"\d+$", "", column)


def _confounds(study):
    return sorted(study.glob("derivatives/fmriprep/sub-*/ses-*/func/*_desc-confounds_timeseries.tsv"))


def test_columns_cover_fmriprep21_and_first_row_na_matches(small_study):
    real = pd.read_csv(shared_path(REAL_V21), sep="\t", na_values="n/a")
    real_families = {_family(c) for c in real.columns}
    real_first_na = {c for c in real.columns if pd.isna(real[c].iloc[0])}
    for path in _confounds(small_study):
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        assert real_families <= {_family(c) for c in table.columns}, path.name
        shared = [c for c in table.columns if c in real.columns]
        first_na = {c for c in shared if pd.isna(table[c].iloc[0])}
        assert first_na == {c for c in shared if c in real_first_na}, path.name
        # n/a only in the first row
        assert not table.iloc[1:].isna().any().any(), path.name


def test_non_steady_state_and_compcor_metadata(small_study):
    for path in _confounds(small_study)[:6]:
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        metadata = json.loads(path.with_suffix(".json").read_text())
        nss = [c for c in table.columns if c.startswith("non_steady_state_outlier")]
        assert 1 <= len(nss) <= 3
        n = len(nss)
        np.testing.assert_array_equal(table[nss].to_numpy()[:n], np.eye(n))
        compcor_columns = [c for c in table.columns if "comp_cor" in c]
        assert (table[compcor_columns].iloc[:n] == 0).all().all()
        for column in compcor_columns:
            entry = metadata[column]
            assert entry["Retained"] is True and entry["Method"] in ("aCompCor", "tCompCor")
            assert 0 < entry["VarianceExplained"] <= entry["CumulativeVarianceExplained"] <= 1
        assert {metadata[c]["Mask"] for c in compcor_columns if c.startswith("a_")} == {"combined"}
        assert metadata["global_signal"] == {"Method": "Mean"}


def test_framewise_displacement_matches_motion_parameters(small_study):
    """Power's FD recomputed from the table's own trans/rot columns (independent formula)."""
    for path in _confounds(small_study)[:6]:
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        params = table[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
        delta = np.abs(np.diff(params, axis=0))
        expected = delta[:, :3].sum(1) + 50.0 * delta[:, 3:].sum(1)
        np.testing.assert_allclose(table["framewise_displacement"].to_numpy()[1:], expected)
        outliers = [c for c in table.columns if c.startswith("motion_outlier")]
        flagged = table[outliers].to_numpy().sum(axis=1) if outliers else np.zeros(len(table))
        over = (table["framewise_displacement"] > 0.5) | (table["std_dvars"] > 1.5)
        np.testing.assert_array_equal(flagged > 0, over.to_numpy())


def test_motion_is_mostly_calm(small_study):
    runs = pd.read_csv(small_study / "sourcedata" / "runs.tsv", sep="\t")
    calm = runs[~runs["high_motion"]]
    assert 0.05 < calm["mean_fd"].median() < 0.2
    assert runs["high_motion"].sum() == 1
    assert runs.loc[runs["high_motion"], "mean_fd"].iloc[0] > 0.25


def test_compcor_against_sklearn_pca():
    """Components span the same space as scikit-learn's PCA of the same normalised data."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 300)) + np.outer(np.sin(np.arange(50)), rng.normal(size=300)) * 3
    basis = cosine_basis(50, 2.0)
    components, singular = compcor(data, basis, variance=0.5)
    design = np.column_stack([np.ones(50), basis])
    x = data - design @ np.linalg.lstsq(design, data, rcond=None)[0]
    x = x / x.std(axis=0)
    pca = PCA(n_components=components.shape[1], svd_solver="full").fit(x)
    scores = pca.transform(x)
    for k in range(components.shape[1]):
        r = np.corrcoef(scores[:, k], components[:, k])[0, 1]
        assert abs(r) > 0.999
    np.testing.assert_allclose(singular[: components.shape[1]], pca.singular_values_, rtol=1e-6)


def test_dvars_against_direct_formula():
    rng = np.random.default_rng(1)
    data = (1000 + 10 * rng.normal(size=(30, 200))).astype(np.float32)
    raw, standardised = dvars(data)
    scaled = data.astype(np.float64) * 1000.0 / np.median(data[::7])
    expected = np.sqrt((np.diff(scaled, axis=0) ** 2).mean(axis=1))
    np.testing.assert_allclose(raw[1:], expected, rtol=1e-4)
    assert np.isnan(raw[0]) and np.isnan(standardised[0])
    # white noise: standardised DVARS close to 1
    assert 0.8 < np.median(standardised[1:]) < 1.2


@pytest.mark.parametrize("strategy", [("motion", "wm_csf", "scrub"), ("high_pass", "compcor")])
def test_nilearn_load_confounds_reads_every_run(small_study, strategy):
    from nilearn.interfaces.fmriprep import load_confounds

    images = sorted(str(p) for p in small_study.glob(
        "derivatives/fmriprep/sub-*/ses-*/func/*_desc-preproc_bold.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, masks = load_confounds(images, strategy=strategy)
    assert len(confounds) == len(images)
    for table, mask in zip(confounds, masks, strict=True):
        assert len(table) == 40 and not table.isna().any().any()
        if "scrub" in strategy:
            assert mask is not None and 0 < len(mask) < 40
        else:
            assert any(c.startswith("a_comp_cor") for c in table.columns)


def test_nilearn_first_level_from_bids_accepts_the_dataset(small_study):
    from nilearn.glm.first_level import first_level_from_bids

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models, images, events, confounds = first_level_from_bids(
            small_study, "mid", space_label="MNI152NLin2009cAsym",
            derivatives_folder="derivatives/fmriprep")
    assert len(models) == 8
    sidecar = json.loads(next(small_study.glob(
        "derivatives/fmriprep/sub-*/ses-*/func/*task-mid*_desc-preproc_bold.json")).read_text())
    assert models[0].t_r == 2.0
    assert models[0].slice_time_ref == pytest.approx(sidecar["StartTime"] / 2.0)
    patients = [i for i, imgs in enumerate(images) if len(imgs) == 3]
    assert len(patients) == 6
    assert set(events[0][0]["trial_type"]) >= {"gain_anticipation", "neutral_anticipation"}
