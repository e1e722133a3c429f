"""The participant level on process pools and on a real Dask distributed cluster (loopback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.imaging.test_participant import CONFIG, make_study
from theramark.imaging import participant

DASK = Path(sys.executable).with_name("dask")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([str(DASK), *args], stdout=handle, stderr=subprocess.STDOUT, env=env)


def _wait_for(log: Path, pattern: str, process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text())
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited:\n{log.read_text()}")
        time.sleep(0.2)
    raise TimeoutError(f"no {pattern!r} in {log}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("dask") / "bids", participants=("01", "02"),
                      n_rest=40, n_task=50, seed=9)


@pytest.mark.slow
def test_dask_cluster_gives_the_same_outputs_as_local(small_study, tmp_path):
    if not DASK.is_file():
        pytest.skip(f"{DASK} not found")
    logs = tmp_path / "logs"
    logs.mkdir()
    scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--no-dashboard"], logs / "scheduler.log")
    workers = []
    try:
        address = _wait_for(logs / "scheduler.log", r"Scheduler at:\s+(tcp://[\d.]+:\d+)",
                            scheduler)
        for index in range(1):  # one worker holding two runs at once
            worker = _start(["worker", address, "--nthreads", "2", "--nworkers", "1",
                             "--no-dashboard", "--host", "127.0.0.1"],
                            logs / f"worker{index}.log")
            workers.append(worker)
            _wait_for(logs / f"worker{index}.log", r"(Registered to)", worker)
        on_dask = participant.run_participant_level(small_study, tmp_path / "dask", config=CONFIG,
                                                    scheduler=address)
        from distributed import Client
        from threadpoolctl import threadpool_info

        with Client(address) as client:
            # after a job, the worker's BLAS is limited to its cores shared by its two threads
            blas = client.submit(lambda: [lib["num_threads"] for lib in threadpool_info()
                                          if lib["user_api"] == "blas"], pure=False).result()
            expected = client.submit(participant._worker_blas_threads, pure=False).result()
        assert expected == max(1, (os.cpu_count() or 1) // 2)
        assert blas and set(blas) == {expected}, blas
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    assert (on_dask["status"] == "ok").all(), on_dask["message"].tolist()
    local = participant.run_participant_level(small_study, tmp_path / "local", config=CONFIG,
                                              n_jobs=1)
    assert (local["status"] == "ok").all()
    name = ("sub-01/ses-pre/func/sub-01_ses-pre_task-rest_seg-literature_"
            "meas-pearsoncorrelation_relmat.dense.tsv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dask" / name, sep="\t"),
                                  pd.read_csv(tmp_path / "local" / name, sep="\t"))


@pytest.mark.slow
def test_joblib_processes_give_the_same_outputs(small_study, tmp_path):
    parallel = participant.run_participant_level(small_study, tmp_path / "par", config=CONFIG,
                                                 n_jobs=2)
    serial = participant.run_participant_level(small_study, tmp_path / "ser", config=CONFIG,
                                               n_jobs=1)
    assert (parallel["status"] == "ok").all() and len(parallel) == 4
    key = ["participant_id", "task"]
    assert parallel.sort_values(key)["status"].tolist() == serial.sort_values(key)["status"].tolist()
    name = ("sub-02/ses-pre/func/sub-02_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "par" / name, sep="\t"),
                                  pd.read_csv(tmp_path / "ser" / name, sep="\t"))
