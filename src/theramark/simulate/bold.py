"""Generative model of one BOLD run (rest or MID) on the template grid.

In percent signal change over the voxel's baseline intensity, a run is::

    regional (T x R) @ profiles (R x V)      latent ROI signals (networks + own + planted couplings,
                                              plus HRF-convolved MID responses) at the ROIs' MNI places
  + global (T) x 1                           whole-brain shared signal (site-dependent amplitude)
  + physio (T x 2) @ maps (2 x V)            nuisance strongest in CSF and WM (what CompCor removes)
  + motion (T x 6) @ gradients (6 x V)       motion-correlated intensity changes
  + spikes                                   intensity artefacts at the volumes where FD spikes
  + non-steady-state                         T1 saturation of the first volumes
  + noise                                    AR(1) voxel noise (site-dependent SD)

and the image is ``baseline x site scale x (1 + percent / 100)`` in float32. Everything is an array
operation over all voxels at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from theramark.simulate.events import TRIAL_TYPES, mid_events
from theramark.simulate.motion import Motion, framewise_displacement, simulate_motion
from theramark.simulate.presets import REPETITION_TIME, SITE_EFFECTS
from theramark.simulate.space import StudySpace, VoxelSubset

#: Weight of the network signal in each ROI's latent signal (variance share).
NETWORK_SHARE = 0.35
#: SD (percent signal) of the regional signals at rest and during the task.
REGIONAL_AMPLITUDE = {"rest": 1.0, "mid": 0.35}
#: SD (percent signal) of the voxel noise before the site's scale.
NOISE_SD = 1.0
NOISE_AR1 = 0.3
#: Extra intensity (percent) of the non-steady-state volumes.
NON_STEADY_EXCESS = (30.0, 12.0, 5.0)
#: Intensity drop (percent per mm of FD) at a motion spike, weighted towards the brain's edge.
SPIKE_PERCENT_PER_MM = 3.0

#: Baseline MID responses (percent signal change per unit regressor) of patients.
MID_RESPONSES: dict[str, dict[str, float]] = {
    **{roi: {"gain_anticipation": 0.5, "loss_anticipation": 0.45, "neutral_anticipation": 0.15,
             "gain_outcome": 0.3, "loss_outcome": -0.1} for roi in ("nacc_L", "nacc_R")},
    "vmpfc": {"gain_outcome": 0.5, "loss_outcome": -0.2},
    **{roi: {"gain_anticipation": 0.4, "loss_anticipation": 0.4, "neutral_anticipation": 0.1,
             "gain_outcome": 0.2, "loss_outcome": 0.2, "neutral_outcome": 0.1}
       for roi in ("dacc", "insula_ant_L", "insula_ant_R")},
    **{roi: {"gain_anticipation": 0.6, "loss_anticipation": 0.6, "neutral_anticipation": 0.6,
             "gain_outcome": 0.4, "loss_outcome": 0.4, "neutral_outcome": 0.4}
       for roi in ("cuneus", "lingual_L", "lingual_R", "inf_occipital_L", "inf_occipital_R")},
    **{roi: {"gain_anticipation": 0.3, "loss_anticipation": 0.3, "neutral_anticipation": 0.3}
       for roi in ("thalamus_L", "thalamus_R")},
    **{roi: {"gain_anticipation": 0.25, "loss_anticipation": 0.25, "neutral_anticipation": 0.2}
       for roi in ("dlpfc_L", "dlpfc_R", "mfg_L", "mfg_R")},
}
#: Healthy controls' NAcc gain-anticipation response (patients have a blunted one).
CONTROL_NACC_GAIN = 0.8


@dataclass(frozen=True)
class Coupling:
    """A shared latent component added to ROIs ``a`` and ``b`` (correlation ``rho``).

    With ``period`` (volumes) the component enters ``b`` multiplied by ``sin(2 pi t / period +
    phase)``: the coupling then fluctuates between -rho and +rho with mean zero, which raises the
    variability of windowed FC without changing static FC.
    """

    a: str
    b: tuple[str, ...]
    rho: float
    period: float | None = None


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run apart from the study space."""

    participant_id: str
    group: str
    site: str
    session: str
    task: str
    n_volumes: int
    seed: tuple[int, ...]
    motion_level: float = 1.0
    high_motion: bool = False
    couplings: tuple[Coupling, ...] = ()
    nacc_gain_increase: float = 0.0
    extra: dict = field(default_factory=dict)
    #: Couplings drawn from a stream of their own, so that adding one leaves the rest of the run
    #: (and every run planted before it existed) unchanged.
    own_stream_couplings: tuple[Coupling, ...] = ()
    #: Planted connectivity state (rest runs): fractional occupancy of the state in which
    #: ``state_rois`` share a component of correlation ``state_coupling``; None: no states.
    state_occupancy: float | None = None
    state_rois: tuple[str, ...] = ()
    state_coupling: float = 0.0
    state_dwell_volumes: float = 12.0

    @property
    def stem(self) -> str:
        return f"{self.participant_id}_ses-{self.session}_task-{self.task}"


