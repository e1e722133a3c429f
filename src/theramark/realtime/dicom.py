"""Write a 3D volume as MR DICOM, and read MR DICOM files back into volumes with a NIfTI affine.

Two layouts are written and read:

* **enhanced** (Enhanced MR Image Storage, one multi-frame file per volume): each frame is one slice;
  its ``FrameContentSequence`` carries the volume's ``TemporalPositionIndex`` (the acquisition
  number) and ``InStackPositionNumber`` (the slice index), its ``PlanePositionSequence`` the slice's
  ``ImagePositionPatient``. A file holding several temporal positions yields several volumes.
* **classic** (MR Image Storage, one single-frame file per slice, as many PACS exports do): slices of a
  volume share ``AcquisitionNumber``; ``ImagesInAcquisition`` (0020,1002) says how many slices make the
  volume, so the reader knows when it is complete. Siemens mosaic files are not read.

Geometry: DICOM positions are in LPS mm, NIfTI affines in RAS mm; ``diag(-1, -1, 1)`` converts one into
the other. The NIfTI array is indexed ``data[i, j, k]`` with ``i`` along a DICOM row (column index)
and ``j`` down the columns (row index), so a frame's pixel matrix is ``data[:, :, k].T``. The reader
sorts slices along the slice normal, keeping the writer's order (``InStackPositionNumber`` or
``InstanceNumber``) when it runs against the normal, so that a written affine is read back exactly.

Intensities are stored as int16 with ``RescaleSlope``/``RescaleIntercept``: integer-valued data within
the int16 range are stored exactly (slope 1); other data are mapped linearly onto -32767..32767, an
error of at most ``slope / 2`` (1/131068 of the volume's range: 0.015 for a BOLD volume spanning
0-2000).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from theramark.realtime.volumes import IncompleteFile

#: LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
INT16_MAX = 32767


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def int16_scaling(data: np.ndarray) -> tuple[float, float]:
    """Rescale slope and intercept to store ``data`` as int16 (``value = slope * stored + intercept``).

    Integer-valued data within the int16 range get (1, 0), stored exactly. Both numbers are rounded to
    what a DICOM decimal string holds, so the stored integers are computed with the values the
    reader will use.
    """
    finite = np.asarray(data, dtype=np.float64)
    low, high = float(finite.min()), float(finite.max())
    if np.all(finite == np.rint(finite)) and low >= -INT16_MAX and high <= INT16_MAX:
        return 1.0, 0.0
    centre = (high + low) / 2.0
    slope = max((high - low) / (2 * INT16_MAX), np.finfo(np.float32).tiny)
    slope = float(_ds(slope * (1 + 1e-9)))
    return slope, float(_ds(centre))


def encode_int16(data: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored int16 values of ``data`` under ``slope`` and ``intercept``."""
    stored = np.rint((np.asarray(data, dtype=np.float64) - intercept) / slope)
    return np.clip(stored, -INT16_MAX - 1, INT16_MAX).astype("<i2")


def _geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row/column direction cosines, pixel spacing (row, column), slice vector, origin in LPS."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    col_step, row_step = lps[:3, 0], lps[:3, 1]
    spacing = np.array([np.linalg.norm(row_step), np.linalg.norm(col_step)])
    if np.any(spacing == 0):
        raise ValueError("the affine has a zero-length in-plane axis")
    if abs(float(col_step @ row_step)) > 1e-6 * spacing.prod():
        raise ValueError("DICOM needs orthogonal in-plane axes; the affine's first two columns are not")
    return col_step / spacing[1], row_step / spacing[0], spacing, lps


def _uids(random_state: int, series_number: int, series_uid: str | None,
          study_uid: str | None) -> tuple[str, str, str]:
    seed = str(random_state)
    study = study_uid or generate_uid(entropy_srcs=[seed, "study"])
    series = series_uid or generate_uid(entropy_srcs=[seed, study, "series", str(series_number)])
    frame = generate_uid(entropy_srcs=[seed, study, "frame-of-reference"])
    return study, series, frame


