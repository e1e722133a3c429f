"""theramark._io: atomic writes, TSV and JSON, hashes, provenance (config: test_config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from theramark._io import (
    atomic_path,
    file_hash,
    parameter_hash,
    provenance,
    read_tsv,
    write_json,
    write_tsv,
)
from theramark.errors import BadInputError


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "out" / "table.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path: Path):
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    mode = stat.S_IMODE(write_tsv(tmp_path / "t.tsv", pd.DataFrame({"a": [1]})).stat().st_mode)
    assert mode == 0o666 & ~mask


def test_tsv_round_trip_uses_na(tmp_path: Path):
    table = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "score": [1.5, np.nan]})
    path = write_tsv(tmp_path / "t.tsv", table)
    assert path.read_text().splitlines()[2] == "sub-2\tn/a"
    pd.testing.assert_frame_equal(read_tsv(path), table)


def test_read_tsv_names_the_file(tmp_path: Path):
    with pytest.raises(BadInputError, match="missing.tsv: file not found"):
        read_tsv(tmp_path / "missing.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n1\t2\t3\t4\n")
    with pytest.raises(BadInputError, match="bad.tsv: line 3 has 4 fields, the header has 2"):
        read_tsv(bad)


def test_json_numpy_and_nan(tmp_path: Path):
    path = write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(3), "c": np.nan})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None}


def test_hashes_and_provenance(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("abc")
    assert file_hash(path) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert parameter_hash({"a": 1, "b": 2}) == parameter_hash({"b": 2, "a": 1})
    assert parameter_hash({"a": 1}) != parameter_hash({"a": 2})
    record = provenance({"strategy": "simple"}, {"bold": path})
    assert record["GeneratedBy"][0]["Name"] == "theramark"
    assert record["Sources"]["bold"]["hash"].startswith("sha256:")
    assert record["ParameterHash"] == parameter_hash({"strategy": "simple"})
