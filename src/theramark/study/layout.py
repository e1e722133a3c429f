"""Finding the runs of a study: raw BIDS + fMRIPrep derivatives.

A :class:`Run` gathers everything the participant level needs for one functional run: the
preprocessed BOLD in a template space, its brain mask, the confounds table and its JSON, the raw
events file for task runs, and the metadata merged along the BIDS inheritance principle (top-level
``task-<label>_bold.json`` → subject → session → file, then the fMRIPrep sidecar).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from theramark.errors import BadInputError
from theramark.study.entities import build_name, parse_entities, strip_prefix

DEFAULT_SPACE = "MNI152NLin2009cAsym"


@dataclass
class Run:
    """One functional run with every file the participant level reads.

    Attributes
    ----------
    participant_id : str
        ``sub-<label>``.
    session : str or None
        Session label without the ``ses-`` prefix.
    task : str
        Task label.
    run : int or None
        Run index.
    space, resolution : str or None
        Template space and ``res-`` label of the preprocessed BOLD.
    bold : Path
        Preprocessed BOLD (``desc-preproc_bold.nii.gz``).
    mask, confounds, confounds_json, raw_bold, events : Path or None
        Companion files; ``None`` when absent (validation reports it).
    metadata : dict
        Merged JSON metadata (RepetitionTime in s, SliceTiming in s, ...).
    """

    participant_id: str
    session: str | None
    task: str
    run: int | None
    space: str | None
    resolution: str | None
    bold: Path
    mask: Path | None = None
    confounds: Path | None = None
    confounds_json: Path | None = None
    raw_bold: Path | None = None
    events: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        return strip_prefix(self.participant_id, "sub")

    @property
    def t_r(self) -> float | None:
        """Repetition time in seconds from the merged sidecars, or None."""
        value = self.metadata.get("RepetitionTime")
        return float(value) if value is not None else None

    @property
    def entities(self) -> dict[str, str | None]:
        return {
            "sub": self.subject,
            "ses": self.session,
            "task": self.task,
            "run": None if self.run is None else str(self.run),
        }

    @property
    def prefix(self) -> str:
        """``sub-01_ses-pre_task-rest[_run-1]``: the stem every output of this run starts with."""
        return build_name(self.entities, "", "").rstrip("_")

    def output_dir(self, out_dir: str | Path) -> Path:
        """``OUT/sub-<label>[/ses-<label>]/func``."""
        path = Path(out_dir) / self.participant_id
        if self.session:
            path = path / f"ses-{self.session}"
        return path / "func"

    def key(self) -> tuple:
        return (self.participant_id, self.session or "", self.task, self.run or 0)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON sidecar as a dict; a clear error naming the file when it is not valid JSON."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _applies(sidecar: dict[str, str], target: dict[str, str]) -> bool:
    """A sidecar applies to a file when each of its entities matches the file's."""
    keys = [k for k in sidecar if k not in ("suffix", "extension")]
    return all(target.get(k) == sidecar[k] for k in keys) and sidecar["suffix"] == target["suffix"]


def inherited_metadata(bids_dir: Path, data_file: Path) -> dict[str, Any]:
    """Metadata for ``data_file`` merged by the BIDS inheritance principle.

    JSON files at the dataset root, the subject folder, the session folder and the data file's own
    folder are applied from the top down when their entities are a subset of the file's entities.
    """
    bids_dir = Path(bids_dir)
    target = parse_entities(data_file)
    folders = [bids_dir]
    relative = Path(data_file).parent.relative_to(bids_dir) if Path(data_file).is_relative_to(
        bids_dir) else Path()
    current = bids_dir
    for part in relative.parts:
        current = current / part
        folders.append(current)
    merged: dict[str, Any] = {}
    for folder in folders:
        for sidecar in sorted(folder.glob("*.json")):
            entities = parse_entities(sidecar)
            if _applies(entities, target):
                merged.update(read_json(sidecar))
    return merged


def _as_run_index(label: str | None) -> int | None:
    if label is None:
        return None
    try:
        return int(label)
    except ValueError:
        return None


def fmriprep_dir_for(bids_dir: str | Path, fmriprep_dir: str | Path | None = None) -> Path:
    """The fMRIPrep derivatives folder: the one given, else ``BIDS/derivatives/fmriprep``."""
    if fmriprep_dir is not None:
        return Path(fmriprep_dir)
    return Path(bids_dir) / "derivatives" / "fmriprep"


