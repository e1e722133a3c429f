"""Validation of a study in one pass: every problem, with its path, in one table.

Checks: participants.tsv (present, parseable, unique IDs), phenotype tables, every fMRIPrep run
(mask and confounds present, NIfTI readable and complete, TR of the sidecar equal to the header's,
confounds rows equal to volumes, one template space and resolution across the study), and sessions
missing for a participant compared with the others of the same group.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from theramark._io import read_tsv
from theramark.errors import BadInputError
from theramark.study.layout import Run, discover_runs, fmriprep_dir_for
from theramark.study.participants import load_participants, load_phenotype

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: str
    path: str
    message: str


def nifti_problem(path: Path, check_data: bool = True) -> str | None:
    """Why a NIfTI file cannot be used, or None when it is fine.

    The header is parsed, then (with ``check_data``) the data block is streamed to check that the
    file holds every byte its header promises: a truncated download or a corrupt gzip stream is
    caught without building the array in memory.
    """
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt headers
        return f"unreadable NIfTI header ({type(exc).__name__}: {exc})"
    if not check_data:
        return None
    header = img.header
    expected = int(header.get_data_offset()) + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
    try:
        if str(path).endswith(".gz"):
            size = 0
            with gzip.open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    size += len(block)
        else:
            size = Path(path).stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        return f"corrupt or truncated file ({type(exc).__name__}: {exc})"
    if size < expected:
        return f"truncated: {size} bytes of data where the header needs {expected}"
    return None


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


def _check_run(run: Run, check_data: bool) -> list[Problem]:
    problems: list[Problem] = []
    bold = str(run.bold)
    if run.mask is None:
        problems.append(Problem(ERROR, bold, "no brain mask (desc-brain_mask) beside the BOLD"))
    if run.confounds is None:
        problems.append(Problem(ERROR, bold, "no confounds table (desc-confounds_timeseries.tsv)"))
    if run.t_r is None:
        problems.append(Problem(ERROR, bold, "RepetitionTime missing from every sidecar"))
    issue = nifti_problem(run.bold, check_data)
    if issue:
        problems.append(Problem(ERROR, bold, issue))
        return problems
    img = nib.load(str(run.bold))
    if len(img.shape) != 4:
        problems.append(Problem(ERROR, bold, f"expected a 4D image, got shape {img.shape}"))
        return problems
    n_volumes = img.shape[3]
    t_r = header_t_r(img)
    if run.t_r is not None and t_r is not None and not np.isclose(t_r, run.t_r, atol=1e-3):
        problems.append(Problem(
            ERROR, bold, f"TR in the header ({t_r:g} s) differs from RepetitionTime in the "
            f"sidecar ({run.t_r:g} s)"))
    if run.mask is not None:
        issue = nifti_problem(run.mask, check_data)
        if issue:
            problems.append(Problem(ERROR, str(run.mask), issue))
        else:
            mask = nib.load(str(run.mask))
            if not same_grid(mask, img):
                problems.append(Problem(
                    ERROR, str(run.mask), f"mask grid {mask.shape[:3]} does not match the BOLD "
                    f"grid {img.shape[:3]} (another space or resolution?)"))
    if run.confounds is not None:
        try:
            confounds = read_tsv(run.confounds)
        except BadInputError as exc:
            problems.append(Problem(ERROR, str(run.confounds), str(exc)))
        else:
            if len(confounds) != n_volumes:
                problems.append(Problem(
                    ERROR, str(run.confounds), f"{len(confounds)} rows but the BOLD has "
                    f"{n_volumes} volumes"))
    if run.events is not None:
        try:
            events = read_tsv(run.events)
        except BadInputError as exc:
            problems.append(Problem(ERROR, str(run.events), str(exc)))
        else:
            missing = {"onset", "duration"} - set(events.columns)
            if missing:
                problems.append(Problem(ERROR, str(run.events),
                                        f"missing column(s) {', '.join(sorted(missing))}"))
            elif t_r is not None and (events["onset"] > n_volumes * t_r).any():
                late = events.loc[events["onset"] > n_volumes * t_r, "onset"].max()
                problems.append(Problem(
                    ERROR, str(run.events), f"onset {late:g} s is beyond the end of the run "
                    f"({n_volumes} volumes × {t_r:g} s = {n_volumes * t_r:g} s)"))
    return problems


def _session_problems(runs: list[Run], participants: pd.DataFrame | None) -> list[Problem]:
    sessions = {}
    for run in runs:
        sessions.setdefault(run.participant_id, set()).add(run.session)
    if not sessions or all(s == {None} for s in sessions.values()):
        return []
    group_of = {}
    if participants is not None and "group" in participants.columns:
        group_of = dict(zip(participants["participant_id"], participants["group"], strict=False))
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

    Returns
    -------
    DataFrame
        ``severity`` (error or warning), ``path``, ``message``; empty when all is well.
    """
    bids_dir = Path(bids_dir)
    problems: list[Problem] = []
    if not bids_dir.is_dir():
        problems.append(Problem(ERROR, str(bids_dir), "BIDS folder not found"))
        return _as_frame(problems)
    if not (bids_dir / "dataset_description.json").is_file():
        problems.append(Problem(ERROR, str(bids_dir / "dataset_description.json"),
                                "missing (required by BIDS)"))
    participants = None
    try:
        participants = load_participants(bids_dir)
    except BadInputError as exc:
        problems.append(Problem(ERROR, str(bids_dir / "participants.tsv"), str(exc)))
    try:
        phenotype = load_phenotype(bids_dir)
    except BadInputError as exc:
        problems.append(Problem(ERROR, str(bids_dir / "phenotype"), str(exc)))
        phenotype = {}
    known = set(participants["participant_id"]) if participants is not None else None
    for name, table in phenotype.items():
        if known is not None:
            unknown = sorted(set(table["participant_id"]) - known)
            if unknown:
                problems.append(Problem(
                    WARNING, str(bids_dir / "phenotype" / f"{name}.tsv"),
                    f"participant(s) not in participants.tsv: {', '.join(unknown[:10])}"
                    + (" ..." if len(unknown) > 10 else "")))
    deriv = fmriprep_dir_for(bids_dir, fmriprep_dir)
    runs: list[Run] = []
    if not deriv.is_dir():
        problems.append(Problem(ERROR, str(deriv), "fMRIPrep derivatives folder not found"))
    else:
        runs_all = discover_runs(bids_dir, deriv, space=None)
        spaces = Counter((r.space, r.resolution) for r in runs_all)
        if len(spaces) > 1:
            listing = ", ".join(f"space-{s} res-{r}: {n} runs" for (s, r), n in spaces.items())
            problems.append(Problem(WARNING, str(deriv),
                                    f"runs in several spaces/resolutions ({listing}); "
                                    "choose one with --space"))
        runs = runs_all
        if not runs:
            problems.append(Problem(ERROR, str(deriv), "no desc-preproc_bold files found"))
        for run in runs:
            problems.extend(_check_run(run, check_data))
            if known is not None and run.participant_id not in known:
                problems.append(Problem(ERROR, str(run.bold),
                                        f"{run.participant_id} is not in participants.tsv"))
        if known is not None:
            with_data = {r.participant_id for r in runs}
            for pid in sorted(known - with_data):
                problems.append(Problem(WARNING, pid, "in participants.tsv but has no fMRIPrep run"))
    problems.extend(_session_problems(runs, participants))
    return _as_frame(problems)


def _as_frame(problems: list[Problem]) -> pd.DataFrame:
    table = pd.DataFrame([p.__dict__ for p in problems], columns=["severity", "path", "message"])
    rank = table["severity"].map({ERROR: 0, WARNING: 1})
    return table.iloc[np.lexsort((table["path"].to_numpy(), rank.to_numpy()))].reset_index(drop=True)


def format_problems(table: pd.DataFrame, root: str | Path | None = None) -> str:
    """A readable, aligned listing of a :func:`validate_study` table (paths relative to ``root``)."""
    if table.empty:
        return "No problems found."
    lines = []
    for row in table.itertuples(index=False):
        path = row.path
        if root is not None:
            try:
                path = str(Path(row.path).relative_to(root))
            except ValueError:
                pass
        lines.append(f"{row.severity.upper():8s} {path}\n         {row.message}")
    n_err = int((table["severity"] == ERROR).sum())
    n_warn = int((table["severity"] == WARNING).sum())
    lines.append(f"\n{n_err} error(s), {n_warn} warning(s).")
    return "\n".join(lines)