@dataclass
class RunData:
    """A simulated run: in-mask data (T, V) float32, motion, non-steady-state count, events."""

    data: np.ndarray
    motion: Motion
    n_non_steady: int
    events: pd.DataFrame | None


def ar1(shape: tuple[int, ...], phi: float, rng: np.random.Generator,
        dtype: type = np.float64) -> np.ndarray:
    """Stationary unit-variance AR(1) series along axis 0 (columns independent).

    The recursion runs over time on whole rows (T steps of a V-vector operation), which is faster
    than a filter along a strided axis.
    """
    out = rng.standard_normal(shape, dtype=dtype)
    scale = dtype(np.sqrt(1.0 - phi**2)) if dtype is np.float32 else np.sqrt(1.0 - phi**2)
    phi_cast = dtype(phi) if dtype is np.float32 else phi
    # out[0] is already a draw from the stationary distribution
    for t in range(1, shape[0]):
        out[t] *= scale
        out[t] += phi_cast * out[t - 1]
    return out


def slice_timing(n_slices: int, repetition_time: float = REPETITION_TIME) -> list[float]:
    """Interleaved ascending (odd slices first) slice acquisition times (s)."""
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
    times = np.empty(n_slices)
    times[order] = np.arange(n_slices) * repetition_time / n_slices
    return [round(float(t), 4) for t in times]


def start_time(times: list[float]) -> float:
    """fMRIPrep's slice-timing reference: halfway between the first and last slice (s)."""
    return round(min(times) + 0.5 * (max(times) - min(times)), 3)


def task_regressors(events: pd.DataFrame, n_volumes: int, reference_time: float) -> np.ndarray:
    """Glover-HRF regressors of the six MID trial types, shape (T, 6) in TRIAL_TYPES order."""
    from nilearn.glm.first_level import compute_regressor

    frame_times = np.arange(n_volumes) * REPETITION_TIME + reference_time
    columns = []
    for trial_type in TRIAL_TYPES:
        rows = events[events["trial_type"] == trial_type]
        condition = np.vstack([rows["onset"], rows["duration"], np.ones(len(rows))])
        regressor, _ = compute_regressor(condition, "glover", frame_times, con_id=trial_type)
        columns.append(regressor[:, 0])
    return np.column_stack(columns)


def response_matrix(roi_names: list[str], spec: RunSpec) -> np.ndarray:
    """MID response amplitudes (percent signal change), shape (6, R)."""
    amplitudes = np.zeros((len(TRIAL_TYPES), len(roi_names)))
    for r, roi in enumerate(roi_names):
        for c, trial_type in enumerate(TRIAL_TYPES):
            amplitudes[c, r] = MID_RESPONSES.get(roi, {}).get(trial_type, 0.0)
    gain = TRIAL_TYPES.index("gain_anticipation")
    for roi in ("nacc_L", "nacc_R"):
        r = roi_names.index(roi)
        if spec.group == "HC":
            amplitudes[gain, r] = CONTROL_NACC_GAIN
        amplitudes[gain, r] += spec.nacc_gain_increase
    return amplitudes * SITE_EFFECTS[spec.site].activation_scale


def regional_signals(space: StudySpace, spec: RunSpec, rng: np.random.Generator) -> np.ndarray:
    """Latent ROI signals (T, R), unit variance before the planted couplings' rescaling."""
    rois = space.rois
    names = list(rois["name"])
    networks = sorted(rois["network"].unique())
    t = spec.n_volumes
    network_signal = ar1((t, len(networks)), 0.7, rng)
    own = ar1((t, len(names)), 0.5, rng)
    member = np.array([networks.index(n) for n in rois["network"]])
    x = np.sqrt(NETWORK_SHARE) * network_signal[:, member] + np.sqrt(1 - NETWORK_SHARE) * own
    for coupling in spec.couplings:
        rho = float(np.clip(coupling.rho, 0.0, 0.95))
        shared = ar1((t,), 0.5, rng)
        if coupling.period is not None:
            phase = rng.uniform(0, 2 * np.pi)
            modulation = np.sin(2 * np.pi * np.arange(t) / coupling.period + phase)
        else:
            modulation = np.ones(t)
        a = names.index(coupling.a)
        x[:, a] = np.sqrt(1 - rho) * x[:, a] + np.sqrt(rho) * shared
        for b_name in coupling.b:
            b = names.index(b_name)
            x[:, b] = np.sqrt(1 - rho) * x[:, b] + np.sqrt(rho) * modulation * shared
    if spec.own_stream_couplings or spec.state_occupancy is not None:
        own = np.random.default_rng(np.random.SeedSequence((*spec.seed, 7919)))
        for coupling in spec.own_stream_couplings:
            rho = float(np.clip(coupling.rho, 0.0, 0.95))
            shared = ar1((t,), 0.5, own)
            for name in (coupling.a, *coupling.b):
                r = names.index(name)
                x[:, r] = np.sqrt(1 - rho) * x[:, r] + np.sqrt(rho) * shared
        if spec.state_occupancy is not None:
            states = state_sequence(t, spec.state_occupancy, spec.state_dwell_volumes, own)
            weight = spec.state_coupling * states
            shared = ar1((t,), 0.5, own)
            for name in spec.state_rois:
                r = names.index(name)
                x[:, r] = np.sqrt(1 - weight) * x[:, r] + np.sqrt(weight) * shared
    return x


