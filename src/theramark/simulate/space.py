"""The output grid (MNI152 at 4 or 2 mm), tissue masks, regional spatial profiles and the raw grid.

Everything here is computed once per study and shared by every run: a run's image is
``signals (T x R) @ profiles (R x V)`` plus maps of nuisance sources, all over the V in-mask voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import numpy as np
import pandas as pd

from theramark.errors import BadInputError

#: Size (mm) of the coarse "native" grid of the raw BOLD images.
RAW_VOXEL_MM = 8.0
#: SD of a regional profile as a fraction of the ROI's radius.
PROFILE_SD_FRACTION = 0.8


def literature_roi_table() -> pd.DataFrame:
    """The literature ROI table shipped with theramark (name, x, y, z, radius_mm, network...)."""
    path = resources.files("theramark") / "data" / "literature_rois.tsv"
    with resources.as_file(path) as real_path:
        return pd.read_csv(real_path, sep="\t")


@dataclass
class StudySpace:
    """The template grid and everything spatial that the runs share.

    Attributes
    ----------
    resolution : int
        Voxel size in mm (4 or 2).
    shape : tuple of int
        Grid shape (x, y, z).
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI affine.
    brain : ndarray of bool, shape ``shape``
        Brain mask (nilearn's MNI152 brain mask).
    """

    resolution: int

    def __post_init__(self) -> None:
        if self.resolution not in (2, 4):
            raise BadInputError(f"resolution must be 4 or 2 (mm), got {self.resolution}")
        from nilearn import datasets

        mask_img = datasets.load_mni152_brain_mask(resolution=self.resolution)
        self.affine = mask_img.affine.copy()
        self.brain = np.asarray(mask_img.dataobj) > 0
        self.shape = self.brain.shape
        gm = np.asarray(datasets.load_mni152_gm_template(resolution=self.resolution).dataobj,
                        dtype=np.float32)
        wm = np.asarray(datasets.load_mni152_wm_template(resolution=self.resolution).dataobj,
                        dtype=np.float32)
        # conservative tissue masks, as fMRIPrep erodes its WM and CSF masks for CompCor
        self.wm = self.brain & (wm > 0.9)
        self.csf = self.brain & (gm + wm < 0.2)
        self.rois = literature_roi_table()

    @cached_property
    def coordinates(self) -> np.ndarray:
        """MNI coordinates (mm) of the in-mask voxels, shape (V, 3)."""
        ijk = np.argwhere(self.brain)
        return (ijk @ self.affine[:3, :3].T + self.affine[:3, 3]).astype(np.float32)

    @property
    def n_voxels(self) -> int:
        return int(self.brain.sum())

    @cached_property
    def wm_voxels(self) -> np.ndarray:
        """Boolean over the V in-mask voxels: white matter."""
        return self.wm[self.brain]

    @cached_property
    def csf_voxels(self) -> np.ndarray:
        """Boolean over the V in-mask voxels: cerebrospinal fluid."""
        return self.csf[self.brain]

    @cached_property
    def profiles(self) -> np.ndarray:
        """Spatial profile of each literature ROI, shape (R, V), float32.

        A Gaussian centred on the ROI's MNI coordinate with SD 0.8 x radius, cut at twice the
        radius and zero in the WM and CSF masks (so CompCor does not remove regional signal).
        """
        centres = self.rois[["x", "y", "z"]].to_numpy(np.float32)
        radius = self.rois["radius_mm"].to_numpy(np.float32)
        d2 = ((self.coordinates[None, :, :] - centres[:, None, :]) ** 2).sum(axis=2)
        sigma = PROFILE_SD_FRACTION * radius[:, None]
        weights = np.exp(-d2 / (2.0 * sigma**2))
        weights[d2 > (2.0 * radius[:, None]) ** 2] = 0.0
        weights[:, self.wm_voxels | self.csf_voxels] = 0.0
        return weights.astype(np.float32)

    @cached_property
    def baseline(self) -> np.ndarray:
        """Baseline intensity of each in-mask voxel (arbitrary units), shape (V,).

        Grey matter about 1000, white matter 850, CSF 1300, with a smooth anterior-posterior
        gradient as a receive coil would give.
        """
        base = np.full(self.n_voxels, 1000.0, dtype=np.float32)
        base[self.wm_voxels] = 850.0
        base[self.csf_voxels] = 1300.0
        y = self.coordinates[:, 1]
        return base * (1.0 + 0.1 * (y - y.mean()) / np.ptp(y))

    @cached_property
    def gradient_maps(self) -> np.ndarray:
        """Three smooth spatial gradients (x, y, z) in [-1, 1] over the in-mask voxels, (3, V).

        Motion artefacts are built from them: a displaced head changes intensity most where the
        intensity changes most across space, which at this scale is a smooth gradient.
        """
        centred = self.coordinates - self.coordinates.mean(axis=0)
        return (centred / np.abs(centred).max(axis=0)).T.astype(np.float32)

    @cached_property
    def edge_weight(self) -> np.ndarray:
        """Weight in [0, 1] that grows towards the brain's outer edge, shape (V,)."""
        centred = self.coordinates - self.coordinates.mean(axis=0)
        r = np.sqrt((centred**2).sum(axis=1))
        return (r / r.max()).astype(np.float32) ** 2

    @cached_property
    def raw_index(self) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
        """Nearest template voxel of each raw-grid voxel.

        Returns ``(source, target, raw_shape)``: the in-mask voxel index (into V) and the flat raw
        grid index of every raw voxel whose centre falls in the brain mask, and the raw grid shape.
        """
        step = int(round(RAW_VOXEL_MM / self.resolution))
        raw_shape = tuple(int(np.ceil(s / step)) for s in self.shape)
        grid = np.stack(np.meshgrid(*[np.arange(n) * step for n in raw_shape], indexing="ij"), -1)
        grid = grid.reshape(-1, 3)
        inside = self.brain[grid[:, 0], grid[:, 1], grid[:, 2]]
        position = np.full(self.shape, -1, dtype=np.int64)
        position[self.brain] = np.arange(self.n_voxels)
        source = position[grid[inside, 0], grid[inside, 1], grid[inside, 2]]
        target = np.flatnonzero(inside)
        return source, target, raw_shape

    @property
    def raw_affine(self) -> np.ndarray:
        step = int(round(RAW_VOXEL_MM / self.resolution))
        affine = self.affine.copy()
        affine[:3, :3] *= step
        return affine

    def to_volume(self, values: np.ndarray) -> np.ndarray:
        """(T, V) in-mask values → 4D array (x, y, z, T) on the template grid, zeros outside."""
        # Fortran order: NIfTI stores x fastest, so nibabel then writes without a reordering copy
        volume = np.zeros((*self.shape, values.shape[0]), dtype=values.dtype, order="F")
        volume[self.brain] = values.T
        return volume

    def to_raw_volume(self, values: np.ndarray) -> np.ndarray:
        """(T, V) in-mask values → 4D array on the coarse raw grid (nearest neighbour)."""
        source, target, raw_shape = self.raw_index
        flat = np.zeros((int(np.prod(raw_shape)), values.shape[0]), dtype=values.dtype)
        flat[target] = values[:, source].T
        return np.asfortranarray(flat.reshape(*raw_shape, values.shape[0]))


@dataclass
class VoxelSubset:
    """The in-mask voxels of a :class:`StudySpace` restricted to a subset (same attributes).

    :func:`theramark.simulate.bold.simulate_run` accepts it in place of the full space, which makes
    checks on a few spheres cheap (the random draws differ from a full-space run).
    """

    space: StudySpace
    keep: np.ndarray

    def __post_init__(self) -> None:
        self.rois = self.space.rois
        self.coordinates = self.space.coordinates[self.keep]
        self.n_voxels = int(self.keep.sum())
        self.wm_voxels = self.space.wm_voxels[self.keep]
        self.csf_voxels = self.space.csf_voxels[self.keep]
        self.profiles = self.space.profiles[:, self.keep]
        self.baseline = self.space.baseline[self.keep]
        self.gradient_maps = self.space.gradient_maps[:, self.keep]
        self.edge_weight = self.space.edge_weight[self.keep]

    @classmethod
    def around(cls, space: StudySpace, names: list[str], margin_mm: float = 0.0) -> VoxelSubset:
        """Voxels within each named ROI's radius (+ margin), plus every WM and CSF voxel."""
        rois = space.rois.set_index("name")
        keep = space.wm_voxels | space.csf_voxels
        for name in names:
            centre = rois.loc[name, ["x", "y", "z"]].to_numpy(np.float32)
            radius = float(rois.loc[name, "radius_mm"]) + margin_mm
            keep = keep | (((space.coordinates - centre) ** 2).sum(axis=1) <= radius**2)
        return cls(space, keep)
