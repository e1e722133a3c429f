"""Ingestion under faults: every delivered volume exactly once, in order, the rest declared missing."""

from __future__ import annotations

import sys
import threading
import time

import nibabel as nib
import numpy as np
import pytest

from theramark.errors import BadInputError
from theramark.realtime.ingest import FolderSource, SocketSource, _Sequencer, send_end, send_volume
from theramark.realtime.scanner import simulate_scanner
from theramark.realtime.volumes import Volume, parse_nifti_name

TR = 0.06  # short, so that a run of N volumes takes under a second
N = 12
SHAPE = (6, 5, 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4D float32 run whose volume n (1-based) has mean about 100 n: each volume is recognisable."""
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 1.0, (*SHAPE, N)).astype(np.float32)
    data += 100.0 * np.arange(1, N + 1, dtype=np.float32)
    affine = np.array([[2.0, 0, 0, -6], [0, 2.5, 0, -5], [0, 0, 3.0, 4], [0, 0, 0, 1]])
    path = tmp_path_factory.mktemp("run") / "run.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, data, affine


def _ingest(tmp_path, run, scanner: dict | None = None, source: dict | None = None, before=None, tr=TR):
    """Run the scanner in a thread and the folder source here; return the volumes and the source."""
    path, _, _ = run
    export = tmp_path / "export"
    export.mkdir(parents=True, exist_ok=True)
    if before is not None:
        before(export)
    errors, log = [], []

    def scan():
        try:
            log.append(simulate_scanner(path, export, tr, **(scanner or {})))
        except Exception as exc:  # pragma: no cover - surfaces in the assertion below
            errors.append(exc)

    thread = threading.Thread(target=scan)
    # generous grace so that a loaded test machine never turns a late volume into a missing one
    settings = {"first_timeout_s": 5.0, "missing_after_s": 10 * tr} | (source or {})
    src = FolderSource(export, N, tr, **settings)
    thread.start()
    volumes = list(src)
    thread.join()
    assert not errors
    src.log = log[0]
    return volumes, src


def _check(volumes: list[Volume], run, missing=(), errors=(), start=1, atol=0.0):
    _, data, affine = run
    assert [v.number for v in volumes] == list(range(start, N + 1))
    for v in volumes:
        if v.number in missing:
            assert v.status == "missing" and v.data is None and v.message
        elif v.number in errors:
            assert v.status == "error" and v.message
        else:
            assert v.status == "ok", (v.number, v.message)
            assert v.data.dtype == np.float32 and v.data.shape == SHAPE
            np.testing.assert_allclose(v.data, data[..., v.number - 1], atol=atol)
            np.testing.assert_allclose(v.affine, affine, atol=1e-6)


def test_naming_convention():
    assert parse_nifti_name("series001_vol00012.nii").number == 12
    name = parse_nifti_name("/x/001_000007_000012.nii.gz")
    assert (name.prefix, name.series_number, name.number) == ("001_000007", 7, 12)
    assert parse_nifti_name("run-02_00003.nii").matches(2)
    assert parse_nifti_name("run-02_00003.nii").matches("run-02")
    assert not parse_nifti_name("run-02_00003.nii").matches(3)
    assert parse_nifti_name("bold.nii").number is None


def test_nifti_in_order(tmp_path, run):
    volumes, src = _ingest(tmp_path, run)
    _check(volumes, run)
    assert src.series_ == "series001_vol" and not src.ignored_series_ and not src.errors_
    assert all(v.source.endswith(f"series001_vol{v.number:05d}.nii") for v in volumes)
    if sys.platform.startswith("linux"):
        assert src.watching_ == "inotify"
    # latency: a volume is read within about a poll interval of its file being written
    written = src.log.set_index("number")["t_done"]
    latency = np.array([v.t_ready - written[v.number] for v in volumes])
    assert np.all(latency > -0.005) and np.median(latency) < TR / 2


def test_shuffled_jittered_gzip_partial(tmp_path, run):
    volumes, _ = _ingest(tmp_path, run, {"shuffle": True, "jitter_s": TR / 3, "gzip": True,
                                         "partial_writes": True, "random_state": 3})
    _check(volumes, run)


def test_partial_uncompressed_writes_never_yield_garbage(tmp_path, run):
    volumes, _ = _ingest(tmp_path, run, {"partial_writes": True}, {"use_inotify": False})
    _check(volumes, run)


def test_dropped_volumes_are_missing(tmp_path, run):
    t0 = time.time()
    volumes, _ = _ingest(tmp_path, run, {"drop": [1, 5, N]}, {"missing_after_s": 2 * TR})
    _check(volumes, run, missing={1, 5, N})
    # the last volume times out too: the run ends shortly after it was due
    assert time.time() - t0 < N * TR + 2.0


def test_second_series_is_ignored(tmp_path, run):
    volumes, src = _ingest(tmp_path, run, {"extra_series": True, "shuffle": True})
    _check(volumes, run)
    assert src.ignored_series_ == {"series002_vol"}
    volumes, src = _ingest(tmp_path / "b", run, {"extra_series": True}, {"series": 2})
    _check(volumes, run)
    assert all("series002" in v.source for v in volumes)


def test_resume_mid_run(tmp_path, run):
    """Restarted at volume 5 after the scanner wrote everything: the startup scan delivers 5..N."""
    path, _, _ = run
    simulate_scanner(path, tmp_path, TR, speed=50.0)
    t0 = time.time()
    volumes = list(FolderSource(tmp_path, N, TR, start=5))
    _check(volumes, run, start=5)
    assert time.time() - t0 < 1.0


def test_corrupt_and_mismatched_files_are_errors(tmp_path, run):
    def plant(export):
        (export / "series001_vol00004.nii").write_bytes(b"this is not a NIfTI file" * 40)
        other = np.zeros((4, 4, 4), dtype=np.float32)
        nib.save(nib.Nifti1Image(other, np.eye(4)), export / "series001_vol00006.nii")

    def scanner_drops_them():
        return {"drop": [4, 6]}

    volumes, _ = _ingest(tmp_path, run, scanner_drops_them(), {"corrupt_after_s": 0.2}, before=plant)
    _check(volumes, run, errors={4, 6})
    messages = {v.number: v.message for v in volumes}
    assert "series001_vol00004.nii" in messages[4]
    assert "shape" in messages[6]


def test_other_orientation_is_an_error(tmp_path, run):
    _, data, affine = run

    def plant(export):
        flipped = affine.copy()
        flipped[0, 0] = -flipped[0, 0]
        nib.save(nib.Nifti1Image(data[..., 2], flipped), export / "series001_vol00003.nii")

    volumes, _ = _ingest(tmp_path, run, {"drop": [3]}, before=plant)
    _check(volumes, run, errors={3})
    assert "affine" in volumes[2].message


def test_growing_4d_nifti(tmp_path, run):
    # the file keeps its size between volumes for longer than corrupt_after_s: still not corrupt
    volumes, src = _ingest(tmp_path, run, {"format": "nifti-4d", "partial_writes": True},
                           {"corrupt_after_s": TR / 4})
    _check(volumes, run)
    assert src.series_ == "series001_run" and not src.errors_


def test_resume_from_a_4d_file_whose_name_ends_with_a_number(tmp_path, run):
    _, data, affine = run
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "run-01.nii")
    volumes = list(FolderSource(tmp_path, N, TR, start=5))
    _check(volumes, run, start=5)


@pytest.mark.parametrize("kind", ["enhanced", "classic"])
def test_dicom(tmp_path, run, kind):
    # DICOM encoding of two series takes most of a 60 ms TR on a loaded machine: a longer TR
    volumes, src = _ingest(tmp_path, run, {"format": "dicom", "dicom_kind": kind, "shuffle": True,
                                           "partial_writes": True, "drop": [7], "extra_series": True},
                           tr=0.12)
    _check(volumes, run, missing={7}, atol=0.01)
    assert src.series_ == 1 and src.ignored_series_ == {2}


@pytest.mark.parametrize("kind", ["enhanced", "classic"])
def test_dicom_resume_in_a_shared_folder(tmp_path, run, kind):
    """Series 2 from volume 4, among series 1 files: the startup scan finds exactly those."""
    path, _, _ = run
    simulate_scanner(path, tmp_path, TR, speed=50.0, format="dicom", dicom_kind=kind, extra_series=True)
    src = FolderSource(tmp_path, N, TR, series=2, start=4)
    _check(list(src), run, start=4, atol=0.01)
    assert src.ignored_series_ == {1}


def test_truncated_dicom_header_never_decides_the_series(tmp_path, run):
    """A file cut anywhere is never taken for another series or an earlier volume (it is retried)."""
    from theramark.realtime.dicom import enhanced_mr_bytes

    _, data, affine = run
    blob = enhanced_mr_bytes(data[..., 4], affine, number=5, series_number=1)
    src = FolderSource(tmp_path, N, TR, series=1, start=3)
    path = tmp_path / "cut.dcm"
    for cut in range(0, len(blob), 53):
        path.write_bytes(blob[:cut])
        assert not src._skip_dicom(path)
    other = enhanced_mr_bytes(data[..., 4], affine, number=5, series_number=2)
    path.write_bytes(other)
    assert src._skip_dicom(path) and src.ignored_series_ == {2}


def test_corrupt_dicom_with_readable_header(tmp_path, run):
    from theramark.realtime.dicom import enhanced_mr_bytes

    _, data, affine = run

    def plant(export):
        blob = enhanced_mr_bytes(data[..., 1], affine, number=2, series_number=1)
        (export / "broken.dcm").write_bytes(blob[:-100])

    volumes, src = _ingest(tmp_path, run, {"format": "dicom", "drop": [2]}, {"corrupt_after_s": 0.2},
                           before=plant)
    _check(volumes, run, errors={2}, atol=0.01)
    assert "broken.dcm" in volumes[1].message


def test_bad_settings():
    with pytest.raises(BadInputError, match="tr must be positive"):
        FolderSource("/tmp", 10, 0.0)
    with pytest.raises(BadInputError, match="start"):
        FolderSource("/tmp", 10, 1.0, start=11)


def _volume(n: int, t: float = 0.0) -> Volume:
    return Volume(number=n, status="ok", data=np.zeros((2, 2, 2), np.float32), affine=np.eye(4), t_ready=t)


def test_sequencer_timing_rules():
    """Missing volumes are declared exactly when the documented rules say, on a fake clock."""
    seq = _Sequencer(n_volumes=5, tr=1.0, start=1, missing_after_s=2.0, first_timeout_s=10.0, t0=0.0)
    assert seq.next_event() == 12.0  # first volume due at 10 s, + 2 s grace
    seq.add(_volume(2, 3.0), now=3.0)  # volume 2 before volume 1
    assert seq.pop(4.9) == [] and seq.next_event() == 5.0
    out = seq.pop(5.0)
    assert [(v.number, v.status) for v in out] == [(1, "missing"), (2, "ok")]
    assert seq.next_event() == 3.0 + 1.0 + 2.0  # volume 3 due one TR after volume 2 was ready
    # a file of volume 3 still being written holds the declaration back until it is given up
    assert seq.pop(6.5, waiting={3: 7.0}) == []
    # volume 4 was due at 5 s: past its grace too, but its file is being written until 7.5 s
    assert [v.number for v in seq.pop(7.0, waiting={3: 7.0, 4: 7.5})] == [3]
    seq.add(_volume(5, 7.2), now=7.2)
    assert seq.pop(7.4, waiting={4: 7.5}) == []
    assert [(v.number, v.status) for v in seq.pop(7.5, waiting={4: 7.5})] == [(4, "missing"), (5, "ok")]
    assert seq.done and seq.next_event() == np.inf


def test_sequencer_checks_shape_and_ignores_duplicates():
    seq = _Sequencer(n_volumes=3, tr=1.0, start=1, missing_after_s=2.0, first_timeout_s=10.0, t0=0.0)
    seq.add(_volume(1))
    seq.add(_volume(1))
    odd = Volume(number=2, status="ok", data=np.zeros((3, 2, 2), np.float32), affine=np.eye(4), t_ready=0.0)
    seq.add(odd)
    out = seq.pop(0.0)
    assert [(v.number, v.status) for v in out] == [(1, "ok"), (2, "error")]
    assert "shape" in out[1].message
    seq.add(_volume(1))  # already delivered: ignored
    assert seq.pop(0.0) == []


def test_socket_round_trip(run):
    _, data, affine = run
    source = SocketSource("127.0.0.1", 0, N, TR, missing_after_s=2 * TR, first_timeout_s=5.0)
    order = [2, 1, 3, 5, 4] + list(range(6, N))  # out of order; N never sent

    def client():
        for n in order:
            send_volume(source.host, source.port, n, data[..., n - 1], affine)
            time.sleep(TR / 4)

    thread = threading.Thread(target=client)
    thread.start()
    volumes = list(source)
    thread.join()
    _check(volumes, run, missing={N})
    assert all(v.source == "socket" for v in volumes[:-1])


def test_socket_end_message(run):
    _, data, affine = run
    source = SocketSource("127.0.0.1", 0, N, 5.0, first_timeout_s=30.0)
    t0 = time.time()
    send_volume(source.host, source.port, 1, data[..., 0], affine)
    send_end(source.host, source.port)
    volumes = list(source)
    assert time.time() - t0 < 5.0  # no waiting for the missing volumes after the end message
    assert [v.status for v in volumes] == ["ok"] + ["missing"] * (N - 1)
    assert "ended" in volumes[1].message


def test_socket_survives_a_bad_message(run):
    import socket

    _, data, affine = run
    source = SocketSource("127.0.0.1", 0, 2, 5.0, first_timeout_s=30.0)
    with socket.create_connection((source.host, source.port)) as conn:
        conn.sendall(b"\x00\x00\x00\x05{bad}")
    send_volume(source.host, source.port, 2, data[..., 1], affine)
    send_volume(source.host, source.port, 1, data[..., 0], affine)
    volumes = list(source)
    assert [(v.number, v.status) for v in volumes] == [(1, "ok"), (2, "ok")]
    np.testing.assert_array_equal(volumes[1].data, data[..., 1])


def test_socket_rejects_non_3d(run):
    with pytest.raises(BadInputError, match="3D"):
        send_volume("127.0.0.1", 1, 1, np.zeros((2, 2)), np.eye(4))
