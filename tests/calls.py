"""A call on speakers: what a microphone hears of it, and a call played into two null sinks.

Shared by `tests/test_echo.py` and `bench/echo.py`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

import nbscribe

from .dialogues import DATA, RATE

#: What you say in the call (the bundled Beckett recording), and the call's ten phrases.
BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
CALL_LINES = ["best of times", "worst of times", "age of wisdom", "age of foolishness",
              "epoch of belief", "epoch of incredulity", "season of light",
              "season of darkness", "spring of hope", "winter of despair"]


def call_and_you() -> tuple[np.ndarray, np.ndarray]:
    """20 s of a call (one voice) and 10 s of you (another), you starting 5 s in: double talk."""
    call, _ = sf.read(DATA / "two_cities_20s.wav", dtype="float32")
    beckett, _ = sf.read(nbscribe.sample("beckett"), dtype="float32")
    you = np.zeros_like(call)
    you[5 * RATE:5 * RATE + len(beckett)] = beckett
    return call, you


def pcm(audio: np.ndarray) -> bytes:
    """Float audio as the PCM16 bytes a frame carries."""
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def said(session: Any, source: str) -> str:
    """Everything `source` said in a merged session, lower case."""
    turns = session.turns
    return " ".join(turns[turns.source == source].text).lower()


def leak(call: np.ndarray, delay_ms: float, gain_db: float, reverb_ms: float = 0.0
         ) -> np.ndarray:
    """What a microphone hears of `call` from the speakers: later, quieter, maybe reverberant."""
    d = int(delay_ms * RATE / 1000)
    out = np.zeros_like(call)
    out[d:] = call[:len(call) - d]
    if reverb_ms:
        n = int(reverb_ms * RATE / 1000)
        ir = np.random.default_rng(0).standard_normal(n) * np.exp(-np.arange(n) / (n / 6.9))
        ir[0] = 1.0
        out = np.convolve(out, ir / np.sqrt(np.sum(ir ** 2)))[:len(call)]
    return (out * 10 ** (gain_db / 20)).astype(np.float32)


def transcribe_call(pulse: Any, engine: Any, folder: Path, mic: np.ndarray, call: np.ndarray,
                    **options: Any) -> Any:
    """Play `call` and `mic` into two null sinks at once; transcribe them as a call.

    `call` goes to the ``loopback`` sink ("others"), `mic` to ``second`` ("you"). `options` go
    to `MultiTranscriber` (``cancel_echo``, ``include_echo`` ...). Returns it, stopped (its
    ``session`` and ``cancellers``).
    """
    from nbscribe import DeviceSource
    from nbscribe.multi import MultiTranscriber
    from nbscribe.server import LocalServer, ServerConfig

    from .waiting import wait_until

    call_wav, mic_wav = folder / "call.wav", folder / "mic.wav"
    sf.write(call_wav, call, RATE)
    sf.write(mic_wav, mic, RATE)
    with LocalServer(ServerConfig(port=0), engine=engine) as server:
        multi = MultiTranscriber({"you": DeviceSource("second.monitor"),
                                  "others": DeviceSource("loopback.monitor")},
                                 url=server.url, out_dir=folder / "out", **options)
        multi.start()
        players: list[Any] = []
        go = threading.Event()

        def play(wav: Path, sink: str) -> None:
            go.wait()
            players.append(pulse.play(wav, sink=sink))

        threads = [threading.Thread(target=play, args=a)
                   for a in ((call_wav, "loopback"), (mic_wav, "second"))]
        for t in threads:
            t.start()
        go.set()  # both players start within a few ms of each other
        for t in threads:
            t.join()
        for p in players:
            p.wait(60)
        wait_until(lambda: multi.stats().audio_seconds > len(call) / RATE + 1.5, 30, 0.1)
        multi.stop()
        return multi
