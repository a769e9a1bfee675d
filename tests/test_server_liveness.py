"""The local server notices clients that vanished, and a session that ends leaves nothing running.

These tests run the real server (`LocalServer`, real WebSockets on loopback) with a fake turn
engine in place of Whisper: it counts the decodes a session submits and can hold one "running"
in the pool until the test lets it finish. The clients are websocket-client ``WebSocket`` objects
driven by hand: one answers pings only while something calls ``recv``, so a client that stops
reading is a client that stops answering pings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import websocket

from nbscribe.events import Event, Turn
from nbscribe.server import LocalServer, ServerConfig
from nbscribe.server import app as app_module

from .waiting import wait_until

CHUNK = b"\x00\x01" * 800  # 50 ms of PCM16 at 16 kHz: 1600 bytes
DEFAULTS = ServerConfig()


class FakeModel:
    """Stands in for the shared WhisperEngine (only `describe` is used outside the engine)."""

    def describe(self) -> str:
        return "fake engine"


class FakeTurnEngine:
    """Records every engine call of one session; `feed` waits for the test's gate."""

    def __init__(self, fakes: Fakes) -> None:
        self.fakes = fakes
        self.calls: list[tuple[str, int]] = []  # (method, bytes fed)
        self.started = threading.Event()  # a call began in the pool
        self.returned = threading.Event()  # a call finished

    def _call(self, name: str, size: int = 0) -> list[Event]:
        self.calls.append((name, size))
        self.started.set()
        try:
            assert self.fakes.gate.wait(60), "the test never opened the gate"
            return list(self.fakes.reply)
        finally:
            self.returned.set()

    def feed(self, data: bytes, partials: bool = True) -> list[Event]:
        return self._call("feed", len(data))

    def force_endpoint(self) -> list[Event]:
        return self._call("force_endpoint")

    def finish(self) -> list[Event]:
        return self._call("finish")

    def update(self, params: object) -> None:
        self.calls.append(("update", 0))


@dataclasses.dataclass
class Fakes:
    gate: threading.Event = dataclasses.field(default_factory=threading.Event)
    reply: list[Event] = dataclasses.field(default_factory=list)
    sessions: list[FakeTurnEngine] = dataclasses.field(default_factory=list)


@pytest.fixture
def fakes(monkeypatch) -> Iterator[Fakes]:
    state = Fakes()
    state.gate.set()

    def make(engine: object, params: object, settings: object = None,
             speakers: object = None) -> FakeTurnEngine:
        state.sessions.append(FakeTurnEngine(state))
        return state.sessions[-1]

    monkeypatch.setattr(app_module, "TurnEngine", make)
    yield state
    state.gate.set()  # never leave a pool thread waiting


@pytest.fixture
def server_log(caplog) -> Callable[[str], list[str]]:
    """Return a function listing the server's log messages that contain a string."""
    caplog.set_level(logging.INFO, logger="nbscribe.server.app")
    return lambda text: [r.getMessage() for r in list(caplog.records) if text in r.getMessage()]


@contextlib.contextmanager
def serving(fakes: Fakes, **config) -> Iterator[LocalServer]:
    srv = LocalServer(ServerConfig(port=0, max_rate=None, **config), engine=FakeModel()).start()
    try:
        yield srv
    finally:
        fakes.gate.set()
        srv.stop()




def connect(srv: LocalServer, query: str = "sample_rate=16000") -> websocket.WebSocket:
    ws = websocket.create_connection(f"{srv.url}?{query}", timeout=10)
    first = json.loads(ws.recv())
    assert first["type"] == "Begin", first
    return ws


def finish_session(ws: websocket.WebSocket) -> tuple[list[dict], int | None]:
    """Send Terminate and read until the close; return the messages and the close code."""
    ws.send('{"type": "Terminate"}')
    msgs = []
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return msgs, int.from_bytes(frame.data[:2], "big") if frame.data else None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            msgs.append(json.loads(frame.data))


