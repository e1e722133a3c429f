"""Rigid realignment of each volume to a reference, fast enough for every TR.

Convention of the six parameters (the same as fMRIPrep's confounds and
:func:`theramark.imaging.qc.framewise_displacement`): ``trans_x, trans_y, trans_z`` in mm and
``rot_x, rot_y, rot_z`` in radians, in world (scanner RAS+) axes, about the centre of the
reference's voxel grid ``c`` (its world coordinates). They define the head's motion

    x_t = R (x_ref - c) + t + c,    R = R_x(rot_x) @ R_y(rot_y) @ R_z(rot_z)

(SPM's order): the tissue at ``x_ref`` in the reference is at ``x_t`` in volume t, so that
``volume_t(x_t) = reference(x_ref)``. Realigning samples volume t at ``x_t`` for every reference
voxel.

The estimate is inverse-compositional Lucas-Kanade (Baker & Matthews 2004): a Gauss-Newton
least-squares fit whose Jacobian (image gradient of the reference times the rigid warp's
derivative) and Hessian are computed once, so that an iteration costs one trilinear
interpolation of the volume at the reference's brain voxels and a 6 x n product. Each volume
starts from the previous volume's parameters; optionally a few iterations on the volume
downsampled 2x (block means) come first.

References
----------
Baker S, Matthews I (2004). Lucas-Kanade 20 years on: a unifying framework. IJCV 56:221-255.
Power JD et al. (2012). Spurious but systematic correlations in functional connectivity MRI
networks arise from subject motion. NeuroImage 59:2142-2154.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from theramark.errors import BadInputError

__all__ = ["MOTION_COLUMNS", "Realigner", "framewise_displacement_step", "params_from_matrix",
           "rigid_matrix"]

#: Names of the six parameters, in order (fMRIPrep's).
MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def rigid_matrix(params: np.ndarray) -> np.ndarray:
    """4 x 4 matrix ``[[R, t], [0, 1]]`` of six parameters (mm, rad), in centred world coordinates."""
    tx, ty, tz, a, b, g = np.asarray(params, dtype=np.float64)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cg, -sg, 0], [sg, cg, 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rx @ ry @ rz
    matrix[:3, 3] = (tx, ty, tz)
    return matrix


def params_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """The six parameters of a rigid 4 x 4 matrix (inverse of :func:`rigid_matrix`, |rot_y| < pi/2)."""
    r = matrix[:3, :3]
    b = np.arcsin(np.clip(r[0, 2], -1.0, 1.0))
    g = np.arctan2(-r[0, 1], r[0, 0])
    a = np.arctan2(-r[1, 2], r[2, 2])
    return np.array([*matrix[:3, 3], a, b, g])


def framewise_displacement_step(previous: np.ndarray | None, current: np.ndarray,
                                radius: float = 50.0) -> float:
    """Power et al. (2012) FD (mm) between two parameter vectors; NaN without a previous one.

    Same formula and units as :func:`theramark.imaging.qc.framewise_displacement` (rotations
    in radians times the head radius in mm).
    """
    if previous is None or not np.all(np.isfinite(previous)):
        return float("nan")
    step = np.abs(np.asarray(current, float) - np.asarray(previous, float))
    return float(step[:3].sum() + radius * step[3:].sum())


def _downsample(data: np.ndarray) -> np.ndarray:
    """2 x 2 x 2 block means (odd trailing planes dropped)."""
    x, y, z = (s // 2 * 2 for s in data.shape)
    d = data[:x, :y, :z]
    return d.reshape(x // 2, 2, y // 2, 2, z // 2, 2).mean(axis=(1, 3, 5), dtype=np.float32)


@dataclass
class _Level:
    """Everything precomputed for one resolution."""

    affine: np.ndarray        # voxel -> world of this level
    inverse: np.ndarray       # world -> voxel
    q: np.ndarray             # (3, n) centred world coordinates of the fitted voxels
    values: np.ndarray        # (n,) reference intensities there
    jacobian: np.ndarray      # (n, 6)
    solve: np.ndarray         # (6, n) = H^-1 J'


class Realigner:
    """Rigid realignment of volumes to a reference volume, one volume at a time.

    Parameters
    ----------
    reference : ndarray, shape (x, y, z)
        The reference volume.
    affine : ndarray, shape (4, 4)
        Voxel to world (mm) affine of the reference (and of every volume realigned to it).
    downsample : bool
        Start each volume with iterations on the 2x downsampled volumes.
    max_iterations : int
        Gauss-Newton iterations per resolution.
    tolerance_mm : float
        Stop when the update moves no point within 50 mm of the centre by more than this.
    threshold : float
        Voxels whose reference intensity is above this fraction of the 98th percentile are fitted
        (the head), the background is left out.
    max_voxels : int
        At most this many voxels (a regular subsample of the head) enter the fit at each
        resolution.

    Attributes
    ----------
    centre_ : ndarray, shape (3,)
        World coordinates (mm) of the rotation centre (the voxel grid's centre).
    n_iterations_ : int
        Iterations spent on the last volume.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = ndimage.gaussian_filter(rng.random((24, 24, 16)), 2).astype(np.float32)
    >>> realigner = Realigner(ref, np.diag([3.0, 3.0, 3.0, 1.0]))
    >>> moved = realigner.reslice(ref, np.array([1.0, 0, 0, 0, 0, 0.02]), inverse=True)
    >>> np.round(realigner.estimate(moved), 1)[[0, 5]].tolist()
    [1.0, 0.0]
    """

    def __init__(self, reference: np.ndarray, affine: np.ndarray, *, downsample: bool = True,
                 max_iterations: int = 12, tolerance_mm: float = 1e-3, threshold: float = 0.2,
                 max_voxels: int = 30000):
        reference = np.asarray(reference, dtype=np.float32)
        if reference.ndim != 3:
            raise BadInputError(f"reference volume: expected 3 dimensions, got shape {reference.shape}")
        self.shape = reference.shape
        self.affine = np.asarray(affine, dtype=np.float64)
        self.max_iterations = int(max_iterations)
        self.tolerance_mm = float(tolerance_mm)
        self.max_voxels = int(max_voxels)
        centre_voxel = (np.array(self.shape, dtype=np.float64) - 1.0) / 2.0
        self.centre_ = self.affine[:3, :3] @ centre_voxel + self.affine[:3, 3]
        cutoff = threshold * float(np.percentile(reference, 98))
        self._levels: list[tuple[_Level, bool]] = []
        if downsample and min(self.shape) >= 8:
            to_full = np.diag([2.0, 2.0, 2.0, 1.0])
            to_full[:3, 3] = 0.5
            self._levels.append((self._level(_downsample(reference), self.affine @ to_full, cutoff), True))
        self._levels.append((self._level(reference, self.affine, cutoff), False))
        self.n_iterations_ = 0

    def _level(self, image: np.ndarray, affine: np.ndarray, cutoff: float) -> _Level:
        gradient = np.stack(np.gradient(image.astype(np.float64)), axis=-1)  # d/d voxel index
        inside = image > cutoff
        inside[[0, -1], :, :] = inside[:, [0, -1], :] = inside[:, :, [0, -1]] = False
        index = np.argwhere(inside)
        if len(index) > self.max_voxels:
            # a regular subsample, as SPM's sampling separation: unbiased, and the fit's cost
            # stays bounded whatever the matrix size
            index = index[:: int(np.ceil(len(index) / self.max_voxels))]
        if len(index) < 50:
            raise BadInputError("reference volume: too few voxels above background to realign "
                                f"({len(index)}); is it empty?")
        world = index @ affine[:3, :3].T + affine[:3, 3]
        q = world - self.centre_
        # gradient in world mm: I(x) = I_vox(A^-1 x) -> grad_x = A^-T grad_v
        g = gradient[tuple(index.T)] @ np.linalg.inv(affine[:3, :3])
        jacobian = np.hstack([g, np.cross(q, g)])
        hessian = jacobian.T @ jacobian
        solve = np.linalg.solve(hessian, jacobian.T)
        return _Level(affine=affine, inverse=np.linalg.inv(affine), q=np.ascontiguousarray(q.T, np.float32),
                      values=image[tuple(index.T)].astype(np.float32),
                      jacobian=jacobian.astype(np.float32), solve=solve.astype(np.float32))

    def _coordinates(self, q: np.ndarray, matrix: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """Voxel coordinates (3, n) in ``inverse``'s grid of the points ``q`` (3, n) moved by ``matrix``."""
        linear = (inverse[:3, :3] @ matrix[:3, :3]).astype(np.float32)
        offset = (inverse[:3, :3] @ (matrix[:3, 3] + self.centre_) + inverse[:3, 3]).astype(np.float32)
        return linear @ q + offset[:, None]

    def estimate(self, data: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """The six motion parameters of ``data`` relative to the reference.

        Parameters
        ----------
        data : ndarray, shape (x, y, z)
            A volume on the reference's grid.
        init : ndarray, shape (6,), optional
            Starting parameters (the previous volume's); default zeros.

        Returns
        -------
        ndarray, shape (6,)
            ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (rad).
        """
        data = np.asarray(data, dtype=np.float32)
        if data.shape != self.shape:
            raise BadInputError(f"volume of shape {data.shape} cannot be realigned to the reference "
                                f"of shape {self.shape}")
        start = np.zeros(6) if init is None or not np.all(np.isfinite(init)) else np.asarray(init, float)
        matrix = rigid_matrix(start)
        self.n_iterations_ = 0
        for level, coarse in self._levels:
            image = _downsample(data) if coarse else data
            for _ in range(self.max_iterations):
                coords = self._coordinates(level.q, matrix, level.inverse)
                sampled = ndimage.map_coordinates(image, coords, order=1, mode="nearest",
                                                  prefilter=False, output=np.float32)
                delta = level.solve @ (sampled - level.values)
                matrix = matrix @ np.linalg.inv(rigid_matrix(delta))
                self.n_iterations_ += 1
                tolerance = self.tolerance_mm * (10.0 if coarse else 1.0)
                if np.abs(delta[:3]).max() + 50.0 * np.abs(delta[3:]).max() < tolerance:
                    break
        return params_from_matrix(matrix)

    def sample(self, data: np.ndarray, params: np.ndarray, voxels: np.ndarray) -> np.ndarray:
        """Realigned intensities at reference voxels: ``data`` at the moved voxel positions.

        Parameters
        ----------
        data : ndarray, shape (x, y, z)
        params : ndarray, shape (6,)
        voxels : ndarray of int, shape (n, 3)
            Voxel indices in the reference grid (an ROI's voxels).

        Returns
        -------
        ndarray, shape (n,)
            Trilinear interpolation; points falling outside the volume take the nearest edge value.
        """
        voxels = np.asarray(voxels)
        q = (voxels @ self.affine[:3, :3].T + self.affine[:3, 3] - self.centre_).T.astype(np.float32)
        coords = self._coordinates(q, rigid_matrix(params), np.linalg.inv(self.affine))
        return ndimage.map_coordinates(np.asarray(data, dtype=np.float32), coords, order=1,
                                       mode="nearest", prefilter=False)

    def reslice(self, data: np.ndarray, params: np.ndarray, inverse: bool = False) -> np.ndarray:
        """The whole volume resampled into the reference's position (or, ``inverse``, moved by ``params``).

        ``inverse=True`` applies the motion to a reference-position image (what a scanner sees
        when the head moves by ``params``); used to simulate and to check.
        """
        index = np.indices(self.shape).reshape(3, -1).T
        matrix = rigid_matrix(params)
        if inverse:
            matrix = np.linalg.inv(matrix)
        q = (index @ self.affine[:3, :3].T + self.affine[:3, 3] - self.centre_).T.astype(np.float32)
        coords = self._coordinates(q, matrix, np.linalg.inv(self.affine))
        return ndimage.map_coordinates(np.asarray(data, dtype=np.float32), coords, order=1,
                                       mode="nearest", prefilter=False).reshape(self.shape)
