"""What ``theramark config init`` learns from a dataset, and the study.toml it writes.

:func:`infer_config` reads a BIDS folder (participants.tsv, ``phenotype/``, session folders, BOLD
file names, fMRIPrep derivatives) and returns the values it could infer, each with a note saying
where it came from: the groups and sessions of the study and the roles of its groups (through
:func:`theramark.study.design.infer_design`), the column holding the site, the rest tasks, the
per-session total columns of participants.tsv that belong to a known instrument, and, as comments,
what the dataset offers to the psychosocial analyses. :func:`write_study_config` writes every key
of :data:`theramark.config.SCHEMA` with its value and description, the inferred values filled in.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from theramark import __version__
from theramark._io import write_text
from theramark.config import format_toml, resolve
from theramark.errors import BadInputError
from theramark.study.design import infer_design
from theramark.study.entities import parse_entities
from theramark.study.participants import load_participants, read_phenotype_table

__all__ = [
    "InferredConfig",
    "find_sessions",
    "find_tasks",
    "infer_config",
    "match_instrument",
    "write_study_config",
]

_WIDE_COLUMN = re.compile(r"^(?P<stem>.+)_ses-(?P<session>[a-zA-Z0-9]+)$")
# Suffixes that name a total score: "RRS-sum", "BDI_total".
_TOTAL_SUFFIX = re.compile(r"[-_ .]?(total|sum|tot|score)$", re.IGNORECASE)
# Column names other than "group" and "site" that datasets use for the arm and the site.
_GROUP_COLUMNS = ("group", "arm", "condition", "treatment", "cohort")
_SITE_COLUMNS = ("site", "scanner", "center", "centre")
_EXAMPLES = 12


@dataclass
class InferredConfig:
    """Values inferred from a dataset for study.toml.

    Attributes
    ----------
    config : dict
        Table → {key: value}, only the inferred keys (the rest take their defaults).
    notes : dict
        Dotted table or key path (``"study.groups"``) → where the value came from, or what the
        dataset offers for it; written as comments by :func:`theramark.config.format_toml`.
    """

    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def set(self, path: str, value: Any, note: str | None = None) -> None:
        """Set ``table.key`` to ``value`` and, optionally, say where it came from."""
        table, key = path.split(".", 1)
        self.config.setdefault(table, {})[key] = value
        if note:
            self.note(path, note)

    def note(self, path: str, text: str) -> None:
        """Add a comment to the table or key ``path``."""
        self.notes[path] = f"{self.notes[path]} {text}" if path in self.notes else text


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def _listing(values: Iterable[str], limit: int = _EXAMPLES) -> str:
    values = list(values)
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def find_sessions(bids_dir: str | os.PathLike, participants: pd.DataFrame | None = None,
                  phenotype: Mapping[str, pd.DataFrame] | None = None,
                  fmriprep_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Session labels found in a dataset, by where they were found.

    Parameters
    ----------
    bids_dir : path
        BIDS root (``sub-*/ses-*`` folders).
    participants : DataFrame, optional
        participants.tsv (wide ``<measure>_ses-<label>`` columns).
    phenotype : mapping, optional
        Phenotype tables by file stem (their ``session`` column).
    fmriprep_dir : path, optional
        fMRIPrep derivatives (``sub-*/ses-*`` folders).

    Returns
    -------
    dict
        ``{"folders": [...], "phenotype": [...], "participants.tsv": [...]}``: labels without
        ``ses-``, in order of first appearance; a source with no session is left out.
    """
    found: dict[str, list[str]] = {}
    folders: list[str] = []
    for root in (Path(bids_dir), Path(fmriprep_dir) if fmriprep_dir else None):
        if root is not None and root.is_dir():
            folders += [p.name.removeprefix("ses-") for p in sorted(root.glob("sub-*/ses-*"))
                        if p.is_dir()]
    phenotype_sessions = [str(s) for table in (phenotype or {}).values() if "session" in table
                          for s in table["session"].dropna()]
    wide = [m["session"] for c in (participants.columns if participants is not None else [])
            if (m := _WIDE_COLUMN.match(str(c)))]
    for source, labels in (("folders", folders), ("phenotype", phenotype_sessions),
                           ("participants.tsv", wide)):
        if labels:
            found[source] = list(dict.fromkeys(labels))
    return found


