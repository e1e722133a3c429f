"""Reading participant-level derivatives back as tidy tables (the group stage's input).

:func:`read_participant_outputs` gives the long table of docs/contracts.md:
``participant_id, session, task, run, measure, feature, value`` with ``measure`` a name of
:data:`theramark.registry.MEASURES`. Edge features are ``<roiA>__<roiB>`` (names sorted),
activation features ``<roi>:<contrast>``. When a participant × session × task has several runs and
their fixed-effects combination (the roistats file without ``run-``), the combination is used
for ``activation``/``psc`` (with ``run`` missing) instead of the single runs.

Runs that differ by an entity other than ``run-`` (``acq-``, ``echo-``, ``res-``...; see
:func:`theramark.study.entities.task_key`) are never merged: their ``task`` is the task label
followed by those entities (``rest_acq-b``), so they become separate features of the group level.
A study without such entities has plain task labels (``rest``, ``mid``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from theramark._io import read_tsv
from theramark.errors import BadInputError
from theramark.registry import MEASURES as _REGISTRY
from theramark.registry import relmat_suffix
from theramark.study.entities import parse_entities, task_key

MEASURES = tuple(_REGISTRY)

_QC_METRICS = ("mean_fd", "max_fd", "percent_fd_over_threshold", "percent_censored",
               "mean_dvars", "tsnr", "n_volumes", "n_volumes_kept", "excluded")

_RELMATS = {name: relmat_suffix(name) for name, m in _REGISTRY.items() if m.kind == "relmat"}

_COLUMNS = ["participant_id", "session", "task", "run", "measure", "feature", "value"]


def _identifiers(path: Path) -> dict[str, object]:
    """The run of an output file: participant, session, task (with its other entities), run."""
    entities = parse_entities(path)
    if "sub" not in entities or "task" not in entities:
        raise BadInputError(f"{path}: not a participant-level output name (expected "
                            "sub-<label>[_ses-<label>]_task-<label>..._<suffix>)")
    run = entities.get("run")
    return {"participant_id": f"sub-{entities['sub']}", "session": entities.get("ses"),
            "task": task_key(entities), "run": int(run) if run is not None and run.isdigit()
            else None, "seg": entities.get("seg")}


def _func_files(out_dir: Path, pattern: str) -> list[Path]:
    return sorted(out_dir.glob(f"sub-*/**/func/*{pattern}"))


def read_qc_table(out_dir: str | os.PathLike) -> pd.DataFrame:
    """QC metrics of every run: one row per run (entities + the metrics of ``desc-qc_metrics``).

    ``task`` carries the run's other entities as in :func:`read_participant_outputs`
    (``rest_acq-b``), so the rows of two acquisitions stay apart.
    """
    out_dir = Path(out_dir)
    rows = []
    for path in _func_files(out_dir, "_desc-qc_metrics.tsv"):
        ids = _identifiers(path)
        ids.pop("seg")
        table = read_tsv(path)
        if len(table) != 1:
            raise BadInputError(f"{path}: expected one row of QC metrics, got {len(table)}")
        rows.append({**ids, **table.iloc[0].to_dict()})
    columns = ["participant_id", "session", "task", "run", *_QC_METRICS, "exclusion_reason"]
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    if "run" in table:
        table["run"] = table["run"].astype("Int64")
    if "excluded" in table and len(table):
        table["excluded"] = table["excluded"].astype(str).str.lower().isin(["true", "1"])
    return table


def _edges(path: Path) -> pd.Series:
    from theramark.imaging.connectivity import fc_edges

    matrix = read_tsv(path)
    names = list(matrix.columns)
    if matrix.shape[0] != matrix.shape[1]:
        raise BadInputError(f"{path}: expected a square matrix with a header row of ROI names, "
                            f"got {matrix.shape}")
    return fc_edges(matrix.to_numpy(dtype=float), names)


def read_participant_outputs(
    out_dir: str | os.PathLike, measures: Iterable[str] | None = None, roiset: str | None = None,
) -> pd.DataFrame:
    """Every participant-level feature as one tidy long table.

    Parameters
    ----------
    out_dir : path
        The participant-level derivatives root.
    measures : iterable of str, optional
        Subset of :data:`MEASURES` (default all).
    roiset : str, optional
        The ``seg-`` label to read when the folder holds outputs of several ROI sets.

    Returns
    -------
    DataFrame
        ``participant_id, session, task, run, measure, feature, value``; ``task`` is
        :func:`~theramark.study.entities.task_key` of the file names (``rest``, or ``rest_acq-b``
        for a run with other entities than ``run-``).
    """
    out_dir = Path(out_dir)
    wanted = set(MEASURES if measures is None else measures)
    unknown = wanted - set(MEASURES)
    if unknown:
        raise ValueError(f"unknown measures {sorted(unknown)}; expected some of {MEASURES}")
    frames: list[pd.DataFrame] = []
    if "qc" in wanted:
        qc = read_qc_table(out_dir)
        if len(qc):
            metrics = [m for m in _QC_METRICS if m in qc]
            long = qc.melt(id_vars=["participant_id", "session", "task", "run"],
                           value_vars=metrics, var_name="feature", value_name="value")
            long["value"] = pd.to_numeric(long["value"].astype(float), errors="coerce")
            frames.append(long.assign(measure="qc"))
    segs = {_identifiers(p)["seg"] for p in _func_files(out_dir, "_seg-*")}
    segs.discard(None)
    if roiset is None and len(segs) > 1:
        raise BadInputError(f"{out_dir}: outputs of several ROI sets ({', '.join(sorted(segs))}); "
                            "choose one with roiset=")
    seg = roiset if roiset is not None else (next(iter(segs)) if segs else None)
    if seg is not None:
        for measure, suffix in _RELMATS.items():
            if measure not in wanted:
                continue
            for path in _func_files(out_dir, f"_seg-{seg}_{suffix}"):
                ids = _identifiers(path)
                ids.pop("seg")
                edges = _edges(path)
                frames.append(pd.DataFrame({**ids, "measure": measure,
                                            "feature": edges.index.to_numpy(),
                                            "value": edges.to_numpy()}))
        if wanted & {"activation", "psc"}:
            frames.extend(_activation(out_dir, seg, wanted))
    if not frames:
        return pd.DataFrame(columns=_COLUMNS)
    table = pd.concat(frames, ignore_index=True)[_COLUMNS]
    table["run"] = table["run"].astype("Int64")
    table["value"] = table["value"].astype(float)
    return table.sort_values(["participant_id", "session", "task", "run", "measure", "feature"],
                             na_position="first").reset_index(drop=True)


def _activation(out_dir: Path, seg: str, wanted: set[str]) -> list[pd.DataFrame]:
    paths = _func_files(out_dir, f"_seg-{seg}_desc-glm_roistats.tsv")
    combined = {(i["participant_id"], i["session"], i["task"]) for i in map(_identifiers, paths)
                if i["run"] is None}
    frames = []
    for path in paths:
        ids = _identifiers(path)
        ids.pop("seg")
        if ids["run"] is not None and (ids["participant_id"], ids["session"], ids["task"]) in \
                combined:
            continue  # the fixed-effects combination of this participant's runs is used
        stats = read_tsv(path)
        feature = stats["roi"].astype(str) + ":" + stats["contrast"].astype(str)
        for measure, column in (("activation", "effect"), ("psc", "psc")):
            if measure in wanted:
                frames.append(pd.DataFrame({**ids, "measure": measure, "feature": feature,
                                            "value": stats[column].to_numpy(float)}))
    return frames


def group_mean_maps(out_dir: str | os.PathLike, stat: str = "effect") -> dict[str, object]:
    """Mean over runs of each contrast's voxel map (``desc-<label>_stat-<stat>_statmap``).

    Maps on different grids are resampled to the first one's grid. Returns ``{label: image}``
    (empty when no maps were written).
    """
    import nibabel as nib

    out_dir = Path(out_dir)
    by_label: dict[str, list[Path]] = {}
    for path in _func_files(out_dir, f"_stat-{stat}_statmap.nii.gz"):
        label = parse_entities(path).get("desc")
        if label:
            by_label.setdefault(label, []).append(path)
    maps = {}
    for label, paths in sorted(by_label.items()):
        reference = nib.load(paths[0])
        total = np.zeros(reference.shape, dtype=np.float64)
        for path in paths:
            img = nib.load(path)
            if img.shape != reference.shape or not np.allclose(img.affine, reference.affine):
                from nilearn.image import resample_to_img

                img = resample_to_img(img, reference, force_resample=True, copy_header=True)
            total += np.asanyarray(img.dataobj)
        maps[label] = nib.Nifti1Image((total / len(paths)).astype(np.float32), reference.affine)
    return maps


def read_timeseries_index(out_dir: str | os.PathLike, tasks: Iterable[str] = ("rest",),
                          roiset: str | None = None) -> pd.DataFrame:
    """The ROI time-series files of the participant level, one row per run.

    Parameters
    ----------
    out_dir : path
        The participant-level derivatives root.
    tasks : iterable of str
        Task keys to list (``rest``; see :func:`read_participant_outputs` for task keys).
    roiset : str, optional
        The ``seg-`` label when the folder holds outputs of several ROI sets.

    Returns
    -------
    DataFrame
        ``participant_id, session, task, run, path, excluded`` (``excluded``: the run failed
        QC, from its ``desc-qc_metrics`` file; False when that file is missing), sorted by
        participant, session and run.
    """
    out_dir = Path(out_dir)
    paths = _func_files(out_dir, "_timeseries.tsv")
    rows = []
    for path in paths:
        ids = _identifiers(path)
        if ids["task"] not in set(tasks):
            continue
        rows.append({**ids, "path": path})
    table = pd.DataFrame(rows, columns=["participant_id", "session", "task", "run", "seg", "path"])
    segs = set(table["seg"].dropna())
    if roiset is None and len(segs) > 1:
        raise BadInputError(f"{out_dir}: time series of several ROI sets ({', '.join(sorted(segs))}); "
                            "choose one with roiset=")
    if roiset is not None:
        table = table[table["seg"] == roiset]
    qc = read_qc_table(out_dir)
    table["excluded"] = False
    if len(qc) and "excluded" in qc:
        keys = ["participant_id", "session", "task", "run"]
        flags = qc[keys + ["excluded"]].copy()
        flags["excluded"] = flags["excluded"].astype(str).str.lower().isin(["true", "1"])
        lookup = {tuple(str(v) for v in row[:-1]): bool(row[-1])
                  for row in flags.itertuples(index=False)}
        table["excluded"] = [lookup.get(tuple(str(v) for v in row), False)
                             for row in table[keys].itertuples(index=False)]
    return (table.drop(columns="seg").sort_values(["participant_id", "session", "run"],
                                                  na_position="first", kind="stable")
            .reset_index(drop=True))


def load_timeseries(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, object]]:
    """One run's denoised ROI time series and what the group level needs to know of it.

    Returns
    -------
    series : DataFrame, shape (n_volumes_kept, n_rois)
        The sidecar's ``SampleMask`` volumes, ROI names as columns.
    info : dict
        ``repetition_time`` (s), ``sample_mask`` (0-based kept volumes), and
        ``framewise_displacement`` (mm, one per kept volume, from the fMRIPrep confounds the run
        was denoised with; None when that file is gone).
    """
    import json

    path = Path(path)
    series = read_tsv(path)
    sidecar_path = path.with_name(path.name[: -len(".tsv")] + ".json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    t_r = sidecar.get("RepetitionTime")
    if t_r is None:
        raise BadInputError(f"{sidecar_path}: no RepetitionTime (the participant level writes it; "
                            "rerun the participant level for this run)")
    kept = np.asarray(sidecar.get("SampleMask", np.arange(len(series))), dtype=int)
    if kept.size != len(series):
        raise BadInputError(f"{path}: {len(series)} rows but the sidecar's SampleMask lists "
                            f"{kept.size} volumes")
    fd = None
    confounds = (sidecar.get("Sources") or {}).get("confounds", {}).get("path")
    if confounds and Path(confounds).exists():
        column = read_tsv(confounds).get("framewise_displacement")
        if column is not None:
            values = pd.to_numeric(column, errors="coerce").to_numpy(float)
            if kept.max(initial=-1) < values.size:
                fd = np.nan_to_num(values[kept], nan=0.0)
    return series.astype(float), {"repetition_time": float(t_r), "sample_mask": kept,
                                  "framewise_displacement": fd}
