"""The local AssemblyAI-compatible server with the real offline Whisper engine."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import websocket

import nbscribe
from nbscribe import ArraySource, AuthError, ConfigError, FileSource, Transcriber
from nbscribe.metrics import word_error_rate

from .conftest import overlap, sine
from .waiting import wait_until

pytestmark = [pytest.mark.engine]

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "Please send the quarterly report to the marketing team by Friday.",
    "We will start the meeting in five minutes.",
    "Can everyone hear me clearly on the call?",
    "The weather tomorrow will be sunny with a light breeze.",
]


@pytest.fixture(scope="module")
def server(whisper_model):
    from nbscribe.server import LocalServer, ServerConfig

    srv = LocalServer(ServerConfig(port=0, max_rate=None), engine=whisper_model).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict_server(whisper_model):
    """Enforces real-time pacing, requires a key, at most 2 sessions."""
    from nbscribe.server import LocalServer, ServerConfig

    srv = LocalServer(ServerConfig(port=0, api_key="local-secret", max_sessions=2),
                      engine=whisper_model).start()
    yield srv
    srv.stop()


def raw_session(url: str, header: list[str] | None = None, query: str = "sample_rate=16000"):
    return websocket.create_connection(f"{url}?{query}", header=header or [], timeout=10)


def recv_until_close(ws) -> tuple[list[dict], int | None]:
    msgs = []
    while True:
        try:
            opcode, frame = ws.recv_data_frame(True)
        except (websocket.WebSocketException, OSError):
            ws.shutdown()
            return msgs, None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()  # as a real client does after the closing handshake
            return msgs, int.from_bytes(frame.data[:2], "big") if frame.data else None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            msgs.append(json.loads(frame.data))


# -- the official SDK --------------------------------------------------------------------------


def test_official_assemblyai_sdk_streams_a_file(server, samples_dir):
    from assemblyai.streaming.v3 import (
        StreamingClient,
        StreamingClientOptions,
        StreamingEvents,
        StreamingParameters,
    )

    got: dict[str, list] = {"begin": [], "turn": [], "term": [], "error": []}
    client = StreamingClient(StreamingClientOptions(
        api_host=server.url.rsplit("/v3/ws", 1)[0], api_key="anything", connect_timeout=5))
    client.on(StreamingEvents.Begin, lambda c, e: got["begin"].append(e))
    client.on(StreamingEvents.Turn, lambda c, e: got["turn"].append(e))
    client.on(StreamingEvents.Termination, lambda c, e: got["term"].append(e))
    client.on(StreamingEvents.Error, lambda c, e: got["error"].append(e))
    client.connect(StreamingParameters(sample_rate=16000, speech_model="u3-rt-pro",
                                       format_turns=True))
    audio, _ = sf.read(samples_dir / "beckett.wav", dtype="int16")
    client.stream(audio[i:i + 1600].tobytes() for i in range(0, len(audio) - 1600, 1600))
    client.disconnect(terminate=True)
    assert not got["error"], got["error"]
    assert len(got["begin"]) == 1 and len(got["term"]) == 1
    finals = [t.transcript for t in got["turn"] if t.end_of_turn]
    assert finals, got["turn"]
    assert word_error_rate(BECKETT, " ".join(finals)) < 0.15


# -- real transcription, streamed at real time -------------------------------------------------


def test_natural_speech_at_real_time(samples_dir, no_api_key):
    order = []
    tr = Transcriber(FileSource(samples_dir / "beckett.wav"))  # no key, no URL: embedded server
    assert tr.uses_local_server
    tr.on(lambda e: order.append((e.turn_order, e.end_of_turn))
          if isinstance(e, nbscribe.Turn) else None)
    tr.start()
    assert tr.wait(60)
    session = tr.stop()
    assert tr.error is None
    text = " ".join(session.turns.text)
    assert word_error_rate(BECKETT, text) < 0.15, text
    assert len(session) >= 3  # one turn per pause, not one blob
    # live results: turns showed partials before their finals
    with_partials = {n for n, final in order if not final}
    assert with_partials
    assert all(order.index((n, False)) < order.index((n, True)) for n in with_partials)
    words = session.words
    assert words.start.is_monotonic_increasing and (words.end >= words.start).all()
    assert 0 < words.start.min() < 1.0 and words.end.max() < 10.0


def test_espeak_sentences_played_continuously(espeak_wav, server):
    wav = espeak_wav(" ".join(SENTENCES), "sentences", speed=160)
    tr = Transcriber(FileSource(wav, realtime=False), url=server.url)
    tr.start()
    assert tr.wait(120)
    session = tr.stop()
    wer = word_error_rate(" ".join(SENTENCES), " ".join(session.turns.text))
    assert wer < 0.30, (wer, list(session.turns.text))


def test_keyterms_and_force_endpoint(server, samples_dir):
    audio, _ = sf.read(samples_dir / "beckett.wav", dtype="int16")
    ws = raw_session(server.url, query="sample_rate=16000&keyterms_prompt=%5B%22Beckett%22%5D")
    assert json.loads(ws.recv())["type"] == "Begin"
    for i in range(0, 16000 * 2, 1600):  # the first two seconds only: "Ever tried."
        ws.send_binary(audio[i:i + 1600].tobytes())
    ws.send('{"type": "ForceEndpoint"}')
    ws.send(json.dumps({"type": "UpdateConfiguration", "max_turn_silence": 500}))
    ws.send('{"type": "Terminate"}')
    msgs, code = recv_until_close(ws)
    assert code == 1000
    kinds = [m["type"] for m in msgs]
    assert kinds[-1] == "Termination" and "SpeechStarted" in kinds
    finals = [m for m in msgs if m["type"] == "Turn" and m["end_of_turn"]]
    assert finals and "tried" in finals[0]["transcript"].lower()
    assert all(w["word_is_final"] for w in finals[0]["words"])
    assert finals[0]["turn_is_formatted"] and finals[0]["utterance"] == finals[0]["transcript"]
    keys = list(finals[0])
    assert keys[0] == "turn_order" and keys[-1] == "type"


# -- the service's checks ---------------------------------------------------------------------


def test_auth_is_required_when_a_key_is_set(strict_server):
    ws = raw_session(strict_server.url)
    msgs, code = recv_until_close(ws)
    assert code == 1008 and msgs[0]["error_code"] == 1008
    assert "Missing Authorization" in msgs[0]["error"]
    ws = raw_session(strict_server.url, header=["Authorization: wrong"])
    assert recv_until_close(ws)[1] == 1008
    ws = raw_session(strict_server.url, header=["Authorization: local-secret"])
    assert json.loads(ws.recv())["type"] == "Begin"
    ws.close()
    # nbscribe's client turns the refusal into an AuthError at start()
    tr = Transcriber(ArraySource(sine(1, 16000), 16000), url=strict_server.url, api_key="bad")
    with pytest.raises(AuthError, match="1008"):
        tr.start()


def test_temporary_tokens_are_single_use(strict_server):
    base = strict_server.url.replace("ws://", "http://").replace("/v3/ws", "/v3/token")
    token = nbscribe.create_temporary_token("local-secret", 60, url=base)
    ws = raw_session(strict_server.url, query=f"sample_rate=16000&token={token}")
    assert json.loads(ws.recv())["type"] == "Begin"
    ws.close()
    ws = raw_session(strict_server.url, query=f"sample_rate=16000&token={token}")
    assert recv_until_close(ws)[1] == 1008  # used up
    with pytest.raises(AuthError):
        nbscribe.create_temporary_token("wrong", 60, url=base)


@pytest.mark.parametrize(
    ("frames", "code", "match"),
    [
        ([b"\x00\x00" * 400], 3007, "25.0 ms"),  # 25 ms chunk
        ([b"\x00\x00" * 17600], 3007, "1100.0 ms"),  # 1.1 s chunk
        ([b"\x00" * 1601], 3006, "even"),
        (["not json"], 3006, "Invalid JSON"),
        (["[1]"], 3006, "Invalid Message"),
        (['{"type": "Dance"}'], 3006, "Invalid Message Type"),
        (['{"type": "UpdateConfiguration", "max_turn_silence": -5}'], 3006, "max_turn_silence"),
    ],
)
def test_bad_input_gets_the_services_error(strict_server, frames, code, match):
    ws = raw_session(strict_server.url, header=["Authorization: local-secret"])
    first = json.loads(ws.recv())
    assert first["type"] == "Begin", first
    for f in frames:
        ws.send_binary(f) if isinstance(f, bytes) else ws.send(f)
    msgs, close = recv_until_close(ws)
    assert close == code
    assert msgs[-1]["type"] == "Error" and msgs[-1]["error_code"] == code
    assert match in msgs[-1]["error"]


def test_bad_parameters_are_refused_with_3006(strict_server):
    ws = raw_session(strict_server.url, header=["Authorization: local-secret"],
                     query="sample_rate=16000&speaker_labels=maybe")
    msgs, code = recv_until_close(ws)
    assert code == 3006 and "speaker_labels" in msgs[0]["error"]


def test_audio_faster_than_real_time_is_refused(strict_server):
    ws = raw_session(strict_server.url, header=["Authorization: local-secret"])
    assert json.loads(ws.recv())["type"] == "Begin"
    try:
        for _ in range(200):  # 10 s of audio as fast as possible
            ws.send_binary(b"\x00\x00" * 800)
    except (websocket.WebSocketException, OSError):
        pass
    msgs, code = recv_until_close(ws)
    assert code == 3007 and "Rate Exceeded" in msgs[-1]["error"]


def test_session_cap_and_several_sessions_at_once(strict_server):
    hdr = ["Authorization: local-secret"]
    a, b = raw_session(strict_server.url, hdr), raw_session(strict_server.url, hdr)
    assert json.loads(a.recv())["type"] == "Begin"
    assert json.loads(b.recv())["type"] == "Begin"
    c = raw_session(strict_server.url, hdr)
    msgs, code = recv_until_close(c)
    assert code == 3009 and "concurrent" in msgs[0]["error"]
    for ws in (a, b):
        ws.send('{"type": "Terminate"}')
        assert recv_until_close(ws)[1] == 1000


def test_two_transcribers_share_one_server(server, samples_dir):
    trs = [Transcriber(FileSource(samples_dir / "beckett.wav", realtime=False), url=server.url)
           for _ in range(2)]
    for tr in trs:
        tr.start()
    for tr in trs:
        assert tr.wait(60)
        tr.stop()
    for tr in trs:
        assert word_error_rate(BECKETT, " ".join(tr.session.turns.text)) < 0.15


def test_session_maximum_duration_closes_with_3008(whisper_model):
    from nbscribe.server import LocalServer, ServerConfig

    with LocalServer(ServerConfig(port=0, max_session_seconds=1), engine=whisper_model) as srv:
        ws = raw_session(srv.url)
        begin = json.loads(ws.recv())
        assert begin["expires_at"] <= time.time() + 1.5
        msgs, code = recv_until_close(ws)
    assert code == 3008 and "Maximum session duration" in msgs[-1]["error"]


def test_stop_joins_every_server_thread(whisper_model, samples_dir):
    from nbscribe.server import LocalServer, ServerConfig

    before = set(threading.enumerate())
    with LocalServer(ServerConfig(port=0, max_rate=None), engine=whisper_model) as srv:
        tr = Transcriber(FileSource(samples_dir / "beckett.wav", realtime=False), url=srv.url)
        tr.start()
        # stop mid-stream, while the server is still decoding what it has
        assert wait_until(lambda: tr.stats().bytes_sent >= 32000, 30)
        tr.stop()
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, left


def test_open_bind_without_a_key_is_refused():
    from nbscribe.server import ServerConfig

    with pytest.raises(ConfigError, match=r"api key|API key"):
        ServerConfig(host="0.0.0.0").validate()
    ServerConfig(host="0.0.0.0", api_key="k").validate()


def test_health_and_wrong_paths(server):
    base = server.url.replace("ws://", "http://").replace("/v3/ws", "")
    assert urllib.request.urlopen(f"{base}/health", timeout=5).read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/v2/realtime", timeout=5)
    assert info.value.code == 404


def test_8khz_and_mulaw_are_accepted(server, samples_dir):
    audio, _ = sf.read(samples_dir / "beckett.wav", dtype="float32")
    import soxr

    low = soxr.resample(audio, 16000, 8000)
    pcm8 = (np.clip(low, -1, 1) * 32767).astype("<i2")
    src = ArraySource(pcm8, 8000, realtime=False)
    tr = Transcriber(src, url=server.url, sample_rate=8000)
    tr.start()
    assert tr.wait(60)
    tr.stop()
    assert tr.error is None
    assert word_error_rate(BECKETT, " ".join(tr.session.turns.text)) < 0.3
    # mu-law: the same server decodes it (see the engine test below)


def test_mulaw_decoding_matches_linear():
    from nbscribe.server.engine import _mulaw_to_float

    # G.711: 0xFF is +0, 0x80 is the largest positive, 0x00 the largest negative
    out = _mulaw_to_float(np.array([0xFF, 0x7F, 0x80, 0x00], dtype=np.uint8))
    assert out[0] == 0 and out[1] == 0
    assert out[2] == pytest.approx(32124 / 32768) and out[3] == pytest.approx(-32124 / 32768)


# -- end to end through a real loopback device ----------------------------------------------


@pytest.mark.loopback
def test_speech_played_into_the_null_sink_is_transcribed(pulse, espeak_wav, server):
    from nbscribe import DeviceSource

    first = "Please send the quarterly report to the marketing team by Friday."
    second = "We will start the meeting in five minutes."
    wav = espeak_wav(f"{first} {second}", "loop", rate=22050, pad=0.8)
    src = DeviceSource("loopback.monitor")
    assert src.sample_rate > 16000 or src.channels == 2  # converted, not opened at 16 kHz mono
    tr = Transcriber(src, url=server.url)
    tr.start()
    player = threading.Timer(0.5, lambda: pulse.play(wav).wait())
    player.start()
    wait_until(lambda: overlap(second, " ".join(tr.session.turns.text)) >= 0.6, 30, 0.2)
    player.join()
    session = tr.stop()
    text = " ".join(session.turns.text).lower()
    assert overlap(first, text) >= 0.7 and overlap(second, text) >= 0.7, text
    assert tr.source.overflows == 0
