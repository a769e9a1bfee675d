"""Quiet faults, arranged deterministically with the connection seam (`nbscribe.testing`).

A service that goes silent, sends that block, a Termination that never comes, a wedged reader,
a rollover whose old session hangs: each is scripted at an exact frame, and the tests wait on
conditions with deadlines, never on a sleep. The audio numbers its frames (every sample of
frame k is k), so the service knows exactly which audio it received.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from nbscribe import ArraySource, Transcriber
from nbscribe.journal import load_session
from nbscribe.testing import FakeConnection, FakeService, Script

from .test_faults import KEY, check_timeline, numbered_audio
from .waiting import wait_until

FAST = {"ping_interval": 0.1, "liveness_timeout": 0.6, "terminate_timeout": 1.0}


class Numbered(Script):
    """A final turn per 10 frames it receives, naming them (``fA-B``); ``faults[i](conn, n)``
    runs on connection i after its n-th frame."""

    def __init__(self, faults: dict | None = None, expires_in: float = 10800,
                 answer_terminate: bool = True) -> None:
        self.faults = faults or {}
        self.expires_in = expires_in
        self.answer_terminate = answer_terminate
        self.frames: dict[int, list[int]] = {}  # frames received, per connection index
        self.finals: list[str] = []
        self.index: dict[int, int] = {}

    def on_open(self, conn: FakeConnection) -> None:
        self.index[id(conn)] = len(self.index)
        self.frames[self.index[id(conn)]] = []
        super().on_open(conn)
        self.expires_in = 10800  # only the first server session expires early

    def on_audio(self, conn: FakeConnection, data: bytes) -> None:
        i = self.index[id(conn)]
        frames = self.frames[i]
        frames.append(int(np.frombuffer(data, "<i2")[0]))
        if len(frames) % 10 == 0:
            self._final(conn, frames, len(frames) - 10, len(frames))
        fault = self.faults.get(i)
        if fault is not None:
            fault(conn, len(frames))

    def on_terminate(self, conn: FakeConnection) -> None:
        if not self.answer_terminate:
            return
        frames = self.frames[self.index[id(conn)]]
        done = len(frames) - len(frames) % 10
        if len(frames) > done:
            self._final(conn, frames, done, len(frames))
        super().on_terminate(conn)

    def _final(self, conn: FakeConnection, frames: list[int], a: int, b: int) -> None:
        text = f"f{frames[a]}-{frames[b - 1]}"
        order = a // 10
        words = [{"start": a * 50, "end": b * 50, "text": text, "confidence": 0.9,
                  "word_is_final": True}]
        conn.send({"type": "Turn", "turn_order": order, "turn_is_formatted": True,
                   "end_of_turn": True, "transcript": text, "end_of_turn_confidence": 1.0,
                   "words": words, "utterance": text})
        self.finals.append(text)

    def answered(self) -> set[int]:
        """Frames received by connections that were not silent when they received them."""
        return {f for frames in self.frames.values() for f in frames}


def at_frame(n: int, action):
    return lambda conn, count: action(conn) if count == n else None


def covered(session) -> set[int]:
    out: set[int] = set()
    for text in session.turns.text:
        a, b = map(int, text[1:].split("-"))
        out |= set(range(a, b + 1))
    return out


def nbscribe_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("nbscribe-")
            and not t.name.startswith("nbscribe-server")}


def test_a_service_that_goes_silent_mid_turn_is_replaced_and_nothing_is_lost(tmp_path):
    n = 120  # 6 s; the service stops answering at 2.75 s, mid-turn (after frame 55)
    script = Numbered({0: at_frame(55, lambda c: c.go_silent())})
    service = FakeService(script)
    tr = Transcriber(ArraySource(numbered_audio(n), 16000, realtime=True), api_key=KEY,
                     connector=service, out_dir=tmp_path, **FAST)
    tr.start()
    assert tr.wait(60)
    session = tr.stop()
    assert tr.error is None, tr.error
    assert tr.reconnects == 1 and len(service.connections) == 2
    silent = service.connections[0]
    # detected within the liveness timeout (plus a reader tick), not by a Turn that never came
    lost_at = session.interruptions[0]["at"]
    assert "sent nothing, not even a pong" in session.interruptions[0]["reason"]
    assert lost_at - 55 * 0.05 <= FAST["liveness_timeout"] + 0.5
    # every audio frame reached a server session that answered, and a final turn covers it
    assert covered(session) == set(range(1, n + 1))
    assert script.answered() >= set(range(1, n + 1))
    assert sorted(session.turns.text) == sorted(script.finals)
    check_timeline(session)
    assert session.gaps == []
    assert silent.closed.is_set()
    again = load_session(tmp_path)
    assert again.interruptions == session.interruptions
    print(f"\n[liveness] silent at 2.75 s; lost at {lost_at:.2f} s of audio "
          f"(liveness_timeout {FAST['liveness_timeout']} s); "
          f"{session.interruptions[0]['resent_seconds']:.2f} s resent; no gap")


def test_sends_that_block_count_as_a_dead_connection():
    # The service stops reading (its socket buffer is full): with pings off, only the send
    # deadline can notice.
    script = Numbered({0: at_frame(30, lambda c: c.go_silent(stop_reading=True))})
    service = FakeService(script, send_timeout=0.5)
    tr = Transcriber(ArraySource(numbered_audio(80), 16000, realtime=True), api_key=KEY,
                     connector=service, ping_interval=0, liveness_timeout=0,
                     terminate_timeout=1.0)
    tr.start()
    assert tr.wait(60)
    session = tr.stop()
    assert tr.error is None, tr.error
    assert tr.reconnects == 1
    assert "could not be sent for 0.5 s" in session.interruptions[0]["reason"]
    assert covered(session) == set(range(1, 81))
    check_timeline(session)


def test_liveness_does_not_drop_a_quiet_but_healthy_service():
    # Silence from the service (no turns) for far longer than the liveness timeout: the
    # pongs keep the connection alive.
    service = FakeService(Script())
    tr = Transcriber(ArraySource(numbered_audio(60), 16000, realtime=True), api_key=KEY,
                     connector=service, **FAST)
    tr.start()
    assert tr.wait(30)
    tr.stop()
    assert tr.error is None and tr.reconnects == 0
    assert service.connections[0].pings >= 5


def test_stop_when_termination_never_comes_returns_within_its_budget(tmp_path, monkeypatch):
    saves = []
    from nbscribe.session import Session

    real_save = Session.save
    monkeypatch.setattr(Session, "save", lambda self, *a, **k: (saves.append(1),
                                                                 real_save(self, *a, **k)))
    script = Numbered(answer_terminate=False)
    service = FakeService(script)
    before = nbscribe_threads()
    tr = Transcriber(ArraySource(numbered_audio(2000), 16000, realtime=True), api_key=KEY,
                     connector=service, out_dir=tmp_path, terminate_timeout=30,
                     ping_interval=0.1, liveness_timeout=60)
    tr.start()
    assert service.wait_for(lambda: len(script.finals) >= 2)
    t0 = time.monotonic()
    session = tr.stop(timeout=2.0)
    took = time.monotonic() - t0
    assert took < 2.5, took
    assert nbscribe_threads() - before == set()  # every thread it started has ended
    tr.stop(timeout=2.0)  # idempotent: saved once
    assert saves == [1]
    assert (tmp_path / "session.json").exists()
    assert set(script.finals) <= set(session.turns.text)
    assert service.connections[0].messages[-1] == {"type": "Terminate"}
    print(f"\n[stop] no Termination: stop(timeout=2.0) returned in {took:.2f} s, "
          "threads joined, saved once")


def test_stop_with_a_wedged_reader_returns_within_its_budget():
    script = Numbered(answer_terminate=False)
    service = FakeService(script)
    before = nbscribe_threads()
    tr = Transcriber(ArraySource(numbered_audio(2000), 16000, realtime=True), api_key=KEY,
                     connector=service, terminate_timeout=30, ping_interval=0,
                     liveness_timeout=0)
    tr.start()
    assert service.wait_for(lambda: len(script.finals) >= 1)
    conn = service.connections[0]
    conn.hold("recv")  # the reader blocks inside recv and never comes out by itself
    assert conn.reached["recv"].wait(5)
    t0 = time.monotonic()
    tr.stop(timeout=1.5)
    took = time.monotonic() - t0
    assert took < 2.0, took
    assert nbscribe_threads() - before == set()
    assert tr.state == "stopped"
    print(f"\n[stop] wedged reader: stop(timeout=1.5) returned in {took:.2f} s, threads joined")


def test_rollover_never_stalls_capture_on_the_old_session():
    # The old session expires; its Terminate is held (a wedged old connection). The pump
    # must go on sending to the new session meanwhile.
    script = Numbered(expires_in=1.0)
    service = FakeService(script)
    tr = Transcriber(ArraySource(numbered_audio(100), 16000, realtime=True), api_key=KEY,
                     connector=service, rollover_seconds=0.5, **FAST)
    tr.start()
    assert service.wait_for(lambda: len(service.connections) >= 1)
    old = service.connections[0]
    old.hold("send_text")  # the old connection's Terminate gets stuck
    assert service.wait_for(lambda: len(service.connections) >= 2, 10)
    new = service.connections[1]
    assert old.reached["send_text"].wait(5)
    got = len(new.audio)
    # while the old connection is stuck, the new one keeps getting audio
    assert service.wait_for(lambda: len(new.audio) >= got + 20, 5)
    assert not old.closed.is_set()  # still stuck
    old.release("send_text")
    assert tr.wait(30)
    session = tr.stop()
    assert tr.error is None
    flat = [f for frames in script.frames.values() for f in frames]
    assert sorted(flat) == list(range(1, 101))  # contiguous: nothing lost, nothing twice
    check_timeline(session)


def test_every_event_reaches_listeners_on_one_thread_begin_included():
    script = Numbered({0: at_frame(25, lambda c: c.drop())})
    service = FakeService(script)
    seen: list[tuple[str, str]] = []
    tr = Transcriber(ArraySource(numbered_audio(60), 16000, realtime=True), api_key=KEY,
                     connector=service, **FAST)
    tr.on(lambda e: seen.append((type(e).__name__, threading.current_thread().name)))
    tr.start()
    assert tr.wait(30)
    tr.stop()
    assert [k for k, _ in seen].count("Begin") == 2  # one per connection
    assert seen[0][0] == "Begin"
    assert {name for _, name in seen} == {"nbscribe-events"}


def test_cleanups_all_run_when_one_raises(tmp_path):
    class BadClose(ArraySource):
        def close(self):
            super().close()
            raise RuntimeError("close failed")

    service = FakeService(Numbered())
    tr = Transcriber(BadClose(numbered_audio(30), 16000, realtime=True), api_key=KEY,
                     connector=service, out_dir=tmp_path, **FAST)
    tr.start()
    assert tr.wait(30)
    session = tr.stop()
    conn = service.connections[0]
    assert conn.messages[-1] == {"type": "Terminate"}  # the connection was still closed
    assert conn.closed.is_set()
    import soundfile as sf

    assert sf.info(tmp_path / "audio.wav").duration == pytest.approx(1.5, abs=0.06)
    assert len(session) == 3


# -- the same fault on real sockets ----------------------------------------------------------


def test_cli_survives_a_network_that_goes_silent_mid_turn(tmp_path):
    """The issue's case: a 12 s stream whose service stops answering at 5 s, default settings.

    Real WebSocket server, real client, and a proxy that swallows everything from 5 s on
    (no close, no pong). The CLI must notice, reconnect, resend, and exit 0 with everything.
    """
    import json
    import subprocess
    import sys

    import soundfile as sf

    from .netfaults import BlackholeProxy
    from .scripted_server import ScriptedServer
    from .test_faults import Numbered as RealNumbered

    n = 240
    wav = tmp_path / "numbered.wav"
    sf.write(wav, numbered_audio(n), 16000, subtype="PCM_16")
    script = RealNumbered([])
    out = tmp_path / "out"
    with ScriptedServer(script) as server, BlackholeProxy(server.port) as proxy:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbscribe.cli", "transcribe", "--file", str(wav), "--url",
             proxy.url, "--api-key", KEY, "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: proc.poll() is not None or (
            script.received and len(script.received[0]) >= 105), 30, 0.005)  # 5.25 s: mid-turn
        assert proc.poll() is None
        proxy.blackhole(0)
        silent_at = time.monotonic()
        _stdout, stderr = proc.communicate(timeout=90)
        reconnected_at = server.sessions[1].opened_at if len(server.sessions) > 1 else None
    assert proc.returncode == 0, stderr
    assert reconnected_at is not None
    detected = reconnected_at - silent_at
    assert detected < 10.0, detected
    saved = json.loads((out / "session.json").read_text())
    texts = [t["text"] for t in saved["turns"]]
    got = set()
    for text in texts:
        a, b = map(int, text[1:].split("-"))
        got |= set(range(a, b + 1))
    assert got == set(range(1, n + 1))  # every audio second is in a final turn
    assert set(texts) <= set(script.finals)
    assert saved["gaps"] == []
    assert len(saved["interruptions"]) == 1
    assert "1 connection lost and replaced" in stderr
    print(f"\n[liveness, real sockets] silent at 5.25 s; reconnected {detected:.2f} s later "
          f"(ping 2 s, liveness 6 s); {len(texts)} final turns cover all {n * 0.05:.0f} s; "
          "exit 0")
    print("\n".join(line for line in stderr.splitlines() if "replaced" in line))


def test_a_real_send_that_cannot_leave_fails_at_its_deadline():
    """WebSocketConnection: a peer that never reads; the socket buffer fills; the send gives
    up at send_timeout instead of blocking forever."""
    import base64
    import hashlib

    import websocket

    from nbscribe.connection import ConnectionLost, WebSocketConnection

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []

    def handshake() -> None:
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        accepted.append(conn)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b": ")[1] for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        # ...and never read again

    t = threading.Thread(target=handshake, daemon=True)
    t.start()
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5,
                                     sockopt=[(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)])
    conn = WebSocketConnection(ws, send_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match=r"could not be sent for 0\.5 s"):
        for _ in range(10_000):  # 16 MB at most; the buffers hold far less
            conn.send_binary(b"\0" * 1600)
    took = time.monotonic() - t0
    conn.close()
    for c in accepted:
        c.close()
    server.close()
    t.join(5)
    assert took < 5.0
