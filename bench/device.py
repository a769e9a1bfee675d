"""The device path, side by side with the original guide's script, on a PulseAudio null sink.

A private PulseAudio daemon (the tests' null sinks) plays speech into the sink ``loopback``;
each client records its monitor for the same stretch of time and streams it to the same null
service (a v3 server in its own process that discards audio):

- nbscribe: ``nbscribe transcribe --device loopback.monitor`` (48 kHz stereo from the device,
  resampled to 16 kHz mono, WAV and journal on disk);
- the original guide: sounddevice blocking reads of 50 ms at 16 kHz mono (PyAudio's
  ``stream.read``; PulseAudio resamples), each frame sent as read and kept in a list.

The CPU of each client process and of the sound server are counted separately (``/proc``), over
a steady window after start-up. Run: ``python bench/device.py`` (needs pulseaudio, paplay, sox
and PortAudio; about a minute and a half). Not part of ``run.py --quick``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from run import NullServer  # noqa: E402

from tests.conftest import Pulse  # noqa: E402  (the tests' private daemon with null sinks)

ORIGINAL = r"""
import json, sys, threading, time
import sounddevice as sd, websocket
url, seconds = sys.argv[1], float(sys.argv[2])
ws = websocket.create_connection(url + "?sample_rate=16000&encoding=pcm_s16le")
ws.recv()
def receive():  # the guide's WebSocketApp read messages on a thread of its own
    try:
        while ws.recv():
            pass
    except Exception:
        pass
threading.Thread(target=receive, daemon=True).start()
frames = []
stream = sd.RawInputStream(device="pulse", samplerate=16000, channels=1, dtype="int16",
                           blocksize=800)
stream.start()
end = time.monotonic() + seconds
while time.monotonic() < end:
    data, _ = stream.read(800)  # 50 ms, as the guide's stream.read(CHUNK)
    frames.append(bytes(data))
    ws.send_binary(bytes(data))
ws.send(json.dumps({"type": "Terminate"}))
time.sleep(0.2)
stream.stop(); stream.close(); ws.close()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], env: dict[str, str], pulse_pid: int, warm: float = 8.0,
            window: float = 30.0) -> dict[str, float]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warm)  # start-up (imports, connecting, opening the device) is not counted
        c0, p0, t0 = cpu_seconds(proc.pid), cpu_seconds(pulse_pid), time.monotonic()
        time.sleep(window)
        c1, p1, t1 = cpu_seconds(proc.pid), cpu_seconds(pulse_pid), time.monotonic()
    finally:
        proc.wait(60)
    return {"client": (c1 - c0) / (t1 - t0), "sound_server": (p1 - p0) / (t1 - t0)}


def run(window: float = 30.0) -> dict[str, dict[str, float]]:
    """Measure both clients; return CPU fractions of a core for each."""
    pulse = Pulse()
    try:
        speech = Path(tempfile.mkdtemp(prefix="nbscribe-bench-")) / "speech.wav"
        sample = ROOT / "nbscribe" / "samples" / "endgame_nagg_nell.wav"
        subprocess.run(["sox", str(sample), "-r", "48000", "-c", "2", str(speech), "repeat", "9"],
                       check=True, capture_output=True)
        player = subprocess.Popen(["paplay", "--device=loopback", str(speech)])
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        seconds = window + 10
        out = {}
        with NullServer(turn_every=40) as server:
            out["nbscribe"] = measure(
                [sys.executable, "-m", "nbscribe.cli", "transcribe", "--device",
                 "loopback.monitor", "--url", server.url, "--api-key", "bench", "--duration",
                 str(seconds), "--out", str(speech.parent / "out")], env, pulse.pid,
                window=window)
            out["original"] = measure(
                [sys.executable, "-c", ORIGINAL, server.url, str(seconds)],
                {**env, "PULSE_SOURCE": "loopback.monitor"}, pulse.pid, window=window)
        player.kill()
        return out
    finally:
        pulse.stop()


def main() -> None:
    r = run()
    for name, m in r.items():
        print(f"{name:>9}: client {m['client'] * 100:.2f} % of a core, "
              f"sound server {m['sound_server'] * 100:.2f} %")
    ratio = r["nbscribe"]["client"] / r["original"]["client"]
    print(f"ratio nbscribe / original (client): {ratio:.2f}x")


if __name__ == "__main__":
    main()
