"""The design of a study: its arms, its sessions in order, the reference arm and the controls.

Nothing here assumes the simulator's labels. Each value is taken from ``[study]`` in study.toml
when declared there, and otherwise inferred from the dataset by rules stated in
:func:`infer_design` (recorded in :attr:`StudyDesign.sources`, so a report and ``config init`` can
say where every value came from). A declared value that the dataset does not have is an error
naming it and listing what the dataset has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from theramark.errors import BadInputError

#: Session labels in the order visits happen, for datasets that name sessions in words.
_SESSION_WORDS = (
    "screening", "baseline", "bl", "pre", "pretreatment", "pretherapy", "t0", "week0",
    "mid", "midtreatment", "interim", "during",
    "post", "posttreatment", "posttherapy", "end", "endpoint",
    "followup", "fu", "follow", "late",
)
#: Names of arms that serve as the comparison condition of a therapy (a waiting list, treatment as
#: usual, no treatment, a placebo or sham condition), matched after lower-casing and removing
#: separators.
_REFERENCE_WORDS = ("waitlist", "waitinglist", "wl", "wlc", "notreatment", "untreated", "notx",
                    "tau", "treatmentasusual", "usualcare", "placebo", "sham", "pill")
#: Names of healthy-control groups.
_CONTROL_WORDS = ("hc", "healthy", "healthycontrol", "healthycontrols", "control", "controls",
                  "ctrl", "nc", "normalcontrol", "normalcontrols")


@dataclass(frozen=True)
class StudyDesign:
    """Arms, sessions and the roles of the groups of one study.

    Attributes
    ----------
    groups : list of str
        Group labels in display order (the ``group`` column of participants.tsv).
    sessions : list of str
        Session labels (without ``ses-``) in the order they happen.
    baseline, endpoint : str
        The sessions change is measured between ("" when the study has fewer than two sessions).
    reference_group : str
        The arm every therapy is compared with ("" when none was declared or recognized).
    control_group : str
        The healthy-control group ("" when none).
    sources : dict
        Where each value came from: ``"config"`` or the inference rule that gave it.
    """

    groups: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    baseline: str = ""
    endpoint: str = ""
    reference_group: str = ""
    control_group: str = ""
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def arms(self) -> list[str]:
        """Therapy arms: the groups other than the reference arm and the controls."""
        return [g for g in self.groups if g not in (self.reference_group, self.control_group)]

    @property
    def patient_groups(self) -> list[str]:
        """Every group but the healthy controls."""
        return [g for g in self.groups if g != self.control_group]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def in_study_order(table: pd.DataFrame, order: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """``table`` sorted by its label columns in the study's order (stable; unknown labels last).

    ``order`` maps a column (``"group"``, ``"session"``) to its labels in order, e.g.
    ``{"group": design.groups, "session": design.sessions}``; absent columns are ignored.
    """
    columns = [c for c in order if c in table.columns and order[c]]
    if not columns:
        return table
    ranks = {c: {label: i for i, label in enumerate(order[c])} for c in columns}
    return table.sort_values(
        columns, key=lambda s: s.astype(str).map(ranks[s.name]).fillna(len(ranks[s.name])),
        kind="stable").reset_index(drop=True)


def _squash(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(label).lower())


def _words(label: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", str(label).lower()) if w} | {_squash(label)}


def session_order(sessions: Iterable[str]) -> list[str]:
    """Sessions sorted in the order visits happen.

    Numbers sort numerically (``1 < 2 < 10``; ``w0 < w4 < w12`` by their number), known words by
    :data:`_SESSION_WORDS` (``pre < mid < post < followup``); anything else keeps the order it was
    given, after the recognized labels.
    """
    labels = list(dict.fromkeys(str(s).removeprefix("ses-") for s in sessions))

    def key(item: tuple[int, str]) -> tuple[int, float, int]:
        position, label = item
        squashed = _squash(label)
        if squashed in _SESSION_WORDS:
            return (0, _SESSION_WORDS.index(squashed), position)
        numbers = re.findall(r"\d+", label)
        if numbers and re.fullmatch(r"[a-z]*\d+[a-z]*", squashed):
            return (1, float(numbers[0]), position)
        return (2, 0.0, position)

    return [label for _, label in sorted(enumerate(labels), key=key)]


def _match_role(groups: Sequence[str], words: Sequence[str], exclude: str = "") -> str:
    """The one group whose name matches ``words``; "" when none or several do.

    A short word (``wl``, ``hc``, ``tau``) must be a whole word of the label; a longer one may be
    part of it (``depr_no_treatment`` contains ``notreatment``).
    """
    def matches(group: str) -> bool:
        squashed = _squash(group)
        return bool(_words(group) & set(words)) or any(
            len(w) >= 5 and w in squashed for w in words)

    hits = [g for g in groups if g != exclude and matches(g)]
    return hits[0] if len(hits) == 1 else ""


def _declared(value: str, found: Sequence[str], key: str, what: str, source: str) -> str:
    value = str(value).removeprefix("ses-") if what == "session" else str(value)
    if value not in found:
        raise BadInputError(
            f"{source}: [study] {key} = {value!r} is not a {what} of this study; "
            f"{what}s found: {', '.join(map(repr, found)) or 'none'}")
    return value


def infer_design(
    participants: pd.DataFrame | None,
    sessions: Iterable[str],
    config_study: Mapping[str, Any] | None = None,
    source: str = "study.toml",
) -> StudyDesign:
    """The study design from ``[study]`` where declared, inferred from the data otherwise.

    Parameters
    ----------
    participants : DataFrame or None
        participants.tsv (its ``group_column``, default ``group``, gives the groups).
    sessions : iterable of str
        Session labels found in the dataset (folders, phenotype tables, wide columns); ``ses-``
        prefixes are removed.
    config_study : mapping, optional
        The resolved ``[study]`` table (``groups``, ``sessions``, ``baseline``, ``endpoint``,
        ``reference_group``, ``control_group``, ``group_column``).
    source : str
        The config file, named in error messages.

    Returns
    -------
    StudyDesign

    Notes
    -----
    Inference rules, each recorded in ``sources``:

    - groups: the order of first appearance in participants.tsv;
    - sessions: :func:`session_order`; baseline the first, endpoint the last;
    - reference arm: the one group named like a comparison condition (waitlist, WL, TAU, treatment
      as usual, no treatment, untreated, placebo, sham); none when no group or several match;
    - controls: the one group named like healthy controls (HC, healthy, control(s)).

    Raises
    ------
    BadInputError
        When a declared group or session is not in the data, or baseline equals endpoint.
    """
    cfg = dict(config_study or {})
    sources: dict[str, str] = {}
    group_column = cfg.get("group_column") or "group"
    found_groups: list[str] = []
    if participants is not None and group_column in participants.columns:
        found_groups = [str(g) for g in dict.fromkeys(participants[group_column].dropna())]
    if cfg.get("groups"):
        groups = [_declared(g, found_groups, "groups", "group", source) for g in cfg["groups"]]
        unlisted = [g for g in found_groups if g not in groups]
        if unlisted:
            raise BadInputError(
                f"{source}: [study] groups = {groups} leaves out group(s) "
                f"{', '.join(map(repr, unlisted))} of participants.tsv; list every group")
        sources["groups"] = "config"
    else:
        groups = found_groups
        sources["groups"] = f"participants.tsv column '{group_column}', in order of appearance"

    found_sessions = session_order(sessions)
    if cfg.get("sessions"):
        ordered = [_declared(s, found_sessions, "sessions", "session", source)
                   for s in cfg["sessions"]]
        unlisted = [s for s in found_sessions if s not in ordered]
        if unlisted:
            raise BadInputError(
                f"{source}: [study] sessions = {ordered} leaves out session(s) "
                f"{', '.join(map(repr, unlisted))} of the dataset; list every session in the "
                "order of the visits")
        sources["sessions"] = "config"
    else:
        ordered = found_sessions
        sources["sessions"] = "sessions found in the dataset, in visit order"

    def pick(key: str, default: str, rule: str, choices: Sequence[str], what: str) -> str:
        if cfg.get(key):
            sources[key] = "config"
            return _declared(cfg[key], choices, key, what, source)
        sources[key] = rule if default else f"{rule}: none found"
        return default

    baseline = pick("baseline", ordered[0] if len(ordered) > 1 else "",
                    "first session", ordered, "session")
    endpoint = pick("endpoint", ordered[-1] if len(ordered) > 1 else "",
                    "last session", ordered, "session")
    if baseline and baseline == endpoint:
        raise BadInputError(f"{source}: [study] baseline and endpoint are both {baseline!r}")
    reference = pick("reference_group", _match_role(groups, _REFERENCE_WORDS),
                     "the group named like a comparison condition (waitlist, TAU, no treatment, "
                     "placebo, sham)", groups, "group")
    control = pick("control_group", _match_role(groups, _CONTROL_WORDS, exclude=reference),
                   "the group named like healthy controls (HC, healthy, control)", groups, "group")
    if reference and reference == control:
        raise BadInputError(f"{source}: [study] reference_group and control_group are both "
                            f"{reference!r}")
    return StudyDesign(groups=groups, sessions=ordered, baseline=baseline, endpoint=endpoint,
                       reference_group=reference, control_group=control, sources=sources)
