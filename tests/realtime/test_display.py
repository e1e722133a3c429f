"""DisplayServer on a real port: WebSocket feed, JSON endpoints, late join, non-blocking publish."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import urllib.request

import pytest

pytest.importorskip("starlette", reason="the display needs starlette (pip install starlette)")
pytest.importorskip("uvicorn", reason="the display needs uvicorn (pip install uvicorn)")
websockets = pytest.importorskip("websockets", reason="the test client needs websockets")

from theramark.errors import BadInputError  # noqa: E402
from theramark.realtime.display import DisplayServer  # noqa: E402

RUN = {"n_volumes": 40, "tr": 2.0, "rois": ["amygdala_l"], "feedback": "roi_psc",
       "blocks": [{"onset": 0.0, "duration": 20.0, "trial_type": "baseline"},
                  {"onset": 20.0, "duration": 20.0, "trial_type": "regulate"}],
       "instructions": {"regulate": "Think of a happy memory"}}


def _record(v):
    missing = v % 7 == 0
    return {"volume": v, "status": "missing" if missing else "ok", "t_ready": 100.0 + 2 * v,
            "t_feedback": 100.01 + 2 * v, "roi": float("nan") if missing else 0.1 * v,
            "feedback": float("nan") if missing else (v % 10) / 10, "fd": 0.05 * (v % 3),
            "block": "baseline" if v <= 10 else "regulate", "latency_ms": 10.0 + v, "message": "",
            "roi_amygdala_l": 0.1 * v}


def _same(sent, got):
    """The record as a client sees it: NaN became null, plus the server's seq."""
    expected = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in sent.items()}
    return {k: v for k, v in got.items() if k != "seq"} == expected


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


@pytest.fixture
def server():
    display = DisplayServer(host="127.0.0.1", port=0)
    display.start()
    yield display
    display.stop()


async def _collect(ws, n, timeout=5.0):
    out = []
    while len(out) < n:
        out.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return out


def test_records_arrive_in_order_and_the_results_endpoint_has_them(server):
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    server.set_run_info(RUN)
    sent = [_record(v) for v in range(1, 31)]

    async def client():
        async with websockets.connect(server.url.replace("http", "ws") + "/ws") as ws:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            # published from another thread, as the engine does
            thread = threading.Thread(target=lambda: [server.publish(r) for r in sent])
            thread.start()
            thread.join()
            server.message("volume 7 missing", level="warning")
            return snapshot, await _collect(ws, len(sent) + 1)

    snapshot, live = asyncio.run(client())
    assert snapshot["type"] == "snapshot" and snapshot["records"] == []
    assert snapshot["run"]["n_volumes"] == 40
    # defaults fill the instruction the run info left out; a given one wins
    assert snapshot["run"]["instructions"] == {"baseline": "Rest", "regulate": "Think of a happy memory"}
    assert [m["type"] for m in live] == ["record"] * 30 + ["message"]
    assert [m["record"]["volume"] for m in live[:30]] == list(range(1, 31))
    assert all(_same(s, m["record"]) for s, m in zip(sent, live, strict=False))
    seqs = [m["record"]["seq"] for m in live[:30]] + [live[30]["message"]["seq"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 31
    assert live[30]["message"]["text"] == "volume 7 missing"

    status, ctype, body = _get(server.url + "/api/results")
    results = json.loads(body)
    assert status == 200 and ctype.startswith("application/json")
    assert [r["volume"] for r in results["records"]] == list(range(1, 31))
    assert all(_same(s, r) for s, r in zip(sent, results["records"], strict=False))
    assert results["records"][6]["feedback"] is None and results["records"][6]["status"] == "missing"
    assert results["messages"][0]["level"] == "warning"
    assert json.loads(_get(server.url + "/api/run")[2])["tr"] == 2.0


def test_late_joiner_gets_the_history_then_live_records_without_gaps(server):
    server.set_run_info(RUN)
    for v in range(1, 21):
        server.publish(_record(v))
    server.message("scanner paused", level="info")

    async def client():
        async with websockets.connect(server.url.replace("http", "ws") + "/ws") as ws:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            for v in range(21, 26):
                server.publish(_record(v))
            return snapshot, await _collect(ws, 5)

    snapshot, live = asyncio.run(client())
    assert [r["volume"] for r in snapshot["records"]] == list(range(1, 21))
    assert snapshot["messages"][0]["text"] == "scanner paused"
    assert [m["record"]["volume"] for m in live] == list(range(21, 26))


def test_publishing_while_pages_connect_loses_and_duplicates_nothing(server):
    """A page joining mid-stream sees every record exactly once (snapshot + live)."""
    n = 400
    done = threading.Event()

    def engine():
        for v in range(1, n + 1):
            server.publish({"volume": v, "status": "ok", "feedback": 0.5})
            if v % 50 == 0:
                time.sleep(0.005)
        done.set()

    async def client():
        async with websockets.connect(server.url.replace("http", "ws") + "/ws") as ws:
            seen = [r["volume"] for r in json.loads(await asyncio.wait_for(ws.recv(), 5))["records"]]
            while len(seen) < n:
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["record"]["volume"])
            return seen

    thread = threading.Thread(target=engine)
    thread.start()
    time.sleep(0.002)
    seen = asyncio.run(client())
    thread.join()
    assert seen == list(range(1, n + 1))


def test_publish_is_cheap_and_never_blocks_without_clients(server):
    server.set_run_info(RUN)
    start = time.perf_counter()
    for v in range(1, 1001):
        server.publish(_record(v))
    per_call = (time.perf_counter() - start) / 1000
    assert per_call < 1e-3, f"publish took {1e3 * per_call:.3f} ms per call with no client"
    results = json.loads(_get(server.url + "/api/results")[2])
    assert [r["volume"] for r in results["records"]] == list(range(1, 1001))


def test_a_stalled_page_is_cut_off_instead_of_blocking_or_growing_memory():
    display = DisplayServer(port=0, client_queue=100)
    display.start()
    n, padding = 3000, "x" * 4000  # ~12 MB: more than the socket buffers can absorb

    async def stalled_client():
        # reads the snapshot, then nothing while the engine publishes
        async with websockets.connect(display.url.replace("http", "ws") + "/ws", max_queue=1,
                                      close_timeout=0.5) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            t0 = time.perf_counter()
            for v in range(1, n + 1):
                display.publish({"volume": v, "status": "ok", "feedback": 0.1, "message": padding})
            elapsed = time.perf_counter() - t0
            await asyncio.sleep(0.3)
            received = []
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    received.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["record"]["volume"])
            return elapsed, received

    try:
        elapsed, received = asyncio.run(stalled_client())
        stored = display.results()["records"]
    finally:
        display.stop()
    assert elapsed / n < 1e-3, f"publish slowed to {1e3 * elapsed / n:.3f} ms with a stalled page"
    # the page got a gap-free prefix, then was disconnected (it reconnects for a fresh snapshot)
    assert 0 < len(received) < n and received == list(range(1, len(received) + 1))
    assert len(stored) == n  # the history itself is complete


