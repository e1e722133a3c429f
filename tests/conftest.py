"""Shared test fixtures.

Real data lives beside the project in ``../shared/data`` (never copied into the repository). A user's
clone has no ``../shared``: tests that need it skip with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("THERAMARK_PROGRESS", "0")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("THERAMARK_SHARED", PROJECT_ROOT.parent / "shared"))
SHARED_DATA = SHARED_DIR / "data"
ORACLES = SHARED_DIR / "oracles"


def shared_path(relative: str) -> Path:
    """Path under ``../shared``; skips the calling test when it is not there."""
    path = SHARED_DIR / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} (a plain clone has no ../shared)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ``../shared/data`` folder (skips when absent)."""
    return shared_path("data")


@pytest.fixture
def oracles() -> Path:
    """The ``../shared/oracles`` folder (skips when absent)."""
    return shared_path("oracles")
