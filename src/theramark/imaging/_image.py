"""Fast, memory-bounded reading of 4D BOLD images restricted to a brain mask.

nilearn's maskers load the whole 4D image as float64 and then index it; for a 91×109×91×300 run
that is 2.2 GB before anything else happens. Here the image is streamed from disk a block of
volumes at a time and only the in-mask voxels of each block are kept, as float32, so peak memory
is about the in-mask data plus one block. The values are identical to ``img.get_fdata()[mask]``
(same scaling: ``stored * slope + intercept`` in double precision), bit for bit what
``img.get_fdata(dtype=np.float32)[mask]`` gives. Gzipped files are inflated by ISA-L when the
``isal`` package is installed, else zlib (:mod:`theramark._inflate`).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from theramark._inflate import INFLATE_ERRORS, stored_bytes
from theramark.errors import BadInputError, one_line
from theramark.study.validate import open_nifti, same_grid


def load_mask(path: str | os.PathLike) -> nib.Nifti1Image:
    """A 3D mask image; a clear error when it is missing, unreadable or not 3D."""
    img = open_nifti(path, what="brain mask")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
    elif len(shape) != 3:
        raise BadInputError(f"{path}: a brain mask must be a 3D image, got shape {shape}")
    return img


def open_bold(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open (not read) a 4D BOLD image; a clear error naming the file when it is missing, has an
    unreadable header or is not 4D (:func:`theramark.study.validate.open_nifti`). Truncated or
    corrupt data is caught by :func:`read_masked` while it streams the file."""
    return open_nifti(path, what="BOLD image", ndim=4)


def check_same_grid(
    img: nib.spatialimages.SpatialImage, reference: nib.spatialimages.SpatialImage,
    name: str, reference_name: str,
) -> None:
    """Raise when two images are not on the same voxel grid (shape and affine)."""
    if not same_grid(img, reference):
        raise BadInputError(
            f"{name}: not on the grid of {reference_name} (shape {tuple(img.shape[:3])} vs "
            f"{tuple(reference.shape[:3])}, affines differ by up to "
            f"{np.abs(img.affine - reference.affine).max():.3g} mm); "
            "expected both in the same space and resolution"
        )


