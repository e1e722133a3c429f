"""Send each volume's feedback record to a stimulus program (PsychoPy, Presentation...) as a JSON line.

The wire format is one JSON object per record, encoded in UTF-8 and ended by ``"\\n"``:

* UDP: one datagram per record (the datagram holds exactly one line);
* TCP: a stream of newline-delimited JSON (read it line by line).

The object holds every key of the record as the engine published it (``volume``, ``status``,
``feedback``, ``block``, ``roi``, ``fd``, ``latency_ms``, ``t_ready``, ``t_feedback``, ``message``,
``roi_<name>``...). Values that JSON cannot hold become ``null``: NaN and infinities (a volume without
feedback has ``"feedback": null``), NumPy scalars become plain numbers, arrays become lists.

Sending never blocks the caller: UDP datagrams leave from a non-blocking socket, and TCP records go
through a bounded queue to a background thread that connects lazily, reconnects at most once per
``reconnect_interval`` seconds, and drops records (with one warning per outage) while the peer is gone.
Stale feedback is worthless to a participant, so nothing is buffered for a later connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from theramark.errors import BadInputError

__all__ = ["FeedbackSender", "jsonable", "record_to_json"]

log = logging.getLogger("theramark.realtime.display")


def jsonable(value: Any) -> Any:
    """Return ``value`` made of plain JSON types, with non-finite floats as ``None``.

    Parameters
    ----------
    value : Any
        A record value: number, string, NumPy scalar or array, list, tuple or mapping of these.

    Returns
    -------
    Any
        The same content made of ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``.

    Raises
    ------
    BadInputError
        When a value has a type JSON cannot represent (named in the message).
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    raise BadInputError(f"cannot send a value of type {type(value).__name__} ({value!r:.80}) as JSON; "
                        "expected numbers, strings, lists or mappings")


def record_to_json(record: Mapping[str, Any]) -> str:
    """Encode one record as the documented JSON line (ending in ``"\\n"``).

    Parameters
    ----------
    record : mapping
        One volume's record (see the module docstring).

    Returns
    -------
    str
        Compact JSON, one line, newline-terminated.

    Examples
    --------
    >>> record_to_json({"volume": 3, "feedback": float("nan"), "block": "regulate"})
    '{"volume":3,"feedback":null,"block":"regulate"}\\n'
    """
    if not isinstance(record, Mapping):
        raise BadInputError(f"a feedback record must be a mapping (dict), got {type(record).__name__}")
    return json.dumps(jsonable(record), separators=(",", ":"), allow_nan=False) + "\n"


def _check_address(name: str, address: Any) -> tuple[str, int] | None:
    if address is None:
        return None
    try:
        host, port = address
        port = int(port)
    except (TypeError, ValueError):
        raise BadInputError(f"FeedbackSender {name}= must be a (host, port) pair, got {address!r}") from None
    if not isinstance(host, str) or not 0 < port < 65536:
        raise BadInputError(f"FeedbackSender {name}= must be a (host: str, port: 1-65535) pair, "
                            f"got {address!r}")
    return host, port


