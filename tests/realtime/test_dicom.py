"""DICOM writing and reading: NIfTI -> DICOM -> volume round trips, checked against nibabel's reader."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest

from theramark.realtime.dicom import (
    LPS_TO_RAS,
    assemble_volume,
    classic_mr_bytes,
    enhanced_mr_bytes,
    int16_scaling,
    read_dicom,
    write_dicom_volume,
)
from theramark.realtime.volumes import IncompleteFile


def _oblique_affine() -> np.ndarray:
    """Rotated, anisotropic, with the slice axis against the slice normal (a left-handed grid)."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [0.2, -0.15, 0.35]).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 2.5, -3.2])
    affine[:3, 3] = [-40.0, 25.5, 12.25]
    return affine


AFFINES = {"axial_ras": np.array([[3.0, 0, 0, -90], [0, 3.0, 0, -100], [0, 0, 3.5, -40], [0, 0, 0, 1]]),
           "radiological": np.array([[-2.0, 0, 0, 60], [0, 2.0, 0, -80], [0, 0, 2.0, -30], [0, 0, 0, 1]]),
           "oblique": _oblique_affine()}


@pytest.fixture
def volume():
    rng = np.random.default_rng(3)
    return (1000.0 + 150.0 * rng.standard_normal((9, 7, 6))).astype(np.float32)


@pytest.mark.parametrize("kind", ["enhanced", "classic"])
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_data_and_affine(tmp_path, volume, kind, name):
    affine = AFFINES[name]
    paths = write_dicom_volume(tmp_path, volume, affine, number=7, kind=kind, series_number=4)
    assert len(paths) == (1 if kind == "enhanced" else volume.shape[2])
    parts = [part for path in paths for part in read_dicom(path)]
    assert {p.number for p in parts} == {7} and {p.series_number for p in parts} == {4}
    data, read_affine = assemble_volume(parts)
    np.testing.assert_allclose(read_affine, affine, atol=1e-6)
    slope, _ = int16_scaling(volume)
    assert data.shape == volume.shape
    # int16 storage: at most half a rescale step off (and the step is a 1/65534 of the range)
    assert np.abs(data - volume).max() <= slope / 2 * 1.001
    assert slope <= (volume.max() - volume.min()) / 65000


def test_slice_order_does_not_matter(tmp_path, volume):
    """Classic slices read in any order give the same volume."""
    paths = write_dicom_volume(tmp_path, volume, AFFINES["oblique"], number=2, kind="classic")
    parts = [read_dicom(p)[0] for p in paths]
    rng = np.random.default_rng(0)
    shuffled = [parts[i] for i in rng.permutation(len(parts))]
    a, affine_a = assemble_volume(parts)
    b, affine_b = assemble_volume(shuffled)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(affine_a, affine_b)


def test_integer_data_stored_exactly(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3) * 7 - 50
    assert int16_scaling(data) == (1.0, 0.0)
    path = write_dicom_volume(tmp_path, data, AFFINES["axial_ras"], number=1)[0]
    out, _ = assemble_volume(read_dicom(path))
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("kind", ["enhanced", "classic"])
def test_world_coordinates_agree_with_nibabel(tmp_path, volume, kind):
    """Every pixel lands where nibabel's DICOM reader (LPS) puts it, converted to RAS."""
    affine = AFFINES["oblique"]
    paths = write_dicom_volume(tmp_path, volume, affine, number=1, kind=kind)
    data, ours = assemble_volume([p for path in paths for p in read_dicom(path)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        from nibabel.nicom import dicomwrappers

        wrappers = [dicomwrappers.wrapper_from_file(str(p)) for p in paths]
    checked = 0
    for wrapper in wrappers:
        values = wrapper.get_data()
        if values.ndim == 2:
            values = values[..., None]
        index = np.indices(values.shape).reshape(3, -1)
        world_lps = wrapper.affine @ np.vstack([index, np.ones(index.shape[1])])
        voxel = np.linalg.inv(ours) @ (LPS_TO_RAS @ world_lps)
        rounded = np.rint(voxel[:3]).astype(int)
        np.testing.assert_allclose(voxel[:3], rounded, atol=1e-4)
        np.testing.assert_allclose(data[tuple(rounded)], values.reshape(-1), atol=0.05)
        checked += index.shape[1]
    assert checked == volume.size


def test_reproducible_uids_and_valid_files(volume):
    a = enhanced_mr_bytes(volume, AFFINES["axial_ras"], number=3, random_state=5)
    b = enhanced_mr_bytes(volume, AFFINES["axial_ras"], number=3, random_state=5)
    c = enhanced_mr_bytes(volume, AFFINES["axial_ras"], number=3, random_state=6)
    assert a == b and a != c
    slices = classic_mr_bytes(volume, AFFINES["axial_ras"], number=3, series_number=9)
    import io

    datasets = [pydicom.dcmread(io.BytesIO(blob)) for blob in slices]
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(slices)
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    for ds in datasets:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPInstanceUID.is_valid and ds.AcquisitionNumber == 3 and ds.SeriesNumber == 9
        assert ds.ImagesInAcquisition == volume.shape[2]


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.98])
def test_truncated_file_is_incomplete(tmp_path, volume, fraction):
    blob = enhanced_mr_bytes(volume, AFFINES["axial_ras"], number=1)
    path = tmp_path / "partial.dcm"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(IncompleteFile):
        read_dicom(path)


def test_classic_without_images_in_acquisition(tmp_path, volume):
    import io

    ds = pydicom.dcmread(io.BytesIO(classic_mr_bytes(volume, AFFINES["axial_ras"], number=1)[0]))
    del ds.ImagesInAcquisition
    path = tmp_path / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError, match="ImagesInAcquisition"):
        read_dicom(path)


def test_uneven_slices_rejected(tmp_path, volume):
    paths = write_dicom_volume(tmp_path, volume, AFFINES["axial_ras"], number=1, kind="classic")
    parts = [read_dicom(p)[0] for p in paths]
    with pytest.raises(ValueError, match="evenly spaced"):
        assemble_volume(parts[:2] + parts[3:])


def test_non_orthogonal_in_plane_axes_rejected(volume):
    sheared = AFFINES["axial_ras"].copy()
    sheared[0, 1] = 1.0
    with pytest.raises(ValueError, match="orthogonal"):
        enhanced_mr_bytes(volume, sheared, number=1)


def test_nifti_to_dicom_round_trip(tmp_path, volume):
    """A NIfTI file's volume written as DICOM reads back with the NIfTI's data and affine."""
    affine = AFFINES["oblique"]
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "vol.nii")
    img = nib.load(tmp_path / "vol.nii")
    path = write_dicom_volume(tmp_path, np.asanyarray(img.dataobj), img.affine, number=1)[0]
    data, read_affine = assemble_volume(read_dicom(path))
    np.testing.assert_allclose(read_affine, img.affine, atol=1e-5)
    np.testing.assert_allclose(data, volume, atol=int16_scaling(volume)[0])
