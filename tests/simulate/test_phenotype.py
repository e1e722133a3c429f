"""Questionnaire items follow the shared codings, and the planted psychosocial structure is there.

The scoring here is written from the codings independently of theramark.scales: reverse-keyed items
are ``low + high - answer``; subscale scores are sums (means for MSPSS and BFI-10).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from theramark._io import read_tsv
from theramark.simulate.design import make_participants, session_targets
from theramark.simulate.phenotype import ema_table, instrument_tables
from theramark.simulate.presets import get_preset

# instrument: (n items, {item: (low, high)} default range, reverse-keyed items)
CODINGS = {
    "hamd17": (17, {i: (0, 4 if i in {1, 2, 3, 7, 8, 9, 10, 11, 15} else 2)
                    for i in range(1, 18)}, set()),
    "shaps": (14, {i: (1, 4) for i in range(1, 15)}, set()),
    "bdi2": (21, {i: (0, 3) for i in range(1, 22)}, set()),
    "phq9": (9, {i: (0, 3) for i in range(1, 10)}, set()),
    "pss10": (10, {i: (0, 4) for i in range(1, 11)}, {4, 5, 7, 8}),
    "mspss": (12, {i: (1, 7) for i in range(1, 13)}, set()),
    "ucla3": (3, {i: (1, 3) for i in range(1, 4)}, set()),
    "bfi_short": (10, {i: (1, 5) for i in range(1, 11)}, {1, 3, 4, 5, 7}),
    "ctq_sf": (28, {i: (1, 5) for i in range(1, 29)}, {2, 5, 7, 13, 19, 26, 28}),
}
CTQ_EN = (5, 7, 13, 19, 28)


def score(table: pd.DataFrame, instrument: str, items=None, prorate: bool = True) -> pd.Series:
    """Sum of correctly keyed items (mean of answered items x n when prorating)."""
    n, ranges, reverse = CODINGS[instrument]
    items = items or range(1, n + 1)
    keyed = pd.DataFrame({i: (sum(ranges[i]) - table[f"{instrument}_{i}"]) if i in reverse
                          else table[f"{instrument}_{i}"] for i in items}).astype(float)
    return keyed.mean(axis=1) * len(items) if prorate else keyed.sum(axis=1)


@pytest.fixture(scope="module")
def big():
    """Design-level data (no imaging) of 150 participants per group."""
    preset = get_preset("demo", n_per_group=150)
    truth = make_participants(preset, np.random.default_rng(5))
    targets = session_targets(truth, np.random.default_rng(6))
    return truth, instrument_tables(targets, np.random.default_rng(7))


def test_written_items_follow_the_codings(small_study):
    participants = read_tsv(small_study / "participants.tsv")
    for instrument, (n, ranges, _) in CODINGS.items():
        table = read_tsv(small_study / "phenotype" / f"{instrument}.tsv")
        assert list(table.columns) == ["participant_id", "session"] + [
            f"{instrument}_{i}" for i in range(1, n + 1)]
        assert set(table["session"]) <= {"pre", "mid", "post"}
        assert set(table["participant_id"]) == set(participants["participant_id"])
        for i in range(1, n + 1):
            values = table[f"{instrument}_{i}"].dropna()
            low, high = ranges[i]
            assert values.between(low, high).all() and (values == values.round()).all()
        sidecar = json.loads((small_study / "phenotype" / f"{instrument}.json").read_text())
        assert set(table.columns) <= set(sidecar)
    ctq = read_tsv(small_study / "phenotype" / "ctq_sf.tsv")
    assert set(ctq["session"]) == {"pre"}
    hamd = read_tsv(small_study / "phenotype" / "hamd17.tsv")
    controls = participants.loc[participants["group"] == "HC", "participant_id"]
    assert set(hamd.loc[hamd["participant_id"].isin(controls), "session"]) == {"pre", "post"}
    strain = read_tsv(small_study / "phenotype" / "financial_strain.tsv")
    assert strain["financial_strain"].between(0, 10).all()
    ema = read_tsv(small_study / "phenotype" / "ema.tsv")
    assert list(ema.columns) == ["participant_id", "day", "prompt", "timestamp", "positive_affect",
                                 "anticipated_pleasure", "social_contact"]
    assert len(ema) == len(participants) * 35


def test_missing_items_are_few_and_prorateable(big):
    _, tables = big
    for instrument, table in tables.items():
        items = table.drop(columns=["participant_id", "session"])
        assert items.isna().sum(axis=1).max() <= 1, instrument
        assert items.isna().to_numpy().mean() < 0.01, instrument
    assert tables["hamd17"].drop(columns=["participant_id", "session"]).isna().any().any()


def test_reverse_keys_recover_the_latent_trait(big):
    truth, tables = big
    pss = tables["pss10"][tables["pss10"]["session"] == "pre"].merge(truth, on="participant_id")
    keyed = np.corrcoef(score(pss, "pss10"), pss["pss_z"])[0, 1]
    naive = np.corrcoef(pss[[f"pss10_{i}" for i in range(1, 11)]].sum(axis=1), pss["pss_z"])[0, 1]
    assert keyed > 0.8 and naive < keyed - 0.2
    ctq = tables["ctq_sf"].merge(truth, on="participant_id")
    assert np.corrcoef(score(ctq, "ctq_sf", CTQ_EN), ctq["ctq_en_z"])[0, 1] > 0.8
    bfi = tables["bfi_short"].merge(truth, on="participant_id")
    assert np.corrcoef(score(bfi, "bfi_short", (4, 9)), bfi["neuroticism_z"])[0, 1] > 0.6


def _baseline_scores(truth, tables):
    pre = {k: t[t["session"] == "pre"].set_index("participant_id") for k, t in tables.items()}
    frame = pd.DataFrame({
        "ctq_en": score(pre["ctq_sf"], "ctq_sf", CTQ_EN), "pss": score(pre["pss10"], "pss10"),
        "mspss": score(pre["mspss"], "mspss") / 12, "ucla": score(pre["ucla3"], "ucla3"),
        "neuroticism": score(pre["bfi_short"], "bfi_short", (4, 9)) / 2,
        "extraversion": score(pre["bfi_short"], "bfi_short", (1, 6)) / 2,
        "shaps": score(pre["shaps"], "shaps"), "hamd": score(pre["hamd17"], "hamd17"),
    })
    return frame.join(truth.set_index("participant_id")[["financial_strain", "sex", "group"]])


def _ols(y, *columns):
    design = np.column_stack([np.ones(len(y)), *columns])
    return np.linalg.lstsq(design, y, rcond=None)[0]


def test_treatment_response_rates(big):
    truth, tables = big
    hamd = tables["hamd17"].assign(total=lambda t: score(t, "hamd17"))
    wide = hamd.pivot(index="participant_id", columns="session", values="total")
    change = 1 - wide["post"] / wide["pre"]
    groups = truth.set_index("participant_id")["group"]
    rate = (change >= 0.5).groupby(groups).mean()
    assert rate["CBT"] > 0.4 and rate["MBCT"] > 0.4 and rate["waitlist"] < 0.25
    assert wide["pre"].groupby(groups).mean()["HC"] < 8 < wide["pre"].groupby(groups).mean()["CBT"]


def test_moderated_mediation_and_threshold_are_planted(big):
    truth, tables = big
    s = _baseline_scores(truth, tables)
    z = (s[["ctq_en", "pss", "shaps"]] - s[["ctq_en", "pss", "shaps"]].mean()) / s[
        ["ctq_en", "pss", "shaps"]].std()
    women, men = (s["sex"] == "F").to_numpy(), (s["sex"] == "M").to_numpy()
    a_women = _ols(z["pss"][women], z["ctq_en"][women])[1]
    a_men = _ols(z["pss"][men], z["ctq_en"][men])[1]
    b = _ols(z["shaps"], z["pss"], z["ctq_en"])[1]
    assert a_women > a_men + 0.15 and a_men > 0 and b > 0.2
    # SHAPS flat below the breakpoint (6), rising above it
    below = s[s["financial_strain"] <= 5]
    above = s[s["financial_strain"] >= 6]
    slope_below = _ols(below["shaps"], below["financial_strain"])[1]
    slope_above = _ols(above["shaps"], above["financial_strain"])[1]
    assert abs(slope_below) < 0.5 and slope_above > 1.0


def _strength(frame: pd.DataFrame) -> pd.Series:
    precision = np.linalg.inv(np.corrcoef(frame.to_numpy().T))
    d = np.sqrt(np.diag(precision))
    partial = -precision / np.outer(d, d)
    np.fill_diagonal(partial, 0)
    return pd.Series(np.abs(partial).sum(axis=0), index=frame.columns)


def test_loneliness_is_the_most_central_node(big):
    truth, tables = big
    s = _baseline_scores(truth, tables)
    nodes = s[["ctq_en", "pss", "mspss", "ucla", "neuroticism", "extraversion",
               "financial_strain", "shaps", "hamd"]]
    assert _strength(nodes).idxmax() == "ucla"


def test_null_preset_has_no_psychosocial_structure():
    preset = get_preset("null", n_per_group=150)
    truth = make_participants(preset, np.random.default_rng(5))
    tables = instrument_tables(session_targets(truth, np.random.default_rng(6)),
                               np.random.default_rng(7))
    s = _baseline_scores(truth, tables)
    r = s[["ctq_en", "pss", "shaps", "ucla", "mspss"]].corr().to_numpy()
    off_diagonal = r[np.triu_indices(5, 1)]
    # 600 participants: |r| > 0.13 has p < 0.001 under the null
    assert np.abs(off_diagonal).max() < 0.13
    hamd = tables["hamd17"].assign(total=lambda t: score(t, "hamd17"))
    wide = hamd.pivot(index="participant_id", columns="session", values="total")
    rate = ((1 - wide["post"] / wide["pre"]) >= 0.5).groupby(truth.set_index("participant_id")[
        "group"]).mean()
    assert abs(rate["CBT"] - rate["waitlist"]) < 0.1
    ema = ema_table(truth, np.random.default_rng(0), planted=False).dropna()
    gap = ema.groupby("social_contact")["positive_affect"].mean()
    assert abs(gap[1] - gap[0]) < 1.5  # SE of the gap is about 0.4 points with 21000 prompts


def test_ema_missed_prompts_and_social_contact_effect(big):
    truth, _ = big
    ema = ema_table(truth, np.random.default_rng(0))
    missed = ema["positive_affect"].isna().mean()
    assert 0.05 < missed < 0.2
    answered = ema.dropna()
    gap = answered.groupby("social_contact")["positive_affect"].mean()
    assert gap[1] - gap[0] > 4
