"""The ``nbscribe`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest
import soundfile as sf

from .scripted_server import ScriptedServer, fail_after, replay, turn, word
from .waiting import wait_until

KEY = "fedcba9876543210fedcba9876543210"


def nbscribe(*args: str, env: dict | None = None, timeout: float = 120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "nbscribe.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def test_transcribe_a_file_writes_every_output(tmp_path, samples_dir):
    msgs = [
        turn(0, [word("Ever", 300, 600, False)], False, False),
        turn(0, [word("Ever", 300, 600), word("tried.", 600, 900)], True, True,
             speaker_label="A"),
        turn(1, [word("Ever", 1500, 1800), word("failed.", 1800, 2200)], True, True,
             speaker_label="A"),
    ]
    out = tmp_path / "out"
    with ScriptedServer(replay(msgs)) as server:
        res = nbscribe("transcribe", "--file", str(samples_dir / "beckett.wav"), "--url",
                       server.url, "--api-key", KEY, "--out", str(out), "--duration", "1.5",
                       "--speaker-labels")
    assert res.returncode == 0, res.stderr
    # finals on their own lines; no partial garbage when stdout is not a terminal
    assert res.stdout.splitlines() == ["[00:00.30] A: Ever tried.", "[00:01.50] A: Ever failed."]
    assert KEY not in res.stdout + res.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "audio.wav", "events.jsonl", "session.json", "transcript.srt", "transcript.vtt",
        "turns.csv", "words.csv"]
    rows = list(csv.DictReader(open(out / "turns.csv")))
    assert [r["text"] for r in rows] == ["Ever tried.", "Ever failed."]
    assert {"turn_order", "start", "end", "text", "speaker"} <= set(rows[0])
    assert float(rows[1]["start"]) == pytest.approx(1.5)
    info = sf.info(out / "audio.wav")
    assert (info.samplerate, info.channels) == (16000, 1)
    assert 1.3 <= info.duration <= 2.0  # --duration 1.5 stopped it
    assert len(server.sessions[0].audio) * 0.05 == pytest.approx(info.duration, abs=0.06)
    meta = json.loads((out / "session.json").read_text())
    assert KEY not in json.dumps(meta)
    assert "1" in (out / "transcript.srt").read_text()


def test_bad_key_exits_non_zero_with_one_line_quickly(samples_dir):
    script = fail_after(1008, "Unauthorized Connection: Invalid API key", with_begin=False)
    with ScriptedServer(script) as server:
        t = time.monotonic()
        res = nbscribe("transcribe", "--file", str(samples_dir / "beckett.wav"), "--url",
                       server.url, "--api-key", "wrong-key")
        elapsed = time.monotonic() - t
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("nbscribe: error:")]
    assert len(errors) == 1 and "1008" in errors[0] and "ASSEMBLYAI_API_KEY" in errors[0]
    assert "Traceback" not in res.stderr
    assert elapsed < 20  # includes interpreter start-up


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--file", "/nonexistent.wav"], "audio file not found"),
        (["--device", "no-such-device-xyz"], "no input device|PortAudio"),
        (["--file", "x.wav", "--keyterms", "a" * 51], "keyterm"),
        (["--file", "x.wav", "--frame-ms", "10"], "frame_ms"),
    ],
)
def test_input_errors_are_one_line(tmp_path, args, match):
    sf.write(tmp_path / "x.wav", [0.0] * 1600, 16000)
    res = subprocess.run([sys.executable, "-m", "nbscribe.cli", "transcribe", *args, "--url",
                          "ws://127.0.0.1:9", "--api-key", KEY], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("nbscribe: error:"), res.stderr
    import re

    assert re.search(match, res.stderr), res.stderr
    assert "Traceback" not in res.stderr


def test_stop_with_ctrl_c_keeps_everything(tmp_path, samples_dir):
    msgs = [turn(0, [word("Ever", 300, 600), word("tried.", 600, 900)], True, True)]
    out = tmp_path / "out"
    with ScriptedServer(replay(msgs)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbscribe.cli", "transcribe", "--file",
             str(samples_dir / "endgame_nagg_nell.wav"), "--url", server.url, "--api-key", KEY,
             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: proc.poll() is not None or (
            server.sessions and len(server.sessions[0].audio) >= 30), 30)
        assert proc.poll() is None
        proc.send_signal(2)  # SIGINT, as Ctrl+C
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Ever tried." in stdout
    assert server.sessions[0].control_types == ["Terminate"]
    assert (out / "turns.csv").exists()
    assert sf.info(out / "audio.wav").duration >= 1.4


@pytest.mark.loopback
def test_devices_command_marks_loopback_devices(pulse):
    res = nbscribe("devices")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    monitor = [line for line in lines if "loopback.monitor" in line]
    assert monitor and monitor[0].startswith("* ") and "loopback)" in monitor[0]
    assert lines[0].startswith("* ")  # loopback devices first


def test_missing_portaudio_only_matters_for_devices(tmp_path, samples_dir):
    """Without PortAudio, files still work and a device gives an error naming libportaudio2."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    env = {"PYTHONPATH": f"{stub}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = nbscribe("transcribe", "--device", "BlackHole", "--url", "ws://127.0.0.1:9",
                   "--api-key", KEY, env=env)
    assert res.returncode == 2
    assert "libportaudio2" in res.stderr and "Traceback" not in res.stderr
    with ScriptedServer(replay([turn(0, [word("Fine.", 0, 300)], True, True)])) as server:
        res = nbscribe("transcribe", "--file", str(samples_dir / "beckett.wav"), "--url",
                       server.url, "--api-key", KEY, "--duration", "0.5", env=env)
    assert res.returncode == 0, res.stderr
    assert "Fine." in res.stdout


@pytest.mark.engine
def test_local_flag_wins_over_a_configured_key(tmp_path, samples_dir):
    res = nbscribe("transcribe", "--file", str(samples_dir / "beckett.wav"), "--local", "--fast",
                   "--out", str(tmp_path / "o"), env={"ASSEMBLYAI_API_KEY": KEY})
    assert res.returncode == 0, res.stderr
    assert "local server at ws://127.0.0.1:" in res.stderr
    assert KEY not in res.stderr + res.stdout
    assert "Fail better." in res.stdout


def test_speaker_names_replace_labels_in_output_and_files(tmp_path, samples_dir):
    msgs = [
        turn(0, [word("Ever", 300, 600, speaker="A"), word("tried.", 600, 900, speaker="A")],
             True, True, speaker_label="A"),
        turn(1, [word("Ever", 1500, 1800, speaker="B")], True, True, speaker_label="B"),
    ]
    out = tmp_path / "out"
    with ScriptedServer(replay(msgs)) as server:
        res = nbscribe("transcribe", "--file", str(samples_dir / "beckett.wav"), "--url",
                       server.url, "--api-key", KEY, "--out", str(out), "--duration", "1.5",
                       "--speaker-names", "A=Nagg", "B=Nell")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[00:00.30] Nagg: Ever tried.", "[00:01.50] Nell: Ever"]
    assert server.sessions[0].query["speaker_labels"] == ["true"]  # names imply labels
    rows = list(csv.DictReader(open(out / "turns.csv")))
    assert [r["speaker"] for r in rows] == ["Nagg", "Nell"]
    assert "<v Nell>Ever" in (out / "transcript.vtt").read_text()
    bad = nbscribe("transcribe", "--file", "x.wav", "--speaker-names", "Nagg")
    assert bad.returncode == 2 and "LABEL=NAME" in bad.stderr
