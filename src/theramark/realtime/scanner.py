"""A scanner that exports a recorded run into a folder volume by volume, at the TR, with faults.

:func:`simulate_scanner` replays a 4D NIfTI run as a real-time export: one file per volume (or one
growing 4D file) written at ``tr / speed`` intervals, with optional jitter, out-of-order delivery,
files written in pieces, dropped volumes and a second series interleaved in the same folder. It is
what the ingestion tests and ``theramark realtime simulate-scanner`` use.

File names (what :class:`~theramark.realtime.ingest.FolderSource` reads):

* ``format="nifti"``: ``series{S:03d}_vol{N:05d}.nii`` (``.nii.gz`` with ``gzip=True``);
* ``format="nifti-4d"``: one growing ``series{S:03d}_run.nii`` (header first, each volume appended at
  its time; no shuffle, drop or second series);
* ``format="dicom"``: ``series{S:03d}_vol{N:05d}.dcm``, one Enhanced MR file per volume, or with
  ``dicom_kind="classic"`` ``series{S:03d}_vol{N:05d}_slice{K:04d}.dcm``, one MR file per slice.

Complete files appear atomically (written under a ``.``-prefixed temporary name, then renamed), as
most export tools do; with ``partial_writes=True`` a file is instead written in place in three pieces
with pauses between them, so that a reader sees it incomplete.
"""

from __future__ import annotations

import gzip as gzip_module
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from theramark.errors import BadInputError
from theramark.realtime.dicom import dicom_files

FORMATS = ("nifti", "nifti-4d", "dicom")
#: Pieces a partially written file is written in.
PARTIAL_PIECES = 3
#: Volumes encoded ahead of their time.
LOOKAHEAD = 4


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...], gzip: bool) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms[: data.ndim])
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    raw = img.to_bytes()
    return gzip_module.compress(raw, compresslevel=1, mtime=0) if gzip else raw


def _write(path: Path, blob: bytes, partial: bool, pause_s: float) -> None:
    if not partial:
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
        return
    cuts = np.linspace(0, len(blob), PARTIAL_PIECES + 1).astype(int)
    with path.open("wb") as handle:
        for piece, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            if piece:
                time.sleep(pause_s)
            handle.write(blob[a:b])
            handle.flush()


def _delivery_order(n_volumes: int, shuffle: bool, window: int, rng: np.random.Generator) -> np.ndarray:
    order = np.arange(1, n_volumes + 1)
    if shuffle and window > 1:
        for start in range(0, n_volumes, window):
            order[start:start + window] = rng.permutation(order[start:start + window])
    return order


