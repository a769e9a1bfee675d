"""Fault injection: dropped connections, retryable errors, outages, expiry, kill -9, key hygiene.

The audio carries its own position: every sample of 50 ms frame k is the integer k, so a server
session can tell exactly which frames it received, and a final turn can name them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from nbscribe import ArraySource, Transcriber
from nbscribe.journal import load_session

from .scripted_server import ScriptedServer, begin, send, termination, turn, word
from .waiting import wait_until

KEY = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
FRAME = 800  # samples per 50 ms frame at 16 kHz


def numbered_audio(frames: int) -> np.ndarray:
    """16 kHz mono int16 where every sample of frame k (from 1) equals k."""
    return np.repeat(np.arange(1, frames + 1, dtype=np.int16), FRAME)


class Numbered:
    """A server that sends a final turn per 10 frames it receives, naming them, and fails
    connection i as ``plan[i]`` says: ("ok",), ("drop", n) (TCP dropped after n frames),
    ("error", code, n) (Error frame + close after n frames) or ("refuse", code)."""

    def __init__(self, plan: list[tuple], expires_in: int | None = None) -> None:
        self.plan = plan
        self.expires_in = expires_in
        self.received: list[list[int]] = []  # frame numbers, per connection
        self.finals: list[str] = []  # every final turn text sent, in order
        self.lock = threading.Lock()

    def __call__(self, conn, rec) -> None:
        with self.lock:
            i = len(self.received)
            self.received.append([])
        frames = self.received[i]
        action = self.plan[i] if i < len(self.plan) else ("ok",)
        if action[0] == "refuse":
            send(conn, {"type": "Error", "error_code": action[1], "error": "try later"})
            conn.close(action[1])
            return
        hello = begin()
        if self.expires_in is not None:
            hello["expires_at"] = int(time.time()) + self.expires_in
        send(conn, hello)
        order, done = 0, 0
        while True:
            data = conn.recv()
            if isinstance(data, str):
                rec.texts.append(data)
                if json.loads(data).get("type") == "Terminate":
                    if len(frames) > done:
                        self._final(conn, order, frames, done, len(frames))
                    send(conn, termination())
                    conn.close(1000)
                    return
                continue
            rec.audio.append((time.monotonic(), data))
            frames.append(int(np.frombuffer(data, "<i2")[0]))
            if len(frames) - done == 10:
                self._final(conn, order, frames, done, len(frames))
                order, done = order + 1, len(frames)
            if action[0] == "drop" and len(frames) == action[1]:
                conn.socket.shutdown(socket.SHUT_RDWR)  # no close frame: as a network drop
                return
            if action[0] == "error" and len(frames) == action[2]:
                send(conn, {"type": "Error", "error_code": action[1], "error": "injected"})
                conn.close(action[1])
                return

    def _final(self, conn, order: int, frames: list[int], a: int, b: int) -> None:
        text = f"f{frames[a]}-{frames[b - 1]}"
        send(conn, turn(order, [word(text, a * 50, b * 50)], True, True))
        with self.lock:
            self.finals.append(text)


def check_timeline(session) -> None:
    """Each final 'fA-B' must start where frame A lies on the session timeline."""
    for start, text in zip(session.turns.start, session.turns.text, strict=True):
        first = int(text[1:].split("-")[0])
        assert start == pytest.approx((first - 1) * 0.05), (text, start)


def test_repeated_drops_and_retryable_errors_lose_nothing(tmp_path):
    plan = [("drop", 25), ("error", 1011, 17), ("error", 3005, 33), ("drop", 8), ("ok",)]
    n = 160  # 8 s of audio
    server_script = Numbered(plan)
    with ScriptedServer(server_script) as server:
        tr = Transcriber(ArraySource(numbered_audio(n), 16000, realtime=True), url=server.url,
                         api_key=KEY, out_dir=tmp_path, terminate_timeout=3)
        tr.start()
        assert tr.wait(60)
        session = tr.stop()
    assert tr.error is None, tr.error
    assert tr.reconnects == 4 and len(server_script.received) == 5
    # every frame reached a server session
    got = set().union(*map(set, server_script.received))
    assert got == set(range(1, n + 1))
    # every final turn the servers sent is kept, on one continuous timeline
    assert sorted(session.turns.text) == sorted(server_script.finals)
    check_timeline(session)
    covered = set()
    for text in session.turns.text:
        a, b = map(int, text[1:].split("-"))
        covered |= set(range(a, b + 1))
    assert covered == set(range(1, n + 1))  # every audio second is in a final turn
    assert session.gaps == []
    replayed = sum(map(len, server_script.received)) - n
    print(f"\n[faults] {n * 0.05:.0f} s audio, {tr.reconnects} reconnects, {replayed} frames "
          f"({replayed * 0.05:.2f} s) sent twice, {len(session)} final turns, no gap")
    # the session journal rebuilds the same session
    again = load_session(tmp_path)
    assert list(again.turns.text) == list(session.turns.text)
    assert list(again.turns.start) == list(session.turns.start)


def test_an_outage_longer_than_the_buffer_is_recorded_as_a_gap(tmp_path):
    plan = [("drop", 12)] + [("refuse", 1011)] * 3 + [("ok",)]
    server_script = Numbered(plan)
    with ScriptedServer(server_script) as server:
        tr = Transcriber(ArraySource(numbered_audio(120), 16000, realtime=True), url=server.url,
                         api_key=KEY, out_dir=tmp_path, buffer_seconds=0.5)
        tr.start()
        assert tr.wait(60)
        session = tr.stop()
    assert tr.error is None
    assert len(session.gaps) == 1
    start, end = session.gaps[0]
    assert end - start >= 1.0  # the three refusals back off 0.5 + 1 + 2 s
    lost = set(range(1, 121)) - set().union(*map(set, server_script.received))
    assert lost and min(lost) >= start / 0.05 and max(lost) <= end / 0.05 + 1
    check_timeline(session)
    assert load_session(tmp_path).gaps == session.gaps
    # the WAV keeps everything, gap included
    import soundfile as sf

    assert sf.info(tmp_path / "audio.wav").duration == pytest.approx(6.0, abs=0.06)


@pytest.mark.parametrize("code", [1008, 3006])
def test_final_errors_are_not_retried(code):
    server_script = Numbered([("error", code, 10)])
    with ScriptedServer(server_script) as server:
        tr = Transcriber(ArraySource(numbered_audio(60), 16000, realtime=True), url=server.url,
                         api_key=KEY)
        tr.start()
        assert tr.wait(30)
        tr.stop()
    assert len(server_script.received) == 1
    assert tr.error is not None and tr.error.code == code
    assert tr.reconnects == 0


def test_roll_over_before_the_session_expires():
    server_script = Numbered([], expires_in=3)
    with ScriptedServer(server_script) as server:
        tr = Transcriber(ArraySource(numbered_audio(60), 16000, realtime=True), url=server.url,
                         api_key=KEY, rollover_seconds=2.2)
        tr.start()
        assert tr.wait(30)
        session = tr.stop()
    assert tr.error is None
    assert len(server_script.received) >= 2
    assert server.sessions[0].control_types == ["Terminate"]  # the old one was ended cleanly
    flat = [f for frames in server_script.received for f in frames]
    assert sorted(flat) == list(range(1, 61))  # contiguous: nothing lost, nothing twice
    check_timeline(session)


def test_kill_9_then_load_keeps_every_final(tmp_path):
    server_script = Numbered([])
    out = tmp_path / "session"
    samples = tmp_path / "n.wav"
    import soundfile as sf

    sf.write(samples, numbered_audio(400), 16000, subtype="PCM_16")
    with ScriptedServer(server_script) as server:
        proc = subprocess.Popen([sys.executable, "-m", "nbscribe.cli", "transcribe", "--file",
                                 str(samples), "--url", server.url, "--api-key", KEY, "--out",
                                 str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: len(server_script.finals) >= 4 or proc.poll() is not None, 30)
        assert proc.poll() is None
        sent_before = list(server_script.finals)
        journal = out / "events.jsonl"
        assert wait_until(lambda: journal.exists() and all(
            f'"transcript":"{t}"' in journal.read_text() for t in sent_before), 30), \
            "the finals were never journaled"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    session = load_session(out)
    assert set(sent_before) <= set(session.turns.text)
    check_timeline(session)
    audio, rate = sf.read(out / "audio.wav", dtype="int16")  # valid after the kill
    assert rate == 16000
    frames_on_disk = len(audio) // FRAME
    assert frames_on_disk >= max(max(r) for r in server_script.received if r) - 1


def test_the_key_never_appears_in_any_output(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server_script = Numbered([("drop", 15), ("error", 1008, 5)])
    with ScriptedServer(server_script) as server:
        tr = Transcriber(ArraySource(numbered_audio(40), 16000, realtime=True), url=server.url,
                         api_key=KEY, out_dir=tmp_path)
        tr.start()
        assert tr.wait(30)
        session = tr.stop()
    assert tr.error is not None and tr.error.code == 1008
    # every log line of the client side (nbscribe, websocket-client); the scripted server's
    # own library logs the headers it received, which is not an output of nbscribe
    logs = "\n".join(r.getMessage() for r in caplog.records
                     if not r.name.startswith("websockets"))
    assert any(r.name.startswith("nbscribe") for r in caplog.records)  # it did log
    outputs = [logs, repr(tr), repr(tr.client), str(tr.error), repr(session),
               json.dumps(session.to_dict()), str(tr.stats())]
    outputs += [p.read_text(errors="replace") for p in tmp_path.iterdir() if p.suffix != ".wav"]
    outputs += [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir()]
    assert server.sessions[0].headers["Authorization"] == KEY  # it was used...
    for text in outputs:
        assert KEY not in text  # ...and never shown
    res = subprocess.run([sys.executable, "-m", "nbscribe.cli", "-vv", "transcribe", "--file",
                          str(tmp_path / "audio.wav"), "--url", "ws://127.0.0.1:9",
                          "--api-key", KEY], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and KEY not in res.stdout + res.stderr


@pytest.mark.loopback
def test_a_device_that_stops_ends_the_capture_and_keeps_everything(pulse, tmp_path):
    from nbscribe import DeviceSource

    from .scripted_server import replay

    src = DeviceSource("loopback.monitor", stall_seconds=1.0)
    player = pulse.play(str(__import__("nbscribe").sample("endgame_nagg_nell")))
    msgs = [turn(0, [word("Kept.", 0, 300)], True, True)]
    with ScriptedServer(replay(msgs, after_audio_bytes=1600)) as server:
        tr = Transcriber(src, url=server.url, api_key=KEY, out_dir=tmp_path)
        tr.start()
        assert wait_until(lambda: tr.session.audio_seconds >= 1.0, 20)
        src._stream.stop()  # PortAudio stops delivering, as when a device goes away
        assert tr.wait(20)
        session = tr.stop()
    player.kill()
    assert tr.error is not None
    assert "loopback.monitor stopped delivering audio" in str(tr.error)
    assert "Everything captured until then is kept" in str(tr.error)
    assert list(session.turns.text) == ["Kept."]
    assert server.sessions[0].control_types == ["Terminate"]  # ended cleanly
    import soundfile as sf

    assert sf.info(tmp_path / "audio.wav").duration >= 1.0


@pytest.mark.loopback
def test_a_stalled_device_is_noticed(pulse):
    from nbscribe import DeviceSource

    src = DeviceSource("loopback.monitor", stall_seconds=0.3)
    src._last_block = time.monotonic() - 1.0  # audio flowed, then nothing for a second
    assert src.read(0.05) is None
    assert src.finished and "none for 0.3 s" in src.error


def test_a_token_factory_gives_each_connection_its_own_token():
    tokens = iter(f"token-{i}" for i in range(10))
    server_script = Numbered([("drop", 12), ("ok",)])
    with ScriptedServer(server_script) as server:
        tr = Transcriber(ArraySource(numbered_audio(40), 16000, realtime=True), url=server.url,
                         token=lambda: next(tokens))
        tr.start()
        assert tr.wait(30)
        tr.stop()
    assert tr.error is None
    assert [s.query["token"] for s in server.sessions] == [["token-0"], ["token-1"]]
    assert all("Authorization" not in s.headers for s in server.sessions)
