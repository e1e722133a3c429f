"""Volumes of a real-time run as the scanner delivers them: from an export folder or a TCP socket.

Both sources are iterables of :class:`~theramark.realtime.volumes.Volume` that yield acquisition numbers
``start .. n_volumes`` each exactly once and in order, whatever order the volumes arrive in: a volume
that arrives early waits in a buffer until the ones before it arrived or were declared missing.

When a volume is declared missing
---------------------------------
Volume ``n`` is expected at ``t_m + (n - m) * tr`` for the volume ``m`` already read that makes this
latest (``t_m``: when ``m`` was ready; a volume delivered early does not make later ones due early).
Before any volume was read, volume ``start`` is expected ``first_timeout_s`` after iteration began. It is
declared missing ``missing_after_s`` (default ``2 * tr``) after the earlier of that expected time and
the arrival of any later volume, unless one of its files is still being written (that file gets
``corrupt_after_s`` of unchanged size to become readable, then the volume is an error). So a dropped
volume costs at most ``missing_after_s`` of latency, a scanner that stops ends the run about
``missing_after_s`` after the last expected volume, and the source never blocks forever.

Folder watching
---------------
On Linux the folder is watched with inotify (through ``ctypes``, no extra package): a file is read when
it is closed after writing or moved in, and files that were incomplete are retried every ``poll_s``
(default ``tr / 10``, at least 20 ms). Elsewhere the folder is listed every ``poll_s``. A startup scan
reads files already there (resume a run with ``start=k``: volumes before ``k`` are skipped).

A file is read only when complete: a ``.nii`` when all bytes of the volume are there (a growing 4D file
yields each appended volume), a ``.nii.gz`` when its gzip stream inflates with a valid checksum, a DICOM
when pydicom parses it and its pixel data are whole. A file that stays unreadable with an unchanged
size for ``corrupt_after_s`` is reported as an ``"error"`` volume when its acquisition number is
known (the NIfTI name, or a DICOM header that still parses), and otherwise logged and listed in
``errors_``; the run goes on. A 4D file awaiting its next volume is never corrupt: it is read as it
grows for as long as the run lasts.

Series: only the configured series is read (DICOM ``SeriesNumber`` or ``SeriesInstanceUID``, NIfTI
series prefix or number; see :mod:`theramark.realtime.volumes` for the naming). With ``series=None``
the first series read is taken (files present at start in order of modification time, then as they
arrive); other series are ignored and logged once each. In an export folder shared by several runs,
pass ``series``.

Socket protocol
---------------
:class:`SocketSource` listens on a TCP port. A client sends any number of messages on a connection;
each message is::

    4 bytes      header length L, unsigned big-endian
    L bytes      UTF-8 JSON header: {"number": int, "shape": [x, y, z], "dtype": "<f4",
                                      "affine": [[4 floats] x 4]}
    x*y*z*4      the volume, little-endian float32, C order of the (x, y, z) array

Connections are served one at a time, in the order they are made (a sender keeps one connection
open, or opens one per volume). A header ``{"end": true}`` (no payload) says the run is over: volumes
not received are declared missing at once. :func:`send_volume` is the client side.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import json
import logging
import os
import queue
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from theramark.errors import BadInputError
from theramark.realtime.dicom import DicomSlices, assemble_volume, read_dicom
from theramark.realtime.volumes import (
    ERROR,
    MISSING,
    OK,
    AwaitingVolumes,
    IncompleteFile,
    NiftiName,
    Volume,
    is_nifti,
    nifti_stem,
    parse_nifti_name,
    read_nifti_layout,
    read_nifti_volumes,
)

logger = logging.getLogger("theramark.realtime")

DEFAULT_PATTERNS = ("*.nii", "*.nii.gz", "*.dcm", "*.DCM", "*.IMA", "*.ima")
#: Minimum poll interval (s): faster polling buys no latency worth its CPU.
MIN_POLL_S = 0.02
#: Default wait (s) for the first volume before it is declared missing.
FIRST_TIMEOUT_S = 300.0
#: Affines of one run agree within this (mm); beyond it the volume is in another orientation.
AFFINE_TOLERANCE_MM = 1e-3


def _check_run(n_volumes: int, tr: float, start: int) -> None:
    problems = []
    if int(n_volumes) < 1:
        problems.append(f"n_volumes must be at least 1, got {n_volumes}")
    if not tr > 0:
        problems.append(f"tr must be positive (seconds), got {tr}")
    if not 1 <= int(start) <= max(int(n_volumes), 1):
        problems.append(f"start must be within 1..n_volumes={n_volumes}, got {start}")
    if problems:
        raise BadInputError("invalid real-time run settings", problems)


class _Sequencer:
    """Orders arriving volumes by number, checks them against the first one, declares missing ones."""

    def __init__(self, n_volumes: int, tr: float, start: int, missing_after_s: float,
                 first_timeout_s: float, t0: float):
        self.next = int(start)
        self.last = int(n_volumes)
        self.tr = float(tr)
        self.missing_after_s = float(missing_after_s)
        self.buffer: dict[int, Volume] = {}
        self.arrived: dict[int, float] = {}
        # expected time of volume n: self.anchor + n * tr
        self.anchor = t0 + first_timeout_s - self.next * self.tr
        self.anchored = False
        self.reference: tuple[tuple[int, ...], np.ndarray] | None = None
        self.ended = False

    @property
    def done(self) -> bool:
        return self.next > self.last

    def add(self, volume: Volume, now: float | None = None) -> None:
        """Buffer a volume; ignore numbers outside the run or already yielded or buffered."""
        n = volume.number
        if n < self.next or n > self.last:
            if n > self.last or volume.status != MISSING:
                logger.info("ignoring volume %d from %s: outside %d..%d or already delivered", n,
                            volume.source, self.next, self.last)
            return
        if n in self.buffer:
            logger.warning("volume %d arrived twice (%s); keeping the first", n, volume.source)
            return
        self.buffer[n] = volume
        self.arrived[n] = time.time() if now is None else now

    def deadline(self, n: int) -> float:
        """When volume ``n`` is declared missing if it has not arrived."""
        if self.ended:
            return -np.inf
        expected = self.anchor + n * self.tr
        later = [t for m, t in self.arrived.items() if m > n]
        return min([expected, *later]) + self.missing_after_s

    def _checked(self, volume: Volume) -> Volume:
        if volume.status != OK:
            return volume
        shape, affine = volume.data.shape, volume.affine
        if self.reference is None:
            self.reference = (shape, affine)
            return volume
        ref_shape, ref_affine = self.reference
        if shape != ref_shape:
            message = f"shape {shape} differs from the run's {ref_shape}"
        elif not np.allclose(affine, ref_affine, atol=AFFINE_TOLERANCE_MM):
            message = "orientation/position (affine) differs from the run's first volume"
        else:
            return volume
        logger.error("volume %d (%s): %s", volume.number, volume.source, message)
        return Volume(number=volume.number, status=ERROR, data=None, affine=None, t_ready=volume.t_ready,
                      source=volume.source, message=message)

    def pop(self, now: float, waiting: dict[int, float] | None = None) -> list[Volume]:
        """Volumes that can be yielded now, in order.

        ``waiting`` maps numbers whose file is still being written to when to give up on it.
        """
        out = []
        waiting = waiting or {}
        while not self.done:
            n = self.next
            if n in self.buffer:
                volume = self._checked(self.buffer.pop(n))
                self.arrived.pop(n, None)
                if volume.status == OK:
                    implied = volume.t_ready - n * self.tr
                    self.anchor = max(self.anchor, implied) if self.anchored else implied
                    self.anchored = True
            elif now >= max(self.deadline(n), -np.inf if self.ended else waiting.get(n, -np.inf)):
                message = "the run ended before it arrived" if self.ended else (
                    f"not received within {self.missing_after_s:g} s of when it was due")
                volume = Volume(number=n, status=MISSING, data=None, affine=None, t_ready=now,
                                message=message)
                logger.warning("volume %d declared missing: %s", n, message)
            else:
                break
            out.append(volume)
            self.next += 1
        return out

    def next_event(self, waiting: dict[int, float] | None = None) -> float:
        """Time of the next missing-volume declaration (inf when done)."""
        if self.done:
            return np.inf
        return max(self.deadline(self.next), (waiting or {}).get(self.next, -np.inf))


class _Inotify:
    """Minimal inotify watch of one folder through libc (Linux only)."""

    IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_Q_OVERFLOW = 0x2, 0x8, 0x80, 0x100, 0x4000
    IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
    _EVENT = struct.Struct("iIII")

    def __init__(self, folder: Path):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = self.IN_MODIFY | self.IN_CLOSE_WRITE | self.IN_MOVED_TO | self.IN_CREATE
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), mask) < 0:
            errno = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(errno, f"inotify_add_watch failed on {folder}")

    def wait(self, timeout: float) -> tuple[set[str], set[str], bool]:
        """Names closed/moved in, names only modified, and whether events overflowed."""
        ready, modified, overflow = set(), set(), False
        if not select.select([self.fd], [], [], max(timeout, 0.0))[0]:
            return ready, modified, overflow
        while True:
            try:
                buffer = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(buffer):
                _, mask, _, length = self._EVENT.unpack_from(buffer, offset)
                offset += self._EVENT.size
                name = buffer[offset:offset + length].rstrip(b"\0").decode(errors="surrogateescape")
                offset += length
                if mask & self.IN_Q_OVERFLOW:
                    overflow = True
                elif mask & (self.IN_CLOSE_WRITE | self.IN_MOVED_TO):
                    ready.add(name)
                elif name:
                    modified.add(name)
        return ready, modified - ready, overflow

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class _FileState:
    size: int
    changed: float
    first_seen: float
    consumed: int = 0
    attempts: int = 0
    done: bool = False
    last_error: str = ""


@dataclass
class _Partial:
    parts: dict[str, DicomSlices] = field(default_factory=dict)
    first_seen: float = 0.0


class FolderSource:
    """Volumes of one series as a scanner exports them into a folder (NIfTI or DICOM).

    Parameters
    ----------
    export_dir : path-like
        Folder the scanner writes to (created if absent).
    n_volumes : int
        Volumes in the run.
    tr : float
        Repetition time (s).
    series : str or int, optional
        Series to read: a DICOM ``SeriesNumber`` or ``SeriesInstanceUID``, a NIfTI series prefix or
        series number. ``None``: the first series read.
    start : int
        First acquisition number to yield (resume a run mid-way).
    missing_after_s : float, optional
        Grace (s) before a volume that did not arrive is declared missing; default ``2 * tr``.
    poll_s : float, optional
        Retry/poll interval (s); default ``max(tr / 10, 0.02)``.
    file_patterns : iterable of str
        Glob patterns of the files to read.
    corrupt_after_s : float, optional
        How long (s) an unreadable file must keep its size before it is an error; default
        ``max(2 * tr, 0.5)``.
    first_timeout_s : float
        How long (s) to wait for the first volume before declaring it missing.
    use_inotify : bool
        Watch with inotify where available (else poll).

    Attributes
    ----------
    series_ : str or int or None
        The series being read (a NIfTI prefix, or a DICOM series number / UID).
    ignored_series_ : set
        Other series seen in the folder.
    errors_ : list of str
        Files that could not be read and could not be tied to a volume.
    watching_ : {"inotify", "poll"} or None
        How the folder is watched (set when iteration starts).

    Examples
    --------
    >>> for volume in FolderSource("/export", n_volumes=120, tr=1.0, series=7):  # doctest: +SKIP
    ...     print(volume.number, volume.status)
    """

    def __init__(self, export_dir: str | os.PathLike, n_volumes: int, tr: float, *,
                 series: str | int | None = None, start: int = 1, missing_after_s: float | None = None,
                 poll_s: float | None = None, file_patterns: Iterable[str] = DEFAULT_PATTERNS,
                 corrupt_after_s: float | None = None, first_timeout_s: float = FIRST_TIMEOUT_S,
                 use_inotify: bool = True):
        _check_run(n_volumes, tr, start)
        self.export_dir = Path(export_dir)
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self.n_volumes, self.tr, self.start = int(n_volumes), float(tr), int(start)
        self.series = series
        self.missing_after_s = 2.0 * self.tr if missing_after_s is None else float(missing_after_s)
        self.poll_s = max(self.tr / 10.0, MIN_POLL_S) if poll_s is None else max(float(poll_s), 1e-3)
        self.corrupt_after_s = max(2.0 * self.tr, 0.5) if corrupt_after_s is None else float(corrupt_after_s)
        self.first_timeout_s = float(first_timeout_s)
        self.file_patterns = tuple(file_patterns)
        self.use_inotify = use_inotify and sys.platform.startswith("linux")
        self.series_: str | int | None = series
        self.ignored_series_: set = set()
        self.errors_: list[str] = []
        self.watching_: str | None = None
        self._watch: _Inotify | None = None
        self._files: dict[str, _FileState] = {}
        self._partials: dict[int, _Partial] = {}
        self._sequencer: _Sequencer | None = None

    # -- files -------------------------------------------------------------------------------
    def _wanted(self, name: str) -> bool:
        return not name.startswith(".") and any(fnmatch.fnmatchcase(name, p) for p in self.file_patterns)

    def _ignore(self, series, path: Path) -> None:
        if series not in self.ignored_series_:
            self.ignored_series_.add(series)
            logger.info("ignoring series %r (%s): reading series %r", series, path.name, self.series_)

    def _emit(self, volume: Volume) -> None:
        if volume.number >= self.start:  # volumes before a resume point are skipped silently
            self._sequencer.add(volume)

    def _error(self, number: int, path: Path, message: str) -> None:
        logger.error("volume %d (%s): %s", number, path.name, message)
        self._emit(Volume(number=number, status=ERROR, data=None, affine=None, t_ready=time.time(),
                          source=str(path), message=message))

    def _check(self, name: str, now: float, startup: bool = False) -> None:
        """Look at one file: read what is complete, or note that it is not yet.

        ``startup``: the file was there before the run began (its DICOM header is checked before its
        pixel data are read, to pass over the other series of a shared folder cheaply).
        """
        path = self.export_dir / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            self._files.pop(name, None)
            return
        state = self._files.get(name)
        if state is None:
            state = self._files[name] = _FileState(size=size, changed=now, first_seen=now)
        elif state.done:
            return
        elif size != state.size:
            state.size, state.changed = size, now
        try:
            if is_nifti(name):
                self._read_nifti(path, state)
            else:
                self._read_dicom(path, state, startup)
        except AwaitingVolumes:
            # a 4D run file waits for its next volume as long as the run lasts: lateness is the
            # sequencer's business, not a sign of a corrupt file
            return
        except (IncompleteFile, ValueError, OSError) as exc:
            state.attempts += 1
            incomplete = isinstance(exc, IncompleteFile)
            state.last_error = str(exc) if incomplete else f"{type(exc).__name__}: {exc}"
            if now - state.changed >= self.corrupt_after_s and state.attempts >= 2:
                self._give_up(path, state)

    def _nifti_name(self, path: Path) -> NiftiName:
        return parse_nifti_name(path.name)

    def _series_ok(self, key, matches) -> bool:
        """Whether a file of series ``key`` is read; chooses the series when none is set."""
        if self.series_ is None:
            self.series_ = key
            logger.info("reading series %r (the first seen in %s)", key, self.export_dir)
            return True
        return matches(self.series_)

    def _read_nifti(self, path: Path, state: _FileState) -> None:
        name = self._nifti_name(path)
        four_d = read_nifti_layout(path).n_volumes > 1  # the header says which series and numbers
        if four_d:
            stem = nifti_stem(path.name)
            last = parse_nifti_name(stem + ".nii")  # the stem's last integer is its series number
            name = NiftiName(prefix=stem, series_number=last.number if last.number is not None
                             else last.series_number, number=None)
        if not self._series_ok(name.prefix, name.matches):
            self._ignore(name.prefix, path)
            state.done = True
            return
        if not four_d:
            if name.number is None:
                state.done = True
                message = f"{path.name}: no acquisition number at the end of the file name"
                logger.error(message)
                self.errors_.append(message)
                return
            if not self.start <= name.number <= self.n_volumes:
                state.done = True
                return
        layout, volumes = read_nifti_volumes(path, first=state.consumed)
        now = time.time()
        if four_d:
            for offset, data in enumerate(volumes):
                self._emit(Volume(number=state.consumed + offset + 1, status=OK, data=data,
                                  affine=layout.affine, t_ready=now, source=str(path)))
            state.consumed += len(volumes)
            state.done = state.consumed >= layout.n_volumes
            return
        state.done = True
        self._emit(Volume(number=name.number, status=OK, data=volumes[0], affine=layout.affine,
                          t_ready=now, source=str(path)))

    @staticmethod
    def _dicom_matches(series_number: int | None, series_uid: str):
        """A test of whether a configured ``series`` names this DICOM series (number or UID)."""
        def matches(series) -> bool:
            if isinstance(series, str) and series == series_uid:
                return True
            try:
                return series_number is not None and int(series) == series_number
            except ValueError:
                return False
        return matches

    def _skip_dicom(self, path: Path) -> bool:
        """Whether the header alone shows the file is of another series or before ``start``.

        Saves reading the pixel data of the other series in a shared export folder.
        """
        if self.series_ is None and self.start == 1:
            return False
        try:
            # pixel data deferred (not read): their element present means the header before it is whole
            ds = pydicom.dcmread(path, defer_size=1024)
            if "PixelData" not in ds:
                return False
            number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
            uid = str(ds.get("SeriesInstanceUID", ""))
            acquisition = ds.get("AcquisitionNumber")
            multiframe = "PerFrameFunctionalGroupsSequence" in ds
        except Exception:  # noqa: BLE001 - incomplete or odd header: the full read decides
            return False
        if self.series_ is not None:
            if not self._dicom_matches(number, uid)(self.series_):
                self._ignore(number if number is not None else uid, path)
                return True
        return not multiframe and acquisition not in (None, "") and int(acquisition) < self.start

    def _read_dicom(self, path: Path, state: _FileState, startup: bool = False) -> None:
        if startup and self._skip_dicom(path):
            state.done = True
            return
        items = read_dicom(path)
        state.done = True
        if not items:
            return
        key = items[0].series_number if items[0].series_number is not None else items[0].series_uid
        if not self._series_ok(key, self._dicom_matches(items[0].series_number, items[0].series_uid)):
            self._ignore(key, path)
            return
        now = time.time()
        for parts in items:
            if not self.start <= parts.number <= self.n_volumes:
                continue
            partial = self._partials.setdefault(parts.number, _Partial(first_seen=now))
            partial.parts[path.name] = parts
            count = sum(len(p.positions) for p in partial.parts.values())
            if count < parts.n_slices:
                continue
            del self._partials[parts.number]
            try:
                data, affine = assemble_volume(list(partial.parts.values()))
            except ValueError as exc:
                self._error(parts.number, path, str(exc))
                continue
            self._emit(Volume(number=parts.number, status=OK, data=data, affine=affine, t_ready=now,
                              source=str(path)))

    def _give_up(self, path: Path, state: _FileState) -> None:
        state.done = True
        message = (f"{path.name} could not be read ({state.last_error}) and its size stayed "
                   f"{state.size} bytes for {self.corrupt_after_s:g} s")
        number = None
        if is_nifti(path.name):
            name = self._nifti_name(path)
            if state.consumed > 0:
                number = state.consumed + 1
            elif name.number is not None and self._series_ok(name.prefix, name.matches):
                number = name.number
        else:
            number = self._dicom_header_number(path)
        if number is not None and self.start <= number <= self.n_volumes:
            self._error(number, path, message)
        else:
            logger.error(message)
            self.errors_.append(message)

    def _dicom_header_number(self, path: Path) -> int | None:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            series = getattr(ds, "SeriesNumber", None)
            if self.series_ is not None and series is not None and str(series) != str(self.series_) \
                    and str(getattr(ds, "SeriesInstanceUID", "")) != str(self.series_):
                return None
            number = getattr(ds, "AcquisitionNumber", None) or getattr(ds, "InstanceNumber", None)
            return int(number) if number not in (None, "") else None
        except Exception:  # noqa: BLE001 - an unreadable header just means the number is unknown
            return None

    def _waiting(self) -> dict[int, float]:
        """Numbers whose file is being written, and until when to wait for it."""
        waiting: dict[int, float] = {}
        for name, state in self._files.items():
            if state.done:
                continue
            number = None
            if is_nifti(name):
                parsed = parse_nifti_name(name)
                if self.series_ is not None and not state.consumed and not parsed.matches(self.series_):
                    continue
                number = state.consumed + 1 if state.consumed else parsed.number
            if number is not None:
                limit = max(state.changed + self.corrupt_after_s, state.first_seen + self.missing_after_s)
                waiting[number] = max(waiting.get(number, -np.inf), limit + self.poll_s)
        for number, partial in self._partials.items():
            waiting[number] = max(waiting.get(number, -np.inf), partial.first_seen + self.missing_after_s)
        return waiting

    def _listing(self) -> list[str]:
        entries = []
        with os.scandir(self.export_dir) as it:
            for entry in it:
                if self._wanted(entry.name) and entry.is_file():
                    entries.append((entry.stat().st_mtime_ns, entry.name))
        return [name for _, name in sorted(entries)]

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Volume]:
        if self._sequencer is not None:
            raise RuntimeError("a FolderSource is read once; make a new one to read the folder again")
        t0 = time.time()
        self._sequencer = sequencer = _Sequencer(self.n_volumes, self.tr, self.start, self.missing_after_s,
                                                 self.first_timeout_s, t0)
        if self.use_inotify:
            try:
                self._watch = _Inotify(self.export_dir)
            except (OSError, AttributeError) as exc:
                logger.info("inotify unavailable (%s); polling %s every %g s", exc, self.export_dir,
                            self.poll_s)
        self.watching_ = "poll" if self._watch is None else "inotify"
        try:
            for name in self._listing():
                self._check(name, time.time(), startup=True)
            while True:
                waiting = self._waiting()
                yield from sequencer.pop(time.time(), waiting)
                if sequencer.done:
                    break
                pending = [n for n, s in self._files.items() if not s.done]
                wake = sequencer.next_event(waiting) - time.time()
                timeout = min(wake, self.poll_s) if (pending or self._watch is None) else wake
                timeout = float(np.clip(timeout, 0.0, 3600.0))
                if self._watch is None:
                    time.sleep(timeout)
                    names = self._listing()
                    now = time.time()
                    for name in names:
                        state = self._files.get(name)
                        if state is None or not state.done:
                            self._check(name, now)
                    continue
                ready, modified, overflow = self._watch.wait(timeout)
                now = time.time()
                if overflow:
                    ready |= set(self._listing())
                for name in sorted(ready, key=lambda n: (n not in self._files, n)):
                    if self._wanted(name):
                        self._check(name, now)
                for name in modified:
                    if self._wanted(name) and name not in self._files:
                        self._files[name] = _FileState(size=-1, changed=now, first_seen=now)
                for name in pending:
                    if name not in ready:
                        self._check(name, now)
        finally:
            self.close()

    def close(self) -> None:
        """Stop watching the folder."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None