def find_tasks(bids_dir: str | os.PathLike,
               fmriprep_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    """Tasks of the BOLD runs of a dataset (raw or fMRIPrep), and whether each has an events file.

    Returns
    -------
    dict
        Task label → ``True`` when an ``*_task-<label>*_events.tsv`` exists, in sorted order.
    """
    tasks: dict[str, bool] = {}
    roots = [Path(bids_dir)] + ([Path(fmriprep_dir)] if fmriprep_dir else [])
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.glob("sub-*/**/*_bold.nii*"):
            task = parse_entities(path).get("task")
            if task:
                tasks.setdefault(task, False)
        for path in list(root.glob("sub-*/**/*_events.tsv")) + list(root.glob("*_events.tsv")):
            task = parse_entities(path).get("task")
            if task in tasks:
                tasks[task] = True
    return dict(sorted(tasks.items()))


@cache
def _instrument_names() -> tuple[dict[str, str], dict[str, str]]:
    """Exact names (id, abbreviations) and short names (without version or length) → instrument id.

    Abbreviations are read from the parentheses of an instrument's name (``(BDI-II)``,
    ``(HAMD-17 / HDRS-17)``); a short name drops what follows the first separator and trailing
    digits (``BDI-II`` → ``bdi``, ``hamd17`` → ``hamd``). A short name shared by two instruments
    (``ucla``) is left out.
    """
    from theramark.scales.definitions import available_instruments, load_instrument

    exact: dict[str, str] = {}
    short: dict[str, set[str]] = {}
    for ident in available_instruments():
        names = [ident]
        for group in re.findall(r"\(([^)]*)\)", load_instrument(ident).name):
            names += [t.strip() for t in re.split(r"[/,]", group)
                      if re.search(r"[A-Z]", t) and " " not in t.strip()]
        for name in names:
            exact.setdefault(_squash(name), ident)
            base = re.sub(r"\d+$", "", _squash(re.split(r"[-_ ]", name.strip())[0]))
            if base:
                short.setdefault(base, set()).add(ident)
            stripped = re.sub(r"\d+$", "", _squash(name))
            if stripped:
                short.setdefault(stripped, set()).add(ident)
    unique = {name: next(iter(ids)) for name, ids in short.items() if len(ids) == 1}
    return exact, unique


def match_instrument(stem: str) -> str | None:
    """The instrument id a column stem names (``BDI`` → ``bdi2``, ``RRS-sum`` → ``rrs``), or None.

    The stem, with or without a total-naming suffix (``-sum``, ``_total``), is compared without
    case or separators to every instrument's id and abbreviations, then to their short forms.
    """
    exact, short = _instrument_names()
    forms = [_squash(stem), _squash(_TOTAL_SUFFIX.sub("", stem))]
    for names in (exact, short):
        hits = {names[f] for f in forms if f in names}
        if len(hits) == 1:
            return hits.pop()
    return None


def _numeric(values: pd.Series) -> bool:
    present = values.dropna()
    return len(present) > 0 and bool(pd.to_numeric(present, errors="coerce").notna().all())


def _first(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {str(c).lower(): str(c) for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _infer_columns(result: InferredConfig, participants: pd.DataFrame | None) -> tuple[str, str]:
    columns = list(participants.columns) if participants is not None else []
    group_column = _first(columns, _GROUP_COLUMNS)
    if group_column:
        result.set("study.group_column", group_column, f"found in participants.tsv: '{group_column}'.")
    else:
        result.note("study.group_column", "participants.tsv has no group column: set it, or add "
                    "a 'group' column, before running the group level.")
    site_column = _first(columns, _SITE_COLUMNS)
    if site_column:
        sites = [str(s) for s in dict.fromkeys(participants[site_column].dropna())]
        result.set("study.site_column", site_column,
                   f"found in participants.tsv: '{site_column}' ({len(sites)} sites: {_listing(sites)}).")
    else:
        result.note("study.site_column", "participants.tsv has no site column: one site (no "
                    "harmonization).")
    return group_column or "group", site_column or "site"


def _infer_design(result: InferredConfig, participants: pd.DataFrame | None,
                  sessions: dict[str, list[str]], group_column: str, source: str) -> None:
    labels = [s for found in sessions.values() for s in found]
    design = infer_design(participants, labels, {"group_column": group_column}, source=source)
    where = "; ".join(f"{place}: {', '.join(found)}" for place, found in sessions.items())
    for key in ("groups", "sessions", "baseline", "endpoint", "reference_group", "control_group"):
        value = getattr(design, key)
        rule = design.sources.get(key, "")
        text = f"inferred ({rule})." if rule else "inferred."
        if key == "sessions":
            text += f" Found in {where}." if where else " No session found."
        if value in ("", []) and key in ("reference_group", "control_group"):
            text += " Set it if the study has one."
        result.set(f"study.{key}", value, text)


def _infer_tasks(result: InferredConfig, bids_dir: Path, fmriprep_dir: Path | None) -> None:
    tasks = find_tasks(bids_dir, fmriprep_dir)
    if not tasks:
        result.note("participant.tasks", "no BOLD run (*_bold.nii*) found under the dataset or "
                    "its fMRIPrep derivatives.")
        return
    result.note("participant.tasks", "tasks found: " + ", ".join(
        f"{t} ({'events' if events else 'no events'})" for t, events in tasks.items()) + ".")
    rest = [t for t in tasks if "rest" in t.lower()]
    if rest:
        result.set("participant.rest_tasks", rest, "tasks named like rest in the BOLD file names.")
    with_events = [t for t, events in tasks.items() if events and t not in rest]
    if with_events:
        result.note("glm.contrasts", f"tasks with events files: {', '.join(with_events)}; declare "
                    "their contrasts here (built-in ones exist for mid).")


def _infer_scales(result: InferredConfig, bids_dir: Path, participants: pd.DataFrame | None
                  ) -> dict[str, str]:
    """Instruments with item tables and wide total columns; returns instrument id → phenotype file."""
    from theramark.scales.definitions import instrument_library
    from theramark.scales.pipeline import find_instrument_tables

    # the study's own questionnaires (code/theramark/instruments/*.json) are found too
    library = instrument_library(bids_dir=bids_dir)
    tables = find_instrument_tables(bids_dir / "phenotype", known=library.ids())
    if tables:
        result.note("scales", "instruments with item responses in phenotype/: " + ", ".join(
            f"{ident} ({path.name})" for ident, path in tables.items()) + ".")
    if participants is None:
        return {ident: path.stem for ident, path in tables.items()}
    stems: dict[str, list[str]] = {}
    for column in participants.columns:
        match = _WIDE_COLUMN.match(str(column))
        if match:
            stems.setdefault(match["stem"], []).append(str(column))
    totals: dict[str, str] = {}
    unmatched = []
    for stem, columns in stems.items():
        ident = match_instrument(stem)
        if ident and ident not in totals and ident not in tables and all(
                _numeric(participants[c]) for c in columns):
            totals[ident] = stem
        else:
            unmatched.append(stem)
    if totals:
        result.set("scales.totals", totals, "per-session total columns of participants.tsv whose "
                   "name matches an instrument: " + "; ".join(
                       f"{ident} <- {', '.join(stems[stem])}" for ident, stem in totals.items()) + ".")
    if unmatched:
        result.note("scales.totals", "Per-session columns not matched to an instrument: "
                    f"{_listing(unmatched)}.")
    return {ident: path.stem for ident, path in tables.items()}


def _instrument_scores(ident: str, bids_dir: Path | None = None) -> list[str]:
    from theramark.scales.definitions import instrument_library

    instrument = instrument_library(bids_dir=bids_dir).get(ident)
    return ["total", *(s.name for s in instrument.subscales)]


def _infer_variables(result: InferredConfig, participants: pd.DataFrame | None,
                     phenotype: Mapping[str, pd.DataFrame], instruments: Mapping[str, str],
                     totals: Mapping[str, str], design_columns: Sequence[str],
                     bids_dir: Path | None = None) -> None:
    candidates: list[str] = []
    for ident in [*instruments, *totals]:
        names = _instrument_scores(ident, bids_dir) if ident in instruments else ["total"]
        candidates += [f"{ident}.{name}" for name in names]
    if participants is not None:
        candidates += [str(c) for c in participants.columns
                       if c != "participant_id" and c not in design_columns
                       and not _WIDE_COLUMN.match(str(c))]
    item = re.compile(r"^[a-z0-9_]+_\d+$")
    for stem, table in phenotype.items():
        if stem == "ema":  # prompts, not participant-level variables: see [psychosocial.ema]
            continue
        candidates += [f"{stem}.{c}" for c in table.columns
                       if c not in ("participant_id", "session") and not item.match(str(c))]
    if candidates:
        result.note("psychosocial.variables", "sources found in the dataset: "
                    f"{_listing(candidates, 40)}. Declare a label for each variable an analysis "
                    "uses, e.g. {shaps = \"shaps.total\"}.")
    ema = phenotype.get("ema")
    if ema is not None:
        columns = [c for c in ema.columns if c not in ("participant_id", "session")]
        result.note("psychosocial.ema", f"phenotype/ema.tsv found, columns: {_listing(columns)}.")


def _dataset_name(bids: Path) -> str:
    path = bids / "dataset_description.json"
    if not path.is_file():
        return ""
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from None
    name = description.get("Name") if isinstance(description, dict) else None
    return name.strip() if isinstance(name, str) else ""


def infer_config(bids_dir: str | os.PathLike, fmriprep_dir: str | os.PathLike | None = None,
                 source: str = "study.toml") -> InferredConfig:
    """Infer study.toml values from a BIDS dataset.

    Parameters
    ----------
    bids_dir : path
        BIDS root: ``participants.tsv``, ``phenotype/``, ``sub-*/ses-*`` folders, BOLD runs.
    fmriprep_dir : path, optional
        fMRIPrep derivatives (default ``BIDS_DIR/derivatives/fmriprep`` when it exists).
    source : str
        Name of the config file being written, for messages.

    Returns
    -------
    InferredConfig
        ``[study]`` groups, sessions, baseline, endpoint, reference and control groups, group and
        site columns; ``[participant] rest_tasks``; ``[scales] totals``; and notes on the tasks,
        instruments and candidate psychosocial variables found.

    Raises
    ------
    BadInputError
        If ``bids_dir`` is not a folder, or participants.tsv or a phenotype table is malformed.
    """
    bids = Path(bids_dir)
    if not bids.is_dir():
        raise BadInputError(f"{bids}: not a folder (expected a BIDS dataset)")
    fmriprep = Path(fmriprep_dir) if fmriprep_dir else bids / "derivatives" / "fmriprep"
    fmriprep = fmriprep if fmriprep.is_dir() else None
    result = InferredConfig()
    name = _dataset_name(bids)
    if name:
        result.set("study.title", name, "the Name of dataset_description.json.")
    participants = load_participants(bids) if (bids / "participants.tsv").is_file() else None
    if participants is None:
        result.note("study", "no participants.tsv: groups and sites cannot be inferred.")
    phenotype_dir = bids / "phenotype"
    phenotype = {p.stem: read_phenotype_table(p) for p in sorted(phenotype_dir.glob("*.tsv"))}
    group_column, site_column = _infer_columns(result, participants)
    sessions = find_sessions(bids, participants, phenotype, fmriprep)
    _infer_design(result, participants, sessions, group_column, source)
    _infer_tasks(result, bids, fmriprep)
    instruments = _infer_scales(result, bids, participants)
    _infer_variables(result, participants, phenotype, instruments,
                     result.config.get("scales", {}).get("totals", {}), (group_column, site_column),
                     bids)
    return result


def write_study_config(bids_dir: str | os.PathLike, path: str | os.PathLike, force: bool = False,
                       fmriprep_dir: str | os.PathLike | None = None) -> Path:
    """Write a commented study.toml for a dataset: every key, inferred values filled in.

    Parameters
    ----------
    bids_dir : path
        BIDS root.
    path : path
        The file to write.
    force : bool
        Overwrite ``path`` when it exists.
    fmriprep_dir : path, optional
        fMRIPrep derivatives (default ``BIDS_DIR/derivatives/fmriprep``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BadInputError
        If ``path`` exists and ``force`` is false, or the dataset cannot be read.
    """
    path = Path(path)
    if path.exists() and not force:
        raise BadInputError(f"{path}: already exists; use --force to overwrite it")
    inferred = infer_config(bids_dir, fmriprep_dir, source=str(path))
    dataset = inferred.config.get("study", {}).get("title") or Path(bids_dir).resolve().name
    header = (f"study.toml for {dataset}, written by theramark {__version__} config init.\n"
              "Every key is listed with its value and what it means; values inferred from the dataset "
              "say where they came from. Check them, then run: theramark run BIDS_DIR OUT_DIR "
              f"participant --config {path.name}")
    text = format_toml(resolve(inferred.config), notes=inferred.notes, header=header)
    return write_text(path, text)