def read_answering_pings(ws: websocket.WebSocket, pings: int, timeout: float
                         ) -> tuple[int, list[dict], int | None]:
    """Read (answering pings) until `pings` pings came or the server closed; return what came."""
    seen, msgs = 0, []
    deadline = time.monotonic() + timeout
    while seen < pings and time.monotonic() < deadline:
        ws.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            opcode, frame = ws.recv_data_frame(True)  # answers a ping with a pong
        except websocket.WebSocketTimeoutException:
            break
        if opcode == websocket.ABNF.OPCODE_PING:
            seen += 1
        elif opcode == websocket.ABNF.OPCODE_TEXT:
            msgs.append(json.loads(frame.data))
        elif opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return seen, msgs, int.from_bytes(frame.data[:2], "big") if frame.data else None
    return seen, msgs, None


def assert_old_session_stopped_decoding(fakes: Fakes, srv: LocalServer) -> None:
    """The dropped session's running decode finished, and a new session opens and is served.

    The pool has one thread (max_sessions=1) and runs jobs in order: the new session's
    ``finish`` runs after anything the old session might still have submitted, so once it has
    run, the old session's call list is complete.
    """
    old = fakes.sessions[0]
    fakes.gate.set()
    assert old.returned.wait(10)
    ws = connect(srv)
    ws.send_binary(CHUNK)
    msgs, code = finish_session(ws)
    assert code == 1000 and msgs[-1]["type"] == "Termination"
    assert [name for name, _ in fakes.sessions[1].calls] == ["feed", "finish"]
    assert [name for name, _ in old.calls] == ["feed"], old.calls  # nothing after the end
    assert wait_until(lambda: srv.active_sessions == 0, 5)


# -- a client that vanished ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "timeout"),
    [(0.5, 1.0), (DEFAULTS.ping_interval, DEFAULTS.ping_timeout)],
    ids=["fast", "defaults"],
)
def test_a_client_that_stops_answering_pings_is_dropped(fakes, server_log, interval, timeout):
    limit = interval + timeout
    with serving(fakes, max_sessions=1, ping_interval=interval, ping_timeout=timeout) as srv:
        fakes.gate.clear()  # the first decode "runs" until the gate opens: audio queues behind
        ws = connect(srv)  # from here on this client never reads, so it never answers a ping
        silent_since = time.monotonic()
        ws.send_binary(CHUNK)
        assert fakes.sessions[0].started.wait(10)
        for _ in range(19):  # queued behind the decode in progress
            ws.send_binary(CHUNK)
        assert wait_until(lambda: srv.active_sessions == 0, limit + 5), "never dropped"
        elapsed = time.monotonic() - silent_since
        print(f"\nno pongs: session dropped {elapsed:.2f} s after the client went silent "
              f"(ping_interval={interval:g} s, ping_timeout={timeout:g} s)")
        assert limit - 0.2 <= elapsed <= limit + 1.5, elapsed
        assert wait_until(lambda: server_log(f"no pong within {timeout:g} s"), 5)
        # its place is free although its decode is still running: a new session opens
        assert_old_session_stopped_decoding(fakes, srv)
        assert fakes.sessions[0].calls == [("feed", len(CHUNK))]  # the queue was never decoded
        ws.shutdown()


@pytest.mark.parametrize("how", ["reset", "fin"])
def test_a_client_that_drops_the_connection_mid_turn_ends_its_session(fakes, server_log, how):
    before = set(threading.enumerate())
    # pings far apart: it is the dropped connection that ends the session, not liveness
    with serving(fakes, max_sessions=1, ping_interval=60, ping_timeout=60) as srv:
        fakes.gate.clear()
        ws = connect(srv)
        for _ in range(10):
            ws.send_binary(CHUNK)
        assert fakes.sessions[0].started.wait(10)
        dropped = time.monotonic()
        if how == "reset":  # RST, as when the process dies
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.sock.close()
        else:  # FIN without a WebSocket close frame
            ws.shutdown()
        assert wait_until(lambda: srv.active_sessions == 0, 5)
        print(f"\nconnection dropped ({how}): session ended after "
              f"{time.monotonic() - dropped:.3f} s")
        assert wait_until(lambda: server_log("client went away"), 5)
        assert_old_session_stopped_decoding(fakes, srv)
    left = lambda: [t.name for t in set(threading.enumerate()) - before if t.is_alive()]  # noqa: E731
    assert wait_until(lambda: not left(), 5), f"threads left running: {left()}"


