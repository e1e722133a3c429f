"""Participant level: every functional run of a study, processed independently and in parallel.

One job per run (:func:`process_run`): read the preprocessed BOLD inside its brain mask once
(float32, streamed), build the nuisance design, measure QC, average the voxels of every ROI with
one sparse matrix product, then

- rest runs: clean the ROI signals (nuisance regression, censoring, filtering, z-scoring: the
  order of nilearn's masker-with-confounds, so the numbers equal nilearn's), static FC (Pearson
  and partial correlation, Fisher z) and dynamic FC (sliding windows, variability);
- task runs (an ``events.tsv`` and contrasts for the task): first-level GLM on the ROI means
  (effect, percent signal change, z) and, optionally, voxel maps of each contrast.

Outputs are BIDS derivatives with BEP017 connectivity names and a JSON sidecar per file
(``theramark._io.provenance``: versions, parameters, ``ParameterHash``, input hashes); their
names carry every entity that tells a run apart (:attr:`theramark.study.layout.Run.prefix`). A
run whose QC sidecar carries the same parameter hash and whose listed outputs all exist is reused,
so an interrupted study resumes where it stopped: it keeps the status of the attempt that made its
outputs (``ok`` or ``excluded``), with ``reused`` set in the runs table. A run with bad input
fails alone: its message (one line, naming the file) goes into ``OUT/participant_runs.tsv`` and
into the report, and the outputs of its previous attempt are moved to ``OUT/.stale/`` so that the
group level never reads them; outputs that a new attempt (``ok`` or ``excluded``) no longer
writes are removed.

Jobs run in joblib processes (one run per worker at a time) or, with ``scheduler="tcp://..."``,
on a Dask distributed cluster, where a worker's cores are shared among the runs it holds at once
(BLAS gets ``cores // nthreads`` threads in each).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from theramark import __version__
from theramark._io import (
    atomic_path,
    file_hash,
    parameter_hash,
    provenance,
    read_tsv,
    write_json,
    write_nifti,
    write_tsv,
)
from theramark._progress import progress
from theramark.config import section
from theramark.errors import BadInputError, one_line
from theramark.registry import relmat_suffix
from theramark.study.entities import RUN_ENTITIES, SPACE_ENTITIES, build_name, parse_entities
from theramark.study.layout import Run, discover_runs

RUNS_TABLE = "participant_runs.tsv"
#: Where the outputs of a run's previous attempt go when the run fails (``OUT/.stale/sub-*/...``).
STALE_DIR = ".stale"
#: The runs table's key: one row per run.
RUN_KEY = ["participant_id", "session", "task", "entities", "run"]
_RUN_COLUMNS = [*RUN_KEY, "status", "reused", "message", "bold"]


def settings_from_config(config: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The participant-level settings: each table of study.toml resolved over its schema defaults.

    Parameters
    ----------
    config : mapping or None
        As :func:`theramark.config.load_config` returns it (or a dict of tables).

    Returns
    -------
    dict
        ``denoise, qc, rois, connectivity, glm, participant`` (see :data:`theramark.config.SCHEMA`)
        and ``base_dir`` (``{"path": folder of the config file, or the working directory}``).

    Raises
    ------
    BadInputError
        If one of these tables has an unknown key or a bad value.
    """
    settings = {name: section(config, name)
                for name in ("denoise", "qc", "rois", "connectivity", "glm", "participant")}
    base = (config or {}).get("_path", {}).get("path")
    settings["base_dir"] = {"path": str(Path(base).parent) if base else str(Path.cwd())}
    return settings


