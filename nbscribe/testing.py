"""A scripted stand-in for the streaming service, for deterministic tests.

`FakeService` is a `nbscribe.connection.Connector`: pass it as ``connector=`` to `Transcriber`
or `StreamingClient` and every connection goes to a `FakeConnection` in memory instead of a
socket. A test (or a script object) plays the service's side: it sends messages, closes with a
code, drops the connection, goes silent (no results, no pongs), stops reading (sends block),
and can hold the client's threads at a chosen point (``"recv"``, ``"send_text"`` ...) until it
lets them go, so races are arranged on purpose instead of hoped for with sleeps.

Everything a script does runs synchronously on the client thread that sent the audio or
message, so "go silent after frame 100" happens exactly after frame 100.

Examples
--------
>>> from nbscribe.testing import FakeService, Script
>>> service = FakeService(Script())
>>> tr = Transcriber(ArraySource(audio, 16000), connector=service)   # doctest: +SKIP
"""

from __future__ import annotations

import collections
import json
import struct
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from .connection import ConnectionLost, Opcode
from .events import Begin, ErrorEvent, Termination
from .messages import encode

__all__ = ["FakeConnection", "FakeService", "Script"]


class Script:
    """The service's behaviour; override the hooks. By default a polite, empty service.

    ``on_open`` sends ``Begin``; ``on_text`` answers ``Terminate`` with ``Termination`` and a
    normal close; ``on_audio`` does nothing.
    """

    #: seconds until the server session expires, as ``Begin.expires_at`` says
    expires_in: float = 10800

    def on_open(self, conn: FakeConnection) -> None:
        """Run when the client connects (send ``Begin``, or refuse)."""
        conn.send(encode(Begin(str(uuid.uuid4()), int(time.time() + self.expires_in))))

    def on_audio(self, conn: FakeConnection, data: bytes) -> None:
        """Run for every audio chunk the client sends."""

    def on_text(self, conn: FakeConnection, message: dict[str, Any]) -> None:
        """Run for every JSON message the client sends."""
        if message.get("type") == "Terminate":
            self.on_terminate(conn)

    def on_terminate(self, conn: FakeConnection) -> None:
        """Run for ``Terminate``: send ``Termination`` and close normally."""
        conn.send(encode(Termination(conn.audio_seconds, conn.audio_seconds)))
        conn.close_with(1000)


