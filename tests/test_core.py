"""Pure parts: parameters, wire decoding, conversion, session rules, exports, the WAV writer."""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest
import soundfile as sf

from nbscribe import ConfigError, Session, StreamingParams
from nbscribe.convert import Converter, level_dbfs
from nbscribe.errors import describe_code, is_retryable
from nbscribe.events import Begin, ErrorEvent, SpeakerRevision, Termination, Turn, Word
from nbscribe.export import save, to_srt, to_vtt
from nbscribe.protocol import build_url, decode, encode_update, redact_url
from nbscribe.wavfile import WavWriter

from .conftest import sine

# -- parameters -------------------------------------------------------------------------------


def test_query_encoding_matches_the_sdk_conventions():
    p = StreamingParams(keyterms_prompt=["Keanu Reeves", "AssemblyAI"], speaker_labels=True,
                        format_turns=False)
    url = build_url("wss://streaming.assemblyai.com/v3/ws", p)
    query = urllib.parse.urlsplit(url).query
    assert "keyterms_prompt=%5B%22Keanu+Reeves%22%2C+%22AssemblyAI%22%5D" in query
    assert "speaker_labels=true" in query and "format_turns=false" in query
    assert "prompt=" not in query.replace("keyterms_prompt", "")  # None is omitted
    assert build_url("ws://127.0.0.1:8765", p).startswith("ws://127.0.0.1:8765/v3/ws?")
    assert build_url("streaming.eu.assemblyai.com", p).startswith(
        "wss://streaming.eu.assemblyai.com/v3/ws?")


def test_server_side_decoding_is_tolerant():
    params, ignored = StreamingParams.from_query([
        ("sample_rate", "48000"), ("speaker_labels", "True"), ("format_turns", "FALSE"),
        ("keyterms_prompt", '["a b", "c"]'), ("keyterms_prompt", "d,e"),
        ("language_code", "es"), ("min_end_of_turn_silence_when_confident", "320"),
        ("token", "secret"), ("unknown_thing", "1"),
    ])
    assert params.sample_rate == 48000 and params.speaker_labels is True
    assert params.format_turns is False
    assert params.keyterms_prompt == ["a b", "c", "d", "e"]
    assert params.language_codes == ["es"]
    assert params.min_turn_silence == 320
    assert ignored == ["unknown_thing"]
    with pytest.raises(ConfigError, match="sample_rate"):
        StreamingParams.from_query([("sample_rate", "fast")])
    with pytest.raises(ConfigError, match="speaker_labels"):
        StreamingParams.from_query([("speaker_labels", "maybe")])


def test_round_trip_of_every_set_parameter():
    p = StreamingParams(speech_model="u3-rt-pro", sample_rate=8000, keyterms_prompt=["x"],
                        min_turn_silence=100, max_turn_silence=1000, speaker_labels=True,
                        max_speakers=2, language_codes=["en", "es"], mode="balanced",
                        inactivity_timeout=30, vad_threshold=0.3)
    back, ignored = StreamingParams.from_query(p.to_query())
    assert back == p and not ignored


def test_update_configuration_message():
    assert json.loads(encode_update(keyterms_prompt=["a"], prompt=None)) == {
        "keyterms_prompt": ["a"], "type": "UpdateConfiguration"}


# -- decoding server messages -----------------------------------------------------------------