def _base(sop_class: str, sop_uid: str, *, study: str, series: str, frame: str, series_number: int,
          number: int, rows: int, cols: int, slope: float, intercept: float,
          repetition_time: float | None) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["theramark"])
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.Modality = "MR"
    ds.PatientName, ds.PatientID = "Simulated^Scanner", "theramark-sim"
    ds.SeriesNumber, ds.AcquisitionNumber = int(series_number), int(number)
    ds.SeriesDescription = "theramark realtime simulation"
    if repetition_time is not None:
        ds.RepetitionTime = _ds(repetition_time * 1000.0)
    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
    return ds


def _to_bytes(ds: FileDataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _check_volume(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {data.shape}")
    if np.asarray(affine).shape != (4, 4):
        raise ValueError("expected a 4x4 affine")
    return data


def enhanced_mr_bytes(data: np.ndarray, affine: np.ndarray, *, number: int, series_number: int = 1,
                      series_uid: str | None = None, study_uid: str | None = None,
                      repetition_time: float | None = None, random_state: int = 0) -> bytes:
    """One volume as an Enhanced MR Image Storage file (one frame per slice).

    Parameters
    ----------
    data : ndarray, shape (x, y, z)
        The volume.
    affine : ndarray, shape (4, 4)
        Voxel to RAS mm (NIfTI).
    number : int
        1-based acquisition number (``AcquisitionNumber``, ``InstanceNumber`` and every frame's
        ``TemporalPositionIndex``).
    series_number : int
        ``SeriesNumber``.
    series_uid, study_uid : str, optional
        UIDs; derived reproducibly from ``random_state`` and ``series_number`` when omitted.
    repetition_time : float, optional
        TR in seconds (written in ms).
    random_state : int
        Seed of the generated UIDs.

    Returns
    -------
    bytes
        The DICOM file (Part 10, explicit VR little endian).
    """
    data = _check_volume(data, affine)
    row_dir, col_dir, spacing, lps = _geometry(affine)
    study, series, frame = _uids(random_state, series_number, series_uid, study_uid)
    sop = generate_uid(entropy_srcs=[str(random_state), series, "volume", str(number)])
    slope, intercept = int16_scaling(data)
    nx, ny, nz = data.shape
    ds = _base(EnhancedMRImageStorage, sop, study=study, series=series, frame=frame,
               series_number=series_number, number=number, rows=ny, cols=nx, slope=slope,
               intercept=intercept, repetition_time=repetition_time)
    ds.InstanceNumber = int(number)
    ds.NumberOfFrames = nz
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    measures = Dataset()
    measures.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    measures.SliceThickness = _ds(np.linalg.norm(lps[:3, 2]))
    measures.SpacingBetweenSlices = _ds(np.linalg.norm(lps[:3, 2]))
    orientation = Dataset()
    orientation.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = _ds(slope), _ds(intercept)
    transform.RescaleType = "US"
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    dimensions = []
    for keyword in ("TemporalPositionIndex", "InStackPositionNumber"):
        dimension = Dataset()
        dimension.DimensionIndexPointer = tag_for_keyword(keyword)
        dimension.FunctionalGroupPointer = tag_for_keyword("FrameContentSequence")
        dimensions.append(dimension)
    ds.DimensionIndexSequence = DicomSequence(dimensions)
    frames = []
    for k in range(nz):
        content = Dataset()
        content.TemporalPositionIndex = int(number)
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        content.DimensionIndexValues = [int(number), k + 1]
        position = Dataset()
        position.ImagePositionPatient = [_ds(v) for v in lps[:3, :3] @ [0.0, 0.0, k] + lps[:3, 3]]
        item = Dataset()
        item.FrameContentSequence = DicomSequence([content])
        item.PlanePositionSequence = DicomSequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = encode_int16(data, slope, intercept).transpose(2, 1, 0).tobytes()
    return _to_bytes(ds)


def classic_mr_bytes(data: np.ndarray, affine: np.ndarray, *, number: int, series_number: int = 1,
                     series_uid: str | None = None, study_uid: str | None = None,
                     repetition_time: float | None = None, random_state: int = 0) -> list[bytes]:
    """One volume as classic single-frame MR Image Storage files, one per slice.

    Parameters are those of :func:`enhanced_mr_bytes`. Slices share ``AcquisitionNumber`` = ``number``
    and carry ``ImagesInAcquisition`` = the slice count; ``InstanceNumber`` runs over the series
    (``(number - 1) * n_slices + k + 1``). The int16 scaling is the volume's, shared by its slices.

    Returns
    -------
    list of bytes
        One DICOM file per slice, in slice order ``k = 0 .. z - 1``.
    """
    data = _check_volume(data, affine)
    row_dir, col_dir, spacing, lps = _geometry(affine)
    study, series, frame = _uids(random_state, series_number, series_uid, study_uid)
    slope, intercept = int16_scaling(data)
    stored = encode_int16(data, slope, intercept)
    nx, ny, nz = data.shape
    files = []
    for k in range(nz):
        sop = generate_uid(entropy_srcs=[str(random_state), series, "slice", str(number), str(k)])
        ds = _base(MRImageStorage, sop, study=study, series=series, frame=frame,
                   series_number=series_number, number=number, rows=ny, cols=nx, slope=slope,
                   intercept=intercept, repetition_time=repetition_time)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.InstanceNumber = (int(number) - 1) * nz + k + 1
        ds.ImagesInAcquisition = nz
        ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
        ds.SliceThickness = _ds(np.linalg.norm(lps[:3, 2]))
        ds.SpacingBetweenSlices = _ds(np.linalg.norm(lps[:3, 2]))
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [_ds(v) for v in lps[:3, :3] @ [0.0, 0.0, k] + lps[:3, 3]]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        files.append(_to_bytes(ds))
    return files


def write_dicom_volume(out_dir: str | Path, data: np.ndarray, affine: np.ndarray, *, number: int,
                       kind: str = "enhanced", name: str | None = None, **kwargs) -> list[Path]:
    """Write one volume as DICOM file(s) in ``out_dir``; see :func:`enhanced_mr_bytes`.

    ``kind`` is ``"enhanced"`` (one file ``<name>.dcm``) or ``"classic"`` (``<name>_slice0001.dcm``
    ...). ``name`` defaults to ``series{series_number:03d}_vol{number:05d}``. Returns the paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"series{int(kwargs.get('series_number', 1)):03d}_vol{int(number):05d}"
    paths = []
    for path, blob in dicom_files(data, affine, number=number, kind=kind, name=name, **kwargs):
        target = out_dir / path
        target.write_bytes(blob)
        paths.append(target)
    return paths


def dicom_files(data: np.ndarray, affine: np.ndarray, *, number: int, kind: str, name: str,
                **kwargs) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of one volume in the ``kind`` layout (see :func:`write_dicom_volume`)."""
    if kind == "enhanced":
        return [(f"{name}.dcm", enhanced_mr_bytes(data, affine, number=number, **kwargs))]
    if kind == "classic":
        blobs = classic_mr_bytes(data, affine, number=number, **kwargs)
        return [(f"{name}_slice{k + 1:04d}.dcm", blob) for k, blob in enumerate(blobs)]
    raise ValueError(f"unknown DICOM kind {kind!r}; expected 'enhanced' or 'classic'")


@dataclass
class DicomSlices:
    """Slices of one acquisition found in one DICOM file.

    Attributes
    ----------
    series_number : int or None
        ``SeriesNumber``.
    series_uid : str
        ``SeriesInstanceUID``.
    number : int
        Acquisition number of the volume the slices belong to.
    n_slices : int
        Slices that make the whole volume.
    positions : ndarray, shape (k, 3)
        ``ImagePositionPatient`` (LPS mm) of each slice.
    order : ndarray of int, shape (k,)
        The writer's slice order (``InStackPositionNumber`` or ``InstanceNumber``).
    orientation : ndarray, shape (6,)
        ``ImageOrientationPatient``.
    spacing : ndarray, shape (2,)
        ``PixelSpacing`` (between rows, between columns), mm.
    thickness : float
        Slice spacing used when the volume has one slice.
    pixels : ndarray of float32, shape (k, rows, columns)
        Rescaled intensities.
    """

    series_number: int | None
    series_uid: str
    number: int
    n_slices: int
    positions: np.ndarray
    order: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray
    thickness: float
    pixels: np.ndarray


def _first(ds: Dataset, sequence: str, keyword: str, default=None):
    """``ds.<sequence>[0].<keyword>``, or ``default``."""
    items = getattr(ds, sequence, None)
    if not items:
        return default
    return getattr(items[0], keyword, default)


def _frame_value(frame: Dataset | None, shared: Dataset | None, sequence: str, keyword: str, default=None):
    for group in (frame, shared):
        if group is not None:
            value = _first(group, sequence, keyword)
            if value is not None:
                return value
    return default


def read_dicom(path: str | Path) -> list[DicomSlices]:
    """Read an MR DICOM file into the acquisitions' slices it holds.

    Parameters
    ----------
    path : path-like
        A classic single-frame or an enhanced multi-frame MR file.

    Returns
    -------
    list of DicomSlices
        One item per acquisition number in the file (classic: one; enhanced: one per temporal
        position).

    Raises
    ------
    IncompleteFile
        pydicom cannot parse the file or its pixel data are shorter than Rows x Columns x frames:
        the file is probably still being written.
    ValueError
        A complete file that is not a usable MR image (no geometry, no acquisition number,
        classic file without ``ImagesInAcquisition``...).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # a file caught mid-write makes pydicom warn about the values it cut
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a truncated file
        raise IncompleteFile(f"pydicom cannot parse it ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise IncompleteFile("no pixel data (yet)")
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        expected = rows * cols * n_frames * int(ds.BitsAllocated) // 8
        if len(ds.PixelData) < expected:
            raise IncompleteFile(f"pixel data has {len(ds.PixelData)} of {expected} bytes")
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_compressed and syntax.is_little_endian and int(ds.BitsAllocated) == 16 \
            and int(getattr(ds, "SamplesPerPixel", 1)) == 1:
        # the common case, read directly: pydicom's pixel backends cost more than the file read
        dtype = "<i2" if int(ds.PixelRepresentation) == 1 else "<u2"
        stored = np.frombuffer(ds.PixelData, dtype=dtype, count=rows * cols * n_frames)
    else:
        try:
            stored = ds.pixel_array
        except Exception as exc:  # noqa: BLE001
            raise IncompleteFile(f"pixel data do not decode ({exc})") from exc
    stored = np.asarray(stored).reshape(n_frames, rows, cols)
    series_number = int(ds.SeriesNumber) if "SeriesNumber" in ds and ds.SeriesNumber != "" else None
    series_uid = str(getattr(ds, "SeriesInstanceUID", ""))
    file_number = getattr(ds, "AcquisitionNumber", None) or getattr(ds, "InstanceNumber", None)
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced(ds, stored, series_number, series_uid, file_number, path)
    return [_classic(ds, stored, series_number, series_uid, path)]


def _rescaled(stored: np.ndarray, slope, intercept) -> np.ndarray:
    slope = 1.0 if slope in (None, "") else float(slope)
    intercept = 0.0 if intercept in (None, "") else float(intercept)
    values = stored.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        # float32 holds int16 x slope to 1e-7 relative: far below the storage step
        values *= np.float32(slope)
        values += np.float32(intercept)
    return values


def _classic(ds: Dataset, stored: np.ndarray, series_number: int | None, series_uid: str,
             path: Path) -> DicomSlices:
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        raise ValueError(f"{path.name}: no {', '.join(missing)}; cannot place the image")
    n_slices = int(getattr(ds, "ImagesInAcquisition", 0) or 0)
    if n_slices <= 0:
        raise ValueError(f"{path.name}: a classic single-frame file needs ImagesInAcquisition (0020,1002) "
                         "to know how many slices make a volume")
    number = getattr(ds, "AcquisitionNumber", None)
    if number in (None, ""):
        if n_slices > 1:
            raise ValueError(f"{path.name}: no AcquisitionNumber to group its slices into a volume")
        number = ds.InstanceNumber
    thickness = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None) or 1.0
    return DicomSlices(series_number=series_number, series_uid=series_uid, number=int(number),
                       n_slices=n_slices, positions=np.array([[float(v) for v in ds.ImagePositionPatient]]),
                       order=np.array([int(getattr(ds, "InstanceNumber", 0) or 0)]),
                       orientation=np.array([float(v) for v in ds.ImageOrientationPatient]),
                       spacing=np.array([float(v) for v in ds.PixelSpacing]), thickness=float(thickness),
                       pixels=_rescaled(stored, getattr(ds, "RescaleSlope", None),
                                        getattr(ds, "RescaleIntercept", None)))


def _enhanced(ds: Dataset, stored: np.ndarray, series_number: int | None, series_uid: str,
              file_number, path: Path) -> list[DicomSlices]:
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    frames = ds.PerFrameFunctionalGroupsSequence
    if len(frames) != stored.shape[0]:
        raise ValueError(f"{path.name}: {len(frames)} per-frame groups for {stored.shape[0]} frames")
    numbers, positions, order, pixels = [], [], [], []
    orientation = spacing = thickness = None
    for index, frame in enumerate(frames):
        number = _frame_value(frame, None, "FrameContentSequence", "TemporalPositionIndex", file_number)
        position = _frame_value(frame, shared, "PlanePositionSequence", "ImagePositionPatient")
        orient = _frame_value(frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        pixel_spacing = _frame_value(frame, shared, "PixelMeasuresSequence", "PixelSpacing")
        if number in (None, "") or position is None or orient is None or pixel_spacing is None:
            raise ValueError(f"{path.name}: frame {index + 1} lacks a temporal position/acquisition number, "
                             "ImagePositionPatient, ImageOrientationPatient or PixelSpacing")
        slope = _frame_value(frame, shared, "PixelValueTransformationSequence", "RescaleSlope",
                             getattr(ds, "RescaleSlope", None))
        intercept = _frame_value(frame, shared, "PixelValueTransformationSequence", "RescaleIntercept",
                                 getattr(ds, "RescaleIntercept", None))
        numbers.append(int(number))
        positions.append([float(v) for v in position])
        order.append(int(_frame_value(frame, None, "FrameContentSequence", "InStackPositionNumber",
                                      index + 1)))
        pixels.append(_rescaled(stored[index], slope, intercept))
        orientation = np.array([float(v) for v in orient])
        spacing = np.array([float(v) for v in pixel_spacing])
        thickness = (_frame_value(frame, shared, "PixelMeasuresSequence", "SpacingBetweenSlices")
                     or _frame_value(frame, shared, "PixelMeasuresSequence", "SliceThickness") or 1.0)
    numbers_arr = np.array(numbers)
    out = []
    for number in np.unique(numbers_arr):
        pick = np.flatnonzero(numbers_arr == number)
        out.append(DicomSlices(series_number=series_number, series_uid=series_uid, number=int(number),
                               n_slices=pick.size, positions=np.array(positions)[pick],
                               order=np.array(order)[pick], orientation=orientation, spacing=spacing,
                               thickness=float(thickness), pixels=np.stack([pixels[i] for i in pick])))
    return out


def assemble_volume(parts: Sequence[DicomSlices]) -> tuple[np.ndarray, np.ndarray]:
    """Stack the slices of one acquisition into a NIfTI-style volume and its RAS affine.

    Parameters
    ----------
    parts : sequence of DicomSlices
        Every slice of the volume (from one or several files), same orientation and spacing.

    Returns
    -------
    data : ndarray of float32, shape (columns, rows, slices)
    affine : ndarray, shape (4, 4)
        Voxel to RAS mm.

    Raises
    ------
    ValueError
        Slices disagree in orientation or in-plane size, or are not evenly spaced.
    """
    orientation, spacing = parts[0].orientation, parts[0].spacing
    for part in parts[1:]:
        if not (np.allclose(part.orientation, orientation, atol=1e-4) and np.allclose(part.spacing, spacing)):
            raise ValueError("slices of one volume differ in orientation or pixel spacing")
        if part.pixels.shape[1:] != parts[0].pixels.shape[1:]:
            raise ValueError("slices of one volume differ in rows x columns")
    positions = np.concatenate([p.positions for p in parts])
    order = np.concatenate([p.order for p in parts])
    pixels = np.concatenate([p.pixels for p in parts])
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    sort = np.argsort(positions @ normal, kind="stable")
    if sort.size > 1 and np.corrcoef(np.arange(sort.size), order[sort])[0, 1] < 0:
        sort = sort[::-1]
    positions, pixels = positions[sort], pixels[sort]
    if len(positions) > 1:
        steps = np.diff(positions, axis=0)
        step = steps.mean(axis=0)
        if np.abs(steps - step).max() > 1e-3 * max(np.linalg.norm(step), 1e-6) + 1e-4:
            raise ValueError("slices are not evenly spaced (missing or duplicated slices?)")
    else:
        step = normal * parts[0].thickness
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    data = np.ascontiguousarray(pixels.transpose(2, 1, 0), dtype=np.float32)
    return data, LPS_TO_RAS @ lps