def test_history_is_bounded():
    display = DisplayServer(port=0, max_history=50)
    display.start()
    try:
        for v in range(1, 201):
            display.publish({"volume": v, "status": "ok", "feedback": 0.3})
        records = json.loads(_get(display.url + "/api/results")[2])["records"]
    finally:
        display.stop()
    assert [r["volume"] for r in records] == list(range(151, 201))


def test_pages_and_assets_are_served_locally(server):
    for path, kind in [("/", "text/html"), ("/operator", "text/html"), ("/static/feed.js", "javascript"),
                       ("/static/participant.js", "javascript"), ("/static/operator.js", "javascript"),
                       ("/static/operator.css", "text/css"), ("/static/participant.css", "text/css")]:
        status, ctype, body = _get(server.url + path)
        assert status == 200 and kind in ctype, (path, ctype)
        # offline at the scanner: nothing may come from another host
        local = body.replace(b"http://www.w3.org/2000/svg", b"")
        assert b"http://" not in local and b"https://" not in local and b"//cdn" not in local, path


def test_stop_is_clean_and_publish_still_records_afterwards():
    display = DisplayServer(port=0)
    display.start()

    async def client():
        async with websockets.connect(display.url.replace("http", "ws") + "/ws") as ws:
            await asyncio.wait_for(ws.recv(), 5)
            start = time.perf_counter()
            await asyncio.to_thread(display.stop)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return time.perf_counter() - start

    assert asyncio.run(client()) < 4
    display.publish({"volume": 1, "status": "ok", "feedback": 0.2})
    assert display.results()["records"][0]["volume"] == 1
    display.stop()  # idempotent


def test_bad_run_info_and_levels_are_named(server):
    with pytest.raises(BadInputError, match="n_volumes"):
        server.set_run_info({"n_volumes": -3})
    with pytest.raises(BadInputError, match=r"blocks\[0\]"):
        server.set_run_info({"blocks": [{"onset": 0}]})
    with pytest.raises(BadInputError, match="level"):
        server.message("x", level="loud")
    with pytest.raises(BadInputError, match="dict"):
        server.publish([1, 2])
    busy = DisplayServer(port=server.port)
    with pytest.raises(BadInputError, match="cannot listen"):
        busy.start()