def test_decode_each_message_type():
    begin = decode('{"type":"Begin","id":"s1","expires_at":1759796682,'
                   '"configuration":{"model":"u3-rt-pro"}}')
    assert begin == Begin("s1", 1759796682, {"model": "u3-rt-pro"})
    t = decode(json.dumps({"turn_order": 2, "turn_is_formatted": True, "end_of_turn": True,
                           "transcript": "Hi.", "end_of_turn_confidence": 1, "utterance": "Hi.",
                           "words": [{"start": 10, "end": 20, "text": "Hi.", "confidence": 0.5,
                                      "word_is_final": True, "speaker": "A"}],
                           "speaker_label": "A", "language_code": "en", "type": "Turn"}))
    assert isinstance(t, Turn) and t.turn_order == 2 and t.end_of_turn and t.turn_is_formatted
    assert t.words == (Word("Hi.", 10, 20, 0.5, True, "A"),)
    assert t.speaker_label == "A" and t.language_code == "en"
    assert decode('{"type":"Termination","audio_duration_seconds":11,'
                  '"session_duration_seconds":12}') == Termination(11.0, 12.0)
    err = decode('{"type":"Error","error_code":3007,"error":"Input Duration Violation: 25 ms"}')
    assert isinstance(err, ErrorEvent) and err.code == 3007 and "25 ms" in err.message
    bare = decode('{"error": "Unauthorized"}')
    assert isinstance(bare, ErrorEvent) and bare.code is None
    rev = decode('{"type":"SpeakerRevision","revisions":[{"turn_order":3,"speaker_label":"B",'
                 '"words":[]}]}')
    assert rev == SpeakerRevision(((3, "B", ()),))
    ss = decode('{"type":"SpeechStarted","timestamp":1216,"confidence":0.98}')
    assert ss.timestamp == 1216
    warn = decode('{"type":"Warning","warning_code":1,"warning":"slow"}')
    assert warn.message == "slow"


@pytest.mark.parametrize("frame", ["", "{", "null", "[]", "42", '"Turn"', '{"type":"Heartbeat"}',
                                   '{"type":"Turn"}', '{"type":"Turn","turn_order":true}',
                                   b"\xff\xfe"])
def test_decode_never_raises(frame):
    assert decode(frame) is None


def test_codes_say_what_to_do():
    assert "ASSEMBLYAI_API_KEY" in describe_code(1008)
    assert "real-time" in describe_code(3007)
    assert "(server said: boom)" in describe_code(3005, "boom")
    assert "server said" not in describe_code(3005, "See Error message for details")
    assert is_retryable(3005) and is_retryable(1011) and is_retryable(None)
    assert not is_retryable(1008) and not is_retryable(3006) and not is_retryable(3007)


def test_redact_url_hides_tokens():
    url = "wss://h/v3/ws?sample_rate=16000&token=SECRET"
    assert "SECRET" not in redact_url(url) and "sample_rate=16000" in redact_url(url)


# -- conversion ---------------------------------------------------------------------------------


