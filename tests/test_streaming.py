"""The client and transcriber against a real WebSocket server on loopback, with scripted replies."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import nbscribe
from nbscribe import ArraySource, AuthError, ConfigError, ConnectError, Transcriber

from .conftest import sine
from .scripted_server import ScriptedServer, fail_after, replay, send, turn, word
from .waiting import wait_until

KEY = "0123456789abcdef0123456789abcdef"


def run(server: ScriptedServer, seconds: float = 1.0, realtime: bool = False, **kw) -> Transcriber:
    source = ArraySource(sine(seconds, 48000, channels=2), 48000, realtime=realtime)
    tr = Transcriber(source, url=server.url, api_key=KEY, terminate_timeout=3, **kw)
    tr.start()
    assert tr.wait(30)
    tr.stop()
    return tr


def universal_sequence() -> list[dict]:
    """Classic Universal-Streaming turn with a formatted duplicate (spec §3.3 A)."""
    w = [word("hi", 1920, 2000), word("my", 2800, 2880), word("name", 2960, 3040),
         word("is", 3040, 3120)]
    partial = turn(0, [*w, word("son", 3600, 3680, final=False)], False, False)
    raw = turn(0, [*w, word("sonny", 3600, 3840)], True, False)
    formatted = turn(0, [word("Hi,", 1920, 2000), word("my", 2800, 2880),
                         word("name", 2960, 3040), word("is", 3040, 3120),
                         word("Sonny.", 3600, 3840)], True, True, utterance="")
    return [partial, raw, formatted]


def pro_sequence(order: int = 0, offset: int = 0) -> list[dict]:
    """U3-Pro: SpeechStarted, revising partials, one formatted final (spec §3.3 C)."""
    return [
        {"type": "SpeechStarted", "timestamp": 1216 + offset, "confidence": 0.98},
        turn(order, [word("My", 1216 + offset, 1627 + offset, False),
                     word("name", 1668 + offset, 2490 + offset, False),
                     word("was—", 2531 + offset, 3067 + offset, False)], False, False),
        turn(order, [word("My", 1216 + offset, 1627 + offset, False),
                     word("name", 1668 + offset, 2490 + offset, False),
                     word("is—", 2531 + offset, 3067 + offset, False)], False, False),
        turn(order, [word("My", 1216 + offset, 1627 + offset), word("name", 1668 + offset,
                     2490 + offset), word("is", 2531 + offset, 3067 + offset),
                     word("Sonny.", 3100 + offset, 3500 + offset)], True, True),
    ]


def test_universal_formatted_duplicate_replaces_raw_final():
    seen = []
    with ScriptedServer(replay(universal_sequence())) as server:
        source = ArraySource(sine(0.5, 16000), 16000)
        tr = Transcriber(source, url=server.url, api_key=KEY, speech_model=
                         "universal-streaming-english", format_turns=True)
        tr.on(seen.append)
        tr.start()
        assert tr.wait(10)
        session = tr.stop()
    turns = session.turns
    assert list(turns.text) == ["Hi, my name is Sonny."]
    assert turns.loc[0, "formatted"]
    assert turns.loc[0, "start"] == pytest.approx(1.92)
    assert turns.loc[0, "end"] == pytest.approx(3.84)
    assert list(session.words.text) == ["Hi,", "my", "name", "is", "Sonny."]
    # the listener saw every message, in order
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "Begin" and kinds[-1] == "Termination"
    assert kinds.count("Turn") == 3


def test_pro_partials_revise_then_one_final():
    partials = []
    with ScriptedServer(replay(pro_sequence(0) + pro_sequence(1, offset=4000))) as server:
        source = ArraySource(sine(0.5, 16000), 16000)
        tr = Transcriber(source, url=server.url, api_key=KEY)
        tr.on(lambda e: partials.append(e.transcript)
              if isinstance(e, nbscribe.Turn) and not e.end_of_turn else None)
        tr.start()
        assert tr.wait(10)
        session = tr.stop()
    assert partials[:2] == ["My name was—", "My name is—"]
    assert list(session.turns.turn_order) == [0, 1]
    assert list(session.turns.text) == ["My name is Sonny."] * 2
    assert session.turns.loc[1, "start"] == pytest.approx(5.216)
    assert session.partial is None
    assert len(session.words) == 8 and session.words.word_is_final.all()


def test_speaker_revision_relabels_earlier_turns():
    t0 = turn(0, [word("Hello", 0, 400, speaker="A"), word("there.", 400, 800, speaker="A")],
              True, True, speaker_label="A")
    t1 = turn(1, [word("Hi.", 1000, 1300, speaker="A")], True, True, speaker_label="A")
    revision = {"type": "SpeakerRevision", "revisions": [
        {"turn_order": 1, "speaker_label": "B",
         "words": [word("Hi.", 1000, 1300, speaker="B")]}]}
    with ScriptedServer(replay([t0, t1], on_terminate=[revision])) as server:
        tr = run(server, 0.5, speaker_labels=True)
    turns = tr.session.turns
    assert list(turns.speaker) == ["A", "B"]
    assert list(tr.session.words.speaker) == ["A", "A", "B"]
    assert "speaker_labels" in server.sessions[0].query


def test_what_the_server_receives():
    """Chunks of 50 ms, paced at real time, headers, query, and Terminate last."""
    with ScriptedServer(replay([])) as server:
        source = ArraySource(sine(1.0, 48000, channels=2), 48000, realtime=True)
        tr = Transcriber(source, url=server.url, api_key=KEY, keyterms_prompt=["Nagg", "Nell"],
                         max_turn_silence=800)
        tr.start()
        assert tr.wait(10)
        tr.stop()
    rec = server.sessions[0]
    # query and headers
    assert rec.path == "/v3/ws"
    assert rec.query["speech_model"] == ["u3-rt-pro"]
    assert rec.query["sample_rate"] == ["16000"]
    assert rec.query["encoding"] == ["pcm_s16le"]
    assert json.loads(rec.query["keyterms_prompt"][0]) == ["Nagg", "Nell"]
    assert rec.query["max_turn_silence"] == ["800"]
    assert rec.headers["Authorization"] == KEY
    assert rec.headers["AssemblyAI-Version"] == "2025-05-12"
    assert "nbscribe" in rec.headers["User-Agent"]
    # every chunk 50 ms of 16 kHz PCM16 (the last one padded), one second in all
    sizes = {len(b) for _, b in rec.audio}
    assert sizes == {1600}
    assert len(rec.audio) == 20
    # never ahead of real time by more than one frame (two frames captured together may leave
    # together): chunk i leaves no earlier than (i - 1) * 50 ms after the first
    t0 = rec.audio[0][0]
    for i, (t, _) in enumerate(rec.audio):
        assert t - t0 >= (i - 1) * 0.050 - 0.015, f"chunk {i} came {t - t0:.3f} s after the first"
    assert rec.audio[-1][0] - t0 >= 0.85  # one second of audio took its second
    assert rec.control_types == ["Terminate"]
    # the WAV holds exactly what was sent
    import soundfile as sf

    audio, rate = sf.read(tr.audio_path, dtype="int16")
    assert rate == 16000 and audio.shape == (16000,)
    sent = np.frombuffer(b"".join(b for _, b in rec.audio), dtype="<i2")
    assert np.array_equal(audio, sent)


def test_frame_size_is_configurable_and_bounded():
    with ScriptedServer(replay([])) as server:
        run(server, 1.0, frame_ms=200)
    assert {len(b) for _, b in server.sessions[0].audio} == {6400}
    with pytest.raises(ConfigError, match="50-1000"):
        Transcriber(ArraySource(sine(1, 16000), 16000), url="ws://x", frame_ms=20)


def test_bad_key_raises_at_start_quickly_with_one_attempt():
    script = fail_after(1008, "Unauthorized Connection: Invalid API key", with_begin=False)
    with ScriptedServer(script) as server:
        tr = Transcriber(ArraySource(sine(1, 16000), 16000), url=server.url, api_key="bad")
        t = time.monotonic()
        with pytest.raises(AuthError) as info:
            tr.start()
        elapsed = time.monotonic() - t
    assert elapsed < 5
    assert info.value.code == 1008
    assert "ASSEMBLYAI_API_KEY" in str(info.value) and "bad" not in str(info.value).split()
    assert len(server.sessions) == 1
    assert tr.state == "error"


def test_http_401_at_handshake_is_an_auth_error():
    from websockets.sync.server import serve

    def reject(conn, request):
        return conn.respond(401, "Unauthorized\n")

    with serve(lambda c: None, "127.0.0.1", 0, process_request=reject) as srv:
        import threading

        th = threading.Thread(target=srv.serve_forever, daemon=True)
        th.start()
        port = srv.socket.getsockname()[1]
        tr = Transcriber(ArraySource(sine(1, 16000), 16000), url=f"ws://127.0.0.1:{port}",
                         api_key="bad")
        with pytest.raises(AuthError, match="HTTP 401"):
            tr.start()
        srv.shutdown()


def test_unreachable_server_says_what_to_check():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    tr = Transcriber(ArraySource(sine(1, 16000), 16000), url=f"ws://127.0.0.1:{port}",
                     api_key=KEY, connect_timeout=2)
    with pytest.raises(ConnectError, match="cannot reach"):
        tr.start()


@pytest.mark.parametrize(
    ("code", "text", "match", "reconnect"),
    [
        (3007, "Input Duration Error: Input Duration Violation: 25.0 ms", "50-1000 ms", True),
        (3006, "Invalid Message Type: foo", "invalid", True),
        (3005, "Session Cancelled: An error occurred", "start a new session", False),
    ],
)
def test_server_error_mid_stream_keeps_what_was_said(code, text, match, reconnect):
    """Errors a retry cannot fix (or any error, without reconnect) end the session."""
    before = [turn(0, [word("Kept.", 0, 300)], True, True)]
    with ScriptedServer(fail_after(code, text, after_audio_bytes=6400, before=before)) as server:
        tr = run(server, 2.0, realtime=True, reconnect=reconnect)
    assert len(server.sessions) == 1  # no retry
    assert tr.error is not None and tr.error.code == code
    assert match in str(tr.error)
    assert list(tr.session.turns.text) == ["Kept."]
    assert [e.code for e in tr.session.errors] == [code]  # Error frame + close: one error
    with pytest.raises(nbscribe.StreamError):
        tr.raise_for_error()
    # the audio captured up to the error is on disk
    assert tr.session.audio_seconds >= 0.2


def test_malformed_and_hostile_frames_are_ignored():
    junk = [
        "not json at all",
        "[1, 2, 3]",
        '{"type": "Nonsense", "x": 1}',
        '{"type": "Turn", "turn_order": "zero", "transcript": 5}',
        '{"type": "Turn", "turn_order": 0, "transcript": 5, "words": "nope", "end_of_turn": 1}',
        '{"type": "SpeakerRevision", "revisions": [1, {"turn_order": null}]}',
        '{"type": "Begin"}',
        '{"turn_order": 0}',
        "x" * 200_000,
    ]

    def script(conn, rec):
        replay([*junk, turn(0, [word("Fine.", 0, 300)], True, True)])(conn, rec)

    with ScriptedServer(script) as server:
        tr = run(server, 0.5)
    assert tr.error is None
    assert list(tr.session.turns.text) == ["Fine."]


def test_server_that_never_sends_termination_is_left_in_bounded_time():
    def script(conn, rec):
        send(conn, {"type": "Begin", "id": "x", "expires_at": 0})
        while True:
            data = conn.recv()
            if isinstance(data, str):
                rec.texts.append(data)  # ignores Terminate and keeps the socket open

    with ScriptedServer(script) as server:
        source = ArraySource(sine(0.2, 16000), 16000)
        tr = Transcriber(source, url=server.url, api_key=KEY, terminate_timeout=1.0)
        tr.start()
        assert tr.wait(10)
        t = time.monotonic()
        tr.stop()
        assert time.monotonic() - t < 5
    assert server.sessions[0].control_types == ["Terminate"]


def test_stop_mid_stream_sends_the_rest_and_terminates():
    with ScriptedServer(replay([])) as server:
        source = ArraySource(sine(30, 16000), 16000, realtime=True)
        tr = Transcriber(source, url=server.url, api_key=KEY)
        tr.start()
        assert wait_until(lambda: len(server.sessions[0].audio) >= 10, 10)  # half a second
        tr.stop()
        tr.stop()  # idempotent
    rec = server.sessions[0]
    assert rec.control_types == ["Terminate"]
    assert 0.5 <= len(rec.audio) * 0.05 < 2.0
    assert tr.state == "stopped"


def test_mid_session_controls_reach_the_server():
    with ScriptedServer(replay([])) as server:
        source = ArraySource(sine(3, 16000), 16000, realtime=True)
        tr = Transcriber(source, url=server.url, api_key=KEY)
        tr.start()
        tr.force_endpoint()
        tr.update_configuration(keyterms_prompt=["nbscribe"], max_turn_silence=700)
        with pytest.raises(ConfigError, match="max_turn_silence"):
            tr.update_configuration(max_turn_silence=-1)
        tr.stop()
    texts = [json.loads(t) for t in server.sessions[0].texts]
    assert texts[0] == {"type": "ForceEndpoint"}
    assert texts[1] == {"keyterms_prompt": ["nbscribe"], "max_turn_silence": 700,
                        "type": "UpdateConfiguration"}
    assert texts[-1] == {"type": "Terminate"}


def test_invalid_parameters_are_named_before_connecting():
    src = ArraySource(sine(1, 16000), 16000)
    cases = [
        ({"keyterms_prompt": ["x" * 60]}, "keyterm"),
        ({"min_turn_silence": 900, "max_turn_silence": 500}, "min_turn_silence"),
        ({"max_speakers": 3}, "speaker_labels"),
        ({"speech_model": "universal-streaming-english", "prompt": "hi"}, "prompt"),
        ({"sample_rate": 100}, "sample_rate"),
        ({"vad_threshold": 2.0}, "vad_threshold"),
        ({"speaker_label": True}, "unknown streaming parameter"),
        ({"language_codes": ["en", "multi"]}, "multi"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match):
            Transcriber(src, url="ws://127.0.0.1:9", api_key=KEY, **kwargs)


def test_key_never_appears_in_repr_or_errors():
    script = fail_after(1008, "Unauthorized Connection: Invalid API key", with_begin=False)
    with ScriptedServer(script) as server:
        tr = Transcriber(ArraySource(sine(1, 16000), 16000), url=server.url, api_key=KEY)
        with pytest.raises(AuthError) as info:
            tr.start()
    for text in (repr(tr), str(info.value), repr(tr.client), repr(tr.session.to_dict())):
        assert KEY not in text
