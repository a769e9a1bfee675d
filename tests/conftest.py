"""Shared fixtures: generated audio, scripted servers, a PulseAudio null sink, the Whisper model."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

# No model may be fetched from a hub while testing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: In CI every test must run: a missing tool is a failure there, not a skip.
REQUIRE_ALL = os.environ.get("NBSCRIBE_REQUIRE_ALL") == "1"


def need(condition: bool, why: str) -> None:
    """Skip (or, under NBSCRIBE_REQUIRE_ALL=1, fail) when `condition` is false."""
    if not condition:
        if REQUIRE_ALL:
            pytest.fail(f"required for this test run: {why}")
        pytest.skip(why)


@pytest.fixture(autouse=True)
def no_thread_leaks():
    """Every test must join the threads nbscribe started.

    Servers made by fixtures live across tests, with their worker pools; their shutdown is
    tested on its own (test_local_server.py::test_stop_joins_every_server_thread).
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [t.name for t in set(threading.enumerate()) - before
                 if t.name.startswith("nbscribe-") and not t.name.startswith("nbscribe-server")]
        if not alive:
            return
        time.sleep(0.05)
    pytest.fail(f"threads left running: {alive}")


@pytest.fixture
def no_api_key(monkeypatch):
    monkeypatch.delenv("ASSEMBLYAI_API_KEY", raising=False)


def overlap(reference: str, text: str) -> float:
    """Fraction of the reference's words found in `text` (robust to Whisper tiny's slips on
    synthetic speech, which vary with capture timing)."""
    from nbscribe.metrics import normalize_words

    ref, got = normalize_words(reference), set(normalize_words(text))
    return sum(w in got for w in ref) / len(ref)


def sine(seconds: float, rate: int, freq: float = 440.0, channels: int = 1,
         amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "nbscribe" / "samples"


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory):
    """Make a speech WAV with espeak-ng (16 kHz mono), or skip without espeak-ng."""

    def make(text: str, name: str = "say", rate: int = 16000, voice: str = "en-us",
             speed: int = 160, pad: float = 0.5) -> Path:
        need(shutil.which("espeak-ng") is not None and shutil.which("sox") is not None,
             "espeak-ng and sox are needed to synthesise speech")
        folder = tmp_path_factory.mktemp("speech")
        raw, out = folder / f"{name}_raw.wav", folder / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                       check=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out),
                        "pad", str(pad), str(pad)], check=True)
        return out

    return make


# -- a PulseAudio null sink: the Linux loopback device ---------------------------------------

LOOPBACK_PA = """
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=loopback rate=48000 channels=2
load-module module-null-sink sink_name=second rate=48000 channels=2
set-default-sink loopback
set-default-source loopback.monitor
"""


class Pulse:
    """A private PulseAudio daemon with two null sinks: ``loopback`` and ``second``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nbscribe-pa-"))
        run = self.dir / "run"
        home = self.dir / "home"
        run.mkdir(mode=0o700)
        home.mkdir()
        (self.dir / "loopback.pa").write_text(LOOPBACK_PA)
        self.env = {"XDG_RUNTIME_DIR": str(run), "HOME": str(home)}
        self._saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}
        os.environ["XDG_RUNTIME_DIR"] = str(run)
        os.environ.pop("PULSE_SERVER", None)
        subprocess.run(
            ["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n", "-F",
             str(self.dir / "loopback.pa"), f"--log-target=file:{self.dir / 'pulse.log'}"],
            env={**os.environ, **self.env}, check=True, timeout=20,
        )
        for _ in range(100):
            if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        self.pid = int((run / "pulse" / "pid").read_text().strip())

    def play(self, wav: Path, sink: str = "loopback") -> subprocess.Popen:
        return subprocess.Popen(["paplay", f"--device={sink}", str(wav)])

    def stop(self) -> None:
        try:
            os.kill(self.pid, 15)
        except OSError:
            pass
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pulse():
    """A running PulseAudio daemon with null sinks; PortAudio re-scanned to see it."""
    have = all(shutil.which(t) for t in ("pulseaudio", "pactl", "paplay"))
    need(have, "pulseaudio, pactl and paplay are needed (apt-get install pulseaudio "
               "pulseaudio-utils libasound2-plugins)")
    from nbscribe.devices import sounddevice_module
    from nbscribe.errors import PortAudioMissingError

    try:
        sounddevice_module()
    except PortAudioMissingError as exc:
        need(False, str(exc))
    pa = Pulse()
    sounddevice_module(refresh=True)
    yield pa
    pa.stop()
    sounddevice_module(refresh=True)


# -- the offline Whisper engine ---------------------------------------------------------------


@pytest.fixture(scope="session")
def whisper_model():
    try:
        from nbscribe.server.engine import load_model
    except ImportError as exc:  # pragma: no cover - depends on the install
        need(False, f"the local engine is not installed ({exc}): pip install 'nbscribe[local]'")
    return load_model()
