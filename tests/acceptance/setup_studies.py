"""Real studies set up as a user would: the dataset's files copied out of ``../shared``, then
``theramark config init``."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import shared_path
from theramark.cli import main


def ds003007_with_config(folder: Path) -> tuple[Path, Path]:
    """OpenNeuro ds003007's clinical files under ``folder`` and the study.toml ``config init`` wrote.

    Skips the calling test when ``../shared`` is absent.

    Returns
    -------
    bids, config : Path
        The dataset folder and the configuration file.
    """
    source = shared_path("data/ds003007_prepost_treatment")
    bids = folder / "ds003007"
    bids.mkdir()
    for name in ("participants.tsv", "participants.json", "dataset_description.json"):
        shutil.copy(source / name, bids / name)
    config = folder / "study.toml"
    assert main(["config", "init", str(bids), "-o", str(config)]) == 0
    return bids, config
