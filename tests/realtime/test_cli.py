"""``theramark realtime``: scanner simulator with faults + run, kill and resume, summarize, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from theramark.cli import main
from theramark.realtime.log import read_log

N = 30


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> dict[str, Path]:
    from theramark.simulate.neurofeedback import simulate_neurofeedback_run

    return simulate_neurofeedback_run(tmp_path_factory.mktemp("nf"), n_volumes=N, shape=(28, 28, 18),
                                      block_s=10, random_state=2)


def _theramark(*args: str) -> subprocess.Popen:
    env = {**os.environ, "THERAMARK_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "theramark", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(path: Path) -> int:
    if not path.is_file():
        return 0
    return max(0, path.read_text(encoding="utf-8").count("\n") - 1)


def test_run_with_scanner_faults_killed_and_resumed(simulated, tmp_path):
    export, out = tmp_path / "export", tmp_path / "log"
    run_args = ["realtime", "run", "--watch", str(export), "--roi", str(simulated["acc_mask"]),
                "--roi", str(simulated["amygdala_mask"]), "--protocol", str(simulated["events"]),
                "--tr", "1", "--n-volumes", str(N), "--out", str(out)]
    scanner = _theramark("realtime", "simulate-scanner", str(simulated["bold"]), str(export), "--tr", "1",
                         "--speed", "4", "--shuffle", "--partial-writes", "--drop", "7")
    engine = _theramark(*run_args)
    deadline = time.time() + 60
    while _rows(out / "feedback.tsv") < 12 and time.time() < deadline and engine.poll() is None:
        time.sleep(0.05)
    engine.kill()  # SIGKILL: no clean-up at all
    engine.wait()
    killed_at = _rows(out / "feedback.tsv")
    assert 12 <= killed_at < N
    resumed = _theramark(*run_args)
    _, err = resumed.communicate(timeout=90)
    assert resumed.returncode == 0, err
    assert scanner.wait(timeout=60) == 0
    log = read_log(out)
    assert list(log["volume"]) == list(range(1, N + 1))  # in order, no loss, no duplicate
    assert log.loc[6, "status"] == "missing" and log["status"].drop(6).eq("ok").all()
    assert log["feedback"].drop(6).notna().all()
    assert "1 missing" in err
    assert main(["realtime", "summarize", str(out)]) == 0
    assert (out / "summary" / "runs.tsv").is_file()


@pytest.mark.parametrize("problem", ["config", "protocol", "roi", "unknown_feedback_roi"])
def test_configuration_errors_exit_2_before_the_run(simulated, tmp_path, capsys, problem):
    roi, protocol = str(simulated["acc_mask"]), str(simulated["events"])
    args = ["realtime", "run", "--watch", str(tmp_path / "export"), "--tr", "1", "--n-volumes", str(N),
            "--out", str(tmp_path / "log")]
    if problem == "config":
        config = tmp_path / "study.toml"
        config.write_text('[realtime]\nfeedbak = "roi"\n', encoding="utf-8")
        args += ["--roi", roi, "--protocol", protocol, "--config", str(config)]
        expected = "feedbak: unknown key"
    elif problem == "protocol":
        bad = tmp_path / "protocol.tsv"
        bad.write_text("onset\tduration\ttrial_type\n0\t10\tbaseline\n5\t10\tregulate\n", encoding="utf-8")
        args += ["--roi", roi, "--protocol", str(bad)]
        expected = "overlaps"
    elif problem == "roi":
        args += ["--roi", str(tmp_path / "none.nii.gz"), "--protocol", protocol]
        expected = "ROI mask not found"
    else:
        config = tmp_path / "study.toml"
        config.write_text('[realtime]\nfeedback_rois = ["insula"]\n', encoding="utf-8")
        args += ["--roi", roi, "--protocol", protocol, "--config", str(config)]
        expected = "unknown ROI(s) insula"
    assert main(args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "log" / "feedback.tsv").exists()


def test_realtime_config_table_is_accepted():
    from theramark.config import defaults, section

    settings = section({"realtime": {"feedback": "connectivity", "window_s": 30}}, "realtime")
    assert settings["feedback"] == "connectivity" and settings["window_s"] == 30.0
    assert set(defaults("realtime")) >= {"drift_model", "kalman", "baseline", "smoothing", "display"}
