"""FeedbackSender against real local UDP and TCP receivers (what a PsychoPy script would run)."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time

import numpy as np
import pytest

from theramark.errors import BadInputError
from theramark.realtime.display import FeedbackSender, record_to_json


def _records(n):
    rng = np.random.default_rng(0)
    out = []
    for v in range(1, n + 1):
        out.append({"volume": v, "status": "ok", "feedback": float(rng.uniform()),
                    "block": "regulate" if v % 4 else "baseline", "roi": np.float32(rng.normal()),
                    "fd": np.float64(0.1), "latency_ms": 12.5, "roi_amygdala_l": float(rng.normal())})
    out[2]["feedback"] = float("nan")
    out[2]["status"] = "missing"
    return out


def _expected(record):
    """Independent conversion: what json.loads of the line must give back."""
    out = {}
    for key, value in record.items():
        if isinstance(value, (float, np.floating)):
            value = float(value)
            out[key] = value if math.isfinite(value) else None
        else:
            out[key] = value
    return out


def test_record_to_json_is_one_line_with_null_for_nan():
    line = record_to_json({"volume": np.int64(3), "feedback": float("nan"), "fd": float("inf"),
                           "rois": np.array([1.0, np.nan]), "message": "a\nb"})
    assert line.endswith("\n") and line.count("\n") == 1  # an embedded newline is escaped
    assert json.loads(line) == {"volume": 3, "feedback": None, "fd": None, "rois": [1.0, None],
                                "message": "a\nb"}
    with pytest.raises(BadInputError, match="object"):
        record_to_json({"x": object()})
    with pytest.raises(BadInputError, match="mapping"):
        record_to_json([1, 2])


def test_udp_datagrams_arrive_one_record_each():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    records = _records(20)
    with FeedbackSender(udp=receiver.getsockname()) as sender:
        for r in records:
            sender.send(r)
        got = [receiver.recv(65536) for _ in records]
    receiver.close()
    assert all(d.endswith(b"\n") and d.count(b"\n") == 1 for d in got)
    assert [json.loads(d) for d in got] == [_expected(r) for r in records]
    assert sender.n_sent == 20 and sender.n_dropped == 0


def _tcp_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    return server


def _read_lines(conn, n):
    buffer = b""
    conn.settimeout(5)
    while buffer.count(b"\n") < n:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return [json.loads(line) for line in buffer.splitlines()]


def test_tcp_stream_is_newline_delimited_json_in_order():
    server = _tcp_server()
    records = _records(50)
    sender = FeedbackSender(tcp=server.getsockname())
    for r in records:
        sender.send(r)
    conn, _ = server.accept()  # the sender connected lazily on the first record
    got = _read_lines(conn, len(records))
    sender.close()
    conn.close()
    server.close()
    assert got == [_expected(r) for r in records]
    assert sender.n_dropped == 0


def test_tcp_without_a_peer_never_blocks_and_warns_once(caplog):
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    address = port_holder.getsockname()
    port_holder.close()  # nothing listens there now
    warnings = []
    sender = FeedbackSender(tcp=address, on_warning=warnings.append, reconnect_interval=10.0)
    with caplog.at_level(logging.WARNING, logger="theramark.realtime.display"):
        start = time.perf_counter()
        for r in _records(200):
            sender.send(r)
        elapsed = time.perf_counter() - start
        sender.close()
    assert elapsed < 0.2, f"send() blocked: {elapsed:.3f} s for 200 records"
    assert sender.n_sent == 0 and sender.n_dropped == 200
    assert len(warnings) == 1 and "unreachable" in warnings[0]
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1


def test_a_peer_that_stops_reading_never_blocks_the_engine():
    server = _tcp_server()  # accepts (the kernel does) but the program never reads
    warnings = []
    sender = FeedbackSender(tcp=server.getsockname(), on_warning=warnings.append, queue_size=100,
                            connect_timeout=0.2)
    padding = "x" * 8000  # 2000 records, 16 MB: far more than the socket buffers hold
    start = time.perf_counter()
    for v in range(1, 2001):
        sender.send({"volume": v, "message": padding})
    elapsed = time.perf_counter() - start
    t0 = time.perf_counter()
    sender.close(timeout=1.0)
    closing = time.perf_counter() - t0
    server.close()
    assert elapsed < 1.0, f"send() blocked: {elapsed:.2f} s for 2000 records"
    assert closing < 2.0
    assert sender.n_dropped > 0 and sender.n_sent + sender.n_dropped <= 2000
    assert warnings and "full" in warnings[0]


def test_tcp_peer_that_goes_away_and_comes_back():
    server = _tcp_server()
    address = server.getsockname()
    warnings = []
    sender = FeedbackSender(tcp=address, on_warning=warnings.append, reconnect_interval=0.05)
    sender.send({"volume": 1})
    conn, _ = server.accept()
    assert _read_lines(conn, 1) == [{"volume": 1}]
    conn.close()
    server.close()  # the stimulus computer is gone
    deadline = time.monotonic() + 5
    v = 1
    while not warnings and time.monotonic() < deadline:
        v += 1
        sender.send({"volume": v})
        time.sleep(0.01)
    assert warnings, "no warning after the receiver went away"
    # it comes back on the same port: the sender reconnects by itself and sends the new records
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
    server.listen(1)
    server.settimeout(5)
    accepted = {}

    def accept():
        accepted["conn"] = server.accept()[0]

    thread = threading.Thread(target=accept)
    thread.start()
    while thread.is_alive() and time.monotonic() < deadline + 5:
        v += 1
        sender.send({"volume": v})
        time.sleep(0.02)
    thread.join()
    last = v
    sender.close()
    got = _read_lines(accepted["conn"], 10**9)  # until the sender closes
    accepted["conn"].close()
    server.close()
    volumes = [g["volume"] for g in got]
    assert volumes and volumes == sorted(volumes) and volumes[-1] == last


def test_bad_addresses_are_named():
    with pytest.raises(BadInputError, match="udp="):
        FeedbackSender(udp="localhost:5005")
    with pytest.raises(BadInputError, match="tcp="):
        FeedbackSender(tcp=("127.0.0.1", 70000))
