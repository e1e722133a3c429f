"""Every definition is checked on load: packaged ones pass, malformed ones fail with a precise message."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from theramark.errors import BadInputError
from theramark.scales.definitions import (
    RESERVED_NAMES,
    SCHEMA,
    available_instruments,
    instrument_library,
    load_instrument,
    parse_instrument,
    validate_definition,
)
from theramark.scales.engine import FLAG_COLUMNS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "instruments.md"
PACKAGE = Path(__file__).resolve().parents[2] / "src" / "theramark" / "scales" / "instruments"
FILE = "code/theramark/instruments/mysc.json"

#: A valid study-specific definition; each malformed case below breaks one rule of it.
BASE = {
    "schema_version": 1, "id": "mysc", "name": "My study scale", "source": "Study protocol v2",
    "n_items": 10, "values": {"min": 0, "max": 3}, "reverse": [2, 5],
    "total": {"rule": "sum", "max_missing": 2},
    "subscales": [{"name": "anticipation", "items": [1, 2, 3, 4, 5]},
                  {"name": "savouring", "items": [6, 7, 8, 9, 10], "rule": "mean"}],
    "bands": [{"label": "none", "from": 0}, {"label": "moderate", "from": 10},
              {"label": "severe", "above": 20}],
    "remission": {"op": "<", "value": 8}, "response": {"reduction": 0.5},
}


def _set(path, value):
    def edit(spec):
        *parents, last = path
        for key in parents:
            spec = spec[key]
        spec[last] = value
    return edit


def _drop(*path):
    def edit(spec):
        *parents, last = path
        for key in parents:
            spec = spec[key]
        del spec[last]
    return edit


def _both(*edits):
    def edit(spec):
        for one in edits:
            one(spec)
    return edit


MALFORMED = {
    "missing n_items": (_drop("n_items"), "n_items: required key is missing"),
    "missing total rule": (_drop("total", "rule"), "total.rule: required key is missing"),
    "n_items not an integer": (_set(["n_items"], "ten"), 'n_items: expected an integer, got "ten"'),
    "n_items as a float": (_set(["n_items"], 10.0), "n_items: expected an integer, got 10.0"),
    "zero items": (_set(["n_items"], 0), "n_items: must be between 1 and 1000, got 0"),
    "n_items typo": (_set(["n_items"], 100000), "n_items: must be between 1 and 1000, got 100000"),
    "subscale item outside": (_set(["subscales", 1, "items"], [6, 7, 12]),
                              "subscales[1].items: item 12 is not an item of the instrument (1-10)"),
    "subscale item twice": (_set(["subscales", 0, "items"], [1, 2, 2]),
                            "subscales[0].items: item 2 is listed more than once"),
    "empty subscale": (_set(["subscales", 0, "items"], []), "subscales[0].items: needs at least one item"),
    "subscale rule": (_set(["subscales", 0, "rule"], "average"),
                      'subscales[0].rule: expected one of "sum", "mean", got "average"'),
    "subscale named total": (_set(["subscales", 0, "name"], "total"),
                             "subscales[0].name: 'total' is a column theramark writes itself"),
    "subscale names repeat": (_set(["subscales", 1, "name"], "anticipation"),
                              "subscales[1].name: 'anticipation' is already the name of subscales[0].name"),
    "reverse item 0": (_set(["reverse"], [0, 2]), "reverse: item 0 is not an item of the instrument (1-10)"),
    "reverse item 11": (_set(["reverse"], [2, 11]), "reverse: item 11 is not an item of the instrument"),
    "reverse as text": (_set(["reverse"], ["2"]), 'reverse: expected a list of item numbers, got ["2"]'),
    "bands out of order": (_set(["bands"], [{"label": "moderate", "from": 10}, {"label": "none", "from": 0}]),
                           "bands[1]: bands must be in ascending order: 'none' starts at 0"),
    "band from and above": (_set(["bands", 0, "above"], 0), "bands[0]: give exactly one of 'from'"),
    "band unreachable": (_set(["bands", 2], {"label": "severe", "from": 31}),
                         "bands[2]: band 'severe' can never apply: the highest possible total is 30"),
    "band label repeated": (_set(["bands", 1, "label"], "none"),
                            "bands[1].label: 'none' is used by another band"),
    "unknown key typo": (_set(["reversed"], [2]), "reversed: unknown key; did you mean 'reverse'?"),
    "unknown nested key": (_set(["total", "max_mising"], 1),
                           "total.max_mising: unknown key; did you mean 'max_missing'?"),
    "values min above max": (_set(["values"], {"min": 3, "max": 0}),
                             "values: min (3) must be less than max (0)"),
    "huge answer codes": (_set(["values"], {"min": 0, "max": 10**20}),
                          "values: answers are codes between -1000000 and 1000000, got 0-"),
    "recode of a wide range": (_both(_set(["values", "max"], 5000), _set(["recode"], {"0": 0})),
                               "recode: a recoding lists every allowed answer; answers 0-5000 are too many"),
    "no allowed answers": (_drop("values"), "values: items 1-10 have no allowed answers"),
    "item_values overlap": (_set(["item_values"], [{"items": [1, 2], "min": 0, "max": 4},
                                                   {"items": [2], "min": 0, "max": 2}]),
                            "item_values[1].items: item 2 is already listed in item_values[0]"),
    "range inconsistent": (_set(["range"], [0, 27]),
                           "range: [0, 27] does not follow from the items: their sum goes from 0 to 30"),
    "max_missing every item": (_set(["total", "max_missing"], 10),
                               "total.max_missing: 10 would let every one of the 10 units be missing"),
    "invalid id": (_set(["id"], "My Scale"), "id: 'My Scale' is not a valid instrument id"),
    "empty source": (_set(["source"], " "), "source: must not be empty"),
    "recode incomplete": (_set(["recode"], {"0": 0, "1": 0, "2": 1}),
                          "recode: answer 3 has no recoded value"),
    "recode answer not allowed": (_set(["recode"], {"0": 0, "1": 0, "2": 1, "3": 1, "7": 1}),
                                  "recode.7: 7 is not an allowed answer (allowed: 0-3)"),
    "remission op": (_set(["remission", "op"], "=<"), 'remission.op: expected one of "<=", "<", got "=<"'),
    "response as percent": (_set(["response", "reduction"], 50),
                            "response.reduction: a fraction of the baseline (0.5 = 50% reduction), got 50"),
    "reliability of one": (_set(["reliability"], {"value": 1, "kind": "alpha", "source": "x"}),
                           "reliability.value: must be between 0 and 1 (exclusive), got 1"),
    "reliability without kind": (_set(["reliability"], {"value": 0.8, "source": "x"}),
                                 "reliability.kind: required key is missing"),
    "unknown norm": (_set(["norms"], {"clinical": {"mean": 20, "sd": 5}}),
                     "norms.clinical: unknown name; allowed: functional, dysfunctional"),
    "bands on a missing index": (_set(["bands_on"], "index"),
                                 "bands_on: bands on the index need an 'index' key"),
    "no total but bands": (_set(["total"], {"rule": None}),
                           "bands: the instrument has no total (total.rule is null)"),
    "count value not an answer": (_set(["counts"], [{"name": "extreme", "items": [1], "value": 4}]),
                                  "counts[0].value: 4 is not an allowed answer of item 1 (0-3)"),
    "domains overlap": (_set(["domains"], [{"name": "a", "items": [1, 2]}, {"name": "b", "items": [2, 3]}]),
                        "domains[1].items: item 2 is already in domains[0]"),
    "newer schema": (_set(["schema_version"], 2), "schema_version: this theramark reads version 1"),
    "direction as text": (_set(["higher_is_worse"], "yes"),
                          'higher_is_worse: expected true or false, got "yes"'),
    "list where object": (_set(["total"], [1]), "total: expected an object {...}, got [1]"),
    "scoring changes n_items": (_set(["scorings"], {"short": {"n_items": 5}}),
                                "scorings.short.n_items: a named scoring cannot change 'n_items'"),
    "scoring breaks a rule": (_set(["scorings"], {"lenient": {"total": {"rule": "sum", "max_missing": 12}}}),
                              "scorings.lenient.total.max_missing: 12 would let every one"),
    "scoring named default": (_set(["scorings"], {"default": {"bands": []}}),
                              "scorings.default: 'default' cannot name a scoring"),
}


def test_the_base_definition_is_valid():
    inst = parse_instrument(BASE)
    assert inst.range == (0.0, 30.0)  # computed: the definition states no range


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_definition_names_file_and_key(case, tmp_path):
    edit, expected = MALFORMED[case]
    spec = copy.deepcopy(BASE)
    edit(spec)
    folder = tmp_path / "code" / "theramark" / "instruments"
    folder.mkdir(parents=True)
    (folder / "mysc.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(BadInputError) as caught:
        instrument_library(bids_dir=tmp_path)
    assert type(caught.value) is BadInputError
    message = str(caught.value)
    assert message.startswith(FILE + ": "), message
    assert expected in message, message
    # the same definition given in memory: same message, named by its id
    with pytest.raises(BadInputError, match=re.escape(expected)):
        validate_definition(spec)


def test_several_problems_are_reported_at_once():
    spec = copy.deepcopy(BASE)
    spec["reverse"] = [0, 11]
    spec["subscales"][1]["items"] = [6, 12]
    with pytest.raises(BadInputError) as caught:
        validate_definition(spec, "mysc.json")
    assert str(caught.value).startswith("mysc.json: 3 problems in the instrument definition")
    assert len(caught.value.problems) == 3


def test_not_an_object_and_bad_json(tmp_path):
    with pytest.raises(BadInputError, match="x.json: expected a JSON object with the instrument's keys"):
        validate_definition([1, 2], "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "bad",\n "n_items": }', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"bad.json: not valid JSON: .*\(line 2, column"):
        instrument_library(paths=[bad])


@pytest.mark.parametrize("ident", available_instruments())
def test_every_packaged_instrument_passes_the_checks(ident):
    spec = json.loads((PACKAGE / f"{ident}.json").read_text(encoding="utf-8"))
    validate_definition(spec, f"{ident}.json")
    for scoring in load_instrument(ident).scorings:
        inst = load_instrument(ident, scoring)
        assert inst.origin == f"theramark/scales/instruments/{ident}.json"
        assert inst.scoring == scoring
        if spec.get("range") is not None and scoring == inst.scorings[0]:
            assert inst.range == tuple(spec["range"])


def test_switching_scorings_starts_from_the_definition():
    continuous = load_instrument("shaps", "continuous")
    assert continuous.recode is None and continuous.range == (14.0, 56.0)
    original = load_instrument(continuous, "original")  # not the continuous keys left over
    assert original.recode == {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0} and original.range == (0.0, 14.0)


def test_reserved_names_cover_the_engine_columns():
    assert set(FLAG_COLUMNS) <= RESERVED_NAMES


def test_docs_describe_every_key():
    text = DOCS.read_text(encoding="utf-8")
    keys = set()
    for name, key in SCHEMA.items():
        keys.add(name)
        if name != "scorings":  # its fields are the top-level keys
            keys.update(key.fields or {})
        keys.update(key.names)
    keys.update(SCHEMA["subscales"].fields["bands"].fields or {})
    missing = sorted(k for k in keys if not re.search(rf'[`".]{k}[`"]', text))
    assert not missing, f"docs/instruments.md does not mention {missing}"


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, (*prefix, i))


JUNK = [None, "x", -1, 0, 1.5, True, [], {}, [0], [1000], {"a": 1}, 10**6]


def test_any_broken_value_is_a_bad_input_error_never_a_crash():
    """Every key of the base definition replaced by junk or removed: a BadInputError or a valid instrument."""
    for path in list(_paths(BASE))[1:]:
        for value in [*JUNK, "remove"]:
            spec = copy.deepcopy(BASE)
            (_drop(*path) if value == "remove" else _set(list(path), value))(spec)
            try:
                inst = parse_instrument(spec)
            except BadInputError:
                continue
            assert inst.n_items == spec["n_items"], (path, value)
