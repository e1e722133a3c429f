"""The streaming BOLD reader equals nibabel bit for bit, with ISA-L and with the zlib fallback."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from theramark import _inflate
from theramark.errors import BadInputError
from theramark.imaging._image import load_masked_bold, mask_indices, open_bold, read_masked

HAS_ISAL = importlib.util.find_spec("isal") is not None
ENGINES = ["zlib", pytest.param("isal", marks=pytest.mark.skipif(not HAS_ISAL, reason="isal absent"))]
SHAPE = (9, 8, 7, 12)


def _image(dtype: str, scaled: bool, seed: int = 0) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    if dtype == "int16":
        data = rng.integers(-2000, 2000, size=SHAPE).astype(np.int16)
    else:
        data = (1000 + 50 * rng.standard_normal(SHAPE)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_data_dtype(np.dtype(dtype))
    if scaled:
        img.header.set_slope_inter(0.37, 12.5)
    return img


def _mask(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE[:3]) < 0.6


def _nibabel_reference(path: Path, mask: np.ndarray) -> np.ndarray:
    """nibabel's float32 values in theramark's (Fortran) voxel order: (n_volumes, n_voxels)."""
    data = nib.load(path).get_fdata(dtype=np.float32)
    flat = data.reshape(-1, SHAPE[3], order="F")
    return flat[np.flatnonzero(np.ravel(mask, order="F"))].T


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize("scaled", [False, True])
def test_reader_equals_nibabel_bit_for_bit(tmp_path, engine, dtype, scaled):
    path = tmp_path / "bold.nii.gz"
    nib.save(_image(dtype, scaled), path)
    mask = _mask()
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    # small blocks: several blocks and several pieces per block
    out = read_masked(open_bold(path), mask_indices(mask_img), block_bytes=3000, engine=engine)
    expected = _nibabel_reference(path, mask)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_multi_member_gzip(tmp_path, monkeypatch, engine):
    plain = tmp_path / "bold.nii"
    nib.save(_image("int16", True), plain)
    content = plain.read_bytes()
    cut = [0, 200, 1500, 4000, len(content)]  # members split inside the header and the data
    path = tmp_path / "bold.nii.gz"
    path.write_bytes(b"".join(gzip.compress(content[a:b]) for a, b in itertools.pairwise(cut)))
    assert b"".join(_inflate.stored_bytes(path, 0, chunk=777, engine=engine)) == content
    mask = _mask()
    monkeypatch.setenv("THERAMARK_INFLATE", engine)  # the public reader, through the environment
    data, _, _ = load_masked_bold(path, _write_mask(tmp_path, mask))
    np.testing.assert_array_equal(data, _nibabel_reference(plain, mask))


def _write_mask(folder: Path, mask: np.ndarray) -> Path:
    path = folder / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])), path)
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_truncated_gzip_is_a_named_error(tmp_path, engine):
    path = tmp_path / "bold.nii.gz"
    nib.save(_image("float32", False), path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) * 2 // 3])
    mask_img = nib.Nifti1Image(_mask().astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    with pytest.raises(BadInputError, match=r"bold\.nii\.gz: file is truncated \(expected 12 volumes"):
        read_masked(open_bold(path), mask_indices(mask_img), block_bytes=3000, engine=engine)
    with pytest.raises(EOFError):
        for _ in _inflate.stored_bytes(path, engine=engine):
            pass


@pytest.mark.parametrize("engine", ENGINES)
def test_corrupt_gzip_is_a_named_error(tmp_path, engine):
    path = tmp_path / "bold.nii.gz"
    nib.save(_image("float32", False), path)
    content = bytearray(path.read_bytes())
    content[-6] ^= 0xFF  # the CRC-32 of the member
    path.write_bytes(bytes(content))
    mask_img = nib.Nifti1Image(np.ones(SHAPE[:3], np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    # the whole stream must be read to reach the CRC: a block of one volume leaves nothing unread
    with pytest.raises(BadInputError, match=r"bold\.nii\.gz: corrupt compressed data"):
        read_masked(open_bold(path), mask_indices(mask_img), block_bytes=1, engine=engine)


def test_fallback_by_environment(monkeypatch):
    monkeypatch.setenv("THERAMARK_INFLATE", "zlib")
    import zlib

    assert _inflate.inflate_engine() is zlib
    monkeypatch.setenv("THERAMARK_INFLATE", "gzip")
    with pytest.raises(ValueError, match="'isal' or 'zlib'"):
        _inflate.inflate_engine()
    monkeypatch.delenv("THERAMARK_INFLATE")
    monkeypatch.setattr(_inflate, "_ISAL", None)  # as on a platform without an isal wheel
    assert _inflate.inflate_engine() is zlib
    with pytest.raises(ImportError, match="pip install isal"):
        _inflate.inflate_engine("isal")


@pytest.mark.skipif(not HAS_ISAL, reason="isal absent")
def test_isal_is_the_default_when_installed(monkeypatch):
    monkeypatch.delenv("THERAMARK_INFLATE", raising=False)
    assert _inflate.inflate_engine().__name__ == "isal.isal_zlib"
