"""Questionnaire item answers, financial strain and EMA for the simulated study.

Item answers follow the codings shared with :mod:`theramark.scales` (item ranges and reverse keys).
For each (sub)scale the expected total comes from :func:`theramark.simulate.design.session_targets`;
each item's *trait-consistent* answer is ``low + Binomial(high - low, p_j)`` with
``logit(p_j) = logit(p) + d_j`` (``p`` the scale's relative level, ``d_j`` a fixed item difficulty),
and reverse-keyed items record ``low + high - answer``. Reverse-scoring correctly therefore recovers a
total that tracks the latent trait.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit


@dataclass(frozen=True)
class Subscale:
    """Items (1-based) of one subscale, their range, reverse keys and the target column."""

    items: tuple[int, ...]
    low: int
    high: tuple[int, ...] | int
    target: str
    #: ``sum`` targets are expected sums; ``mean`` targets are expected item means; ``p`` targets
    #: are the relative level itself (0-1).
    kind: str = "sum"
    reverse: tuple[int, ...] = ()

    def highs(self) -> np.ndarray:
        if isinstance(self.high, int):
            return np.full(len(self.items), self.high)
        return np.asarray(self.high)


@dataclass(frozen=True)
class Instrument:
    """A questionnaire: id, number of items, subscales, sessions and a description."""

    id: str
    n_items: int
    subscales: tuple[Subscale, ...]
    name: str
    baseline_only: bool = False
    #: Probability that a row has one missing item (only instruments long enough to prorate).
    p_missing: float = 0.0


_HAMD_WIDE = {1, 2, 3, 7, 8, 9, 10, 11, 15}

INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("hamd17", 17, (Subscale(tuple(range(1, 18)), 0,
                                       tuple(4 if i in _HAMD_WIDE else 2 for i in range(1, 18)),
                                       "hamd17"),),
               "Hamilton Depression Rating Scale, 17 items (Hamilton 1960)", p_missing=0.03),
    Instrument("shaps", 14, (Subscale(tuple(range(1, 15)), 1, 4, "shaps"),),
               "Snaith-Hamilton Pleasure Scale (Snaith et al. 1995); 1 = strongly agree, "
               "2 = agree, 3 = disagree, 4 = strongly disagree", p_missing=0.03),
    Instrument("bdi2", 21, (Subscale(tuple(range(1, 22)), 0, 3, "bdi2"),),
               "Beck Depression Inventory-II (Beck 1996); items 16 and 18 recorded as 0-3",
               p_missing=0.03),
    Instrument("phq9", 9, (Subscale(tuple(range(1, 10)), 0, 3, "phq9"),),
               "Patient Health Questionnaire-9 (Kroenke 2001)", p_missing=0.02),
    Instrument("pss10", 10, (Subscale(tuple(range(1, 11)), 0, 4, "pss10",
                                      reverse=(4, 5, 7, 8)),),
               "Perceived Stress Scale, 10 items (Cohen 1988); items 4, 5, 7, 8 reverse-keyed",
               p_missing=0.03),
    Instrument("mspss", 12, (Subscale(tuple(range(1, 13)), 1, 7, "mspss", kind="mean"),),
               "Multidimensional Scale of Perceived Social Support (Zimet 1988)", p_missing=0.02),
    Instrument("ucla3", 3, (Subscale((1, 2, 3), 1, 3, "ucla3"),),
               "Three-item loneliness scale (Hughes et al. 2004)"),
    Instrument("bfi_short", 10, (
        Subscale((1, 6), 1, 5, "extraversion", kind="mean", reverse=(1,)),
        Subscale((2, 7), 1, 5, "agreeableness", kind="mean", reverse=(7,)),
        Subscale((3, 8), 1, 5, "conscientiousness", kind="mean", reverse=(3,)),
        Subscale((4, 9), 1, 5, "neuroticism", kind="mean", reverse=(4,)),
        Subscale((5, 10), 1, 5, "openness", kind="mean", reverse=(5,)),
    ), "Big Five Inventory-10 (Rammstedt & John 2007); items 1, 3, 4, 5, 7 reverse-keyed",
        baseline_only=True),
    Instrument("ctq_sf", 28, (
        Subscale((3, 8, 14, 18, 25), 1, 5, "ctq_ea"),
        Subscale((9, 11, 12, 15, 17), 1, 5, "ctq_pa"),
        Subscale((20, 21, 23, 24, 27), 1, 5, "ctq_sa"),
        Subscale((5, 7, 13, 19, 28), 1, 5, "ctq_en", reverse=(5, 7, 13, 19, 28)),
        Subscale((1, 2, 4, 6, 26), 1, 5, "ctq_pn", reverse=(2, 26)),
        Subscale((10, 16, 22), 1, 5, "ctq_md", kind="p"),
    ), "Childhood Trauma Questionnaire, short form (Bernstein et al. 2003); items 2, 5, 7, 13, 19, "
        "26, 28 reverse-keyed", baseline_only=True, p_missing=0.02),
)


def _relative_level(sub: Subscale, target: np.ndarray) -> np.ndarray:
    """Scale level in (0, 1) from the target (expected sum, mean or level)."""
    highs = sub.highs()
    if sub.kind == "p":
        level = target
    else:
        total = target * len(sub.items) if sub.kind == "mean" else target
        level = (total - sub.low * len(sub.items)) / float(np.sum(highs - sub.low))
    return np.clip(level, 0.01, 0.99)


def item_answers(instrument: Instrument, targets: pd.DataFrame,
                 rng: np.random.Generator) -> pd.DataFrame:
    """Item answers of ``instrument`` for every row of ``targets`` (one row per participant × session).

    Returns a DataFrame ``participant_id, session, <id>_1 ... <id>_k`` with nullable integers.
    """
    n = len(targets)
    answers = np.zeros((n, instrument.n_items), dtype=np.int64)
    for sub in instrument.subscales:
        level = _relative_level(sub, targets[sub.target].to_numpy(float))
        difficulty = rng.normal(0.0, 0.35, len(sub.items))
        difficulty -= difficulty.mean()
        p = expit(logit(level)[:, None] + difficulty[None, :])
        spans = sub.highs() - sub.low
        values = sub.low + rng.binomial(np.broadcast_to(spans, p.shape), p)
        reverse = np.isin(sub.items, sub.reverse)
        values[:, reverse] = sub.low + sub.highs()[reverse] - values[:, reverse]
        answers[:, np.asarray(sub.items) - 1] = values
    columns = [f"{instrument.id}_{i}" for i in range(1, instrument.n_items + 1)]
    table = pd.DataFrame(answers, columns=columns).astype("Int64")
    if instrument.p_missing > 0:
        # at most one missing item per row, never a denial (validity) item, so scores can prorate
        eligible = [i for i in range(instrument.n_items)
                    if not (instrument.id == "ctq_sf" and i + 1 in (10, 16, 22))]
        rows = np.flatnonzero(rng.random(n) < instrument.p_missing)
        cols = rng.choice(eligible, size=rows.size)
        for row, col in zip(rows, cols, strict=True):
            table.iat[row, col] = pd.NA
    table.insert(0, "session", targets["session"].to_numpy())
    table.insert(0, "participant_id", targets["participant_id"].to_numpy())
    return table


def instrument_tables(targets: pd.DataFrame, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """One item table per instrument (baseline-only instruments at ``pre`` only)."""
    tables = {}
    for instrument in INSTRUMENTS:
        rows = targets[targets["session"] == "pre"] if instrument.baseline_only else targets
        tables[instrument.id] = item_answers(instrument, rows.reset_index(drop=True), rng)
    return tables


def instrument_sidecar(instrument: Instrument) -> dict:
    """BIDS phenotype sidecar: tool metadata and a description of every column."""
    sidecar: dict = {
        "MeasurementToolMetadata": {"Description": instrument.name},
        "participant_id": {"Description": "participant identifier (sub-<label>)"},
        "session": _session_description(instrument.baseline_only),
    }
    for sub in instrument.subscales:
        for item, high in zip(sub.items, sub.highs(), strict=True):
            keyed = ", reverse-keyed" if item in sub.reverse else ""
            sidecar[f"{instrument.id}_{item}"] = {
                "Description": f"item {item} ({sub.target}{keyed}); integer {sub.low}-{high}, "
                               "n/a = not answered",
            }
    ordered = {k: sidecar[k] for k in ("MeasurementToolMetadata", "participant_id", "session")}
    for i in range(1, instrument.n_items + 1):
        ordered[f"{instrument.id}_{i}"] = sidecar[f"{instrument.id}_{i}"]
    return ordered


def _session_description(baseline_only: bool) -> dict:
    levels = {"pre": "baseline (week 0)", "mid": "week 4", "post": "week 8 (end of treatment)"}
    if baseline_only:
        levels = {"pre": levels["pre"]}
    return {"Description": "session label without the ses- prefix", "Levels": levels}


def financial_strain_table(targets: pd.DataFrame) -> pd.DataFrame:
    """``participant_id, session, financial_strain`` (0-10 integer rating)."""
    return pd.DataFrame({
        "participant_id": targets["participant_id"].to_numpy(),
        "session": targets["session"].to_numpy(),
        "financial_strain": targets["financial_strain"].round().astype(int).to_numpy(),
    })


FINANCIAL_STRAIN_SIDECAR = {
    "MeasurementToolMetadata": {
        "Description": "single-item financial strain rating: 'How hard is it for you to live on "
                       "your current income?' 0 = not at all hard, 10 = extremely hard",
    },
    "participant_id": {"Description": "participant identifier (sub-<label>)"},
    "session": _session_description(False),
    "financial_strain": {"Description": "financial strain rating, integer 0-10"},
}


#: Within-person effect of social contact on positive affect (points on the 0-100 scale).
EMA_CONTACT_EFFECT = 8.0
#: Person-mean positive affect per latent SD of anhedonia (points).
EMA_ANHEDONIA_EFFECT = -7.0


def ema_table(truth: pd.DataFrame, rng: np.random.Generator, days: int = 7,
              prompts: int = 5, p_missed: float = 0.12, planted: bool = True) -> pd.DataFrame:
    """Baseline ecological momentary assessment: ``days`` × ``prompts`` rows per participant.

    Person means of positive affect and anticipated pleasure fall with anhedonia (SHAPS latent);
    social contact is likelier in less lonely people and raises positive affect at that prompt by
    8 points (0-100 scale). Missed prompts keep their row with ``n/a`` answers. With
    ``planted=False`` (null preset) neither effect is there.
    """
    n = len(truth)
    n_prompts = days * prompts
    shaps = truth["shaps_z"].to_numpy()
    ucla = truth["ucla_z"].to_numpy()
    p_contact = expit(0.3 - 0.5 * ucla)[:, None]
    contact = (rng.random((n, n_prompts)) < p_contact).astype(float)
    # AR(1) within-person fluctuation of affect across prompts
    innovations = rng.normal(0.0, 10.0, (n, n_prompts))
    fluctuation = np.empty_like(innovations)
    fluctuation[:, 0] = innovations[:, 0]
    for k in range(1, n_prompts):
        fluctuation[:, k] = 0.4 * fluctuation[:, k - 1] + np.sqrt(1 - 0.16) * innovations[:, k]
    weight = 1.0 if planted else 0.0
    affect = ((60.0 + weight * EMA_ANHEDONIA_EFFECT * shaps)[:, None]
              + weight * EMA_CONTACT_EFFECT * contact + fluctuation)
    pleasure = ((55.0 + weight * 8.0 / 7.0 * EMA_ANHEDONIA_EFFECT * shaps)[:, None]
                + 0.5 * fluctuation + rng.normal(0, 8, (n, n_prompts)))
    day = np.repeat(np.arange(1, days + 1), prompts)
    prompt = np.tile(np.arange(1, prompts + 1), days)
    hours = (day - 1) * 24.0 + 9.0 + 3.0 * (prompt - 1)
    timestamp = hours[None, :] + rng.uniform(0.0, 0.5, (n, n_prompts))
    missed = rng.random((n, n_prompts)) < p_missed
    table = pd.DataFrame({
        "participant_id": np.repeat(truth["participant_id"].to_numpy(), n_prompts),
        "day": np.tile(day, n),
        "prompt": np.tile(prompt, n),
        "timestamp": np.round(timestamp.ravel(), 2),
        "positive_affect": np.clip(np.round(affect), 0, 100).ravel(),
        "anticipated_pleasure": np.clip(np.round(pleasure), 0, 100).ravel(),
        "social_contact": contact.ravel(),
    })
    for column in ("positive_affect", "anticipated_pleasure", "social_contact"):
        table[column] = table[column].astype("Int64")
        table.loc[missed.ravel(), column] = pd.NA
    return table


EMA_SIDECAR = {
    "MeasurementToolMetadata": {
        "Description": "ecological momentary assessment at baseline: 5 prompts a day for 7 days",
    },
    "participant_id": {"Description": "participant identifier (sub-<label>)"},
    "day": {"Description": "day of the EMA week (1-7)"},
    "prompt": {"Description": "prompt of the day (1-5, every 3 hours from 09:00)"},
    "timestamp": {"Description": "time of the prompt in hours since midnight before day 1 "
                                 "(relative time; no calendar dates are stored)", "Units": "h"},
    "positive_affect": {"Description": "momentary positive affect, 0-100 visual analogue scale; "
                                       "n/a = prompt missed"},
    "anticipated_pleasure": {"Description": "anticipated pleasure of the next activity, 0-100; "
                                            "n/a = prompt missed"},
    "social_contact": {"Description": "in social contact since the last prompt",
                       "Levels": {"0": "no", "1": "yes"}},
}


__all__ = ["INSTRUMENTS", "Instrument", "Subscale", "ema_table", "financial_strain_table",
           "instrument_sidecar", "instrument_tables", "item_answers"]
