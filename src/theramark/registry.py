"""One registry of measures and group-level analyses.

A measure has one name, used alike in study.toml (``[connectivity] measures``,
``[longitudinal] measures``), in participant-level file names (the BEP017 ``meas-`` entity of
connectivity matrices), in feature keys (``<measure>|<task>|<feature>``) and in the report. A
group-level analysis is one function and one entry of :data:`ANALYSES`; the group level runs the
entries in the order listed and the report draws each one's section from its result folder.

To add a connectivity measure: write the function that computes its matrix (in
:mod:`theramark.imaging.measures`), add a :class:`Measure` here with ``kind="relmat"`` and
``compute`` naming it; the config accepts its name, the participant level writes
``*_meas-<name>_relmat.dense.tsv``, the features table reads it back and the group statistics
model it. To add a group analysis: write ``run(ctx) -> AnalysisResult`` and a report builder
``sections(files) -> list[Section]``, and add an :class:`Analysis` entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from theramark.errors import BadInputError


@dataclass(frozen=True)
class Measure:
    """A participant-level measure.

    Attributes
    ----------
    name : str
        The one name (config value, ``meas-`` entity, feature-key prefix, report label).
    label : str
        What it is, in words, for the report and the docs.
    kind : {"relmat", "roi", "qc", "state"}
        ``relmat``: a region × region matrix of a rest run (``*_meas-<name>_relmat.dense.tsv``);
        ``roi``: one value per ROI and contrast of a task run; ``qc``: a run's QC metrics;
        ``state``: metrics of a group-fitted model of the runs (the ``dynamics`` analysis hands
        them to the features table).
    compute : str
        ``"module:function"`` computing a ``relmat`` measure from a rest run's signals
        (:mod:`theramark.imaging.measures`); those are the measures ``[connectivity] measures``
        can turn on.
    """

    name: str
    label: str
    kind: str
    compute: str = ""


MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("qc", "run quality-control metrics (framewise displacement, DVARS, tSNR)", "qc"),
    Measure("pearsoncorrelation", "Pearson correlation, Fisher z", "relmat",
            "theramark.imaging.measures:pearson_correlation"),
    Measure("partialcorrelation", "partial correlation, Fisher z", "relmat",
            "theramark.imaging.measures:partial_correlation"),
    Measure("dfcvariability", "dynamic FC variability: SD over sliding windows of Fisher z",
            "relmat", "theramark.imaging.measures:dfc_variability"),
    Measure("activation", "task GLM contrast estimate per ROI (beta units)", "roi"),
    Measure("psc", "task GLM contrast in percent signal change per ROI", "roi"),
    Measure("dfcstates", "dynamic-FC state metrics of rest runs: fractional occupancy, dwell time "
                         "(s), switching rate (states fitted on the whole study)", "state"),
)}

#: Measures of the participant level's ``[connectivity] measures`` (rest runs).
CONNECTIVITY_MEASURES: tuple[str, ...] = tuple(m.name for m in MEASURES.values() if m.compute)
#: Measures that enter the group × time models by default.
MODELLED_MEASURES: tuple[str, ...] = tuple(m for m in MEASURES if m != "qc")


def measure(name: str) -> Measure:
    """The registered measure ``name``; an unknown name is an error listing the known ones."""
    if name not in MEASURES:
        import difflib

        close = difflib.get_close_matches(name, list(MEASURES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BadInputError(f"unknown measure {name!r}{hint}; measures are "
                            f"{', '.join(MEASURES)}")
    return MEASURES[name]


def relmat_suffix(name: str) -> str:
    """File suffix of a connectivity measure: ``meas-<name>_relmat.dense.tsv`` (BEP017)."""
    return f"meas-{measure(name).name}_relmat.dense.tsv"


@dataclass(frozen=True)
class Analysis:
    """A group-level analysis.

    Attributes
    ----------
    name : str
        Its folder under ``OUT/group/`` and its name in ``skipped.tsv``.
    title : str
        Progress and report wording.
    run : str
        ``"module:function"``: ``function(ctx) -> AnalysisResult``.
    report : str
        ``"module:function"``: ``function(files: AnalysisFiles) -> list[Section]``.
    """

    name: str
    title: str
    run: str
    report: str


#: Group-level analyses in the order they run (each may use what the ones before it produced).
ANALYSES: tuple[Analysis, ...] = (
    Analysis("qc", "quality control", "theramark.imaging.group:run_qc",
             "theramark.report.sections.imaging:qc_sections"),
    Analysis("study", "study summary", "theramark.study.summary:run",
             "theramark.report.sections.study:sections"),
    Analysis("imaging", "imaging summaries", "theramark.imaging.group:run_summaries",
             "theramark.report.sections.imaging:imaging_sections"),
    Analysis("scales", "questionnaires", "theramark.scales.pipeline:run",
             "theramark.report.sections.scales:sections"),
    Analysis("clinical", "symptom change by arm", "theramark.group.clinical:run",
             "theramark.report.sections.clinical:sections"),
    Analysis("dynamics", "dynamic-FC states", "theramark.dynamics.pipeline:run",
             "theramark.report.sections.dynamics:sections"),
    Analysis("longitudinal", "imaging group statistics", "theramark.group.pipeline:run",
             "theramark.report.sections.group:sections"),
    Analysis("precedence", "temporal precedence (cross-lagged panel models)",
             "theramark.dynamics.pipeline:run_precedence",
             "theramark.report.sections.dynamics:precedence_sections"),
    Analysis("predict", "response prediction", "theramark.predict.pipeline:run",
             "theramark.report.sections.predict:sections"),
    Analysis("psychosocial", "psychosocial analyses", "theramark.psychosocial.pipeline:run",
             "theramark.report.sections.psychosocial:sections"),
)


def resolve(target: str) -> Callable[..., Any]:
    """Import ``"module:function"``."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