def test_converter_48k_stereo_to_16k_mono_frames():
    x = sine(2.0, 48000, freq=1000, channels=2)
    conv = Converter(48000, 2, 16000, 50)
    frames = []
    for i in range(0, len(x), 1024):  # odd block size, as devices deliver
        frames += conv.push(x[i : i + 1024])
    frames += conv.flush()
    assert {len(f) for f in frames} == {1600}
    y = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float32) / 32768
    assert abs(len(y) - 32000) <= 800  # 2 s, the last frame padded
    spectrum = np.abs(np.fft.rfft(y[4000:20000]))
    assert np.argmax(spectrum) * 16000 / 16000 == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(y[4000:28000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_converter_downmix_and_types():
    conv = Converter(16000, 2, 16000, 50)
    left = np.full((800, 1), 0.5, dtype=np.float32)
    frames = conv.push(np.hstack([left, -left * 0.0]))
    assert np.frombuffer(frames[0], "<i2")[0] == round(0.25 * 32767)
    ints = Converter(16000, 1, 16000, 50).push(np.full(800, 16384, dtype=np.int16))
    assert np.frombuffer(ints[0], "<i2")[0] == 16384
    assert level_dbfs(np.zeros(100)) == -120.0
    assert level_dbfs(np.ones(100)) == pytest.approx(0.0)
    with pytest.raises(ConfigError):
        Converter(16000, 1, 16000, 1001)
    with pytest.raises(ConfigError, match="channel"):
        Converter(16000, 2, 16000, 50).push(np.zeros((800, 3), dtype=np.float32))


def test_last_frame_is_padded():
    conv = Converter(16000, 1, 16000, 100)
    assert conv.push(np.ones(1000, dtype=np.float32) * 0.1) == []
    tail = conv.flush()
    assert len(tail) == 1 and len(tail[0]) == 3200
    assert np.frombuffer(tail[0], "<i2")[1000:].max() == 0


# -- the session's rules --------------------------------------------------------------------------


def _turn(order, text, final, formatted=False, t0=0, speaker=None):
    words = tuple(Word(w, t0 + 100 * i, t0 + 100 * i + 80, 0.9, final, speaker)
                  for i, w in enumerate(text.split()))
    return Turn(order, text, final, formatted, 1.0 if final else 0.0, words,
                speaker_label=speaker)


def test_last_end_of_turn_wins_and_partials_never_undo_finals():
    s = Session()
    s.apply(_turn(0, "hi my", False))
    assert s.partial.turn.transcript == "hi my" and len(s) == 0
    s.apply(_turn(0, "hi my name", True))
    s.apply(_turn(0, "Hi, my name.", True, formatted=True))
    s.apply(_turn(0, "stale partial", False))
    assert list(s.turns.text) == ["Hi, my name."]
    assert s.partial is None
    s.apply(_turn(1, "next", False, t0=2000))
    assert list(s.turns_frame(include_partial=True).final) == [True, False]


def test_speaker_revision_before_the_turn_arrives_is_applied_later():
    s = Session()
    s.apply(SpeakerRevision(((0, "B", ()),)))
    s.apply(_turn(0, "late turn", True))
    assert list(s.turns.speaker) == ["B"]
    assert set(s.words.speaker) == {"B"}


def test_frames_are_typed_even_when_empty():
    s = Session()
    for frame in (s.turns, s.words):
        assert len(frame) == 0
    assert str(s.turns.dtypes["start"]) == "float64"
    assert str(s.turns.dtypes["text"]) == "string"
    s.apply(_turn(0, "a b c", True, speaker="A"))
    t = s.turns
    assert t.loc[0, "n_words"] == 3 and t.loc[0, "speaker"] == "A"
    assert t.loc[0, "start"] == 0.0 and t.loc[0, "end"] == pytest.approx(0.28)


def test_new_segment_shifts_times_onto_one_timeline():
    s = Session()
    s.apply(Begin("a"))
    s.apply(_turn(0, "first", True))
    s.new_segment(offset_ms=60_000)
    s.apply(Begin("b"))
    s.apply(_turn(0, "second", True, t0=500))
    t = s.turns
    assert list(t.text) == ["first", "second"]
    assert list(t.segment) == [0, 1]
    assert t.loc[1, "start"] == pytest.approx(60.5)


# -- exports ------------------------------------------------------------------------------------


def test_srt_vtt_and_files(tmp_path):
    s = Session()
    s.apply(_turn(0, "Hello there.", True, True, t0=1500, speaker="A"))
    s.apply(_turn(1, "Hi.", True, True, t0=3_723_000, speaker="B"))
    srt = to_srt(s)
    assert srt.startswith("1\n00:00:01,500 --> 00:00:01,680\nA: Hello there.\n")
    assert "2\n01:02:03,000 --> 01:02:03,080\nB: Hi." in srt
    vtt = to_vtt(s)
    assert vtt.startswith("WEBVTT\n\n00:00:01.500 --> 00:00:01.680\n<v A>Hello there.")
    written = save(s, tmp_path, ("csv", "parquet", "json", "srt", "vtt", "md"))
    assert {p.name for p in written} == {"turns.csv", "words.csv", "turns.parquet",
                                         "words.parquet", "session.json", "transcript.srt",
                                         "transcript.vtt", "transcript.md"}
    import pandas as pd

    back = pd.read_parquet(tmp_path / "turns.parquet")
    assert list(back.text) == ["Hello there.", "Hi."]
    assert json.loads((tmp_path / "session.json").read_text())["turns"][1]["speaker"] == "B"
    with pytest.raises(ValueError, match="unknown export format"):
        save(s, tmp_path, ("docx",))


# -- the WAV writer -------------------------------------------------------------------------------


def test_wav_is_valid_while_it_grows(tmp_path):
    path = tmp_path / "a.wav"
    w = WavWriter(path, 16000)
    chunk = (np.arange(1600) % 100).astype("<i2").tobytes()
    for n in range(1, 4):
        w.write(chunk)
        data, rate = sf.read(path, dtype="int16")  # read while still open
        assert rate == 16000 and len(data) == 1600 * n
    w.close()
    w.close()
    assert sf.info(path).duration == pytest.approx(0.3)
