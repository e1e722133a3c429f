"""Regions of interest: named literature regions, network coordinate sets, labels atlases.

An :class:`RoiSet` says *what* the regions are (spheres around MNI coordinates, or the labels of an
atlas image). :func:`roi_matrix` turns a set into a sparse averaging matrix for one voxel grid and
brain mask: row ``i`` holds ``1 / n_i`` at the ``n_i`` in-mask voxels of region ``i``. Extracting
every region's mean time series is then one sparse matrix product (:func:`extract`), which is how
theramark beats nilearn's maskers by a wide margin while giving the same numbers:

- spheres follow ``NiftiSpheresMasker``: the in-mask voxels whose centre lies within ``radius`` mm
  of the seed, plus the voxel nearest the seed when it is in the mask;
- labels follow ``NiftiLabelsMasker`` (``strategy="mean"``): the labels image is resampled to the
  data grid with nearest-neighbour interpolation and voxels outside the mask are ignored.

Regions with no voxel inside the run's brain mask are reported (``RoiMatrix.coverage``) and, by
default, raise :class:`~theramark.errors.BadInputError` naming them; they are never silently
returned as empty or all-zero columns.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import sparse

from theramark.errors import BadInputError
from theramark.imaging._image import mask_indices

#: ROI sets theramark knows by name (``[rois] roiset = ...`` in study.toml).
COORDINATE_SETS = ("literature", "power264", "dosenbach160", "seitzman300")

#: Sphere radius (mm) of the network coordinate sets, as in the source papers: Power et al. 2011 and
#: Dosenbach et al. 2010 used 10 mm diameter spheres; Seitzman et al. 2018 give a radius per ROI.
_DEFAULT_RADIUS = {"power264": 5.0, "dosenbach160": 5.0}

_SOURCES = {
    "power264": "Power et al. 2011 Neuron 72:665 (264 ROIs); networks as assigned to the same ROIs "
                "by Seitzman et al. 2020 NeuroImage 206:116290",
    "dosenbach160": "Dosenbach et al. 2010 Science 329:1358 (160 ROIs)",
    "seitzman300": "Seitzman et al. 2020 NeuroImage 206:116290 (300 ROIs)",
}

_TABLE_COLUMNS = ["name", "label", "hemisphere", "x", "y", "z", "radius_mm", "network", "source"]


@dataclass
class RoiSet:
    """A set of named regions.

    Attributes
    ----------
    name : str
        Identifier used in output file names (``seg-<name>``): letters and digits only.
    kind : {"spheres", "labels"}
        Spheres around coordinates or labels of an atlas image.
    table : DataFrame
        One row per region, in output order: ``name`` (unique, used as the column and feature
        name), ``label``, ``network`` and, for spheres, ``x, y, z`` (MNI mm) and ``radius_mm``; for
        labels, ``index`` (the integer value in the image). Coordinates of labels regions are their
        centres of mass (for plotting).
    labels_img : Nifti1Image or None
        The atlas (labels sets only).
    source : str
        Where the set comes from (file or citation), recorded in sidecars.
    """

    name: str
    kind: str
    table: pd.DataFrame
    labels_img: nib.Nifti1Image | None = None
    source: str = ""

    @property
    def names(self) -> list[str]:
        return list(self.table["name"])

    def coordinates(self) -> np.ndarray:
        """(n_rois, 3) MNI coordinates in mm (sphere centres or label centres of mass)."""
        return self.table[["x", "y", "z"]].to_numpy(dtype=float)

    def describe(self) -> dict[str, Any]:
        """What goes into a sidecar: enough to rebuild the set."""
        record: dict[str, Any] = {"name": self.name, "kind": self.kind, "source": self.source,
                                  "n_rois": len(self.table)}
        if self.kind == "spheres":
            record["radius_mm"] = sorted(set(self.table["radius_mm"].astype(float)))
        return record


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", str(text)).strip("_").lower()


def literature_rois() -> pd.DataFrame:
    """The named regions of the depression-psychotherapy literature (package data).

    Returns
    -------
    DataFrame
        ``name, label, hemisphere, x, y, z, radius_mm, network, source`` (see
        ``theramark/data/README.md``).
    """
    with resources.files("theramark.data").joinpath("literature_rois.tsv").open("r") as handle:
        table = pd.read_csv(handle, sep="\t")
    return table[_TABLE_COLUMNS]


#: A Power ROI takes the network of the Seitzman ROI within this distance (mm): nilearn ships
#: Power's coordinates rounded to whole millimetres and Seitzman's to 0.01 mm.
_POWER_MATCH_MM = 1.0


def _power_networks(coordinates: np.ndarray) -> list[str]:
    """Network of each Power 2011 ROI, from the Seitzman et al. (2020) assignment of the same ROI.

    nilearn ships Power's 264 coordinates without networks. Seitzman et al. kept 239 of them (at
    unrounded coordinates) in their 300-ROI set and assigned them to networks by community
    detection on a larger sample; 227 got a network, which they keep here. The 12 that Seitzman
    et al. left unassigned and the 25 they dropped are ``unassigned``.
    """
    from nilearn.datasets import fetch_coords_seitzman_2018

    seitzman = fetch_coords_seitzman_2018()
    reference = seitzman.rois[["x", "y", "z"]].to_numpy(float)
    distance = np.linalg.norm(coordinates[:, None, :] - reference[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    networks = np.array([_slug(n) for n in seitzman.networks], dtype=object)[nearest]
    networks[distance[np.arange(len(coordinates)), nearest] > _POWER_MATCH_MM] = "unassigned"
    return networks.tolist()


def coordinate_rois(name: str, radius_mm: float | None = None) -> pd.DataFrame:
    """A coordinate ROI set by name.

    Parameters
    ----------
    name : {"literature", "power264", "dosenbach160", "seitzman300"}
        The literature table, or the network sets nilearn ships (available offline).
    radius_mm : float, optional
        Override the sphere radius of every ROI (mm).

    Returns
    -------
    DataFrame
        Same columns as :func:`literature_rois`.
    """
    if name == "literature":
        table = literature_rois()
    elif name == "power264":
        from nilearn.datasets import fetch_coords_power_2011

        rois = fetch_coords_power_2011().rois
        index = rois["roi"].astype(int).to_numpy()
        table = pd.DataFrame({
            "name": [f"power_{i:03d}" for i in index], "label": [f"Power ROI {i}" for i in index],
            "x": rois["x"].to_numpy(float), "y": rois["y"].to_numpy(float),
            "z": rois["z"].to_numpy(float),
        })
        table["network"] = _power_networks(table[["x", "y", "z"]].to_numpy())
    elif name == "dosenbach160":
        from nilearn.datasets import fetch_coords_dosenbach_2010

        bunch = fetch_coords_dosenbach_2010(legacy_format=False) if _accepts_legacy() else \
            fetch_coords_dosenbach_2010()
        labels = [str(label) for label in bunch.labels]
        numbers = [int(re.search(r"(\d+)\s*$", label).group(1)) for label in labels]
        table = pd.DataFrame({
            "name": [f"dosenbach_{n:03d}" for n in numbers],
            "label": [re.sub(r"\s*\d+\s*$", "", label) for label in labels],
            "x": bunch.rois["x"].to_numpy(float), "y": bunch.rois["y"].to_numpy(float),
            "z": bunch.rois["z"].to_numpy(float), "network": [str(n) for n in bunch.networks],
        }).sort_values("name", kind="stable").reset_index(drop=True)
    elif name == "seitzman300":
        from nilearn.datasets import fetch_coords_seitzman_2018

        bunch = fetch_coords_seitzman_2018()
        n = len(bunch.rois)
        table = pd.DataFrame({
            "name": [f"seitzman_{i:03d}" for i in range(1, n + 1)],
            "label": [str(r) for r in bunch.regions],
            "x": bunch.rois["x"].to_numpy(float), "y": bunch.rois["y"].to_numpy(float),
            "z": bunch.rois["z"].to_numpy(float), "radius_mm": np.asarray(bunch.radius, float),
            "network": [_slug(n) for n in bunch.networks],
        })
    else:
        raise BadInputError(
            f"unknown ROI set '{name}'; expected one of {', '.join(COORDINATE_SETS)} "
            "or an atlas table {image = ..., labels = ...}"
        )
    if "radius_mm" not in table:
        table["radius_mm"] = _DEFAULT_RADIUS.get(name, 5.0)
    if radius_mm is not None:
        table["radius_mm"] = float(radius_mm)
    if "hemisphere" not in table:
        table["hemisphere"] = np.where(table["x"] < 0, "L", np.where(table["x"] > 0, "R", "M"))
    if "source" not in table:
        table["source"] = _SOURCES[name]
    return table[_TABLE_COLUMNS].reset_index(drop=True)


def _accepts_legacy() -> bool:
    import inspect

    from nilearn.datasets import fetch_coords_dosenbach_2010

    return "legacy_format" in inspect.signature(fetch_coords_dosenbach_2010).parameters


def read_label_table(path: str | os.PathLike) -> pd.DataFrame:
    """An atlas label table: ``index`` (int) and ``name`` (str) per region.

    Accepts a BIDS ``dseg.tsv``-style table with ``index`` and ``name`` columns, or a headerless
    text file whose lines start with the index and the name (the Schaefer ``*_order.txt`` and FSL
    lookup-table layouts).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: atlas label table not found")
    text = path.read_text(encoding="utf-8").splitlines()
    rows = [line for line in text if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise BadInputError(f"{path}: atlas label table is empty")
    first = re.split(r"\t|\s+", rows[0].strip())
    if "index" in first and "name" in first:
        table = pd.read_csv(path, sep="\t")
        if "index" not in table or "name" not in table:
            raise BadInputError(f"{path}: expected tab-separated columns 'index' and 'name'")
        table = table[["index", "name"]]
    else:
        parsed = []
        for number, line in enumerate(rows, start=1):
            parts = re.split(r"\t|\s+", line.strip())
            if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
                raise BadInputError(
                    f"{path}, line {number}: expected '<index> <name> ...', got {line[:60]!r}"
                )
            parsed.append((int(parts[0]), parts[1]))
        table = pd.DataFrame(parsed, columns=["index", "name"])
    table["index"] = table["index"].astype(int)
    table["name"] = table["name"].astype(str)
    table = table[table["index"] != 0]
    duplicated = table["name"][table["name"].duplicated()].tolist()
    if duplicated:
        raise BadInputError(f"{path}: duplicated region names {duplicated[:5]}")
    return table.reset_index(drop=True)


def atlas_rois(image: str | os.PathLike | nib.Nifti1Image, labels: str | os.PathLike,
               name: str | None = None) -> RoiSet:
    """A labels atlas given as a NIfTI image and a label table.

    Parameters
    ----------
    image : path or Nifti1Image
        3D integer labels image (0 = background) in the space of the BOLD runs (MNI).
    labels : path
        Label table (:func:`read_label_table`).
    name : str, optional
        The ``seg-`` label; defaults to the image file name reduced to letters and digits.
    """
    img = nib.load(image) if not isinstance(image, nib.spatialimages.SpatialImage) else image
    if len(img.shape) != 3:
        raise BadInputError(f"{image}: a labels atlas must be a 3D image, got shape {img.shape}")
    table = read_label_table(labels)
    values = np.asanyarray(img.dataobj)
    present = set(np.unique(values[values != 0]).astype(int).tolist())
    missing = sorted(set(table["index"]) - present)
    if missing:
        raise BadInputError(
            f"{labels}: label(s) {missing[:10]} are listed but absent from the image {image}"
        )
    unlisted = sorted(present - set(table["index"]))
    if unlisted:
        raise BadInputError(f"{image}: label value(s) {unlisted[:10]} are not in the table {labels}")
    centres = _centres_of_mass(values, img.affine, table["index"].to_numpy())
    out = pd.DataFrame({
        "name": table["name"], "label": table["name"], "index": table["index"],
        "x": centres[:, 0], "y": centres[:, 1], "z": centres[:, 2],
        "network": [_network_of(n) for n in table["name"]],
    })
    if name is None:
        stem = Path(str(getattr(img, "get_filename", lambda: None)() or image)).name.split(".")[0]
        name = re.sub(r"[^0-9A-Za-z]", "", stem) or "atlas"
    return RoiSet(name=name, kind="labels", table=out, labels_img=img,
                  source=f"{image} + {labels}")


def _network_of(region: str) -> str:
    """Schaefer-style names carry the network (``7Networks_LH_Vis_1`` → ``Vis``)."""
    parts = region.split("_")
    if len(parts) >= 4 and parts[0].endswith("Networks"):
        return parts[2]
    return "unlabelled"


def _centres_of_mass(values: np.ndarray, affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    flat = values.ravel(order="F").astype(np.int64)
    ijk = np.indices(values.shape).reshape(3, -1, order="F")
    lookup = np.full(max(int(flat.max()), int(indices.max())) + 1, -1, dtype=np.int64)
    lookup[indices] = np.arange(indices.size)
    position = lookup[np.clip(flat, 0, None)]
    keep = (flat > 0) & (position >= 0)
    counts = np.bincount(position[keep], minlength=indices.size).astype(float)
    sums = np.stack([np.bincount(position[keep], weights=ijk[a][keep], minlength=indices.size)
                     for a in range(3)], axis=1)
    centre_ijk = sums / np.maximum(counts, 1)[:, None]
    return nib.affines.apply_affine(affine, centre_ijk)


def load_roiset(spec: str | dict[str, Any] | RoiSet, radius_mm: float | None = None,
                base_dir: str | os.PathLike | None = None) -> RoiSet:
    """An ROI set from its study.toml description.

    Parameters
    ----------
    spec : str, dict or RoiSet
        A name in :data:`COORDINATE_SETS`, or ``{"image": path, "labels": path[, "name": str]}``
        for a labels atlas, or ``{"table": path}`` for a TSV of spheres with the columns of
        :func:`literature_rois` (``name, x, y, z`` required).
    radius_mm : float, optional
        Override every sphere's radius (mm).
    base_dir : path, optional
        Relative paths in ``spec`` are resolved against it (the config file's folder).
    """
    if isinstance(spec, RoiSet):
        return spec
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if isinstance(spec, str):
        table = coordinate_rois(spec, radius_mm=radius_mm)
        source = "theramark/data/literature_rois.tsv" if spec == "literature" else _SOURCES[spec]
        return RoiSet(name=spec, kind="spheres", table=table, source=source)
    if isinstance(spec, dict) and "image" in spec and "labels" in spec:
        return atlas_rois(base / spec["image"], base / spec["labels"], name=spec.get("name"))
    if isinstance(spec, dict) and "table" in spec:
        path = base / spec["table"]
        from theramark._io import read_tsv

        table = read_tsv(path)
        missing = [c for c in ("name", "x", "y", "z") if c not in table]
        if missing:
            raise BadInputError(f"{path}: missing column(s) {', '.join(missing)}")
        for column, default in (("label", None), ("hemisphere", "M"), ("radius_mm", 6.0),
                                ("network", "unlabelled"), ("source", str(path))):
            if column not in table:
                table[column] = table["name"] if default is None else default
        if radius_mm is not None:
            table["radius_mm"] = float(radius_mm)
        name = spec.get("name") or re.sub(r"[^0-9A-Za-z]", "", path.name.split(".")[0])
        return RoiSet(name=name, kind="spheres", table=table[_TABLE_COLUMNS], source=str(path))
    raise BadInputError(
        f"ROI set {spec!r}: expected a name ({', '.join(COORDINATE_SETS)}), "
        "{image = ..., labels = ...} or {table = ...}"
    )


@dataclass
class RoiMatrix:
    """A sparse averaging matrix for one voxel grid and mask.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, shape (n_rois, n_mask_voxels)
        Row ``i`` has ``1 / n_i`` at region ``i``'s in-mask voxels.
    names : list of str
        Region names, one per row.
    coverage : DataFrame
        ``roi, n_voxels`` (in the mask), ``n_voxels_grid`` (on the grid, ignoring the mask),
        ``coverage`` (ratio) for every region of the set, including dropped empty ones.
    dropped : list of str
        Regions without any in-mask voxel (dropped when ``on_empty="drop"``).
    """

    matrix: sparse.csr_matrix
    names: list[str]
    coverage: pd.DataFrame
    dropped: list[str] = field(default_factory=list)


def _sphere_members(centres: np.ndarray, radii: np.ndarray, affine: np.ndarray,
                    shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grid voxels (flat Fortran index) within each sphere, plus the voxel nearest each seed.

    Returns the pair (roi index, flat voxel index) for every membership.
    """
    inverse = np.linalg.inv(affine)
    voxel_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    half = int(np.ceil(radii.max() / voxel_size.min())) + 1
    grid = np.arange(-half, half + 1)
    offsets = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    seeds_ijk = nib.affines.apply_affine(inverse, centres)
    nearest = np.round(seeds_ijk).astype(np.int64)
    rows, voxels = [], []
    dims = np.asarray(shape)
    strides = np.array([1, shape[0], shape[0] * shape[1]], dtype=np.int64)
    for start in range(0, len(centres), 64):  # bounded memory for big sets
        stop = min(start + 64, len(centres))
        candidates = nearest[start:stop, None, :] + offsets[None, :, :]
        world = candidates @ affine[:3, :3].T + affine[:3, 3]
        squared = ((world - centres[start:stop, None, :]) ** 2).sum(axis=-1)
        inside = squared <= radii[start:stop, None] ** 2 * (1 + 1e-12)
        # the voxel nearest to the seed belongs to the sphere whatever the radius (as in nilearn)
        inside |= (offsets == 0).all(axis=1)[None, :]
        inside &= ((candidates >= 0) & (candidates < dims)).all(axis=-1)
        roi, which = np.nonzero(inside)
        rows.append(roi + start)
        voxels.append(candidates[roi, which] @ strides)
    return np.concatenate(rows), np.concatenate(voxels)


def roi_matrix(roiset: RoiSet, mask_img: nib.spatialimages.SpatialImage,
               on_empty: str = "error", allow_overlap: bool = True,
               mask_name: str | None = None) -> RoiMatrix:
    """The sparse averaging matrix of ``roiset`` on the grid and mask of ``mask_img``.

    Parameters
    ----------
    roiset : RoiSet
    mask_img : Nifti1Image
        3D brain mask defining the grid and the voxels that count (non-zero).
    on_empty : {"error", "drop"}
        What to do with regions that have no voxel in the mask: raise a BadInputError naming them
        (default) or drop them (they stay listed in ``coverage`` and ``dropped``).
    allow_overlap : bool
        If False, spheres sharing a voxel are an error (nilearn's ``allow_overlap``).
    mask_name : str, optional
        How to call the mask in messages (its file name).

    Returns
    -------
    RoiMatrix
    """
    if on_empty not in ("error", "drop"):
        raise ValueError("on_empty must be 'error' or 'drop'")
    shape = tuple(int(s) for s in mask_img.shape[:3])
    n_grid = int(np.prod(shape))
    in_mask = mask_indices(mask_img)
    column = np.full(n_grid, -1, dtype=np.int64)
    column[in_mask] = np.arange(in_mask.size)
    n_rois = len(roiset.table)
    if roiset.kind == "spheres":
        rows, flat = _sphere_members(roiset.coordinates(),
                                     roiset.table["radius_mm"].to_numpy(float),
                                     mask_img.affine, shape)
        grid_counts = np.bincount(rows, minlength=n_rois)
    elif roiset.kind == "labels":
        labels_img = roiset.labels_img
        if tuple(labels_img.shape[:3]) != shape or not np.allclose(labels_img.affine,
                                                                    mask_img.affine, atol=1e-3):
            from nilearn.image import resample_to_img  # imported only when needed: ~1 s

            labels_img = resample_to_img(labels_img, mask_img, interpolation="nearest",
                                         force_resample=True, copy_header=True)
        values = np.ravel(np.asanyarray(labels_img.dataobj), order="F").astype(np.int64)
        indices = roiset.table["index"].to_numpy(np.int64)
        lookup = np.full(max(int(values.max()), int(indices.max())) + 1, -1, dtype=np.int64)
        lookup[indices] = np.arange(n_rois)
        position = lookup[np.clip(values, 0, None)]
        flat = np.flatnonzero((values > 0) & (position >= 0))
        rows = position[flat]
        grid_counts = np.bincount(rows, minlength=n_rois)
    else:
        raise ValueError(f"unknown ROI set kind {roiset.kind!r}")
    cols = column[flat]
    keep = cols >= 0
    rows, cols = rows[keep], cols[keep]
    pairs = np.unique(rows * (column.max() + 2) + cols)  # nearest voxel may repeat a member
    rows, cols = pairs // (column.max() + 2), pairs % (column.max() + 2)
    counts = np.bincount(rows, minlength=n_rois)
    names = roiset.names
    coverage = pd.DataFrame({
        "roi": names, "n_voxels": counts, "n_voxels_grid": grid_counts,
        "coverage": counts / np.maximum(grid_counts, 1),
    })
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty and on_empty == "error":
        where = mask_name or "the brain mask"
        raise BadInputError(
            f"{where}: {len(empty)} ROI(s) of set '{roiset.name}' have no voxel inside the brain "
            f"mask: {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''} "
            "(set [rois] on_empty = \"drop\" to drop them)"
        )
    if not allow_overlap and np.any(np.bincount(cols) > 1):
        raise BadInputError(f"ROI set '{roiset.name}': regions overlap")
    kept = np.flatnonzero(counts > 0)
    remap = np.full(n_rois, -1, dtype=np.int64)
    remap[kept] = np.arange(kept.size)
    weights = 1.0 / counts[rows]
    matrix = sparse.csr_matrix((weights, (remap[rows], cols)),
                               shape=(kept.size, in_mask.size))
    return RoiMatrix(matrix=matrix, names=[names[i] for i in kept], coverage=coverage,
                     dropped=empty)


def extract(data: np.ndarray, matrix: RoiMatrix | sparse.spmatrix,
            block_volumes: int = 16) -> np.ndarray:
    """Mean time series of every region.

    Sums are accumulated in float64 whatever the input precision. Non-overlapping regions with
    equal weights inside each region (labels atlases, disjoint spheres) are summed with one
    ``np.bincount`` per block of volumes; other matrices are applied to the columns they use.

    Parameters
    ----------
    data : ndarray, shape (n_volumes, n_mask_voxels)
        In-mask voxel time series (float32 or float64), columns in mask order.
    matrix : RoiMatrix or sparse matrix, shape (n_rois, n_mask_voxels)
    block_volumes : int
        Volumes processed at once (bounds the float64 work space).

    Returns
    -------
    ndarray, float64, shape (n_volumes, n_rois)
    """
    weights = sparse.csr_matrix(matrix.matrix if isinstance(matrix, RoiMatrix) else matrix)
    n_rois, n_columns = weights.shape
    if data.ndim != 2 or data.shape[1] != n_columns:
        raise ValueError(
            f"data has shape {data.shape}; expected (n_volumes, {n_columns}) in-mask voxels"
        )
    n_volumes = data.shape[0]
    out = np.empty((n_volumes, n_rois), dtype=np.float64)
    if n_rois == 0 or n_volumes == 0:
        return out
    row_of_entry = np.repeat(np.arange(n_rois), np.diff(weights.indptr))
    used = np.unique(weights.indices)
    per_column = np.bincount(weights.indices, minlength=n_columns)
    row_weight = np.zeros(n_rois)
    row_weight[row_of_entry] = weights.data
    constant = np.allclose(weights.data, row_weight[row_of_entry], rtol=0, atol=0)
    if per_column.max(initial=0) <= 1 and constant and used.size > n_columns // 4:
        row_of_column = np.full(n_columns, -1, dtype=np.intp)
        row_of_column[weights.indices] = row_of_entry
        all_columns = used.size == n_columns
        rows = row_of_column if all_columns else row_of_column[used]
        index = (rows[None, :] + n_rois * np.arange(block_volumes)[:, None]).ravel()
        for start in range(0, n_volumes, block_volumes):
            block = data[start : start + block_volumes]
            count = block.shape[0]
            values = block if all_columns else block[:, used]
            sums = np.bincount(index[: count * rows.size], weights=values.ravel(),
                               minlength=count * n_rois)
            out[start : start + count] = sums.reshape(count, n_rois) * row_weight
        return out
    transposed = weights[:, used].T.tocsr()
    for start in range(0, n_volumes, block_volumes * 4):
        block = np.asarray(data[start : start + block_volumes * 4, used], dtype=np.float64)
        out[start : start + block.shape[0]] = np.asarray(block @ transposed)
    return out
