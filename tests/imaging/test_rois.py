"""ROI sets and extraction, checked against nilearn's maskers."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.imaging import _image, rois

AFFINE_4MM = np.array([[-4.0, 0, 0, 90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
SHAPE_4MM = (46, 55, 46)


def _brain_mask() -> np.ndarray:
    """An ellipsoid roughly the size of the MNI brain on the 4 mm grid."""
    ijk = np.indices(SHAPE_4MM).astype(float)
    centre = np.array(SHAPE_4MM)[:, None, None, None] / 2
    radii = np.array([19, 24, 18])[:, None, None, None]
    return (((ijk - centre) / radii) ** 2).sum(axis=0) < 1


def _c_order_columns(mask_img) -> np.ndarray:
    """Our column of each in-mask voxel in nilearn's (C) order."""
    mask = np.asanyarray(mask_img.dataobj) != 0
    c_order = np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")
    return np.searchsorted(_image.mask_indices(mask_img), c_order)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("rois")
    data = (rng.normal(size=SHAPE_4MM + (30,)) * 10 + 800).astype(np.float32)
    mask = _brain_mask()
    bold_path, mask_path = folder / "bold.nii.gz", folder / "mask.nii.gz"
    nib.Nifti1Image(data, AFFINE_4MM).to_filename(bold_path)
    nib.Nifti1Image(mask.astype(np.uint8), AFFINE_4MM).to_filename(mask_path)
    return bold_path, mask_path, data, mask


def test_masked_loading_equals_nilearn(run_files):
    from nilearn.masking import apply_mask

    bold_path, mask_path, _, mask = run_files
    data, _, mask_img = _image.load_masked_bold(bold_path, mask_path)
    expected = apply_mask(str(bold_path), str(mask_path))  # columns in C order
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data[:, _c_order_columns(mask_img)], expected)
    roundtrip = _image.unmask(data[3], mask_img).get_fdata()
    np.testing.assert_array_equal(roundtrip[mask], expected[3])


def test_masked_loading_applies_scaling(tmp_path):
    values = np.linspace(-3.0, 900.0, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    img = nib.Nifti1Image(values, np.eye(4))
    img.set_data_dtype(np.int16)  # nibabel stores scaled integers with a slope and intercept
    img.to_filename(tmp_path / "scaled.nii.gz")
    loaded = nib.load(tmp_path / "scaled.nii.gz")
    assert loaded.dataobj.slope != 1
    mask = np.zeros((2, 3, 4), bool)
    mask[1, 2, :] = mask[0, 0, 1] = True
    flat = _image.mask_indices(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)))
    data = _image.read_masked(loaded, flat)
    expected = loaded.get_fdata().reshape(-1, 5, order="F")[flat].T
    np.testing.assert_allclose(data, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["literature", "power264", "dosenbach160", "seitzman300"])
def test_sphere_membership_equals_nilearn(run_files, name):
    from nilearn.maskers.nifti_spheres_masker import apply_mask_and_get_affinity

    _, mask_path, _, _ = run_files
    mask_img = nib.load(mask_path)
    roiset = rois.load_roiset(name)
    matrix = rois.roi_matrix(roiset, mask_img, on_empty="drop")
    kept = np.isin(roiset.table["name"], matrix.names)
    for radius in np.unique(roiset.table["radius_mm"]):
        chosen = (roiset.table["radius_mm"] == radius).to_numpy() & kept
        _, affinity = apply_mask_and_get_affinity(
            roiset.coordinates()[chosen], None, radius, True, mask_img=mask_img)
        rows = [matrix.names.index(n) for n in roiset.table["name"][chosen]]
        ours = (matrix.matrix[rows][:, _c_order_columns(mask_img)] > 0).astype(int)
        assert (ours != (affinity.tocsr() > 0).astype(int)).nnz == 0


