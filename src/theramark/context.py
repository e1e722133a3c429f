"""What the group level passes from stage to stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class GroupContext:
    """State shared by the group-level stages of one ``theramark run ... group``.

    Attributes
    ----------
    bids_dir : Path
        The raw BIDS dataset (participants.tsv, phenotype/).
    out_dir : Path
        The theramark output folder (participant-level derivatives live here; group results go to
        ``out_dir / "group"``).
    config : dict
        The parsed ``study.toml`` (see :mod:`theramark.config`).
    participants : DataFrame
        ``participants.tsv`` with ``participant_id`` as a column.
    results : dict
        Tables stages hand downstream, by name (``"scores"``, ``"outcomes"``, ``"features"``...).
    random_state : int
        Seed for every resampling step of the run.
    """

    bids_dir: Path
    out_dir: Path
    config: dict[str, Any]
    participants: pd.DataFrame
    results: dict[str, Any] = field(default_factory=dict)
    random_state: int = 0

    @property
    def group_dir(self) -> Path:
        path = self.out_dir / "group"
        path.mkdir(parents=True, exist_ok=True)
        return path
