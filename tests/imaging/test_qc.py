"""QC metrics: closed forms, fMRIPrep's own columns, real BOLD, exclusion rules, QC-FC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import shared_path
from theramark.config import defaults
from theramark.errors import BadInputError
from theramark.imaging.qc import (
    dvars,
    framewise_displacement,
    qc_fc,
    qc_fc_distance,
    run_qc,
    tsnr,
)

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
NEUROCAPS = (
    "data/fmriprep_confounds/neurocaps_ds000031/"
    "sub-01_ses-002_task-rest_run-001_desc-confounds_timeseries.tsv"
)
V21 = "data/fmriprep_confounds/nilearn_test_data/test-v21_desc-confounds_timeseries.tsv"


def test_fd_closed_form():
    motion = np.zeros((4, 6))
    motion[1, 0] = 1.0  # 1 mm along x
    motion[2, 0] = 1.0
    motion[2, 4] = 0.01  # 0.01 rad about y: 0.5 mm of arc at 50 mm
    motion[3, 0] = 1.0
    motion[3, 2] = -2.0  # 2 mm along z
    motion[3, 4] = 0.01
    fd = framewise_displacement(motion)
    assert np.isnan(fd[0])
    np.testing.assert_allclose(fd[1:], [1.0, 0.5, 2.0])
    np.testing.assert_allclose(framewise_displacement(motion, radius=80.0, first=0.0), [0, 1, 0.8, 2])


@pytest.mark.parametrize("table", [NEUROCAPS, V21])
def test_fd_equals_fmriprep_column(table):
    confounds = pd.read_csv(shared_path(table), sep="\t")
    fd = framewise_displacement(confounds[MOTION].to_numpy())
    np.testing.assert_allclose(fd[1:], confounds["framewise_displacement"][1:], atol=1e-6)
    assert np.isnan(fd[0]) and np.isnan(confounds["framewise_displacement"][0])


def test_fd_bad_input():
    with pytest.raises(BadInputError, match="6"):
        framewise_displacement(np.zeros((5, 3)))
    bad = np.zeros((5, 6))
    bad[2, 1] = np.nan
    with pytest.raises(BadInputError, match="n/a"):
        framewise_displacement(bad)


def test_dvars_closed_form_alternating_signal():
    # Each voxel alternates ±a around a baseline b: demeaned lag-1 autocorrelation (Yule-Walker,
    # biased) is -(n-1)/n, the "lower" IQR is 2a, every temporal difference is ±2a.
    n, a = 20, np.array([1.0, 2.0, 3.0])
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    data = 100.0 + sign[:, None] * a[None, :]
    out = dvars(data, intensity_normalization=0)
    expected_raw = np.sqrt(np.mean((2 * a) ** 2))
    ar1 = -(n - 1) / n
    expected_null = np.mean(np.sqrt(2 * (1 - ar1)) * 2 * a / 1.349)
    assert np.isnan(out["dvars"][0]) and np.isnan(out["std_dvars"][0])
    np.testing.assert_allclose(out["dvars"][1:], expected_raw, rtol=1e-6)
    np.testing.assert_allclose(out["std_dvars"][1:], expected_raw / expected_null, rtol=1e-6)


def test_dvars_intensity_normalization_and_zero_variance_voxels():
    rng = np.random.default_rng(0)
    data = 500.0 + rng.standard_normal((50, 40))
    data[:, 5] = 500.0  # constant voxel: left out
    out = dvars(data)
    kept = np.delete(data, 5, axis=1) * (1000.0 / np.median(data))
    np.testing.assert_allclose(
        out["dvars"][1:], np.sqrt((np.diff(kept, axis=0) ** 2).mean(axis=1)), rtol=1e-5
    )
    pd.testing.assert_frame_equal(dvars(data, block_size=7), out, rtol=1e-10)  # blocks agree
    # On white noise the null expectation is right: standardized DVARS ≈ 1.
    assert 0.85 < np.median(out["std_dvars"][1:]) < 1.15


def test_dvars_on_real_bold_is_near_one_and_finds_a_planted_spike():
    import nibabel as nib

    img = nib.load(shared_path("data/nitime_fmri/fmri1.nii.gz"))
    data = np.asarray(img.dataobj, dtype=np.float64).reshape(-1, img.shape[-1]).T
    data = data[:, data.mean(axis=0) > 0.5 * data.mean()]  # crude brain mask
    data = data[2:]  # the run starts out of steady state (std DVARS ≈ 8 at volume 1)
    out = dvars(data)
    assert 0.6 < np.median(out["std_dvars"][1:]) < 1.6  # real data: close to the null
    spiked = data.copy()
    spiked[20] *= 1.05  # a 5 % global jump on one volume
    spike_dvars = dvars(spiked)["std_dvars"].to_numpy()
    # the jump into and out of volume 20 stand out above the usual 1.5 censoring threshold
    top_two = set(np.argsort(np.nan_to_num(spike_dvars))[-2:])
    assert top_two == {20, 21} and spike_dvars[[20, 21]].min() > 1.5


def test_tsnr_closed_form():
    data = np.array([[9.0, 1.0], [11.0, 1.0], [9.0, 1.0], [11.0, 1.0]])
    np.testing.assert_allclose(tsnr(data)[0], 10.0)  # mean 10, SD (ddof 0) 1
    assert np.isnan(tsnr(data)[1])
    np.testing.assert_allclose(tsnr(data.T, axis=1)[0], 10.0)


def test_run_qc_metrics_and_rules():
    path = shared_path(NEUROCAPS)
    confounds = pd.read_csv(path, sep="\t")
    fd = confounds["framewise_displacement"].to_numpy()[1:]
    rng = np.random.default_rng(1)
    bold = 1000.0 + 10.0 * rng.standard_normal((40, 200))
    mask = np.setdiff1d(np.arange(40), [0, 1, 17])
    qc = run_qc(path, bold, mask, t_r=1.2)
    for key in (
        "mean_fd", "max_fd", "percent_fd_over_threshold", "percent_censored", "mean_dvars",
        "tsnr", "n_volumes", "n_volumes_kept", "excluded", "exclusion_reason",
    ):
        assert key in qc
    assert qc["mean_fd"] == pytest.approx(fd.mean())
    assert qc["max_fd"] == pytest.approx(fd.max())
    assert qc["percent_fd_over_threshold"] == pytest.approx(100 * np.mean(fd > 0.2))
    assert qc["percent_censored"] == pytest.approx(7.5)
    assert (qc["n_volumes"], qc["n_volumes_kept"]) == (40, 37)
    assert qc["tsnr"] == pytest.approx(np.median(tsnr(bold[mask])))
    assert qc["mean_dvars"] == pytest.approx(np.nanmean(dvars(bold)["dvars"]))
    # 37 volumes at 1.2 s = 0.74 min < 4 min: excluded, and the reason says so.
    assert qc["excluded"] and "minutes_kept 0.74 < 4 min" in qc["exclusion_reason"]
    relaxed = run_qc(path, bold, mask, rules={"min_minutes_kept": None}, t_r=1.2)
    expect_fd_rule = 100 * np.mean(fd > 0.2) > 20
    assert relaxed["excluded"] == (expect_fd_rule or fd.mean() > 0.55 or fd.max() > 5)
    strict = run_qc(path, None, mask, rules={"max_mean_fd": 0.01, "min_minutes_kept": None})
    assert strict["excluded"] and "mean_fd" in strict["exclusion_reason"]
    assert np.isnan(strict["tsnr"])
    assert strict["mean_dvars"] == pytest.approx(confounds["dvars"].mean())
    clean_run = run_qc(
        path, None, None, rules={k: None for k in defaults("qc") if k != "fd_threshold"}
    )
    assert not clean_run["excluded"] and clean_run["exclusion_reason"] == ""


def test_run_qc_bad_input():
    path = shared_path(NEUROCAPS)
    with pytest.raises(BadInputError, match=r"(?s)sub-01_ses-002.*40 rows.*\(39, 10\)"):
        run_qc(path, np.ones((39, 10)), None)
    with pytest.raises(BadInputError, match="unknown rule"):
        run_qc(path, None, None, rules={"max_dvars": 3})
    with pytest.raises(BadInputError, match="sample_mask"):
        run_qc(path, None, np.array([0, 40]))
    with pytest.warns(UserWarning, match="repetition time"):
        run_qc(path, None, None)


def test_qc_fc_equals_pearsonr_planted_and_null():
    rng = np.random.default_rng(2)
    n, n_null = 120, 2000
    mean_fd = rng.gamma(2.0, 0.08, n)
    null_edges = rng.standard_normal((n, n_null))
    planted = 0.5 * stats.zscore(mean_fd)[:, None] + rng.standard_normal((n, 5))
    edges = pd.DataFrame(
        np.hstack([planted, null_edges]),
        columns=[f"a{i}__b" for i in range(5)] + [f"n{i}__m" for i in range(n_null)],
    )
    table = qc_fc(edges, mean_fd)
    assert list(table.columns) == ["edge", "r", "p"] and table.edge[0] == "a0__b"
    for j in (0, 7, 1500):
        r, p = stats.pearsonr(edges.iloc[:, j], mean_fd)
        assert table.r[j] == pytest.approx(r, abs=1e-10)
        assert table.p[j] == pytest.approx(p, rel=1e-6)
    assert (table.p[:5] < 0.05).all()  # planted motion-related edges are found
    false_positive = (table.p[5:] < 0.05).mean()
    assert 0.035 < false_positive < 0.065  # nominal rate on null edges


def test_qc_fc_distance_equals_spearman_and_bad_input():
    rng = np.random.default_rng(3)
    r = rng.uniform(-0.2, 0.2, 300)
    distance = rng.uniform(10, 150, 300)
    result = qc_fc_distance(r, distance)
    expected = stats.spearmanr(r, distance)
    assert result["rho"] == pytest.approx(expected.statistic)
    assert result["p"] == pytest.approx(expected.pvalue)
    with pytest.raises(BadInputError, match="one row per participant"):
        qc_fc(np.zeros((10, 3)), np.zeros(9))
    with pytest.raises(BadInputError, match="one distance per edge"):
        qc_fc_distance(r, distance[:-1])
