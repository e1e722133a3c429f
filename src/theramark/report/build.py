"""Build ``OUT/report.html`` from the group-level result files alone.

:func:`build_report` reads ``OUT/group/run.json`` and, for each analysis of the registry, the
tables and sidecar under ``OUT/group/<analysis>/``; each analysis's report builder draws its
sections. A summary of the findings under family-wise control opens the report; the steps that
could not run and the methods (generated from the recorded parameters) close it. Nothing is
recomputed, so ``theramark report OUT`` gives the document the run gave.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from theramark.errors import BadInputError
from theramark.registry import ANALYSES, resolve
from theramark.report.document import Report, Section, Table, Text
from theramark.results import SKIPPED_TABLE, AnalysisFiles


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def _p(value: float, relation: bool = False) -> str:
    """A p-value as text; with ``relation`` the comparison sign is included (``= 0.012``)."""
    if pd.isna(value):
        return "–"
    text = "< 0.001" if value < 0.001 else f"{value:.3f}"
    return text if not relation or text.startswith("<") else f"= {text}"


def _label(feature: str) -> str:
    parts = str(feature).split("|")
    if len(parts) == 3:
        measure, task, name = parts
        return f"{name.replace('__', '–')} ({measure}, {task})"
    return str(feature)


def summary_section(group_dir: Path) -> Section:
    """The opening summary: findings that survive family-wise (or stated) control, with CIs."""
    section = Section("summary", "Summary of findings", order=1)
    items: list[str | tuple[str, list[str]]] = []
    clinical = AnalysisFiles(group_dir, "clinical")
    scales = AnalysisFiles(group_dir, "scales")
    primary = scales.summary.get("primary") if scales.exists else None
    therapy = clinical.table("therapy_time") if clinical.exists else None
    if therapy is not None and primary is not None:
        design = clinical.parameters.get("design", {})
        rows = therapy[(therapy["instrument"] == primary)
                       & (therapy["session"].astype(str) == str(design.get("endpoint")))]
        for row in rows.itertuples():
            items.append(
                f"Symptoms ({primary}, primary outcome), {design.get('baseline')} to "
                f"{row.session}: mean change in {row.arm} minus mean change in "
                f"{design.get('reference_group')} = {_fmt(row.estimate, 1)} points (95% CI "
                f"{_fmt(row.ci_low, 1)} to {_fmt(row.ci_high, 1)}, p {_p(row.p, True)}; Hedges' g "
                f"{_fmt(row.hedges_g)}).")
    longitudinal = AnalysisFiles(group_dir, "longitudinal")
    if longitudinal.exists:
        cfg = longitudinal.parameters.get("longitudinal", {})
        alpha = float(cfg.get("alpha", 0.05))
        permuted = bool(cfg.get("n_permutations"))
        hypotheses = longitudinal.table("hypotheses")
        if hypotheses is not None and permuted:
            hits = hypotheses[hypotheses["p_fwe"] < alpha]
            items.append((f"Confirmatory imaging hypotheses: {hits['feature'].nunique()} of "
                          f"{hypotheses['feature'].nunique()} supported at family-wise p < {alpha} "
                          "(max-T within the family)",
                          [_effect_line(row) for row in hits.itertuples()]))
        group_time = longitudinal.table("group_time")
        if group_time is not None and permuted:
            hits = group_time[group_time["p_fwe"] < alpha].sort_values("p")
            shown = [_effect_line(row) for row in hits.head(3).itertuples()]
            if len(hits) > 3:
                shown.append(f"… {len(hits) - 3} more in “Imaging: therapy × time”")
            items.append((f"Exploratory imaging (all {group_time['feature'].nunique()} "
                          f"features): {len(hits)} arm contrast(s) at family-wise p < {alpha}",
                          shown))
        elif group_time is not None:
            items.append("Imaging: no permutation test was run ([longitudinal] n_permutations = "
                         "0), so no finding carries family-wise control.")
        components = longitudinal.table("nbs_components")
        if components is not None and permuted:
            hits = components[components["p_fwe"] < alpha]
            for row in hits.itertuples():
                items.append(f"Network-based statistic, {row.contrast}: a component of "
                             f"{row.n_edges} edges (FWE p {_p(row.p_fwe, True)}).")
    predict = AnalysisFiles(group_dir, "predict")
    primary_model = predict.summary.get("primary") if predict.exists else None
    if primary_model:
        metric = str(primary_model["metric"]).upper() if primary_model["metric"] == "auc" \
            else "R²"
        text = (f"Response prediction ({primary_model['model']}, {primary_model['feature_set']} "
                f"predictors, n = {predict.summary.get('n')}): cross-validated {metric} "
                f"{_fmt(primary_model['estimate'])} (95% CI {_fmt(primary_model['ci_low'])} to "
                f"{_fmt(primary_model['ci_high'])}"
                + (f", permutation p {_p(primary_model['p_value'], True)}"
                   if "p_value" in primary_model else "") + ").")
        if predict.summary.get("warnings"):
            text += (" Read it with the warnings of “Response prediction and therapy selection”: "
                     "the sample is small for a prediction model.")
        items.append(text)
    skipped = group_dir / SKIPPED_TABLE
    if skipped.is_file():
        n = len(pd.read_csv(skipped, sep="\t"))
        if n:
            items.append(f"{n} step(s) could not run: see “Steps not run” below for why.")
    if not items:
        items.append("No analysis produced a finding to summarize.")
    body = "<ul>" + "".join(_item(item) for item in items) + "</ul>"
    return section.add(Text(body, raw_html=True))


def _item(item: str | tuple[str, list[str]]) -> str:
    if isinstance(item, str):
        return f"<li>{_escape(item)}</li>"
    head, lines = item
    inner = "".join(f"<li>{_escape(line)}</li>" for line in lines)
    return f"<li>{_escape(head)}{f'<ul class=detail>{inner}</ul>' if inner else ''}</li>"


def _effect_line(row) -> str:
    contrast = str(row.contrast).split(":")[0].replace(" - ", " vs ")
    return (f"{_label(row.feature)}, {contrast}: change difference {_fmt(row.estimate)} "
            f"(95% CI {_fmt(row.ci_low)} to {_fmt(row.ci_high)}; g = {_fmt(row.hedges_g)}; "
            f"FWE p {_p(row.p_fwe, True)})")


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def skipped_section(group_dir: Path) -> Section | None:
    """Every step that could not run, with the reason (``OUT/group/skipped.tsv``)."""
    path = group_dir / SKIPPED_TABLE
    if not path.is_file():
        return None
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if table.empty:
        return None
    section = Section("skipped", "Steps not run", order=85)
    section.add(Text("These steps could not run on this dataset; the reason says what to declare "
                     "or provide."))
    return section.add(Table(table, caption="Steps not run", source=f"group/{SKIPPED_TABLE}",
                             visible_rows=30))


def methods_section(group_dir: Path, run: dict) -> Section:
    """Software, design and the parameters each analysis recorded."""
    section = Section("methods", "Methods and software", order=90)
    lines = []
    software = {}
    for analysis in ANALYSES:
        files = AnalysisFiles(group_dir, analysis.name)
        if files.exists and not software:
            software = files.software
    if software:
        dependencies = ", ".join(f"{k} {v}" for k, v in software.get("Dependencies", {}).items())
        lines.append(f"Analysed with {software.get('Name', 'theramark')} "
                     f"{software.get('Version', '')} ({dependencies}).")
    if run.get("config"):
        lines.append(f"Configuration: {run['config']}.")
    longitudinal = AnalysisFiles(group_dir, "longitudinal")
    if longitudinal.exists and longitudinal.has("group_time"):
        rois = longitudinal.parameters.get("rois", {})
        cfg = longitudinal.parameters.get("longitudinal", {})
        roiset = rois.get("atlas") or rois.get("roiset")
        lines.append(f"Regions: the {roiset} ROI set"
                     + (f" ({rois['radius_mm']} mm spheres)" if rois.get("radius_mm") else "")
                     + f". Measures modelled: {', '.join(cfg.get('measures', []))}.")
        n_hyp = len(cfg.get("hypotheses", []))
        if cfg.get("n_permutations"):
            lines.append(f"Family-wise error: max-T over {cfg['n_permutations']} permutations "
                         f"(seed {longitudinal.parameters.get('random_state', 0)}), in the "
                         f"exploratory family of all features"
                         + (f" and in the confirmatory family of {n_hyp} a priori hypotheses"
                            if n_hyp else "") + ".")
        else:
            lines.append("No permutation test was run ([longitudinal] n_permutations = 0): "
                         "multiple comparisons are controlled by FDR only.")
    psychosocial = AnalysisFiles(group_dir, "psychosocial")
    if psychosocial.exists and psychosocial.names():
        cfg = psychosocial.parameters.get("psychosocial", {})
        lines.append(f"Psychosocial analyses at session {cfg.get('session')}: bootstrap with "
                     f"{cfg.get('n_boot')} resamples ({cfg.get('ci_method')} intervals, seed "
                     f"{psychosocial.parameters.get('random_state', 0)}); EBICglasso γ = "
                     f"{cfg.get('network', {}).get('gamma')}.")
    lines.append("Every number in this report comes from the tables under group/ beside it; each "
                 "folder's JSON sidecar records the parameters used.")
    return section.add(Text("\n\n".join(lines)))


def analysis_sections(group_dir: str | os.PathLike, name: str) -> list[Section]:
    """The report sections of one analysis, drawn from its result folder."""
    by_name = {a.name: a for a in ANALYSES}
    return resolve(by_name[name].report)(AnalysisFiles(group_dir, name))


def build_report(out_dir: str | os.PathLike) -> Path:
    """Write ``OUT/report.html`` from ``OUT/group/**`` and return its path.

    Raises
    ------
    BadInputError
        When ``OUT`` has no group-level results (``theramark run ... group`` has not run).
    """
    out_dir = Path(out_dir)
    group_dir = out_dir / "group"
    run_path = group_dir / "run.json"
    if not run_path.is_file():
        raise BadInputError(f"{out_dir}: no group-level results ({run_path} is missing); run "
                            f"'theramark run BIDS_DIR {out_dir} group' first")
    try:
        run = json.loads(run_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{run_path}: not valid JSON ({exc})") from None
    report = Report(run.get("title", "theramark report"),
                    subtitle=f"{run.get('dataset', '')} — {run.get('software', '')}",
                    generated=run.get("generated", ""))
    report.add(summary_section(group_dir))
    for analysis in ANALYSES:
        files = AnalysisFiles(group_dir, analysis.name)
        if files.exists:
            report.add(*resolve(analysis.report)(files))
    skipped = skipped_section(group_dir)
    if skipped is not None:
        report.add(skipped)
    report.add(methods_section(group_dir, run))
    return report.write(out_dir / "report.html")
