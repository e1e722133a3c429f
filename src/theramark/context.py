"""What the group level passes from analysis to analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from theramark.config import section
from theramark.study.design import StudyDesign


@dataclass
class GroupContext:
    """State shared by the group-level analyses of one ``theramark run ... group``.

    Attributes
    ----------
    bids_dir : Path
        The raw BIDS dataset (participants.tsv, phenotype/).
    out_dir : Path
        The theramark output folder (participant-level derivatives live here; group results go to
        ``out_dir / "group" / <analysis>``).
    config : dict
        The parsed ``study.toml`` (see :mod:`theramark.config`).
    participants : DataFrame
        ``participants.tsv`` with ``participant_id`` as a column.
    design : StudyDesign
        Arms, sessions in order, baseline, endpoint, reference arm and controls.
    results : dict
        In-memory tables analyses hand downstream, by name (``"scores"``, ``"outcomes"``,
        ``"features"``...). The report never reads them: it reads the files.
    random_state : int
        ``[study] random_state``: the seed of every resampling step of the run.
    client : distributed.Client, optional
        A Dask client (``--scheduler``): permutation tests split their permutations across it.
    """

    bids_dir: Path
    out_dir: Path
    config: dict[str, Any]
    participants: pd.DataFrame
    design: StudyDesign = field(default_factory=StudyDesign)
    results: dict[str, Any] = field(default_factory=dict)
    random_state: int = 0
    client: Any = None

    @property
    def group_dir(self) -> Path:
        path = self.out_dir / "group"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def base_dir(self) -> Path:
        """The folder paths in the config are relative to (the config file's, else the cwd)."""
        source = (self.config or {}).get("_path", {}).get("path")
        return Path(source).parent if source else Path.cwd()

    @property
    def config_source(self) -> str:
        return (self.config or {}).get("_path", {}).get("path", "study.toml")

    def settings(self, name: str) -> dict[str, Any]:
        """The resolved ``[name]`` table of the config (schema defaults merged with the user's)."""
        return section(self.config, name)
