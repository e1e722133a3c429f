"""Simulation presets: study size, run lengths and the size of every planted effect.

A preset is data, not code: :func:`get_preset` returns a frozen :class:`Preset` whose fields are
read by the generators and copied verbatim into ``sourcedata/ground_truth.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from theramark.errors import BadInputError

GROUPS = ("CBT", "MBCT", "waitlist", "HC")
THERAPY_GROUPS = ("CBT", "MBCT")
PATIENT_GROUPS = ("CBT", "MBCT", "waitlist")
SESSIONS = ("pre", "mid", "post")
#: Healthy controls are scanned and assessed at baseline and week 8 only.
CONTROL_SESSIONS = ("pre", "post")
#: Weeks since baseline of each session.
SESSION_WEEKS = {"pre": 0, "mid": 4, "post": 8}
TASKS = ("rest", "mid")
#: Regions that share a component in the planted thalamo-occipital connectivity state.
STATE_ROIS = ("thalamus_L", "thalamus_R", "inf_occipital_L", "inf_occipital_R")
REPETITION_TIME = 2.0
SPACE = "MNI152NLin2009cAsym"


@dataclass(frozen=True)
class EffectSizes:
    """Sizes of the planted effects (all zero in the ``null`` preset).

    Correlation sizes are added to the correlation of the two latent regional signals (before voxel
    noise, which attenuates the correlation measured in sphere means); activation sizes are in percent
    signal change per unit of the HRF-convolved regressor.
    """

    #: dlPFC-precuneus: amplitude of the slow sinusoidal coupling (correlation units) per session in
    #: CBT; every other participant and session keeps ``dfc_amplitude_baseline``.
    dfc_amplitude_baseline: float = 0.15
    dfc_amplitude_cbt: dict[str, float] = field(
        default_factory=lambda: {"pre": 0.15, "mid": 0.55, "post": 0.9})
    #: amygdala_L-dACC: added correlation = base + slope * fraction of baseline HAMD-17 improvement.
    amygdala_acc_base: float = 0.05
    amygdala_acc_slope: float = 1.0
    #: ... plus this therapy-specific rise in CBT and MBCT per session (added correlation).
    amygdala_acc_therapy: dict[str, float] = field(
        default_factory=lambda: {"pre": 0.0, "mid": 0.15, "post": 0.35})
    #: NAcc gain-anticipation response added in CBT and MBCT (percent signal change) per session.
    nacc_gain_increase: dict[str, float] = field(
        default_factory=lambda: {"pre": 0.0, "mid": 1.0, "post": 2.0})
    #: sgACC-NAcc added correlation = base + slope * response propensity (z), patients only.
    sgacc_nacc_base: float = 0.25
    sgacc_nacc_slope: float = 0.18
    #: Response propensity's weight in the probability of response (log-odds per SD).
    propensity_logodds: float = 1.8
    #: Probability of response (HAMD-17 reduction >= 50%) at week 8 by group.
    response_rate: dict[str, float] = field(
        default_factory=lambda: {"CBT": 0.5, "MBCT": 0.5, "waitlist": 0.15, "HC": 0.0})
    #: CTQ emotional neglect -> PSS-10 (latent SD per SD) in men and women; PSS-10 -> SHAPS.
    a_path_men: float = 0.25
    a_path_women: float = 0.7
    b_path: float = 0.5
    direct_path: float = 0.1
    #: Financial strain breakpoint (0-10 scale) and SHAPS slope above it (latent SD per point).
    strain_breakpoint: float = 6.0
    strain_slope: float = 0.55
    #: Weight of loneliness (UCLA) on its network neighbours (latent SD per SD).
    loneliness_weight: float = 0.6
    #: Rest runs switch between two connectivity states (a two-state Markov chain): in the
    #: "thalamo-occipital" state the latent signals of STATE_ROIS share a component with this
    #: correlation; in the other they do not.
    state_coupling: float = 0.7
    #: Mean dwell time (volumes) in the thalamo-occipital state.
    state_dwell_volumes: float = 12.0
    #: Fractional occupancy of the thalamo-occipital state: everyone but CBT ...
    state_occupancy_baseline: float = 0.3
    #: ... and CBT per session.
    state_occupancy_cbt: dict[str, float] = field(
        default_factory=lambda: {"pre": 0.3, "mid": 0.45, "post": 0.6})
    #: mfg_R-amygdala_R added correlation = base + slope * the HAMD-17 improvement of the NEXT
    #: session (the post session's own at post): brain change leads symptom change by one wave.
    lag_rho_base: float = 0.05
    lag_rho_slope: float = 0.8


NULL_EFFECTS = EffectSizes(
    dfc_amplitude_cbt={"pre": 0.15, "mid": 0.15, "post": 0.15},
    amygdala_acc_base=0.05, amygdala_acc_slope=0.0,
    amygdala_acc_therapy={"pre": 0.0, "mid": 0.0, "post": 0.0},
    nacc_gain_increase={"pre": 0.0, "mid": 0.0, "post": 0.0},
    sgacc_nacc_slope=0.0, propensity_logodds=0.0,
    response_rate={"CBT": 0.2, "MBCT": 0.2, "waitlist": 0.2, "HC": 0.0},
    a_path_men=0.0, a_path_women=0.0, b_path=0.0, direct_path=0.0, strain_slope=0.0,
    loneliness_weight=0.0,
    state_occupancy_cbt={"pre": 0.3, "mid": 0.3, "post": 0.3}, lag_rho_slope=0.0,
)

#: Realistic (smaller) imaging effects for the large preset.
LARGE_EFFECTS = EffectSizes(
    dfc_amplitude_cbt={"pre": 0.15, "mid": 0.3, "post": 0.45},
    amygdala_acc_slope=0.4,
    amygdala_acc_therapy={"pre": 0.0, "mid": 0.05, "post": 0.1},
    nacc_gain_increase={"pre": 0.0, "mid": 0.2, "post": 0.4},
    # the demo's slope: with 0.1 the best attainable AUC of the two measured sgACC-NAcc edges is
    # about 0.70 (tests/predict/test_planted_predictor.py), at the bottom of what studies report
    state_occupancy_cbt={"pre": 0.3, "mid": 0.38, "post": 0.45},
    lag_rho_slope=0.4,
)


@dataclass(frozen=True)
class SiteEffects:
    """Scanner effects of each site (same in every preset; documented in the ground truth).

    ``intensity_scale`` and ``noise_scale`` multiply the baseline image intensity and the voxel noise
    SD; ``global_amplitude`` is the SD (percent signal) of a whole-brain shared signal, which adds a
    site offset to every functional-connectivity edge; ``activation_scale`` multiplies task responses.
    """

    intensity_scale: float
    noise_scale: float
    global_amplitude: float
    activation_scale: float


SITE_EFFECTS = {
    "A": SiteEffects(intensity_scale=1.0, noise_scale=1.0, global_amplitude=0.3,
                     activation_scale=1.0),
    "B": SiteEffects(intensity_scale=1.18, noise_scale=1.35, global_amplitude=0.6,
                     activation_scale=0.85),
    "C": SiteEffects(intensity_scale=0.9, noise_scale=1.15, global_amplitude=0.45,
                     activation_scale=1.1),
}


@dataclass(frozen=True)
class Preset:
    """Everything that defines a simulated study apart from the seed and the output grid."""

    name: str
    n_per_group: int
    sites: tuple[str, ...]
    n_volumes: dict[str, int]
    effects: EffectSizes
    planted: bool
    #: Runs with heavy motion (participant index within waitlist, session, task) for QC checks.
    high_motion_runs: tuple[tuple[int, str, str], ...] = ((0, "mid", "rest"),)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the preset."""
        record = asdict(self)
        record["sites"] = list(self.sites)
        record["high_motion_runs"] = [list(r) for r in self.high_motion_runs]
        return record


