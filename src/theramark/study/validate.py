"""Validation of a study in one pass: every problem, with its path, in one table.

The validator runs the checks the participant level would fail on, through the same functions,
so that a study it passes does not then fail run by run:

- always: ``participants.tsv`` (present, parseable, every row as long as the header, unique IDs,
  a group and a site for every participant), phenotype tables, and for each run the participant
  level would process (``[participant] space`` and ``tasks`` of study.toml): brain mask and
  confounds present (with a hint for near-miss names), NIfTI headers readable, the header's TR
  against the sidecars' RepetitionTime, the mask on the BOLD grid, the confounds table against the
  denoising strategy (:func:`theramark.imaging.denoise.nuisance_design`) and QC
  (:func:`theramark.imaging.qc.run_qc`), the events of task runs
  (:func:`theramark.imaging.glm.read_events`), and runs that would write the same outputs
  (:func:`theramark.study.layout.find_collisions`);
- unless ``check_data`` is off: every image is streamed to catch truncated or corrupt files;
- with ``deep``: the BOLD is read inside its mask as the participant level reads it
  (:func:`theramark.imaging._image.load_masked_bold`: NaN or infinite voxels, constant data, an
  empty mask) and the regions of interest are placed in the mask.

Sessions missing for a participant compared with the others of the same group are warnings.
Every message is one line; the path column names the file.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from theramark._inflate import INFLATE_ERRORS, stored_bytes
from theramark.errors import BadInputError, one_line
from theramark.study.entities import RUN_ENTITIES, build_name, parse_entities
from theramark.study.layout import Run, discover_runs, find_collisions, fmriprep_dir_for
from theramark.study.participants import load_participants, read_phenotype_table

ERROR = "error"
WARNING = "warning"

#: Header and sidecar repetition times further apart than this fraction are an error (closer,
#: a warning): the participant level uses the sidecar's.
TR_TOLERANCE = 0.01


@dataclass(frozen=True)
class Problem:
    severity: str
    path: str
    message: str


def problems_from_error(
    exc: BadInputError, paths: Sequence[str | os.PathLike | None], severity: str = ERROR,
) -> list[Problem]:
    """One-line :class:`Problem` s from an error raised by a reader of the participant level.

    The error's message starts with the file it names (``"<path>: ..."``); that prefix becomes the
    problem's path when it is one of ``paths`` or an existing file (else the first of ``paths``
    is the problem's path), and each of the error's listed problems becomes a problem of its own.

    Parameters
    ----------
    exc : BadInputError
    paths : sequence of path or None
        The files the failed call read, the first being the default.
    severity : str

    Returns
    -------
    list of Problem
    """
    candidates = [str(p) for p in paths if p is not None]
    summary = str(exc).split("\n", 1)[0]
    where = candidates[0] if candidates else ""
    named, _, rest = summary.partition(": ")
    if rest and named not in candidates and Path(named).exists():
        candidates.insert(0, named)  # another file than those read directly (a JSON sidecar)
    for candidate in sorted(candidates, key=len, reverse=True):
        if summary.startswith(candidate + ": "):
            where, summary = candidate, summary[len(candidate) + 2:]
            break
    details = exc.problems or [""]
    return [Problem(severity, where, one_line(f"{summary}: {detail}" if detail else summary))
            for detail in details]


def _inspect_nifti(
    path: str | os.PathLike, what: str, ndim: int | None, check_data: bool,
) -> tuple[nib.spatialimages.SpatialImage | None, str | None]:
    """The opened image and ``None``, or ``None`` and why the file cannot be used (no path)."""
    path = Path(path)
    if not path.is_file():
        return None, f"{what} not found"
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt headers
        return None, f"unreadable NIfTI header ({type(exc).__name__}: {one_line(exc)})"
    if ndim is not None and len(img.shape) != ndim:
        return None, f"expected a {ndim}D image, got shape {img.shape}"
    if not check_data:
        return img, None
    # The loaded header's vox_offset is reset to 0 by nibabel; the array proxy keeps the file's.
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    expected = offset + int(np.prod(img.shape)) * img.header.get_data_dtype().itemsize
    try:
        if path.name.endswith(".gz"):  # inflated as the participant level reads it (ISA-L or zlib)
            size = sum(len(piece) for piece in stored_bytes(path))
        else:
            size = path.stat().st_size
    except (OSError, *INFLATE_ERRORS) as exc:
        return None, f"corrupt or truncated file ({type(exc).__name__}: {one_line(exc)})"
    if size < expected:
        return None, f"truncated: {size} bytes of data where the header needs {expected}"
    return img, None


def nifti_problem(path: str | os.PathLike, check_data: bool = True, *,
                  ndim: int | None = None) -> str | None:
    """Why a NIfTI file cannot be used, or None when it is fine.

    The header is parsed, then (with ``check_data``) the data block is streamed to check that the
    file holds every byte its header promises: a truncated download or a corrupt gzip stream is
    caught without building the array in memory. :func:`open_nifti` makes the same checks and
    raises instead.

    Parameters
    ----------
    path : path-like
    check_data : bool
        Stream the data block (slower, thorough); otherwise only the header is read.
    ndim : int, optional
        Required number of dimensions (4 for a BOLD run).

    Returns
    -------
    str or None
        The problem, without the path (the caller reports it beside the file).
    """
    return _inspect_nifti(path, "NIfTI image", ndim, check_data)[1]


def open_nifti(
    path: str | os.PathLike, *, what: str = "NIfTI image", ndim: int | None = None,
    check_data: bool = False,
) -> nib.spatialimages.SpatialImage:
    """Open (not read) a NIfTI image, with the checks of :func:`nifti_problem`.

    Parameters
    ----------
    path : path-like
    what : str
        What the image is, for the message of a missing file (``"BOLD image"``, ``"brain mask"``).
    ndim : int, optional
        Required number of dimensions.
    check_data : bool
        Also stream the data block to catch truncated or corrupt files (off by default: readers
        that stream the data anyway, such as :func:`theramark.imaging._image.read_masked`, catch
        those while reading).

    Returns
    -------
    nibabel image
        Opened from the file (data not loaded).

    Raises
    ------
    BadInputError
        ``"<path>: <problem>"``: missing, unreadable header, wrong number of dimensions, truncated.
    """
    img, problem = _inspect_nifti(path, what, ndim, check_data)
    if problem is not None:
        raise BadInputError(f"{path}: {problem}")
    return img


#: Affines closer than this (mm, elementwise) are the same grid.
AFFINE_TOLERANCE = 1e-3


def same_grid(img: nib.spatialimages.SpatialImage, reference: nib.spatialimages.SpatialImage) -> bool:
    """Whether two images share a voxel grid (first three dimensions and affine)."""
    return tuple(img.shape[:3]) == tuple(reference.shape[:3]) and bool(
        np.allclose(img.affine, reference.affine, atol=AFFINE_TOLERANCE))


def header_t_r(img: nib.Nifti1Image) -> float | None:
    """Repetition time in seconds from a NIfTI header (respecting ``xyzt_units``)."""
    if len(img.shape) < 4:
        return None
    zoom = float(img.header.get_zooms()[3])
    unit = img.header.get_xyzt_units()[1]
    if unit == "msec":
        zoom /= 1000.0
    elif unit == "usec":
        zoom /= 1e6
    return zoom


def repetition_time(metadata: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The sidecars' ``RepetitionTime`` in seconds, or ``None`` and why the participant level cannot
    use it (missing, not a number, not positive)."""
    value = metadata.get("RepetitionTime")
    if value is None:
        return None, "RepetitionTime missing from every sidecar"
    try:
        t_r = float(value)
    except (TypeError, ValueError):
        t_r = float("nan")
    if isinstance(value, bool) or not np.isfinite(t_r) or t_r <= 0:
        return None, f"RepetitionTime {value!r} in the sidecars is not a positive number of seconds"
    return t_r, None