def state_sequence(n_volumes: int, occupancy: float, dwell_volumes: float,
                   rng: np.random.Generator) -> np.ndarray:
    """A two-state Markov chain (0/1 per volume) with the given stationary occupancy of state 1.

    The chain leaves state 1 with probability ``1 / dwell_volumes`` per volume and enters it with
    ``occupancy / (1 - occupancy) / dwell_volumes``, so that ``occupancy`` is its stationary
    share; the first volume is drawn from the stationary distribution.
    """
    occupancy = float(np.clip(occupancy, 0.0, 1.0))
    leave = 1.0 / max(dwell_volumes, 1.0)
    enter = min(1.0, occupancy / max(1.0 - occupancy, 1e-9) * leave)
    draws = rng.random(n_volumes)
    states = np.empty(n_volumes)
    current = float(draws[0] < occupancy)
    # a Markov chain is sequential by nature; T steps of scalar work per run (T ~ 150-400)
    for i in range(n_volumes):
        if i:
            current = float(draws[i] >= leave) if current else float(draws[i] < enter)
        states[i] = current
    return states


def simulate_run(space: StudySpace | VoxelSubset, spec: RunSpec) -> RunData:
    """Simulate one run (see the module docstring for the model)."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed))
    site = SITE_EFFECTS[spec.site]
    t = spec.n_volumes
    n_non_steady = int(rng.choice([1, 2, 3], p=[0.25, 0.5, 0.25]))
    motion = simulate_motion(t, rng, level=spec.motion_level, high_motion=spec.high_motion,
                             first_volume=n_non_steady + 2)
    regional = REGIONAL_AMPLITUDE[spec.task] * regional_signals(space, spec, rng)
    events = None
    if spec.task == "mid":
        events = mid_events(t, REPETITION_TIME, rng)
        reference = spec.extra.get("reference_time", 0.0)
        regressors = task_regressors(events, t, reference)
        regional = regional + regressors @ response_matrix(list(space.rois["name"]), spec)
    percent = regional.astype(np.float32) @ space.profiles

    global_signal = site.global_amplitude * ar1((t,), 0.8, rng)
    percent += global_signal.astype(np.float32)[:, None]

    # physiological nuisance: strongest in CSF, then WM, weak in grey matter
    tissue = np.full(space.n_voxels, 0.3, dtype=np.float32)
    tissue[space.wm_voxels] = 1.0
    tissue[space.csf_voxels] = 2.0
    mixing = rng.normal(0.0, 1.0, (2, 3)).astype(np.float32)
    physio_maps = tissue * (0.6 + 0.4 * np.abs(mixing @ space.gradient_maps))
    percent += ar1((t, 2), 0.3, rng, np.float32) @ physio_maps

    # motion-correlated intensity: displacement along x, y, z and rotations (as mm at 50 mm)
    params = motion.parameters - motion.parameters.mean(axis=0)
    displacement = np.concatenate([params[:, :3], 50.0 * params[:, 3:]], axis=1)
    motion_maps = np.concatenate([space.gradient_maps,
                                  space.gradient_maps * space.edge_weight], axis=0)
    percent += (0.4 * displacement).astype(np.float32) @ motion_maps

    fd = np.nan_to_num(framewise_displacement(motion.parameters), nan=0.0)
    spike_map = (-space.edge_weight * (1.0 + 0.5 * space.gradient_maps[2])).astype(np.float32)
    for volume in motion.spikes:
        for offset, weight in ((0, 1.0), (1, 0.5)):
            if volume + offset < t:
                percent[volume + offset] += (SPIKE_PERCENT_PER_MM * weight
                                             * fd[volume + offset]) * spike_map
    percent += (NOISE_SD * site.noise_scale) * ar1((t, space.n_voxels), NOISE_AR1, rng,
                                                   np.float32)
    for volume in range(n_non_steady):
        percent[volume] += NON_STEADY_EXCESS[volume]
    baseline = (space.baseline * site.intensity_scale).astype(np.float32)
    data = baseline * (1.0 + percent / np.float32(100.0))
    return RunData(data=data, motion=motion, n_non_steady=n_non_steady, events=events)