def test_sphere_signals_equal_nilearn_masker_with_confounds(run_files):
    from nilearn.maskers import NiftiSpheresMasker
    from nilearn.signal import clean

    bold_path, mask_path, volume, _ = run_files
    # nilearn keeps float32 images in float32; give it the same values in float64 so the
    # comparison measures the method, not nilearn's rounding
    bold64 = nib.Nifti1Image(volume.astype(np.float64), AFFINE_4MM)
    data, _, mask_img = _image.load_masked_bold(bold_path, mask_path)
    roiset = rois.load_roiset("literature", radius_mm=8)
    matrix = rois.roi_matrix(roiset, mask_img)
    rng = np.random.default_rng(1)
    confounds = rng.normal(size=(data.shape[0], 3))
    ours = clean(rois.extract(data, matrix), confounds=confounds, detrend=True,
                 standardize="zscore_sample", t_r=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiSpheresMasker(roiset.coordinates(), radius=8, mask_img=str(mask_path),
                                    allow_overlap=True, detrend=True,
                                    standardize="zscore_sample", t_r=2.0)
        reference = masker.fit_transform(bold64, confounds=confounds)
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    raw = rois.extract(data, matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw_reference = NiftiSpheresMasker(roiset.coordinates(), radius=8, mask_img=str(mask_path),
                                           allow_overlap=True).fit_transform(bold64)
    np.testing.assert_allclose(raw, raw_reference, rtol=1e-9)


def test_labels_signals_equal_nilearn_masker(run_files):
    from nilearn.maskers import NiftiLabelsMasker

    folder = shared_path("data/atlases/schaefer2018_volumes")
    image = folder / "Schaefer2018_100Parcels_7Networks_order_FSLMNI152_2mm.nii.gz"
    labels = folder / "Schaefer2018_100Parcels_7Networks_order.txt"
    bold_path, mask_path, volume, _ = run_files
    data, _, mask_img = _image.load_masked_bold(bold_path, mask_path)
    roiset = rois.load_roiset({"image": str(image), "labels": str(labels)})
    assert roiset.kind == "labels" and len(roiset.names) == 100
    assert roiset.names[0] == "7Networks_LH_Vis_1" and roiset.table["network"][0] == "Vis"
    matrix = rois.roi_matrix(roiset, mask_img, on_empty="drop")
    ours = rois.extract(data, matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiLabelsMasker(str(image), mask_img=str(mask_path), resampling_target="data",
                                   keep_masked_labels=False) \
            if "keep_masked_labels" in NiftiLabelsMasker().get_params() \
            else NiftiLabelsMasker(str(image), mask_img=str(mask_path), resampling_target="data")
        reference = masker.fit_transform(nib.Nifti1Image(volume.astype(np.float64), AFFINE_4MM))
    assert reference.shape == ours.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-9)


def test_empty_roi_is_reported_not_silently_emptied(run_files):
    _, mask_path, _, _ = run_files
    table = rois.literature_rois().head(3).copy()
    table.loc[2, ["x", "y", "z"]] = [0, 0, 200]  # far outside the brain
    roiset = rois.RoiSet(name="custom", kind="spheres", table=table)
    with pytest.raises(BadInputError, match=r"mask\.nii\.gz.*vlpfc_L"):
        rois.roi_matrix(roiset, nib.load(mask_path), mask_name=str(mask_path))
    matrix = rois.roi_matrix(roiset, nib.load(mask_path), on_empty="drop")
    assert matrix.names == ["dlpfc_L", "dlpfc_R"] and matrix.dropped == ["vlpfc_L"]
    row = matrix.coverage.set_index("roi").loc["vlpfc_L"]
    assert row["n_voxels"] == 0 and row["coverage"] == 0


def test_partial_coverage_is_measured():
    mask = np.zeros(SHAPE_4MM, np.uint8)
    mask[:, :, :25] = 1  # cut the top of the brain off
    table = pd.DataFrame({"name": ["top", "bottom"], "label": "", "hemisphere": "M",
                          "x": [0.0, 0.0], "y": [0.0, 0.0], "z": [28.0, -40.0],
                          "radius_mm": [10.0, 10.0], "network": "", "source": ""})
    matrix = rois.roi_matrix(rois.RoiSet("t", "spheres", table), nib.Nifti1Image(mask, AFFINE_4MM))
    coverage = matrix.coverage.set_index("roi")["coverage"]
    assert 0 < coverage["top"] < 1 and coverage["bottom"] == 1


def test_literature_names_and_sources():
    table = rois.literature_rois()
    assert table["name"].is_unique and {"sgacc", "nacc_L", "amygdala_R", "dlpfc_L"} <= set(table["name"])
    assert table["source"].str.len().gt(0).all()
    assert not table["name"].str.contains("__").any()


def test_power264_networks_come_from_seitzman_for_the_same_rois():
    """Checked on the files themselves: a Seitzman ROI is a Power ROI when each of its coordinates
    lies within 1 mm of Power's whole-millimetre one (a rule other than theramark's Euclidean
    nearest neighbour)."""
    folder = shared_path("data/atlases/nilearn_builtin")
    power = pd.read_csv(folder / "power_2011.csv")
    seitzman = pd.read_csv(folder / "seitzman_2018_ROIs_300inVol_MNI_allInfo.txt", sep=" ")
    expected = []
    for row in power[["X", "Y", "Z"]].to_numpy(float):
        same = seitzman[(np.abs(seitzman[["x", "y", "z"]].to_numpy() - row) <= 1).all(axis=1)]
        assert len(same) <= 1
        expected.append(same["netName"].iloc[0].lower() if len(same) else "unassigned")
    assert sum(network != "unassigned" for network in expected) == 227
    table = rois.coordinate_rois("power264")
    assert table["network"].tolist() == expected
    assert "Seitzman" in table["source"].iloc[0]

    # and the labels are where the networks are
    def nearest(x, y, z):
        distance = np.linalg.norm(table[["x", "y", "z"]].to_numpy() - [x, y, z], axis=1)
        return table["network"].iloc[int(distance.argmin())]

    assert nearest(0, -53, 26) == "defaultmode"  # posterior cingulate
    assert nearest(-38, -26, 60) == "somatomotordorsal"  # left hand motor cortex
    assert nearest(-8, -90, 2) == "visual"  # calcarine


def test_unknown_roiset_names_choices():
    with pytest.raises(BadInputError, match="power264"):
        rois.load_roiset("power999")


def test_label_table_formats(tmp_path):
    (tmp_path / "dseg.tsv").write_text("index\tname\n1\tleft\n2\tright\n")
    (tmp_path / "order.txt").write_text("1\tA_1\t120\t18\t134\t0\n2\tA_2\t1\t2\t3\t0\n")
    assert rois.read_label_table(tmp_path / "dseg.tsv")["name"].tolist() == ["left", "right"]
    assert rois.read_label_table(tmp_path / "order.txt")["index"].tolist() == [1, 2]
    (tmp_path / "bad.txt").write_text("one two\n")
    with pytest.raises(BadInputError, match="bad.txt"):
        rois.read_label_table(tmp_path / "bad.txt")
