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
(``theramark._io.provenance``: versions, parameters, ``ParameterHash``, input hashes). A run whose
QC sidecar carries the same parameter hash and whose listed outputs all exist is skipped, so an
interrupted study resumes where it stopped. A run with bad input fails alone: its message (naming
the file) goes into ``OUT/participant_runs.tsv`` and into the report.

Jobs run in joblib processes (one run per worker at a time) or, with ``scheduler="tcp://..."``,
on a Dask distributed cluster, where a worker's cores are shared among the runs it holds at once
(BLAS gets ``cores // nthreads`` threads in each).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
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
    write_tsv,
)
from theramark._progress import progress
from theramark.config import section
from theramark.errors import BadInputError
from theramark.study.layout import Run, discover_runs

#: ``[denoise]``: nuisance regression of rest runs (nilearn ``load_confounds_strategy`` presets).
DENOISE_DEFAULTS: dict[str, Any] = {
    "strategy": "simple",
    "motion": None, "wm_csf": None, "global_signal": None, "compcor": None, "n_compcor": None,
    "scrub": None, "fd_threshold": None, "std_dvars_threshold": None,
    "detrend": True,
    "standardize": "zscore_sample",
    "high_pass": None,  # Hz; None: the strategy's cosine regressors do the high-pass
    "low_pass": None,  # Hz; e.g. 0.08 for the classic 0.01-0.08 Hz band
}

#: ``[rois]``: which regions to extract.
ROIS_DEFAULTS: dict[str, Any] = {
    "roiset": "literature",  # or power264, dosenbach160, seitzman300, or {image=..., labels=...}
    "atlas": None,  # {image = "...", labels = "..."}: a labels atlas (takes precedence)
    "radius_mm": None,  # override every sphere's radius
    "on_empty": "error",  # or "drop": regions outside a run's mask are listed and dropped
}

#: ``[connectivity]``: static and dynamic FC of rest runs.
CONNECTIVITY_DEFAULTS: dict[str, Any] = {
    "measures": ["correlation", "partial correlation", "dfc"],
    # 60 s windows: within the 30-60 s range that tracks connectivity changes without being
    # dominated by sampling noise (Allen et al. 2014 used 44 s; Leonardi & Van De Ville 2015 ask
    # for windows ≥ 1/f_min of the retained band, i.e. ≥ 100 s for a 0.01 Hz high-pass: raise
    # window_s when the question is about slow fluctuations).
    "window_s": 60.0,
    "step_s": None,  # None: one volume
    "taper": "rectangular",  # or "gaussian" (Allen et al. 2014, sigma = 3 volumes)
    "write_windows": True,
}

#: ``[participant]``: which runs and how.
PARTICIPANT_DEFAULTS: dict[str, Any] = {
    "space": "MNI152NLin2009cAsym",
    "tasks": [],  # restrict to these tasks; empty = all
    "rest_tasks": ["rest"],  # tasks analysed for FC (besides any task without events)
    "resume": True,
}

RUNS_TABLE = "participant_runs.tsv"
_RUN_COLUMNS = ["participant_id", "session", "task", "run", "status", "message", "bold"]