def _denoise_options(options: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("motion", "wm_csf", "global_signal", "compcor", "n_compcor", "scrub", "fd_threshold",
            "std_dvars_threshold")
    return {k: options[k] for k in keys if options.get(k) is not None}


def _is_task_run(run: Run, settings: Mapping[str, Any]) -> bool:
    if run.task in settings["participant"]["rest_tasks"] or run.events is None:
        return False
    wanted = settings["glm"]["tasks"]
    return not wanted or run.task in wanted


def run_parameters(run: Run, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that determines a run's outputs (hashed for resume)."""
    from theramark.imaging.glm import task_contrasts

    task = _is_task_run(run, settings)
    params: dict[str, Any] = {
        "theramark": __version__,
        "kind": "task" if task else "rest",
        "denoise": settings["denoise"] if not task else None,
        "qc": settings["qc"],
        "rois": settings["rois"],
        "connectivity": settings["connectivity"] if not task else None,
    }
    if task:
        params["glm"] = {**settings["glm"],
                         "contrasts": task_contrasts(settings["glm"]["contrasts"], run.task)}
    params["inputs"] = {
        name: _stat_signature(path) for name, path in _inputs(run).items()
    }
    spec = roi_spec(settings["rois"])
    if isinstance(spec, dict):  # an atlas or ROI table edited in place must trigger a rerun
        base = Path(settings["base_dir"]["path"])
        params["inputs"]["rois"] = [_stat_signature(base / str(spec[key]))
                                    for key in ("image", "labels", "table") if key in spec]
    return params


def _inputs(run: Run) -> dict[str, Path]:
    files = {"bold": run.bold, "mask": run.mask, "confounds": run.confounds, "events": run.events}
    return {k: Path(v) for k, v in files.items() if v is not None}


def _stat_signature(path: Path) -> list:
    """Size and modification time: enough to notice a changed input without reading it."""
    try:
        stat = Path(path).stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), stat.st_size, int(stat.st_mtime)]


def roi_spec(rois: Mapping[str, Any]) -> str | dict[str, str]:
    """What a resolved ``[rois]`` table asks for: the atlas keys that are set, else the ROI set name."""
    atlas = {key: value for key, value in (rois["atlas"] or {}).items() if value}
    return atlas or rois["roiset"]


def roiset_from_settings(rois: Mapping[str, Any], base_dir: str | os.PathLike):
    """The ROI set of a resolved ``[rois]`` table (an atlas, when given, takes precedence).

    ``base_dir`` is the folder relative atlas paths are read from (the config file's folder).
    """
    from theramark.imaging.rois import load_roiset

    return load_roiset(roi_spec(rois), radius_mm=rois["radius_mm"],
                       base_dir=str(base_dir))


def _roiset(settings: Mapping[str, Any]):
    return roiset_from_settings(settings["rois"], settings["base_dir"]["path"])


def _entities_row(run: Run) -> dict[str, Any]:
    return {"participant_id": run.participant_id, "session": run.session, "task": run.task,
            "entities": run.extra_entities, "run": run.run, "bold": str(run.bold)}


class _Writer:
    """Writes one run's outputs with sidecars and remembers their names."""

    def __init__(self, run: Run, out_dir: Path, params: dict[str, Any],
                 sources: dict[str, dict[str, str]]):
        self.folder = run.output_dir(out_dir)
        self.prefix = run.prefix
        self.params = params
        self.sources = sources
        self.written: list[str] = []

    def _sidecar(self, path: Path, extra: Mapping[str, Any] | None) -> None:
        record = provenance(self.params, hash_inputs=False)
        record["Sources"] = self.sources
        record.update(extra or {})
        write_json(path.with_name(path.name.split(".")[0] + ".json"), record)

    def path(self, name: str) -> Path:
        return self.folder / f"{self.prefix}_{name}"

    def tsv(self, name: str, table: pd.DataFrame, extra: Mapping[str, Any] | None = None) -> Path:
        path = self.path(name)
        write_tsv(path, table)
        self._sidecar(path, extra)
        self.written.append(path.name)
        return path

    def npy(self, name: str, array: np.ndarray, extra: Mapping[str, Any] | None = None) -> Path:
        path = self.path(name)
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, array)
        self._sidecar(path, extra)
        self.written.append(path.name)
        return path

    def nifti(self, name: str, img, extra: Mapping[str, Any] | None = None) -> Path:
        path = write_nifti(self.path(name), img)
        self._sidecar(path, extra)
        self.written.append(path.name)
        return path


