"""Property tests: reverse-keying is an involution; proration never leaves the range."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.scales.helpers import rows
from theramark.scales import available_instruments, load_instrument, score
from theramark.scales.engine import _keyed, combine

NO_RECODE = [i for i in available_instruments() if load_instrument(i).recode is None]


@settings(max_examples=40, deadline=None)
@given(ident=st.sampled_from(NO_RECODE), seed=st.integers(0, 2**32 - 1))
def test_reverse_keying_is_an_involution(ident, seed):
    inst = load_instrument(ident)
    rng = np.random.default_rng(seed)
    answers = rng.integers(inst.item_min, inst.item_max + 1, size=(5, inst.n_items)).astype(float)
    answers[rng.random(answers.shape) < 0.2] = np.nan
    np.testing.assert_array_equal(_keyed(_keyed(answers, inst), inst), answers)
    keyed = _keyed(answers, inst)
    finite = np.isfinite(keyed)
    lo = np.broadcast_to(inst.item_min, keyed.shape)[finite]
    hi = np.broadcast_to(inst.item_max, keyed.shape)[finite]
    assert np.all((keyed[finite] >= lo) & (keyed[finite] <= hi))


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_units=st.integers(1, 12),
    rule=st.sampled_from(["sum", "mean"]),
)
def test_proration_stays_within_the_range(data, n_units, rule):
    """Any unit ranges (including unequal ones, like HAMD-17), any missing pattern."""
    low = np.array(data.draw(st.lists(st.integers(-2, 3), min_size=n_units, max_size=n_units)), float)
    width = np.array(data.draw(st.lists(st.integers(1, 6), min_size=n_units, max_size=n_units)), float)
    high = low + width
    fractions = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n_units, max_size=n_units)))
    values = np.round(low + fractions * width)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n_units, max_size=n_units)))
    values[mask] = np.nan
    result, n_missing = combine(values[None, :], low, high, rule, max_missing=n_units)
    assert n_missing[0] == mask.sum()
    if mask.all():
        assert np.isnan(result[0])
        return
    if rule == "sum":
        assert low.sum() - 1e-9 <= result[0] <= high.sum() + 1e-9
        if not mask.any():
            assert result[0] == np.nansum(values)
    else:
        assert low.min() - 1e-9 <= result[0] <= high.max() + 1e-9


@settings(max_examples=25, deadline=None)
@given(ident=st.sampled_from(available_instruments()), seed=st.integers(0, 2**32 - 1))
def test_engine_totals_stay_within_the_published_range(ident, seed):
    inst = load_instrument(ident)
    rng = np.random.default_rng(seed)
    answers = rng.integers(inst.item_min, inst.item_max + 1, size=(20, inst.n_items)).astype(float)
    answers[rng.random(answers.shape) < 0.05] = np.nan
    result = score(ident, rows(ident, answers.tolist()))
    if inst.range is None:
        return
    totals = result["total"].dropna()
    assert ((totals >= inst.range[0]) & (totals <= inst.range[1])).all()
    assert (result["scored"] == result["total"].notna()).all()
