"""Head motion of a run: six rigid-body parameters, framewise displacement and relative RMS.

Calm runs drift a little (mean FD about 0.1 mm); some runs have brief spikes (the head jumps and
comes back, FD 0.6-2 mm at two consecutive volumes); a *high-motion* run moves throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Head radius (mm) that turns rotations into displacements (Power et al. 2012).
HEAD_RADIUS_MM = 50.0
#: Sphere radius (mm) of the relative RMS displacement (Jenkinson 1999; FSL's default 80 mm).
RMS_RADIUS_MM = 80.0


@dataclass(frozen=True)
class Motion:
    """Motion of one run.

    Attributes
    ----------
    parameters : ndarray, shape (T, 6)
        ``trans_x, trans_y, trans_z`` (mm) and ``rot_x, rot_y, rot_z`` (rad).
    spikes : ndarray of int
        Volumes where a spike starts.
    """

    parameters: np.ndarray
    spikes: np.ndarray

    @property
    def framewise_displacement(self) -> np.ndarray:
        """Power et al. (2012) FD (mm), shape (T,); the first value is NaN."""
        return framewise_displacement(self.parameters)

    @property
    def rmsd(self) -> np.ndarray:
        """Relative RMS displacement (mm), small-angle form of Jenkinson (1999); first is NaN."""
        delta = np.diff(self.parameters, axis=0)
        value = np.sqrt((delta[:, :3] ** 2).sum(axis=1)
                        + RMS_RADIUS_MM**2 / 5.0 * (delta[:, 3:] ** 2).sum(axis=1))
        return np.concatenate([[np.nan], value])


def framewise_displacement(parameters: np.ndarray) -> np.ndarray:
    """Framewise displacement (mm) of (T, 6) motion parameters (mm, rad); first value NaN."""
    delta = np.abs(np.diff(parameters, axis=0))
    fd = delta[:, :3].sum(axis=1) + HEAD_RADIUS_MM * delta[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def simulate_motion(n_volumes: int, rng: np.random.Generator, level: float = 1.0,
                    p_spikes: float = 0.35, high_motion: bool = False,
                    first_volume: int = 3) -> Motion:
    """Motion parameters of one run.

    Parameters
    ----------
    n_volumes : int
        Run length T.
    rng : numpy.random.Generator
        Random generator.
    level : float
        Participant's mover level (1: typical; mean FD scales with it).
    p_spikes : float
        Probability that the run has 1-3 motion spikes.
    high_motion : bool
        Make the run move throughout (mean FD about 0.35 mm, a third to two thirds of the volumes
        over 0.2 mm) with a spike every 20 volumes: a run that QC should exclude, yet not one
        where every volume would be censored.
    first_volume : int
        Spikes occur after this volume (beyond the non-steady-state volumes).
    """
    if high_motion:
        level = 3.0
    steps = np.concatenate([rng.normal(0.0, 0.02 * level, (n_volumes, 3)),
                            rng.normal(0.0, 0.0004 * level, (n_volumes, 3))], axis=1)
    position = np.empty_like(steps)
    position[0] = steps[0]
    # slowly drifting, mean-reverting position: the head settles back towards where it started
    for t in range(1, n_volumes):
        position[t] = 0.92 * position[t - 1] + steps[t]
    n_spikes = 0
    if high_motion:
        n_spikes = max(2, n_volumes // 20)
    elif rng.random() < p_spikes:
        n_spikes = int(rng.integers(1, 4))
    candidates = np.arange(first_volume, n_volumes - 2)
    spikes = np.sort(rng.choice(candidates, size=min(n_spikes, candidates.size), replace=False))
    for t in spikes:
        jump = np.concatenate([rng.normal(0.0, 0.35, 3), rng.normal(0.0, 0.006, 3)])
        position[t] += jump
    return Motion(parameters=position, spikes=spikes.astype(int))
