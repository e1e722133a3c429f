"""Finding the runs of a study: raw BIDS + fMRIPrep derivatives.

A :class:`Run` gathers everything the participant level needs for one functional run: the
preprocessed BOLD in a template space, its brain mask, the confounds table and its JSON, the raw
events file for task runs, and the metadata merged along the BIDS inheritance principle (top-level
``task-<label>_bold.json`` → subject → session → file, then the fMRIPrep sidecar).

A run's outputs are named after every entity that tells it apart from the other runs of its
participant, session and task (:data:`~theramark.study.entities.RUN_ENTITIES`: ``acq``, ``ce``,
``rec``, ``dir``, ``run``, ``echo``, ``part``, ``chunk``; and ``space``, ``res``, ``den`` where
runs that agree on everything else differ by them). Two inputs that would still write the same
outputs (a ``.nii`` beside a ``.nii.gz`` of one run, ``run-1`` beside ``run-01``) are an error
(:func:`find_collisions`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from theramark.errors import BadInputError
from theramark.study.entities import (
    ENTITY_ORDER,
    RUN_ENTITIES,
    SPACE_ENTITIES,
    build_name,
    extra_entities,
    parse_entities,
    strip_prefix,
)

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
    labels : dict
        The other :data:`~theramark.study.entities.RUN_ENTITIES` of the BOLD name (``{"acq":
        "b"}``), and ``run`` when its label is not an integer.
    density : str or None
        ``den-`` label of the preprocessed BOLD.
    named : tuple of str
        Which of ``space``, ``res``, ``den`` are part of the output names: those by which runs
        that agree on everything else differ (set by :func:`discover_runs`).
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
    labels: dict[str, str] = field(default_factory=dict)
    density: str | None = None
    named: tuple[str, ...] = ()

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
        """The entities of the run's output names (``sub, ses, task``, then those that tell it apart)."""
        entities: dict[str, str | None] = {"sub": self.subject, "ses": self.session,
                                           "task": self.task, **self.labels}
        if self.run is not None:
            entities["run"] = str(self.run)
        spaces = dict(zip(SPACE_ENTITIES, (self.space, self.resolution, self.density), strict=True))
        entities.update({key: spaces[key] for key in self.named})
        return entities

    @property
    def extra_entities(self) -> str:
        """The output name's entities besides sub, ses, task and run: ``acq-b`` (``""`` if none)."""
        return extra_entities(self.entities)

    @property
    def prefix(self) -> str:
        """``sub-01_ses-pre_task-rest[_acq-b][_run-1]...``: the stem every output of this run starts with."""
        return build_name(self.entities, "", "").rstrip("_")

    def output_dir(self, out_dir: str | Path) -> Path:
        """``OUT/sub-<label>[/ses-<label>]/func``."""
        path = Path(out_dir) / self.participant_id
        if self.session:
            path = path / f"ses-{self.session}"
        return path / "func"

    def key(self) -> tuple:
        """Sort key: participant, session, task, then the other entities (indices as numbers)."""
        entities = self.entities
        others = tuple((position, _sortable(entities[name]))
                       for position, name in enumerate(ENTITY_ORDER)
                       if name not in ("sub", "ses", "task") and entities.get(name) is not None)
        return (self.participant_id, self.session or "", self.task, others)


def _sortable(label: str) -> tuple[int, int, str]:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def find_collisions(runs: Iterable[Run]) -> list[tuple[Path, Path]]:
    """Pairs of runs whose outputs would have the same names (one of them would overwrite the other).

    Two preprocessed BOLD files collide when they name the same run: a ``.nii`` beside a
    ``.nii.gz``, ``run-1`` beside ``run-01``, or names that differ only by an entity that does not
    tell runs apart (``desc``, or one theramark does not know).

    Parameters
    ----------
    runs : iterable of Run
        As :func:`discover_runs` returns them (with ``check_collisions=False`` to see them all).

    Returns
    -------
    list of (Path, Path)
        ``(first BOLD, colliding BOLD)`` for each run whose outputs another run already names, in
        the order of ``runs``; empty when every run has outputs of its own.
    """
    first: dict[Path, Path] = {}
    pairs = []
    for run in runs:
        target = run.output_dir(Path()) / run.prefix
        if target in first:
            pairs.append((first[target], run.bold))
        else:
            first[target] = run.bold
    return pairs


def _name_spaces(runs: list[Run]) -> None:
    """Set ``Run.named``: the space entities by which runs that agree on the rest differ."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        key = (run.participant_id, run.session, run.task, run.run, tuple(sorted(run.labels.items())))
        groups.setdefault(key, []).append(run)
    for group in groups.values():
        values = [(r.space, r.resolution, r.density) for r in group]
        named = tuple(name for i, name in enumerate(SPACE_ENTITIES)
                      if len({v[i] for v in values}) > 1)
        for run in group:
            run.named = named


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
    check_collisions: bool = True,
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
    check_collisions : bool
        Refuse runs that would write the same outputs (:func:`find_collisions`); ``False`` returns
        them all (for the validator, which lists the collisions among other problems).

    Returns
    -------
    list of Run
        Sorted by participant, session, task and the other entities (:meth:`Run.key`).

    Raises
    ------
    BadInputError
        A folder is missing, or (with ``check_collisions``) two BOLD files would write the same
        outputs: the message names both.
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
        base = {k: ent.get(k) for k in ("sub", "ses", "task", *RUN_ENTITIES)}
        spaced = {**base, **{k: ent.get(k) for k in SPACE_ENTITIES}}
        folder = bold.parent
        mask = _companion(folder, spaced, "mask", (".nii.gz", ".nii"), ("brain",))
        confounds = None
        # one confounds table serves every echo and part of a run (fMRIPrep writes it once)
        for entities in (base, {**base, "echo": None, "part": None}):
            confounds = confounds or _companion(folder, entities, "timeseries", (".tsv",),
                                                ("confounds",))
            # fMRIPrep < 1.2 naming
            confounds = confounds or _companion(folder, entities, "regressors", (".tsv",),
                                                ("confounds",))
        confounds_json = confounds.with_name(confounds.name[: -len(".tsv")] + ".json") if confounds else None
        raw_folder = bids_dir / bold.parent.relative_to(deriv)
        raw_bold = _companion(raw_folder, base, "bold", (".nii.gz", ".nii"), (None,))
        events = _companion(raw_folder, {**base, "echo": None, "part": None}, "events", (".tsv",),
                            (None,))
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
                density=ent.get("den"),
                labels={k: ent[k] for k in RUN_ENTITIES if ent.get(k) is not None
                        and (k != "run" or _as_run_index(ent[k]) is None)},
                bold=bold,
                mask=mask,
                confounds=confounds,
                confounds_json=confounds_json if confounds_json and confounds_json.is_file() else None,
                raw_bold=raw_bold,
                events=events,
                metadata=metadata,
            )
        )
    _name_spaces(runs)
    runs.sort(key=Run.key)
    if check_collisions:
        collisions = find_collisions(runs)
        if collisions:
            first, second = collisions[0]
            more = f" (and {len(collisions) - 1} more such pair(s))" if len(collisions) > 1 else ""
            raise BadInputError(
                f"{first} and {second} would write the same outputs "
                f"({_prefix_of(runs, second)}_*): they name the same run; keep one of them{more}")
    return runs


def _prefix_of(runs: list[Run], bold: Path) -> str:
    return next(run.prefix for run in runs if run.bold == bold)