@pytest.mark.parametrize(
    "config",
    [{"send_timeout": 1.0, "ping_interval": None},
     {"send_timeout": None, "ping_interval": 0.5, "ping_timeout": 1.0}],
    ids=["send_timeout", "ping_through_full_buffers"],
)
def test_a_client_that_stops_reading_cannot_wedge_its_session(fakes, server_log, config):
    # Each decode answers with 8 MB of messages: far more than the socket buffers hold.
    fakes.reply = [Turn(turn_order=0, transcript="x" * 2**20, end_of_turn=False)] * 8
    with serving(fakes, max_sessions=1, **config) as srv:
        ws = connect(srv)
        for _ in range(3):
            ws.send_binary(CHUNK)
        begun = time.monotonic()
        assert wait_until(lambda: srv.active_sessions == 0, 15), "the session is wedged"
        print(f"\nclient not reading ({', '.join(f'{k}={v}' for k, v in config.items())}): "
              f"session dropped after {time.monotonic() - begun:.2f} s")
        expected = "client stopped reading" if config["send_timeout"] else "no pong within"
        assert wait_until(lambda: server_log(expected), 5)
        fakes.reply = []
        ws2 = connect(srv)  # the place is free
        assert finish_session(ws2)[1] == 1000
        ws.shutdown()


def test_stop_does_not_wait_for_a_client_that_stopped_reading(fakes, server_log):
    before = set(threading.enumerate())
    fakes.reply = [Turn(turn_order=0, transcript="x" * 2**20, end_of_turn=False)] * 8
    # no pings, no send bound: only stop() itself can get rid of this connection
    srv = LocalServer(ServerConfig(port=0, max_rate=None, ping_interval=None, send_timeout=None,
                                   close_timeout=1.0), engine=FakeModel()).start()
    try:
        ws = connect(srv)
        ws.send_binary(CHUNK)
        (conn,) = srv._holder["server"].all_connections
        assert wait_until(lambda: conn.transport.get_write_buffer_size() > 2**16, 10)  # paused
        assert srv.active_sessions == 1  # stuck writing
    finally:
        begun = time.monotonic()
        srv.stop()
    elapsed = time.monotonic() - begun
    print(f"\nstop() with a client that stopped reading: {elapsed:.2f} s (close_timeout=1 s)")
    assert elapsed < 3, elapsed
    assert not [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert server_log("did not close within 1 s")
    ws.shutdown()


# -- a client that is there but quiet --------------------------------------------------------


def test_a_quiet_client_that_answers_pings_is_kept(fakes, server_log):
    interval, timeout = 0.2, 0.5
    with serving(fakes, ping_interval=interval, ping_timeout=timeout) as srv:
        ws = connect(srv)
        # no audio at all, for 15 pings: 3 s, over four times interval + timeout
        pings, msgs, code = read_answering_pings(ws, 15, timeout=20)
        assert code is None and pings == 15, (pings, msgs, code)
        assert srv.active_sessions == 1
        msgs, code = finish_session(ws)
        assert code == 1000 and msgs[-1]["type"] == "Termination"
    assert server_log("terminated by the client")
    assert not server_log("no pong")


def test_inactivity_timeout_still_ends_a_quiet_session(fakes, server_log):
    with serving(fakes, ping_interval=0.2, ping_timeout=0.5) as srv:
        ws = connect(srv, "sample_rate=16000&inactivity_timeout=5")
        opened = time.monotonic()
        pings, msgs, code = read_answering_pings(ws, 10_000, timeout=15)
        elapsed = time.monotonic() - opened
        print(f"\ninactivity_timeout=5: Termination after {elapsed:.2f} s ({pings} pings answered)")
        assert code == 1000 and msgs[-1]["type"] == "Termination", (msgs, code)
        assert 5 <= elapsed < 8 and pings >= 20
        assert wait_until(lambda: srv.active_sessions == 0, 5)
    assert server_log("idle for 5 s (inactivity_timeout)")


def test_liveness_settings_are_validated():
    from nbscribe import ConfigError

    ServerConfig(ping_interval=None, ping_timeout=0, send_timeout=None).validate()
    with pytest.raises(ConfigError, match="ping_timeout"):
        ServerConfig(ping_timeout=-1).validate()
    with pytest.raises(ConfigError, match="close_timeout"):
        ServerConfig(close_timeout=0).validate()
