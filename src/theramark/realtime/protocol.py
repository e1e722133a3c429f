"""The neurofeedback protocol: a BIDS events file of baseline and regulate blocks.

``PROTOCOL.tsv`` has the BIDS events columns ``onset`` and ``duration`` (seconds from the start of
the run's first volume) and ``trial_type``: ``baseline`` and ``regulate`` blocks, and any other
trial type the study declares (``[realtime] trial_types``, e.g. ``transfer``). Everything is
checked when the file is read, before the run starts: a problem is a
:class:`~theramark.errors.BadInputError` (exit status 2) naming the file, the row and what was
expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from theramark.errors import BadInputError

__all__ = ["BASELINE", "REGULATE", "Protocol", "read_protocol"]

BASELINE = "baseline"
REGULATE = "regulate"
_COLUMNS = ("onset", "duration", "trial_type")


@dataclass(frozen=True)
class Protocol:
    """Blocks of a neurofeedback run.

    Attributes
    ----------
    events : DataFrame
        Columns ``onset``, ``duration`` (s) and ``trial_type``, sorted by onset, not overlapping.
    source : str
        The file it was read from (for messages and sidecars).
    """

    events: pd.DataFrame
    source: str = "protocol"

    @property
    def task_types(self) -> list[str]:
        """Trial types other than baseline, in order of first appearance (the GLM's task regressors)."""
        types = [t for t in dict.fromkeys(self.events["trial_type"]) if t != BASELINE]
        return types

    def labels(self, n_volumes: int, tr: float) -> np.ndarray:
        """Trial type of each volume (``""`` outside every block).

        Volume ``i`` (1-based) is labelled by the block holding its acquisition start
        ``(i - 1) * tr``; blocks are half-open intervals ``[onset, onset + duration)``.

        Returns
        -------
        ndarray of str, shape (n_volumes,)
        """
        times = np.arange(n_volumes) * float(tr)
        labels = np.full(n_volumes, "", dtype=object)
        for onset, duration, kind in self.events[list(_COLUMNS)].itertuples(index=False):
            labels[(times >= onset - 1e-9) & (times < onset + duration - 1e-9)] = kind
        return labels

    def block_index(self, n_volumes: int, tr: float) -> np.ndarray:
        """Index of the block holding each volume (-1 outside every block), shape (n_volumes,)."""
        times = np.arange(n_volumes) * float(tr)
        index = np.full(n_volumes, -1, dtype=int)
        for i, (onset, duration) in enumerate(self.events[["onset", "duration"]].itertuples(index=False)):
            index[(times >= onset - 1e-9) & (times < onset + duration - 1e-9)] = i
        return index

    def blocks(self) -> list[dict]:
        """The blocks as plain records (for the display's run information)."""
        return [{"onset": float(o), "duration": float(d), "trial_type": str(t)}
                for o, d, t in self.events[list(_COLUMNS)].itertuples(index=False)]

    def regressors(self, n_volumes: int, tr: float, hrf_model: str = "glover") -> pd.DataFrame:
        """Task regressors: each non-baseline trial type's boxcar convolved with the HRF.

        Uses :func:`nilearn.glm.first_level.compute_regressor` at frame times ``0, tr, 2 tr, ...``
        (the acquisition start of each volume), so that the design equals nilearn's.

        Returns
        -------
        DataFrame, shape (n_volumes, n_task_types)
        """
        from nilearn.glm.first_level import compute_regressor

        frame_times = np.arange(n_volumes) * float(tr)
        columns = {}
        for kind in self.task_types:
            rows = self.events[self.events["trial_type"] == kind]
            condition = np.vstack([rows["onset"].to_numpy(float), rows["duration"].to_numpy(float),
                                   np.ones(len(rows))])
            signal, _ = compute_regressor(condition, hrf_model, frame_times, oversampling=16)
            columns[kind] = signal[:, 0]
        return pd.DataFrame(columns)


def read_protocol(path: str | os.PathLike | pd.DataFrame, trial_types: Sequence[str] = (),
                  run_duration: float | None = None) -> Protocol:
    """Read and check a protocol file.

    Parameters
    ----------
    path : path or DataFrame
        ``PROTOCOL.tsv`` (tab-separated, BIDS events columns) or the table itself.
    trial_types : sequence of str
        Trial types allowed besides ``baseline`` and ``regulate``.
    run_duration : float, optional
        Length of the run (s): a block starting after it is an error.

    Returns
    -------
    Protocol

    Raises
    ------
    BadInputError
        Missing file or columns, non-numeric or negative onsets/durations, unknown trial types,
        overlapping blocks, no regulate block; every problem is listed at once.

    Examples
    --------
    >>> table = pd.DataFrame({"onset": [0, 20], "duration": [20, 20],
    ...                       "trial_type": ["baseline", "regulate"]})
    >>> read_protocol(table).labels(4, 10.0).tolist()
    ['baseline', 'baseline', 'regulate', 'regulate']
    """
    if isinstance(path, pd.DataFrame):
        table, source = path.copy(), "protocol"
    else:
        source = str(path)
        if not Path(path).is_file():
            raise BadInputError(f"{source}: protocol file not found")
        try:
            table = pd.read_csv(path, sep="\t", dtype={"trial_type": str}, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            text = " ".join(str(exc).split())
            raise BadInputError(f"{source}: not a tab-separated table ({text})") from None
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns))
        raise BadInputError(f"{source}: missing column(s) {', '.join(missing)}; a protocol has the BIDS "
                            f"events columns onset, duration, trial_type (found: {found})")
    problems: list[str] = []
    for column in ("onset", "duration"):
        values = pd.to_numeric(table[column], errors="coerce")
        for row in np.flatnonzero(values.isna()):
            problems.append(f"row {row + 2}: {column} = {table[column].iloc[row]!r} is not a number")
        for row in np.flatnonzero(values < 0):
            problems.append(f"row {row + 2}: {column} = {values.iloc[row]} is negative")
        table[column] = values
    allowed = {BASELINE, REGULATE, *trial_types}
    for row, kind in enumerate(table["trial_type"]):
        if kind not in allowed:
            problems.append(f"row {row + 2}: trial_type {kind!r} is unknown; expected one of "
                            f"{', '.join(sorted(allowed))} (declare others in [realtime] trial_types)")
    if problems:
        raise BadInputError(f"{source}: {len(problems)} problem(s) in the protocol", problems)
    table = table.sort_values("onset", kind="stable").reset_index(drop=True)
    ends = (table["onset"] + table["duration"]).to_numpy()
    for i in range(1, len(table)):
        if table["onset"].iloc[i] < ends[i - 1] - 1e-9:
            problems.append(f"block {table['trial_type'].iloc[i]} at {table['onset'].iloc[i]:g} s overlaps "
                            f"{table['trial_type'].iloc[i - 1]} at {table['onset'].iloc[i - 1]:g} s "
                            f"(ends at {ends[i - 1]:g} s)")
    if run_duration is not None:
        for i in np.flatnonzero(table["onset"].to_numpy() >= run_duration):
            problems.append(f"block {table['trial_type'].iloc[i]} at {table['onset'].iloc[i]:g} s starts "
                            f"after the run's end ({run_duration:g} s)")
    if not (table["trial_type"] == REGULATE).any():
        problems.append("no regulate block")
    if problems:
        raise BadInputError(f"{source}: {len(problems)} problem(s) in the protocol", problems)
    return Protocol(events=table[list(_COLUMNS)].copy(), source=source)
