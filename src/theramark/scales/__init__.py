"""Questionnaire scoring from published rules, and treatment outcomes.

Instrument definitions are data (``theramark/scales/instruments/<id>.json``); one engine scores them
all. See ``theramark scales list`` and ``theramark scales show ID``.

>>> from theramark.scales import score, outcomes
>>> scores = score("phq9", items_table, errors="flag")          # doctest: +SKIP
>>> table = outcomes(scores, "phq9", baseline="pre", endpoint="post")  # doctest: +SKIP
"""

from theramark.scales.definitions import Instrument, available_instruments, load_instrument
from theramark.scales.engine import score
from theramark.scales.outcomes import (
    criterion_c,
    outcomes,
    rates_by_group,
    reliable_change_index,
)

__all__ = [
    "Instrument", "available_instruments", "criterion_c", "load_instrument",
    "outcomes", "rates_by_group", "reliable_change_index", "score",
]
