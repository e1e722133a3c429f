"""The stage contract of the group level: analyses write result files, the report reads them.

A group-level analysis is a function ``run(ctx) -> AnalysisResult``. It computes; it draws nothing
and knows nothing of the report. :func:`write_analysis` writes what it returns under
``OUT/group/<analysis>/``: one TSV per table (Parquet for the features table) and
``<analysis>.json``, a sidecar with the parameters actually used, the software versions, the
tables written and the steps that could not run (with the reason). The report is built from those
files alone (:class:`AnalysisFiles` reads them), so ``theramark report OUT`` rebuilds it without
recomputing anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from theramark._io import provenance, read_tsv, write_json, write_tsv
from theramark.errors import BadInputError

#: Steps that could not run, for the whole group level (``OUT/group/skipped.tsv``).
SKIPPED_TABLE = "skipped.tsv"
SKIPPED_COLUMNS = ["analysis", "step", "reason"]
#: Columns holding labels, read back as text whatever they look like (sessions "1", "2"...).
LABEL_COLUMNS = ("participant_id", "session", "group", "arm", "contrast", "instrument", "feature",
                 "symptom", "node", "site", "task", "analysis", "step")


@dataclass
class AnalysisResult:
    """What one group-level analysis returns.

    Attributes
    ----------
    name : str
        The analysis name (its registry entry and its folder under ``OUT/group/``).
    tables : dict of str to DataFrame
        Result tables by name; each is written as ``<name>.tsv``. A table's ``attrs`` are not
        written: what the report needs goes into a table or into ``parameters``.
    parameters : dict
        The parameters the analysis actually used (resolved config, inferred design, seeds).
    summary : dict
        Facts the report states (counts, the chosen primary instrument...), JSON-serializable.
    skipped : list of (str, str)
        ``(step, reason)`` for every step that could not run.
    index_tables : set of str
        Tables whose index is written as their first column (matrices with row labels).
    """

    name: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    index_tables: set[str] = field(default_factory=set)

    def skip(self, step: str, reason: str) -> None:
        """Record that ``step`` could not run and why."""
        self.skipped.append((step, " ".join(str(reason).split())))

    def add(self, name: str, table: pd.DataFrame | None, index: bool = False) -> None:
        """Keep ``table`` under ``name`` (nothing when it is None)."""
        if table is None:
            return
        self.tables[name] = table
        if index:
            self.index_tables.add(name)


def write_analysis(group_dir: str | os.PathLike, result: AnalysisResult) -> Path:
    """Write an analysis's tables and sidecar under ``group_dir / result.name``; returns the folder.

    Tables of an earlier run that this run did not produce are removed, so the folder never
    mixes two runs.
    """
    folder = Path(group_dir) / result.name
    folder.mkdir(parents=True, exist_ok=True)
    previous = AnalysisFiles(group_dir, result.name).names()
    written = set()
    for name, table in result.tables.items():
        write_tsv(folder / f"{name}.tsv", table, index=name in result.index_tables)
        written.add(f"{name}.tsv")
    sidecar = {
        **provenance(result.parameters),
        "Analysis": result.name,
        "Tables": sorted(result.tables),
        "IndexTables": sorted(result.index_tables),
        "Summary": result.summary,
        "Skipped": [{"step": s, "reason": r} for s, r in result.skipped],
    }
    write_json(folder / f"{result.name}.json", sidecar)
    written.add(f"{result.name}.json")
    for name in previous:
        if name not in result.tables:
            (folder / f"{name}.tsv").unlink(missing_ok=True)
    return folder


def write_skipped(group_dir: str | os.PathLike, results: list[AnalysisResult]) -> Path:
    """``OUT/group/skipped.tsv``: every step of the run that could not run, with the reason."""
    rows = [{"analysis": r.name, "step": step, "reason": reason}
            for r in results for step, reason in r.skipped]
    return write_tsv(Path(group_dir) / SKIPPED_TABLE, pd.DataFrame(rows, columns=SKIPPED_COLUMNS))


class AnalysisFiles:
    """Read-only view of one analysis's result folder (what the report builds from).

    Parameters
    ----------
    group_dir : path-like
        ``OUT/group``.
    name : str
        The analysis name.
    """

    def __init__(self, group_dir: str | os.PathLike, name: str):
        self.group_dir = Path(group_dir)
        self.name = name
        self.folder = Path(group_dir) / name
        sidecar = self.folder / f"{name}.json"
        self.exists = sidecar.is_file()
        self._record: dict[str, Any] = {}
        if self.exists:
            try:
                self._record = json.loads(sidecar.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{sidecar}: not valid JSON ({exc})") from None
        self._cache: dict[str, pd.DataFrame | None] = {}

    def sibling(self, name: str) -> AnalysisFiles:
        """The files of another analysis of the same run (e.g. ROI coordinates for a figure)."""
        return AnalysisFiles(self.group_dir, name)

    def relative(self, name: str) -> str:
        """Path of table ``name`` relative to ``OUT/`` (for links from the report)."""
        return f"group/{self.name}/{name}.tsv"

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters the analysis used."""
        return self._record.get("Parameters", {})

    @property
    def summary(self) -> dict[str, Any]:
        return self._record.get("Summary", {})

    @property
    def skipped(self) -> list[dict[str, str]]:
        return self._record.get("Skipped", [])

    @property
    def software(self) -> dict[str, Any]:
        generated = self._record.get("GeneratedBy") or [{}]
        return generated[0]

    def names(self) -> list[str]:
        """Names of the tables the analysis wrote."""
        return list(self._record.get("Tables", []))

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.tsv"

    def has(self, name: str) -> bool:
        return name in self._record.get("Tables", []) and self.path(name).is_file()

    def table(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` (None when the analysis did not write it)."""
        if name not in self._cache:
            if not self.has(name):
                self._cache[name] = None
            else:
                index = name in self._record.get("IndexTables", [])
                path = self.path(name)
                with path.open(encoding="utf-8") as handle:
                    header = handle.readline().rstrip("\n").split("\t")
                labels = {c: str for c in header if c in LABEL_COLUMNS}
                if index:
                    labels[header[0]] = str
                frame = read_tsv(path, index_col=0 if index else None, dtype=labels)
                self._cache[name] = frame
        frame = self._cache[name]
        return None if frame is None else frame.copy()
