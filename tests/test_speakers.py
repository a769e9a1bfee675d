"""Offline speaker labels: the voice encoder, the online labeller, and the local server's labels."""

from __future__ import annotations

import csv
import io
import itertools
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nbscribe.events import Turn, Word
from nbscribe.server.speakers import UNKNOWN, SpeakerLabeller, SpeakerSettings
from nbscribe.server.voice import VoiceEncoder, cosine

from . import dialogues
from .dialogues import RATE, labelled_share, two_voice_dialogue

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def encoder():
    return VoiceEncoder()


@pytest.fixture(scope="module")
def dialogue():
    return two_voice_dialogue()


def lines(dialogue):
    """The dialogue's lines as (audio, start ms, voice)."""
    audio, truth = dialogue
    return [(audio[int(a * RATE):int(b * RATE)], a * 1000, voice) for a, b, voice in truth]


def turn_of(order: int, pieces: list[tuple[float, float]], texts: list[str]) -> Turn:
    """A final turn whose words span `pieces` (ms), one word per piece."""
    words = tuple(Word(text=t, start=round(a), end=round(b), confidence=0.9, word_is_final=True)
                  for (a, b), t in zip(pieces, texts, strict=True))
    return Turn(turn_order=order, transcript=" ".join(texts), end_of_turn=True,
                turn_is_formatted=True, words=words)


def line_turn(order: int, audio: np.ndarray, start_ms: float) -> Turn:
    """One line as a turn of two words (the second ends a sentence)."""
    end = start_ms + len(audio) * 1000 / RATE
    mid = (start_ms + end) / 2
    return turn_of(order, [(start_ms, mid), (mid, end)], ["words", "said."])


# -- the encoder -------------------------------------------------------------------------------


def test_one_voice_is_closer_to_itself_than_to_another(encoder, dialogue):
    by_voice: dict[str, list[np.ndarray]] = {}
    for audio, _, voice in lines(dialogue):
        by_voice.setdefault(voice, []).append(encoder.embed(audio))
    same = [cosine(a, b) for v in by_voice.values() for i, a in enumerate(v) for b in v[i + 1:]]
    cross = [cosine(a, b) for a in by_voice["Cities"] for b in by_voice["Beckett"]]
    assert min(same) > max(cross), (min(same), max(cross))  # every pair, not only on average
    assert np.mean(same) - np.mean(cross) > 0.2


