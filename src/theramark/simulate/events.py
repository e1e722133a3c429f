"""Monetary incentive delay (MID) task events (Knutson et al. 2000 design, simplified).

Each trial shows a cue (gain, loss or neutral) followed by a delay (together the *anticipation*
phase, 4 s), a brief target (0.5 s) and the *outcome* feedback (2 s), then a jittered fixation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CUES = ("gain", "loss", "neutral")
ANTICIPATION_S = 4.0
TARGET_S = 0.5
OUTCOME_S = 2.0
LEAD_IN_S = 8.0
TAIL_S = 12.0

TRIAL_TYPES = tuple(f"{cue}_{phase}" for phase in ("anticipation", "outcome") for cue in CUES)

EVENTS_SIDECAR = {
    "onset": {"Description": "event onset from the start of the first volume", "Units": "s"},
    "duration": {"Description": "event duration", "Units": "s"},
    "trial_type": {
        "Description": "cue type and trial phase of the monetary incentive delay task",
        "Levels": {
            "gain_anticipation": "cue announcing a possible gain, and the delay before the target",
            "loss_anticipation": "cue announcing a possible loss, and the delay before the target",
            "neutral_anticipation": "cue announcing no money at stake, and the delay",
            "gain_outcome": "feedback on a gain trial",
            "loss_outcome": "feedback on a loss trial",
            "neutral_outcome": "feedback on a neutral trial",
        },
    },
    "outcome": {"Description": "whether the target was hit in time",
                "Levels": {"hit": "response in time", "miss": "response too late"}},
}


def mid_events(n_volumes: int, repetition_time: float, rng: np.random.Generator) -> pd.DataFrame:
    """Events of one MID run that fits in ``n_volumes`` volumes.

    Returns a DataFrame ``onset, duration, trial_type, outcome`` sorted by onset; cue order is a
    shuffled balanced sequence; about 66% of trials are hits.
    """
    run_length = n_volumes * repetition_time
    onsets = []
    t = LEAD_IN_S
    trial_length = ANTICIPATION_S + TARGET_S + OUTCOME_S
    while True:
        iti = rng.uniform(2.0, 6.0)
        if t + trial_length + TAIL_S > run_length:
            break
        onsets.append(t)
        t += trial_length + iti
    n_trials = len(onsets)
    cues = np.resize(np.asarray(CUES), n_trials)
    cues = rng.permutation(cues)
    hits = rng.random(n_trials) < 0.66
    rows = []
    for onset, cue, hit in zip(onsets, cues, hits, strict=True):
        outcome = "hit" if hit else "miss"
        rows.append((round(onset, 3), ANTICIPATION_S, f"{cue}_anticipation", outcome))
        rows.append((round(onset + ANTICIPATION_S + TARGET_S, 3), OUTCOME_S, f"{cue}_outcome",
                     outcome))
    return pd.DataFrame(rows, columns=["onset", "duration", "trial_type", "outcome"])