class FeedbackSender:
    """Send feedback records as JSON lines over UDP and/or TCP without ever blocking the caller.

    Parameters
    ----------
    udp : (host, port) or None
        Where to send one datagram per record.
    tcp : (host, port) or None
        Where to stream newline-delimited JSON. The connection is opened on the first record and
        reopened after a failure, at most once per ``reconnect_interval``.
    queue_size : int
        TCP records waiting for the background thread; when full, new records are dropped.
    reconnect_interval : float
        Seconds between TCP connection attempts while the peer is unreachable.
    connect_timeout : float
        Seconds a TCP connection attempt may take (spent in the background thread).
    on_warning : callable, optional
        Called with a text when records start being dropped (e.g. ``DisplayServer.message``), in
        addition to a ``logging`` warning on the ``theramark.realtime.display`` logger.

    Attributes
    ----------
    n_sent : int
        Records handed to the network (UDP datagrams plus TCP lines).
    n_dropped : int
        Records that could not be delivered.

    Examples
    --------
    >>> sender = FeedbackSender(udp=("127.0.0.1", 5005))
    >>> sender.send({"volume": 1, "feedback": 0.4, "block": "regulate"})
    >>> sender.close()
    """

    def __init__(self, udp: tuple[str, int] | None = None, tcp: tuple[str, int] | None = None, *,
                 queue_size: int = 1000, reconnect_interval: float = 1.0, connect_timeout: float = 1.0,
                 on_warning: Callable[[str], Any] | None = None):
        self.udp = _check_address("udp", udp)
        self.tcp = _check_address("tcp", tcp)
        self.reconnect_interval = float(reconnect_interval)
        self.connect_timeout = float(connect_timeout)
        self.on_warning = on_warning
        self.n_sent = 0
        self.n_dropped = 0
        self._lock = threading.Lock()
        self._closed = False
        self._udp_sock: socket.socket | None = None
        if self.udp is not None:
            family = socket.AF_INET6 if ":" in self.udp[0] else socket.AF_INET
            self._udp_sock = socket.socket(family, socket.SOCK_DGRAM)
            self._udp_sock.setblocking(False)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=int(queue_size))
        self._thread: threading.Thread | None = None
        self._outages: set[str] = set()  # channels in trouble: one warning per outage, not per record
        if self.tcp is not None:
            self._thread = threading.Thread(target=self._tcp_worker, name="theramark-feedback-tcp",
                                            daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ caller side
    def send(self, record: Mapping[str, Any]) -> None:
        """Send one record; returns at once whatever happens on the network.

        Parameters
        ----------
        record : mapping
            One volume's record; encoded by :func:`record_to_json`.
        """
        if self._closed:
            raise RuntimeError("FeedbackSender.send() called after close()")
        data = record_to_json(record).encode("utf-8")
        if self._udp_sock is not None:
            try:
                self._udp_sock.sendto(data, self.udp)
                self._count(sent=1)
                self._recovered("udp")
            except OSError as error:  # full buffer, no route, network down
                self._warn("udp", f"UDP feedback to {self.udp[0]}:{self.udp[1]} failed ({error}); "
                                  "dropping records")
                self._count(dropped=1)
        if self._thread is not None:
            try:
                self._queue.put_nowait(data)
            except queue.Full:
                self._warn("tcp", f"TCP feedback queue to {self.tcp[0]}:{self.tcp[1]} is full; "
                                  "dropping records")
                self._count(dropped=1)

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then close the sockets."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            while True:  # make room for the end marker: a full queue means the peer is stuck anyway
                try:
                    self._queue.put_nowait(None)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
                        self._count(dropped=1)
            self._thread.join(timeout)
        if self._udp_sock is not None:
            self._udp_sock.close()

    def __enter__(self) -> FeedbackSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _count(self, sent: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self.n_sent += sent
            self.n_dropped += dropped

    def _warn(self, channel: str, text: str) -> None:
        with self._lock:
            if channel in self._outages:
                return
            self._outages.add(channel)
        log.warning(text)
        if self.on_warning is not None:
            try:
                self.on_warning(text)
            except Exception:  # a broken callback must not stop feedback
                log.exception("FeedbackSender on_warning callback failed")

    def _recovered(self, channel: str) -> None:
        with self._lock:
            if channel not in self._outages:
                return
            self._outages.discard(channel)
        log.info("%s feedback output works again", channel.upper())

    def _tcp_worker(self) -> None:
        conn: socket.socket | None = None
        next_attempt = 0.0
        while True:
            data = self._queue.get()
            if data is None:
                break
            if conn is None:
                now = time.monotonic()
                if now < next_attempt:
                    self._count(dropped=1)
                    continue
                try:
                    conn = socket.create_connection(self.tcp, timeout=self.connect_timeout)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as error:
                    next_attempt = now + self.reconnect_interval
                    self._warn("tcp", f"TCP feedback receiver {self.tcp[0]}:{self.tcp[1]} unreachable "
                                      f"({error}); dropping records until it is back")
                    self._count(dropped=1)
                    continue
            try:
                conn.sendall(data)
                self._count(sent=1)
                self._recovered("tcp")
            except OSError as error:  # closed, reset or stuck past the timeout: drop, reconnect later
                conn.close()
                conn = None
                next_attempt = time.monotonic() + self.reconnect_interval
                self._warn("tcp", f"TCP feedback receiver {self.tcp[0]}:{self.tcp[1]} went away "
                                  f"({error}); dropping records until it is back")
                self._count(dropped=1)
        if conn is not None:
            conn.close()
