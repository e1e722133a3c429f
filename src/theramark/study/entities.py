"""BIDS file names: parsing entities and building derivative names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

# Entity order of the BIDS specification (subset theramark reads and writes).
ENTITY_ORDER = (
    "sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part", "space", "chunk",
    "res", "den", "seg", "label", "meas", "desc",
)
#: Entities of a BOLD file name that tell the runs of one participant, session and task apart.
#: Each one a run has is part of the name of every output of the run.
RUN_ENTITIES = ("acq", "ce", "rec", "dir", "run", "echo", "part", "chunk")
#: Entities of a preprocessed BOLD that name its template space, resolution and density: part of
#: a run's output names only where runs that agree on everything else differ by them.
SPACE_ENTITIES = ("space", "res", "den")
_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9+]+)$")


def parse_entities(path: str | Path) -> dict[str, str]:
    """Entities and suffix/extension of a BIDS file name.

    Returns a dict of ``entity -> label`` plus ``suffix`` and ``extension`` (with the dot, e.g.
    ``.nii.gz``). Parts that are not ``key-value`` pairs are ignored.

    Examples
    --------
    >>> parse_entities("sub-01_ses-pre_task-rest_desc-confounds_timeseries.tsv")["desc"]
    'confounds'
    """
    name = Path(path).name
    stem, dot, rest = name.partition(".")
    extension = dot + rest if dot else ""
    parts = stem.split("_")
    result: dict[str, str] = {}
    for part in parts[:-1]:
        match = _ENTITY.match(part)
        if match:
            result[match.group(1)] = match.group(2)
    last = parts[-1]
    if _ENTITY.match(last):
        result[_ENTITY.match(last).group(1)] = _ENTITY.match(last).group(2)
        result["suffix"] = ""
    else:
        result["suffix"] = last
    result["extension"] = extension
    return result


def build_name(entities: dict[str, str | int | None], suffix: str, extension: str) -> str:
    """A BIDS file name from entities (in specification order), a suffix and an extension."""
    parts = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if entities.get(key) not in (None, "")]
    return "_".join([*parts, suffix]) + extension


def strip_prefix(label: str | None, prefix: str) -> str | None:
    """``ses-pre`` → ``pre`` (labels are accepted with or without their prefix)."""
    if label is None:
        return None
    label = str(label)
    return label[len(prefix) + 1:] if label.startswith(prefix + "-") else label


def _with_prefix_fixed(values: pd.Series, fix) -> pd.Series:
    # string-dtype columns stay string; anything else becomes object (text); missing stays missing
    out = values.astype("string" if isinstance(values.dtype, pd.StringDtype) else object)
    present = out.notna()
    if present.any():
        out[present] = fix(out[present].astype(str))
    return out


def with_sub_prefix(ids: pd.Series) -> pd.Series:
    """Participant IDs with the ``sub-`` prefix (``01`` → ``sub-01``); missing values stay missing.

    Every table theramark reads goes through this, so IDs from participants.tsv, phenotype files
    and outputs always match (see docs/contracts.md).
    """
    return _with_prefix_fixed(ids, lambda text: text.where(text.str.startswith("sub-"), "sub-" + text))


def without_ses_prefix(sessions: pd.Series) -> pd.Series:
    """Session labels without the ``ses-`` prefix (``ses-pre`` → ``pre``); missing stays missing."""
    return _with_prefix_fixed(sessions, lambda text: text.str.replace(r"^ses-", "", regex=True))


def extra_entities(entities: Mapping[str, str | int | None]) -> str:
    """The entities of a run's name besides ``sub``, ``ses``, ``task`` and an integer ``run``.

    These are the :data:`RUN_ENTITIES` and :data:`SPACE_ENTITIES` present in ``entities``, in BIDS
    order, as they appear in the name (``acq-b_echo-2``); a run index that is not an integer is
    kept among them. An empty string when there are none.

    Examples
    --------
    >>> extra_entities(parse_entities("sub-01_task-rest_acq-b_run-2_desc-qc_metrics.tsv"))
    'acq-b'
    >>> extra_entities({"sub": "01", "task": "rest", "run": "1"})
    ''
    """
    keep = {key: entities.get(key) for key in (*RUN_ENTITIES, *SPACE_ENTITIES)}
    if keep["run"] is not None and str(keep["run"]).isdigit():
        keep["run"] = None
    return build_name(keep, "", "").rstrip("_")


def task_key(entities: Mapping[str, str | int | None]) -> str:
    """The task part of a feature key: the task label, then the run's :func:`extra_entities`.

    Runs of one participant, session and task that differ only by ``run-`` are averaged by the
    group level; runs that differ by another entity (two acquisitions, echoes, resolutions...) are
    kept apart as different "tasks": ``rest`` and ``rest_acq-b``. A study without such entities
    has plain task labels.

    Examples
    --------
    >>> task_key(parse_entities("sub-01_ses-pre_task-rest_acq-b_seg-literature_timeseries.tsv"))
    'rest_acq-b'
    >>> task_key({"sub": "01", "task": "mid", "run": "2"})
    'mid'
    """
    extra = extra_entities(entities)
    return f"{entities['task']}_{extra}" if extra else str(entities["task"])