def _qc_path(run: Run, out_dir: Path) -> Path:
    return run.output_dir(out_dir) / f"{run.prefix}_desc-qc_metrics.tsv"


def _completed_record(run: Run, out_dir: Path, params_hash: str) -> dict[str, Any] | None:
    """The QC sidecar of an earlier attempt with the same parameter hash whose outputs all exist."""
    sidecar = _qc_path(run, Path(out_dir)).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("ParameterHash") != params_hash:
        return None
    folder = sidecar.parent
    if not all((folder / name).is_file() for name in record.get("Outputs", [])):
        return None
    return record


def is_complete(run: Run, out_dir: str | os.PathLike, params_hash: str) -> bool:
    """True when the run's outputs exist with the same parameter hash (resume)."""
    return _completed_record(run, Path(out_dir), params_hash) is not None


_IDENTITY = frozenset((*RUN_ENTITIES, *SPACE_ENTITIES))


def own_outputs(run: Run, out_dir: str | os.PathLike) -> list[Path]:
    """Every file in the run's output folder that belongs to this run (outputs and sidecars).

    A file belongs to the run when its name is the run's prefix followed by entities that do not
    name another run: ``sub-01_task-rest_seg-x_timeseries.tsv`` belongs to ``sub-01_task-rest``,
    ``sub-01_task-rest_acq-b_seg-x_timeseries.tsv`` and ``sub-01_task-rest_run-1_...`` do not.
    """
    folder = run.output_dir(out_dir)
    if not folder.is_dir():
        return []
    start = run.prefix + "_"
    return [path for path in sorted(folder.iterdir())
            if path.name.startswith(start) and path.is_file()
            and not _IDENTITY & set(parse_entities(path.name[len(start):]))]


def _set_aside(run: Run, out_dir: Path) -> str:
    """Move the outputs of the run's previous attempt to ``OUT/.stale/``; a note for the message."""
    own = own_outputs(run, out_dir)
    if not own:
        return ""
    folder = run.output_dir(out_dir)
    target = out_dir / STALE_DIR / folder.relative_to(out_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in own:
            os.replace(path, target / path.name)
    except OSError as exc:
        left = [p.name for p in own if p.exists()]
        return (f"; {len(left)} output(s) of its previous attempt could not be moved aside "
                f"({one_line(str(exc))}): delete {run.prefix}_* in {folder}")
    return f"; the {len(own)} output file(s) of its previous attempt were moved to {target}"


def _hash_inputs(run: Run) -> dict[str, dict[str, str]]:
    return {name: {"path": str(path), "hash": file_hash(path)} for name, path in _inputs(run).items()}


def process_run(run: Run, out_dir: str | os.PathLike, settings: Mapping[str, Any],
                resume: bool = True) -> dict[str, Any]:
    """Process one run and write its derivatives.

    Parameters
    ----------
    run : Run
        From :func:`theramark.study.discover_runs`.
    out_dir : path
        Derivatives root.
    settings : dict
        :func:`settings_from_config`.
    resume : bool
        Skip the run when its outputs exist with the same parameter hash.

    Returns
    -------
    dict
        The run's row of the runs table: entities, ``status`` (``ok``, ``excluded`` by a QC
        rule, or ``failed``), ``reused`` (True when the outputs of an earlier attempt with the
        same parameters and inputs were kept: the status is that attempt's), ``message`` (one
        line), plus ``seconds``. A failed run's previous outputs are moved to ``OUT/.stale/``
        (the message says where).
    """
    started = time.perf_counter()
    row = _entities_row(run)
    out_dir = Path(out_dir)
    try:
        params = run_parameters(run, settings)
        params_hash = parameter_hash(params)
        record = _completed_record(run, out_dir, params_hash) if resume else None
        if record is not None:
            return {**row, "status": str(record.get("Status", "ok")), "reused": True,
                    "message": one_line(record.get("Message", "ok")),
                    "seconds": time.perf_counter() - started}
        # input hashes for the sidecars are computed in a thread while the run is processed
        # (hashlib releases the GIL)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            hashes = pool.submit(_hash_inputs, run)
            status, message, finish = _process(run, out_dir, settings, params)
            finish(hashes.result())
        return {**row, "status": status, "reused": False, "message": one_line(message),
                "seconds": time.perf_counter() - started}
    except BadInputError as exc:
        message = one_line(exc)
    except Exception as exc:  # a bug or an unexpected input: the other runs must go on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = (f"{run.bold}: {type(exc).__name__}: {exc} "
                   f"(at {Path(where.filename).name}:{where.lineno})")
    message = one_line(message) + _set_aside(run, out_dir)
    return {**row, "status": "failed", "reused": False, "message": message,
            "seconds": time.perf_counter() - started}