class FakeConnection:
    """One connection: the client's `Connection` on one side, the service's controls on the other.

    Attributes
    ----------
    query : dict of str to str
        The query parameters the client connected with.
    headers : dict of str to str
        Its request headers.
    audio : list of bytes
        Audio chunks received, in order (only while the service reads).
    messages : list of dict
        JSON messages received.
    pings : int
        Pings received (each answered with a pong unless silent).
    """

    def __init__(self, service: FakeService, url: str, headers: list[str]) -> None:
        self.service = service
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self.query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        self.headers = dict(h.split(": ", 1) for h in headers)
        self.audio: list[bytes] = []
        self.messages: list[dict[str, Any]] = []
        self.pings = 0
        self.silent = False
        self.reading = True
        self._inbox: collections.deque[tuple[Opcode, bytes] | None] = collections.deque()
        self._cond = threading.Condition()
        self._aborted = False
        self._holds: dict[str, threading.Event] = {}
        self.reached: dict[str, threading.Event] = collections.defaultdict(threading.Event)
        self.closed = threading.Event()  # the client closed its end
        self.silent_since: float | None = None

    @property
    def audio_seconds(self) -> float:
        """Seconds of PCM16 16 kHz audio received."""
        return sum(map(len, self.audio)) / 32000

    # -- the service's side -----------------------------------------------------------------

    def send(self, message: dict[str, Any] | str) -> None:
        """Send a text message to the client."""
        text = message if isinstance(message, str) else json.dumps(message)
        self._push((Opcode.TEXT, text.encode()))

    def close_with(self, code: int, reason: str = "") -> None:
        """Close the connection with a close code (after what was sent before)."""
        self._push((Opcode.CLOSE, struct.pack("!H", code) + reason.encode()))

    def error(self, code: int, message: str = "injected") -> None:
        """Send an ``Error`` message and close with its code, as the service does."""
        self.send(encode(ErrorEvent(code, message)))
        self.close_with(code)

    def drop(self) -> None:
        """Break the connection without a close frame (a reset)."""
        self._push(None)

    def go_silent(self, stop_reading: bool = False) -> None:
        """Send nothing more, answer no pings; with `stop_reading`, sends block too."""
        with self._cond:
            self.silent = True
            self.silent_since = time.monotonic()
            self.reading = not stop_reading
            self._cond.notify_all()

    def hold(self, point: str) -> None:
        """Block client threads that reach `point` until `release` (or an abort).

        Points: ``"recv"``, ``"send"`` (any send), ``"send_binary"``, ``"send_text"``,
        ``"ping"``.
        """
        self._holds[point] = threading.Event()

    def release(self, point: str) -> None:
        """Let threads held at `point` go on."""
        gate = self._holds.pop(point, None)
        if gate is not None:
            gate.set()

    def _push(self, item: tuple[Opcode, bytes] | None) -> None:
        with self._cond:
            self._inbox.append(item)
            self._cond.notify_all()

    def _gate(self, point: str) -> None:
        gate = self._holds.get(point)
        if gate is None:
            return
        self.reached[point].set()
        while not gate.wait(0.01):
            if self._aborted:
                raise ConnectionLost("the connection was aborted")

    # -- the client's side (nbscribe.connection.Connection) ---------------------------------

    def recv(self, timeout: float | None) -> tuple[Opcode, bytes] | None:
        """Return the next frame the service sent, or ``None`` after `timeout` seconds."""
        self._gate("recv")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._inbox and not self._aborted:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if self._aborted:
                raise ConnectionLost("the connection was aborted")
            item = self._inbox.popleft()
        if item is None:
            raise ConnectionLost("connection reset by the service")
        return item

    def _deliver(self, handle: Callable[[], None], point: str) -> None:
        if self._aborted:
            raise ConnectionLost("the connection was aborted")
        self._gate("send")
        self._gate(point)
        with self._cond:
            if not self.reading:  # a full socket buffer: block until aborted or the deadline
                deadline = time.monotonic() + self.service.send_timeout
                while not self._aborted and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                raise ConnectionLost(
                    "the connection was aborted" if self._aborted else
                    f"a message could not be sent for {self.service.send_timeout:g} s")
        if not self.silent:
            handle()

    def send_binary(self, data: bytes) -> None:
        """Receive an audio chunk (the script's `Script.on_audio` runs here)."""
        def handle() -> None:
            self.audio.append(bytes(data))
            self.service.script.on_audio(self, data)
        self._deliver(handle, "send_binary")

    def send_text(self, text: str) -> None:
        """Receive a JSON message (the script's `Script.on_text` runs here)."""
        def handle() -> None:
            message = json.loads(text)
            self.messages.append(message)
            self.service.script.on_text(self, message)
        self._deliver(handle, "send_text")

    def ping(self) -> None:
        """Receive a ping; answer with a pong unless silent."""
        def handle() -> None:
            self.pings += 1
            self._push((Opcode.PONG, b""))
        self._deliver(handle, "ping")

    def abort(self) -> None:
        """Wake every blocked client thread; the connection is dead from now on."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def close(self) -> None:
        """Close the client's end (its reader does this at its end)."""
        self.abort()
        self.closed.set()


class FakeService:
    """A `nbscribe.connection.Connector` whose connections run a `Script` in memory.

    Parameters
    ----------
    script : Script, optional
        The behaviour of every connection (default: a polite, empty service).
    send_timeout : float
        How long a send blocks on a connection that stopped reading before it fails.
    """

    def __init__(self, script: Script | None = None, send_timeout: float = 10.0) -> None:
        self.script = script or Script()
        self.send_timeout = send_timeout
        self.connections: list[FakeConnection] = []
        self._cond = threading.Condition()

    def __call__(self, url: str, headers: list[str], timeout: float) -> FakeConnection:
        """Open a connection (what `StreamingClient.connect` calls)."""
        conn = FakeConnection(self, url, headers)
        with self._cond:
            self.connections.append(conn)
            self._cond.notify_all()
        self.script.on_open(conn)
        return conn

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until `condition()` is true (polled); return whether it became true in time."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True