# -- socket --------------------------------------------------------------------------------------
_LENGTH = struct.Struct(">I")
#: Largest JSON header accepted (bytes).
MAX_HEADER_BYTES = 1 << 20


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encode_message(number: int, data: np.ndarray, affine: np.ndarray) -> bytes:
    """One volume in the socket framing (see the module's *Socket protocol*)."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise BadInputError(f"a volume sent over the socket must be 3D, got shape {data.shape}")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise BadInputError(f"the affine must be 4x4, got shape {affine.shape}")
    header = json.dumps({"number": int(number), "shape": list(data.shape), "dtype": "<f4",
                         "affine": affine.tolist()}).encode()
    payload = np.ascontiguousarray(data, dtype="<f4").tobytes()
    return _LENGTH.pack(len(header)) + header + payload


def send_volume(host: str, port: int, number: int, data: np.ndarray, affine: np.ndarray, *,
                timeout_s: float = 10.0) -> None:
    """Send one volume to a :class:`SocketSource` (one connection per call).

    Parameters
    ----------
    host, port : str, int
        Where the source listens.
    number : int
        1-based acquisition number.
    data : ndarray, shape (x, y, z)
        The volume (sent as float32).
    affine : ndarray, shape (4, 4)
        Voxel to RAS mm.
    """
    message = encode_message(number, data, affine)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
        conn.sendall(message)


def send_end(host: str, port: int, *, timeout_s: float = 10.0) -> None:
    """Tell a :class:`SocketSource` that the run is over."""
    header = json.dumps({"end": True}).encode()
    with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
        conn.sendall(_LENGTH.pack(len(header)) + header)


class SocketSource:
    """Volumes received over a local TCP socket (see the module's *Socket protocol*).

    The socket is bound when the source is made (``port=0`` picks a free port: read ``port``), and a
    background thread receives volumes until the source is closed.

    Parameters
    ----------
    host : str
        Address to listen on (``"127.0.0.1"`` keeps it local).
    port : int
        TCP port (0: any free port).
    n_volumes, tr, start, missing_after_s, first_timeout_s
        As in :class:`FolderSource`.
    """

    def __init__(self, host: str, port: int, n_volumes: int, tr: float, *, start: int = 1,
                 missing_after_s: float | None = None, first_timeout_s: float = FIRST_TIMEOUT_S):
        _check_run(n_volumes, tr, start)
        self.n_volumes, self.tr, self.start = int(n_volumes), float(tr), int(start)
        self.missing_after_s = 2.0 * self.tr if missing_after_s is None else float(missing_after_s)
        self.first_timeout_s = float(first_timeout_s)
        self._server = socket.create_server((host, int(port)))
        self._server.settimeout(0.2)
        self.host, self.port = self._server.getsockname()[:2]
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="theramark-socket-source", daemon=True)
        self._thread.start()
        self._used = False

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            # one connection at a time: messages are queued in the order they were sent
            self._receive(conn)

    def _receive(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30.0)
            while not self._stop.is_set():
                try:
                    if not self._receive_one(conn):
                        return
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    logger.error("socket source: bad message (%s); closing the connection", exc)
                    return

    def _receive_one(self, conn: socket.socket) -> bool:
        prefix = _recv_exact(conn, _LENGTH.size)
        if prefix is None:
            return False
        (length,) = _LENGTH.unpack(prefix)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"header of {length} bytes")
        raw = _recv_exact(conn, length)
        if raw is None:
            raise ValueError("connection closed inside a header")
        header = json.loads(raw)
        if header.get("end"):
            self._queue.put("end")
            return True
        number, shape = int(header["number"]), tuple(int(n) for n in header["shape"])
        dtype = np.dtype(header.get("dtype", "<f4"))
        payload = _recv_exact(conn, int(np.prod(shape)) * dtype.itemsize)
        if payload is None:
            raise ValueError(f"connection closed inside volume {number}'s data")
        data = np.frombuffer(payload, dtype=dtype).reshape(shape).astype(np.float32)
        affine = np.asarray(header["affine"], dtype=float).reshape(4, 4)
        self._queue.put(Volume(number=number, status=OK, data=data, affine=affine, t_ready=time.time(),
                               source="socket"))
        return True

    def __iter__(self) -> Iterator[Volume]:
        if self._used:
            raise RuntimeError("a SocketSource is read once")
        self._used = True
        sequencer = _Sequencer(self.n_volumes, self.tr, self.start, self.missing_after_s,
                               self.first_timeout_s, time.time())
        try:
            while True:
                yield from sequencer.pop(time.time())
                if sequencer.done:
                    break
                timeout = float(np.clip(sequencer.next_event() - time.time(), 0.0, 3600.0))
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    continue
                if isinstance(item, str):
                    sequencer.ended = True
                else:
                    sequencer.add(item)
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._server.close()
