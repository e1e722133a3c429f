"""The per-volume neurofeedback engine: realign, ROI means, GLM, Kalman filter, feedback, log, publish.

For each volume from a source (:mod:`theramark.realtime.ingest`), in order:

1. realignment to the reference (the run's first volume, saved as ``LOG_DIR/reference.nii.gz``,
   or a given image), starting from the previous volume's parameters; framewise displacement;
2. the mean of every ROI in the realigned volume (trilinear interpolation at the ROI's reference
   voxels only: no whole-volume reslicing);
3. the cumulative GLM (task regressors, drift, constant, the six motion parameters) and the
   nuisance-regressed signals ``y_t - drift_t b_drift - motion_t b_motion`` (from the volume
   where the GLM has twice as many volumes as regressors; the raw signal before);
4. the Kalman filter's spike removal;
5. percent signal change, or connectivity, scaled and smoothed (:mod:`.feedback`);
6. the record is sent (display, UDP/TCP) — ``t_feedback`` — then appended to ``feedback.tsv``.

A missing or unreadable volume gets a row with its status and NaN values, and the run goes on.
An ROI outside the field of view, or whose grid cannot be matched, is reported in the message
column (and on the display) and its columns are NaN; the others go on.

Steps 3-5 depend only on the logged ROI means and motion parameters, so a restarted run
rebuilds its state from ``feedback.tsv`` (:meth:`RealtimeEngine.replay`) without images and
continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from theramark.config import defaults
from theramark.errors import BadInputError, one_line
from theramark.realtime.feedback import FeedbackComputer
from theramark.realtime.glm import IncrementalGLM, drift_regressors
from theramark.realtime.kalman import SpikeKalman
from theramark.realtime.log import FeedbackLog, read_log
from theramark.realtime.protocol import REGULATE, Protocol
from theramark.realtime.realign import MOTION_COLUMNS, Realigner, framewise_displacement_step

__all__ = ["REFERENCE_NAME", "RealtimeEngine", "Roi", "library_rois", "mask_rois", "read_affine",
           "run_realtime"]

REFERENCE_NAME = "reference.nii.gz"


@dataclass
class Roi:
    """A region whose mean is followed: a native-space mask, or an MNI sphere mapped to native space.

    Attributes
    ----------
    name : str
        Column suffix (``roi_<name>``): letters, digits and ``_``.
    path : str or None
        Mask NIfTI (non-zero voxels) in the run's world space.
    centre_mni : tuple of float or None
        Sphere centre (MNI mm).
    radius_mm : float
        Sphere radius (mm).
    """

    name: str
    path: str | None = None
    centre_mni: tuple[float, float, float] | None = None
    radius_mm: float = 6.0
    image: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        if self.path is not None:
            return {"name": self.name, "mask": self.path}
        return {"name": self.name, "centre_mni": list(self.centre_mni or ()), "radius_mm": self.radius_mm}


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_") or "roi"


def mask_rois(paths: Sequence[str | os.PathLike]) -> list[Roi]:
    """ROIs from mask files, checked now (before the run): each must exist and be a 3D NIfTI.

    Names are the file names without ``.nii[.gz]`` (made unique with a suffix).

    Raises
    ------
    BadInputError
        Listing every mask that is missing, unreadable or not 3D.
    """
    rois, problems, names = [], [], set()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            problems.append(f"{path}: ROI mask not found")
            continue
        try:
            image = nib.load(str(path))
            image = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine)
        except Exception as exc:  # nibabel raises several kinds on a damaged file
            problems.append(f"{path}: not a readable NIfTI mask ({one_line(exc)})")
            continue
        if len(image.shape) != 3 and not (len(image.shape) == 4 and image.shape[3] == 1):
            problems.append(f"{path}: expected a 3D mask, got shape {image.shape}")
            continue
        name = _slug(re.sub(r"\.nii(\.gz)?$", "", path.name))
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        rois.append(Roi(name=name, path=str(path), image=image))
    if problems:
        raise BadInputError(f"{len(problems)} problem(s) with the ROI masks", problems)
    return rois


def read_affine(path: str | os.PathLike) -> np.ndarray:
    """A 4 x 4 affine from a text file (4 rows of 4 numbers; FSL/ANTs-style whitespace text)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: affine file not found")
    try:
        matrix = np.loadtxt(path, dtype=float)
    except ValueError as exc:
        raise BadInputError(f"{path}: not a text matrix of numbers ({one_line(exc)})") from None
    if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0, 0, 0, 1]) or \
            abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
        raise BadInputError(f"{path}: expected an invertible 4 x 4 affine with last row 0 0 0 1, "
                            f"got shape {matrix.shape}")
    return matrix