def _process(run: Run, out_dir: Path, settings: Mapping[str, Any], params: dict[str, Any]):
    """Compute everything; return status, message and a function that writes the outputs."""
    from theramark.imaging import _image, rois
    from theramark.imaging.denoise import nuisance_design
    from theramark.imaging.qc import run_qc

    if run.mask is None:
        raise BadInputError(f"{run.bold}: no brain mask (desc-brain_mask) beside the BOLD")
    if run.confounds is None:
        raise BadInputError(f"{run.bold}: no confounds table (desc-confounds_timeseries.tsv)")
    t_r = run.t_r
    if t_r is None or not np.isfinite(t_r) or t_r <= 0:
        raise BadInputError(
            f"{run.raw_bold or run.bold}: no valid RepetitionTime in the JSON sidecars "
            f"(got {t_r!r}); expected the repetition time in seconds"
        )
    data, _bold, mask_img = _image.load_masked_bold(run.bold, run.mask)
    n_volumes = data.shape[0]
    task = params["kind"] == "task"
    denoise = settings["denoise"]
    glm_settings = settings["glm"]
    if task:
        nuisance_opts = {k: glm_settings[k] for k in ("motion", "wm_csf", "scrub")
                         if glm_settings.get(k) is not None}
        strategy = glm_settings["strategy"]
    else:
        nuisance_opts = _denoise_options(denoise)
        strategy = denoise["strategy"]
    if isinstance(strategy, list):
        strategy = tuple(strategy)
    design, sample_mask = nuisance_design(run.confounds, strategy, n_volumes=n_volumes,
                                          **nuisance_opts)
    qc = run_qc(run.confounds, data, sample_mask, settings["qc"], t_r=t_r)
    kept = np.arange(n_volumes) if sample_mask is None else np.asarray(sample_mask)
    outputs: list[tuple[str, str, Any, dict[str, Any]]] = []
    roi_info: dict[str, Any] = {}
    if qc["excluded"]:
        status, message = "excluded", f"excluded by QC: {qc['exclusion_reason']}"
    else:
        roiset = _roiset(settings)
        matrix = rois.roi_matrix(roiset, mask_img, on_empty=settings["rois"]["on_empty"],
                                 mask_name=str(run.mask))
        raw_signals = rois.extract(data, matrix)
        seg = f"seg-{roiset.name}"
        roi_info = {"RoiSet": roiset.describe(), "Rois": matrix.names,
                    "DroppedRois": matrix.dropped,
                    "RoiCoverage": matrix.coverage.set_index("roi")["coverage"].round(4).to_dict()}
        status = "ok"
        if task:
            message = _task_outputs(run, data, mask_img, raw_signals, matrix.names, design,
                                    sample_mask, t_r, glm_settings, seg, outputs)
        else:
            message = _rest_outputs(raw_signals, matrix.names, design, sample_mask, kept, t_r,
                                    denoise, settings["connectivity"], seg, roi_info, outputs)
    del data

    def finish(sources: dict[str, dict[str, str]]) -> None:
        writer = _Writer(run, out_dir, params, sources)
        for kind, name, value, extra in outputs:
            getattr(writer, kind)(name, value, {**extra, **roi_info})
        qc_table = pd.DataFrame([{k: qc[k] for k in qc}])
        qc_extra = {"Outputs": list(writer.written), "Status": status, "Message": message,
                    "SampleMask": kept.tolist(), "RepetitionTime": t_r,
                    "NuisanceRegressors": list(design.columns), **roi_info}
        # the QC sidecar is written last: its presence marks the run as complete (resume)
        writer.tsv("desc-qc_metrics.tsv", qc_table, qc_extra)
        # outputs of an earlier attempt (other parameters, or interrupted) that this one did not
        # write must not linger for the group level
        current = set(writer.written) | {n.split(".")[0] + ".json" for n in writer.written}
        for path in own_outputs(run, out_dir):
            if path.name not in current:
                path.unlink(missing_ok=True)

    return status, message, finish


