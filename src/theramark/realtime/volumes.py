"""One scanner volume as the real-time pipeline sees it, and how NIfTI exports are named and read.

A :class:`Volume` is what every source (:mod:`theramark.realtime.ingest`) yields: one per acquisition
number, ``"ok"`` with its data and affine, ``"missing"`` when it never arrived in time, ``"error"``
when its file could not be read or does not match the run.

NIfTI naming
------------
Scanner export tools name one file per volume with a running number at the end. A 3D NIfTI export
file is accepted when its name (without ``.nii`` / ``.nii.gz``) ends with an integer, the volume's
1-based acquisition number, optionally after a separator (``_``, ``-`` or ``.``)::

    series001_vol00012.nii        series prefix "series001_vol", series number 1, volume 12
    001_000007_000012.nii.gz      series prefix "001_000007", series number 7, volume 12
    run-02_00012.nii              series prefix "run-02", series number 2, volume 12

The *series prefix* is everything before the trailing integer (separators stripped); the *series
number* is the last integer inside the prefix, if any. A 4D NIfTI file holds a run from its first
volume: its volumes are numbers 1..T whatever its name, and its series prefix is its whole stem. An
uncompressed 4D ``.nii`` that grows as the scanner appends volumes yields each volume once its bytes
are all written. Names starting with ``.`` (temporary files of atomic writers) are ignored.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

#: The volume is complete and was read.
OK = "ok"
#: The volume did not arrive in time.
MISSING = "missing"
#: The volume's file could not be read, or does not match the run (shape, orientation).
ERROR = "error"
STATUSES = (OK, MISSING, ERROR)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_TRAILING_NUMBER = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)$")
_LAST_INTEGER = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class Volume:
    """One acquisition of a real-time series.

    Attributes
    ----------
    number : int
        1-based acquisition number within the series.
    status : {"ok", "missing", "error"}
        Whether the volume was read.
    data : ndarray of float32, shape (x, y, z), or None
        Image intensities (``"ok"`` only).
    affine : ndarray, shape (4, 4), or None
        Voxel to world (RAS+ mm, the NIfTI convention, also for DICOM input).
    t_ready : float
        ``time.time()`` when the file was complete and read (``"missing"``: when declared missing).
    source : str
        File path, or ``"socket"``.
    message : str
        Why the volume is missing or in error.
    """

    number: int
    status: str
    data: np.ndarray | None
    affine: np.ndarray | None
    t_ready: float
    source: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the volume holds data."""
        return self.status == OK


class IncompleteFile(Exception):
    """The file is not (yet) complete: it is retried later."""


class AwaitingVolumes(IncompleteFile):
    """A valid 4D file whose next volume is not written yet (a run being appended to)."""


def is_nifti(name: str) -> bool:
    """Whether ``name`` has a NIfTI suffix (``.nii`` or ``.nii.gz``)."""
    return name.endswith(NIFTI_SUFFIXES)


def nifti_stem(name: str) -> str:
    """``name`` without its ``.nii`` / ``.nii.gz`` suffix."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class NiftiName:
    """What a NIfTI export file's name says (see the module's *NIfTI naming*).

    Attributes
    ----------
    prefix : str
        Series prefix: the stem before its trailing integer, separators stripped (the whole stem
        when it does not end with an integer).
    series_number : int or None
        Last integer inside ``prefix``.
    number : int or None
        The trailing integer (the volume's acquisition number for a 3D file).
    """

    prefix: str
    series_number: int | None
    number: int | None

    def matches(self, series: str | int) -> bool:
        """Whether this file belongs to ``series`` (a prefix, or a series number)."""
        if isinstance(series, str) and series == self.prefix:
            return True
        try:
            return self.series_number is not None and int(series) == self.series_number
        except ValueError:
            return False


def parse_nifti_name(name: str) -> NiftiName:
    """Split an export file name into series prefix, series number and volume number.

    Examples
    --------
    >>> parse_nifti_name("series001_vol00012.nii")
    NiftiName(prefix='series001_vol', series_number=1, number=12)
    """
    stem = nifti_stem(Path(name).name)
    match = _TRAILING_NUMBER.match(stem)
    if match is None:
        prefix, number = stem, None
    else:
        prefix, number = match["prefix"].rstrip("_-."), int(match["number"])
    last = _LAST_INTEGER.search(prefix)
    return NiftiName(prefix=prefix, series_number=int(last.group(1)) if last else None, number=number)


def _header_from(buffer: bytes) -> nib.Nifti1Header:
    if len(buffer) < 4:
        raise IncompleteFile("shorter than a NIfTI header")
    sizes = {int.from_bytes(buffer[:4], "little"), int.from_bytes(buffer[:4], "big")}
    klass = nib.Nifti2Header if 540 in sizes else nib.Nifti1Header
    if len(buffer) < klass.template_dtype.itemsize:
        raise IncompleteFile("shorter than a NIfTI header")
    if not sizes & {348, 540}:
        raise ValueError("not a NIfTI-1 or NIfTI-2 header (sizeof_hdr is neither 348 nor 540)")
    return klass.from_fileobj(io.BytesIO(buffer[: klass.template_dtype.itemsize]), check=False)


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's volumes lie."""

    shape: tuple[int, int, int]
    n_volumes: int
    dtype: np.dtype
    offset: int
    slope: float
    inter: float
    affine: np.ndarray

    @property
    def volume_bytes(self) -> int:
        """Bytes of one 3D volume."""
        return int(np.prod(self.shape)) * self.dtype.itemsize


def nifti_layout(header_bytes: bytes) -> NiftiLayout:
    """Shape, data type, data offset, scaling and affine from a NIfTI header's bytes.

    Raises
    ------
    IncompleteFile
        When the bytes are shorter than the header.
    ValueError
        When the bytes are not a NIfTI header or the image is not 3D/4D.
    """
    header = _header_from(header_bytes)
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"expected a 3D or 4D image, got shape {shape}")
    slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return NiftiLayout(shape=shape[:3], n_volumes=shape[3], dtype=header.get_data_dtype(),
                       offset=int(header.get_data_offset()), slope=slope, inter=inter,
                       affine=np.asarray(header.get_best_affine(), dtype=float))


