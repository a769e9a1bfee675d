"""nbscribe's benchmarks: one entry point that prints a table and writes bench/RESULTS.md.

    python bench/run.py            # full (about 15 minutes: 10 minutes of real-time engine audio)
    python bench/run.py --quick    # under 3 minutes (CI runs it)

What is measured, each beside its target (benchmarks print numbers; they never fail a build):

- client overhead: CPU per second of audio for capture -> convert -> send from a 48 kHz stereo
  source, no speech recognition (the server is a separate process that discards audio), against
  the original guide's approach (blocking 16 kHz reads on a thread, every frame kept in memory);
- stop latency: from stop() to a complete DataFrame with every thread joined, when the server
  answers Terminate promptly (the original script always slept 5 s);
- memory: RSS growth per hour of audio streamed faster than real time to a scripted server that
  sends a final turn every 2 s;
- the panel: bytes to the browser and CPU per update at 10, 1,000 and 10,000 turns;
- DataFrames: building turns and words for 10,000 turns / 100,000 words;
- the local engine: WER, CPU per audio second, first-partial and final latency at real time;
- offline speaker labels: how right, added CPU and final-turn latency, two streams at real time
  (`bench/speakers.py`);
- "You vs Others" with the call on speakers: call phrases written twice and the WER of your
  words, with and without the echo canceller and the transcript-level net (`bench/echo.py`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbscribe
from nbscribe import ArraySource, Session, Transcriber
from nbscribe.events import Turn, Word

HERE = Path(__file__).resolve().parent

# A v3 server in its own process: Begin, discard audio, a final turn every `turn_every` chunks,
# and Termination right after Terminate.
SERVER = r"""
import json, sys, time, uuid
from websockets.sync.server import serve
turn_every = int(sys.argv[1])
def handle(conn):
    conn.send(json.dumps({"type": "Begin", "id": str(uuid.uuid4()),
                          "expires_at": int(time.time()) + 10800}))
    n = order = 0
    for data in conn:
        if isinstance(data, bytes):
            n += 1
            if turn_every and n % turn_every == 0:
                t = (n - turn_every) * 50
                words = [{"start": t + 150 * i, "end": t + 150 * i + 120, "text": f"word{i}",
                          "confidence": 0.9, "word_is_final": True} for i in range(10)]
                conn.send(json.dumps({"turn_order": order, "turn_is_formatted": True,
                    "end_of_turn": True, "transcript": " ".join(w["text"] for w in words),
                    "end_of_turn_confidence": 1.0, "words": words, "utterance": "",
                    "type": "Turn"}))
                order += 1
        elif json.loads(data).get("type") == "Terminate":
            conn.send(json.dumps({"type": "Termination"}))
            conn.close(1000)
            return
with serve(handle, "127.0.0.1", 0) as srv:
    print(srv.socket.getsockname()[1], flush=True)
    srv.serve_forever()
"""


NOTES = """## Notes

The engine encodes a Whisper window sized to the turn (at least 15 s) instead of the full 30 s,
reuses a decode when only silence followed it, skips partials while it catches up on a backlog,
and spaces partials by twice the last decode time when decoding is slow: on this CPU one decode
with the standard 30 s window costs ~0.9 s, and without these the engine could not keep up with
real time on 2 cores. No GPU has been lent to this project's sessions yet, so there are no GPU
figures (`python bench/engine.py --device cuda` measures one). The echo rows play a call and a
microphone that hears it into two PulseAudio null sinks (`bench/echo.py`, full runs only).
"""


class NullServer:
    """The scripted server above, in a subprocess (so its CPU is not the client's)."""

    def __init__(self, turn_every: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(turn_every)],
                                     stdout=subprocess.PIPE, text=True)
        self.url = f"ws://127.0.0.1:{int(self.proc.stdout.readline())}/v3/ws"

    def __enter__(self) -> NullServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stereo_48k(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 48000)) / 48000
    x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(len(t))
    return np.stack([x, x * 0.8], axis=1).astype(np.float32)


# -- client overhead -------------------------------------------------------------------------


