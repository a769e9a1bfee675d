"""Audio sources: files of every shape, bad files, and a real loopback device (PulseAudio)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from nbscribe import ArraySource, AudioError, DeviceNotFoundError, DeviceSource, FileSource
from nbscribe.convert import Converter
from nbscribe.devices import is_loopback_name, list_devices, loopback_setup_hint

from .conftest import overlap, sine
from .scipy_free_xcorr import best_xcorr
from .waiting import wait_until


def drain(source) -> np.ndarray:
    source.start()
    blocks = []
    while True:
        b = source.read(1.0)
        if b is None:
            if source.finished:
                break
            continue
        blocks.append(b)
    source.close()
    return np.concatenate(blocks)


@pytest.mark.parametrize(
    ("subtype", "rate", "channels"),
    [("PCM_24", 44100, 2), ("FLOAT", 48000, 1), ("PCM_16", 22050, 8), ("PCM_32", 8000, 1),
     ("PCM_U8", 11025, 1)],
)
def test_unusual_wav_files_are_converted(tmp_path, subtype, rate, channels):
    path = tmp_path / f"x_{subtype}.wav"
    sf.write(path, sine(1.0, rate, 440, channels, amp=0.4), rate, subtype=subtype)
    src = FileSource(path, realtime=False)
    assert (src.sample_rate, src.channels) == (rate, channels)
    data = drain(src)
    conv = Converter(rate, channels, 16000, 50)
    frames = conv.push(data) + conv.flush()
    y = np.frombuffer(b"".join(frames), "<i2") / 32768
    assert abs(len(y) - 16000) <= 800
    assert np.sqrt(np.mean(y[2000:14000] ** 2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.05)


def test_flac_and_ogg(tmp_path):
    for fmt in ("flac", "ogg"):
        path = tmp_path / f"a.{fmt}"
        sf.write(path, sine(0.5, 16000), 16000)
        assert FileSource(path, realtime=False).duration == pytest.approx(0.5, abs=0.01)


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        FileSource(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        FileSource(tmp_path / "empty.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=r"cannot read .* Supported formats"):
        FileSource(tmp_path / "corrupt.wav")
    (tmp_path / "notes.txt").write_text("these are not audio")
    with pytest.raises(AudioError, match="ffmpeg"):
        FileSource(tmp_path / "notes.txt")
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no audio"):
        FileSource(tmp_path / "zero.wav")
    with pytest.raises(AudioError, match="folder"):
        FileSource(tmp_path)


def test_file_source_paces_at_real_time(samples_dir):
    src = FileSource(samples_dir / "beckett.wav", realtime=True)
    src.start()
    t = time.monotonic()
    got = 0
    while got < 16000:  # one second of audio
        b = src.read(1.0)
        if b is not None:
            got += len(b)
    assert time.monotonic() - t >= 0.9
    fast = FileSource(samples_dir / "beckett.wav", realtime=False)
    t = time.monotonic()
    assert len(drain(fast)) == sf.info(samples_dir / "beckett.wav").frames
    assert time.monotonic() - t < 1.0


def test_arrays_of_any_type_are_read_and_an_empty_one_is_refused():
    with pytest.raises(AudioError, match="no audio"):
        ArraySource(np.zeros(0), 16000)
    pcm = np.array([0, 16384, -32768], dtype=np.int16)
    src = ArraySource(pcm, 8000, realtime=False)
    assert (src.sample_rate, src.channels, src.realtime) == (8000, 1, False)
    block = src.read(0.1)
    assert block.dtype == np.float32 and block.shape == (3, 1)
    assert block[:, 0].tolist() == pytest.approx([0.0, 0.5, -1.0], abs=1e-4)
    stereo = ArraySource(np.ones((800, 2)), 16000)  # float64, (frames, channels)
    assert stereo.channels == 2 and stereo.realtime  # paced like a device by default


def test_loopback_names():
    for name in ("BlackHole 2ch", "CABLE Output (VB-Audio Virtual Cable)",
                 "Line 1 (Virtual Audio Cable)", "alsa_output.pci-0000.analog-stereo.monitor",
                 "Monitor of Built-in Audio", "Stereo Mix (Realtek Audio)"):
        assert is_loopback_name(name), name
    for name in ("MacBook Pro Microphone", "default", "pulse", "USB Headset"):
        assert not is_loopback_name(name), name
    assert "BlackHole" in loopback_setup_hint("darwin")
    assert "CABLE Output" in loopback_setup_hint("win32")
    assert "pactl" in loopback_setup_hint("linux")


# -- a real loopback device: a PulseAudio null sink ------------------------------------------------


@pytest.mark.loopback
def test_devices_list_the_monitor_as_loopback(pulse):
    devices = list_devices()
    names = [d.name for d in devices]
    assert "loopback.monitor" in names and "second.monitor" in names
    assert devices[0].is_loopback  # loopback devices come first
    with pytest.raises(DeviceNotFoundError) as info:
        DeviceSource("no such device")
    assert "loopback.monitor" in str(info.value)  # the error lists what exists
    with pytest.raises(DeviceNotFoundError, match="match"):
        DeviceSource("monitor")  # ambiguous: two monitors


def _capture(source: DeviceSource, seconds: float, play=None) -> np.ndarray:
    """Capture for `seconds`, and always until 0.5 s after the player has finished."""
    source.start()
    blocks, proc, done_at = [], None, None
    t = time.monotonic()
    while time.monotonic() - t < 15:
        now = time.monotonic()
        if play is not None and proc is None and now - t > 0.3:
            proc = play()
        if proc is not None and done_at is None and proc.poll() is not None:
            done_at = now
        if now - t >= seconds and (play is None or (done_at and now - done_at > 0.5)):
            break
        b = source.read(0.2)
        if b is not None:
            blocks.append(b)
    source.close()
    return np.concatenate(blocks)


@pytest.mark.loopback
def test_capture_48k_stereo_from_the_monitor_matches_what_was_played(pulse, tmp_path):
    # a 440 Hz + 1320 Hz chord with an amplitude envelope, 16 kHz mono reference
    t = np.arange(int(1.5 * 16000)) / 16000
    ref = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1320 * t)) * np.sin(
        np.pi * t / 1.5)
    ref = ref.astype(np.float32)
    wav = tmp_path / "ref.wav"
    sf.write(wav, ref, 16000, subtype="PCM_16")
    src = DeviceSource("loopback.monitor", sample_rate=48000, channels=2)
    assert (src.sample_rate, src.channels) == (48000, 2)
    captured = _capture(src, 2.8, play=lambda: pulse.play(wav))
    assert captured.shape[1] == 2
    conv = Converter(48000, 2, 16000, 50)
    y = np.frombuffer(b"".join(conv.push(captured) + conv.flush()), "<i2") / 32768
    corr = best_xcorr(y.astype(np.float32), ref)
    assert corr > 0.98, corr
    assert src.overflows == 0


@pytest.mark.loopback
def test_a_pulse_source_other_than_the_default_is_captured(pulse, tmp_path):
    wav = tmp_path / "tone.wav"
    sf.write(wav, sine(1.0, 16000, 880, amp=0.5), 16000)
    src = DeviceSource("second.monitor")  # not the default source
    silent = DeviceSource("loopback.monitor")
    assert src.info.index is None  # reached through PulseAudio, not a PortAudio index
    captured = _capture(src, 1.8, play=lambda: pulse.play(wav, sink="second"))
    rms = np.sqrt(np.mean(captured**2))
    assert rms > 0.1, rms
    silent.start()
    silent.close()


@pytest.mark.loopback
@pytest.mark.engine
def test_you_and_others_from_two_null_sinks(pulse, espeak_wav, whisper_model, tmp_path):
    """Two real loopback devices carrying different speech, one merged session."""
    import threading

    from nbscribe.multi import MultiTranscriber
    from nbscribe.server import LocalServer, ServerConfig

    say_you = "Please send the quarterly report to the marketing team by Friday."
    say_others = "The weather tomorrow will be sunny with a light breeze."
    you = espeak_wav(say_you, "you")
    others = espeak_wav(say_others, "others")
    with LocalServer(ServerConfig(port=0), engine=whisper_model) as server:
        multi = MultiTranscriber({"you": DeviceSource("second.monitor"),
                                  "others": DeviceSource("loopback.monitor")},
                                 url=server.url, out_dir=tmp_path)
        multi.start()
        threading.Timer(0.3, lambda: pulse.play(you, sink="second")).start()
        threading.Timer(4.5, lambda: pulse.play(others, sink="loopback")).start()
        wait_until(lambda: "breeze" in multi.session.text.lower(), 30, 0.2)
        session = multi.stop()
    turns = session.turns
    assert set(turns.source) == {"you", "others"}
    you_text = " ".join(turns[turns.source == "you"].text).lower()
    others_text = " ".join(turns[turns.source == "others"].text).lower()
    # each source has its own sentence, and nothing of the other one
    assert overlap(say_you, you_text) >= 0.6 and "breeze" not in you_text, you_text
    assert overlap(say_others, others_text) >= 0.6, others_text
    assert "quarterly" not in others_text and "marketing" not in others_text
    # one timeline: "others" was played about 4 s after "you"
    gap = (turns[turns.source == "others"].start.min() - turns[turns.source == "you"].start.min())
    assert 2.5 < gap < 6.0, gap
    assert list(session.words.columns[:2]) == ["source", "turn_order"]
    session.save(tmp_path / "merged")
    assert (tmp_path / "merged" / "turns.csv").exists()
    assert (tmp_path / "you" / "audio.wav").exists()
    assert (tmp_path / "others" / "events.jsonl").exists()
