"""Simulated data: reliable change is calibrated under the null and finds planted change; scores
recover the latent levels the study simulator planted in item answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from theramark.scales import outcomes, score


def _measured(n, reliability, sd_observed, true_change, rng):
    true_pre = rng.normal(30.0, sd_observed * np.sqrt(reliability), n)
    error_sd = sd_observed * np.sqrt(1 - reliability)
    pre = true_pre + rng.normal(0, error_sd, n)
    post = true_pre + true_change + rng.normal(0, error_sd, n)
    ids = [f"sub-{i:05d}" for i in range(n)]
    return pd.DataFrame({"participant_id": ids * 2, "session": ["pre"] * n + ["post"] * n,
                         "total": np.concatenate([pre, post])})


def test_reliable_change_false_positive_rate_is_nominal_under_the_null():
    rng = np.random.default_rng(11)
    table = _measured(40_000, 0.8, 8.0, 0.0, rng)
    out = outcomes(table, "madrs", reliability=0.8, sd_baseline=8.0)
    rate = (out["rci"].abs() > 1.96).mean()
    assert abs(rate - 0.05) < 0.005  # binomial SE about 0.0011
    assert (out["jt_category"] == "improved").mean() == pytest.approx(0.025, abs=0.004)


def test_reliable_change_finds_planted_improvement_at_the_expected_rate():
    rng = np.random.default_rng(12)
    sd, r = 8.0, 0.8
    s_diff = np.sqrt(2) * sd * np.sqrt(1 - r)
    change = -2.5 * s_diff
    out = outcomes(_measured(20_000, r, sd, change, rng), "madrs", reliability=r, sd_baseline=sd)
    expected = stats.norm.cdf(-change / s_diff - 1.96)
    assert (out["reliable_change"] == "improved").mean() == pytest.approx(expected, abs=0.01)


def test_scores_recover_the_simulator_latent_levels():
    """Reverse keys and subscale maps must agree with the simulator's codings."""
    from theramark.simulate import design, phenotype, presets

    preset = presets.get_preset("large", n_per_group=40)
    rng = np.random.default_rng(1)
    truth = design.add_response(design.add_latent_traits(design.make_participants(preset, rng),
                                                          preset, rng), preset, rng)
    targets = design.session_targets(truth, rng)
    tables = phenotype.instrument_tables(targets, rng)
    checks = {"hamd17": ("total", "hamd17"), "pss10": ("total", "pss10"),
              "mspss": ("total", "mspss"), "ucla3": ("total", "ucla3"),
              "bfi_short": ("neuroticism", "neuroticism"),
              "ctq_sf": ("emotional_neglect", "ctq_en")}
    expected = targets.rename(columns=lambda c: c if c in ("participant_id", "session") else f"target_{c}")
    for ident, (column, target) in checks.items():
        scored = score(ident, tables[ident], errors="raise")
        merged = scored.merge(expected, on=["participant_id", "session"]).dropna(subset=[column])
        r = np.corrcoef(merged[column], merged[f"target_{target}"])[0, 1]
        assert r > 0.6, (ident, r)
        assert merged[column].mean() == pytest.approx(merged[f"target_{target}"].mean(), rel=0.1), ident
    shaps = score("shaps", tables["shaps"], scoring="continuous").merge(
        expected, on=["participant_id", "session"]).dropna(subset=["total"])
    assert np.corrcoef(shaps["total"], shaps["target_shaps"])[0, 1] > 0.6