def _rest_outputs(raw_signals, names, design, sample_mask, kept, t_r, denoise, connectivity,
                  seg, roi_info, outputs) -> str:
    from theramark.imaging.denoise import clean
    from theramark.imaging.measures import MeasureOutput, RestSignals
    from theramark.registry import measure, resolve

    cleaned = clean(raw_signals, confounds=design, sample_mask=sample_mask, t_r=t_r,
                    detrend=denoise["detrend"], standardize=denoise["standardize"],
                    high_pass=denoise["high_pass"], low_pass=denoise["low_pass"])
    notes = []
    outputs.append(("tsv", f"{seg}_timeseries.tsv", pd.DataFrame(cleaned, columns=names),
                    {"Description": "denoised, standardized ROI mean time series (kept volumes)",
                     "RepetitionTime": t_r, "SampleMask": kept.tolist()}))
    signals = RestSignals(cleaned, kept, raw_signals.shape[0], t_r, connectivity)
    for name in connectivity["measures"]:
        result: MeasureOutput = resolve(measure(name).compute)(signals)
        if result.note:
            notes.append(result.note)
        if result.matrix is not None:
            sidecar = {**result.sidecar, "NodeFiles": names} if name == "pearsoncorrelation" \
                else result.sidecar
            outputs.append(("tsv", f"{seg}_{relmat_suffix(name)}",
                            pd.DataFrame(result.matrix, columns=names), sidecar))
        for suffix, array, extra in result.arrays:
            outputs.append(("npy", f"{seg}_{suffix}", array, extra))
    return "ok" if not notes else "ok; " + "; ".join(notes)


def _task_outputs(run, data, mask_img, raw_signals, names, nuisance, sample_mask, t_r,
                  glm_settings, seg, outputs) -> str:
    from theramark.imaging import _image, glm

    expressions = glm.task_contrasts(glm_settings["contrasts"], run.task)
    if not expressions:
        return (f"no contrasts for task '{run.task}' (add them under [glm] contrasts); "
                "no activation computed")
    n_volumes = data.shape[0]
    events = glm.read_events(run.events, n_volumes, t_r)
    slice_ref, slice_source = glm.slice_time_reference(run.metadata, t_r)
    design = glm.design_matrix(events, n_volumes, t_r, slice_ref, nuisance,
                               hrf_model=glm_settings["hrf_model"],
                               drift_model=glm_settings["drift_model"],
                               high_pass=glm_settings["high_pass"])
    vectors = glm.contrast_vectors(expressions, design.columns, source=str(run.events))
    kept = slice(None) if sample_mask is None else np.asarray(sample_mask)
    design_kept = design.iloc[kept]
    stats = glm.roi_statistics(raw_signals[kept], names, design_kept, vectors,
                               noise_model=glm_settings["noise_model"])
    extra = {"SliceTimeRef": slice_ref, "SliceTimeRefSource": slice_source,
             "Contrasts": dict(zip(vectors, expressions, strict=True)),
             "DesignColumns": list(design.columns), "HrfModel": glm_settings["hrf_model"]}
    outputs.append(("tsv", f"{seg}_desc-glm_roistats.tsv",
                    stats[["roi", "contrast", "effect", "psc", "z", "variance", "dof"]], extra))
    if glm_settings["maps"]:
        fitted = glm.fit_contrasts(data[kept], design_kept, vectors,
                                   noise_model=glm_settings["maps_noise_model"])
        for (name, values), expression in zip(fitted.items(), expressions, strict=True):
            label = glm.contrast_label(expression)
            for stat in ("effect", "z"):
                outputs.append(("nifti", f"desc-{label}_stat-{stat}_statmap.nii.gz",
                                _image.unmask(values[stat].astype(np.float32), mask_img),
                                {**extra, "Contrast": name, "Statistic": stat,
                                 "NoiseModel": glm_settings["maps_noise_model"]}))
    return "ok"


