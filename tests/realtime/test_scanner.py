"""The scanner simulator: files, names, cadence, faults, bad options."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from theramark.errors import BadInputError
from theramark.realtime.dicom import assemble_volume, read_dicom
from theramark.realtime.scanner import simulate_scanner
from theramark.realtime.volumes import parse_nifti_name, read_nifti_volumes

TR = 0.04
N = 9


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.default_rng(1)
    data = (rng.normal(500.0, 50.0, (5, 4, 3, N))).astype(np.int16)
    affine = np.array([[-2.0, 0, 0, 4], [0, 2.0, 0, -3], [0, 0, 2.5, 1], [0, 0, 0, 1]])
    path = tmp_path_factory.mktemp("run") / "run.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, data, affine


def test_nifti_files_at_the_tr(tmp_path, run):
    path, data, affine = run
    log = simulate_scanner(path, tmp_path, TR)
    assert log["number"].tolist() == list(range(1, N + 1))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"series001_vol{n:05d}.nii" for n in range(1, N + 1)]
    for n in (1, N):
        layout, (volume,) = read_nifti_volumes(tmp_path / names[n - 1])
        np.testing.assert_array_equal(volume, data[..., n - 1])
        np.testing.assert_allclose(layout.affine, affine)
        assert parse_nifti_name(names[n - 1]).number == n
    gaps = np.diff(log["t_done"].to_numpy())
    assert np.all(gaps > TR * 0.5) and abs(gaps.mean() - TR) < TR * 0.5


def test_speed_shuffle_drop_extra_series(tmp_path, run):
    path, _, _ = run
    log = simulate_scanner(path, tmp_path, 1.0, speed=50.0, shuffle=True, drop=[2, 7], extra_series=True,
                           gzip=True, random_state=4)
    main = log[log["series"] == 1]["number"].to_numpy()
    assert sorted(main) == [n for n in range(1, N + 1) if n not in (2, 7)]
    assert list(main) != sorted(main)  # out of order ...
    window = (np.array(sorted(range(1, N + 1), key=list(log[log["series"] == 2]["number"]).index)) - 1) // 3
    assert np.all(np.diff(window) >= 0)  # ... but only within windows of 3
    assert sorted(log[log["series"] == 2]["number"]) == list(range(1, N + 1))
    assert len(list(tmp_path.glob("series002_vol*.nii.gz"))) == N
    assert log["t_done"].max() - log["t_done"].min() < 1.0  # 9 TRs of 1 s at 50x
    raw = gzip.decompress((tmp_path / "series001_vol00001.nii.gz").read_bytes())
    assert len(raw) > 348


@pytest.mark.parametrize("kind", ["enhanced", "classic"])
def test_dicom_export(tmp_path, run, kind):
    path, data, affine = run
    simulate_scanner(path, tmp_path, TR, format="dicom", dicom_kind=kind, series=5, n_volumes=3)
    files = sorted(tmp_path.glob("*.dcm"))
    assert len(files) == 3 * (1 if kind == "enhanced" else data.shape[2])
    parts = [p for f in files for p in read_dicom(f) if p.number == 2]
    volume, read_affine = assemble_volume(parts)
    np.testing.assert_array_equal(volume, data[..., 1])  # int16 data are stored exactly
    np.testing.assert_allclose(read_affine, affine, atol=1e-6)
    assert {p.series_number for p in parts} == {5}


def test_growing_4d_file(tmp_path, run):
    path, data, _ = run
    log = simulate_scanner(path, tmp_path, TR, format="nifti-4d")
    assert log["path"].nunique() == 1
    layout, volumes = read_nifti_volumes(log["path"][0])
    assert layout.n_volumes == N and len(volumes) == N
    np.testing.assert_array_equal(np.stack(volumes, axis=-1), data)


def test_bad_options(tmp_path, run):
    path, _, _ = run
    with pytest.raises(BadInputError, match="outside"):
        simulate_scanner(path, tmp_path, TR, drop=[0])
    with pytest.raises(BadInputError, match="nifti-4d"):
        simulate_scanner(path, tmp_path, TR, format="nifti-4d", shuffle=True)
    with pytest.raises(BadInputError, match="format"):
        simulate_scanner(path, tmp_path, TR, format="analyze")
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), flat)
    with pytest.raises(BadInputError, match="4D"):
        simulate_scanner(flat, tmp_path / "out", TR)
    with pytest.raises(BadInputError, match="cannot read"):
        simulate_scanner(tmp_path / "nope.nii.gz", tmp_path / "out", TR)