def client_overhead(seconds: float) -> dict:
    audio = stereo_48k(seconds)
    with NullServer() as server:
        tr = Transcriber(ArraySource(audio, 48000, realtime=False), url=server.url, api_key="bench")
        c0 = cpu()
        tr.start()
        tr.wait()
        tr.stop()
        ours = (cpu() - c0) / seconds
    # The original guide: PyAudio opened the device at 16 kHz mono (no conversion), a thread
    # read 50 ms blocks and sent each one, and every frame was kept for a WAV never written.
    import websocket

    pcm16 = (audio[::3, 0] * 32767).astype("<i2")
    with NullServer() as server:
        c0 = cpu()
        ws = websocket.create_connection(server.url + "?sample_rate=16000")
        ws.recv()
        frames: list[bytes] = []

        def stream() -> None:
            for i in range(0, len(pcm16), 800):
                data = pcm16[i:i + 800].tobytes()  # stream.read(800)
                frames.append(data)
                ws.send_binary(data)

        th = threading.Thread(target=stream)
        th.start()
        th.join()
        ws.send(json.dumps({"type": "Terminate"}))
        ws.recv()
        ws.close()
        theirs = (cpu() - c0) / seconds
        kept = sum(map(len, frames))
    return {"ours": ours, "theirs": theirs, "kept_mb_per_hour": kept / seconds * 3600 / 2**20}


# -- stop latency ----------------------------------------------------------------------------


def stop_latency(runs: int) -> list[float]:
    times = []
    with NullServer(turn_every=20) as server:
        for _ in range(runs):
            tr = Transcriber(ArraySource(stereo_48k(30), 48000, realtime=True), url=server.url,
                             api_key="bench")
            tr.start()
            time.sleep(2.0)
            t0 = time.monotonic()
            session = tr.stop()
            frame = session.turns
            assert not [t for t in threading.enumerate() if t.name.startswith("nbscribe-")]
            times.append(time.monotonic() - t0)
            assert len(frame) > 0
    return times


# -- memory -----------------------------------------------------------------------------------


def memory(minutes: float) -> dict:
    with NullServer(turn_every=40) as server:
        warm = Transcriber(ArraySource(stereo_48k(30), 48000, realtime=False), url=server.url,
                           api_key="b")
        warm.start()
        warm.wait()
        warm.stop()
        chunk = stereo_48k(60)
        base = rss_mb()

        class Looping(ArraySource):
            def __init__(self, minutes: float) -> None:
                super().__init__(chunk, 48000, realtime=False)
                self.left = int(minutes)

            def read(self, timeout: float):
                block = super().read(timeout)
                if block is None and self.left > 1:
                    self.left -= 1
                    self.finished, self._pos = False, 0
                    block = super().read(timeout)
                return block

        tr = Transcriber(Looping(minutes), url=server.url, api_key="b")
        samples: list[tuple[float, float]] = []  # (audio seconds, RSS MB)
        tr.start()
        while not tr.wait(0.05):
            samples.append((tr.stats().audio_seconds, rss_mb()))
        session = tr.stop()
    # Steady-state growth: the slope of RSS over audio in the second half of the stream (the
    # allocator's one-off high-water marks at the start are not growth).
    half = [(a, r) for a, r in samples if a >= minutes * 30]
    slope = float(np.polyfit([a for a, _ in half], [r for _, r in half], 1)[0]) if len(
        half) > 3 else float("nan")
    return {"minutes": minutes, "turns": len(session), "grown_mb": rss_mb() - base,
            "mb_per_hour": slope * 3600, "samples": len(half)}


# -- DataFrames -------------------------------------------------------------------------------


def dataframes(turns: int = 10_000, words_per_turn: int = 10) -> dict:
    warm = Session()  # load pandas' and pyarrow's code once: imports are not building
    warm.apply(Turn(0, "a", True, True, 1.0, (Word("a", 0, 1, 1.0, True),)))
    _ = warm.turns, warm.words
    s = Session()
    for i in range(turns):
        words = tuple(Word(f"w{k}", i * 2000 + 150 * k, i * 2000 + 150 * k + 120, 0.9, True)
                      for k in range(words_per_turn))
        s.apply(Turn(i, " ".join(w.text for w in words), True, True, 1.0, words,
                     speaker_label="AB"[i % 2]))
    t0 = time.perf_counter()  # the first build: nothing cached by an earlier one
    t, w = s.turns, s.words
    seconds = time.perf_counter() - t0
    assert len(t) == turns and len(w) == turns * words_per_turn
    return {"seconds": seconds}