def _combine_task_runs(results: pd.DataFrame, runs: list[Run], out_dir: Path) -> None:
    """Fixed effects over the runs of one participant × session × task (written without run-).

    Runs that differ only by ``run-`` are combined; other entities (``acq-``...) stay in the name.
    A combination of fewer than two ``ok`` runs is removed: it would describe an earlier attempt.
    """
    from theramark.imaging.glm import combine_runs

    ok = set(results.loc[results["status"] == "ok", "bold"].astype(str))
    prefixes = {(run.output_dir(out_dir), run.prefix) for run in runs}
    groups: dict[tuple[Path, str], list[Run]] = {}
    for run in runs:
        if run.run is not None:
            base = build_name({k: v for k, v in run.entities.items() if k != "run"}, "", "")
            groups.setdefault((run.output_dir(out_dir), base.rstrip("_")), []).append(run)
    for (folder, base), group in groups.items():
        if (folder, base) in prefixes:
            continue  # a run without run- has this name: its own outputs, no combination
        by_seg: dict[str, list[Path]] = {}
        for run in group:
            if str(run.bold) not in ok:
                continue
            for path in sorted(folder.glob(f"{run.prefix}_seg-*_desc-glm_roistats.tsv")):
                seg = path.name[len(run.prefix) + 1:].split("_desc-")[0]
                by_seg.setdefault(seg, []).append(path)
        written = set()
        for seg, paths in by_seg.items():
            if len(paths) < 2:
                continue
            target = folder / f"{base}_{seg}_desc-glm_roistats.tsv"
            write_tsv(target, combine_runs([read_tsv(p) for p in paths]))
            record = provenance({"combination": "precision-weighted fixed effects over runs",
                                 "runs": [p.name for p in paths]},
                                inputs={p.name: p for p in paths})
            write_json(target.with_suffix(".json"), record)
            written.add(target.name)
        for old in folder.glob(f"{base}_seg-*_desc-glm_roistats.tsv"):
            if old.name not in written:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)


def _write_runs_table(out_dir: Path, table: pd.DataFrame) -> pd.DataFrame:
    """Merge this call's rows into OUT/participant_runs.tsv (other participants' rows kept).

    Calls for different participants may run at once (a SLURM array of ``--participant-label``
    jobs): the read-merge-write is serialized with an advisory lock on ``OUT/.participant_runs
    .lock`` where the platform has ``fcntl``.
    """
    import contextlib

    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    lock_path = out_dir / ".participant_runs.lock"
    with open(lock_path, "a") as lock, contextlib.ExitStack() as stack:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            stack.callback(fcntl.flock, lock.fileno(), fcntl.LOCK_UN)
        return _merge_runs_table(out_dir, table)


