"""Benchmark of "You vs Others" with the call on speakers: is every sentence written once?

    python bench/echo.py            # about 4 minutes: 9 calls of 20 s through PulseAudio
    python bench/echo.py --quick    # the canceller's CPU only (seconds)

A call (20 s of one real voice) plays into one PulseAudio null sink ("others" captures its
monitor); your voice (10 s of another real voice, starting 5 s in, so you talk over the call)
plus what the microphone hears of the call plays into a second null sink ("you"). The microphone
hears the call at -12 dB 40 ms late, or at -6 dB 150 ms late with 300 ms of reverberation.
Both are transcribed by the local server at real time, four ways: nothing done about echo, only
the transcript-level net, only the acoustic echo canceller, both (the default). Reported: how
many of the call's 10 phrases also appear under "you", the word error rate of your own words
(against a microphone that hears no call), and the canceller's CPU per audio second (run on
arrays, one thread).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from nbscribe.echo import EchoCanceller, echo_cancellation_available  # noqa: E402
from nbscribe.metrics import word_error_rate  # noqa: E402
from tests import calls  # noqa: E402
from tests.dialogues import RATE  # noqa: E402

SECTION = "echo (you vs others on speakers)"
LEAKS = {"-12 dB, 40 ms": (40, -12, 0), "-6 dB, 150 ms, 300 ms reverb": (150, -6, 300)}
WAYS = {"nothing": dict(cancel_echo=False, include_echo=True),
        "transcript net only": dict(cancel_echo=False, include_echo=False),
        "canceller only": dict(cancel_echo=True, include_echo=True),
        "both (default)": dict(cancel_echo=True, include_echo=False)}


def canceller_cpu(call: np.ndarray, you: np.ndarray) -> float:
    """CPU seconds per audio second of the canceller, both sides, on one thread."""
    mic = you + calls.leak(call, 40, -12)
    canceller = EchoCanceller(RATE)
    n = RATE // 20
    cpu = time.process_time()
    for i in range(0, len(call) - n + 1, n):
        canceller.reference.push(calls.pcm(call[i:i + n]), at=i / RATE)
        canceller.microphone.push(calls.pcm(mic[i:i + n]), at=i / RATE)
    canceller.reference.close()
    canceller.microphone.close()
    return (time.process_time() - cpu) / (len(call) / RATE)


def run(quick: bool) -> list[tuple[str, str, str, str]]:
    """Run the benchmark; return rows of (section, measure, result, target)."""
    if not echo_cancellation_available():
        return [(SECTION, "acoustic echo canceller", "skipped: pip install 'nbscribe[echo]'",
                 "")]
    call, you = calls.call_and_you()
    rows = [(SECTION, "canceller CPU per audio second (both sides, one thread)",
             f"{canceller_cpu(call, you):.4f} core-s/s", "<= 0.02")]
    if quick:
        return rows
    from nbscribe.server import load_model
    from tests.conftest import Pulse

    engine = load_model(device="cpu")
    pulse = Pulse()
    try:
        from nbscribe.devices import sounddevice_module

        sounddevice_module(refresh=True)
        with tempfile.TemporaryDirectory() as tmp:
            clean = calls.transcribe_call(pulse, engine, Path(tmp), you, call)
            base = word_error_rate(calls.BECKETT, calls.said(clean.session, "you"))
            rows.append((SECTION, "WER of your words, microphone hearing no call", f"{base:.2f}",
                         "baseline"))
            for leak_name, (delay, gain, reverb) in LEAKS.items():
                mic = you + calls.leak(call, delay, gain, reverb)
                for way, options in WAYS.items():
                    with tempfile.TemporaryDirectory() as run_dir:
                        multi = calls.transcribe_call(pulse, engine, Path(run_dir), mic, call,
                                                      **options)
                    mine = calls.said(multi.session, "you")
                    twice = sum(line in mine for line in calls.CALL_LINES)
                    wer = word_error_rate(calls.BECKETT, mine)
                    rows.append((SECTION, f"leak {leak_name}, {way}: call phrases also under "
                                 "'you', WER of your words", f"{twice}/10, {wer:.2f}",
                                 "0/10, near baseline"))
    finally:
        pulse.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the canceller's CPU only")
    args = ap.parse_args()
    for _, measure, value, target in run(args.quick):
        print(f"{measure:<92} {value:>22}   {target}")


if __name__ == "__main__":
    main()
