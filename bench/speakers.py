"""Benchmark of offline speaker labels: how right they are, what they cost, whether real time holds.

    python bench/speakers.py            # everything (about 2 minutes)
    python bench/speakers.py --quick    # accuracy and cost only (about 30 s)

- accuracy: the share of transcribed speech time whose word carries the right voice's label
  (labels matched to voices, one voice per label) and the labels used, through the local server
  with ``speaker_labels=True``, on the dialogues of ``tests/dialogues.py``: two real voices
  with 1 s and 0.35 s hand-overs, the bundled Nagg/Nell scene, two espeak-ng voices;
- added CPU: the labeller (`SpeakerLabeller.label` and the end-of-session `revise`) replayed on
  the turns the server gave it, on one thread with nothing else running: CPU seconds per second
  of turn audio;
- added final-turn latency: the wall time of `label` per final turn inside the server, which the
  final waits for (p50 / p95);
- real time: two streams of the two-voice dialogue at once at real time, labels on, one local
  server on this machine: final-turn latency p50 / p95 of each, against the same without labels.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

from nbscribe import ArraySource, Transcriber, Turn  # noqa: E402
from nbscribe.server import LocalServer, ServerConfig, load_model  # noqa: E402
from nbscribe.server.speakers import SpeakerLabeller  # noqa: E402
from tests import dialogues  # noqa: E402

SECTION = "speaker labels (local server)"


class Recorded:
    """Wraps `SpeakerLabeller.label` to keep what it was given and how long it took."""

    def __init__(self) -> None:
        self.calls: list[tuple[Turn, np.ndarray, float]] = []
        self.wall: list[float] = []
        self._label = SpeakerLabeller.label

    def __enter__(self) -> Recorded:
        original, calls, wall = self._label, self.calls, self.wall

        def label(labeller, turn, audio, start_ms):
            started = time.perf_counter()
            try:
                return original(labeller, turn, audio, start_ms)
            finally:
                wall.append(time.perf_counter() - started)
                calls.append((turn, audio, start_ms))

        SpeakerLabeller.label = label
        return self

    def __exit__(self, *exc: object) -> None:
        SpeakerLabeller.label = self._label


def cases(tmp: Path) -> list[tuple[str, np.ndarray, dialogues.Truth]]:
    path, truth = dialogues.nagg_nell()
    scene, rate = sf.read(path, dtype="float32")
    out = [
        ("two real voices, 1 s and 0.35 s hand-overs", *dialogues.two_voice_dialogue()),
        ("two real voices, 0.35 s hand-overs", *dialogues.two_voice_dialogue((0.35,))),
        ("the bundled Nagg/Nell scene", soxr.resample(scene, rate, 16000).astype(np.float32),
         truth),
    ]
    try:
        out.append(("two espeak-ng voices, 1 s and 0.35 s hand-overs",
                    *dialogues.espeak_dialogue(tmp)))
    except OSError:  # no espeak-ng
        pass
    return out


def labelled(url: str, audio: np.ndarray, realtime: bool, labels: bool = True) -> dict:
    """Transcribe `audio`; return the session and each final's latency (s) on the stream's clock."""
    arrivals: list[tuple[float, Turn]] = []
    tr = Transcriber(ArraySource(audio, 16000, realtime=realtime), url=url,
                     speaker_labels=labels)
    tr.on(lambda e: arrivals.append((time.monotonic(), e))
          if isinstance(e, Turn) and e.end_of_turn else None)
    tr.start()
    tr.wait()
    session = tr.stop()
    t0 = tr.first_audio_at
    latency = [at - t0 - t.words[-1].end / 1000 for at, t in arrivals if t.words]
    return {"session": session, "latency": latency, "error": tr.error}


def accuracy(server: LocalServer, tmp: Path) -> tuple[list[tuple[str, str, str, str]], Recorded]:
    rows = []
    with Recorded() as rec:
        for name, audio, truth in cases(tmp):
            r = labelled(server.url, audio, realtime=False)
            words = r["session"].words
            share, _ = dialogues.labelled_share(
                list(zip(words.start, words.end, words.speaker, strict=True)), truth)
            labels = sorted(set(words.speaker.dropna()))
            rows.append((SECTION, f"right label, share of speech time: {name}",
                         f"{share * 100:.1f} %, labels {'/'.join(labels)}",
                         ">= 90 %, 2 labels"))
    return rows, rec


def cost(rec: Recorded) -> list[tuple[str, str, str, str]]:
    labeller = SpeakerLabeller()
    cpu = time.process_time()
    for turn, audio, start in rec.calls:
        labeller.label(turn, audio, start)
    labeller.revise()
    cpu = time.process_time() - cpu
    seconds = sum(len(a) for _, a, _ in rec.calls) / 16000
    wall = np.array(rec.wall)
    return [
        (SECTION, f"added CPU per second of turn audio ({seconds:.0f} s, {len(rec.calls)} turns, "
         "one thread)", f"{cpu / seconds:.3f} core-s/s", "small beside Whisper (~0.9)"),
        (SECTION, "added final-turn latency (label wall time per turn) p50 / p95",
         f"{np.percentile(wall, 50) * 1000:.0f} / {np.percentile(wall, 95) * 1000:.0f} ms",
         "< 100 ms"),
    ]


def two_streams(server: LocalServer) -> list[tuple[str, str, str, str]]:
    import threading

    audio, _ = dialogues.two_voice_dialogue()
    rows = []
    for labels in (False, True):
        results: list[dict] = [{}, {}]

        def run(i: int, labels: bool = labels, results: list[dict] = results) -> None:
            results[i] = labelled(server.url, audio, realtime=True, labels=labels)

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        lat = [x for r in results for x in r["latency"]]
        errors = [r["error"] for r in results if r["error"]]
        rows.append((SECTION, f"2 streams at once at real time, labels {'on' if labels else 'off'}"
                     f": final latency p50 / p95, CPU per audio s, errors",
                     f"{np.percentile(lat, 50):.2f} / {np.percentile(lat, 95):.2f} s, "
                     f"{cpu / (2 * len(audio) / 16000):.2f} core-s/s, {len(errors)}",
                     f"keeps up on {os.cpu_count()} cores"))
    return rows


def run(quick: bool) -> list[tuple[str, str, str, str]]:
    """Run the benchmark; return rows of (section, measure, result, target)."""
    engine = load_model(device="cpu")
    with LocalServer(ServerConfig(port=0, max_rate=None), engine=engine) as server, \
            tempfile.TemporaryDirectory() as tmp:
        rows, rec = accuracy(server, Path(tmp))
        rows += cost(rec)
        if not quick:
            rows += two_streams(server)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="accuracy and cost only")
    args = ap.parse_args()
    for _, measure, value, target in run(args.quick):
        print(f"{measure:<92} {value:>30}   {target}")


if __name__ == "__main__":
    main()
