"""Instrument files: every required instrument loads, is self-consistent and matches the codings."""

from __future__ import annotations

import numpy as np
import pytest

from theramark.errors import BadInputError
from theramark.scales import available_instruments, load_instrument

REQUIRED = ["hamd17", "madrs", "bdi2", "phq9", "qids_sr16", "cesd", "zung_sds", "hama", "gds15",
            "shaps", "teps", "dars", "ctq_sf", "pss10", "mspss", "ucla3", "ucla20", "bfi_short", "rrs"]


def test_every_required_instrument_is_defined():
    assert set(REQUIRED) <= set(available_instruments())


@pytest.mark.parametrize("ident", REQUIRED)
def test_stated_range_matches_item_rules(ident):
    """The range written in the file must follow from the item ranges, keys and total rule."""
    for scoring in load_instrument(ident).scorings:
        inst = load_instrument(ident, scoring)
        assert inst.source and inst.bands_source and inst.missing_source
        if inst.total_rule is None:
            assert inst.range is None
            continue
        lo, hi = inst.item_score_bounds()
        if inst.domains:
            lo = np.array([lo[np.asarray(d.items) - 1].max() for d in inst.domains])
            hi = np.array([hi[np.asarray(d.items) - 1].max() for d in inst.domains])
        else:
            idx = np.asarray(inst.total_items) - 1
            lo, hi = lo[idx], hi[idx]
        expected = (lo.sum(), hi.sum()) if inst.total_rule == "sum" else (lo.min(), hi.max())
        assert tuple(inst.range) == pytest.approx(expected)
        if inst.bands:
            assert inst.bands[0].threshold <= (inst.range[0] * (inst.index_multiplier or 1))


def test_codings_used_by_the_simulator():
    hamd = load_instrument("hamd17")
    assert list(np.flatnonzero(hamd.item_max == 4) + 1) == [1, 2, 3, 7, 8, 9, 10, 11, 15]
    assert list(np.flatnonzero(hamd.item_max == 2) + 1) == [4, 5, 6, 12, 13, 14, 16, 17]
    assert load_instrument("pss10").reverse == (4, 5, 7, 8)
    assert load_instrument("ucla20").reverse == (1, 5, 6, 9, 10, 15, 16, 19, 20)
    assert load_instrument("bfi_short").reverse == (1, 3, 4, 5, 7)
    mspss = {s.name: s.items for s in load_instrument("mspss").subscales}
    assert mspss == {"significant_other": (1, 2, 5, 10), "family": (3, 4, 8, 11),
                     "friends": (6, 7, 9, 12)}
    ctq = load_instrument("ctq_sf")
    assert ctq.reverse == (2, 5, 7, 13, 19, 26, 28)
    subs = {s.name: s.items for s in ctq.subscales}
    assert subs["emotional_neglect"] == (5, 7, 13, 19, 28)
    assert subs["physical_neglect"] == (1, 2, 4, 6, 26)
    assert ctq.counts[0].items == (10, 16, 22) and ctq.counts[0].value == 5
    # every clinical item belongs to exactly one subscale
    clinical = sorted(i for s in ctq.subscales for i in s.items)
    assert clinical == sorted(ctq.total_items) and len(clinical) == 25


def test_unknown_instrument_and_scoring_are_clear_errors():
    with pytest.raises(BadInputError, match="known instruments: .*phq9"):
        load_instrument("phq10")
    with pytest.raises(BadInputError, match="available: original, continuous"):
        load_instrument("shaps", "weird")
    assert load_instrument("shaps", "original").scoring == "original"
