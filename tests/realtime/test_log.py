"""The session log: durable rows, partial rows dropped, settings checked, resumption exact."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.realtime.engine import mask_rois, run_realtime
from theramark.realtime.log import FeedbackLog, read_log
from theramark.realtime.protocol import read_protocol
from theramark.realtime.volumes import Volume


def test_rows_round_trip_exactly_and_partial_rows_are_dropped(tmp_path):
    log = FeedbackLog(tmp_path, ["volume", "status", "x", "message"], {"tr": 1.0})
    assert log.open().empty
    values = [0.1 + 0.2, np.float32(1.1), np.nan, 1e-300]
    for i, v in enumerate(values, start=1):
        log.append({"volume": i, "status": "ok", "x": v, "message": "a\\tb\\nc" if i == 2 else ""})
    log.close()
    table = read_log(tmp_path)
    assert table["x"].iloc[0] == 0.1 + 0.2 and table["x"].iloc[1] == float(np.float32(1.1))
    assert np.isnan(table["x"].iloc[2]) and table["x"].iloc[3] == 1e-300
    with (tmp_path / "feedback.tsv").open("a") as handle:
        handle.write("5\tok\t0.")  # killed mid-row
    again = FeedbackLog(tmp_path, ["volume", "status", "x", "message"], {"tr": 1.0, "display": True})
    assert len(again.open()) == 4  # display is volatile: not a change of settings
    again.append({"volume": 5, "status": "ok", "x": 2.0})
    again.close()
    assert list(read_log(tmp_path)["volume"]) == [1, 2, 3, 4, 5]


def test_other_settings_or_columns_are_refused(tmp_path):
    log = FeedbackLog(tmp_path, ["volume", "x"], {"tr": 1.0})
    log.open()
    log.append({"volume": 1, "x": 1.0})
    log.close()
    with pytest.raises(BadInputError, match="other settings.*tr"):
        FeedbackLog(tmp_path, ["volume", "x"], {"tr": 2.0}).open()
    with pytest.raises(BadInputError, match="other columns"):
        FeedbackLog(tmp_path, ["volume", "y"], {"tr": 1.0}).open()


class _Crash(Exception):
    pass


def _volumes(paths, stop_after=None):
    image = nib.load(paths["bold"])
    data = np.asarray(image.dataobj, dtype=np.float32)
    for t in range(data.shape[-1]):
        if stop_after is not None and t == stop_after:
            raise _Crash()
        yield Volume(t + 1, "missing" if t == 9 else "ok", None if t == 9 else data[..., t], image.affine,
                     time.time())


def test_resumed_run_equals_an_uninterrupted_run(tmp_path):
    from theramark.simulate.neurofeedback import simulate_neurofeedback_run

    paths = simulate_neurofeedback_run(tmp_path / "sim", n_volumes=50, shape=(28, 28, 18), block_s=10,
                                       random_state=4)
    rois = mask_rois([paths["acc_mask"], paths["amygdala_mask"]])
    protocol = read_protocol(paths["events"])
    settings = {"feedback": "connectivity", "window_s": 8.0}
    whole = run_realtime(_volumes(paths), rois, protocol, 1.0, 50, tmp_path / "whole", settings)
    with pytest.raises(_Crash):
        run_realtime(_volumes(paths, stop_after=23), rois, protocol, 1.0, 50, tmp_path / "resumed", settings)
    assert len(read_log(tmp_path / "resumed")) == 23
    resumed = run_realtime(_volumes(paths), rois, protocol, 1.0, 50, tmp_path / "resumed", settings)
    assert list(resumed["volume"]) == list(range(1, 51))
    timing = ["t_ready", "t_feedback", "latency_ms"]
    pd.testing.assert_frame_equal(resumed.drop(columns=timing), whole.drop(columns=timing))
    assert resumed["signal"].notna().sum() > 30
    with pytest.raises(BadInputError, match="other settings"):
        run_realtime(_volumes(paths), rois, protocol, 1.0, 50, tmp_path / "resumed", {"feedback": "roi"})