def mask_indices(mask_img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Positions of the non-zero mask voxels in the image's stored (Fortran-order) voxel array.

    The positions are increasing, so gathering them from each stored volume is a forward scan
    (several times faster than nilearn's C-order ``data[mask]``). Arrays of in-mask values in
    theramark use this column order; :func:`unmask` puts them back in place.
    """
    data = stored_array(mask_img, "brain mask") != 0
    return np.flatnonzero(np.ravel(data, order="F"))


def stored_array(img: nib.spatialimages.SpatialImage, what: str = "NIfTI image") -> np.ndarray:
    """The data of an image as stored (scaled, not converted to float).

    nibabel reports a truncated or corrupt file with an ``OSError`` over two lines ("Expected N
    bytes, got M bytes from ... \\n - could the file be damaged?"); here it is one line naming
    the file.

    Raises
    ------
    BadInputError
        ``"<file>: <what> is corrupt or truncated (<reason>)"``.
    """
    try:
        return np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        name = img.get_filename() or what
        raise BadInputError(f"{name}: {what} is corrupt or truncated ({one_line(exc)})") from None


def check_bold_values(data: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse in-mask BOLD data that no analysis can use: NaN or infinite values, or no voxel
    that changes over time.

    Parameters
    ----------
    data : ndarray, shape (n_volumes, n_voxels)
        In-mask BOLD (:func:`read_masked`).
    path : path-like
        The BOLD file, named in the message.

    Raises
    ------
    BadInputError
        ``"<path>: N in-mask voxel(s) contain NaN or infinite values, in K of T volumes (indices
        from 0: ...)"``, or
        ``"<path>: every in-mask voxel is constant over time ..."``.
    """
    if not np.isfinite(data.sum(dtype=np.float64)):  # NaN and infinities propagate to the sum
        finite = np.isfinite(data)
        voxels = int((~finite).any(axis=0).sum())
        volumes = np.flatnonzero(~finite.all(axis=1))
        whole = int((~finite).all(axis=1).sum())
        listed = ", ".join(str(v) for v in volumes[:10]) + (", ..." if volumes.size > 10 else "")
        raise BadInputError(
            f"{path}: {voxels} in-mask voxel(s) contain NaN or infinite values, in {volumes.size} "
            f"of {data.shape[0]} volumes (indices from 0: {listed})"
            + (f"; {whole} volume(s) are NaN or infinite throughout" if whole else ""))
    # volume by volume: a real run differs from its first volume at once
    if data.shape[0] > 1 and not any((volume != data[0]).any() for volume in data[1:]):
        raise BadInputError(
            f"{path}: every in-mask voxel is constant over time ({data.shape[0]} volumes, "
            f"{data.shape[1]} voxels): no signal to analyse")


def _stored_bytes(path: Path, offset: int, chunk: int = 16 << 20, engine: str | None = None):
    """The file's bytes from ``offset`` on, inflated (ISA-L or zlib) when gzipped, in large
    pieces (:func:`theramark._inflate.stored_bytes`)."""
    return stored_bytes(path, offset, chunk, engine)


def _prefetched(pieces, depth: int = 3):
    """Iterate ``pieces`` produced in a background thread (zlib and ISA-L release the GIL while
    they inflate, so decompression overlaps the gathering of in-mask voxels)."""
    import queue
    import threading

    channel: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for piece in pieces:
                while not stop.is_set():
                    try:
                        channel.put(piece, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            channel.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            channel.put(exc)

    worker = threading.Thread(target=produce, name="theramark-bold-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = channel.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def read_masked(
    bold: nib.Nifti1Image, flat_index: np.ndarray, block_bytes: int = 64 << 20,
    engine: str | None = None,
) -> np.ndarray:
    """In-mask voxels of a 4D image as a float32 array of shape (n_volumes, n_voxels).

    Parameters
    ----------
    bold : Nifti1Image
        A 4D image opened from a file (``nib.load``).
    flat_index : ndarray of int
        Positions of the voxels to keep in the stored voxel array (:func:`mask_indices`).
    block_bytes : int
        Approximate size of the stored data read at once.
    engine : {"isal", "zlib"}, optional
        Inflater of a gzipped file (:func:`theramark._inflate.inflate_engine`: ISA-L when
        installed, unless ``$THERAMARK_INFLATE=zlib``). Both give the same bytes.

    Returns
    -------
    ndarray, float32, shape (n_volumes, n_voxels)
        Scaled values (``stored * scl_slope + scl_inter``), exactly what ``get_fdata()`` gives
        in float32.
    """
    shape = bold.shape
    n_spatial = int(np.prod(shape[:3]))
    n_vol = int(shape[3])
    header = bold.header
    dtype = header.get_data_dtype()
    # nibabel moves the header's scl_slope/scl_inter onto the array proxy when it loads a file
    slope = float(getattr(bold.dataobj, "slope", 1.0))
    inter = float(getattr(bold.dataobj, "inter", 0.0))
    out = np.empty((n_vol, flat_index.size), dtype=np.float32)
    filename = bold.get_filename()
    scaled = slope != 1.0 or inter != 0.0
    if filename is None or getattr(bold.dataobj, "is_proxy", False) is False:
        data = stored_array(bold, "BOLD image")
        flat = data.reshape(n_spatial, n_vol, order="F")
        out[:] = _scale(flat[flat_index].T, slope, inter) if scaled else flat[flat_index].T
        return out
    offset = int(bold.dataobj.offset)
    volume_bytes = n_spatial * dtype.itemsize
    per_block = max(1, min(n_vol, block_bytes // volume_bytes))
    buffer = np.empty(per_block * n_spatial, dtype=dtype)
    raw = memoryview(buffer).cast("B")
    # native-endian float32 without scaling: no conversion
    same_type = dtype == np.dtype(np.float32) and not scaled
    path = Path(filename)
    start, filled = 0, 0  # first volume of the block being filled; bytes of it filled
    try:
        for piece in _prefetched(_stored_bytes(path, offset, engine=engine)):
            view = memoryview(piece)
            while view.nbytes and start < n_vol:
                count = min(per_block, n_vol - start)
                take = min(view.nbytes, count * volume_bytes - filled)
                raw[filled : filled + take] = view[:take]
                filled += take
                view = view[take:]
                if filled == count * volume_bytes:
                    block = buffer[: count * n_spatial].reshape(count, n_spatial)
                    if same_type:  # gather straight into the output, no temporary
                        np.take(block, flat_index, axis=1, out=out[start : start + count])
                    elif scaled:
                        out[start : start + count] = _scale(block[:, flat_index], slope, inter)
                    else:
                        out[start : start + count] = block[:, flat_index]
                    start, filled = start + count, 0
            if start >= n_vol:
                break
    except EOFError:
        pass  # the file ends inside the gzip stream: reported below with what is missing
    except INFLATE_ERRORS as exc:
        raise BadInputError(f"{path}: corrupt compressed data ({one_line(exc)})") from None
    if start < n_vol:
        raise BadInputError(
            f"{path}: file is truncated (expected {n_vol} volumes of {shape[:3]}, "
            f"data ends inside volume {start + filled // volume_bytes + 1})"
        )
    return out


def _scale(stored: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """``stored * slope + inter`` in double precision, as nibabel scales (then cast to float32 by
    the caller): scaling in float32 would differ from ``get_fdata(dtype=float32)`` in the last bit."""
    values = stored.astype(np.float64)
    if slope != 1.0:
        values *= slope
    if inter != 0.0:
        values += inter
    return values


def load_masked_bold(
    bold_path: str | os.PathLike, mask_path: str | os.PathLike | None,
) -> tuple[np.ndarray, nib.Nifti1Image, nib.Nifti1Image]:
    """Read a BOLD run inside its brain mask.

    Parameters
    ----------
    bold_path : path
        4D preprocessed BOLD.
    mask_path : path or None
        3D brain mask on the same grid; ``None`` keeps every voxel whose time series is not all
        zeros.

    Returns
    -------
    data : ndarray, float32, shape (n_volumes, n_voxels)
        Finite, and not constant over time in every voxel (:func:`check_bold_values`).
    bold : Nifti1Image
        The opened (not loaded) BOLD image, for its header and affine.
    mask : Nifti1Image
        The mask used (a uint8 image on the BOLD grid).
    """
    bold = open_bold(bold_path)
    if mask_path is None:
        full = stored_array(bold, "BOLD image")
        keep = np.any(full != 0, axis=3)
        mask = nib.Nifti1Image(keep.astype(np.uint8), bold.affine)
        del full
    else:
        mask = load_mask(mask_path)
        check_same_grid(mask, bold, str(mask_path), str(bold_path))
    index = mask_indices(mask)
    if index.size == 0:
        raise BadInputError(f"{mask_path or bold_path}: the brain mask is empty (no non-zero voxel)")
    data = read_masked(bold, index)
    check_bold_values(data, bold_path)
    return data, bold, mask


def unmask(values: np.ndarray, mask: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """A 3D image with ``values`` (n_voxels,) placed at the mask's non-zero voxels (0 elsewhere)."""
    flat = np.zeros(int(np.prod(mask.shape[:3])), dtype=np.float32)
    flat[mask_indices(mask)] = values
    return nib.Nifti1Image(flat.reshape(mask.shape[:3], order="F"), mask.affine)