def t_r_problem(header: float | None, sidecar: float | None) -> tuple[str, str] | None:
    """Severity and message when a NIfTI header's TR disagrees with the sidecar's RepetitionTime.

    The participant level takes the repetition time from the sidecars (BIDS makes them the
    reference); the message says so. Further apart than :data:`TR_TOLERANCE` (1%) is an error,
    closer (but more than 1 ms) a warning. A header without a TR (0) is not compared.

    Returns
    -------
    (severity, message) or None
    """
    if header is None or sidecar is None or not header > 0 or not sidecar > 0:
        return None
    if abs(header - sidecar) <= 1e-3:
        return None
    relative = abs(header - sidecar) / sidecar
    message = (f"TR in the header ({header:g} s) differs from RepetitionTime in the sidecar "
               f"({sidecar:g} s) by {100 * relative:.2g}%; the participant level uses the "
               f"sidecar's {sidecar:g} s")
    if relative > TR_TOLERANCE:
        return ERROR, message + f" (more than {100 * TR_TOLERANCE:g}% apart: correct whichever is wrong)"
    return WARNING, message


# --------------------------------------------------------------------------------------------
# Near-miss names
# --------------------------------------------------------------------------------------------

#: Entities that identify a run in fMRIPrep's names of its companion files.
_IDENTITY = ("sub", "ses", "task", *RUN_ENTITIES)
#: ``desc`` labels of the BOLD series fMRIPrep writes (only ``preproc`` is read).
_FMRIPREP_BOLD_DESCS = ("preproc", "smoothAROMAnonaggr")
_NIFTI = (".nii", ".nii.gz")