def settings_from_config(config: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The participant-level settings: each table of study.toml merged over its defaults."""
    from theramark.imaging.glm import GLM_DEFAULTS
    from theramark.imaging.qc import QC_DEFAULTS

    settings = {
        "denoise": section(config, "denoise", DENOISE_DEFAULTS),
        "qc": section(config, "qc", QC_DEFAULTS),
        "rois": section(config, "rois", ROIS_DEFAULTS),
        "connectivity": section(config, "connectivity", CONNECTIVITY_DEFAULTS),
        "glm": section(config, "glm", GLM_DEFAULTS),
        "participant": section(config, "participant", PARTICIPANT_DEFAULTS),
    }
    base = (config or {}).get("_path", {}).get("path")
    settings["base_dir"] = {"path": str(Path(base).parent) if base else str(Path.cwd())}
    unknown = set(settings["connectivity"]["measures"]) - {"correlation", "partial correlation",
                                                           "dfc"}
    if unknown:
        raise BadInputError(f"[connectivity] measures: unknown {sorted(unknown)}; expected "
                            "'correlation', 'partial correlation', 'dfc'")
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
    spec = settings["rois"]["atlas"] or settings["rois"]["roiset"]
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


def _roiset(settings: Mapping[str, Any]):
    from theramark.imaging.rois import load_roiset

    spec = settings["rois"]["atlas"] or settings["rois"]["roiset"]
    return load_roiset(spec, radius_mm=settings["rois"]["radius_mm"],
                       base_dir=settings["base_dir"]["path"])


def _entities_row(run: Run) -> dict[str, Any]:
    return {"participant_id": run.participant_id, "session": run.session, "task": run.task,
            "run": run.run, "bold": str(run.bold)}


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
        path = self.path(name)
        with atomic_path(path, suffix=".nii.gz") as tmp:
            img.to_filename(tmp)
        self._sidecar(path, extra)
        self.written.append(path.name)
        return path


def _qc_path(run: Run, out_dir: Path) -> Path:
    return run.output_dir(out_dir) / f"{run.prefix}_desc-qc_metrics.tsv"


def is_complete(run: Run, out_dir: str | os.PathLike, params_hash: str) -> bool:
    """True when the run's outputs exist with the same parameter hash (resume)."""
    sidecar = _qc_path(run, Path(out_dir)).with_suffix(".json")
    if not sidecar.is_file():
        return False
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if record.get("ParameterHash") != params_hash:
        return False
    folder = sidecar.parent
    return all((folder / name).is_file() for name in record.get("Outputs", []))


def _previous_outputs(run: Run, out_dir: Path) -> list[str]:
    """Output names listed by an earlier run's QC sidecar (empty when none)."""
    sidecar = _qc_path(run, out_dir).with_suffix(".json")
    try:
        return list(json.loads(sidecar.read_text(encoding="utf-8")).get("Outputs", []))
    except (OSError, json.JSONDecodeError):
        return []


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
        The run's row of the runs table: entities, ``status`` (ok, failed, excluded, skipped),
        ``message``, plus ``seconds``.
    """
    started = time.perf_counter()
    row = _entities_row(run)
    out_dir = Path(out_dir)
    try:
        params = run_parameters(run, settings)
        params_hash = parameter_hash(params)
        if resume and is_complete(run, out_dir, params_hash):
            return {**row, "status": "skipped", "message": "outputs up to date",
                    "seconds": time.perf_counter() - started}
        # input hashes for the sidecars are computed in a thread while the run is processed
        # (hashlib releases the GIL)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            hashes = pool.submit(_hash_inputs, run)
            status, message, finish = _process(run, out_dir, settings, params)
            finish(hashes.result())
        return {**row, "status": status, "message": message,
                "seconds": time.perf_counter() - started}
    except BadInputError as exc:
        return {**row, "status": "failed", "message": str(exc),
                "seconds": time.perf_counter() - started}
    except Exception as exc:  # a bug or an unexpected input: the other runs must go on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {**row, "status": "failed",
                "message": f"{run.bold}: {type(exc).__name__}: {exc} "
                           f"(at {Path(where.filename).name}:{where.lineno})",
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
        previous = _previous_outputs(run, out_dir)
        writer = _Writer(run, out_dir, params, sources)
        for kind, name, value, extra in outputs:
            getattr(writer, kind)(name, value, {**extra, **roi_info})
        qc_table = pd.DataFrame([{k: qc[k] for k in qc}])
        qc_extra = {"Outputs": list(writer.written), "Status": status, "Message": message,
                    "SampleMask": kept.tolist(), "RepetitionTime": t_r,
                    "NuisanceRegressors": list(design.columns), **roi_info}
        # the QC sidecar is written last: its presence marks the run as complete (resume)
        writer.tsv("desc-qc_metrics.tsv", qc_table, qc_extra)
        # outputs of an earlier run with other parameters must not linger for the group level
        for name in sorted(set(previous) - set(writer.written)):
            for stale in (writer.folder / name,
                          writer.folder / (name.split(".")[0] + ".json")):
                stale.unlink(missing_ok=True)

    return status, message, finish


def _rest_outputs(raw_signals, names, design, sample_mask, kept, t_r, denoise, connectivity,
                  seg, roi_info, outputs) -> str:
    from theramark.imaging import connectivity as conn
    from theramark.imaging.denoise import clean

    cleaned = clean(raw_signals, confounds=design, sample_mask=sample_mask, t_r=t_r,
                    detrend=denoise["detrend"], standardize=denoise["standardize"],
                    high_pass=denoise["high_pass"], low_pass=denoise["low_pass"])
    notes = []
    outputs.append(("tsv", f"{seg}_timeseries.tsv", pd.DataFrame(cleaned, columns=names),
                    {"Description": "denoised, standardized ROI mean time series (kept volumes)",
                     "RepetitionTime": t_r, "SampleMask": kept.tolist()}))
    measures = connectivity["measures"]
    if "correlation" in measures:
        fc = conn.fc_matrix(cleaned, kind="correlation", fisher_z=True)
        outputs.append(("tsv", f"{seg}_meas-pearsoncorrelation_relmat.dense.tsv",
                        pd.DataFrame(fc, columns=names),
                        {"RelationshipMeasure": "Pearson correlation, Fisher z (arctanh)",
                         "Weighted": True, "Directed": False, "NodeFiles": names}))
    if "partial correlation" in measures:
        if cleaned.shape[0] > cleaned.shape[1] + 1:
            pc = conn.fc_matrix(cleaned, kind="partial correlation", fisher_z=True)
            outputs.append(("tsv", f"{seg}_meas-partialcorrelation_relmat.dense.tsv",
                            pd.DataFrame(pc, columns=names),
                            {"RelationshipMeasure": "partial correlation, Fisher z",
                             "Weighted": True, "Directed": False}))
        else:
            notes.append(f"partial correlation skipped ({cleaned.shape[0]} kept volumes for "
                         f"{cleaned.shape[1]} ROIs)")
    if "dfc" in measures:
        n_volumes = raw_signals.shape[0]
        window = conn.window_length_volumes(connectivity["window_s"], t_r)
        step = 1 if not connectivity["step_s"] else max(
            1, int(round(connectivity["step_s"] / t_r)))
        if window > n_volumes or kept.size < window:
            notes.append(f"dynamic FC skipped (run of {n_volumes} volumes, {kept.size} kept, "
                         f"window of {window})")
        else:
            full = np.zeros((n_volumes, cleaned.shape[1]))
            full[kept] = cleaned
            keep = np.zeros(n_volumes, bool)
            keep[kept] = True
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                windows = conn.sliding_window_fc(full, window, step=step,
                                                 taper=connectivity["taper"], keep=keep,
                                                 dtype=np.float32)
            variability = conn.dfc_variability(windows, fisher_z=True)
            extra = {"WindowVolumes": window, "WindowSeconds": window * t_r, "StepVolumes": step,
                     "Taper": connectivity["taper"], "NWindows": int(windows.shape[0])}
            outputs.append(("tsv", f"{seg}_meas-dfcvariability_relmat.dense.tsv",
                            pd.DataFrame(variability, columns=names),
                            {"RelationshipMeasure": "SD over sliding windows of Fisher z", **extra}))
            if connectivity["write_windows"]:
                outputs.append(("npy", f"{seg}_desc-windows_relmat.npy",
                                windows.astype(np.float32, copy=False),
                                {"RelationshipMeasure": "windowed Pearson r",
                                 "Shape": "(n_windows, n_rois, n_rois)", **extra}))
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


def _combine_task_runs(results: pd.DataFrame, runs: list[Run], out_dir: Path,
                       settings: Mapping[str, Any]) -> None:
    """Fixed effects over the runs of one participant × session × task (written without run-)."""
    from theramark.imaging.glm import combine_runs

    by_key: dict[tuple, list[Run]] = {}
    ok = {(r.participant_id, r.session, r.task, r.run) for r in results.itertuples()
          if r.status in ("ok", "skipped")}
    for run in runs:
        if run.run is not None and (run.participant_id, run.session, run.task, run.run) in ok:
            by_key.setdefault((run.participant_id, run.session, run.task), []).append(run)
    for (_, _, _), group in by_key.items():
        paths = []
        for run in group:
            found = sorted(run.output_dir(out_dir).glob(f"{run.prefix}_seg-*_desc-glm_roistats.tsv"))
            paths.extend(found)
        if len(paths) < 2:
            continue
        tables = [read_tsv(p) for p in paths]
        combined = combine_runs(tables)
        first = group[0]
        seg = paths[0].name[len(first.prefix) + 1:].split("_desc-")[0]
        prefix = first.prefix.replace(f"_run-{first.run}", "")
        target = first.output_dir(out_dir) / f"{prefix}_{seg}_desc-glm_roistats.tsv"
        write_tsv(target, combined)
        record = provenance({"combination": "precision-weighted fixed effects over runs",
                             "runs": [p.name for p in paths]},
                            inputs={p.name: p for p in paths})
        write_json(target.with_suffix(".json"), record)


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


def _merge_runs_table(out_dir: Path, table: pd.DataFrame) -> pd.DataFrame:
    path = out_dir / RUNS_TABLE
    table = table[_RUN_COLUMNS].copy()
    if path.is_file():
        previous = read_tsv(path)
        key = ["participant_id", "session", "task", "run"]
        mine = set(map(tuple, table[key].astype(str).to_numpy()))
        keep = [tuple(r) not in mine for r in previous[key].astype(str).to_numpy()]
        previous = previous.loc[keep, [c for c in _RUN_COLUMNS if c in previous]]
        table = pd.concat([previous, table], ignore_index=True)
    table["run"] = table["run"].astype("Int64")
    table = table.sort_values(["participant_id", "session", "task", "run"],
                              na_position="first").reset_index(drop=True)
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
        One row per run: ``participant_id, session, task, run, status, message, bold`` (status
        ``ok``, ``failed``, ``excluded``, ``skipped``); also written to
        ``OUT/participant_runs.tsv``.
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
    _combine_task_runs(table, runs, out, settings)
    _write_runs_table(out, table)
    table["run"] = table["run"].astype("Int64")
    return table[[*_RUN_COLUMNS, "seconds"]]


def _run_joblib(runs, out, settings, resume, n_jobs) -> list[dict]:
    from joblib import Parallel, delayed

    n_jobs = n_jobs or os.cpu_count() or 1
    n_jobs = max(1, min(n_jobs, len(runs)))
    if n_jobs == 1:
        return [process_run(run, out, settings, resume)
                for run in progress(runs, desc="participant level", unit="run")]
    jobs = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(
        delayed(process_run)(run, out, settings, resume) for run in runs)
    return list(progress(jobs, desc="participant level", total=len(runs), unit="run"))


def _run_dask(runs, out, settings, resume, scheduler) -> list[dict]:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise BadInputError("--scheduler needs dask[distributed] installed") from None
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise BadInputError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
    try:
        futures = [client.submit(_process_run_on_worker, run, str(out), settings, resume,
                                 pure=False,
                                 key=f"theramark-{run.prefix}-{time.time_ns()}")
                   for run in runs]
        return [future.result() for future in progress(as_completed(futures),
                                                       desc="participant level (dask)",
                                                       total=len(futures), unit="run")]
    finally:
        client.close()


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
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=_worker_blas_threads())
    return process_run(run, out, settings, resume)


# -- group level ------------------------------------------------------------------------------

def qc_group_step(ctx) -> list:
    """Gather QC metrics and the runs table for the group stages and the report.

    Sets ``ctx.results["qc"]`` (one row per run: entities + QC metrics) and
    ``ctx.results["runs"]`` (the runs table), writes ``group/qc.tsv``, and returns the QC report
    section.
    """
    from theramark.imaging.outputs import read_qc_table
    from theramark.report.sections.imaging import qc_sections

    qc = read_qc_table(ctx.out_dir)
    runs_path = Path(ctx.out_dir) / RUNS_TABLE
    runs = read_tsv(runs_path) if runs_path.is_file() else pd.DataFrame(columns=_RUN_COLUMNS)
    ctx.results["qc"] = qc
    ctx.results["runs"] = runs
    write_tsv(ctx.group_dir / "qc.tsv", qc)
    qc_fc_table = None
    try:
        qc_fc_table = _qc_fc_from_outputs(ctx.out_dir, qc)
    except BadInputError:
        qc_fc_table = None
    ctx.results["qc_fc"] = qc_fc_table
    return qc_sections(qc, runs, qc_fc_table)


def _qc_fc_from_outputs(out_dir, qc: pd.DataFrame) -> pd.DataFrame | None:
    from theramark.imaging.outputs import read_participant_outputs
    from theramark.imaging.qc import qc_fc

    features = read_participant_outputs(out_dir, measures=("fc",))
    if features.empty or qc.empty:
        return None
    key = ["participant_id", "session", "task", "run"]
    wide = features.assign(run=features["run"].fillna(-1), session=features["session"].fillna(""))
    wide = wide.pivot_table(index=key, columns="feature", values="value")
    fd = qc.assign(run=qc["run"].fillna(-1), session=qc["session"].fillna("")).set_index(key)
    fd = fd.loc[fd.index.intersection(wide.index), "mean_fd"]
    wide = wide.loc[fd.index].dropna(axis=1)
    if len(wide) < 4 or wide.shape[1] == 0:
        return None
    return qc_fc(wide, fd.to_numpy())


def _run_keys(table: pd.DataFrame) -> list[str]:
    """One string per row identifying its run (missing session/run included)."""
    columns = [table[c].tolist() for c in ("participant_id", "session", "task", "run")]
    return ["|".join("" if pd.isna(v) else str(v) for v in values) for values in zip(*columns,
                                                                                     strict=True)]


def imaging_group_step(ctx) -> list:
    """Summaries of the participant-level imaging outputs for the report (order 30).

    Sets ``ctx.results["imaging_summary"]``: one run's FC edges, the group-mean FC and dFC
    variability by edge (excluded runs left out), ROI activation mean ± SEM by contrast, the mean
    contrast maps and ROI coordinates; returns the imaging report sections.
    """
    from theramark.imaging.outputs import group_mean_maps, read_participant_outputs, read_qc_table
    from theramark.report.sections.imaging import imaging_sections

    features = read_participant_outputs(ctx.out_dir, measures=("fc", "dfc_variability", "psc"))
    qc = read_qc_table(ctx.out_dir)
    features = features.assign(_run=_run_keys(features))
    if len(qc) and len(features):
        excluded = set(_run_keys(qc[qc["excluded"]]))
        features = features[~features["_run"].isin(excluded)]
    summary: dict[str, Any] = {}
    fc = features[features["measure"] == "fc"]
    if len(fc):
        first = fc.iloc[0]
        one = fc[fc["_run"] == first["_run"]]
        label = " ".join(str(v) for v in (first["participant_id"], first["session"], first["task"],
                                          first["run"]) if pd.notna(v))
        summary["example"] = (label, one.set_index("feature")["value"])
        summary["fc_mean"] = fc.groupby("feature")["value"].mean()
        summary["n_fc"] = int(fc["_run"].nunique())
    dfc = features[features["measure"] == "dfc_variability"]
    if len(dfc):
        summary["dfc_mean"] = dfc.groupby("feature")["value"].mean()
    psc = features[features["measure"] == "psc"]
    if len(psc):
        parts = psc["feature"].str.split(":", n=1, expand=True)
        table = psc.assign(roi=parts[0], contrast=parts[1])
        summary["activation"] = (table.groupby(["contrast", "roi"])["value"]
                                 .agg(mean="mean", sem="sem", n="count").reset_index())
    summary["maps"] = group_mean_maps(ctx.out_dir)
    try:
        roiset = _roiset(settings_from_config(ctx.config))
        summary["coords"] = roiset.table.set_index("name")[["x", "y", "z"]]
    except BadInputError:
        summary["coords"] = None
    ctx.results["imaging_summary"] = summary
    return imaging_sections(summary)
