"""The control panel without a kernel: click, observe widget values, check threads and secrets."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("ipywidgets")

from nbscribe.events import Turn, Word
from nbscribe.panel.settings import PanelSettings
from nbscribe.session import Session
from nbscribe.widget import Panel

from .conftest import overlap
from .scripted_server import ScriptedServer, replay, turn, word

KEY = "00112233445566778899aabbccddeeff"


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def all_widget_state(panel: Panel) -> str:
    """Every synced trait of every widget in the panel, as the notebook would save it."""
    out = []
    stack = [panel.widget]
    while stack:
        w = stack.pop()
        out.append(json.dumps(w.get_state(), default=str))
        stack.extend(getattr(w, "children", ()))
    return "\n".join(out)


def dialogue(n: int = 3) -> list[dict]:
    msgs = []
    for i in range(n):
        t0 = 1000 * i
        msgs.append(turn(i, [word("Partial", t0, t0 + 200, False)], False, False))
        msgs.append(turn(i, [word(f"Turn{i}", t0, t0 + 300), word("done.", t0 + 300, t0 + 500)],
                         True, True, speaker_label="A" if i % 2 == 0 else "B"))
    return msgs


@pytest.fixture
def panel(samples_dir, monkeypatch):
    monkeypatch.delenv("ASSEMBLYAI_API_KEY", raising=False)
    made = []

    def make(**kw):
        p = Panel(file=samples_dir / "beckett.wav", source="file", **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_start_returns_at_once_and_turns_arrive(panel, tmp_path):
    with ScriptedServer(replay(dialogue(3), after_audio_bytes=1600)) as server:
        p = panel(url=server.url, realtime=True)
        levels = []
        p.level.observe(lambda ch: levels.append(ch["new"]), names="value")
        t = time.monotonic()
        p.start_button.click()
        assert time.monotonic() - t < 0.5  # the click handler does not wait for the session
        assert p.running and p.start_button.disabled and not p.stop_button.disabled
        assert wait_for(lambda: "Turn2" in p.turns_view.value)
        assert p.running  # the file still plays: live, not at the end
        assert wait_for(lambda: max(levels, default=-60) > -40)  # the meter follows speech
        p.stop_button.click()
        assert p.wait(20)
    assert "stopped" in p.status.value and "3 turns" in p.status.value
    assert not p.start_button.disabled and p.stop_button.disabled and not p.save_button.disabled
    assert list(p.turns.text) == ["Turn0 done.", "Turn1 done.", "Turn2 done."]
    assert list(p.turns.speaker) == ["A", "B", "A"]
    assert len(p.words) == 6
    assert "<span class='nbs-spk'>B</span>" in p.turns_view.value
    assert p.partial.value == ""
    # Save writes the export folder, audio included
    p.save_dir.value = str(tmp_path / "out")
    p.save_button.click()
    assert "saved to" in p.saved.value
    names = sorted(f.name for f in (tmp_path / "out").iterdir())
    assert names == ["audio.wav", "session.json", "transcript.srt", "transcript.vtt",
                     "turns.csv", "turns.parquet", "words.csv", "words.parquet"]


def test_speaker_names_typed_during_and_after_a_session(panel, tmp_path):
    with ScriptedServer(replay(dialogue(3), after_audio_bytes=1600)) as server:
        p = panel(url=server.url, realtime=True)
        assert p.speaker_names.layout.display == "none"  # offered with speaker labels only
        p.speaker_labels.value = True
        assert p.speaker_names.layout.display is None
        p.start()
        assert wait_for(lambda: "Turn0" in p.turns_view.value)
        p.speaker_names.value = "A=Nagg"  # while the session runs: the loop re-renders
        assert wait_for(lambda: "<span class='nbs-spk'>Nagg</span>" in p.turns_view.value)
        assert wait_for(lambda: "Turn2" in p.turns_view.value)
        p.stop()
    assert list(p.turns.speaker) == ["Nagg", "B", "Nagg"]  # later turns named too
    p.speaker_names.value = "A=Nagg, B=Nell"  # after it: shown at once
    assert "<span class='nbs-spk'>Nell</span>" in p.turns_view.value
    assert list(p.turns.speaker) == ["Nagg", "Nell", "Nagg"]
    p.speaker_names.value = "B=Nell"  # A is no longer named
    assert list(p.turns.speaker) == ["A", "Nell", "A"]
    p.speaker_names.value = "Nagg"
    assert "LABEL=NAME" in p.error.value
    p.name_speakers(A="Nagg")
    assert p.speaker_names.value == "B=Nell, A=Nagg"
    p.save_dir.value = str(tmp_path / "out")
    p.save_button.click()
    assert "Nagg" in (tmp_path / "out" / "transcript.srt").read_text()


def test_updates_are_coalesced_and_final_state_flushed(panel):
    # 300 partial revisions as fast as the server can send them
    msgs = [turn(0, [word(f"w{i}", 0, 100, False)], False, False) for i in range(300)]
    msgs.append(turn(0, [word("Final.", 0, 100)], True, True))
    with ScriptedServer(replay(msgs, after_audio_bytes=1600)) as server:
        p = panel(url=server.url, realtime=True, update_hz=10)
        counts = {"status": 0, "turns": 0, "partial": 0}
        p.status.observe(lambda _: counts.__setitem__("status", counts["status"] + 1), "value")
        p.turns_view.observe(lambda _: counts.__setitem__("turns", counts["turns"] + 1), "value")
        p.partial.observe(lambda _: counts.__setitem__("partial", counts["partial"] + 1), "value")
        t = time.monotonic()
        p.start()
        assert wait_for(lambda: "Final." in p.turns_view.value)
        p.stop()
        elapsed = time.monotonic() - t
    limit = elapsed * 10 + 5  # 10 Hz plus the start and final flushes
    assert counts["partial"] <= limit and counts["status"] <= limit, (counts, elapsed)
    assert counts["partial"] < 300
    assert "Final." in p.turns_view.value and p.partial.value == ""


def test_rerunning_the_cell_stops_the_previous_panel(panel):
    with ScriptedServer(replay([])) as server:
        first = panel(url=server.url, realtime=True)
        first.start()
        assert wait_for(lambda: first.transcriber.state == "streaming")
        before = {t for t in threading.enumerate() if t.name.startswith("nbscribe-")}
        assert before
        second = panel(url=server.url)  # as re-running the cell does
        assert not first.running
        assert first.transcriber.state == "stopped"
        assert server.sessions[0].control_types == ["Terminate"]
        assert first.widget.comm is None  # its widgets were closed
        assert not second.running
        alive = [t for t in before if t.is_alive()]
        assert not alive, alive


def test_typed_api_key_is_used_but_never_kept_in_widget_state(panel, monkeypatch):
    with ScriptedServer(replay(dialogue(1))) as server:
        # the AssemblyAI choice, pointed at the scripted server (no network in tests)
        monkeypatch.setattr("nbscribe.service.DEFAULT_URL", server.url)
        p = panel(service="assemblyai")
        assert "no key" in p.key_status.value
        p.key.value = KEY  # the user pastes it
        assert p.key.value == ""
        assert "key set" in p.key_status.value
        assert KEY not in all_widget_state(p)
        p.start()
        assert p.wait(30)
    assert server.sessions[0].headers["Authorization"] == KEY
    assert server.sessions[0].query["speech_model"] == ["u3-rt-pro"]
    assert list(p.turns.text) == ["Turn0 done."]
    assert KEY not in all_widget_state(p)
    assert KEY not in repr(p) and KEY not in repr(p.transcriber)


def test_errors_show_in_the_panel(panel):
    p = panel(service="assemblyai")
    p.start()
    assert "API key" in p.error.value and not p.running
    p = panel(url="ws://127.0.0.1:9")
    p.file.value = "/nonexistent/talk.wav"
    p.start()
    assert "not found" in p.error.value and not p.running
    p.file.value = str(p.file.value)
    p2 = panel(url="ws://127.0.0.1:9")
    p2.start()
    assert p2.wait(20)
    assert "cannot reach" in p2.error.value
    assert not p2.start_button.disabled


def test_the_form_reads_into_settings(panel, samples_dir):
    p = panel(realtime=False)
    p.keyterms.value = "Nagg, Nell"
    p.max_silence.value = 800
    p.speaker_labels.value = True
    p.service.value = "assemblyai"
    p.model.value = "whisper-rt"
    assert p.layout.settings(p.realtime) == PanelSettings(
        source="file", file=str(samples_dir / "beckett.wav"), device=p.device.value or "",
        service="assemblyai", model="whisper-rt", keyterms="Nagg, Nell", max_turn_silence=800,
        speaker_labels=True, realtime=False)
    assert p.key.layout.display is None and p.file.layout.display is None
    p.source_kind.value = "device"
    p.service.value = "local"
    assert p.file.layout.display == "none" and p.device.layout.display is None
    assert p.key.layout.display == "none" and p.key_status.value == ""


def test_live_view_is_bounded():
    s = Session()
    for i in range(1000):
        s.apply(Turn(i, f"turn number {i}", True, True, 1.0,
                     (Word(f"t{i}", i * 1000, i * 1000 + 500, 0.9, True),)))
    p = Panel(max_turns_shown=50)
    try:
        html = p.render_turns(s)
        assert html.count("class='nbs-turn'") == 50
        assert "950 earlier turns" in html and "turn number 999" in html
        assert "turn number 949" not in html
    finally:
        p.close()


@pytest.mark.engine
def test_panel_with_the_local_engine(panel, whisper_model):
    from nbscribe.server import LocalServer, ServerConfig

    with LocalServer(ServerConfig(port=0, max_rate=None), engine=whisper_model) as srv:
        p = panel(url=srv.url, realtime=False)
        p.start()
        assert p.wait(60)
    text = " ".join(p.turns.text).lower()
    assert "tried" in text and "fail better" in text
    assert "fail better" in p.turns_view.value.lower()


@pytest.mark.engine
def test_panel_labels_the_bundled_scene_offline(samples_dir, whisper_model, monkeypatch):
    from nbscribe.server import LocalServer, ServerConfig

    monkeypatch.delenv("ASSEMBLYAI_API_KEY", raising=False)
    with LocalServer(ServerConfig(port=0, max_rate=None), engine=whisper_model) as srv:
        p = Panel(url=srv.url, realtime=False, source="file")  # the default file: the scene
        try:
            p.speaker_labels.value = True
            p.start()
            assert p.wait(90)
            assert set(p.turns.speaker) == {"A", "B"}, p.turns
            p.speaker_names.value = "A=Nagg, B=Nell"
            assert "<span class='nbs-spk'>Nell</span>" in p.turns_view.value
        finally:
            p.close()


@pytest.mark.loopback
@pytest.mark.engine
def test_you_and_others_in_the_panel(pulse, espeak_wav, whisper_model, tmp_path):
    from nbscribe.server import LocalServer, ServerConfig

    said = "Can everyone hear me clearly on the call?"
    you = espeak_wav(said, "panel_you")
    with LocalServer(ServerConfig(port=0), engine=whisper_model) as server:
        p = Panel(url=server.url, source="device", device="loopback.monitor")
        try:
            assert p.device.value == "loopback.monitor"
            p.mic.value = "second.monitor"
            p.start()
            assert wait_for(lambda: p.transcriber.state == "streaming", 20)
            threading.Timer(0.3, lambda: pulse.play(you, sink="second")).start()
            assert wait_for(lambda: "nbs-turn'" in p.turns_view.value, 30)
            assert "you" in p.turns_view.value
            p.stop()
            turns = p.turns
            assert set(turns.source) == {"you"}
            assert overlap(said, " ".join(turns.text)) >= 0.6, list(turns.text)
            out = p.save(tmp_path / "saved")
            assert (out / "turns.csv").exists() and (out / "you" / "audio.wav").exists()
            assert (out / "others" / "audio.wav").exists()
        finally:
            p.close()
