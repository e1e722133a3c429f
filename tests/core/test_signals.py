"""SIGTERM (what SLURM and Kubernetes send) is handled like Ctrl-C: workers stopped, resume message,
exit status 143; the rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.imaging.test_participant import make_study
from theramark import cli

RESUME = "rerun the same command to resume"


def _outputs(out: Path) -> list[Path]:
    """Runs completed: their QC sidecar is written last (what resume reads)."""
    return sorted(out.glob("sub-*/ses-*/func/*_desc-qc_metrics.json"))


def test_sigterm_stops_workers_and_rerun_resumes(tmp_path):
    bids = make_study(tmp_path / "bids", participants=("01", "02", "03", "04", "05", "06"),
                      n_rest=150, n_task=150)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "theramark", "run", str(bids), str(out), "participant",
               "--n-jobs", "2"]
    env = {**os.environ, "THERAMARK_PROGRESS": "0"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        children: set[int] = set()
        deadline = time.monotonic() + 240
        while not _outputs(out):
            assert proc.poll() is None, f"finished before any output appeared: {proc.communicate()}"
            assert time.monotonic() < deadline, "no output after 240 s"
            children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            time.sleep(0.05)
        workers = psutil.Process(proc.pid).children(recursive=True)
        children |= {c.pid for c in workers}
        assert any("python" in c.name().lower() for c in workers), "no worker process seen"
        assert proc.poll() is None, "the run finished before SIGTERM: make the study bigger"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, (proc.returncode, stdout, stderr)
    assert "terminated (SIGTERM)" in stderr and RESUME in stderr, stderr
    assert stderr.strip().splitlines() == [
        "theramark: terminated (SIGTERM); workers stopped; rerun the same command to resume"]
    assert not (out / "participant_runs.tsv").exists()  # interrupted before the table was written

    # no worker survives its parent (loky's would otherwise finish their runs, then idle)
    survivors: list[int] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        survivors = [pid for pid in children if psutil.pid_exists(pid)
                     and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not survivors:
            break
        time.sleep(0.1)
    assert not survivors, [psutil.Process(p).cmdline() for p in survivors if psutil.pid_exists(p)]

    done_before = {p.name for p in _outputs(out)}
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    runs = pd.read_csv(out / "participant_runs.tsv", sep="\t")
    assert len(runs) == 12 and set(runs["status"]) == {"ok"}
    # runs finished before SIGTERM are resumed, not recomputed; the others are computed now
    assert len(done_before) <= runs["reused"].sum() < 12
    assert len(_outputs(out)) == 12


def test_sigterm_handler_raises_terminated_and_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(cli.Terminated), cli.sigterm_as_exception():
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(cli.Terminated, KeyboardInterrupt)


def test_main_maps_sigterm_to_143(monkeypatch, capsys):
    def command(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(func=command)
    assert cli.main([]) == 143
    err = capsys.readouterr().err
    assert "terminated (SIGTERM)" in err and RESUME in err


def _slow_run(run, out, settings, resume):
    time.sleep(0.3)
    return {"run": run}


def _loky_workers() -> list[psutil.Process]:
    """This process's live loky workers (not loky's resource tracker, which ends with its parent)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            if ("loky" in command and "resource_tracker" not in command
                    and child.status() != psutil.STATUS_ZOMBIE):
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_interrupted_joblib_pool_kills_its_workers_at_once(monkeypatch):
    from theramark.imaging import participant

    def interrupted(iterable, **kwargs):
        for i, item in enumerate(iterable):
            if i == 1:
                raise cli.Terminated()
            yield item

    monkeypatch.setattr(participant, "process_run", _slow_run)
    monkeypatch.setattr(participant, "progress", interrupted)
    # the exception info is held (as a traceback being handled is): joblib's generator is still
    # referenced, so only the explicit shutdown can have stopped the workers
    with pytest.raises(cli.Terminated) as held:
        participant._run_joblib(list(range(8)), None, {}, False, 2)
    deadline = time.monotonic() + 5
    while _loky_workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _loky_workers(), [w.cmdline() for w in _loky_workers()]
    assert held.value is not None
