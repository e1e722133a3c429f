"""The neurofeedback run simulator: planted regulation visible offline, absent when not planted."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import ndimage
from scipy.spatial.transform import Rotation

from theramark.errors import BadInputError
from theramark.simulate.neurofeedback import regulation_regressor, rigid_matrix, simulate_neurofeedback_run

SMALL = {"n_volumes": 80, "tr": 1.0, "shape": (32, 32, 20), "voxel_mm": 4.0, "block_s": 20.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nf")
    return {reg: simulate_neurofeedback_run(root / f"reg{reg}", regulation=reg, random_state=7, **SMALL)
            for reg in (0.02, 0.0)}


def _roi_means(paths) -> tuple[np.ndarray, np.ndarray]:
    data = np.asanyarray(nib.load(paths["bold"]).dataobj).astype(float)
    acc = nib.load(paths["acc_mask"]).get_fdata() > 0
    amygdala = nib.load(paths["amygdala_mask"]).get_fdata() > 0
    return data[acc].mean(axis=0), data[amygdala].mean(axis=0)


def _plateau_contrast(series: np.ndarray, events: pd.DataFrame, tr: float) -> float:
    """Regulate / baseline block means minus 1, from 8 s into each block (past the HRF's rise)."""
    times = np.arange(series.size) * tr
    labels = np.full(series.size, "", dtype=object)
    for onset, duration, kind in events[["onset", "duration", "trial_type"]].itertuples(index=False):
        labels[(times >= onset + 8.0) & (times < onset + duration)] = kind
    return series[labels == "regulate"].mean() / series[labels == "baseline"].mean() - 1.0


def test_files_and_protocol(runs):
    paths = runs[0.02]
    img = nib.load(paths["bold"])
    assert img.shape == (*SMALL["shape"], SMALL["n_volumes"]) and img.get_data_dtype() == np.int16
    assert img.header.get_zooms() == (4.0, 4.0, 4.0, 1.0)
    for key in ("acc_mask", "amygdala_mask"):
        mask = nib.load(paths[key])
        np.testing.assert_allclose(mask.affine, img.affine)
        assert 20 < (mask.get_fdata() > 0).sum() < 400
    events = pd.read_csv(paths["events"], sep="\t")
    assert list(events.columns) == ["onset", "duration", "trial_type"]
    assert events["trial_type"].tolist() == ["baseline", "regulate"] * 2
    assert events["onset"].tolist() == [0.0, 20.0, 40.0, 60.0]
    truth = json.loads(paths["ground_truth"].read_text())
    assert truth["regulation"]["fraction"] == 0.02 and truth["regulation"]["roi"] == "acc"
    assert "Rx(rot_x) @ Ry(rot_y) @ Rz(rot_z)" in truth["motion"]["convention"]
    brain = np.asanyarray(img.dataobj)[..., 0]
    assert 800 < np.median(brain[brain > 500]) < 1200  # baseline about 1000


def test_planted_regulation_found_offline(runs):
    events = pd.read_csv(runs[0.02]["events"], sep="\t")
    acc, amygdala = _roi_means(runs[0.02])
    # the control ROI shares the global drift, not the regulation: their difference isolates it
    effect = _plateau_contrast(acc, events, 1.0) - _plateau_contrast(amygdala, events, 1.0)
    assert effect == pytest.approx(0.02, rel=0.2)
    # least squares on the planted regressor with a drift term (statsmodels), CI covers the truth
    design = sm.add_constant(np.column_stack([regulation_regressor(80, 1.0, 20.0), np.arange(80) / 80]))
    fit = sm.OLS(acc / acc[:20].mean(), design).fit()
    low, high = fit.conf_int()[1]
    assert low < 0.02 < high and fit.pvalues[1] < 1e-6


def test_no_regulation_when_not_planted(runs):
    events = pd.read_csv(runs[0.0]["events"], sep="\t")
    acc, amygdala = _roi_means(runs[0.0])
    effect = _plateau_contrast(acc, events, 1.0) - _plateau_contrast(amygdala, events, 1.0)
    assert abs(effect) < 0.003
    design = sm.add_constant(np.column_stack([regulation_regressor(80, 1.0, 20.0), np.arange(80) / 80]))
    fit = sm.OLS(acc / acc[:20].mean(), design).fit()
    low, high = fit.conf_int()[1]
    assert low < 0.0 < high


def test_motion_matches_saved_parameters(tmp_path):
    """Undoing the saved motion of a volume brings it back onto volume 1; the opposite does not."""
    paths = simulate_neurofeedback_run(tmp_path, n_volumes=40, shape=(32, 32, 20), voxel_mm=4.0, noise=0.0,
                                       regulation=0.0, dtype="float32", random_state=2)
    img = nib.load(paths["bold"])
    data = np.asanyarray(img.dataobj)
    motion = pd.read_csv(paths["motion"], sep="\t")
    assert list(motion.columns) == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    params = motion.to_numpy()
    np.testing.assert_array_equal(params[0], 0.0)
    t = int(np.argmax(np.abs(params[:, :3]).sum(axis=1) + 50 * np.abs(params[:, 3:]).sum(axis=1)))
    assert np.abs(params[t, :3]).sum() > 0.2
    centre = np.array(json.loads(paths["ground_truth"].read_text())["motion"]["centre_mm"])
    # the documented convention, built independently: x' = R (x - c) + c + t, R = Rx @ Ry @ Rz
    rigid = np.eye(4)
    rigid[:3, :3] = Rotation.from_euler("XYZ", params[t, 3:]).as_matrix()
    rigid[:3, 3] = centre - rigid[:3, :3] @ centre + params[t, :3]
    np.testing.assert_allclose(rigid_matrix(params[t], centre), rigid, atol=1e-12)
    inner = ndimage.binary_erosion(data[..., 0] > 500, iterations=2)

    def error(world_to_head):
        """Mean |volume t - volume 1 moved| inside the head, after matching the global drift."""
        matrix = np.linalg.inv(img.affine) @ world_to_head @ img.affine
        moved = ndimage.affine_transform(data[..., 0], matrix[:3, :3], offset=matrix[:3, 3], order=1)[inner]
        target = data[..., t][inner]
        return np.abs(target - moved * (target.sum() / moved.sum())).mean()

    # volume t shows at world x what volume 1 shows at rigid^-1 x
    right = error(np.linalg.inv(rigid))
    assert right < 1.0  # intensity units, baseline 1000
    assert error(rigid) > 20 * right and error(np.eye(4)) > 20 * right


def test_without_motion_parameters_are_zero(tmp_path):
    paths = simulate_neurofeedback_run(tmp_path, n_volumes=6, shape=(12, 12, 8), motion=False,
                                       dtype="float32")
    assert (pd.read_csv(paths["motion"], sep="\t").to_numpy() == 0).all()
    assert nib.load(paths["bold"]).get_data_dtype() == np.float32


def test_deterministic(tmp_path):
    a = simulate_neurofeedback_run(tmp_path / "a", n_volumes=5, shape=(10, 10, 8), random_state=3)
    b = simulate_neurofeedback_run(tmp_path / "b", n_volumes=5, shape=(10, 10, 8), random_state=3)
    np.testing.assert_array_equal(np.asanyarray(nib.load(a["bold"]).dataobj),
                                  np.asanyarray(nib.load(b["bold"]).dataobj))


def test_bad_arguments(tmp_path):
    with pytest.raises(BadInputError, match="n_volumes"):
        simulate_neurofeedback_run(tmp_path, n_volumes=1)
    with pytest.raises(BadInputError, match="dtype"):
        simulate_neurofeedback_run(tmp_path, dtype="uint8")
