"""Turn detection without a model: a scripted voice detector and a scripted decoder.

Audio is fed one VAD window (32 ms) at a time, and the fake detector says for each chunk whether
it is speech, so every rule of `TurnEngine` is checked to the window: when a turn opens, when it
ends (max_turn_silence; min_turn_silence after a sentence; ForceEndpoint; finish), what partials
and finals say, and how their words are timed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nbscribe.events import SpeakerRevision, SpeechStarted, Turn
from nbscribe.messages import decode, encode
from nbscribe.params import StreamingParams
from nbscribe.server.pcm import WINDOW
from nbscribe.server.turns import EngineSettings, TurnEngine

CHUNK = bytes(2 * WINDOW)  # one window of PCM16 at 16 kHz
WINDOW_MS = 32
SETTINGS = EngineSettings()  # min_turn_silence 400, max 1000, first partial 500 ms


class FakeVad:
    """Says what the next chunk is: ``"S"`` speech, ``"."`` silence (one probability per call)."""

    def __init__(self) -> None:
        self.next = "."

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        assert windows.shape[1:] == (WINDOW,)
        return np.full(len(windows), 0.9 if self.next == "S" else 0.05, dtype=np.float32)


class FakeDecoder:
    """Returns scripted texts, one per call (the last one repeats), with evenly timed words.

    Word ``i`` starts at ``0.5 + 0.3 i`` s of the audio it was given, lasts 0.25 s and has
    probability ``0.9 - 0.1 i``.
    """

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.calls: list[int] = []  # samples decoded per call

    def transcribe(self, audio, *, language=None, hotwords=None, prompt=None):
        assert audio.dtype == np.float32
        self.calls.append(len(audio))
        text = self.texts[min(len(self.calls), len(self.texts)) - 1]
        words = [(w, 0.5 + 0.3 * i, 0.75 + 0.3 * i, 0.9 - 0.1 * i)
                 for i, w in enumerate(text.split())]
        return text, words


def engine(*texts: str, **params) -> tuple[TurnEngine, FakeVad, FakeDecoder]:
    vad, decoder = FakeVad(), FakeDecoder(*texts)
    return TurnEngine(decoder, StreamingParams(**params), SETTINGS, vad=vad), vad, decoder


def play(turns: TurnEngine, vad: FakeVad, script: str, partials: bool = True
         ) -> list[tuple[int, SpeechStarted | Turn]]:
    """Feed one chunk per character of `script`; return (chunk index, event) for each event."""
    out = []
    for i, kind in enumerate(script):
        vad.next = kind
        out += [(i, event) for event in turns.feed(CHUNK, partials)]
    return out


def finals(events) -> list[tuple[int, Turn]]:
    return [(i, e) for i, e in events if isinstance(e, Turn) and e.end_of_turn]


def partial_turns(events) -> list[Turn]:
    return [e for _, e in events if isinstance(e, Turn) and not e.end_of_turn]


def windows_for(ms: int) -> int:
    return -(-ms // WINDOW_MS)


def test_speech_opens_a_turn_after_two_windows_with_speech_started():
    turns, vad, _ = engine("hello")
    events = play(turns, vad, "." * 10 + "SS")
    assert events == [(11, SpeechStarted(timestamp=10 * WINDOW_MS, confidence=0.9))]


def test_a_turn_ends_after_max_turn_silence_when_the_text_ends_no_sentence():
    turns, vad, _ = engine("hello there")
    speech = "." * 5 + "S" * 20
    events = play(turns, vad, speech + "." * 40)
    ((at, final),) = finals(events)
    silent = at - len(speech) + 1  # silent windows when the final came
    assert silent == windows_for(SETTINGS.max_turn_silence)
    assert final.transcript == "hello there" and final.turn_order == 0


def test_a_turn_ends_after_min_turn_silence_when_the_text_ends_a_sentence():
    turns, vad, _ = engine("Hello there.")
    speech = "." * 5 + "S" * 20
    events = play(turns, vad, speech + "." * 40)
    ((at, final),) = finals(events)
    assert at - len(speech) + 1 == windows_for(SETTINGS.min_turn_silence)
    assert final.transcript == final.utterance == "Hello there."
    assert final.turn_is_formatted and final.end_of_turn_confidence == 1.0


def test_force_endpoint_ends_the_open_turn_and_nothing_else():
    turns, vad, _ = engine("so far")
    assert turns.force_endpoint() == []  # no turn open
    play(turns, vad, "S" * 10)
    (final,) = turns.force_endpoint()
    assert final.end_of_turn and final.transcript == "so far" and final.turn_order == 0
    assert turns.force_endpoint() == []
    assert finals(play(turns, vad, "." * 40)) == []  # the turn does not end twice


def test_finish_flushes_the_open_turn_with_the_last_partial_window():
    turns, vad, decoder = engine("cut short")
    play(turns, vad, "S" * 10)
    vad.next = "S"
    assert turns.feed(bytes(2 * 300)) == []  # 300 samples: less than a window, kept back
    (final,) = turns.finish()
    assert final.end_of_turn and final.transcript == "cut short"
    assert decoder.calls[-1] == 11 * WINDOW  # 10 windows and the padded remainder
    assert turns.finish() == []


def test_partials_are_sent_while_a_turn_is_open():
    turns, vad, decoder = engine("one", "one two", "one two three", "one two three four")
    events = play(turns, vad, "S" * 100)  # 3.2 s of speech, no end yet
    partials = partial_turns(events)
    assert [p.transcript for p in partials] == ["one", "one two", "one two three"]
    for p in partials:
        assert not p.end_of_turn and not p.turn_is_formatted and p.turn_order == 0
        assert p.utterance == "" and p.speaker_label is None
        assert all(not w.word_is_final for w in p.words)
    assert finals(events) == []
    # a server catching up on a backlog decodes no partials
    turns, vad, decoder = engine("one")
    assert partial_turns(play(turns, vad, "S" * 100, partials=False)) == []
    assert decoder.calls == []


def test_every_final_word_carries_its_time_and_confidence():
    turns, vad, _ = engine("Hi there you.", speaker_labels=True)
    events = play(turns, vad, "." * 10 + "S" * 40 + "." * 20)
    ((_, final),) = finals(events)
    # the turn's audio starts 7 windows (the preroll) before the 2 windows that opened it
    start_ms = (10 + 2 - 9) * WINDOW_MS
    assert [(w.text, w.start, w.end, w.confidence) for w in final.words] == [
        ("Hi", start_ms + 500, start_ms + 750, 0.9),
        ("there", start_ms + 800, start_ms + 1050, 0.8),
        ("you.", start_ms + 1100, start_ms + 1350, 0.7),
    ]
    assert all(w.word_is_final for w in final.words)
    assert final.speaker_label is None  # labels come from a speaker labeller (below)
    assert decode(encode(final)) == final  # what the server sends is what the client reads


class SplittingLabeller:
    """Labels every turn "A", except that it cuts a turn in two after its first word."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, float]] = []

    def label(self, turn, audio, start_ms):
        self.seen.append((turn.turn_order, len(audio), start_ms))
        first, rest = turn.words[:1], turn.words[1:]
        return [dataclasses.replace(turn, transcript=first[0].text, words=first,
                                    speaker_label="A"),
                dataclasses.replace(turn, turn_order=turn.turn_order + 1,
                                    transcript=" ".join(w.text for w in rest), words=rest,
                                    speaker_label="B")]

    def revise(self):
        return SpeakerRevision(revisions=((0, "B", ()),))


