"""The neurofeedback web display: a participant page, an operator page and a live WebSocket feed.

Starlette (routing, static files, WebSockets) served by uvicorn runs in a background thread with its own
asyncio loop, so the engine's thread only hands records over. Both libraries are small, maintained,
pure ASGI, and uvicorn accepts an already-bound socket, which gives ``port=0`` (a free port) without
races.

Routes
------
``/``              participant page (thermometer + instruction; for the scanner projector)
``/operator``      operator page (ROI, feedback, FD and latency traces; missing volumes; messages)
``/ws``            WebSocket: a ``snapshot`` (run info, every record so far, messages) on connect,
                   then one JSON message per ``publish``/``set_run_info``/``message`` call
``/api/results``   JSON: ``{"run": ..., "records": [...], "messages": [...]}``
``/api/run``       JSON: the run info
``/static/...``    the pages' JavaScript and CSS (served locally: the display works offline)

Messages on ``/ws`` are objects with a ``type``: ``snapshot`` (keys ``run``, ``records``,
``messages``), ``record`` (key ``record``), ``run`` (key ``run``) or ``message`` (key ``message``:
``{"text", "level", "time"}``). Every record and message carries ``seq``, a number increasing by one per
published item, so a client can drop what it has already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from importlib import resources
from typing import Any

from theramark.errors import BadInputError
from theramark.realtime.display.sender import jsonable

__all__ = ["DisplayServer"]

log = logging.getLogger("theramark.realtime.display")

#: Default instructions shown on the participant page when the run info gives none for a block.
DEFAULT_INSTRUCTIONS = {"regulate": "Raise the bar", "baseline": "Rest", "rest": "Rest"}

_LEVELS = ("info", "warning", "error")


def _static_dir() -> str:
    return str(resources.files("theramark.realtime.display") / "static")


def _check_run_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the run description and fill the defaults the pages rely on."""
    if not isinstance(info, Mapping):
        raise BadInputError(f"set_run_info() expects a dict, got {type(info).__name__}")
    run = jsonable(dict(info))
    problems = []
    n_volumes = run.get("n_volumes")
    if n_volumes is not None and (not isinstance(n_volumes, int) or isinstance(n_volumes, bool)
                                  or n_volumes < 1):
        problems.append(f"n_volumes: expected a positive integer, got {n_volumes!r}")
    tr = run.get("tr")
    if tr is not None and (not isinstance(tr, (int, float)) or isinstance(tr, bool) or not tr > 0):
        problems.append(f"tr: expected a positive number of seconds, got {tr!r}")
    blocks = run.get("blocks") or []
    if not isinstance(blocks, list):
        problems.append(f"blocks: expected a list of {{onset, duration, trial_type}}, got {blocks!r:.80}")
        blocks = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not {"onset", "duration", "trial_type"} <= set(block):
            problems.append(f"blocks[{i}]: expected keys onset, duration, trial_type, got {block!r:.80}")
    instructions = run.get("instructions") or {}
    if not isinstance(instructions, dict) or not all(isinstance(v, str) for v in instructions.values()):
        problems.append(f"instructions: expected a mapping trial_type -> text, got {instructions!r:.80}")
        instructions = {}
    fd_threshold = run.get("fd_threshold")
    if fd_threshold is not None and (not isinstance(fd_threshold, (int, float)) or not fd_threshold > 0):
        problems.append(f"fd_threshold: expected a positive number of mm, got {fd_threshold!r}")
    if problems:
        raise BadInputError("invalid run info for the neurofeedback display", problems)
    merged = {str(b["trial_type"]): DEFAULT_INSTRUCTIONS[str(b["trial_type"])] for b in blocks
              if isinstance(b, dict) and str(b.get("trial_type")) in DEFAULT_INSTRUCTIONS}
    merged.update(instructions)
    run["instructions"] = merged
    run["blocks"] = blocks
    return run


