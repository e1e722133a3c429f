"""A fast feature-level simulator: group-level tables with planted effects, no BOLD.

The group level of a consortium works on a features table (participants x sessions x 79,800
Schaefer-400 edges); simulating BOLD for thousands of participants only to reduce it to that table
takes hours. :func:`simulate_features` writes the table directly, with the structure the group
level has to handle:

- participants in arms (a therapy and a reference arm), at several sites, with age and sex;
- sessions (``pre``, ``post``...) with a participant random effect on every edge (test-retest
  reliability ``icc``), as Fisher-z functional connectivity;
- site effects: additive (location) and multiplicative (scale) per site and edge, as ComBat models
  them (Johnson et al. 2007; Fortin et al. 2018);
- a planted arm x time effect: the edges among the first ``n_effect_nodes`` nodes change by
  ``effect_size`` (standardized: in units of the within-participant change SD) in the therapy arm
  only — a connected component for the network-based statistic and a set of edges for max-T;
- a symptom change linked to the mean change of the planted edges (``link_r``).

Files written under ``OUT``::

    features/edges-<first>-<last>.parquet   float32 columns, one row per participant x session,
                                             one file per block of edges (the partitions the
                                             group level reads a chunk at a time)
    features/sessions.parquet                participant_id, session, group, site, age, sex, row
    phenotype.tsv                            participant_id, group, site, age, sex, symptom_change
    ground_truth.json                        what was planted (edges, nodes, sizes, site effects)

Everything is drawn from ``numpy.random.SeedSequence(seed)`` children, one per block of
:data:`_EDGE_STREAM` edges: the values depend on ``seed`` and the design, not on
``edges_per_file``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from theramark import __version__
from theramark._io import write_json, write_tsv
from theramark.errors import BadInputError

__all__ = ["FeatureStudy", "load_feature_matrix", "simulate_features"]

#: Edges drawn from one random stream (fixed: the values do not depend on ``edges_per_file``).
_EDGE_STREAM = 2_000
MEASURE, TASK = "pearsoncorrelation", "rest"


@dataclass(frozen=True)
class FeatureStudy:
    """Paths and sizes of a simulated feature-level study."""

    root: Path
    n_participants: int
    n_sessions: int
    n_edges: int
    edge_files: tuple[Path, ...]

    @property
    def sessions_file(self) -> Path:
        return self.root / "features" / "sessions.parquet"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth.json"


def edge_names(n_nodes: int) -> list[str]:
    """Feature keys ``pearsoncorrelation|rest|n001__n002`` of the upper-triangle edges, in
    ``numpy.triu_indices(n_nodes, 1)`` order."""
    rows, cols = np.triu_indices(n_nodes, 1)
    width = len(str(n_nodes))
    return [f"{MEASURE}|{TASK}|n{i:0{width}d}__n{j:0{width}d}" for i, j in zip(rows, cols, strict=True)]


def simulate_features(
    out_dir: str | os.PathLike,
    n_per_group: int = 100,
    n_nodes: int = 100,
    sessions: tuple[str, ...] = ("pre", "post"),
    groups: tuple[str, str] = ("therapy", "waitlist"),
    n_sites: int = 4,
    effect_size: float = 0.8,
    n_effect_nodes: int = 6,
    icc: float = 0.6,
    link_r: float = 0.5,
    null: bool = False,
    seed: int = 0,
    edges_per_file: int = 10_000,
) -> FeatureStudy:
    """Write a feature-level study (see the module docstring).

    Parameters
    ----------
    out_dir : path
        Folder to create (or reuse).
    n_per_group : int
        Participants per arm.
    n_nodes : int
        Nodes of the connectome (400 for Schaefer-400: 79,800 edges).
    sessions : tuple of str
        Session labels in visit order; the planted change is between the first and the last.
    groups : (therapy, reference)
        Arm labels; the effect is planted in the first.
    n_sites : int
        Sites (participants are assigned at random, balanced across arms).
    effect_size : float
        Arm x time effect on the planted edges, in units of the SD of a participant's change.
    n_effect_nodes : int
        The planted edges are all edges among nodes 0..n_effect_nodes-1.
    icc : float
        Share of an edge's between-participant variance that is stable across sessions.
    link_r : float
        Correlation of the symptom change with the mean change of the planted edges (therapy arm).
    null : bool
        Plant nothing (no arm x time effect, no link); site effects stay.
    seed : int
    edges_per_file : int
        Edges per Parquet partition.

    Returns
    -------
    FeatureStudy

    Examples
    --------
    >>> import tempfile
    >>> study = simulate_features(tempfile.mkdtemp(), n_per_group=10, n_nodes=12, seed=1)
    >>> study.n_participants, study.n_edges
    (20, 66)
    """
    if n_per_group < 2 or n_nodes < 3 or len(sessions) < 2 or len(groups) != 2 or n_sites < 1:
        raise BadInputError(
            "simulate_features needs n_per_group >= 2, n_nodes >= 3, at least two sessions, two "
            f"groups and a site; got n_per_group={n_per_group}, n_nodes={n_nodes}, "
            f"sessions={list(sessions)}, groups={list(groups)}, n_sites={n_sites}")
    if not 2 <= n_effect_nodes <= n_nodes:
        raise BadInputError(f"n_effect_nodes must lie in [2, n_nodes={n_nodes}], got {n_effect_nodes}")
    if not 0 <= icc < 1 or not -1 < link_r < 1:
        raise BadInputError(f"icc must lie in [0, 1) and link_r in (-1, 1); got {icc}, {link_r}")
    root = Path(out_dir)
    folder = root / "features"
    folder.mkdir(parents=True, exist_ok=True)
    root_seed = np.random.SeedSequence(seed)
    design_seed, edge_seed = root_seed.spawn(2)
    rng = np.random.default_rng(design_seed)

    n = 2 * n_per_group
    n_sessions = len(sessions)
    n_edges = n_nodes * (n_nodes - 1) // 2
    arm = np.repeat(np.asarray(groups, dtype=object), n_per_group)
    site = np.concatenate([rng.permutation(np.arange(n_per_group) % n_sites) for _ in range(2)])
    width = len(str(n))
    participants = pd.DataFrame({
        "participant_id": [f"sub-{i + 1:0{width}d}" for i in range(n)],
        "group": arm, "site": [f"site{s + 1}" for s in site],
        "age": np.round(rng.uniform(18, 65, n), 1),
        "sex": rng.choice(["F", "M"], n),
    })
    in_therapy = (arm == groups[0]) & (not null)

    rows, cols = np.triu_indices(n_nodes, 1)
    planted = (rows < n_effect_nodes) & (cols < n_effect_nodes)
    # within-participant SD of one session's noise; a change then has SD sqrt(2) * noise_sd
    noise_sd = np.sqrt(1.0 - icc) * 0.15
    subject_sd = np.sqrt(icc) * 0.15
    change_sd = np.sqrt(2.0) * noise_sd
    shift = effect_size * change_sd

    names = edge_names(n_nodes)
    long_index = pd.MultiIndex.from_product([participants["participant_id"], sessions],
                                            names=["participant_id", "session"])
    table = pd.DataFrame(index=long_index).reset_index()
    table = table.merge(participants, on="participant_id", how="left")
    table["row"] = np.arange(len(table))
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), folder / "sessions.parquet")

    planted_change = np.zeros(n)
    files = []
    n_streams = -(-n_edges // _EDGE_STREAM)
    streams = edge_seed.spawn(n_streams)
    buffer: list[np.ndarray] = []
    buffered = 0
    first_edge = 0

    def flush(values: np.ndarray, first: int) -> None:
        last = first + values.shape[1]
        path = folder / f"edges-{first:06d}-{last - 1:06d}.parquet"
        arrays = [pa.array(values[:, k]) for k in range(values.shape[1])]
        pq.write_table(pa.Table.from_arrays(arrays, names=names[first:last]), path)
        files.append(path)

    for k, stream in enumerate(streams):
        lo, hi = k * _EDGE_STREAM, min((k + 1) * _EDGE_STREAM, n_edges)
        block_rng = np.random.default_rng(stream)
        m = hi - lo
        mean = np.tanh(block_rng.normal(0.25, 0.15, m))  # typical Fisher-z FC
        site_add = block_rng.normal(0.0, 0.05, (n_sites, m))
        site_mul = np.exp(block_rng.normal(0.0, 0.15, (n_sites, m)))
        subject = block_rng.normal(0.0, subject_sd, (n, m))
        values = np.empty((n, n_sessions, m), dtype=np.float32)
        effect = np.where(planted[lo:hi], shift, 0.0)
        for s in range(n_sessions):
            fraction = s / (n_sessions - 1)  # linear in the visits: the full effect at the last
            noise = block_rng.normal(0.0, noise_sd, (n, m))
            signal = subject + noise + fraction * np.outer(in_therapy, effect)
            values[:, s, :] = mean + site_add[site] + site_mul[site] * signal
        if planted[lo:hi].any():
            change = values[:, -1, planted[lo:hi]] - values[:, 0, planted[lo:hi]]
            planted_change += change.sum(axis=1)
        buffer.append(values.reshape(n * n_sessions, m))
        buffered += m
        while buffered >= edges_per_file or (k == n_streams - 1 and buffered):
            block = np.concatenate(buffer, axis=1) if len(buffer) > 1 else buffer[0]
            take = min(edges_per_file, block.shape[1])
            flush(block[:, :take], first_edge)
            first_edge += take
            rest = block[:, take:]
            buffer, buffered = ([rest], rest.shape[1]) if rest.shape[1] else ([], 0)

    # symptom change: improvement (negative) linked to the planted edges' change in therapy
    noise = rng.normal(size=n)
    linked = planted_change - planted_change[arm == groups[0]].mean()
    linked = linked / (linked[arm == groups[0]].std() or 1.0)
    r = 0.0 if null else link_r
    symptom = -4.0 * in_therapy + 5.0 * np.where(arm == groups[0], -r * linked +
                                                 np.sqrt(1 - r**2) * noise, noise)
    participants["symptom_change"] = np.round(symptom, 3)
    write_tsv(root / "phenotype.tsv", participants)

    edges_planted = [names[i] for i in np.flatnonzero(planted)] if not null else []
    write_json(root / "ground_truth.json", {
        "software": f"theramark {__version__}",
        "mode": "features",
        "seed": seed,
        "null": null,
        "n_participants": n, "groups": list(groups), "sessions": list(sessions),
        "n_sites": n_sites, "n_nodes": n_nodes, "n_edges": n_edges,
        "icc": icc,
        "site_effects": {"additive_sd": 0.05, "multiplicative_log_sd": 0.15},
        "effects": [] if null else [
            {"kind": "group_x_time", "arm": groups[0], "reference": groups[1],
             "baseline": sessions[0], "endpoint": sessions[-1],
             "effect_size_change_sd": effect_size, "shift_z": shift,
             "nodes": [f"n{i:0{len(str(n_nodes))}d}" for i in range(n_effect_nodes)],
             "edges": edges_planted},
            {"kind": "brain_symptom_link", "arm": groups[0], "symptom": "symptom_change",
             "edges": edges_planted, "r": -link_r,
             "description": "symptom change vs the summed change of the planted edges"},
        ],
    })
    return FeatureStudy(root=root, n_participants=n, n_sessions=n_sessions, n_edges=n_edges,
                        edge_files=tuple(files))


def load_feature_matrix(
    root: str | os.PathLike, columns: slice | None = None,
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Read a simulated features table.

    Parameters
    ----------
    root : path
        Folder of :func:`simulate_features`.
    columns : slice, optional
        Edges to read (by position); only the partitions that hold them are opened.

    Returns
    -------
    sessions : DataFrame
        One row per participant x session (``participant_id, session, group, site, age, sex``).
    values : ndarray, float32, shape (n_rows, n_edges_read)
    names : list of str
        Feature keys of the columns.
    """
    folder = Path(root) / "features"
    if not (folder / "sessions.parquet").is_file():
        raise BadInputError(f"{folder}: no sessions.parquet; expected a folder written by "
                            "`theramark simulate --features`")
    sessions = pd.read_parquet(folder / "sessions.parquet")
    parts = sorted(folder.glob("edges-*.parquet"))
    bounds = [tuple(int(x) for x in p.stem.split("-")[1:]) for p in parts]
    n_edges = bounds[-1][1] + 1 if bounds else 0
    wanted = range(n_edges)[columns] if columns is not None else range(n_edges)
    if not len(wanted):
        return sessions, np.empty((len(sessions), 0), np.float32), []
    lo, hi = wanted.start, wanted.stop
    # filled in place, one partition at a time: peak memory is the matrix plus one partition
    values = np.empty((len(sessions), hi - lo), dtype=np.float32)
    names: list[str] = []
    for path, (first, last) in zip(parts, bounds, strict=True):
        if last < lo or first >= hi:
            continue
        schema_names = pq.read_schema(path).names
        keep = schema_names[max(lo - first, 0): min(hi, last + 1) - first]
        table = pq.read_table(path, columns=keep)
        for column in keep:
            values[:, len(names)] = table.column(column).to_numpy()
            names.append(column)
        del table
    return sessions, values, names


def describe(study: FeatureStudy) -> dict[str, Any]:
    """Sizes of a simulated study, for messages."""
    return {"root": str(study.root), "participants": study.n_participants,
            "sessions": study.n_sessions, "edges": study.n_edges, "files": len(study.edge_files)}
