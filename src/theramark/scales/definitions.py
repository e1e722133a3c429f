"""Instrument definitions: scoring rules stored as data, one JSON file per instrument.

Each file in ``theramark/scales/instruments/`` states an instrument's items and allowed answers,
reverse-keyed items, optional recoding (SHAPS) and domains (QIDS-SR16), the total and subscale rules,
the missing-item rule, severity bands, remission and response criteria, reliability and norms, each
with its published source. No item wording is stored (much of it is copyrighted).

A study adds its own questionnaires in the same format: JSON files in the BIDS dataset's
``code/theramark/instruments/`` folder (found automatically) and paths from the config
(``[scales] instruments``). :func:`instrument_library` returns an :class:`InstrumentLibrary`
that merges them with the packaged instruments; nothing is registered globally. The format is
documented in ``docs/instruments.md``.

Every definition is checked when it is loaded (:func:`validate_definition`, against :data:`SCHEMA`
and the rules that tie keys together): a bad definition raises :class:`BadInputError` naming the
file and the key path (``subscales[1].items: item 12 is not an item of the instrument (1-10)``;
list positions count from 0, as in JSON paths).

:func:`load_instrument` returns a packaged :class:`Instrument`; :func:`available_instruments` lists
the packaged ids; :meth:`InstrumentLibrary.get` does both for a study's library.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from theramark.errors import BadInputError

_PACKAGE = "theramark.scales"
_FOLDER = "instruments"  # package data (pyproject: scales/instruments/*.json), not a package
#: Where a BIDS dataset keeps its own instrument definitions (found by :func:`instrument_library`).
STUDY_FOLDER = Path("code", "theramark", "instruments")
#: The definition format version this theramark reads.
SCHEMA_VERSION = 1
#: Most items an instrument may have (the MMPI-2 has 567): a larger n_items is taken for a typo.
MAX_ITEMS = 1000
#: Largest absolute answer code, and most distinct answers a recoding may list.
MAX_ANSWER, MAX_RECODED = 1_000_000, 1000
#: Column names of ``score`` output that a subscale or count may not take.
RESERVED_NAMES = frozenset({
    "participant_id", "session", "session_id", "group", "instrument", "total", "index", "severity",
    "n_answered", "n_missing", "n_invalid", "prorated", "scored", "missing_items", "invalid_items",
    "flags",
})
_ID = re.compile(r"[a-z][a-z0-9_]*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Band:
    """A severity band: applies from ``threshold`` upward (``>=``, or ``>`` when ``strict``)."""

    label: str
    threshold: float
    strict: bool = False

    def describe(self, upper: Band | None) -> str:
        """``"mild: 8 to < 14"``: the band's interval, given the next band up (or None)."""
        low = f"> {self.threshold:g}" if self.strict else f">= {self.threshold:g}"
        if upper is None:
            return f"{self.label}: {low}"
        high = f"<= {upper.threshold:g}" if upper.strict else f"< {upper.threshold:g}"
        return f"{self.label}: {low} and {high}"


@dataclass(frozen=True)
class Subscale:
    """A subscale: ``rule`` (``sum`` or ``mean``) over ``items`` with at most ``max_missing`` missing."""

    name: str
    items: tuple[int, ...]
    rule: str
    max_missing: int = 0
    bands: tuple[Band, ...] = ()


@dataclass(frozen=True)
class Domain:
    """Several items reduced to one unit (QIDS-SR16: the highest answer of the domain's items)."""

    name: str
    items: tuple[int, ...]
    rule: str = "max"


@dataclass(frozen=True)
class Count:
    """How many of ``items`` were answered ``value`` (raw answers; CTQ minimization/denial)."""

    name: str
    items: tuple[int, ...]
    value: int