class DisplayServer:
    """Serve the participant and operator pages and push each volume's record to them as it comes.

    Parameters
    ----------
    host : str
        Interface to listen on. ``"127.0.0.1"`` keeps the display on this computer; use ``"0.0.0.0"``
        to open the pages from another computer on the scanner's network.
    port : int
        TCP port; 0 picks a free one (read it back from :attr:`url`).
    max_history : int
        Records kept for late-joining pages and ``/api/results`` (oldest dropped first): the memory
        bound. 10,000 volumes is over 3 h at TR = 1 s.
    client_queue : int
        Messages a slow page may have waiting; a page further behind is disconnected (it reconnects
        and receives a fresh snapshot), so the server never grows memory or blocks for it.

    Notes
    -----
    :meth:`publish`, :meth:`set_run_info` and :meth:`message` may be called from any thread (the
    engine's). They copy the data to JSON-safe types (NaN becomes ``null``) and hand it to the server's
    loop with ``loop.call_soon_threadsafe``; they never wait for the network. They also work before
    :meth:`start` and after :meth:`stop` (the data is kept for ``/api/results`` and later pages).

    Examples
    --------
    >>> server = DisplayServer(port=0)
    >>> server.start()
    >>> server.set_run_info({"n_volumes": 2, "tr": 2.0, "blocks": [
    ...     {"onset": 0.0, "duration": 4.0, "trial_type": "regulate"}]})
    >>> server.publish({"volume": 1, "status": "ok", "feedback": 0.6, "block": "regulate"})
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, max_history: int = 10_000,
                 client_queue: int = 4096):
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise BadInputError("DisplayServer port must be an integer 0-65535 (0: any free port), "
                                f"got {port!r}")
        if max_history < 1:
            raise BadInputError(f"DisplayServer max_history must be >= 1, got {max_history!r}")
        self.host = host
        self.port = port
        self.max_history = int(max_history)
        self.client_queue = int(client_queue)
        self._records: deque[dict[str, Any]] = deque(maxlen=self.max_history)
        self._messages: deque[dict[str, Any]] = deque(maxlen=1000)
        self._run: dict[str, Any] = {}
        self._seq = 0
        self._seq_lock = threading.Lock()
        # Items are applied to the history on the loop's thread, so a page's snapshot and its
        # registration for live items happen atomically there (no duplicates, no gaps).
        self._state_lock = threading.Lock()
        self._clients: set[asyncio.Queue[str | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # ------------------------------------------------------------------ public API
    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server (the participant page)."""
        if self._socket is None:
            raise RuntimeError("DisplayServer.url is known once start() has returned")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start serving in a background thread; return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("DisplayServer.start() called twice")
        try:  # imported here: the rest of theramark does not need the web stack
            import starlette  # noqa: F401
            import uvicorn
            import websockets  # noqa: F401
        except ImportError as error:
            raise ImportError(f"the neurofeedback display needs starlette, uvicorn and websockets ({error}); "
                              "install them with: pip install starlette uvicorn websockets") from error

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as error:
            sock.close()
            raise BadInputError(f"cannot listen on {self.host}:{self.port} for the display ({error}); "
                                "choose another port, or 0 for any free one") from None
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws="websockets-sansio", timeout_graceful_shutdown=2)
        self._uvicorn = uvicorn.Server(config)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._serve(ready))
            except BaseException as error:  # reported by start() or logged after it
                failure.append(error)
                log.exception("the neurofeedback display stopped with an error")
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="theramark-display", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure or not self._uvicorn.started:
            self.stop()
            raise RuntimeError(f"the neurofeedback display did not start on {self.host}:{self.port}"
                               + (f": {failure[0]}" if failure else ""))

    def stop(self, timeout: float = 5.0) -> None:
        """Close the pages' connections and stop the server thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._shutdown)
            thread.join(timeout)
        self._thread = None
        self._loop = None
        if self._socket is not None:
            self._socket.close()

    def set_run_info(self, info: Mapping[str, Any]) -> None:
        """Describe the run to the pages.

        Parameters
        ----------
        info : mapping
            ``n_volumes`` (int), ``tr`` (s), ``blocks`` (list of ``{onset, duration, trial_type}``, onsets
            in s from the first volume), ``rois`` (names), ``feedback`` (kind, e.g. ``"roi_psc"`` or
            ``"intermittent"``), ``instructions`` (``{trial_type: text}``; "Raise the bar" for
            ``regulate`` and "Rest" for ``baseline``/``rest`` unless given), optionally ``fd_threshold``
            (mm; the operator page draws it, 0.5 mm when absent) and ``feedback_blocks`` (trial types
            in which the participant sees the bar; all when absent). Other keys are passed through.
        """
        run = _check_run_info(info)
        self._hand_over(self._apply_run, run)

    def publish(self, record: Mapping[str, Any]) -> None:
        """Push one volume's record to every page (returns at once; safe from any thread).

        Parameters
        ----------
        record : mapping
            ``volume`` (1-based), ``status`` (``"ok"``, ``"missing"`` or ``"error"``), ``feedback`` (0-1 or
            NaN for none), ``roi``, ``roi_<name>``, ``fd`` (mm), ``block`` (trial type), ``latency_ms``,
            ``t_ready``, ``t_feedback``, ``message``. NaN and NumPy types are converted for JSON.
        """
        if not isinstance(record, Mapping):
            raise BadInputError(f"publish() expects a dict record, got {type(record).__name__}")
        item = jsonable(record)
        item["seq"] = self._next_seq()
        self._hand_over(self._apply_record, item)

    def message(self, text: str, level: str = "warning") -> None:
        """Show a message on the operator page (``level``: ``"info"``, ``"warning"`` or ``"error"``)."""
        if level not in _LEVELS:
            raise BadInputError(f"message level must be one of {', '.join(_LEVELS)}, got {level!r}")
        item = {"text": str(text), "level": level, "time": time.time(), "seq": self._next_seq()}
        self._hand_over(self._apply_message, item)

    def results(self) -> dict[str, Any]:
        """Everything published so far: ``{"run": ..., "records": [...], "messages": [...]}``."""
        with self._state_lock:
            return {"run": dict(self._run), "records": list(self._records), "messages": list(self._messages)}

    # ------------------------------------------------------------------ hand-off to the loop
    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _hand_over(self, apply: Any, item: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(apply, item)
                return
            except RuntimeError:  # the loop closed between the check and the call
                pass
        apply(item)

    def _apply_record(self, record: dict[str, Any]) -> None:
        with self._state_lock:
            self._records.append(record)
        self._broadcast({"type": "record", "record": record})

    def _apply_message(self, item: dict[str, Any]) -> None:
        with self._state_lock:
            self._messages.append(item)
        self._broadcast({"type": "message", "message": item})

    def _apply_run(self, run: dict[str, Any]) -> None:
        with self._state_lock:
            self._run = run
        self._broadcast({"type": "run", "run": run})

    def _broadcast(self, payload: dict[str, Any]) -> None:
        if not self._clients:
            return
        text = json.dumps(payload, separators=(",", ":"))
        for client in list(self._clients):
            if client.qsize() >= self.client_queue:
                # Too slow: stop feeding it; it gets what is queued, then the close, and the page
                # reconnects for a fresh snapshot. The queue's bound is enforced here, so the
                # end marker always fits.
                self._clients.discard(client)
                client.put_nowait(None)
            else:
                client.put_nowait(text)

    # ------------------------------------------------------------------ the server (loop thread)
    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.create_task(self._uvicorn.serve(sockets=[self._socket]))
        while not self._uvicorn.started and not task.done():
            await asyncio.sleep(0.005)
        ready.set()
        await task

    def _shutdown(self) -> None:
        for client in self._clients:
            client.put_nowait(None)
        self._clients.clear()
        self._uvicorn.should_exit = True

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import FileResponse, JSONResponse
        from starlette.routing import Mount, Route, WebSocketRoute
        from starlette.staticfiles import StaticFiles
        from starlette.websockets import WebSocketDisconnect

        static = _static_dir()
        no_cache = {"Cache-Control": "no-store"}

        async def participant(request: Any) -> FileResponse:
            return FileResponse(f"{static}/participant.html", headers=no_cache)

        async def operator(request: Any) -> FileResponse:
            return FileResponse(f"{static}/operator.html", headers=no_cache)

        async def api_results(request: Any) -> JSONResponse:
            return JSONResponse(self.results(), headers=no_cache)

        async def api_run(request: Any) -> JSONResponse:
            with self._state_lock:
                run = dict(self._run)
            return JSONResponse(run, headers=no_cache)

        async def feed(websocket: Any) -> None:
            await websocket.accept()
            client: asyncio.Queue[str | None] = asyncio.Queue()  # bounded by _broadcast
            # No await between the snapshot and the registration: nothing can slip in between.
            snapshot = json.dumps({"type": "snapshot", **self.results()}, separators=(",", ":"))
            self._clients.add(client)

            async def pump() -> None:
                await websocket.send_text(snapshot)
                while (text := await client.get()) is not None:
                    await websocket.send_text(text)

            async def drain() -> None:  # notices the page closing
                with contextlib.suppress(WebSocketDisconnect):
                    while True:
                        await websocket.receive_text()

            tasks = [asyncio.create_task(pump()), asyncio.create_task(drain())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._clients.discard(client)
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await websocket.close()

        routes = [
            Route("/", participant),
            Route("/participant", participant),
            Route("/operator", operator),
            Route("/api/results", api_results),
            Route("/api/run", api_run),
            WebSocketRoute("/ws", feed),
            Mount("/static", app=StaticFiles(directory=static), name="static"),
        ]
        return Starlette(routes=routes)