def _same_run(entities: Mapping[str, str], target: Mapping[str, str]) -> bool:
    # one confounds table serves every echo and part of a run
    return all(entities.get(key) == target.get(key) or (key in ("echo", "part") and key not in entities)
               for key in _IDENTITY)


def _did_you_mean(run: Run, suffixes: Iterable[str], extensions: Iterable[str], expected: str,
                  same_space: bool) -> str:
    """``"; found X: did you mean Y?"`` for a file beside the BOLD that looks like the missing one."""
    target = parse_entities(run.bold)
    for path in sorted(run.bold.parent.iterdir()):
        entities = parse_entities(path)
        if (entities["suffix"] in suffixes and entities["extension"] in extensions
                and _same_run(entities, target)
                and (not same_space or entities.get("space") == target.get("space"))):
            return f"; found {path.name}: did you mean {expected} (fMRIPrep's name)?"
    return ""


def _mask_hint(run: Run) -> str:
    target = parse_entities(run.bold)
    expected = build_name({**{k: target.get(k) for k in (*_IDENTITY, "space", "res", "den")},
                           "desc": "brain"}, "mask", ".nii.gz")
    return _did_you_mean(run, ("mask", "brainmask"), _NIFTI, expected, same_space=True)


def _confounds_hint(run: Run) -> str:
    target = parse_entities(run.bold)
    expected = build_name({**{k: target.get(k) for k in _IDENTITY}, "desc": "confounds"},
                          "timeseries", ".tsv")
    return _did_you_mean(run, ("timeseries", "regressors", "confounds"), (".tsv", ".csv", ".txt"),
                         expected, same_space=False)