@dataclass(frozen=True)
class Instrument:
    """One questionnaire's scoring rules (see the module docstring and ``theramark scales show``).

    Attributes
    ----------
    id : str
        Instrument id (``hamd17``); item columns are ``<id>_<n>``.
    item_min, item_max : ndarray of int, shape (n_items,)
        Allowed answers of each item (every integer in between is allowed).
    reverse : tuple of int
        1-based reverse-keyed items, scored ``item_min + item_max - answer``.
    recode : dict or None
        Answer → item score after reverse-keying (SHAPS original scoring: 3 or 4 → 1).
    total_rule : {"sum", "mean", None}
        How the total is formed from its units (items, or domains when there are domains).
    total_items : tuple of int
        Items entering the total (when there are no domains).
    max_missing : int
        Units of the total that may be missing; the rest is prorated (see ``score``).
    range : tuple of float or None
        Lowest and highest possible total (from the file, or computed from the items when the file
        omits it).
    raw : dict
        The definition with the chosen scoring's keys applied.
    origin : str
        Where the definition comes from (``theramark/scales/instruments/phq9.json`` or a study file).
    definition : dict or None
        The definition as written (every scoring), used to switch scorings.
    """

    id: str
    name: str
    source: str
    construct: str
    rater: str
    higher_is_worse: bool | None
    n_items: int
    item_min: np.ndarray
    item_max: np.ndarray
    reverse: tuple[int, ...]
    recode: dict[int, float] | None
    domains: tuple[Domain, ...]
    total_rule: str | None
    total_items: tuple[int, ...]
    max_missing: int
    missing_source: str
    range: tuple[float, float] | None
    subscales: tuple[Subscale, ...]
    counts: tuple[Count, ...]
    bands: tuple[Band, ...]
    bands_on: str
    bands_source: str
    index_multiplier: float | None
    remission: dict[str, Any] | None
    response: dict[str, Any] | None
    reliability: dict[str, Any] | None
    norms: dict[str, Any] | None
    scoring: str
    scorings: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False)
    origin: str = ""
    definition: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def item_columns(self) -> list[str]:
        """Column names of the items: ``<id>_1 ... <id>_k``."""
        return [f"{self.id}_{i}" for i in range(1, self.n_items + 1)]

    def allowed_text(self, item: int) -> str:
        """Allowed answers of a 1-based item, as shown in messages (``integers 0-4``)."""
        return f"integers {int(self.item_min[item - 1])}-{int(self.item_max[item - 1])}"

    def item_score_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest item score after reverse-keying and recoding, shape (n_items,)."""
        if self.recode is None:
            return self.item_min.astype(float), self.item_max.astype(float)
        values = np.array(list(self.recode.values()), dtype=float)
        return (np.full(self.n_items, values.min()), np.full(self.n_items, values.max()))

    def severity_of(self, values: np.ndarray, bands: tuple[Band, ...] | None = None) -> np.ndarray:
        """Band label of each value (object array; None where the value is missing or below all bands)."""
        bands = self.bands if bands is None else bands
        values = np.asarray(values, dtype=float)
        labels = np.full(values.shape, None, dtype=object)
        for band in bands:  # ascending thresholds: later bands overwrite earlier ones
            with np.errstate(invalid="ignore"):
                hit = values > band.threshold if band.strict else values >= band.threshold
            labels[hit] = band.label
        return labels

    def remission_of(self, totals: np.ndarray) -> np.ndarray:
        """Remission at each total (float array: 1, 0, or NaN where the total is missing)."""
        if self.remission is None:
            raise BadInputError(
                f"{self.id}: the instrument file states no remission cut-off; pass one explicitly"
            )
        totals = np.asarray(totals, dtype=float)
        op, value = self.remission["op"], float(self.remission["value"])
        with np.errstate(invalid="ignore"):
            hit = totals <= value if op == "<=" else totals < value
        return np.where(np.isnan(totals), np.nan, hit.astype(float))


# ---------------------------------------------------------------------------------------------------
# The schema: the shape of every key (checked first), then the rules that tie keys together.


@dataclass(frozen=True)
class Key:
    """The shape of one key of a definition.

    Attributes
    ----------
    kind : str
        JSON type: ``string``, ``integer``, ``number``, ``boolean``, ``items`` (a list of item
        numbers), ``pair`` (two numbers), ``object`` (keys given by ``fields``), ``list`` (a list of
        objects with ``fields``) or ``map`` (names → objects with ``fields``, or → ``values``).
    required : bool
        The key must be present.
    nullable : bool
        ``null`` is allowed (and means "none").
    fields : mapping of str to Key, optional
        The keys of an ``object``, of each ``list`` entry, or of each ``map`` value.
    values : str, optional
        For a ``map`` of plain values: their kind.
    names : tuple of str, optional
        For a ``map``: the names allowed (any name when empty).
    """

    kind: str
    required: bool = False
    nullable: bool = False
    fields: Mapping[str, Key] | None = None
    values: str | None = None
    names: tuple[str, ...] = ()


_EXPECTED = {
    "string": "text", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "items": "a list of item numbers", "pair": "a list of two numbers [low, high]",
    "object": "an object {...}", "list": "a list of objects [{...}, ...]", "map": "an object {...}",
}

_BAND = {"label": Key("string", required=True), "from": Key("number"), "above": Key("number")}
_ITEMS = Key("items", required=True)

#: Every key of an instrument definition and its shape (documented in ``docs/instruments.md``).
SCHEMA: dict[str, Key] = {
    "id": Key("string", required=True),
    "name": Key("string", required=True),
    "source": Key("string", required=True),
    "schema_version": Key("integer"),
    "construct": Key("string"),
    "rater": Key("string"),
    "higher_is_worse": Key("boolean", nullable=True),
    "notes": Key("string"),
    "n_items": Key("integer", required=True),
    "values": Key("object", fields={"min": Key("integer", required=True),
                                    "max": Key("integer", required=True)}),
    "item_values": Key("list", fields={"items": _ITEMS, "min": Key("integer", required=True),
                                       "max": Key("integer", required=True)}),
    "reverse": Key("items"),
    "recode": Key("map", nullable=True, values="number"),
    "domains": Key("list", fields={"name": Key("string", required=True), "items": _ITEMS,
                                   "rule": Key("string")}),
    "total": Key("object", required=True, fields={
        "rule": Key("string", required=True, nullable=True), "items": Key("items"),
        "max_missing": Key("integer"), "missing_source": Key("string")}),
    "range": Key("pair", nullable=True),
    "index": Key("object", nullable=True, fields={"multiply": Key("number", required=True),
                                                  "name": Key("string")}),
    "subscales": Key("list", fields={"name": Key("string", required=True), "items": _ITEMS,
                                     "rule": Key("string"), "max_missing": Key("integer"),
                                     "bands": Key("list", fields=_BAND)}),
    "subscales_source": Key("string"),
    "counts": Key("list", fields={"name": Key("string", required=True), "items": _ITEMS,
                                  "value": Key("integer", required=True)}),
    "bands": Key("list", fields=_BAND),
    "bands_on": Key("string"),
    "bands_source": Key("string"),
    "remission": Key("object", nullable=True, fields={
        "op": Key("string", required=True), "value": Key("number", required=True),
        "source": Key("string")}),
    "response": Key("object", nullable=True, fields={"reduction": Key("number", required=True),
                                                     "source": Key("string")}),
    "reliability": Key("object", nullable=True, fields={
        "value": Key("number", required=True), "kind": Key("string", required=True),
        "source": Key("string", required=True)}),
    "norms": Key("map", nullable=True, names=("functional", "dysfunctional"), fields={
        "mean": Key("number", required=True), "sd": Key("number", required=True),
        "source": Key("string")}),
    "source_scoring": Key("string"),
    "default_scoring": Key("string"),
}
#: Keys a named scoring may not change.
_FIXED = ("id", "n_items", "schema_version", "scorings", "default_scoring")
SCHEMA["scorings"] = Key("map", fields={
    name: Key(key.kind, nullable=key.nullable, fields=key.fields, values=key.values, names=key.names)
    for name, key in SCHEMA.items() if name not in _FIXED})


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_value(value: Any, key: Key, path: str, problems: list[str]) -> None:
    """Append to ``problems`` what is wrong with the shape of one value (recursing into objects)."""
    if value is None:
        if not key.nullable:
            problems.append(f"{path}: expected {_EXPECTED[key.kind]}, got null")
        return
    kind = key.kind
    plain = {"string": lambda v: isinstance(v, str), "integer": _is_int, "number": _is_number,
             "boolean": lambda v: isinstance(v, bool)}
    if kind in plain:
        if not plain[kind](value):
            problems.append(f"{path}: expected {_EXPECTED[kind]}, got {_shown(value)}")
    elif kind in ("items", "pair"):
        good = _is_int if kind == "items" else _is_number
        if (not isinstance(value, list) or not all(good(v) for v in value)
                or (kind == "pair" and len(value) != 2)):
            problems.append(f"{path}: expected {_EXPECTED[kind]}, got {_shown(value)}")
    elif kind == "object":
        _check_object(value, key.fields or {}, path, problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected {_EXPECTED[kind]}, got {_shown(value)}")
            return
        for i, entry in enumerate(value):
            _check_object(entry, key.fields or {}, _join(path, i), problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected {_EXPECTED[kind]}, got {_shown(value)}")
            return
        for name, entry in value.items():
            where = _join(path, name)
            if key.names and name not in key.names:
                problems.append(f"{where}: unknown name; allowed: {', '.join(key.names)}")
            elif key.values is not None:
                _check_value(entry, Key(key.values), where, problems)
            else:
                _check_object(entry, key.fields or {}, where, problems)


def _check_object(value: Any, fields: Mapping[str, Key], path: str, problems: list[str]) -> None:
    """Shape of an object: a JSON object, no unknown keys, every required key, each value's type."""
    if not isinstance(value, dict):
        problems.append(f"{path or 'definition'}: expected an object {{...}}, got {_shown(value)}")
        return
    for name in value:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
            problems.append(f"{_join(path, name)}: unknown key; {hint}")
    for name, key in fields.items():
        if name in value:
            _check_value(value[name], key, _join(path, name), problems)
        elif key.required:
            problems.append(f"{_join(path, name)}: required key is missing")


