"""The simulated study's participants and their latent clinical truth.

Each participant gets a group, a site, age and sex, and latent (standardised) psychosocial traits
drawn from a small structural model at baseline:

- childhood emotional neglect (CTQ EN) raises perceived stress (PSS-10), more so in women (the
  moderated a-path); stress raises anhedonia (SHAPS, the b-path);
- financial strain raises anhedonia only above a breakpoint;
- loneliness (UCLA) is linked to most other nodes, which makes it the most central node of the
  psychosocial network.

Treatment response is drawn from a latent *response propensity* (which the imaging model also uses:
baseline sgACC-NAcc coupling tracks it) and the group's response rate. Scale targets per session
(expected totals) follow; :mod:`theramark.simulate.phenotype` turns them into item answers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from theramark.simulate.presets import (
    CONTROL_SESSIONS,
    GROUPS,
    PATIENT_GROUPS,
    SESSIONS,
    Preset,
)


def participant_sessions(group: str) -> tuple[str, ...]:
    """Sessions a participant of ``group`` attends (controls skip the week-4 visit)."""
    return CONTROL_SESSIONS if group == "HC" else SESSIONS


def make_participants(preset: Preset, rng: np.random.Generator) -> pd.DataFrame:
    """Participants table plus the latent truth columns (one row per participant).

    Groups are assigned in shuffled blocks of four and sites are balanced within group, so that
    neither is confounded with participant order.
    """
    n = preset.n_per_group
    groups = np.concatenate([rng.permutation(GROUPS) for _ in range(n)])
    n_total = groups.size
    sites = np.empty(n_total, dtype=object)
    for group in GROUPS:
        members = np.flatnonzero(groups == group)
        cycle = np.resize(np.asarray(preset.sites, dtype=object), members.size)
        sites[members] = rng.permutation(cycle)
    table = pd.DataFrame({
        "participant_id": [f"sub-{i + 1:03d}" for i in range(n_total)],
        "age": np.clip(np.round(rng.normal(37.0, 11.0, n_total)), 18, 65).astype(int),
        "sex": np.where(rng.random(n_total) < 0.6, "F", "M"),
        "site": sites.astype(str),
        "group": groups.astype(str),
    })
    return add_latent_traits(table, preset, rng)


def add_latent_traits(table: pd.DataFrame, preset: Preset, rng: np.random.Generator) -> pd.DataFrame:
    """Draw the baseline structural model (see module docstring); latent columns end in ``_z``."""
    eff = preset.effects
    n = len(table)
    patient = table["group"].isin(PATIENT_GROUPS).to_numpy(float)
    female = (table["sex"] == "F").to_numpy(float)
    planted = 1.0 if preset.planted else 0.0

    def noise(scale: float = 1.0) -> np.ndarray:
        return rng.normal(0.0, scale, n)

    ctq_en = 0.5 * planted * patient + noise()
    neuro = 0.3 * planted * ctq_en + noise()
    extra = noise()
    mspss = planted * (-0.3 * ctq_en + 0.25 * extra) + noise()
    strain = np.round(10.0 * rng.beta(1.6, 2.0, n))
    a_path = eff.a_path_men + (eff.a_path_women - eff.a_path_men) * female
    pss = a_path * ctq_en + planted * (0.15 * neuro + 0.3 * patient) + noise()
    lw = eff.loneliness_weight
    ucla = (lw * (pss - mspss - extra + neuro + (strain - 5.0) / 3.0)
            + planted * 0.7 * patient + noise(0.6))
    shaps = (eff.b_path * pss + 0.5 * lw * ucla + eff.direct_path * ctq_en
             + eff.strain_slope * np.maximum(strain - eff.strain_breakpoint, 0.0)
             + planted * 0.6 * patient + noise(1.2))
    hamd = lw * ucla + planted * (0.15 * shaps + 0.1 * pss) + noise(0.8)

    table = table.copy()
    table["patient"] = patient.astype(bool)
    table["ctq_en_z"] = ctq_en
    # the other CTQ subscales share a little with neglect (they are not part of any planted effect)
    for name in ("ea", "pa", "sa", "pn"):
        table[f"ctq_{name}_z"] = 0.4 * planted * ctq_en + noise()
    table["ctq_md_z"] = noise()
    table["neuroticism_z"] = neuro
    table["extraversion_z"] = extra
    for name in ("agreeableness", "conscientiousness", "openness"):
        table[f"{name}_z"] = noise()
    table["mspss_z"] = mspss
    table["financial_strain"] = strain
    table["pss_z"] = pss
    table["ucla_z"] = ucla
    table["shaps_z"] = shaps
    table["hamd_z"] = hamd
    return add_response(table, preset, rng)


def add_response(table: pd.DataFrame, preset: Preset, rng: np.random.Generator) -> pd.DataFrame:
    """Response propensity, response status and the fraction of HAMD-17 improvement per session.

    Within each group, ``round(rate x n)`` participants respond: those with the highest
    ``propensity_logodds x propensity + logistic noise``, so propensity raises the odds of response.

    Responders improve by 55-85% at week 8 and non-responders by 0-35%; the week-4 improvement is
    40-60% of the week-8 one. Controls do not change.
    """
    eff = preset.effects
    n = len(table)
    propensity = rng.normal(0.0, 1.0, n)
    # each group gets round(rate x size) responders (so a small demo shows the planted rates):
    # those with the highest propensity-weighted logistic scores
    score = eff.propensity_logodds * propensity + rng.logistic(0.0, 1.0, n)
    responder = np.zeros(n, dtype=bool)
    for group, rate in eff.response_rate.items():
        members = np.flatnonzero(table["group"].to_numpy() == group)
        k = int(round(rate * members.size))
        if k:
            responder[members[np.argsort(score[members])[::-1][:k]]] = True
    post = np.where(responder, rng.uniform(0.55, 0.85, n), rng.uniform(0.0, 0.35, n))
    post = np.where(table["patient"], post, 0.0)
    table = table.copy()
    table["propensity_z"] = propensity
    table["responder"] = responder & table["patient"].to_numpy()
    table["improvement_pre"] = 0.0
    table["improvement_mid"] = post * rng.uniform(0.4, 0.6, n)
    table["improvement_post"] = post
    return table


def _clip(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(values, low, high)


def session_targets(truth: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Expected scale scores per participant and attended session (long table).

    Columns: ``participant_id, session, hamd17, bdi2, phq9, shaps`` (continuous 14-56 scoring),
    ``pss10, ucla3, mspss`` (item mean), ``neuroticism, extraversion, agreeableness,
    conscientiousness, openness`` (BFI-10 means 1-5), ``ctq_en, ctq_ea, ctq_pa, ctq_sa, ctq_pn``
    (subscale sums 5-25), ``ctq_md`` (0-1 propensity of denial answers) and ``financial_strain``.
    """
    n = len(truth)
    patient = truth["patient"].to_numpy(float)
    hamd_pre = _clip(4.0 + 16.0 * patient + 3.0 * truth["hamd_z"].to_numpy(), 0, 52)
    shaps_pre = _clip(24.0 + 4.5 * truth["shaps_z"].to_numpy(), 14, 56)
    pss_pre = _clip(17.0 + 5.0 * truth["pss_z"].to_numpy(), 0, 40)
    ucla_pre = _clip(5.0 + 1.2 * truth["ucla_z"].to_numpy(), 3, 9)
    strain = truth["financial_strain"].to_numpy(float)
    # fixed per-person offsets of the other depression scales from the HAMD-17
    bdi_offset = rng.normal(0.0, 3.0, n)
    phq_offset = rng.normal(0.0, 1.5, n)
    rows = []
    for session in SESSIONS:
        f = truth[f"improvement_{session}"].to_numpy()
        attended = np.array([session in participant_sessions(g) for g in truth["group"]])
        first = session == "pre"
        jitter = 0.0 if first else 1.0
        hamd = _clip(hamd_pre * (1.0 - f) + jitter * rng.normal(0.0, 1.2, n), 0, 52)
        shaps = _clip(shaps_pre - 0.8 * f * (shaps_pre - 18.0) + jitter * rng.normal(0, 1.5, n),
                      14, 56)
        table = pd.DataFrame({
            "participant_id": truth["participant_id"],
            "session": session,
            "hamd17": hamd,
            "bdi2": _clip(1.4 * hamd + bdi_offset, 0, 63),
            "phq9": _clip(0.55 * hamd + phq_offset, 0, 27),
            "shaps": shaps,
            "pss10": _clip(pss_pre - 4.0 * f + jitter * rng.normal(0, 1.5, n), 0, 40),
            "ucla3": _clip(ucla_pre - 0.8 * f + jitter * rng.normal(0, 0.3, n), 3, 9),
            "mspss": _clip(5.0 + 0.9 * truth["mspss_z"].to_numpy()
                           + jitter * rng.normal(0, 0.2, n), 1, 7),
            "financial_strain": _clip(strain + (0 if first else rng.integers(-1, 2, n)), 0, 10),
        })
        for trait in ("neuroticism", "extraversion", "agreeableness", "conscientiousness",
                      "openness"):
            table[trait] = _clip(3.0 + 0.8 * truth[f"{trait}_z"].to_numpy(), 1, 5)
        table["ctq_en"] = _clip(10.0 + 4.0 * truth["ctq_en_z"].to_numpy(), 5, 25)
        for name in ("ea", "pa", "sa", "pn"):
            table[f"ctq_{name}"] = _clip(8.0 + 3.0 * truth[f"ctq_{name}_z"].to_numpy(), 5, 25)
        table["ctq_md"] = expit(-1.5 + truth["ctq_md_z"].to_numpy())
        rows.append(table[attended])
    out = pd.concat(rows, ignore_index=True)
    order = {s: i for i, s in enumerate(SESSIONS)}
    out = out.sort_values(["participant_id", "session"], key=lambda c: c.map(order)
                          if c.name == "session" else c, kind="stable")
    return out.reset_index(drop=True)


__all__ = ["make_participants", "participant_sessions", "session_targets"]