def test_the_speaker_labeller_gets_each_final_turn_and_may_split_it():
    labeller = SplittingLabeller()
    vad, decoder = FakeVad(), FakeDecoder("Hi there you.")
    turns = TurnEngine(decoder, StreamingParams(speaker_labels=True), SETTINGS, vad=vad,
                       speakers=labeller)
    events = play(turns, vad, "." * 10 + "S" * 40 + "." * 20 + "S" * 30 + "." * 20)
    got = [(t.turn_order, t.transcript, t.speaker_label) for _, t in finals(events)]
    assert got == [(0, "Hi", "A"), (1, "there you.", "B"), (2, "Hi", "A"), (3, "there you.", "B")]
    # the labeller got each turn's own audio (preroll included) and where it starts
    (o0, n0, s0), (o1, _, s1) = labeller.seen
    assert (o0, o1) == (0, 2) and s0 == (10 + 2 - 9) * WINDOW_MS and s1 >= s0 + n0 / 16
    assert turns.finish()[-1] == SpeakerRevision(revisions=((0, "B", ()),))


def test_turn_order_goes_up_by_one_per_final():
    turns, vad, _ = engine("Done.")
    events = play(turns, vad, ("S" * 20 + "." * 40) * 3)
    assert [e.turn_order for _, e in finals(events)] == [0, 1, 2]
    orders = [e.turn_order for _, e in events if isinstance(e, Turn)]
    assert orders == sorted(orders) and len(orders) > 3  # partials carry their turn's order


def test_a_turn_without_words_sends_no_final_and_keeps_its_order():
    turns, vad, _ = engine("", "", "Now words.")
    events = play(turns, vad, ("S" * 5 + "." * 40) + ("S" * 20 + "." * 40))
    assert [(e.turn_order, e.transcript) for _, e in finals(events)] == [(0, "Now words.")]
    assert sum(isinstance(e, SpeechStarted) for _, e in events) == 2


@pytest.mark.parametrize("max_silence, ended", [(300, True), (500, False)])
def test_the_session_parameters_set_the_silences(max_silence, ended):
    turns, vad, _ = engine("no full stop", max_turn_silence=max_silence, min_turn_silence=100)
    events = play(turns, vad, "S" * 20 + "." * windows_for(400))
    assert bool(finals(events)) is ended