def _bold_name_problems(deriv: Path) -> list[Problem]:
    """BOLD series the participant level does not read because of their name."""
    problems = []
    for path in sorted(deriv.glob("sub-*/**/func/*_bold.nii*")):
        entities = parse_entities(path)
        if (entities["suffix"] != "bold" or entities["extension"] not in _NIFTI
                or entities.get("desc") in _FMRIPREP_BOLD_DESCS):
            continue
        named = {k: v for k, v in entities.items() if k not in ("suffix", "extension")}
        expected = build_name({**named, "desc": "preproc"}, "bold", entities["extension"])
        if (path.parent / expected).exists():
            continue
        problems.append(Problem(
            WARNING, str(path), "not read: the participant level reads preprocessed BOLD named "
            f"*_desc-preproc_bold.nii[.gz]; did you mean {expected}?"))
    return problems


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _nuisance_arguments(kind: str, settings: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Strategy and options the participant level gives :func:`nuisance_design` for a run."""
    if kind == "task":
        table, keys = settings["glm"], ("motion", "wm_csf", "scrub")
    else:
        table, keys = settings["denoise"], ("motion", "wm_csf", "global_signal", "compcor",
                                            "n_compcor", "scrub", "fd_threshold",
                                            "std_dvars_threshold")
    strategy = table["strategy"]
    options = {k: table[k] for k in keys if table.get(k) is not None}
    return (tuple(strategy) if isinstance(strategy, list) else strategy), options


def _confounds_problems(run: Run, kind: str, settings: Mapping[str, Any], n_volumes: int,
                        t_r: float | None) -> tuple[list[Problem], np.ndarray | None, list[str]]:
    """The confounds table against the run, its denoising strategy and the QC rules; the sample
    mask and the nuisance regressors' names."""
    from theramark.imaging.denoise import nuisance_design, read_confounds
    from theramark.imaging.qc import run_qc

    path = run.confounds
    try:
        table = read_confounds(path)
        if len(table) != n_volumes:
            return [Problem(ERROR, str(path),
                            f"{len(table)} rows but the BOLD has {n_volumes} volumes")], None, []
        strategy, options = _nuisance_arguments(kind, settings)
        with warnings.catch_warnings():  # settings without effect are the config check's concern
            warnings.simplefilter("ignore")
            design, sample_mask = nuisance_design(path, strategy, n_volumes=n_volumes, **options)
            run_qc(path, None, sample_mask, settings["qc"], t_r=t_r)
    except BadInputError as exc:
        return problems_from_error(exc, [path]), None, []
    return [], sample_mask, list(design.columns)


def _data_problems(run: Run, settings: Mapping[str, Any], sample_mask: np.ndarray | None,
                   t_r: float | None, roiset: Any) -> list[Problem]:
    """Read the BOLD inside its mask as the participant level does, with its QC and ROIs."""
    from theramark.imaging._image import load_masked_bold
    from theramark.imaging.qc import run_qc
    from theramark.imaging.rois import roi_matrix

    try:
        data, _, mask_img = load_masked_bold(run.bold, run.mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_qc(run.confounds, data, sample_mask, settings["qc"], t_r=t_r)
        del data
        if roiset is not None:
            roi_matrix(roiset, mask_img, on_empty=settings["rois"]["on_empty"],
                       mask_name=str(run.mask))
    except BadInputError as exc:
        return problems_from_error(exc, [run.bold, run.mask, run.confounds])
    return []


def _events_problems(run: Run, settings: Mapping[str, Any], n_volumes: int, t_r: float | None,
                     nuisance: list[str]) -> list[Problem]:
    """The events of a task run against the run's length and the task's contrasts."""
    from theramark.imaging.glm import contrast_vectors, read_events, task_contrasts

    try:
        events = read_events(run.events, n_volumes, t_r)
        expressions = task_contrasts(settings["glm"]["contrasts"], run.task)
        if expressions:
            contrast_vectors(expressions, [*events["trial_type"].unique(), *nuisance],
                             source=str(run.events))
    except BadInputError as exc:
        return problems_from_error(exc, [run.events])
    return []


def _check_run(run: Run, settings: Mapping[str, Any], check_data: bool, deep: bool,
               roiset: Any) -> list[Problem]:
    from theramark.imaging.participant import run_parameters

    problems: list[Problem] = []
    bold = str(run.bold)
    if run.mask is None:
        problems.append(Problem(ERROR, bold, "no brain mask (desc-brain_mask) beside the BOLD"
                                + _mask_hint(run)))
    if run.confounds is None:
        problems.append(Problem(ERROR, bold, "no confounds table (desc-confounds_timeseries.tsv)"
                                + _confounds_hint(run)))
    t_r, issue = repetition_time(run.metadata)
    if issue:
        problems.append(Problem(ERROR, bold, issue))
    # with deep, the BOLD is streamed while it is read (load_masked_bold): not twice
    img, issue = _inspect_nifti(run.bold, "BOLD image", 4, check_data and not deep)
    if issue:
        problems.append(Problem(ERROR, bold, issue))
        return problems
    n_volumes = img.shape[3]
    mismatch = t_r_problem(header_t_r(img), t_r)
    if mismatch:
        problems.append(Problem(mismatch[0], bold, mismatch[1]))
    if run.mask is not None:
        mask, issue = _inspect_nifti(run.mask, "brain mask", None, check_data)
        if issue:
            problems.append(Problem(ERROR, str(run.mask), issue))
        elif not same_grid(mask, img):
            problems.append(Problem(
                ERROR, str(run.mask), f"mask grid {mask.shape[:3]} does not match the BOLD "
                f"grid {img.shape[:3]} (another space or resolution?)"))
    kind = run_parameters(run, settings)["kind"]
    sample_mask, nuisance = None, []
    if run.confounds is not None:
        found, sample_mask, nuisance = _confounds_problems(run, kind, settings, n_volumes, t_r)
        problems.extend(found)
    if kind == "task" and run.events is not None:
        problems.extend(_events_problems(run, settings, n_volumes, t_r or header_t_r(img), nuisance))
    if deep and not any(p.severity == ERROR for p in problems):
        problems.extend(_data_problems(run, settings, sample_mask, t_r, roiset))
    return problems


def _identity(run: Run) -> tuple:
    return (run.participant_id, run.session, run.task, run.run, tuple(sorted(run.labels.items())))


def _space_problems(candidates: list[Run], runs: list[Run], space: str, deriv: Path) -> list[Problem]:
    """Runs the participant level skips for their space, and mixed resolutions."""
    setting = "[participant] space in study.toml"

    def shown(label: str | None, entity: str) -> str:
        return f"{entity}-{label}" if label else f"no {entity}"

    if not candidates:
        return []
    if not runs:
        others = Counter(r.space for r in candidates)
        listing = ", ".join(f"{shown(s, 'space')}: {n} run(s)" for s, n in others.most_common())
        best = others.most_common(1)[0][0]
        return [Problem(ERROR, str(deriv), f"no desc-preproc_bold in space {space} ({setting}); "
                        f"found {listing}: to use them, set space = \"{best}\" in the [participant] "
                        "table of study.toml")]
    problems = []
    covered = {_identity(r) for r in runs}
    for run in candidates:
        if run.space != space and _identity(run) not in covered:
            problems.append(Problem(
                WARNING, str(run.bold), f"only in {shown(run.space, 'space')}: the participant "
                f"level reads space {space} ({setting}) and skips this run"))
    resolutions = Counter(r.resolution for r in runs)
    if len(resolutions) > 1:
        listing = ", ".join(f"{shown(r, 'res')}: {n} run(s)"
                            for r, n in sorted(resolutions.items(), key=lambda item: str(item[0])))
        problems.append(Problem(
            WARNING, str(deriv), f"runs of space {space} in several resolutions ({listing}): "
            "each is processed as a run of its own"))
    return problems


# --------------------------------------------------------------------------------------------
# Participants and phenotype
# --------------------------------------------------------------------------------------------


def _grouping_problems(participants: pd.DataFrame, path: Path,
                       study: Mapping[str, Any]) -> list[Problem]:
    """``n/a`` or empty cells in the group and site columns (the group level needs both)."""
    problems = []
    for key in ("group_column", "site_column"):
        column = study[key]
        if column not in participants.columns:
            continue
        values = participants[column]
        missing = values.isna() | (values.astype(str).str.strip() == "")
        if missing.any():
            lines = [str(i + 2) for i in participants.index[missing]]
            ids = participants.loc[missing, "participant_id"].astype(str).tolist()
            problems.append(Problem(
                ERROR, str(path), f"column '{column}' is n/a or empty on line(s) "
                f"{', '.join(lines[:20])}{', ...' if len(lines) > 20 else ''} "
                f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}): every participant "
                f"needs one ([study] {key} in study.toml names the column)"))
    return problems


