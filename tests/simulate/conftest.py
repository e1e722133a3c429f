"""A small simulated study shared by the simulator's tests (2 per group, 40 volumes per run)."""

from __future__ import annotations

import pytest

from theramark.simulate import simulate_study

SMALL = {"n_per_group": 2, "n_volumes": 40, "seed": 0}


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """BIDS root of a small demo-preset study."""
    return simulate_study(tmp_path_factory.mktemp("small") / "bids", **SMALL)
