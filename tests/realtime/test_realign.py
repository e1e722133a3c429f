"""Realignment recovers the simulator's known motion; online FD agrees with the offline FD."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from theramark.imaging.qc import framewise_displacement
from theramark.realtime.realign import (
    Realigner,
    framewise_displacement_step,
    params_from_matrix,
    rigid_matrix,
)
from theramark.simulate.neurofeedback import rigid_matrix as simulator_matrix


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from theramark.simulate.neurofeedback import simulate_neurofeedback_run

    paths = simulate_neurofeedback_run(tmp_path_factory.mktemp("nf"), n_volumes=40, shape=(40, 40, 24),
                                       random_state=3)
    image = nib.load(paths["bold"])
    motion = pd.read_csv(paths["motion"], sep="\t").to_numpy()
    return np.asarray(image.dataobj, dtype=np.float32), image.affine, motion


def test_parameters_round_trip_and_match_the_simulator_convention():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = np.r_[rng.normal(0, 2, 3), rng.normal(0, 0.1, 3)]
        np.testing.assert_allclose(params_from_matrix(rigid_matrix(p)), p, atol=1e-12)
        centre = rng.normal(0, 10, 3)
        # the simulator's x' = R (x - c) + c + t equals ours in centred coordinates
        shift = np.eye(4)
        shift[:3, 3] = centre
        ours = shift @ rigid_matrix(p) @ np.linalg.inv(shift)
        np.testing.assert_allclose(ours, simulator_matrix(p, centre), atol=1e-12)


def test_recovers_the_simulated_motion(run):
    data, affine, truth = run
    realigner = Realigner(data[..., 0], affine)
    estimates, previous = [np.zeros(6)], None
    for t in range(1, data.shape[-1]):
        previous = realigner.estimate(data[..., t], previous)
        estimates.append(previous)
    estimates = np.array(estimates)
    assert np.abs(truth).max() > 0.3  # something to recover
    error = estimates - truth
    assert np.sqrt((error[:, :3] ** 2).mean()) < 0.1             # mm
    assert np.degrees(np.sqrt((error[:, 3:] ** 2).mean())) < 0.1  # degrees
    online = np.array([np.nan] + [framewise_displacement_step(estimates[t - 1], estimates[t])
                                  for t in range(1, len(estimates))])
    offline = framewise_displacement(truth)
    np.testing.assert_allclose(framewise_displacement(estimates)[1:], online[1:])  # same formula
    assert np.corrcoef(online[1:], offline[1:])[0, 1] > 0.95


def test_reslice_undoes_the_motion_and_sample_matches_reslice(run):
    data, affine, _ = run
    reference = data[..., 0]
    realigner = Realigner(reference, affine, downsample=False)
    params = np.array([1.2, -0.8, 0.5, 0.02, -0.01, 0.015])
    moved = realigner.reslice(reference, params, inverse=True)
    estimate = realigner.estimate(moved)
    np.testing.assert_allclose(estimate[:3], params[:3], atol=0.1)
    np.testing.assert_allclose(estimate[3:], params[3:], atol=np.radians(0.1))
    back = realigner.reslice(moved, estimate)
    voxels = np.argwhere(reference > np.percentile(reference, 60))
    np.testing.assert_allclose(realigner.sample(moved, estimate, voxels), back[tuple(voxels.T)], rtol=1e-5)
    inside = reference > np.percentile(reference, 60)
    assert np.corrcoef(back[inside], reference[inside])[0, 1] > 0.98


def test_fd_step_without_predecessor_is_nan():
    assert np.isnan(framewise_displacement_step(None, np.zeros(6)))
    assert framewise_displacement_step(np.zeros(6), np.array([1, 0, 0, 0.01, 0, 0])) == pytest.approx(1.5)