def _session_problems(runs: list[Run], participants: pd.DataFrame | None,
                      group_column: str) -> list[Problem]:
    sessions = {}
    for run in runs:
        sessions.setdefault(run.participant_id, set()).add(run.session)
    if not sessions or all(s == {None} for s in sessions.values()):
        return []
    group_of = {}
    if participants is not None and group_column in participants.columns:
        group_of = dict(zip(participants["participant_id"], participants[group_column], strict=False))
    expected: dict[object, set] = {}
    for pid, found in sessions.items():
        expected.setdefault(group_of.get(pid), set()).update(found)
    problems = []
    for pid, found in sorted(sessions.items()):
        group = group_of.get(pid)
        missing = sorted(s for s in expected[group] - found if s is not None)
        if missing:
            where = f" (others in group {group} have it)" if group is not None else ""
            problems.append(Problem(
                WARNING, pid, f"missing session(s) {', '.join('ses-' + s for s in missing)}{where}"))
    return problems


def validate_study(
    bids_dir: str | Path,
    fmriprep_dir: str | Path | None = None,
    check_data: bool = True,
    *,
    deep: bool = False,
    config: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Every problem of a study, in one table.

    Parameters
    ----------
    bids_dir : path
        BIDS dataset root.
    fmriprep_dir : path, optional
        fMRIPrep derivatives (default ``BIDS/derivatives/fmriprep``).
    check_data : bool
        Stream every image to catch truncated or corrupt files (slower, thorough).
    deep : bool
        Also read each BOLD inside its mask as the participant level does: NaN or infinite voxels,
        data constant over time, an empty mask, regions of interest outside the mask (slowest).
    config : mapping, optional
        The study configuration (:func:`theramark.config.load_config`): which space and tasks the
        participant level processes, its denoising strategies and QC rules, the group and site
        columns. ``None``: the defaults.

    Returns
    -------
    DataFrame
        ``severity`` (error or warning), ``path``, ``message`` (one line); empty when all is well.
    """
    from theramark.config import section
    from theramark.imaging.participant import roiset_from_settings, settings_from_config

    bids_dir = Path(bids_dir)
    problems: list[Problem] = []
    if not bids_dir.is_dir():
        problems.append(Problem(ERROR, str(bids_dir), "BIDS folder not found"))
        return _as_frame(problems)
    study = section(config, "study")
    settings = settings_from_config(config)
    if not (bids_dir / "dataset_description.json").is_file():
        problems.append(Problem(ERROR, str(bids_dir / "dataset_description.json"),
                                "missing (required by BIDS)"))
    participants = None
    participants_path = bids_dir / "participants.tsv"
    try:
        participants = load_participants(bids_dir)
    except BadInputError as exc:
        problems.extend(problems_from_error(exc, [participants_path]))
    else:
        problems.extend(_grouping_problems(participants, participants_path, study))
    known = set(participants["participant_id"]) if participants is not None else None
    folder = bids_dir / "phenotype"
    for path in sorted(folder.glob("*.tsv")) if folder.is_dir() else []:
        try:
            table = read_phenotype_table(path)
        except BadInputError as exc:
            problems.extend(problems_from_error(exc, [path]))
            continue
        unknown = sorted(set(table["participant_id"].dropna()) - known) if known is not None else []
        if unknown:
            problems.append(Problem(
                WARNING, str(path), f"participant(s) not in participants.tsv: {', '.join(unknown[:10])}"
                + (" ..." if len(unknown) > 10 else "")))
    deriv = fmriprep_dir_for(bids_dir, fmriprep_dir)
    runs: list[Run] = []
    if not deriv.is_dir():
        problems.append(Problem(ERROR, str(deriv), "fMRIPrep derivatives folder not found"))
    else:
        try:
            found = discover_runs(bids_dir, deriv, space=None, check_collisions=False)
        except BadInputError as exc:  # e.g. a sidecar that is not valid JSON
            problems.extend(problems_from_error(exc, [deriv]))
            found = None
        tasks = settings["participant"]["tasks"]
        candidates = [r for r in found or [] if not tasks or r.task in tasks]
        space = settings["participant"]["space"]
        runs = [r for r in candidates if r.space == space]
        if found is not None and not found:
            problems.append(Problem(ERROR, str(deriv), "no desc-preproc_bold files found"))
        problems.extend(_bold_name_problems(deriv))
        problems.extend(_space_problems(candidates, runs, space, deriv))
        for first, second in find_collisions(runs):
            problems.append(Problem(
                ERROR, str(second), f"would write the same outputs as {first}: both name the same "
                "run; keep one of them"))
        roiset = None
        if deep and runs:
            try:
                roiset = roiset_from_settings(settings["rois"], settings["base_dir"]["path"])
            except BadInputError as exc:
                problems.extend(problems_from_error(exc, [settings["base_dir"]["path"]]))
        for run in runs:
            problems.extend(_check_run(run, settings, check_data, deep, roiset))
            if known is not None and run.participant_id not in known:
                problems.append(Problem(ERROR, str(run.bold),
                                        f"{run.participant_id} is not in participants.tsv"))
        if known is not None and found is not None:
            with_data = {r.participant_id for r in found}
            for pid in sorted(known - with_data):
                problems.append(Problem(WARNING, pid, "in participants.tsv but has no fMRIPrep run"))
    problems.extend(_session_problems(runs, participants, study["group_column"]))
    return _as_frame(problems)


def _as_frame(problems: list[Problem]) -> pd.DataFrame:
    table = pd.DataFrame([p.__dict__ for p in problems], columns=["severity", "path", "message"])
    table = table.drop_duplicates(ignore_index=True)
    rank = table["severity"].map({ERROR: 0, WARNING: 1})
    return table.iloc[np.lexsort((table["path"].to_numpy(), rank.to_numpy()))].reset_index(drop=True)


def _shown(path: str, root: str | Path | None) -> str:
    """``path`` relative to ``root`` when inside it (the root itself stays as given)."""
    if root is None:
        return path
    try:
        relative = Path(path).relative_to(root)
    except ValueError:
        return path
    return path if relative == Path() else str(relative)


def format_problems(table: pd.DataFrame, root: str | Path | None = None) -> str:
    """A readable listing of a :func:`validate_study` table: one line per problem, ``SEVERITY
    path: message`` (paths relative to ``root``), then the counts."""
    if table.empty:
        return "No problems found."
    lines = [f"{row.severity.upper():8s} {_shown(row.path, root)}: {row.message}"
             for row in table.itertuples(index=False)]
    n_err = int((table["severity"] == ERROR).sum())
    n_warn = int((table["severity"] == WARNING).sum())
    lines.append(f"\n{n_err} error(s), {n_warn} warning(s).")
    return "\n".join(lines)