def test_embeddings_are_unit_vectors_and_level_does_not_matter(encoder, dialogue):
    audio = lines(dialogue)[0][0]
    e = encoder.embed(audio)
    assert e.shape == (256,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    assert cosine(e, encoder.embed(audio * 0.05)) > 0.999  # 26 dB quieter: the same voice
    assert np.isfinite(encoder.embed(np.zeros(800, np.float32))).all()  # silence, 50 ms


def test_the_shipped_weights_are_plain_arrays():
    import importlib.resources

    ref = importlib.resources.files("nbscribe.server").joinpath("ge2e.npz")
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        assert npz["lstm.weight_hh_l0"].shape == (1024, 256)
        assert npz["linear.weight"].dtype == np.float16


def test_the_converter_refuses_anything_but_tensors():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from convert_ge2e import _Unpickler
    finally:
        sys.path.pop(0)

    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    with pytest.raises(pickle.UnpicklingError, match=r"refusing .*print"):
        _Unpickler(io.BytesIO(pickle.dumps(Evil(), protocol=2))).load()


# -- the labeller, on turns cut at the true hand-overs ------------------------------------------


def test_each_line_gets_its_voices_label(encoder, dialogue):
    labeller = SpeakerLabeller(encoder)
    got = []
    for i, (audio, start, voice) in enumerate(lines(dialogue)):
        (turn,) = labeller.label(line_turn(i, audio, start), audio, start)
        got.append((turn.speaker_label, voice))
        assert {w.speaker for w in turn.words} == {turn.speaker_label}
    assert dict(got) == {"A": "Cities", "B": "Beckett"}  # two labels, one per voice
    assert labeller.revise() is None  # nothing to correct


def test_a_quick_hand_over_inside_one_turn_is_split(encoder, dialogue):
    audio, truth = dialogue
    (a0, a1, v0), (b0, b1, v1) = truth[1], truth[2]  # Beckett, then Cities 0.35 s later
    assert (v0, v1) == ("Beckett", "Cities") and b0 - a1 == pytest.approx(0.35, abs=0.01)
    labeller = SpeakerLabeller(encoder)
    for i, (line, start, _) in enumerate(lines(dialogue)[:2]):  # both voices heard once
        labeller.label(line_turn(i, line, start), line, start)
    merged = audio[int(a0 * RATE):int(b1 * RATE)]
    mid = (a0 + a1) * 500
    turn = turn_of(2, [(a0 * 1000, mid), (mid, a1 * 1000), (b0 * 1000, b1 * 1000)],
                   ["Ever tried.", "Ever failed.", "It-was-the-epoch."])
    out = labeller.label(turn, merged, a0 * 1000)
    assert [t.turn_order for t in out] == [2, 3]
    assert [t.transcript for t in out] == ["Ever tried. Ever failed.", "It-was-the-epoch."]
    assert [t.speaker_label for t in out] == ["B", "A"]
    assert [w.speaker for w in out[0].words + out[1].words] == ["B", "B", "A"]


def test_a_turn_of_one_voice_is_not_split(encoder, dialogue):
    line = lines(dialogue)[0]  # Cities, cut in four "sentences"
    n = len(line[0]) * 1000 / RATE
    cuts = [line[1] + n * k / 4 for k in range(5)]
    turn = turn_of(0, list(itertools.pairwise(cuts)), ["One.", "two.", "three.", "four."])
    out = SpeakerLabeller(encoder).label(turn, line[0], line[1])
    assert len(out) == 1 and out[0].speaker_label == "A"


def test_max_speakers_caps_the_labels(encoder, dialogue):
    labeller = SpeakerLabeller(encoder, SpeakerSettings(max_speakers=1))
    labels = {labeller.label(line_turn(i, a, s), a, s)[0].speaker_label
              for i, (a, s, _) in enumerate(lines(dialogue))}
    assert labels == {"A"}


def test_a_short_first_turn_is_unknown_until_the_end(encoder, dialogue):
    ls = lines(dialogue)
    short_audio, short_start, voice = ls[3]  # Beckett: "No matter." (0.8 s)
    assert voice == "Beckett" and len(short_audio) < RATE
    labeller = SpeakerLabeller(encoder)
    (first,) = labeller.label(line_turn(0, short_audio, short_start), short_audio, short_start)
    assert first.speaker_label == UNKNOWN  # too little speech to start a speaker
    for i, (a, s, _) in enumerate(ls[:2]):
        labeller.label(line_turn(i + 1, a, s), a, s)
    revision = labeller.revise()
    assert revision is not None
    (order, label, words), = revision.revisions
    assert order == 0 and label == "B" and {w.speaker for w in words} == {"B"}


# -- the local server, end to end --------------------------------------------------------------


def words_of(out: Path) -> list[tuple[float, float, str]]:
    rows = list(csv.DictReader(open(out / "words.csv")))
    return [(float(r["start"]), float(r["end"]), r["speaker"]) for r in rows]


def transcribe_labelled(tmp_path: Path, wav: Path) -> list[tuple[float, float, str]]:
    from .test_cli import nbscribe

    out = tmp_path / "out"
    res = nbscribe("transcribe", "--file", str(wav), "--local", "--fast", "--speaker-labels",
                   "--out", str(out), env={"ASSEMBLYAI_API_KEY": "", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    return words_of(out)


@pytest.mark.engine
@pytest.mark.parametrize("gaps", [(1.0,), (0.35,)], ids=["1s", "0.35s"])
def test_two_real_voices_are_labelled(tmp_path, gaps):
    audio, truth = two_voice_dialogue(gaps)
    wav = tmp_path / "dialogue.wav"
    sf.write(wav, audio, RATE)
    share, mapping = labelled_share(transcribe_labelled(tmp_path, wav), truth)
    assert sorted(mapping.values()) == ["Beckett", "Cities"] and len(mapping) == 2
    labels = {w[2] for w in words_of(tmp_path / "out")}
    assert labels == set(mapping), labels  # exactly two labels, no UNKNOWN left
    assert share >= 0.9, (share, mapping)


@pytest.mark.engine
def test_the_bundled_scene_is_labelled(tmp_path):
    wav, truth = dialogues.nagg_nell()
    share, mapping = labelled_share(transcribe_labelled(tmp_path, wav), truth)
    assert sorted(mapping.values()) == ["Nagg", "Nell"]
    assert share >= 0.9, (share, mapping)


@pytest.mark.engine
def test_espeak_voices_are_labelled(tmp_path):
    audio, truth = dialogues.espeak_dialogue(tmp_path)
    wav = tmp_path / "espeak.wav"
    sf.write(wav, audio, RATE)
    share, mapping = labelled_share(transcribe_labelled(tmp_path, wav), truth)
    assert sorted(mapping.values()) == ["female", "male"]
    assert share >= 0.8, (share, mapping)  # synthetic voices sound more alike to the encoder


@pytest.mark.engine
def test_the_official_sdk_receives_labels(whisper_model):
    from assemblyai.streaming.v3 import (
        StreamingClient,
        StreamingClientOptions,
        StreamingEvents,
        StreamingParameters,
    )

    from nbscribe.server import LocalServer, ServerConfig

    audio, _ = two_voice_dialogue((1.0,))
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    turns, revisions, errors = [], [], []
    with LocalServer(ServerConfig(port=0, max_rate=None), engine=whisper_model) as server:
        client = StreamingClient(StreamingClientOptions(
            api_host=server.url.rsplit("/v3/ws", 1)[0], api_key="anything", connect_timeout=5))
        client.on(StreamingEvents.Turn, lambda c, e: turns.append(e))
        client.on(StreamingEvents.Error, lambda c, e: errors.append(e))
        if hasattr(StreamingEvents, "SpeakerRevision"):
            client.on(StreamingEvents.SpeakerRevision, lambda c, e: revisions.append(e))
        client.connect(StreamingParameters(sample_rate=RATE, speech_model="u3-rt-pro",
                                           speaker_labels=True))
        client.stream(pcm[i:i + 1600].tobytes() for i in range(0, len(pcm), 1600))
        client.disconnect(terminate=True)
    assert not errors, errors
    finals = [t for t in turns if t.end_of_turn]
    labels = {t.speaker_label for t in finals}
    assert labels == {"A", "B"}, [(t.speaker_label, t.transcript) for t in finals]
    assert all(w.speaker == t.speaker_label for t in finals for w in t.words)


# -- names for speakers ------------------------------------------------------------------------


def labelled_session():
    from nbscribe import Session
    from nbscribe.events import SpeakerRevision

    session = Session()
    for order, (label, text, t) in enumerate([("A", "Do you hear me?", 0), ("B", "Yes.", 1500),
                                              ("A", "Kiss me.", 3000)]):
        words = (Word(text=text, start=t, end=t + 900, confidence=0.9, word_is_final=True,
                      speaker=label),)
        session.apply(Turn(turn_order=order, transcript=text, end_of_turn=True,
                           turn_is_formatted=True, words=words, speaker_label=label))
    # a revision arriving after the names were given still shows the names
    session.apply(SpeakerRevision(revisions=((2, "A", ()),)))
    return session


def test_names_replace_labels_everywhere(tmp_path):
    from nbscribe.export import to_markdown, to_srt, to_vtt

    session = labelled_session()
    session.name_speakers(A="Nagg", B="Nell")
    assert list(session.turns.speaker) == ["Nagg", "Nell", "Nagg"]
    assert list(session.words.speaker) == ["Nagg", "Nell", "Nagg"]
    assert "Nell: Yes." in to_srt(session) and "<v Nell>Yes." in to_vtt(session)
    assert "Nagg: Do you hear me?" in to_markdown(session)
    data = session.to_dict()
    assert data["speaker_names"] == {"A": "Nagg", "B": "Nell"}
    assert [(t["speaker"], t["speaker_label"]) for t in data["turns"]][:2] == [
        ("Nagg", "A"), ("Nell", "B")]
    session.save(tmp_path, formats=("csv", "json", "srt", "vtt", "md"))
    assert "Nell" in (tmp_path / "turns.csv").read_text()
    assert "Nell" in (tmp_path / "words.csv").read_text()
    # a label named back to itself is a label again
    session.name_speakers(B=None)
    assert list(session.turns.speaker) == ["Nagg", "B", "Nagg"]
    with pytest.raises(TypeError, match="label to a name"):
        session.name_speakers({"A": 3})


def test_names_survive_load_session(tmp_path):
    from nbscribe import ArraySource, Transcriber, load_session
    from nbscribe.messages import encode
    from nbscribe.testing import FakeService, Script

    class OneTurn(Script):
        def on_audio(self, conn, data):
            if len(conn.audio) == 3:
                words = (Word("Hello", 100, 400, 0.9, True, "A"),)
                conn.send(encode(Turn(0, "Hello", True, True, 1.0, words, "Hello", "A")))

    tr = Transcriber(ArraySource(np.zeros(16000, np.float32), 16000, realtime=False),
                     api_key="k" * 32, connector=FakeService(OneTurn()), out_dir=tmp_path)
    tr.session.name_speakers(A="Ann")
    tr.start()
    assert tr.wait(10)
    tr.stop()
    assert list(tr.session.turns.speaker) == ["Ann"]
    assert list(load_session(tmp_path).turns.speaker) == ["Ann"]


def test_a_short_reply_is_not_given_the_only_voice_heard(encoder):
    # the scene's first two turns: Nagg's "Do you hear me?", Nell's "Yes." (0.4 s); with one
    # voice known there is nothing to tell "Yes." apart by: it stays UNKNOWN, even at the end
    import soxr

    wav, _ = dialogues.nagg_nell()
    audio, rate = sf.read(wav, dtype="float32")
    audio = soxr.resample(audio, rate, RATE).astype(np.float32)
    labeller = SpeakerLabeller(encoder)
    labels = []
    for order, (a, b, text) in enumerate([(0.0, 1.32, "Do you hear me?"), (1.376, 1.796, "Yes.")]):
        piece = audio[int(a * RATE):int(b * RATE)]
        labels += [t.speaker_label for t in labeller.label(
            turn_of(order, [(a * 1000, b * 1000)], [text]), piece, a * 1000)]
    assert labels == ["A", UNKNOWN]
    assert labeller.revise() is None
