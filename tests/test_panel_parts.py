"""The panel's parts without widgets or a kernel: form rules, renderers and the session loop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from nbscribe import MultiTranscriber, NbscribeError, Service, Session, Transcriber
from nbscribe.events import Turn, Word
from nbscribe.multi import MultiSession
from nbscribe.panel import render
from nbscribe.panel.loop import SessionLoop, period
from nbscribe.panel.saving import panel_formats
from nbscribe.panel.settings import (
    PanelSettings,
    make_sources,
    make_transcriber,
    streaming_params,
)
from nbscribe.recorder import Recorder
from nbscribe.sources import ArraySource, FileSource
from nbscribe.transcriber import Stats

KEY = "00112233445566778899aabbccddeeff"


def final(order: int, text: str, start_ms: int, speaker: str | None = None) -> Turn:
    return Turn(order, text, True, True, 1.0,
                (Word(text, start_ms, start_ms + 400, 0.9, True, speaker),))


def session_of(*turns: Turn) -> Session:
    s = Session()
    for t in turns:
        s.apply(t)
    return s


def stats(state="streaming", elapsed=65.0, audio=12.34, level=-20.0, overflows=2) -> Stats:
    return Stats(state, elapsed, audio, 1000, level, overflows)


# -- the form rules ----------------------------------------------------------------------------


def test_params_for_the_local_server_and_for_assemblyai():
    local = PanelSettings(keyterms=" Nagg, , Nell ", max_turn_silence=300, speaker_labels=True)
    assert streaming_params(local) == {"max_turn_silence": 300, "min_turn_silence": 300,
                                       "keyterms_prompt": ["Nagg", "Nell"],
                                       "speaker_labels": True}
    assert streaming_params(PanelSettings()) == {"max_turn_silence": 1000,
                                                 "min_turn_silence": 400}
    cloud = PanelSettings(service="assemblyai", model="whisper-rt")
    assert streaming_params(cloud) == {"max_turn_silence": 1000, "speech_model": "whisper-rt"}


def test_sources_the_form_names(samples_dir):
    src = make_sources(PanelSettings(file=f" {samples_dir / 'beckett.wav'} ", realtime=False))
    assert isinstance(src, FileSource) and src.realtime is False
    with pytest.raises(NbscribeError, match="not found"):
        make_sources(PanelSettings(file="/nonexistent/talk.wav"))
    with pytest.raises(NbscribeError, match="anywidget"):
        make_sources(PanelSettings(source="browser"))
    browser = ArraySource(np.zeros(160), 16000)
    assert make_sources(PanelSettings(source="browser"), browser=browser) is browser
    with pytest.raises(NbscribeError, match="no input device selected"):
        make_sources(PanelSettings(source="device"))
    opened = []

    def open_device(name):
        opened.append(name)
        return ArraySource(np.zeros(160), 16000)

    one = make_sources(PanelSettings(source="device", device="Loop"), open_device=open_device)
    assert isinstance(one, ArraySource) and opened == ["Loop"]
    two = make_sources(PanelSettings(source="device", device="Loop", mic="Mic"),
                       open_device=open_device)
    assert list(two) == ["you", "others"] and opened[1:] == ["Loop", "Mic"]
    with pytest.raises(NbscribeError, match="different device"):
        make_sources(PanelSettings(source="device", device="Loop", mic="Loop"),
                     open_device=open_device)


def test_the_transcriber_the_form_describes(samples_dir):
    made: list[Service] = []

    def local_service():
        made.append(Service(local=True))  # made, not started
        return made[-1]

    file = str(samples_dir / "beckett.wav")
    tr = make_transcriber(PanelSettings(file=file, keyterms="Beckett"), api_key=None,
                          local_service=local_service)
    assert isinstance(tr, Transcriber) and isinstance(tr, Recorder)
    assert tr.service is made[0] and tr.service.local and not tr.service.started
    assert tr.params.keyterms_prompt == ["Beckett"] and tr.params.min_turn_silence == 400
    cloud = PanelSettings(file=file, service="assemblyai", model="universal-3-5-pro")
    with pytest.raises(NbscribeError, match="API key"):
        make_transcriber(cloud, api_key=None, local_service=local_service)
    tr = make_transcriber(cloud, api_key=KEY, local_service=local_service)
    assert len(made) == 1  # AssemblyAI does not need the local server
    assert not tr.service.local and tr.params.speech_model == "universal-3-5-pro"
    assert KEY not in repr(tr)
    multi = make_transcriber(PanelSettings(source="device", device="Loop", mic="Mic"),
                             api_key=None, local_service=local_service,
                             open_device=lambda name: ArraySource(np.zeros(160), 16000))
    assert isinstance(multi, MultiTranscriber) and isinstance(multi, Recorder)
    assert multi.service is made[1]
    assert all(t.service is made[1] for t in multi.transcribers.values())
    # the call on speakers: the mic is cleaned with the device's audio, echo turns left out
    assert multi.echo_of == {"you": "others"} and not multi.include_echo
    assert multi.transcribers["you"].stage is multi.cancellers["you"].microphone
    assert multi.transcribers["others"].stage is multi.cancellers["you"].reference
    off = make_transcriber(PanelSettings(source="device", device="Loop", mic="Mic",
                                         cancel_echo=False),
                           api_key=None, local_service=local_service,
                           open_device=lambda name: ArraySource(np.zeros(160), 16000))
    assert not off.cancellers and off.include_echo
    assert all(t.stage is None for t in off.transcribers.values())


def test_the_panel_saves_the_audio_and_parquet_when_it_can():
    formats = panel_formats()
    assert formats[:5] == ("wav", "csv", "json", "srt", "vtt")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert "parquet" not in formats
    else:
        assert formats[-1] == "parquet"


def test_the_pure_parts_import_without_ipywidgets():
    code = ("import sys, nbscribe, nbscribe.panel, nbscribe.panel.settings, "
            "nbscribe.panel.render, nbscribe.panel.loop, nbscribe.panel.saving\n"
            "print([m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'anywidget')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


# -- the renderers ---------------------------------------------------------------------------


def test_clock():
    assert render.clock(None) == "--:--"
    assert render.clock(65.9) == "01:05"
    assert render.clock(3725) == "1:02:05"


def test_turns_html_is_bounded_escaped_and_labelled():
    assert render.turns_html(Session(), 10) == render.NO_TURNS
    s = session_of(*(final(i, f"turn number {i}", i * 1000) for i in range(1000)))
    view = render.turns_html(s, 50)
    assert view.count("class='nbs-turn'") == 50
    assert "950 earlier turns" in view and "turn number 999" in view
    assert "turn number 949" not in view
    s = session_of(final(0, "<script>alert(1)</script>", 61_000, speaker="A&B"))
    view = render.turns_html(s, 5)
    assert "<script>" not in view and "&lt;script&gt;" in view
    assert "<span class='nbs-time'>01:01</span>" in view
    assert "<span class='nbs-spk'>A&amp;B</span>" in view


def test_turns_html_of_several_sources_names_each():
    multi = MultiSession({"you": session_of(final(0, "Mine.", 0, speaker="A")),
                          "others": session_of(final(0, "Theirs.", 500))},
                         {"you": 0.0, "others": 2.0})
    view = render.turns_html(multi, 10)
    assert view.index("Mine.") < view.index("Theirs.")
    assert "<span class='nbs-spk'>you · A</span>" in view
    assert "<span class='nbs-time'>00:02</span> <span class='nbs-spk'>others</span>" in view


def test_partial_html():
    assert render.partial_html(Session()) == ""
    s = session_of(Turn(0, "still <talking>", False, False, 0.0,
                        (Word("still", 0, 100, 0.9, False),)))
    assert render.partial_html(s) == ("<span class='nbs-partial-text'>still &lt;talking&gt;"
                                      "</span>")


def test_status_lines_level_and_errors():
    assert render.live_status(stats(), 3) == ("● streaming · 01:05 · 12.3 s sent · 2 dropped · "
                                              "3 turns")
    assert render.stopped_status(stats(), 3) == "stopped · 3 turns · 12.3 s of audio"
    assert render.stopped_status(None, 0) == "stopped · 0 turns · 0.0 s of audio"
    assert render.stopped_status(stats(), 3, "1 connection lost and replaced").endswith(
        "12.3 s of audio · 1 connection lost and replaced")
    assert render.level(stats(level=-120.0)) == render.LEVEL_FLOOR
    assert render.level(stats(level=3.0)) == 0.0 and render.level(stats(level=-6.5)) == -6.5
    assert render.error_html("a <b> c") == "<span class='nbs-err'>a &lt;b&gt; c</span>"


# -- the session loop ----------------------------------------------------------------------------


class FakeService:
    def __init__(self, started: bool = True) -> None:
        self.started = started
        self.starts: list[bool] = []

    def start(self, fast: bool = False) -> None:
        self.starts.append(fast)
        self.started = True


class FakeRecorder:
    """A recorder whose session a test drives by hand (`say`, `end`)."""

    def __init__(self, service=None, fail: Exception | None = None) -> None:
        self.service = service or FakeService()
        self.session = Session()
        self.state = "idle"
        self.error: Exception | None = None
        self.listeners: list = []
        self.stops = 0
        self._fail = fail
        self._ended = threading.Event()

    def on(self, listener):
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def start(self):
        if self._fail is not None:
            raise self._fail
        self.state = "streaming"
        return self

    def stop(self, timeout=None):
        self.stops += 1
        self.state = "stopped"
        return self.session

    def wait(self, timeout=None):
        return self._ended.wait(timeout)

    def stats(self):
        return stats(state=self.state)

    def say(self, turn: Turn) -> None:  # as the events thread does
        self.session.apply(turn)
        for listener in list(self.listeners):
            listener(turn)

    def end(self) -> None:
        self._ended.set()


class RecordingView:
    def __init__(self, fail_refresh: bool = False) -> None:
        self.log: list[tuple] = []
        self.finished = threading.Event()
        self._fail = fail_refresh

    def starting_service(self):
        self.log.append(("starting",))

    def refresh(self, recorder, transcript_changed):
        if self._fail:
            raise RuntimeError("a widget broke")
        self.log.append(("refresh", transcript_changed, len(recorder.session)))

    def finish(self, recorder, error):
        self.log.append(("finish", error))
        self.finished.set()


def test_period_is_kept_within_one_to_twenty_hertz():
    assert period(10) == pytest.approx(0.1)
    assert period(1000) == pytest.approx(0.05) and period(0.1) == 1.0


def test_the_loop_refreshes_at_most_update_hz_renders_only_changes_and_flushes_the_end():
    rec, view = FakeRecorder(), RecordingView()
    assert isinstance(rec, Recorder)
    loop = SessionLoop(rec, view, update_hz=20)
    t0 = time.monotonic()
    loop.start()
    for i in range(200):  # a burst of turns, far faster than the view refreshes
        rec.say(final(i, f"t{i}", i * 10))
    time.sleep(0.3)
    rec.end()  # the source ran out
    assert loop.wait(5) and not loop.running
    elapsed = time.monotonic() - t0
    refreshes = [e for e in view.log if e[0] == "refresh"]
    assert len(refreshes) <= elapsed * 20 + 2, (len(refreshes), elapsed)
    assert refreshes[0][1] is True  # the first refresh renders
    assert any(changed is False for _, changed, _ in refreshes[1:-1])  # then only changes
    assert refreshes[-1] == ("refresh", True, 200)  # the final state, always
    assert view.log[-1] == ("finish", None)
    assert rec.stops == 1 and rec.listeners == []  # stopped once, unsubscribed


def test_stop_ends_the_loop_and_the_recorder():
    rec, view = FakeRecorder(), RecordingView()
    loop = SessionLoop(rec, view, update_hz=20)
    loop.start()
    assert loop.running
    time.sleep(0.1)
    loop.stop(wait=True, timeout=5)
    assert not loop.running and rec.stops == 1 and rec.state == "stopped"
    assert view.log[-1] == ("finish", None)


def test_the_local_server_is_started_first_and_said_so():
    service = FakeService(started=False)
    rec, view = FakeRecorder(service=service), RecordingView()
    loop = SessionLoop(rec, view, fast=True)
    loop.start()
    rec.end()
    assert loop.wait(5)
    assert view.log[0] == ("starting",) and service.starts == [True]


def test_a_recorder_that_cannot_start_ends_in_the_view():
    rec = FakeRecorder(fail=NbscribeError("cannot reach ws://127.0.0.1:9"))
    view = RecordingView()
    loop = SessionLoop(rec, view)
    loop.start()
    assert loop.wait(5)
    assert view.log == [("finish", "could not start: cannot reach ws://127.0.0.1:9")]
    assert rec.stops == 0


def test_a_failing_view_still_stops_the_recorder_and_says_why(caplog):
    rec, view = FakeRecorder(), RecordingView(fail_refresh=True)
    loop = SessionLoop(rec, view, update_hz=20)
    loop.start()
    assert loop.wait(5)
    assert view.log == [("finish", "the session failed: a widget broke")]
    assert rec.stops == 1 and rec.state == "stopped"
    assert "the panel's session failed" in caplog.text
