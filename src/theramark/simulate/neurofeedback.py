"""A real-time neurofeedback run with a planted, documented regulation effect in an ACC region.

:func:`simulate_neurofeedback_run` writes one native-space BOLD run of a participant who alternates
*baseline* and *regulate* blocks while watching feedback from the anterior cingulate cortex (ACC).
In head coordinates, volume ``t`` at voxel ``v`` is::

    anatomy(v) * (1 + regulation * r(t) * acc(v) + amygdala_regulation * r(t) * amygdala(v) + drift(t))

where ``anatomy`` is a textured ellipsoidal head (baseline about ``baseline`` in the brain, darker
scalp shell, zero outside), ``acc`` and ``amygdala`` are the binary ROI masks, ``r(t)`` is the
regulate boxcar convolved with a gamma HRF (peak 5 s, no undershoot) and scaled so that its plateau
is 1 (``regulation`` is the fractional signal increase at the plateau), and ``drift`` a slow global
cosine drift of ``DRIFT_FRACTION``. The head then moves (six rigid-body parameters, trilinear resampling with
:func:`scipy.ndimage.affine_transform`) and Gaussian thermal noise of SD ``noise * baseline`` is added
in scanner space. Volume 1 is unmoved, so the masks (drawn on the unmoved head) line up with it.

Motion convention (``motion.tsv``): columns ``trans_x, trans_y, trans_z`` (mm) and
``rot_x, rot_y, rot_z`` (rad), fMRIPrep's names. The head at volume ``t`` is the head of volume 1
moved by ``x' = R (x - c) + c + t_xyz`` in world (scanner RAS mm) coordinates, where ``c`` is the world
position of the centre of the voxel grid and ``R = Rx(rot_x) @ Ry(rot_y) @ Rz(rot_z)`` (the order of
SPM's ``spm_matrix``: the z rotation acts first). A realignment to volume 1 estimates the inverse
motion. The parameters are :func:`theramark.simulate.motion.simulate_motion`'s slow mean-reverting
drift with one to three jerks, made relative to volume 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from theramark import __version__
from theramark._io import write_json, write_nifti, write_tsv
from theramark.errors import BadInputError
from theramark.simulate.motion import simulate_motion

#: ROI centres as fractions of the brain ellipsoid's radii (x: right, y: anterior, z: superior).
ACC_CENTRE = (0.0, 0.45, 0.25)
AMYGDALA_CENTRES = ((-0.32, 0.05, -0.4), (0.32, 0.05, -0.4))
#: ROI radii (mm), at least 1.5 (ACC) / 1.2 (amygdala) voxels.
ACC_RADIUS_MM = 9.0
AMYGDALA_RADIUS_MM = 6.0
#: Amplitude of the slow global drift (fraction of baseline).
DRIFT_FRACTION = 0.003
#: Brain ellipsoid radii as fractions of the field of view's half-extent.
BRAIN_FRACTION = (0.68, 0.8, 0.8)
BLOCKS = ("baseline", "regulate")
#: Gamma HRF: shape (peak at shape - 1 = 5 s, unit scale) and support (s).
HRF_SHAPE = 6.0
HRF_LENGTH_S = 25.0


def regulation_regressor(n_volumes: int, tr: float, block_s: float, oversampling: int = 16) -> np.ndarray:
    """Regulate blocks convolved with a gamma HRF, plateau 1, at the volumes' onsets, shape (T,).

    Blocks alternate ``baseline, regulate, baseline, ...`` from time 0, each ``block_s`` long. The HRF
    is a gamma density of shape ``HRF_SHAPE`` (peak 5 s, the positive lobe of the canonical HRF, without
    its undershoot, so that a block's response rises to its plateau in about 8 s and stays there).
    """
    dt = tr / oversampling
    times = np.arange(n_volumes * oversampling) * dt
    boxcar = ((times // block_s) % 2 == 1).astype(float)
    lags = np.arange(0.0, HRF_LENGTH_S, dt)
    hrf = lags ** (HRF_SHAPE - 1.0) * np.exp(-lags)  # gamma density up to its constant
    hrf = hrf / hrf.sum()
    return np.convolve(boxcar, hrf)[: times.size][::oversampling]


def protocol_events(n_volumes: int, tr: float, block_s: float) -> pd.DataFrame:
    """BIDS events of the alternating blocks: ``onset, duration, trial_type``."""
    run_s = n_volumes * tr
    onsets = np.arange(0.0, run_s, block_s)
    return pd.DataFrame({"onset": onsets, "duration": np.minimum(block_s, run_s - onsets),
                         "trial_type": [BLOCKS[i % 2] for i in range(onsets.size)]})


def rotation_matrix(rot_x: float, rot_y: float, rot_z: float) -> np.ndarray:
    """``Rx @ Ry @ Rz`` of angles in radians (right-handed rotations about the world axes)."""
    cx, sx = np.cos(rot_x), np.sin(rot_x)
    cy, sy = np.cos(rot_y), np.sin(rot_y)
    cz, sz = np.cos(rot_z), np.sin(rot_z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def rigid_matrix(parameters: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 world transform ``x -> R (x - c) + c + t`` of six motion parameters (mm, rad)."""
    out = np.eye(4)
    out[:3, :3] = rotation_matrix(*parameters[3:])
    out[:3, 3] = centre - out[:3, :3] @ centre + parameters[:3]
    return out


def _anatomy(shape: tuple[int, int, int], voxel_mm: float, baseline: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head image, brain radii (mm) and voxel-centre coordinates (mm, relative to the grid centre)."""
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    coords = (grid - centre[:, None, None, None]) * voxel_mm
    radii = np.array(BRAIN_FRACTION) * np.array(shape) * voxel_mm / 2
    r = np.sqrt(sum((coords[i] / radii[i]) ** 2 for i in range(3)))
    brain = (r <= 1.0).astype(np.float32)
    scalp = ((r > 1.05) & (r <= 1.18)).astype(np.float32)
    # texture: grey/white/CSF-like contrast at a few voxels' scale so that realignment is well posed
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    texture /= texture.std()
    head = baseline * (brain * (1.0 + 0.12 * texture) + 0.6 * scalp)
    head = ndimage.gaussian_filter(head, 0.7)
    return head.astype(np.float32), radii, coords


def _sphere(coords: np.ndarray, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    return ((coords - centre_mm[:, None, None, None]) ** 2).sum(axis=0) <= radius_mm**2


def simulate_neurofeedback_run(out_dir: str | os.PathLike, *, n_volumes: int = 120, tr: float = 1.0,
                               shape: tuple[int, int, int] = (64, 64, 36), voxel_mm: float = 3.0,
                               block_s: float = 20.0, regulation: float = 0.01,
                               amygdala_regulation: float = 0.0, motion: bool = True, noise: float = 0.01,
                               baseline: float = 1000.0, dtype: str = "int16",
                               random_state: int = 0) -> dict[str, Path]:
    """Write a simulated real-time neurofeedback run, its ROI masks, protocol, motion and ground truth.

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created).
    n_volumes : int
        Volumes T.
    tr : float
        Repetition time (s).
    shape : tuple of 3 int
        Voxel grid.
    voxel_mm : float
        Isotropic voxel size (mm).
    block_s : float
        Length (s) of each baseline/regulate block; blocks alternate from a baseline block at 0 s.
    regulation : float
        Fractional increase of the ACC signal at the plateau of a regulate block (0.01: 1 %); 0
        plants nothing.
    amygdala_regulation : float
        The same for the amygdala ROI (default none: the control region).
    motion : bool
        Move the head (parameters in ``motion.tsv``); without it they are all zero.
    noise : float
        SD of the thermal noise as a fraction of ``baseline``.
    baseline : float
        Mean brain intensity.
    dtype : {"int16", "float32"}
        Data type of the BOLD image (int16 is rounded, as scanners store it).
    random_state : int
        Seed.

    Returns
    -------
    dict of str to Path
        ``bold`` (4D NIfTI), ``acc_mask``, ``amygdala_mask`` (3D uint8 NIfTI, same grid), ``events``
        (BIDS events TSV: ``onset, duration, trial_type`` in {baseline, regulate}), ``motion`` (TSV),
        ``ground_truth`` (JSON).

    Notes
    -----
    Block means of the ACC ROI are ``1 + regulation`` times the baseline-block means once the HRF
    has reached its plateau (about 8 s into a block); means over whole blocks are slightly lower.

    Examples
    --------
    >>> paths = simulate_neurofeedback_run("nf", n_volumes=40, shape=(24, 24, 16))  # doctest: +SKIP
    """
    if n_volumes < 2 or tr <= 0 or block_s <= 0 or voxel_mm <= 0 or len(shape) != 3 or min(shape) < 4:
        raise BadInputError("simulate_neurofeedback_run: need n_volumes >= 2, positive tr, block_s and "
                            "voxel_mm, and a 3D shape of at least 4 voxels a side; got "
                            f"n_volumes={n_volumes}, tr={tr}, block_s={block_s}, voxel_mm={voxel_mm}, "
                            f"shape={shape}")
    if dtype not in ("int16", "float32"):
        raise BadInputError(f"dtype must be 'int16' or 'float32', got {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(random_state)
    shape = tuple(int(n) for n in shape)
    head, radii, coords = _anatomy(shape, voxel_mm, baseline, rng)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * voxel_mm
    acc_centre = np.array(ACC_CENTRE) * radii
    acc = _sphere(coords, acc_centre, max(ACC_RADIUS_MM, 1.5 * voxel_mm))
    amy_centres = [np.array(c) * radii for c in AMYGDALA_CENTRES]
    amygdala = np.zeros(shape, dtype=bool)
    for centre in amy_centres:
        amygdala |= _sphere(coords, centre, max(AMYGDALA_RADIUS_MM, 1.2 * voxel_mm))

    regressor = regulation_regressor(n_volumes, tr, block_s)
    times = np.arange(n_volumes) * tr
    drift = DRIFT_FRACTION * np.cos(np.pi * times / (n_volumes * tr))
    if motion:
        parameters = simulate_motion(n_volumes, rng, level=1.0, p_spikes=1.0).parameters
        parameters = parameters - parameters[0]
    else:
        parameters = np.zeros((n_volumes, 6))
    centre_world = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    inverse_affine = np.linalg.inv(affine)
    data = np.empty((*shape, n_volumes), dtype=np.float32)
    acc_f, amy_f = acc.astype(np.float32), amygdala.astype(np.float32)
    for t in range(n_volumes):
        volume = head * (1.0 + np.float32(regulation * regressor[t]) * acc_f
                         + np.float32(amygdala_regulation * regressor[t]) * amy_f + np.float32(drift[t]))
        if np.any(parameters[t]):
            # output voxel -> world -> head of volume 1 (inverse motion) -> input voxel
            matrix = inverse_affine @ np.linalg.inv(rigid_matrix(parameters[t], centre_world)) @ affine
            volume = ndimage.affine_transform(volume, matrix[:3, :3], offset=matrix[:3, 3], order=1,
                                              mode="constant", cval=0.0)
        data[..., t] = volume
    thermal = rng.standard_normal(data.shape, dtype=np.float32)
    thermal *= np.float32(noise * baseline)
    data += thermal
    del thermal
    if dtype == "int16":
        data = np.clip(np.rint(data), -32768, 32767).astype(np.int16)

    paths = {name: out / file for name, file in (
        ("bold", "bold.nii.gz"), ("acc_mask", "acc_mask.nii.gz"), ("amygdala_mask", "amygdala_mask.nii.gz"),
        ("events", "events.tsv"), ("motion", "motion.tsv"), ("ground_truth", "ground_truth.json"))}
    bold = nib.Nifti1Image(data, affine)
    bold.header.set_zooms((voxel_mm, voxel_mm, voxel_mm, tr))
    bold.header.set_xyzt_units("mm", "sec")
    bold.header.set_slope_inter(1.0, 0.0)
    write_nifti(paths["bold"], bold)
    for key, mask in (("acc_mask", acc), ("amygdala_mask", amygdala)):
        write_nifti(paths[key], nib.Nifti1Image(mask.astype(np.uint8), affine))
    write_tsv(paths["events"], protocol_events(n_volumes, tr, block_s))
    write_tsv(paths["motion"], pd.DataFrame(parameters, columns=["trans_x", "trans_y", "trans_z",
                                                                 "rot_x", "rot_y", "rot_z"]))
    write_json(paths["ground_truth"], _truth(locals()))
    return paths


def _truth(v: dict[str, Any]) -> dict[str, Any]:
    affine = v["affine"]
    return {
        "software": f"theramark {__version__}",
        "random_state": v["random_state"],
        "n_volumes": v["n_volumes"], "tr_s": v["tr"], "shape": list(v["shape"]), "voxel_mm": v["voxel_mm"],
        "affine": affine.tolist(),
        "protocol": {"block_s": v["block_s"], "order": list(BLOCKS), "file": "events.tsv"},
        "regulation": {
            "roi": "acc", "mask": "acc_mask.nii.gz", "fraction": v["regulation"],
            "centre_mm": (affine[:3, :3] @ (v["acc_centre"] / v["voxel_mm"] + (np.array(v["shape"]) - 1) / 2)
                          + affine[:3, 3]).tolist(),
            "n_voxels": int(v["acc"].sum()),
            "model": "anatomy * (1 + fraction * r(t)); r: regulate boxcar convolved with a gamma HRF "
                     "of shape 6 (peak 5 s), plateau 1",
        },
        "control_roi": {"roi": "amygdala", "mask": "amygdala_mask.nii.gz",
                        "fraction": v["amygdala_regulation"], "n_voxels": int(v["amygdala"].sum())},
        "noise": {"thermal_sd": v["noise"] * v["baseline"], "baseline": v["baseline"],
                  "global_drift_fraction": DRIFT_FRACTION},
        "motion": {
            "applied": bool(v["motion"]), "file": "motion.tsv",
            "columns": ["trans_x (mm)", "trans_y (mm)", "trans_z (mm)", "rot_x (rad)", "rot_y (rad)",
                        "rot_z (rad)"],
            "convention": "head at volume t = R (x - c) + c + t_xyz of the head at volume 1, world RAS mm; "
                          "R = Rx(rot_x) @ Ry(rot_y) @ Rz(rot_z); c = world centre of the voxel grid",
            "centre_mm": v["centre_world"].tolist(),
            "reference_volume": 1,
            "interpolation": "trilinear (scipy.ndimage.affine_transform, order 1)",
        },
    }