# -- the table and RESULTS.md -----------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description="nbscribe benchmarks")
    ap.add_argument("--quick", action="store_true", help="a short run (under 3 minutes)")
    ap.add_argument("--engine-minutes", type=float, help="length of the engine's long stream")
    ap.add_argument("--no-engine", action="store_true", help="skip the local engine")
    ap.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    quick = args.quick
    rows: list[tuple[str, str, str, str]] = []  # section, measure, value, target
    started = time.monotonic()

    o = client_overhead(30 if quick else 300)
    rows += [
        ("client overhead", "CPU per audio second, 48 kHz stereo -> 16 kHz frames -> socket",
         f"{o['ours'] * 100:.2f} % of a core", "<= 1 %"),
        ("client overhead", "original guide (16 kHz blocking reads, frames kept in memory)",
         f"{o['theirs'] * 100:.2f} % of a core", "comparison"),
        ("client overhead", "ratio nbscribe / original", f"{o['ours'] / o['theirs']:.1f}x", ""),
        ("client overhead", "audio kept in memory by the original",
         f"{o['kept_mb_per_hour']:.0f} MB/hour", "nbscribe: 0 (written to disk)"),
    ]
    if not quick:
        import device as device_bench

        try:
            dev = device_bench.run()
        except (OSError, subprocess.SubprocessError) as exc:  # no pulseaudio, sox or PortAudio
            rows.append(("device path", "PulseAudio null sink (needs pulseaudio, sox)",
                         f"skipped: {exc}", ""))
        else:
            for name, m in dev.items():
                rows.append(("device path", f"{name}: client / sound server, null-sink capture",
                             f"{m['client'] * 100:.2f} % / {m['sound_server'] * 100:.2f} %",
                             "nbscribe <= original"))
    times = stop_latency(3 if quick else 10)
    rows += [("stop latency", f"stop() to DataFrame, threads joined ({len(times)} runs)",
              f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s", "<= 1.5 s"),
             ("stop latency", "original guide (sleep after Terminate)", "5.00 s", "comparison")]
    m = memory(10 if quick else 60)
    rows.append(("memory", f"RSS growth per hour of audio (slope over the second half of "
                 f"{m['minutes']:.0f} min, {m['turns']} turns)", f"{m['mb_per_hour']:.1f} MB/hour",
                 "<= 20 MB/h"))
    import panel as panel_bench

    from nbscribe.widget import Panel

    p = Panel(max_turns_shown=200)
    try:
        for n in (10, 1_000, 10_000):
            r = panel_bench.measure(p, n)
            rows.append(("panel", f"{n:,} turns: bytes / CPU per refresh, CPU per event",
                         f"{r['bytes']} B / {r['refresh_ms']:.2f} ms / {r['event_us']:.0f} us",
                         "flat"))
    finally:
        p.close()
    d = dataframes()
    rows.append(("DataFrames", "turns + words for 10,000 turns / 100,000 words",
                 f"{d['seconds'] * 1000:.0f} ms", "<= 100 ms"))
    engine_note = ""
    if not args.no_engine:
        import engine as engine_bench

        minutes = args.engine_minutes or (0.5 if quick else 10)
        rows += engine_bench.run(minutes, device="auto")
        engine_note = f" The engine's long stream lasted {minutes:g} minutes."
        import speakers as speakers_bench

        rows += speakers_bench.run(quick)
    import echo as echo_bench

    rows += echo_bench.run(quick)  # the canceller's CPU; the calls through PulseAudio when full
    elapsed = time.monotonic() - started

    width = max(len(r[1]) for r in rows) + 2
    swidth = max(len(r[0]) for r in rows) + 2
    print(f"\n{'section':<{swidth}}{'measure':<{width}}{'result':>34}   target")
    for section, measure, value, target in rows:
        print(f"{section:<{swidth}}{measure:<{width}}{value:>34}   {target}")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
               f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
               f"Python {platform.python_version()}, nbscribe {nbscribe.__version__}")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run.py{' --quick' if quick else ''}` on "
        f"{datetime.date.today()} ({elapsed / 60:.1f} minutes) on {machine}.{engine_note}",
        "How each number is measured is in the docstrings of `bench/run.py`, `bench/engine.py`,",
        "`bench/panel.py`, `bench/device.py` and `bench/speakers.py`. Benchmarks report; they do",
        "not fail a build.",
        "",
        "| section | measure | result | target |",
        "|---|---|---|---|",
        *[f"| {s} | {m} | {v} | {t} |" for s, m, v, t in rows],
        "",
        NOTES,
    ]
    Path(args.output).write_text("\n".join(lines))
    print(f"\nwrote {args.output} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