def _normalize_runs_table(table: pd.DataFrame) -> pd.DataFrame:
    """Column types of the runs table; a table written before a column existed gets its default."""
    table = table.copy()
    if "entities" not in table:
        table["entities"] = ""
    table["entities"] = ["" if pd.isna(value) else str(value) for value in table["entities"]]
    if "reused" not in table:
        table["reused"] = False
    table["reused"] = table["reused"].astype(str).str.lower().isin(["true", "1"])
    table["run"] = pd.to_numeric(table["run"], errors="coerce").astype("Int64")
    return table


def _key_strings(table: pd.DataFrame) -> list[str]:
    columns = [table[c].tolist() for c in RUN_KEY]
    return ["|".join("" if pd.isna(v) else str(v) for v in values)
            for values in zip(*columns, strict=True)]


def _merge_runs_table(out_dir: Path, table: pd.DataFrame) -> pd.DataFrame:
    path = out_dir / RUNS_TABLE
    table = _normalize_runs_table(table[_RUN_COLUMNS])
    if path.is_file():
        previous = _normalize_runs_table(read_tsv(path))
        mine = set(_key_strings(table))
        keep = [key not in mine for key in _key_strings(previous)]
        previous = previous.loc[keep, [c for c in _RUN_COLUMNS if c in previous]]
        table = pd.concat([previous, table], ignore_index=True)
    table = table.sort_values(RUN_KEY, na_position="first").reset_index(drop=True)
    write_tsv(path, table)
    return table


