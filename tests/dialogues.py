"""Dialogues with a known speaker for every moment, and a score for speaker labels.

- `two_voice_dialogue`: real speech of two people (a reading of A Tale of Two Cities and the
  Beckett lines of the bundled sample, both from the PyPI package ``moonshine-voice``, MIT),
  alternating with hand-overs of 1 s and of 0.35 s of silence.
- `NAGG_NELL`: who speaks when in the bundled Endgame scene (Nagg's voice is low, about 125 Hz;
  Nell's high, about 190 Hz; "Not now." at 22.3 s is Nell cut in before Nagg goes on 0.46 s
  later).
- `espeak_dialogue`: two espeak-ng voices (male and female) taking turns with the same hand-overs.
- `labelled_share`: the share of the transcribed speech time whose word carries the label of
  the right voice, after matching labels to voices.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

import nbscribe

RATE = 16000
DATA = Path(__file__).parent / "data"

#: (start, end) in seconds of the lines of `two_cities_20s.wav` and of ``beckett.wav`` used.
_CITIES = [(0.15, 7.45), (7.82, 9.52), (9.90, 12.00), (12.40, 15.75), (16.50, 19.60)]
_BECKETT = [(0.05, 2.70), (3.28, 4.10), (4.66, 5.52), (6.38, 8.80)]

#: Who speaks when in ``endgame_nagg_nell.wav``: Nell's lines; everything else is Nagg.
_NELL = [(1.30, 1.90), (3.70, 4.30), (8.40, 11.40), (14.40, 17.10), (19.20, 20.15),
         (22.25, 23.50), (27.70, 28.30)]

Truth = list[tuple[float, float, str]]


def nagg_nell() -> tuple[Path, Truth]:
    """Return the bundled Endgame scene and who speaks when in it."""
    path = nbscribe.sample("endgame_nagg_nell")
    truth: Truth = []
    t = 0.0
    for a, b in _NELL:
        truth += [(t, a, "Nagg"), (a, b, "Nell")]
        t = b
    truth.append((t, 30.0, "Nagg"))
    return path, truth


def _trim(audio: np.ndarray) -> np.ndarray:
    """Cut the silence around a line: 10 ms frames more than 40 dB below its loudest."""
    n = len(audio) // 160
    rms = np.sqrt(np.mean(audio[:n * 160].reshape(n, 160) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-40 / 20))
    return audio[loud[0] * 160:(loud[-1] + 1) * 160]


def _assemble(lines: Sequence[tuple[np.ndarray, str]], gaps: Sequence[float]
              ) -> tuple[np.ndarray, Truth]:
    """Join the lines with the silences in `gaps` between them (trimmed, so gaps are exact)."""
    parts, truth, t = [np.zeros(int(0.5 * RATE), np.float32)], [], 0.5
    for i, (audio, voice) in enumerate(lines):
        audio = _trim(audio)
        truth.append((t, t + len(audio) / RATE, voice))
        t += len(audio) / RATE
        gap = gaps[i % len(gaps)] if i < len(lines) - 1 else 1.0
        parts += [audio, np.zeros(int(gap * RATE), np.float32)]
        t += int(gap * RATE) / RATE
    return np.concatenate(parts), truth


def two_voice_dialogue(gaps: Sequence[float] = (1.0, 0.35)) -> tuple[np.ndarray, Truth]:
    """Return two real voices taking turns (16 kHz float32) and who speaks when.

    Hand-overs alternate between the silences in `gaps`.
    """
    cities, sr = sf.read(DATA / "two_cities_20s.wav", dtype="float32")
    beckett, sr2 = sf.read(nbscribe.sample("beckett"), dtype="float32")
    assert sr == sr2 == RATE
    lines = []
    for i, (a, b) in enumerate(_CITIES):
        lines.append((cities[int(a * RATE):int(b * RATE)], "Cities"))
        if i < len(_BECKETT):
            a, b = _BECKETT[i]
            lines.append((beckett[int(a * RATE):int(b * RATE)], "Beckett"))
    return _assemble(lines, gaps)


_ESPEAK_LINES = [
    ("en-us", "Good morning. Did you get a chance to read the report I sent on Friday?"),
    ("en-us+f3", "I did. The numbers for the second quarter look much better than I expected."),
    ("en-us", "They do. Sales in the north went up by almost twenty percent."),
    ("en-us+f3", "Then we should talk about hiring two more people for that team."),
    ("en-us", "I agree. Can you draft a plan and send it to me by Wednesday?"),
    ("en-us+f3", "Yes, I will have it ready by Tuesday afternoon."),
]


def espeak_dialogue(workdir: Path, gaps: Sequence[float] = (1.0, 0.35)
                    ) -> tuple[np.ndarray, Truth]:
    """Return two espeak-ng voices taking turns (16 kHz float32) and who speaks when."""
    lines = []
    for i, (voice, text) in enumerate(_ESPEAK_LINES):
        wav = workdir / f"line{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(wav), text], check=True)
        audio, sr = sf.read(wav, dtype="float32")
        if sr != RATE:
            import soxr

            audio = soxr.resample(audio, sr, RATE).astype(np.float32)
        lines.append((audio, "male" if voice == "en-us" else "female"))
    return _assemble(lines, gaps)


def labelled_share(words: Sequence[tuple[float, float, str | None]], truth: Truth
                   ) -> tuple[float, dict[str, str]]:
    """Return the share of word time labelled with the right voice, and the label -> voice map.

    Each label is matched to the voice it covers most time of (one voice per label; a second
    label of the same voice counts as wrong).
    """
    overlap: dict[tuple[str, str], float] = {}
    total = 0.0
    for start, end, label in words:
        mid = (start + end) / 2
        voice = next((v for a, b, v in truth if a <= mid < b), None)
        total += end - start
        if voice is not None and label:
            overlap[label, voice] = overlap.get((label, voice), 0.0) + end - start
    mapping: dict[str, str] = {}
    for (label, voice), _ in sorted(overlap.items(), key=lambda kv: -kv[1]):
        if label not in mapping and voice not in mapping.values():
            mapping[label] = voice
    right = sum(t for (label, voice), t in overlap.items() if mapping.get(label) == voice)
    return (right / total if total else 0.0), mapping