def library_rois(roiset: str, regions: Sequence[str] = ()) -> list[Roi]:
    """Spheres of a library ROI set (:func:`theramark.imaging.rois.load_roiset`), by region name."""
    from theramark.imaging.rois import load_roiset

    table = load_roiset(roiset).table
    if regions:
        unknown = [r for r in regions if r not in set(table["name"])]
        if unknown:
            raise BadInputError(f"ROI set {roiset}: unknown region(s) {', '.join(unknown)}; regions: "
                                f"{', '.join(table['name'])}")
        table = table.set_index("name").loc[list(regions)].reset_index()
    return [Roi(name=_slug(str(r.name)), centre_mni=(float(r.x), float(r.y), float(r.z)),
                radius_mm=float(r.radius_mm)) for r in table.itertuples(index=False)]


def _roi_voxels(roi: Roi, shape: tuple[int, ...], affine: np.ndarray,
                mni_to_native: np.ndarray | None) -> tuple[np.ndarray | None, str]:
    """Voxel indices (n, 3) of an ROI in the run's grid, and a message ('' when all is well)."""
    if roi.centre_mni is not None:
        if mni_to_native is None:
            return None, f"ROI {roi.name}: an MNI sphere needs the MNI-to-native affine (mni_to_native)"
        centre = mni_to_native @ np.array([*roi.centre_mni, 1.0])
        index = np.indices(shape).reshape(3, -1).T
        world = index @ affine[:3, :3].T + affine[:3, 3]
        inside = np.linalg.norm(world - centre[:3], axis=1) <= roi.radius_mm
        voxels = index[inside]
        message = ""
    else:
        image = roi.image if roi.image is not None else nib.load(roi.path)
        mask = np.asanyarray(image.dataobj).reshape(image.shape[:3]) != 0
        message = ""
        if mask.shape == tuple(shape) and np.allclose(image.affine, affine, atol=1e-3):
            voxels = np.argwhere(mask)
        else:
            # another grid in the same world space: nearest-neighbour lookup of each run voxel
            index = np.indices(shape).reshape(3, -1).T
            world = index @ affine[:3, :3].T + affine[:3, 3]
            inverse = np.linalg.inv(image.affine)
            ijk = np.rint(world @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
            valid = np.all((ijk >= 0) & (ijk < np.array(mask.shape)), axis=1)
            member = np.zeros(len(index), dtype=bool)
            member[valid] = mask[tuple(ijk[valid].T)]
            voxels = index[member]
            message = (f"ROI {roi.name}: mask of shape {mask.shape} resampled (nearest neighbour) to the "
                       f"run's grid {tuple(shape)}")
    if len(voxels) == 0:
        return None, f"ROI {roi.name}: no voxel inside the run's field of view; its values are n/a"
    return voxels, message


class RealtimeEngine:
    """State of one neurofeedback run, updated one volume at a time.

    Parameters
    ----------
    rois : sequence of Roi
    protocol : Protocol
    tr : float
        Repetition time (s).
    n_volumes : int
    settings : mapping, optional
        ``[realtime]`` keys (:data:`theramark.config.SCHEMA`); missing keys take the defaults.
    mni_to_native : ndarray, shape (4, 4), optional
        Maps MNI mm to the run's native mm, for MNI-sphere ROIs.
    reference : (ndarray, ndarray), optional
        Reference volume and its affine (else the run's first good volume).

    Attributes
    ----------
    columns : list of str
        Columns of the per-volume record and of ``feedback.tsv``.
    design_ : DataFrame
        The fixed part of the GLM design (task regressors, drift, constant).
    """

    def __init__(self, rois: Sequence[Roi], protocol: Protocol, tr: float, n_volumes: int,
                 settings: Mapping[str, Any] | None = None, mni_to_native: np.ndarray | None = None,
                 reference: tuple[np.ndarray, np.ndarray] | None = None):
        s = {**defaults("realtime"), **dict(settings or {})}
        self.settings = s
        if not rois:
            raise BadInputError("no ROI given: give at least one mask (--roi) or a library ROI set")
        self.rois = list(rois)
        self.names = [r.name for r in self.rois]
        self.protocol, self.tr, self.n_volumes = protocol, float(tr), int(n_volumes)
        self.mni_to_native = mni_to_native
        wanted = list(s["feedback_rois"]) or self.names[: 1 if s["feedback"] == "roi" else 2]
        unknown = [w for w in wanted if w not in self.names]
        if unknown:
            raise BadInputError(f"[realtime] feedback_rois: unknown ROI(s) {', '.join(unknown)}; ROIs: "
                                f"{', '.join(self.names)}")
        self.feedback_rois = [self.names.index(w) for w in wanted]
        self.labels = protocol.labels(self.n_volumes, self.tr)
        blocks = protocol.block_index(self.n_volumes, self.tr)
        task = protocol.regressors(self.n_volumes, self.tr, s["hrf_model"])
        drift = drift_regressors(self.n_volumes, self.tr, s["drift_model"], s["high_pass"], s["drift_order"])
        self.design_ = pd.concat([task, drift], axis=1)
        n_motion = 6 if s["motion_regressors"] else 0
        self.glm = IncrementalGLM(self.design_.to_numpy(), n_online=n_motion, n_signals=len(self.rois))
        n_task = task.shape[1]
        drift_columns = [n_task + i for i, c in enumerate(drift.columns) if c != "constant"]
        self._nuisance = np.array(drift_columns + list(range(self.design_.shape[1],
                                                             self.design_.shape[1] + n_motion)), dtype=int)
        self._constant = n_task + list(drift.columns).index("constant")
        self._regulate = list(task.columns).index(REGULATE)
        self._regulate_peak = float(np.max(np.abs(task[REGULATE]))) or 1.0
        self.kalman = SpikeKalman(len(self.rois), threshold=s["kalman_threshold"]) if s["kalman"] else None
        self.feedback = FeedbackComputer(
            self.labels, blocks, kind=s["feedback"], rois=self.feedback_rois, baseline=s["baseline"],
            skip=int(np.ceil(s["baseline_skip_s"] / self.tr - 1e-9)),
            low=s["feedback_min"], high=s["feedback_max"], smoothing=s["smoothing"],
            connectivity=s["connectivity"], window=max(3, int(round(s["window_s"] / self.tr))),
            protocol=s["protocol"])
        self.columns = (["volume", "status", "t_ready", "t_feedback", "latency_ms", "block", "roi"]
                        + [f"roi_{n}" for n in self.names]
                        + ["psc", "signal", "feedback", "glm_psc", "fd", *MOTION_COLUMNS, "message"])
        self.realigner: Realigner | None = None
        self.reference_affine: np.ndarray | None = None
        self.voxels: list[np.ndarray | None] = []
        self.messages: list[str] = []
        self._last_params: np.ndarray | None = None
        self.n_done = 0
        if reference is not None:
            self.set_reference(*reference)

    # ------------------------------------------------------------------ set-up
    def describe(self) -> dict[str, Any]:
        """Settings that determine the values (the log's sidecar)."""
        affine = None if self.mni_to_native is None else np.asarray(self.mni_to_native).tolist()
        return {**self.settings, "rois": [r.describe() for r in self.rois], "tr": self.tr,
                "n_volumes": self.n_volumes, "protocol": self.protocol.blocks(), "mni_to_native": affine}

    def set_reference(self, data: np.ndarray, affine: np.ndarray) -> None:
        """Take the reference volume: prepare the realignment and the ROIs' voxels in its grid."""
        data = np.asarray(data, dtype=np.float32)
        self.reference_affine = np.asarray(affine, dtype=np.float64)
        s = self.settings
        self.realigner = Realigner(data, self.reference_affine, downsample=s["downsample"],
                                   max_iterations=s["max_iterations"])
        self.voxels = []
        for roi in self.rois:
            voxels, message = _roi_voxels(roi, data.shape, self.reference_affine, self.mni_to_native)
            self.voxels.append(voxels)
            if message:
                self.messages.append(message)

    # ------------------------------------------------------------------ per volume
    def roi_means(self, data: np.ndarray, params: np.ndarray | None) -> np.ndarray:
        """Mean of each ROI in ``data`` realigned by ``params`` (``None``: as it is)."""
        values = np.full(len(self.rois), np.nan)
        for i, voxels in enumerate(self.voxels):
            if voxels is None:
                continue
            if params is None:
                values[i] = float(data[tuple(voxels.T)].mean(dtype=np.float64))
            else:
                values[i] = float(self.realigner.sample(data, params, voxels).mean(dtype=np.float64))
        return values

    def process(self, volume: Any) -> dict[str, Any]:
        """Everything for one :class:`~theramark.realtime.volumes.Volume`; returns its record."""
        status, message = volume.status, volume.message
        roi_values = np.full(len(self.rois), np.nan)
        params = np.full(6, np.nan)
        if status == "ok":
            data = np.asarray(volume.data, dtype=np.float32)
            if self.realigner is None:
                self.set_reference(data, volume.affine)
            if data.shape != self.realigner.shape:
                status = "error"
                message = (f"volume {volume.number}: shape {data.shape} differs from the reference's "
                           f"{self.realigner.shape}")
            elif volume.affine is not None and not np.allclose(volume.affine, self.reference_affine,
                                                               atol=1e-2):
                status = "error"
                message = f"volume {volume.number}: its affine differs from the reference's (another series?)"
            else:
                try:
                    if self.settings["realign"]:
                        params = self.realigner.estimate(data, self._last_params)
                        roi_values = self.roi_means(data, params)
                    else:
                        params = np.zeros(6)
                        roi_values = self.roi_means(data, None)
                except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
                    status, message = "error", f"volume {volume.number}: {one_line(exc)}"
        return self.step(volume.number, status, roi_values, params, t_ready=volume.t_ready, message=message)

    def step(self, number: int, status: str, roi_values: np.ndarray, params: np.ndarray, *,
             t_ready: float = float("nan"), message: str = "") -> dict[str, Any]:
        """GLM, Kalman filter and feedback of volume ``number`` from its ROI means and motion.

        Deterministic in its inputs (the logged values): :meth:`replay` relies on it.
        """
        t = int(number) - 1
        if not 0 <= t < self.n_volumes:
            raise BadInputError(f"volume {number} is outside the run's 1..{self.n_volumes}")
        roi_values = np.asarray(roi_values, dtype=np.float64)
        params = np.asarray(params, dtype=np.float64)
        fd = float("nan")
        cleaned = np.full(len(self.rois), np.nan)
        level = cleaned
        glm_psc = float("nan")
        valid = status == "ok" and np.all(np.isfinite(params))
        if valid:
            fd = framewise_displacement_step(self._last_params, params, self.settings["fd_radius_mm"])
            self._last_params = params
            y = np.where(np.isfinite(roi_values), roi_values, 0.0)
            online = params if self.glm.n_online else None
            coef = self.glm.update(t, y, online)
            cleaned = y.copy()
            if self.glm.n_obs_ >= 2 * self.glm.xtx_.shape[0]:
                # before then the nuisance betas rest on too few volumes and add more noise than
                # they remove (OpenNFT likewise waits before adding regressors)
                cleaned -= self.glm.nuisance(t, online, self._nuisance)
            cleaned[~np.isfinite(roi_values)] = np.nan
            level = self.kalman.update(cleaned) if self.kalman is not None else cleaned
            k = self.feedback_rois[0]
            if coef[self._constant, k] != 0:
                glm_psc = float(100.0 * coef[self._regulate, k] * self._regulate_peak
                                / coef[self._constant, k])
        values = self.feedback.update(t, level, cleaned)
        messages = [m for m in [message, *self.messages] if m]
        self.messages = []
        record: dict[str, Any] = {
            "volume": int(number), "status": status, "t_ready": float(t_ready), "t_feedback": float("nan"),
            "latency_ms": float("nan"), "block": str(self.labels[t]),
            "roi": float(roi_values[self.feedback_rois[0]]),
            **{f"roi_{n}": float(v) for n, v in zip(self.names, roi_values, strict=True)},
            **values, "glm_psc": glm_psc, "fd": fd,
            **{c: float(v) for c, v in zip(MOTION_COLUMNS, params, strict=True)},
            "message": "; ".join(messages),
        }
        self.n_done = int(number)
        return record

    def replay(self, rows: pd.DataFrame) -> int:
        """Rebuild the state from logged rows (``feedback.tsv``); returns the last volume number."""
        for expected, row in enumerate(rows.to_dict("records"), start=self.n_done + 1):
            if int(row["volume"]) != expected:
                raise BadInputError(f"feedback log: row of volume {row['volume']} where volume {expected} "
                                    "was expected; the log is not in order, cannot resume")
            values = np.array([row.get(f"roi_{n}", np.nan) for n in self.names], dtype=float)
            params = np.array([row.get(c, np.nan) for c in MOTION_COLUMNS], dtype=float)
            self.step(expected, str(row["status"]), values, params)
        self.messages = []
        return self.n_done


def _address(text: str, what: str) -> tuple[str, int] | None:
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(f"[realtime] {what} = {text!r}: expected HOST:PORT")
    return host, int(port)


def run_realtime(source: Iterable[Any], rois: Sequence[Roi], protocol: Protocol, tr: float, n_volumes: int,
                 out_dir: str | os.PathLike, settings: Mapping[str, Any] | None = None, *,
                 display: Any = None, sender: Any = None, mni_to_native: np.ndarray | None = None,
                 reference: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """Run neurofeedback on the volumes of ``source`` until volume ``n_volumes``; resume a logged run.

    Parameters
    ----------
    source : iterable of Volume
        Volumes in acquisition order, each once (:class:`~theramark.realtime.ingest.FolderSource`,
        :class:`~theramark.realtime.ingest.SocketSource`); volumes already in the log are skipped.
    rois : sequence of Roi
        :func:`mask_rois` and/or :func:`library_rois`.
    protocol : Protocol
    tr : float
        Repetition time (s).
    n_volumes : int
    out_dir : path
        ``LOG_DIR``: ``feedback.tsv``, ``feedback.json`` and ``reference.nii.gz``. If it holds a
        log of the same settings, the run resumes after its last row.
    settings : mapping, optional
        ``[realtime]`` keys.
    display : DisplayServer, optional
        Receives the run information, every record (``publish``) and every message.
    sender : FeedbackSender, optional
        Sends every record over UDP/TCP.
    mni_to_native : ndarray, optional
        For MNI-sphere ROIs.
    reference : (ndarray, ndarray), optional
        Reference volume and affine (default: the run's first good volume).

    Returns
    -------
    DataFrame
        The whole log (``feedback.tsv``), one row per volume.
    """
    out_dir = Path(out_dir)
    engine = RealtimeEngine(rois, protocol, tr, n_volumes, settings, mni_to_native=mni_to_native,
                            reference=reference)
    log = FeedbackLog(out_dir, engine.columns, engine.describe())
    existing = log.open()
    reference_path = out_dir / REFERENCE_NAME
    try:
        if len(existing):
            if reference is None and (existing["status"] == "ok").any():
                if not reference_path.is_file():
                    raise BadInputError(f"{out_dir}: cannot resume: {REFERENCE_NAME} is missing")
                image = nib.load(str(reference_path))
                engine.set_reference(np.asarray(image.dataobj, dtype=np.float32), image.affine)
            engine.replay(existing)
        if display is not None:
            display.set_run_info({"n_volumes": int(n_volumes), "tr": float(tr), "blocks": protocol.blocks(),
                                  "rois": engine.names, "feedback": engine.settings["feedback"],
                                  "protocol": engine.settings["protocol"]})
            if len(existing):
                display.message(f"resumed after volume {engine.n_done}", "info")
        for volume in source:
            if volume.number <= engine.n_done:
                continue
            had_reference = engine.realigner is not None
            record = engine.process(volume)
            new_reference = not had_reference and engine.realigner is not None and reference is None
            record["t_feedback"] = time.time()
            record["latency_ms"] = 1000.0 * (record["t_feedback"] - record["t_ready"])
            if sender is not None:
                sender.send(record)
            if display is not None:
                display.publish(record)
            if display is not None and record["message"]:
                display.message(f"volume {record['volume']}: {record['message']}",
                                "error" if record["status"] == "error" else "warning")
            if new_reference:  # after the feedback: saving is not on the first volume's latency path
                image = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32), volume.affine)
                nib.save(image, str(reference_path))
            log.append(record)
            if volume.number >= n_volumes:
                break
    finally:
        log.close()
    return read_log(out_dir)