def ranges_text(numbers: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3, 7"`` (``"none"`` when empty)."""
    numbers = sorted(set(numbers))
    if not numbers:
        return "none"
    parts, start, prev = [], numbers[0], numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


class _Rules:
    """The checks that tie keys together, on a definition whose keys all have the right shape.

    ``at(key)`` is the path shown for a top-level key (it names the scoring that set the key).
    """

    def __init__(self, spec: Mapping[str, Any], at: Callable[[str], str]):
        self.spec, self.at = spec, at
        self.problems: list[str] = []
        self.n: int = spec["n_items"]
        self.answers: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def items(self, items: list[int], path: str, empty_ok: bool = False) -> list[int]:
        """The valid, distinct item numbers of a list (reporting the others)."""
        if not items and not empty_ok:
            self.add(path, "needs at least one item")
        good: list[int] = []
        for i in items:
            if not 1 <= i <= self.n:
                self.add(path, f"item {i} is not an item of the instrument (1-{self.n})")
            elif i in good:
                self.add(path, f"item {i} is listed more than once")
            else:
                good.append(i)
        return good

    def name(self, name: str, path: str, taken: dict[str, str], column: bool = True) -> None:
        """A name: an identifier, not used twice and, for a score column, not one theramark writes."""
        if not _NAME.fullmatch(name):
            self.add(path, f"'{name}' is not a valid name: use letters, digits and underscores, "
                           "starting with a letter")
        elif column and name in RESERVED_NAMES:
            self.add(path, f"'{name}' is a column theramark writes itself; choose another name")
        elif name in taken:
            self.add(path, f"'{name}' is already the name of {taken[name]}")
        taken[name] = path

    def choice(self, value: Any, allowed: tuple[Any, ...], path: str) -> bool:
        if value in allowed:
            return True
        self.add(path, f"expected one of {', '.join(map(_shown, allowed))}, got {_shown(value)}")
        return False

    def check(self) -> list[str]:
        spec, at = self.spec, self.at
        if not _ID.fullmatch(spec["id"]):
            self.add(at("id"), f"'{spec['id']}' is not a valid instrument id: use lower-case letters, "
                               "digits and underscores, starting with a letter (item columns are "
                               "<id>_<n>)")
        for key in ("name", "source"):
            if not spec[key].strip():
                self.add(at(key), "must not be empty" + (
                    "; say where the scoring rules come from (a publication or the study protocol)"
                    if key == "source" else ""))
        version = spec.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            self.add(at("schema_version"),
                     f"this theramark reads version {SCHEMA_VERSION} definitions, got {version}")
        if not 1 <= self.n <= MAX_ITEMS:
            self.add(at("n_items"), f"must be between 1 and {MAX_ITEMS}, got {self.n}")
            return self.problems
        lo, hi = self.item_ranges()
        if lo is None or hi is None:
            return self.problems
        self.answers = (lo, hi)
        self.items(spec.get("reverse", []), at("reverse"), empty_ok=True)
        score_lo, score_hi = self.recode(lo, hi)
        self.total(score_lo, score_hi)
        self.scorings()
        return self.problems

    def item_ranges(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Allowed answers of every item, from ``values`` and ``item_values``."""
        spec, at = self.spec, self.at
        before = len(self.problems)
        lo = np.full(self.n, np.nan)
        hi = np.full(self.n, np.nan)
        values = spec.get("values")
        if values is not None:
            self.answer_range(values, at("values"))
            lo[:], hi[:] = values["min"], values["max"]
        owner: dict[int, str] = {}
        for g, group in enumerate(spec.get("item_values", [])):
            path = _join(at("item_values"), g)
            self.answer_range(group, path)
            for i in self.items(group["items"], _join(path, "items")):
                if i in owner:
                    self.add(_join(path, "items"), f"item {i} is already listed in {owner[i]}")
                owner[i] = path
                lo[i - 1], hi[i - 1] = group["min"], group["max"]
        unset = [i + 1 for i in np.flatnonzero(np.isnan(lo))]
        if unset:
            self.add(at("values"), f"items {ranges_text(unset)} have no allowed answers: give "
                                   "values {\"min\", \"max\"} or list them in item_values")
        if len(self.problems) > before:
            return None, None
        return lo, hi

    def answer_range(self, spec: Mapping[str, int], path: str) -> None:
        low, high = spec["min"], spec["max"]
        if low >= high:
            self.add(path, f"min ({low}) must be less than max ({high})")
        elif max(abs(low), abs(high)) > MAX_ANSWER:
            self.add(path, f"answers are codes between -{MAX_ANSWER} and {MAX_ANSWER}, got {low}-{high}")

    def recode(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Item score bounds after recoding (checking that every allowed answer is recoded)."""
        recode = self.spec.get("recode")
        if not recode:
            return lo, hi
        path = self.at("recode")
        if hi.max() - lo.min() >= MAX_RECODED:
            self.add(path, f"a recoding lists every allowed answer; answers {lo.min():g}-{hi.max():g} "
                           f"are too many (at most {MAX_RECODED})")
            return lo, hi
        allowed = sorted({a for low, high in set(zip(lo, hi, strict=True))
                          for a in range(int(low), int(high) + 1)})
        given = set()
        for answer in recode:
            if not re.fullmatch(r"-?\d+", answer.strip()):
                self.add(_join(path, answer), f"answers are integers, got '{answer}'")
            elif int(answer) not in allowed:
                self.add(_join(path, answer),
                         f"{answer} is not an allowed answer (allowed: {ranges_text(allowed)})")
            else:
                given.add(int(answer))
        missed = [a for a in allowed if a not in given]
        if missed:
            which = f"answers {ranges_text(missed)} have" if len(missed) > 1 else f"answer {missed[0]} has"
            self.add(path, f"{which} no recoded value (every allowed answer needs one: "
                           f"{ranges_text(allowed)})")
        values = list(recode.values())
        return np.full(self.n, min(values), dtype=float), np.full(self.n, max(values), dtype=float)

    def total(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Domains, total, range, index, bands and outcome criteria."""
        spec, at = self.spec, self.at
        total = spec["total"]
        rule = total["rule"]
        tpath = at("total")
        domains = spec.get("domains", [])
        taken: dict[str, str] = {}
        domain_names: dict[str, str] = {}
        seen: dict[int, str] = {}
        u_lo, u_hi = [], []
        for d, domain in enumerate(domains):
            path = _join(at("domains"), d)
            self.name(domain["name"], _join(path, "name"), domain_names, column=False)
            self.choice(domain.get("rule", "max"), ("max",), _join(path, "rule"))
            good = self.items(domain["items"], _join(path, "items"))
            for i in good:
                if i in seen:
                    self.add(_join(path, "items"), f"item {i} is already in {seen[i]}")
                seen[i] = path
            if good:
                u_lo.append(lo[np.asarray(good) - 1].max())
                u_hi.append(hi[np.asarray(good) - 1].max())
        if rule is not None and self.choice(rule, ("sum", "mean"), _join(tpath, "rule")):
            if domains:
                if "items" in total:
                    self.add(_join(tpath, "items"), "not used with domains: the total is formed "
                                                    "from the domains")
                n_units = len(domains)
            else:
                good = self.items(total.get("items", list(range(1, self.n + 1))), _join(tpath, "items"))
                n_units = len(good)
                idx = np.asarray(good, dtype=int) - 1
                u_lo, u_hi = list(lo[idx]), list(hi[idx])
            self.max_missing(total.get("max_missing", 0), n_units, _join(tpath, "max_missing"))
            bounds = self.bounds(u_lo, u_hi, rule) if u_lo else None
            self.range(bounds)
        else:
            bounds = None
            if rule is None:
                for key in ("items", "max_missing"):
                    if total.get(key):
                        self.add(_join(tpath, key), "the instrument has no total (total.rule is null)")
                if domains:
                    self.add(at("domains"), "domains form the total, but total.rule is null")
                if not spec.get("subscales") and not spec.get("counts"):
                    self.add(_join(tpath, "rule"), "the instrument scores nothing: give a total rule "
                                                   "(sum or mean) or subscales")
                if spec.get("range") is not None:
                    self.add(at("range"), "the instrument has no total (total.rule is null); use null")
                for key in ("index", "remission", "response", "reliability", "norms"):
                    if spec.get(key):
                        self.add(at(key), "needs a total, but total.rule is null")
        self.index_and_bands(bounds)
        self.outcome_criteria()
        self.subscales(lo, hi, taken)
        self.counts(taken)

    @staticmethod
    def bounds(u_lo: list[float], u_hi: list[float], rule: str) -> tuple[float, float]:
        if rule == "sum":
            return float(np.sum(u_lo)), float(np.sum(u_hi))
        return float(np.min(u_lo)), float(np.max(u_hi))

    def max_missing(self, value: int, n_units: int, path: str) -> None:
        if value < 0:
            self.add(path, f"must be 0 or more, got {value}")
        elif n_units and value >= n_units:
            self.add(path, f"{value} would let every one of the {n_units} units be missing; "
                           f"at most {n_units - 1}")

    def range(self, bounds: tuple[float, float] | None) -> None:
        given = self.spec.get("range")
        if given is None or bounds is None:
            return
        if not np.allclose(given, bounds, rtol=1e-9, atol=1e-9):
            rule = self.spec["total"]["rule"]
            self.add(self.at("range"), f"{_shown(given)} does not follow from the items: their {rule} "
                                       f"goes from {bounds[0]:g} to {bounds[1]:g}")

    def bands(self, bands: list[dict[str, Any]], path: str, high: float | None, what: str) -> None:
        labels: set[str] = set()
        previous: tuple[float, bool] | None = None
        for b, band in enumerate(bands):
            where = _join(path, b)
            if ("from" in band) == ("above" in band):
                self.add(where, "give exactly one of 'from' (score >= value) or 'above' (score > value)")
                continue
            if band["label"] in labels:
                self.add(_join(where, "label"), f"'{band['label']}' is used by another band")
            labels.add(band["label"])
            strict = "above" in band
            threshold = float(band["above"] if strict else band["from"])
            if previous is not None and (threshold, strict) <= previous:
                self.add(where, f"bands must be in ascending order: '{band['label']}' starts at "
                                f"{threshold:g}, not above the band before it ({previous[0]:g})")
            previous = (threshold, strict)
            if high is not None and (threshold > high or (strict and threshold >= high)):
                self.add(where, f"band '{band['label']}' can never apply: the highest possible {what} "
                                f"is {high:g}")

    def index_and_bands(self, bounds: tuple[float, float] | None) -> None:
        spec, at = self.spec, self.at
        index = spec.get("index")
        if index is not None and index["multiply"] <= 0:
            self.add(_join(at("index"), "multiply"), f"must be positive, got {index['multiply']:g}")
        bands_on = spec.get("bands_on", "total")
        if self.choice(bands_on, ("total", "index"), at("bands_on")) and bands_on == "index" and not index:
            self.add(at("bands_on"), "bands on the index need an 'index' key")
        bands = spec.get("bands", [])
        if bands and spec["total"]["rule"] is None:
            self.add(at("bands"), "the instrument has no total (total.rule is null); put bands on "
                                  "its subscales")
            return
        high = None
        if bounds is not None:
            factor = index["multiply"] if bands_on == "index" and index and index["multiply"] > 0 else 1
            high = bounds[1] * factor
        self.bands(bands, at("bands"), high, bands_on)

    def outcome_criteria(self) -> None:
        spec, at = self.spec, self.at
        remission = spec.get("remission")
        if remission:
            self.choice(remission["op"], ("<=", "<"), _join(at("remission"), "op"))
        response = spec.get("response")
        if response and not 0 < response["reduction"] <= 1:
            self.add(_join(at("response"), "reduction"),
                     f"a fraction of the baseline (0.5 = 50% reduction), got {response['reduction']:g}")
        reliability = spec.get("reliability")
        if reliability and not 0 < reliability["value"] < 1:
            self.add(_join(at("reliability"), "value"),
                     f"must be between 0 and 1 (exclusive), got {reliability['value']:g}")
        for kind, norm in (spec.get("norms") or {}).items():
            if norm["sd"] <= 0:
                self.add(_join(_join(at("norms"), kind), "sd"), f"must be positive, got {norm['sd']:g}")

    def subscales(self, lo: np.ndarray, hi: np.ndarray, taken: dict[str, str]) -> None:
        for s, sub in enumerate(self.spec.get("subscales", [])):
            path = _join(self.at("subscales"), s)
            self.name(sub["name"], _join(path, "name"), taken)
            rule = sub.get("rule", "sum")
            ok = self.choice(rule, ("sum", "mean"), _join(path, "rule"))
            good = self.items(sub["items"], _join(path, "items"))
            self.max_missing(sub.get("max_missing", 0), len(good), _join(path, "max_missing"))
            idx = np.asarray(good, dtype=int) - 1
            high = self.bounds(list(lo[idx]), list(hi[idx]), rule)[1] if ok and good else None
            self.bands(sub.get("bands", []), _join(path, "bands"), high, f"{sub['name']} score")

    def counts(self, taken: dict[str, str]) -> None:
        spec = self.spec
        lo, hi = self.answers
        for c, count in enumerate(spec.get("counts", [])):
            path = _join(self.at("counts"), c)
            self.name(count["name"], _join(path, "name"), taken)
            for i in self.items(count["items"], _join(path, "items")):
                if not lo[i - 1] <= count["value"] <= hi[i - 1]:
                    self.add(_join(path, "value"), f"{count['value']} is not an allowed answer of item "
                                                   f"{i} ({int(lo[i - 1])}-{int(hi[i - 1])})")

    def scorings(self) -> None:
        spec, at = self.spec, self.at
        variants = spec.get("scorings", {})
        default = spec.get("default_scoring", "default")
        if not _ID.fullmatch(default):
            self.add(at("default_scoring"), f"'{default}' is not a valid scoring name (lower-case "
                                            "letters, digits, underscores)")
        for name in variants:
            if name in (default, "default") or not _ID.fullmatch(name):
                self.add(_join(at("scorings"), name),
                         f"'{name}' cannot name a scoring: use lower-case letters, digits and "
                         f"underscores, other than 'default' and the default scoring's name")


def validate_definition(spec: Any, origin: str | None = None) -> None:
    """Check an instrument definition (every key, and every named scoring applied in turn).

    Parameters
    ----------
    spec : Any
        The parsed JSON of a definition.
    origin : str, optional
        What the definition is (its file), starting every message. Default:
        ``instrument '<id>'``.

    Raises
    ------
    BadInputError
        Naming the origin, the key path (``subscales[1].items``; list positions from 0) and what is
        wrong; one problem per line when there are several.
    """
    if origin is None:
        ident = spec.get("id") if isinstance(spec, dict) else None
        origin = f"instrument '{ident}'" if isinstance(ident, str) else "instrument definition"
    if not isinstance(spec, dict):
        raise BadInputError(f"{origin}: expected a JSON object with the instrument's keys, "
                            f"got {_shown(spec)}")
    variants = spec.get("scorings")
    problems = [f"scorings.{name}.{key}: a named scoring cannot change '{key}'"
                for name, variant in (variants.items() if isinstance(variants, dict) else ())
                if isinstance(variant, dict) for key in _FIXED if key in variant]
    if not problems:
        _check_object(spec, SCHEMA, "", problems)
    if not problems:
        problems = _Rules(spec, lambda key: key).check()
    if not problems:
        for name, variant in spec.get("scorings", {}).items():

            def at(key: str, name: str = name, variant: dict = variant) -> str:
                return f"scorings.{name}.{key}" if key in variant else f"{key} (in scoring '{name}')"

            problems.extend(_Rules({**spec, **variant}, at).check())
    if len(problems) == 1:
        raise BadInputError(f"{origin}: {problems[0]}")
    if problems:
        raise BadInputError(f"{origin}: {len(problems)} problems in the instrument definition", problems)


# ---------------------------------------------------------------------------------------------------
# Building an Instrument


def _bands(spec: list[dict[str, Any]]) -> tuple[Band, ...]:
    return tuple(Band(entry["label"], float(entry["above"]), strict=True) if "above" in entry
                 else Band(entry["label"], float(entry["from"])) for entry in spec)


def parse_instrument(spec: Mapping[str, Any], scoring: str | None = None,
                     origin: str | None = None) -> Instrument:
    """Check a definition mapping (the content of a JSON file) and build its :class:`Instrument`.

    Parameters
    ----------
    spec : mapping
        The definition (see ``docs/instruments.md`` and the files in ``theramark/scales/instruments``).
    scoring : str, optional
        A named alternative scoring (``spec["scorings"]``) whose keys replace the defaults,
        e.g. ``"continuous"`` for the SHAPS. ``None``, ``"default"`` or the ``default_scoring``
        name is the default scoring.
    origin : str, optional
        Where the definition comes from (a file), named in messages and kept on the instrument.

    Raises
    ------
    BadInputError
        If the definition breaks a rule of the format (see :func:`validate_definition`) or the
        scoring does not exist.
    """
    validate_definition(spec, origin)
    return _build(spec, scoring, origin)


def _build(spec: Mapping[str, Any], scoring: str | None, origin: str | None) -> Instrument:
    """The :class:`Instrument` of a definition already checked by :func:`validate_definition`."""
    definition = copy.deepcopy(dict(spec))
    ident = definition["id"]
    variants = definition.get("scorings", {})
    default_name = definition.get("default_scoring", "default")
    if scoring in (None, "default", default_name):
        scoring = None
        spec = definition
    else:
        if scoring not in variants:
            raise BadInputError(
                f"{origin or f'instrument {ident!r}'}: unknown scoring '{scoring}'; available: "
                + ", ".join([default_name, *variants])
            )
        spec = {**definition, **copy.deepcopy(variants[scoring])}
    n_items = spec["n_items"]
    values = spec.get("values") or {"min": 0, "max": 0}
    item_min = np.full(n_items, values["min"], dtype=int)
    item_max = np.full(n_items, values["max"], dtype=int)
    for group in spec.get("item_values", []):
        idx = np.asarray(group["items"]) - 1
        item_min[idx], item_max[idx] = group["min"], group["max"]
    recode = spec.get("recode")
    total = spec["total"]
    domains = tuple(Domain(d["name"], tuple(d["items"]), d.get("rule", "max"))
                    for d in spec.get("domains", []))
    subscales = tuple(
        Subscale(s["name"], tuple(s["items"]), s.get("rule", "sum"), s.get("max_missing", 0),
                 _bands(s.get("bands", [])))
        for s in spec.get("subscales", [])
    )
    counts = tuple(Count(c["name"], tuple(c["items"]), c["value"]) for c in spec.get("counts", []))
    index = spec.get("index")
    inst = Instrument(
        id=ident, name=spec["name"], source=spec["source"], construct=spec.get("construct", ""),
        rater=spec.get("rater", ""), higher_is_worse=spec.get("higher_is_worse"), n_items=n_items,
        item_min=item_min, item_max=item_max, reverse=tuple(spec.get("reverse", [])),
        recode={int(k): float(v) for k, v in recode.items()} if recode else None, domains=domains,
        total_rule=total["rule"], total_items=tuple(total.get("items", range(1, n_items + 1))),
        max_missing=total.get("max_missing", 0), missing_source=total.get("missing_source", ""),
        range=None, subscales=subscales, counts=counts,
        bands=_bands(spec.get("bands", [])), bands_on=spec.get("bands_on", "total"),
        bands_source=spec.get("bands_source", ""),
        index_multiplier=float(index["multiply"]) if index else None,
        remission=spec.get("remission"), response=spec.get("response"),
        reliability=spec.get("reliability"), norms=spec.get("norms"),
        scoring=scoring or default_name, scorings=(default_name, *variants), raw=spec,
        origin=origin or "", definition=definition,
    )
    rng = spec.get("range")
    if rng is None and inst.total_rule is not None:
        rng = _computed_range(inst)
    return dataclasses.replace(inst, range=(float(rng[0]), float(rng[1])) if rng is not None else None)


def _computed_range(inst: Instrument) -> tuple[float, float]:
    """Lowest and highest possible total, from the item ranges, keys, recoding and total rule."""
    lo, hi = inst.item_score_bounds()
    if inst.domains:
        u_lo = [lo[np.asarray(d.items) - 1].max() for d in inst.domains]
        u_hi = [hi[np.asarray(d.items) - 1].max() for d in inst.domains]
    else:
        idx = np.asarray(inst.total_items) - 1
        u_lo, u_hi = list(lo[idx]), list(hi[idx])
    return _Rules.bounds(u_lo, u_hi, str(inst.total_rule))


# ---------------------------------------------------------------------------------------------------
# Packaged instruments


@cache
def _read_spec(instrument_id: str) -> str:
    return resources.files(_PACKAGE).joinpath(_FOLDER, f"{instrument_id}.json").read_text(encoding="utf-8")


@cache
def _package_spec(instrument_id: str) -> dict[str, Any]:
    """A packaged definition, checked once (callers get copies: :func:`_build` copies it)."""
    spec = json.loads(_read_spec(instrument_id))
    validate_definition(spec, _package_origin(instrument_id))
    return spec


def _package_origin(instrument_id: str) -> str:
    return f"theramark/scales/instruments/{instrument_id}.json"


def available_instruments() -> list[str]:
    """Ids of every instrument defined in the package, sorted (a study's own: :class:`InstrumentLibrary`)."""
    return sorted(
        entry.name[:-5] for entry in resources.files(_PACKAGE).joinpath(_FOLDER).iterdir()
        if entry.name.endswith(".json")
    )


def load_instrument(instrument: str | Instrument, scoring: str | None = None) -> Instrument:
    """The :class:`Instrument` of a packaged id (``"phq9"``) or of an instrument, with a named scoring.

    Parameters
    ----------
    instrument : str or Instrument
        A packaged instrument's id, or an :class:`Instrument` (a study's own, from
        :meth:`InstrumentLibrary.get`), returned as is or with the scoring switched.
    scoring : str, optional
        A named alternative scoring (``None``: the default, or the instrument's current one).

    Raises
    ------
    BadInputError
        If the id is unknown (the message lists the known ids) or the scoring does not exist.
    """
    if isinstance(instrument, Instrument):
        if scoring is None or scoring == instrument.scoring:
            return instrument
        if instrument.definition is None:
            return parse_instrument(instrument.raw, scoring, instrument.origin or None)
        return _build(instrument.definition, scoring, instrument.origin or None)
    ident = str(instrument).strip().lower()
    known = available_instruments()
    if ident not in known:
        raise BadInputError(
            f"unknown instrument '{instrument}'; known instruments: {', '.join(known)} (a study's "
            f"own instruments are loaded from {STUDY_FOLDER.as_posix()}/ or --instruments)")
    return _build(_package_spec(ident), scoring, _package_origin(ident))


# ---------------------------------------------------------------------------------------------------
# A study's own instruments


def read_definition(path: str | os.PathLike, shown: str | None = None) -> dict[str, Any]:
    """Read one instrument JSON file and check it (every scoring included).

    Parameters
    ----------
    path : path-like
        The JSON file.
    shown : str, optional
        How messages name the file (default: ``path`` as given).

    Returns
    -------
    dict
        The definition, as written.

    Raises
    ------
    BadInputError
        If the file cannot be read, is not JSON, or breaks a rule of the format.
    """
    path = Path(path)
    shown = shown or str(path)
    if not path.is_file():
        raise BadInputError(f"{shown}: instrument file not found")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{shown}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{shown}: not UTF-8 text") from None
    except OSError as exc:
        raise BadInputError(f"{shown}: cannot be read ({exc.strerror})") from None
    validate_definition(spec, shown)
    return spec


@dataclass(frozen=True)
class _StudyFile:
    spec: dict[str, Any]
    shown: str
    path: Path


class InstrumentLibrary:
    """The instruments a study can score: theramark's packaged ones plus the study's own files.

    Parameters
    ----------
    files : iterable of path-like
        A study's instrument JSON files. Each is read and checked here (see
        :func:`validate_definition`); the same file given twice counts once.
    root : path-like, optional
        Files under this folder (the BIDS dataset) are named relative to it in messages.

    Raises
    ------
    BadInputError
        If a file is bad, two files define the same id (naming both), or a file reuses the id of a
        packaged instrument with a different definition (repeating one unchanged is allowed).

    See Also
    --------
    instrument_library : finds the files of a BIDS dataset and of the config.

    Examples
    --------
    >>> library = InstrumentLibrary()            # the packaged instruments only
    >>> "phq9" in library and library.get("phq9").n_items
    9
    """

    def __init__(self, files: Iterable[str | os.PathLike] = (), *,
                 root: str | os.PathLike | None = None):
        self._packaged = tuple(available_instruments())
        self._study: dict[str, _StudyFile] = {}
        read: set[Path] = set()
        for file in files:
            path = Path(file)
            if path.resolve() in read:
                continue
            read.add(path.resolve())
            shown = _shown_path(path, root)
            spec = read_definition(path, shown)
            ident = spec["id"]
            if ident in self._packaged:
                if spec == _package_spec(ident):
                    continue  # a copy of the packaged definition: nothing to add
                raise BadInputError(
                    f"{shown}: id '{ident}' is a packaged instrument ({_package_origin(ident)}) and this "
                    "definition differs from it. A study file may repeat a packaged definition only "
                    f"unchanged; give a modified version its own id (e.g. '{ident}_study', item columns "
                    f"{ident}_study_<n>).")
            if ident in self._study:
                raise BadInputError(
                    f"instrument id '{ident}' is defined twice: in {self._study[ident].shown} and in "
                    f"{shown}; each instrument needs its own id")
            self._study[ident] = _StudyFile(spec, shown, path)

    def ids(self) -> list[str]:
        """Every instrument id (packaged and the study's), sorted."""
        return sorted({*self._packaged, *self._study})

    def study_ids(self) -> list[str]:
        """Ids of the study's own instruments, sorted."""
        return sorted(self._study)

    def origin(self, ident: str) -> str:
        """Where an instrument is defined: its study file (as shown in messages) or the package's."""
        key = self._key(ident)
        return self._study[key].shown if key in self._study else _package_origin(key)

    def path(self, ident: str) -> Path | None:
        """The study file defining an instrument, or None for a packaged one."""
        key = self._key(ident)
        return self._study[key].path if key in self._study else None

    def get(self, instrument: str | Instrument, scoring: str | None = None) -> Instrument:
        """The :class:`Instrument` of an id (or an instrument, with ``scoring`` applied).

        Raises
        ------
        BadInputError
            If the id is unknown (the message lists the known ids) or the scoring does not exist.
        """
        if isinstance(instrument, Instrument):
            return load_instrument(instrument, scoring)
        key = self._key(instrument)
        if key in self._study:
            entry = self._study[key]
            return _build(entry.spec, scoring, entry.shown)  # checked when the file was read
        return load_instrument(key, scoring)

    def _key(self, ident: str) -> str:
        key = str(ident).strip().lower()
        if key not in self._study and key not in self._packaged:
            study = f"; study instruments: {', '.join(self._study)}" if self._study else (
                f" (a study's own instruments are loaded from {STUDY_FOLDER.as_posix()}/ or "
                "--instruments)")
            raise BadInputError(f"unknown instrument '{ident}'; known instruments: "
                                f"{', '.join(self._packaged)}{study}")
        return key

    def __contains__(self, ident: object) -> bool:
        key = str(ident).strip().lower()
        return key in self._study or key in self._packaged

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __len__(self) -> int:
        return len(self.ids())

    def __repr__(self) -> str:
        return (f"InstrumentLibrary({len(self._packaged)} packaged, study: "
                f"{', '.join(self.study_ids()) or 'none'})")


def _shown_path(path: Path, root: str | os.PathLike | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def instrument_files(bids_dir: str | os.PathLike | None = None,
                     paths: Iterable[str | os.PathLike] = (),
                     base_dir: str | os.PathLike | None = None) -> list[Path]:
    """A study's instrument files: ``<bids_dir>/code/theramark/instruments/*.json`` plus ``paths``.

    Parameters
    ----------
    bids_dir : path-like, optional
        The BIDS dataset; its ``code/theramark/instruments/`` folder is read when it exists.
    paths : iterable of path-like
        JSON files, or folders whose ``*.json`` files are all read (not recursively).
    base_dir : path-like, optional
        Relative ``paths`` are relative to this folder (the config file's); default: the working
        directory.

    Raises
    ------
    BadInputError
        If a path does not exist or a given folder holds no ``*.json`` file.
    """
    files: list[Path] = []
    if bids_dir is not None:
        folder = Path(bids_dir) / STUDY_FOLDER
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.json")))
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for given in paths:
        if not isinstance(given, str | os.PathLike):
            raise BadInputError(f"instrument paths must be file or folder names, got {_shown(given)}")
        path = Path(given)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise BadInputError(f"instrument folder '{given}' ({path}) holds no *.json file")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            where = f" (looked for {path})" if str(path) != str(given) else ""
            raise BadInputError(f"instrument path '{given}' not found{where}")
    return files


def instrument_library(bids_dir: str | os.PathLike | None = None,
                       paths: Iterable[str | os.PathLike] = (),
                       base_dir: str | os.PathLike | None = None) -> InstrumentLibrary:
    """The packaged instruments plus a study's own (see :func:`instrument_files`), every file checked.

    Parameters
    ----------
    bids_dir : path-like, optional
        The BIDS dataset; ``code/theramark/instruments/*.json`` is found automatically.
    paths : iterable of path-like
        More JSON files or folders (``[scales] instruments`` of the config, ``--instruments``).
    base_dir : path-like, optional
        Relative ``paths`` are relative to this folder (the config file's folder).

    Returns
    -------
    InstrumentLibrary

    Raises
    ------
    BadInputError
        For a missing path, a bad definition (naming the file and key), two files with the same id,
        or a file that changes a packaged instrument under its id.

    Examples
    --------
    >>> library = instrument_library()  # no study: the packaged instruments
    >>> library.get("shaps", "continuous").range
    (14.0, 56.0)
    """
    return InstrumentLibrary(instrument_files(bids_dir, paths, base_dir), root=bids_dir)