def simulate_scanner(run_path: str | os.PathLike, export_dir: str | os.PathLike, tr: float, *,
                     format: str = "nifti", shuffle: bool = False, partial_writes: bool = False,
                     drop: Iterable[int] | None = (), speed: float = 1.0, jitter_s: float = 0.0,
                     series: int = 1, extra_series: bool = False, gzip: bool = False,
                     dicom_kind: str = "enhanced", shuffle_window: int = 3, n_volumes: int | None = None,
                     random_state: int = 0) -> pd.DataFrame:
    """Replay a 4D run into ``export_dir`` as a scanner's real-time export.

    Volume ``n`` (1-based) is due at ``(slot - 1) * tr / speed`` seconds after the call, plus a
    uniform ``[0, jitter_s)`` delay, where ``slot`` is its place in the delivery order (``n`` unless
    shuffled). The function returns when the last file is written.

    Parameters
    ----------
    run_path : path-like
        4D NIfTI run.
    export_dir : path-like
        Folder to write into (created).
    tr : float
        Repetition time (s).
    format : {"nifti", "nifti-4d", "dicom"}
        File layout (see the module docstring).
    shuffle : bool
        Deliver volumes out of order: shuffled within consecutive windows of ``shuffle_window``.
    partial_writes : bool
        Write each file in place in three pieces, pausing ``min(tr / speed / 6, 0.2)`` s between
        pieces.
    drop : iterable of int
        1-based volumes never written.
    speed : float
        Replay speed (2: twice as fast as real time).
    jitter_s : float
        Maximum extra delay (s) of each volume.
    series : int
        Series number (DICOM ``SeriesNumber``, NIfTI ``series{S:03d}`` prefix).
    extra_series : bool
        Also write every volume as series ``series + 1``, half a TR after the main one (a second
        series in the same folder, which a reader must ignore).
    gzip : bool
        Write ``.nii.gz`` (``format="nifti"`` only).
    dicom_kind : {"enhanced", "classic"}
        One multi-frame file per volume, or one file per slice.
    shuffle_window : int
        Size of the windows shuffled within.
    n_volumes : int, optional
        Replay only the first ``n_volumes`` volumes.
    random_state : int
        Seed of the jitter, shuffle and DICOM UIDs.

    Returns
    -------
    pandas.DataFrame
        One row per written volume: ``number``, ``series``, ``path`` (the first file), ``t_done``
        (``time.time()`` when its last byte was written), in the order written.

    Raises
    ------
    BadInputError
        The run is not a 4D NIfTI, or an option does not fit the format.
    """
    run_path, export_dir = Path(run_path), Path(export_dir)
    if format not in FORMATS:
        raise BadInputError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if not tr > 0 or not speed > 0 or jitter_s < 0:
        raise BadInputError(f"tr and speed must be positive and jitter_s >= 0; got tr={tr}, speed={speed}, "
                            f"jitter_s={jitter_s}")
    if dicom_kind not in ("enhanced", "classic"):
        raise BadInputError(f"unknown dicom_kind {dicom_kind!r}; expected 'enhanced' or 'classic'")
    try:
        img = nib.load(run_path)
    except Exception as exc:
        raise BadInputError(f"{run_path}: cannot read the run as NIfTI ({exc})") from exc
    if img.ndim != 4:
        raise BadInputError(f"{run_path}: expected a 4D run, got shape {img.shape}")
    data = np.asanyarray(img.dataobj)
    affine = img.affine
    zooms = img.header.get_zooms()
    total = data.shape[3] if n_volumes is None else min(int(n_volumes), data.shape[3])
    dropped = {int(n) for n in (drop or ())}
    bad = sorted(n for n in dropped if not 1 <= n <= total)
    if bad:
        raise BadInputError(f"--drop: volumes {bad} are outside 1..{total}")
    if format == "nifti-4d" and (shuffle or dropped or extra_series or gzip):
        raise BadInputError("format 'nifti-4d' appends to one file: shuffle, drop, extra_series and gzip "
                            "do not apply")
    if gzip and format != "nifti":
        raise BadInputError("gzip applies to format 'nifti' only")
    export_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(random_state)
    interval = tr / speed
    pause_s = min(interval / 6.0, 0.2)
    order = _delivery_order(total, shuffle, shuffle_window, rng)
    delays = rng.uniform(0.0, jitter_s, total) if jitter_s > 0 else np.zeros(total)
    events = []
    for slot, number in enumerate(order):
        due = slot * interval + delays[slot]
        if int(number) not in dropped:
            events.append((due, int(number), series))
        if extra_series:
            events.append((due + interval / 2.0, int(number), series + 1))
    events.sort(key=lambda e: e[0])
    if format == "nifti-4d":
        return _replay_4d(data[..., :total], affine, zooms, export_dir / f"series{series:03d}_run.nii",
                          interval, delays, partial_writes, pause_s, series)
    def encode(event: tuple[float, int, int]) -> list[tuple[str, bytes]]:
        _, number, series_number = event
        volume = np.asarray(data[..., number - 1])
        name = f"series{series_number:03d}_vol{number:05d}"
        if format == "nifti":
            return [(name + (".nii.gz" if gzip else ".nii"), _nifti_bytes(volume, affine, zooms, gzip))]
        return dicom_files(volume, affine, number=number, kind=dicom_kind, name=name,
                           series_number=series_number, repetition_time=tr, random_state=random_state)

    rows = []
    # encoding runs a few volumes ahead in a thread, so that the files keep the TR's cadence
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(encode, event) for event in events[:LOOKAHEAD]]
        t0 = time.time()
        for index, (due, number, series_number) in enumerate(events):
            files = pending[index].result()
            pending[index] = None
            if index + LOOKAHEAD < len(events):
                pending.append(pool.submit(encode, events[index + LOOKAHEAD]))
            time.sleep(max(0.0, t0 + due - time.time()))
            for file_name, blob in files:
                _write(export_dir / file_name, blob, partial_writes, pause_s / max(len(files), 1))
            rows.append({"number": number, "series": series_number, "path": str(export_dir / files[0][0]),
                         "t_done": time.time()})
    return pd.DataFrame(rows, columns=["number", "series", "path", "t_done"])


def _replay_4d(data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...], path: Path,
               interval: float, delays: np.ndarray, partial: bool, pause_s: float,
               series: int) -> pd.DataFrame:
    """Write the header of a 4D file, then append each volume at its time."""
    blob = _nifti_bytes(np.asarray(data), affine, zooms, gzip=False)
    volume_bytes = int(np.prod(data.shape[:3])) * np.asarray(data).dtype.itemsize
    offset = len(blob) - data.shape[3] * volume_bytes
    t0 = time.time()
    rows = []
    with path.open("wb") as handle:
        handle.write(blob[:offset])
        handle.flush()
        for t in range(data.shape[3]):
            time.sleep(max(0.0, t0 + t * interval + delays[t] - time.time()))
            chunk = blob[offset + t * volume_bytes: offset + (t + 1) * volume_bytes]
            if partial:
                half = len(chunk) // 2
                handle.write(chunk[:half])
                handle.flush()
                time.sleep(pause_s)
                chunk = chunk[half:]
            handle.write(chunk)
            handle.flush()
            rows.append({"number": t + 1, "series": series, "path": str(path), "t_done": time.time()})
    return pd.DataFrame(rows, columns=["number", "series", "path", "t_done"])