def _dataset_description(out_dir: Path) -> None:
    path = out_dir / "dataset_description.json"
    if not path.is_file():
        write_json(path, {"Name": "theramark participant-level derivatives",
                          "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                          "GeneratedBy": [{"Name": "theramark", "Version": __version__}]})


def run_participant_level(
    bids_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    fmriprep_dir: str | os.PathLike | None = None,
    participant_label: list[str] | str | None = None,
    config: Mapping[str, Any] | None = None,
    n_jobs: int | None = None,
    scheduler: str | None = None,
) -> pd.DataFrame:
    """Process every run of a study (participant level).

    Parameters
    ----------
    bids_dir : path
        Raw BIDS dataset.
    out_dir : path
        Derivatives root (created).
    fmriprep_dir : path, optional
        fMRIPrep derivatives (default ``BIDS/derivatives/fmriprep``).
    participant_label : str or list of str, optional
        Only these participants (with or without ``sub-``).
    config : dict, optional
        Parsed study.toml (:func:`theramark.config.load_config`); ``None``: all defaults.
    n_jobs : int, optional
        Parallel processes (default: every core). Ignored with ``scheduler``.
    scheduler : str, optional
        ``tcp://host:port`` of a Dask distributed scheduler: the same jobs run on its workers.

    Returns
    -------
    DataFrame
        One row per run: ``participant_id, session, task, entities, run, status, reused, message,
        bold, seconds``; also written (without ``seconds``) to ``OUT/participant_runs.tsv``, whose
        rows of other participants are kept. ``entities`` holds the name's other entities
        (``acq-b``; empty when none): with ``participant_id, session, task, run`` it is the key.
        ``status`` is ``ok``, ``excluded`` (by a QC rule) or ``failed``; ``reused`` says that the
        outputs of an earlier attempt with the same parameters and inputs were kept (with that
        attempt's status).

    Raises
    ------
    BadInputError
        No runs, a bad ROI specification, or two BOLD files that would write the same outputs
        (:func:`theramark.study.layout.find_collisions`; the message names both).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings_from_config(config)
    if isinstance(participant_label, str):
        participant_label = [participant_label]
    tasks = settings["participant"]["tasks"] or None
    runs = discover_runs(bids_dir, fmriprep_dir, space=settings["participant"]["space"],
                         participant_label=participant_label, tasks=tasks)
    if not runs:
        raise BadInputError(
            f"{bids_dir}: no preprocessed runs found in space {settings['participant']['space']}"
            + (f" for participant(s) {', '.join(participant_label)}" if participant_label else "")
        )
    _roiset(settings)  # a bad ROI specification fails once, here, not in every job
    _dataset_description(out)
    resume = bool(settings["participant"]["resume"])
    if scheduler:
        rows = _run_dask(runs, out, settings, resume, scheduler)
    else:
        rows = _run_joblib(runs, out, settings, resume, n_jobs)
    table = pd.DataFrame(rows)
    _combine_task_runs(table, runs, out)
    _write_runs_table(out, table)
    table = _normalize_runs_table(table)
    order = {run.bold: i for i, run in enumerate(runs)}
    table = table.iloc[sorted(range(len(table)), key=lambda i: order[Path(table["bold"].iloc[i])])]
    return table[[*_RUN_COLUMNS, "seconds"]].reset_index(drop=True)


def _run_joblib(runs, out, settings, resume, n_jobs) -> list[dict]:
    from joblib import Parallel, delayed

    n_jobs = n_jobs or os.cpu_count() or 1
    n_jobs = max(1, min(n_jobs, len(runs)))
    if n_jobs == 1:
        return [process_run(run, out, settings, resume)
                for run in progress(runs, desc="participant level", unit="run")]
    jobs = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(
        delayed(process_run)(run, out, settings, resume) for run in runs)
    try:
        return list(progress(jobs, desc="participant level", total=len(runs), unit="run"))
    except BaseException:
        # Ctrl-C or SIGTERM (theramark.cli.Terminated) while waiting: closing the generator now
        # (not whenever the traceback that holds it is freed) makes joblib abort, which kills the
        # loky workers instead of leaving them to finish their runs, or idle for minutes, after
        # this process has gone. Finished runs keep their outputs (a rerun resumes). joblib's
        # warning that tasks were cancelled is expected here, and not for the user.
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            jobs.close()
        raise


def _run_dask(runs, out, settings, resume, scheduler) -> list[dict]:
    from distributed import as_completed

    from theramark._dask import dask_client

    with dask_client(scheduler) as client:
        futures = [client.submit(_process_run_on_worker, run, str(out), settings, resume,
                                 pure=False,
                                 key=f"theramark-{run.prefix}-{time.time_ns()}")
                   for run in runs]
        return [future.result() for future in progress(as_completed(futures),
                                                       desc="participant level (dask)",
                                                       total=len(futures), unit="run")]


def _worker_blas_threads() -> int:
    """BLAS threads for one job on this Dask worker: its cores shared among its task threads."""
    from distributed import get_worker

    return max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))


def _process_run_on_worker(run, out, settings, resume) -> dict:
    """:func:`process_run` on a Dask worker, with BLAS limited so that concurrent jobs share cores.

    joblib's loky workers get this limit from joblib; a Dask worker running several tasks at once
    in threads would otherwise start a full BLAS thread pool (and dynamic FC's threads) per task.
    The limit is process-wide and the same for every task of the worker, so it is set, not scoped.
    """
    from theramark._blas import set_blas_threads

    _import_run_dependencies()
    set_blas_threads(_worker_blas_threads())
    return process_run(run, out, settings, resume)


#: Modules a run imports lazily. Two tasks of one Dask worker that import them at the same time, in
#: two threads, can meet a package half-initialized ("cannot import name 'clone' from partially
#: initialized module 'sklearn.base'"): the first task imports them all under this lock.
_RUN_DEPENDENCIES = (
    "sklearn.base", "nilearn.signal", "nilearn.glm.first_level", "nilearn.glm.contrasts",
    "theramark.imaging._image", "theramark.imaging.denoise", "theramark.imaging.qc",
    "theramark.imaging.rois", "theramark.imaging.connectivity", "theramark.imaging.measures",
    "theramark.imaging.glm",
)
_IMPORT_LOCK = threading.Lock()


def _import_run_dependencies() -> None:
    """Import what a run needs, once per process, one thread at a time."""
    import importlib

    with _IMPORT_LOCK:
        for name in _RUN_DEPENDENCIES:
            importlib.import_module(name)