_PRESETS = {
    "demo": Preset("demo", 10, ("A", "B"), {"rest": 150, "mid": 130}, EffectSizes(), True),
    "null": Preset("null", 10, ("A", "B"), {"rest": 150, "mid": 130}, NULL_EFFECTS, False),
    "large": Preset("large", 50, ("A", "B", "C"), {"rest": 180, "mid": 160}, LARGE_EFFECTS, True),
}


def get_preset(name: str, n_per_group: int | None = None, n_volumes: int | None = None) -> Preset:
    """The preset called ``name``, optionally with another group size or run length.

    Parameters
    ----------
    name : {"demo", "null", "large"}
        Preset name.
    n_per_group : int, optional
        Participants per group (overrides the preset's).
    n_volumes : int, optional
        Volumes of every run (overrides the preset's; used for fast tests). At least 40.

    Raises
    ------
    BadInputError
        Unknown preset, or sizes out of range.
    """
    if name not in _PRESETS:
        raise BadInputError(f"unknown simulation preset {name!r}; expected one of {sorted(_PRESETS)}")
    preset = _PRESETS[name]
    if n_per_group is not None:
        if int(n_per_group) < 1:
            raise BadInputError(f"n_per_group must be at least 1, got {n_per_group}")
        preset = replace(preset, n_per_group=int(n_per_group))
    if n_volumes is not None:
        if int(n_volumes) < 40:
            raise BadInputError(f"n_volumes must be at least 40 (a MID run needs it), got {n_volumes}")
        preset = replace(preset, n_volumes={task: int(n_volumes) for task in TASKS})
    return preset
