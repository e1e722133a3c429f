"""Regression suite on datasets nobody here wrote: the test datasets of pybids (issue 11).

``make test`` downloads pybids' source distribution from the package index and unpacks it into
``.tools/pybids`` (the Makefile's ``.tools/pybids`` target); without it these tests skip and say
so. For every dataset (a folder with a ``dataset_description.json``) ``theramark validate`` runs,
and where fMRIPrep runs are found, ``theramark run ... participant`` for one participant: each in a
subprocess with a timeout. Many of these datasets hold empty (0-byte) or truncated NIfTI files
and other broken inputs; theramark must say so, naming the file, with the documented exit status
(0 success, 1 a run failed, 2 bad input), never with a traceback, and no two runs may share
outputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT

PYBIDS = PROJECT_ROOT / ".tools" / "pybids"
#: where the sdist keeps its test datasets (``bids/tests/data`` in older releases)
DATA_DIRS = [PYBIDS / "bids" / "tests" / "data", PYBIDS / "tests" / "data"]
TIMEOUT_S = 90
#: a path, or a file name with an extension theramark reads or writes
NAMES_A_FILE = re.compile(r"/|\b[\w.-]+\.(tsv|json|nii|nii\.gz|gz|toml|txt|html)\b")


def datasets() -> list[Path]:
    """Every folder under the pybids test data with a ``dataset_description.json``."""
    found: set[Path] = set()
    for root in DATA_DIRS:
        if root.is_dir():
            found.update(p.parent for p in root.rglob("dataset_description.json"))
    return sorted(found)


def dataset_id(path: Path) -> str:
    for root in DATA_DIRS:
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name


DATASETS = datasets()
needs_pybids = pytest.mark.skipif(
    not DATASETS,
    reason=f"pybids test datasets not found under {PYBIDS} (make test downloads the pybids sdist "
           "with pip into .tools/pybids; without network access this test skips)",
)


def theramark(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "theramark", *map(str, args)]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                              cwd=PROJECT_ROOT, env={**os.environ, "THERAMARK_PROGRESS": "0"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"theramark {' '.join(map(str, args))} ran past {TIMEOUT_S} s")


def check_output(result: subprocess.CompletedProcess, what: str) -> None:
    """No traceback, a documented exit status, and every error line names a file."""
    assert "Traceback" not in result.stderr, f"{what}: traceback\n{result.stderr}"
    assert result.returncode in (0, 1, 2), f"{what}: exit {result.returncode}\n{result.stderr}"
    errors = [line for line in (result.stdout + result.stderr).splitlines()
              if line.startswith(("ERROR", "theramark: error:")) or line.strip().startswith("failed:")]
    if result.returncode != 0:
        assert errors, f"{what}: exit {result.returncode} without an error message\n{result.stderr}"
    for line in errors:
        assert "\n" not in line and NAMES_A_FILE.search(line), f"{what}: names no file: {line}"


def one_participant(dataset: Path) -> str | None:
    """A participant with fMRIPrep runs in the dataset, or None when there are none."""
    from theramark.errors import TheramarkError
    from theramark.study.layout import discover_runs

    try:
        runs = discover_runs(dataset, check_collisions=False)
    except TheramarkError:
        return None
    return sorted(run.participant_id for run in runs)[0] if runs else None


@needs_pybids
def test_the_pybids_datasets_are_found():
    names = {dataset_id(d) for d in DATASETS}
    assert {"ds005", "synthetic"} <= names, names


@needs_pybids
@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS, ids=dataset_id)
def test_validate_and_participant_level(dataset: Path, tmp_path: Path):
    result = theramark("validate", dataset, "--quick")
    check_output(result, f"validate {dataset_id(dataset)}")
    participant = one_participant(dataset)
    if participant is None:
        # nothing to run: validate must say why (no derivatives, no runs) and refuse the dataset
        assert result.returncode == 2, result.stdout
        return
    out = tmp_path / "out"
    result = theramark("run", dataset, out, "participant", "--n-jobs", "1",
                       "--participant-label", participant)
    check_output(result, f"run {dataset_id(dataset)} participant {participant}")
    table_path = out / "participant_runs.tsv"
    if result.returncode == 1:
        assert str(table_path) in result.stderr
    if not table_path.exists():
        assert result.returncode == 2  # refused before any run (e.g. two inputs naming one run)
        return
    from theramark.imaging.participant import RUN_KEY

    table = pd.read_csv(table_path, sep="\t", dtype=str, keep_default_na=False)
    assert len(table) > 0
    keys = table[RUN_KEY].agg("\t".join, axis=1)
    assert not keys.duplicated().any(), table[keys.duplicated(keep=False)]
    assert not table["bold"].duplicated().any(), table[table["bold"].duplicated(keep=False)]
    assert (table["status"] == "failed").any() == (result.returncode == 1)
    for message in table.loc[table["status"] == "failed", "message"]:
        assert "\n" not in message and NAMES_A_FILE.search(message), message
