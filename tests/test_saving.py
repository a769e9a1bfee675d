"""One save path: `nbscribe.export.save` for a session, a multi-source session and every caller.

`Transcriber.stop`, `Session.save`, `MultiSession.save`, `MultiTranscriber.stop` and the panel's
Save all go through it, and a stop writes each file once.
"""

from __future__ import annotations

import numpy as np
import pytest

from nbscribe import MultiTranscriber, Session, Transcriber
from nbscribe.events import Turn, Word
from nbscribe.export import save
from nbscribe.multi import MultiSession
from nbscribe.recorder import LiveSession, Recorder
from nbscribe.sources import ArraySource
from nbscribe.testing import FakeService, Script
from nbscribe.wavfile import WavWriter

from .conftest import sine
from .scripted_server import turn, word

KEY = "00112233445566778899aabbccddeeff"


class OneTurn(Script):
    """Answers the first audio with one final turn."""

    def __init__(self, text: str) -> None:
        self.text = text

    def on_audio(self, conn, data: bytes) -> None:
        if len(conn.audio) == 1:
            conn.send(turn(0, [word(self.text, 0, 300)], True, True))


def session_with(text: str, audio=None) -> Session:
    s = Session()
    s.apply(Turn(0, text, True, True, 1.0, (Word(text, 0, 300, 0.9, True),)))
    s.audio_path = audio
    return s


def wav(path, seconds=0.2):
    w = WavWriter(path, 16000)
    w.write((sine(seconds, 16000) * 10000).astype("<i2").tobytes())
    w.close()
    return path


@pytest.fixture
def saves(monkeypatch):
    """Record every folder `export.save` writes a plain session into."""
    import nbscribe.export

    folders: list = []
    real = nbscribe.export.save

    def spy(session, folder, formats=nbscribe.export.DEFAULT_FORMATS):
        if isinstance(session, Session):
            folders.append(str(folder))
        return real(session, folder, formats)

    monkeypatch.setattr(nbscribe.export, "save", spy)
    return folders


def test_a_session_with_its_audio(tmp_path):
    audio = wav(tmp_path / "captured.wav")
    s = session_with("Hello.", audio)
    written = save(s, tmp_path / "out", ("wav", "csv", "md"))
    assert sorted(p.name for p in written) == ["audio.wav", "transcript.md", "turns.csv",
                                               "words.csv"]
    assert (tmp_path / "out" / "audio.wav").read_bytes() == audio.read_bytes()
    # the audio already in the folder is left alone, not copied onto itself
    before = (tmp_path / "out" / "audio.wav").stat().st_mtime_ns
    s.audio_path = tmp_path / "out" / "audio.wav"
    save(s, tmp_path / "out", ("wav",))
    assert (tmp_path / "out" / "audio.wav").stat().st_mtime_ns == before
    # no audio: the other files still are written
    assert [p.name for p in save(session_with("Hi."), tmp_path / "none", ("wav", "srt"))] == [
        "transcript.srt"]


def test_a_multi_session_merged_and_a_folder_per_source(tmp_path):
    multi = MultiSession({"you": session_with("Mine.", wav(tmp_path / "a.wav")),
                          "others": session_with("Theirs.", wav(tmp_path / "b.wav"))},
                         {"you": 0.0, "others": 1.5})
    out = multi.save(tmp_path / "out", ("csv", "json", "wav"))
    assert out == tmp_path / "out"
    top = sorted(p.name for p in out.iterdir())
    assert top == ["others", "turns.csv", "words.csv", "you"]  # json is per source
    for name in ("you", "others"):
        assert sorted(p.name for p in (out / name).iterdir()) == [
            "audio.wav", "session.json", "turns.csv", "words.csv"]
    import pandas as pd

    merged = pd.read_csv(out / "turns.csv")
    assert list(merged.source) == ["you", "others"] and list(merged.start) == [0.0, 1.5]


def test_latest_names_each_records_source():
    multi = MultiSession({"you": session_with("Mine."), "others": session_with("Theirs.")},
                         {"you": 0.0, "others": 1.5})
    assert [(r.source, r.turn.transcript, r.start) for r in multi.latest(5)] == [
        ("you", "Mine.", 0.0), ("others", "Theirs.", 1.5)]
    assert all(r.source is None for r in multi.sessions["you"].latest(5))


def test_transcriber_stop_saves_once_into_out_dir(tmp_path, saves):
    tr = Transcriber(ArraySource(sine(0.5, 16000), 16000, realtime=False), api_key=KEY,
                     connector=FakeService(OneTurn("One.")), out_dir=tmp_path)
    tr.start()
    assert tr.wait(20)
    session = tr.stop()
    tr.stop()
    assert saves == [str(tmp_path)]
    assert session.audio_path == tmp_path / "audio.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audio.wav", "events.jsonl", "session.json", "transcript.srt", "transcript.vtt",
        "turns.csv", "words.csv"]


def test_multi_transcriber_stop_saves_each_source_once(tmp_path, saves):
    sources = {name: ArraySource(sine(0.5, 16000, freq=f), 16000, realtime=False)
               for name, f in (("you", 300.0), ("others", 500.0))}
    # both sources say the same thing at once: not an echo here (echo_of={}), two people
    multi = MultiTranscriber(sources, api_key=KEY, connector=FakeService(OneTurn("Said.")),
                             out_dir=tmp_path, echo_of={})
    multi.start()
    assert multi.wait(20)
    session = multi.stop()
    multi.stop()
    # each source's folder once (not once by its transcriber and again by the merged save)
    assert sorted(saves) == [str(tmp_path / "others"), str(tmp_path / "you")]
    assert sorted(session.turns.source) == ["others", "you"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "others", "turns.csv", "words.csv", "you"]
    for name in ("you", "others"):
        files = sorted(p.name for p in (tmp_path / name).iterdir())
        assert files == ["audio.wav", "events.jsonl", "session.json", "transcript.srt",
                         "transcript.vtt", "turns.csv", "words.csv"]
        assert session.sessions[name].audio_path == tmp_path / name / "audio.wav"


def test_both_transcribers_are_recorders_and_their_sessions_live_sessions():
    one = Transcriber(ArraySource(np.zeros(1600), 16000), api_key=KEY)
    many = MultiTranscriber({"a": ArraySource(np.zeros(1600), 16000)}, api_key=KEY)
    for recorder in (one, many):
        assert isinstance(recorder, Recorder)
        assert isinstance(recorder.session, LiveSession)
        unsubscribe = recorder.on(lambda event: None)
        unsubscribe()
