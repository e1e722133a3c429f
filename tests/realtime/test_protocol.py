"""The protocol file: labels per volume, task regressors, every error before the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.realtime.protocol import read_protocol


def _write(tmp_path, text: str):
    path = tmp_path / "protocol.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_labels_blocks_and_regressors(tmp_path):
    path = _write(tmp_path, "onset\tduration\ttrial_type\n0\t10\tbaseline\n10\t10\tregulate\n"
                            "20\t10\tbaseline\n30\t10\ttransfer\n")
    protocol = read_protocol(path, trial_types=["transfer"])
    labels = protocol.labels(42, 2.0)
    assert list(labels[:5]) == ["baseline"] * 5 and list(labels[5:10]) == ["regulate"] * 5
    assert list(labels[15:20]) == ["transfer"] * 5 and list(labels[20:]) == [""] * 22
    assert list(protocol.block_index(21, 2.0)[[0, 5, 10, 15, 20]]) == [0, 1, 2, 3, -1]
    assert protocol.task_types == ["regulate", "transfer"]
    from nilearn.glm.first_level import compute_regressor

    regressors = protocol.regressors(42, 2.0)
    expected, _ = compute_regressor(np.array([[10.0], [10.0], [1.0]]), "glover", np.arange(42) * 2.0,
                                    oversampling=16)
    np.testing.assert_allclose(regressors["regulate"], expected[:, 0])
    assert int(np.argmax(regressors["regulate"])) in range(8, 13)  # peaks in the block's end + lag


@pytest.mark.parametrize("text, expected", [
    ("onset\tduration\n0\t10\n", "missing column(s) trial_type"),
    ("onset\tduration\ttrial_type\n0\t10\tbaseline\n10\t10\trelax\n", "trial_type 'relax' is unknown"),
    ("onset\tduration\ttrial_type\n0\t12\tbaseline\n10\t10\tregulate\n", "overlaps baseline at 0 s"),
    ("onset\tduration\ttrial_type\n0\tx\tbaseline\n10\t10\tregulate\n", "duration = 'x' is not a number"),
    ("onset\tduration\ttrial_type\n0\t10\tbaseline\n", "no regulate block"),
    ("onset\tduration\ttrial_type\n0\t10\tbaseline\n500\t10\tregulate\n", "starts after the run's end"),
])
def test_errors_name_the_file_and_the_problem(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(BadInputError) as info:
        read_protocol(path, run_duration=100)
    assert expected in str(info.value) and str(path) in str(info.value)


def test_missing_file_and_dataframe_input(tmp_path):
    with pytest.raises(BadInputError, match="protocol file not found"):
        read_protocol(tmp_path / "none.tsv")
    table = pd.DataFrame({"onset": [20, 0], "duration": [20, 20], "trial_type": ["regulate", "baseline"]})
    protocol = read_protocol(table)
    assert list(protocol.events["trial_type"]) == ["baseline", "regulate"]  # sorted by onset
