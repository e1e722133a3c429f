"""The simulated study passes the official BIDS validator (npm package, run with node).

``make test`` installs the validator into ``.tools/``; without node/npm this test skips and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

VALIDATOR = PROJECT_ROOT / ".tools" / "node_modules" / ".bin" / "bids-validator"


def run_validator(dataset: Path) -> dict:
    if not VALIDATOR.exists() or shutil.which("node") is None:
        pytest.skip("bids-validator not installed (make test installs it with npm into .tools/)")
    result = subprocess.run([str(VALIDATOR), str(dataset), "--json"], capture_output=True,
                            text=True, timeout=600)
    return json.loads(result.stdout)


def test_demo_study_has_no_bids_errors(tmp_path: Path):
    from theramark.simulate import simulate_study

    root = simulate_study(tmp_path / "bids", preset="demo", n_per_group=1, n_volumes=40, seed=3)
    report = run_validator(root)
    errors = report["issues"]["errors"]
    assert errors == [], [(e["key"], e["reason"], [f["file"]["relativePath"] for f in e["files"][:3]])
                          for e in errors]


def test_validator_catches_a_broken_dataset(tmp_path: Path):
    """Guard against a validator that reports nothing whatever the input."""
    root = tmp_path / "broken"
    (root / "sub-01" / "func").mkdir(parents=True)
    (root / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz").write_bytes(b"not an image")
    report = run_validator(root)
    assert report["issues"]["errors"]
