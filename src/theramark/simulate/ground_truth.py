"""The machine-readable record of what was planted: ``sourcedata/ground_truth.json``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from theramark import __version__
from theramark.simulate.phenotype import EMA_ANHEDONIA_EFFECT, EMA_CONTACT_EFFECT
from theramark.simulate.presets import (
    PATIENT_GROUPS,
    REPETITION_TIME,
    SESSIONS,
    SITE_EFFECTS,
    SPACE,
    STATE_ROIS,
    THERAPY_GROUPS,
    Preset,
)

PSYCHOSOCIAL_NODES = ["ctq_en", "pss10", "mspss", "ucla3", "neuroticism", "extraversion",
                      "financial_strain", "shaps", "hamd17"]


def _location(rois: pd.DataFrame, *names: str) -> dict[str, list[float]]:
    table = rois.set_index("name")
    return {name: [float(v) for v in table.loc[name, ["x", "y", "z"]]] for name in names}


def ground_truth(preset: Preset, seed: int, resolution: int, rois: pd.DataFrame,
                 runs: pd.DataFrame) -> dict[str, Any]:
    """Ground-truth document of a simulated study.

    Parameters
    ----------
    preset : Preset
        The preset used.
    seed, resolution : int
        Simulation seed and output voxel size (mm).
    rois : DataFrame
        The literature ROI table (for the locations of the effects).
    runs : DataFrame
        One row per simulated run (``participant_id, session, task, high_motion`` ...).
    """
    eff = preset.effects
    planted = preset.planted
    effects = [
        {
            "name": "cbt_dfc_variability_dlpfc_precuneus",
            "kind": "group_by_time",
            "measure": "dfcvariability",
            "feature": "dlpfc_L__precuneus",
            "task": "rest",
            "groups": ["CBT"],
            "reference_groups": ["MBCT", "waitlist", "HC"],
            "sessions": list(SESSIONS),
            "size": {
                "value": eff.dfc_amplitude_cbt["post"] - eff.dfc_amplitude_baseline,
                "units": "increase (post - pre) in the amplitude of a slow sinusoidal coupling "
                         "(period 60-90 volumes) between the latent regional signals, in "
                         "correlation units; static FC is unchanged",
                "by_session": dict(eff.dfc_amplitude_cbt),
                "baseline_amplitude": eff.dfc_amplitude_baseline,
            },
            "sign": "+",
            "location_mni": _location(rois, "dlpfc_L", "precuneus"),
            "planted": planted,
        },
        {
            "name": "amygdala_acc_fc_tracks_hamd_improvement",
            "kind": "brain_symptom_change",
            "measure": "pearsoncorrelation",
            "feature": "amygdala_L__dacc",
            "variables": ["hamd17"],
            "task": "rest",
            "groups": list(PATIENT_GROUPS),
            "sessions": list(SESSIONS),
            "size": {
                "value": eff.amygdala_acc_slope,
                "units": "added latent correlation per unit fraction of baseline HAMD-17 "
                         "improvement (responders improve 55-85% by post), plus a therapy-"
                         "specific rise in CBT and MBCT (therapy_rise_by_session)",
                "base_correlation": eff.amygdala_acc_base,
                "therapy_rise_by_session": dict(eff.amygdala_acc_therapy),
            },
            "sign": "+",
            "location_mni": _location(rois, "amygdala_L", "dacc"),
            "planted": planted,
        },
        {
            "name": "nacc_gain_anticipation_after_therapy",
            "kind": "group_by_time",
            "measure": "activation",
            "feature": ["nacc_L:gain_anticipation-neutral_anticipation",
                        "nacc_R:gain_anticipation-neutral_anticipation"],
            "task": "mid",
            "groups": list(THERAPY_GROUPS),
            "reference_groups": ["waitlist"],
            "sessions": list(SESSIONS),
            "size": {
                "value": eff.nacc_gain_increase["post"],
                "units": "percent signal change per unit Glover-HRF regressor added to the "
                         "gain-anticipation response (before the site's activation scale)",
                "by_session": dict(eff.nacc_gain_increase),
                "patient_baseline_gain": 0.5, "patient_baseline_neutral": 0.15,
                "control_gain": 0.8,
            },
            "sign": "+",
            "location_mni": _location(rois, "nacc_L", "nacc_R"),
            "planted": planted,
        },
        {
            "name": "baseline_sgacc_nacc_fc_predicts_response",
            "kind": "baseline_predictor",
            "measure": "pearsoncorrelation",
            "feature": ["nacc_L__sgacc", "nacc_R__sgacc"],
            "task": "rest",
            "groups": list(PATIENT_GROUPS),
            "sessions": ["pre"],
            "outcome": "response: HAMD-17 reduction >= 50% from pre to post",
            "size": {
                "value": eff.sgacc_nacc_slope,
                "units": "added latent correlation per SD of response propensity; the log-odds "
                         "of response rise by propensity_logodds per SD",
                "base_correlation": eff.sgacc_nacc_base,
                "propensity_logodds": eff.propensity_logodds,
            },
            "sign": "+",
            "location_mni": _location(rois, "sgacc", "nacc_L", "nacc_R"),
            "planted": planted,
        },
        {
            "name": "cbt_state_occupancy_thalamo_occipital",
            "kind": "group_by_time",
            "measure": "dfcstates",
            "statistic": "fractional occupancy of the thalamo-occipital state",
            "task": "rest",
            "regions": list(STATE_ROIS),
            "groups": ["CBT"],
            "reference_groups": ["MBCT", "waitlist", "HC"],
            "sessions": list(SESSIONS),
            "size": {
                "value": eff.state_occupancy_cbt["post"] - eff.state_occupancy_baseline,
                "units": "increase (post - pre) in the fractional occupancy of a connectivity "
                         "state (two-state Markov chain per rest run) in which the latent signals "
                         "of the regions share a component of correlation state_coupling",
                "by_session": dict(eff.state_occupancy_cbt),
                "baseline_occupancy": eff.state_occupancy_baseline,
                "state_coupling": eff.state_coupling,
                "mean_dwell_volumes": eff.state_dwell_volumes,
            },
            "sign": "+",
            "location_mni": _location(rois, *STATE_ROIS),
            "planted": planted,
        },
        {
            "name": "mfg_amygdala_fc_leads_hamd_improvement",
            "kind": "cross_lagged",
            "measure": "pearsoncorrelation",
            "feature": "amygdala_R__mfg_R",
            "task": "rest",
            "symptom": "hamd17",
            "groups": list(PATIENT_GROUPS),
            "sessions": list(SESSIONS),
            "size": {
                "value": eff.lag_rho_slope,
                "units": "added latent correlation per fraction of HAMD-17 improvement at the "
                         "NEXT session (post: its own), so the brain feature at one wave predicts "
                         "the symptom score at the next beyond the symptom score itself; symptoms "
                         "do not feed back on the brain",
                "base_correlation": eff.lag_rho_base,
                "lead": "brain -> symptom (cross-lag from the FC edge to HAMD-17 is negative: "
                        "more coupling, fewer symptoms later)",
            },
            "sign": "-",
            "location_mni": _location(rois, "mfg_R", "amygdala_R"),
            "planted": planted,
        },
        {
            "name": "treatment_response",
            "kind": "group_by_time",
            "measure": "hamd17",
            "variables": ["hamd17", "bdi2", "phq9", "shaps"],
            "groups": list(THERAPY_GROUPS),
            "reference_groups": ["waitlist"],
            "sessions": list(SESSIONS),
            "size": {
                "value": eff.response_rate["CBT"] - eff.response_rate["waitlist"],
                "units": "difference in the probability of response (HAMD-17 reduction >= 50% "
                         "at post)",
                "response_rate": dict(eff.response_rate),
                "improvement_responders": [0.55, 0.85],
                "improvement_non_responders": [0.0, 0.35],
            },
            "sign": "+",
            "planted": planted,
        },
        {
            "name": "neglect_stress_anhedonia_moderated_by_sex",
            "kind": "moderated_mediation",
            "variables": {"x": "ctq_sf emotional neglect subscale", "m": "pss10 total",
                          "y": "shaps total", "w": "sex (F vs M)"},
            "groups": ["CBT", "MBCT", "waitlist", "HC"],
            "sessions": ["pre"],
            "size": {
                "a_path_men": eff.a_path_men, "a_path_women": eff.a_path_women,
                "b_path": eff.b_path, "direct_path": eff.direct_path,
                "units": "latent SD per latent SD (CTQ EN ~ 4 points, PSS-10 ~ 5 points and SHAPS "
                         "~ 4.5 points (14-56 scoring) per latent SD)",
            },
            "sign": "+",
            "planted": planted,
        },
        {
            "name": "financial_strain_threshold",
            "kind": "breakpoint",
            "variables": {"x": "financial_strain", "y": "shaps total"},
            "sessions": ["pre"],
            "size": {
                "breakpoint": eff.strain_breakpoint,
                "slope_below": 0.0,
                "slope_above": eff.strain_slope,
                "slope_above_shaps_points": round(eff.strain_slope * 4.5, 3),
                "units": "latent SD of anhedonia per strain point (0-10 scale); about 4.5 SHAPS "
                         "points (14-56 scoring) per latent SD",
            },
            "sign": "+",
            "planted": planted,
        },
        {
            "name": "loneliness_most_central",
            "kind": "network_centrality",
            "variables": PSYCHOSOCIAL_NODES,
            "sessions": ["pre"],
            "most_central": "ucla3" if planted else None,
            "size": {
                "value": eff.loneliness_weight,
                "units": "weight of loneliness on its neighbours (stress, support, extraversion, "
                         "neuroticism, strain) and of its neighbours on it (latent SD per SD)",
            },
            "sign": "+",
            "planted": planted,
        },
        {
            "name": "ema_social_contact_raises_positive_affect",
            "kind": "ema_within_person",
            "variables": {"x": "social_contact", "y": "positive_affect",
                          "person_level": "shaps (latent anhedonia)"},
            "sessions": ["pre"],
            "size": {
                "value": EMA_CONTACT_EFFECT if planted else 0.0,
                "units": "points of positive affect (0-100) at prompts with social contact",
                "person_mean_per_anhedonia_sd": EMA_ANHEDONIA_EFFECT if planted else 0.0,
            },
            "sign": "+",
            "planted": planted,
        },
    ]
    site_effects = [
        {"site": site, **vars(SITE_EFFECTS[site]),
         "units": {"intensity_scale": "multiplies image intensity",
                   "noise_scale": "multiplies voxel noise SD (multiplicative site effect)",
                   "global_amplitude": "SD (percent signal) of a whole-brain shared signal: an "
                                       "additive site offset on every FC edge",
                   "activation_scale": "multiplies task responses"}}
        for site in preset.sites
    ]
    high_motion = runs[runs["high_motion"]]
    return {
        "preset": preset.name,
        "seed": seed,
        "generator": f"theramark {__version__} (theramark.simulate.simulate_study)",
        "space": SPACE,
        "resolution_mm": resolution,
        "repetition_time_s": REPETITION_TIME,
        "design": preset.describe(),
        "effects": effects,
        "site_effects": site_effects,
        "qc": {
            "high_motion_runs": [
                {"participant_id": r.participant_id, "session": r.session, "task": r.task}
                for r in high_motion.itertuples()
            ],
            "note": "every other run is calm (mean FD about 0.1 mm); about a third have 1-3 "
                    "spikes that also corrupt the image",
        },
        "files": {
            "participant_truth": "sourcedata/participant_truth.tsv",
            "runs": "sourcedata/runs.tsv",
        },
    }