def read_nifti_layout(path: str | Path) -> NiftiLayout:
    """The layout of a NIfTI file from its header alone (inflating only the start of a ``.nii.gz``).

    Raises
    ------
    IncompleteFile
        The header is not all written yet.
    ValueError
        Not a NIfTI header.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                head = handle.read(544)
        else:
            with path.open("rb") as handle:
                head = handle.read(544)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise IncompleteFile(f"gzip stream does not inflate ({exc})") from exc
    return nifti_layout(head)


def _decode(block: bytes, layout: NiftiLayout, count: int) -> list[np.ndarray]:
    values = np.frombuffer(block, dtype=layout.dtype, count=count * int(np.prod(layout.shape)))
    values = values.reshape((*layout.shape, count), order="F").astype(np.float32)
    if layout.slope != 1.0 or layout.inter != 0.0:
        values = values * np.float32(layout.slope) + np.float32(layout.inter)
    return [np.ascontiguousarray(values[..., t]) for t in range(count)]


def read_nifti_volumes(path: str | Path, first: int = 0) -> tuple[NiftiLayout, list[np.ndarray]]:
    """The complete volumes of a NIfTI file from index ``first`` (0-based) on.

    An uncompressed ``.nii`` is read by volume: the volumes whose bytes are all present (a 4D file
    being appended to yields its complete volumes; the partial last one waits). A ``.nii.gz`` is read
    only when the whole gzip stream inflates and its checksum matches.

    Parameters
    ----------
    path : path-like
        The file.
    first : int
        Index of the first volume wanted (those before were read already).

    Returns
    -------
    layout : NiftiLayout
        The file's layout (``layout.n_volumes`` is the header's count).
    volumes : list of ndarray of float32, shape (x, y, z)
        Volumes ``first``, ``first + 1``, ... that are complete.

    Raises
    ------
    IncompleteFile
        Nothing new is complete yet: retry later.
    ValueError
        The file is not a NIfTI image.
    """
    path = Path(path)
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(path.read_bytes())
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise IncompleteFile(f"gzip stream does not inflate ({exc})") from exc
        layout = nifti_layout(raw[:544])
        end = layout.offset + layout.n_volumes * layout.volume_bytes
        if len(raw) < end:
            raise ValueError(f"{layout.n_volumes} volume(s) need {end} bytes, the inflated file has "
                             f"{len(raw)}")
        count = layout.n_volumes - first
        start = layout.offset + first * layout.volume_bytes
        return layout, _decode(raw[start:end], layout, count) if count > 0 else []
    with path.open("rb") as handle:
        layout = nifti_layout(handle.read(544))
        size = handle.seek(0, io.SEEK_END)
        available = min(layout.n_volumes, max(0, size - layout.offset) // layout.volume_bytes)
        count = available - first
        if count <= 0:
            error = AwaitingVolumes if layout.n_volumes > 1 else IncompleteFile
            raise error(f"{size} bytes: volume {first + 1} of {layout.n_volumes} is not complete yet")
        handle.seek(layout.offset + first * layout.volume_bytes)
        block = handle.read(count * layout.volume_bytes)
    if len(block) < count * layout.volume_bytes:
        raise IncompleteFile("the file shrank while being read")
    return layout, _decode(block, layout, count)
