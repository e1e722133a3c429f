"""Instrument definitions: scoring rules stored as data, one JSON file per instrument.

Each file in ``theramark/scales/instruments/`` states an instrument's items and allowed answers,
reverse-keyed items, optional recoding (SHAPS) and domains (QIDS-SR16), the total and subscale rules,
the missing-item rule, severity bands, remission and response criteria, reliability and norms, each
with its published source. No item wording is stored (much of it is copyrighted).

:func:`load_instrument` reads and checks one file and returns an :class:`Instrument`;
:func:`available_instruments` lists the ids.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from theramark.errors import BadInputError

_PACKAGE = "theramark.scales"
_FOLDER = "instruments"  # package data (pyproject: scales/instruments/*.json), not a package


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


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise BadInputError(f"{where}: expected a list of item numbers, got {value!r}")
    return tuple(value)


def _bands(spec: list[dict[str, Any]], where: str) -> tuple[Band, ...]:
    bands = []
    for entry in spec or []:
        if "from" in entry:
            bands.append(Band(entry["label"], float(entry["from"])))
        elif "above" in entry:
            bands.append(Band(entry["label"], float(entry["above"]), strict=True))
        else:
            raise BadInputError(f"{where}: band {entry!r} needs 'from' or 'above'")
    thresholds = [b.threshold for b in bands]
    if thresholds != sorted(thresholds):
        raise BadInputError(f"{where}: bands must be in ascending order, got {thresholds}")
    return tuple(bands)


def parse_instrument(spec: dict[str, Any], scoring: str | None = None) -> Instrument:
    """Build an :class:`Instrument` from a definition mapping (the content of a JSON file).

    Parameters
    ----------
    spec : dict
        The definition (see the files in ``theramark/scales/instruments``).
    scoring : str, optional
        A named alternative scoring (``spec["scorings"]``) whose keys replace the defaults,
        e.g. ``"continuous"`` for the SHAPS. ``None`` or ``"default"`` is the default scoring.
    """
    ident = spec["id"]
    where = f"instrument '{ident}'"
    variants = spec.get("scorings") or {}
    default_name = spec.get("default_scoring", "default")
    if scoring in (None, "default", default_name):
        scoring = None
    else:
        if scoring not in variants:
            raise BadInputError(
                f"{where}: unknown scoring '{scoring}'; available: "
                + ", ".join([default_name, *variants])
            )
        spec = {**copy.deepcopy(spec), **variants[scoring]}
    n_items = int(spec["n_items"])
    item_min = np.full(n_items, spec.get("values", {}).get("min", 0), dtype=int)
    item_max = np.full(n_items, spec.get("values", {}).get("max", 0), dtype=int)
    for group in spec.get("item_values", []):
        idx = np.array(_int_list(group["items"], where)) - 1
        item_min[idx], item_max[idx] = group["min"], group["max"]
    if np.any(item_max <= item_min):
        raise BadInputError(f"{where}: every item needs min < max")
    reverse = _int_list(spec.get("reverse", []), where)
    recode = spec.get("recode")
    recode = {int(k): float(v) for k, v in recode.items()} if recode else None
    total = spec.get("total", {})
    total_items = _int_list(total.get("items", list(range(1, n_items + 1))), where)
    domains = tuple(
        Domain(d["name"], _int_list(d["items"], where), d.get("rule", "max"))
        for d in spec.get("domains", [])
    )
    subscales = tuple(
        Subscale(s["name"], _int_list(s["items"], where), s.get("rule", "sum"),
                 int(s.get("max_missing", 0)), _bands(s.get("bands", []), f"{where} {s['name']}"))
        for s in spec.get("subscales", [])
    )
    counts = tuple(Count(c["name"], _int_list(c["items"], where), int(c["value"]))
                   for c in spec.get("counts", []))
    every = [*reverse, *total_items, *(i for d in domains for i in d.items),
             *(i for s in subscales for i in s.items), *(i for c in counts for i in c.items)]
    outside = sorted({i for i in every if not 1 <= i <= n_items})
    if outside:
        raise BadInputError(f"{where}: item numbers {outside} outside 1-{n_items}")
    index = spec.get("index")
    rng = spec.get("range")
    return Instrument(
        id=ident, name=spec["name"], source=spec["source"], construct=spec.get("construct", ""),
        rater=spec.get("rater", ""), higher_is_worse=spec.get("higher_is_worse"), n_items=n_items,
        item_min=item_min, item_max=item_max, reverse=reverse, recode=recode, domains=domains,
        total_rule=total.get("rule"), total_items=total_items,
        max_missing=int(total.get("max_missing", 0)), missing_source=total.get("missing_source", ""),
        range=tuple(rng) if rng else None, subscales=subscales, counts=counts,
        bands=_bands(spec.get("bands", []), where), bands_on=spec.get("bands_on", "total"),
        bands_source=spec.get("bands_source", ""),
        index_multiplier=float(index["multiply"]) if index else None,
        remission=spec.get("remission"), response=spec.get("response"),
        reliability=spec.get("reliability"), norms=spec.get("norms"),
        scoring=scoring or default_name, scorings=(default_name, *variants), raw=spec,
    )


@cache
def _read_spec(instrument_id: str) -> str:
    return resources.files(_PACKAGE).joinpath(_FOLDER, f"{instrument_id}.json").read_text(encoding="utf-8")


def available_instruments() -> list[str]:
    """Ids of every instrument defined in the package, sorted."""
    return sorted(
        entry.name[:-5] for entry in resources.files(_PACKAGE).joinpath(_FOLDER).iterdir()
        if entry.name.endswith(".json")
    )


def load_instrument(instrument: str | Instrument, scoring: str | None = None) -> Instrument:
    """The :class:`Instrument` of an id (``"phq9"``), optionally with a named scoring.

    Raises
    ------
    BadInputError
        If the id is unknown (the message lists the known ids) or the scoring does not exist.
    """
    if isinstance(instrument, Instrument):
        if scoring is None or scoring == instrument.scoring:
            return instrument
        return parse_instrument(instrument.raw, scoring)
    ident = str(instrument).strip().lower()
    known = available_instruments()
    if ident not in known:
        raise BadInputError(f"unknown instrument '{instrument}'; known instruments: {', '.join(known)}")
    return parse_instrument(json.loads(_read_spec(ident)), scoring)