def _companion(folder: Path, entities: dict[str, str | None], suffix: str, extensions: Iterable[str],
               descs: Iterable[str | None]) -> Path | None:
    for desc in descs:
        for extension in extensions:
            candidate = folder / build_name({**entities, "desc": desc}, suffix, extension)
            if candidate.is_file():
                return candidate
    return None


def discover_runs(
    bids_dir: str | Path,
    fmriprep_dir: str | Path | None = None,
    space: str | None = DEFAULT_SPACE,
    participant_label: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
) -> list[Run]:
    """Every preprocessed functional run of a study, with its companion files.

    Parameters
    ----------
    bids_dir : path
        Raw BIDS dataset root.
    fmriprep_dir : path, optional
        fMRIPrep derivatives; defaults to ``BIDS/derivatives/fmriprep``.
    space : str or None
        Keep runs in this template space (``None`` keeps every space; validation flags mixtures).
    participant_label : iterable of str, optional
        Restrict to these participants (with or without ``sub-``).
    tasks : iterable of str, optional
        Restrict to these tasks.

    Returns
    -------
    list of Run
        Sorted by participant, session, task, run.
    """
    bids_dir = Path(bids_dir)
    deriv = fmriprep_dir_for(bids_dir, fmriprep_dir)
    if not bids_dir.is_dir():
        raise BadInputError(f"{bids_dir}: BIDS folder not found")
    if not deriv.is_dir():
        raise BadInputError(
            f"{deriv}: fMRIPrep derivatives folder not found (give it with --fmriprep-dir)"
        )
    wanted = None if participant_label is None else {strip_prefix(p, "sub") for p in participant_label}
    wanted_tasks = None if tasks is None else set(tasks)
    runs: list[Run] = []
    for bold in sorted(deriv.glob("sub-*/**/func/*_desc-preproc_bold.nii*")):
        ent = parse_entities(bold)
        if "sub" not in ent or "task" not in ent:
            continue
        if wanted is not None and ent["sub"] not in wanted:
            continue
        if wanted_tasks is not None and ent["task"] not in wanted_tasks:
            continue
        if space is not None and ent.get("space") != space:
            continue
        base = {k: ent.get(k) for k in ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo")}
        spaced = {**base, "space": ent.get("space"), "res": ent.get("res"), "den": ent.get("den")}
        folder = bold.parent
        mask = _companion(folder, spaced, "mask", (".nii.gz", ".nii"), ("brain",))
        confounds = _companion(folder, base, "timeseries", (".tsv",), ("confounds",))
        if confounds is None:  # fMRIPrep < 1.2 naming
            confounds = _companion(folder, base, "regressors", (".tsv",), ("confounds",))
        confounds_json = confounds.with_name(confounds.name[: -len(".tsv")] + ".json") if confounds else None
        raw_folder = bids_dir / bold.parent.relative_to(deriv)
        raw_bold = _companion(raw_folder, base, "bold", (".nii.gz", ".nii"), (None,))
        events = _companion(raw_folder, {**base, "echo": None}, "events", (".tsv",), (None,))
        metadata: dict[str, Any] = {}
        if raw_bold is not None:
            metadata.update(inherited_metadata(bids_dir, raw_bold))
        elif (raw_folder / build_name(base, "bold", ".json")).is_file():
            metadata.update(read_json(raw_folder / build_name(base, "bold", ".json")))
        for ext in (".json",):
            sidecar = bold.with_name(bold.name.split(".")[0] + ext)
            if sidecar.is_file():
                metadata.update(read_json(sidecar))
        runs.append(
            Run(
                participant_id=f"sub-{ent['sub']}",
                session=ent.get("ses"),
                task=ent["task"],
                run=_as_run_index(ent.get("run")),
                space=ent.get("space"),
                resolution=ent.get("res"),
                bold=bold,
                mask=mask,
                confounds=confounds,
                confounds_json=confounds_json if confounds_json and confounds_json.is_file() else None,
                raw_bold=raw_bold,
                events=events,
                metadata=metadata,
            )
        )
    runs.sort(key=Run.key)
    return runs
