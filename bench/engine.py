"""Benchmark of the local server's offline engine, streamed at real time like a live source.

Prints a table: word error rate, real-time factor, first-partial and final latency (p50/p95),
and whether the engine keeps up over a long stream (final latency in the first vs the last
minute). Run: ``python bench/engine.py [--minutes 10] [--device cpu|cuda]``.

Latencies are measured on the stream's clock: audio second t leaves the client at
``first_audio_at + t``; a partial's latency is its arrival minus the moment its turn's first
word was spoken; a final's is its arrival minus the end of its last word.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nbscribe
from nbscribe import ArraySource, Transcriber, Turn
from nbscribe.metrics import word_error_rate
from nbscribe.server import LocalServer, ServerConfig, load_model

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "The juice of lemons makes fine punch.",
    "Four hours of steady work faced us.",
    "Please send the quarterly report to the marketing team by Friday.",
    "We will start the meeting in five minutes.",
    "Can everyone hear me clearly on the call?",
    "The weather tomorrow will be sunny with a light breeze.",
    "Open the window and let the fresh air in.",
]


def espeak(text: str, folder: Path) -> np.ndarray:
    raw, out = folder / "raw.wav", folder / "say.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad",
                    "0.5", "0.5"], check=True)
    return sf.read(out, dtype="float32")[0]


def stream(url: str, audio: np.ndarray) -> dict:
    """Stream `audio` (16 kHz float) at real time; return the arrivals of every turn message."""
    arrivals: list[tuple[float, Turn]] = []
    tr = Transcriber(ArraySource(audio, 16000, realtime=True), url=url)
    tr.on(lambda e: arrivals.append((time.monotonic(), e)) if isinstance(e, Turn) else None)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tr.start()
    tr.wait()
    session = tr.stop()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = tr.first_audio_at
    first_partial, final = {}, []
    for at, turn in arrivals:
        if not turn.words:
            continue
        if not turn.end_of_turn and turn.turn_order not in first_partial:
            first_partial[turn.turn_order] = at - t0 - turn.words[0].start / 1000
        if turn.end_of_turn:
            final.append((turn.words[-1].end / 1000, at - t0 - turn.words[-1].end / 1000))
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"session": session, "first_partial": list(first_partial.values()), "final": final,
            "cpu": cpu, "seconds": len(audio) / 16000, "error": tr.error}


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run(minutes: float, device: str = "cpu") -> list[tuple[str, str, str, str]]:
    """Run the engine benchmark; return rows of (section, measure, result, target)."""
    engine = load_model(device=device)
    sec = f"local engine ({engine.describe()})"
    rows: list[tuple[str, str, str, str]] = []
    with LocalServer(ServerConfig(port=0), engine=engine) as server, \
            tempfile.TemporaryDirectory() as tmp:
        beckett = sf.read(nbscribe.sample("beckett"), dtype="float32")[0]
        r = stream(server.url, beckett)
        wer = word_error_rate(BECKETT, " ".join(r["session"].turns.text))
        rows.append((sec, "WER, natural speech (beckett.wav, 10 s)", f"{wer:.3f}", "< 0.15"))
        have_espeak = shutil.which("espeak-ng") and shutil.which("sox")
        if have_espeak:
            speech = espeak(" ".join(SENTENCES), Path(tmp))
            r = stream(server.url, speech)
            wer = word_error_rate(" ".join(SENTENCES), " ".join(r["session"].turns.text))
            rows.append((sec, f"WER, 10 espeak-ng sentences played continuously "
                         f"({r['seconds']:.0f} s)", f"{wer:.3f}", "< 0.30"))
        # the long stream: natural dialogue, espeak and silences, looped
        endgame, rate = sf.read(nbscribe.sample("endgame_nagg_nell"), dtype="float32")
        import soxr

        parts = [soxr.resample(endgame, rate, 16000), np.zeros(16000, np.float32), beckett]
        if have_espeak:
            parts += [np.zeros(8000, np.float32), speech]
        loop = np.concatenate(parts)
        n = int(minutes * 60 * 16000)
        long_audio = np.tile(loop, n // len(loop) + 1)[:n]
        r = stream(server.url, long_audio)
    fin = r["final"]
    window = min(60.0, r["seconds"] / 2)
    first = [lat for t, lat in fin if t < window]
    last = [lat for t, lat in fin if t >= r["seconds"] - window]
    finals = [x for _, x in fin]
    rows += [
        (sec, f"{r['seconds'] / 60:.1f} min at real time: turns, errors",
         f"{len(fin)}, {r['error'] or 'none'}", "no errors"),
        (sec, "CPU per audio second (client + server + engine)",
         f"{r['cpu'] / r['seconds']:.2f} core-s/s", f"keeps up on {os.cpu_count()} cores"),
        (sec, "first partial latency p50 / p95",
         f"{pct(r['first_partial'], 50):.2f} / {pct(r['first_partial'], 95):.2f} s", "~1 s"),
        (sec, "final latency p50 / p95", f"{pct(finals, 50):.2f} / {pct(finals, 95):.2f} s",
         "~1.5 s"),
        (sec, f"final latency p50, first vs last {window:.0f} s",
         f"{pct(first, 50):.2f} vs {pct(last, 50):.2f} s", "no growth"),
    ]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the long stream")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = ap.parse_args()
    print(f"\nLocal engine benchmark: {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}, {platform.machine()}")
    for _, measure, value, target in run(args.minutes, args.device):
        print(f"{measure:<60} {value:>22}   target {target}")


if __name__ == "__main__":
    sys.exit(main())
