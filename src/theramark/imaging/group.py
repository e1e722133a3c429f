"""Group-level summaries of the participant-level imaging outputs (QC, connectomes, activation).

Two analyses of the group level (see :mod:`theramark.registry`): ``qc`` gathers every run's QC
metrics, the runs table and QC-FC; ``imaging`` averages connectomes, dynamic-FC variability and
ROI activation over the runs QC kept, and writes the mean contrast maps. Both return
:class:`~theramark.results.AnalysisResult` tables; the report draws them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from theramark._io import read_tsv, write_nifti
from theramark.errors import AnalysisError, BadInputError
from theramark.imaging.participant import RUNS_TABLE, roiset_from_settings
from theramark.results import AnalysisResult

_RUN_KEY = ["participant_id", "session", "task", "run"]


def has_participant_outputs(out_dir: str | Path) -> bool:
    """Whether the participant level has run into ``out_dir``."""
    return (Path(out_dir) / RUNS_TABLE).is_file()


def check_not_all_failed(out_dir: str | Path) -> None:
    """Stop the group level when every run of the participant level failed.

    Parameters
    ----------
    out_dir : path
        The participant-level output folder (holding ``participant_runs.tsv``).

    Raises
    ------
    AnalysisError
        ``all N runs failed: see OUT/participant_runs.tsv`` when the runs table has rows and every
        one has status ``failed``. Nothing is raised without a runs table or with any run ``ok``
        or ``excluded``.
    """
    path = Path(out_dir) / RUNS_TABLE
    if not path.is_file():
        return
    runs = read_tsv(path)
    if len(runs) and "status" in runs and (runs["status"] == "failed").all():
        raise AnalysisError(f"all {len(runs)} runs failed: see {path}")


def run_qc(ctx) -> AnalysisResult:
    """The ``qc`` analysis: QC metrics of every run, the runs table and QC-FC.

    Tables: ``qc`` (one row per run: entities and QC metrics), ``runs`` (the runs table),
    ``qc_fc`` (``edge, r, p``: correlation of each edge's FC with mean FD across runs).

    Raises
    ------
    AnalysisError
        When every run failed (:func:`check_not_all_failed`). ``qc`` is the group level's first
        analysis, so the run stops before any table is written.
    """
    from theramark.imaging.outputs import read_qc_table

    result = AnalysisResult("qc")
    if not has_participant_outputs(ctx.out_dir):
        result.skip("quality control", f"no participant-level outputs in {ctx.out_dir} "
                                       f"({RUNS_TABLE} is missing): the study has no imaging")
        return result
    check_not_all_failed(ctx.out_dir)
    qc = read_qc_table(ctx.out_dir)
    runs = read_tsv(Path(ctx.out_dir) / RUNS_TABLE)
    ctx.results["qc"] = qc
    ctx.results["runs"] = runs
    result.add("qc", qc)
    result.add("runs", runs)
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    result.summary["run_status"] = {str(k): int(v) for k, v in counts.items()}
    result.parameters["qc_rules"] = ctx.settings("qc")
    try:
        result.add("qc_fc", _qc_fc_from_outputs(ctx.out_dir, qc))
    except BadInputError as exc:
        result.skip("QC-FC", str(exc))
    if "qc_fc" not in result.tables and "QC-FC" not in dict(result.skipped):
        result.skip("QC-FC", "fewer than 4 rest runs with FC and QC metrics")
    return result


def _qc_fc_from_outputs(out_dir, qc: pd.DataFrame) -> pd.DataFrame | None:
    from theramark.imaging.outputs import read_participant_outputs
    from theramark.imaging.qc import qc_fc

    features = read_participant_outputs(out_dir, measures=("pearsoncorrelation",))
    if features.empty or qc.empty:
        return None
    wide = features.assign(run=features["run"].fillna(-1), session=features["session"].fillna(""))
    wide = wide.pivot_table(index=_RUN_KEY, columns="feature", values="value")
    fd = qc.assign(run=qc["run"].fillna(-1), session=qc["session"].fillna("")).set_index(_RUN_KEY)
    fd = fd.loc[fd.index.intersection(wide.index), "mean_fd"]
    wide = wide.loc[fd.index].dropna(axis=1)
    if len(wide) < 4 or wide.shape[1] == 0:
        return None
    return qc_fc(wide, fd.to_numpy())


def _run_keys(table: pd.DataFrame) -> list[str]:
    """One string per row identifying its run (missing session/run included)."""
    columns = [table[c].tolist() for c in _RUN_KEY]
    return ["|".join("" if pd.isna(v) else str(v) for v in values)
            for values in zip(*columns, strict=True)]


def run_summaries(ctx) -> AnalysisResult:
    """The ``imaging`` analysis: group-mean connectomes and activation over the runs QC kept.

    Tables: ``example_fc`` (one run's edges), ``fc_mean`` and ``dfc_mean`` (``feature, value``:
    group means by edge), ``activation`` (``contrast, roi, mean, sem, n``: percent signal change),
    ``roi_coordinates`` (``name, x, y, z`` in MNI mm, when the ROI set has coordinates); mean
    contrast maps as ``mean_<contrast>_effect.nii.gz``.
    """
    from theramark.imaging.outputs import group_mean_maps, read_participant_outputs, read_qc_table

    result = AnalysisResult("imaging")
    if not has_participant_outputs(ctx.out_dir):
        result.skip("imaging summaries", "no participant-level outputs: the study has no imaging")
        return result
    features = read_participant_outputs(
        ctx.out_dir, measures=("pearsoncorrelation", "dfcvariability", "psc"))
    qc = read_qc_table(ctx.out_dir)
    features = features.assign(_run=_run_keys(features))
    if len(qc) and len(features):
        excluded = set(_run_keys(qc[qc["excluded"]]))
        features = features[~features["_run"].isin(excluded)]
    fc = features[features["measure"] == "pearsoncorrelation"]
    if len(fc):
        first = fc.iloc[0]
        one = fc[fc["_run"] == first["_run"]]
        result.summary["example_run"] = " ".join(
            str(first[c]) for c in _RUN_KEY if pd.notna(first[c]))
        result.add("example_fc", one[["feature", "value"]].reset_index(drop=True))
        result.add("fc_mean", fc.groupby("feature")["value"].mean().reset_index())
        result.summary["n_fc_runs"] = int(fc["_run"].nunique())
    dfc = features[features["measure"] == "dfcvariability"]
    if len(dfc):
        result.add("dfc_mean", dfc.groupby("feature")["value"].mean().reset_index())
    psc = features[features["measure"] == "psc"]
    if len(psc):
        parts = psc["feature"].str.split(":", n=1, expand=True)
        table = psc.assign(roi=parts[0], contrast=parts[1])
        result.add("activation", table.groupby(["contrast", "roi"], sort=False)["value"]
                   .agg(mean="mean", sem="sem", n="count").reset_index())
    folder = ctx.group_dir / "imaging"
    for old in folder.glob("mean_*_effect.nii.gz") if folder.is_dir() else []:
        old.unlink()
    maps = group_mean_maps(ctx.out_dir)
    for label, img in maps.items():
        write_nifti(folder / f"mean_{label}_effect.nii.gz", img)
    result.summary["maps"] = sorted(maps)
    settings = ctx.settings("rois")
    result.parameters["rois"] = settings
    try:
        roiset = roiset_from_settings(settings, ctx.base_dir)
    except BadInputError as exc:
        result.skip("ROI coordinates", str(exc))
    else:
        coords = roiset.table[["name", "x", "y", "z"]] if {"x", "y", "z"} <= set(
            roiset.table.columns) else None
        if coords is not None and coords[["x", "y", "z"]].notna().all().all():
            result.add("roi_coordinates", coords.reset_index(drop=True))
    return result
