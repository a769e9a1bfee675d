"""Device captures on real PulseAudio null sinks: nbscribe's own actions never end a capture, a
named source is recorded without touching the environment, PulseAudio moving the capture
elsewhere ends it with a clear message; and without pulsectl or a server, messages say why."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from nbscribe import AudioError, DeviceSource
from nbscribe.devices import list_devices, open_stream_count

from .conftest import sine
from .waiting import wait_until


def wait_for(cond, timeout: float = 15.0) -> bool:
    return wait_until(cond, timeout, 0.02)


class Capture:
    """Own a DeviceSource on a thread of its own (start, read, close), as the transcriber's
    pump does, and note when each block arrived."""

    def __init__(self, source: DeviceSource) -> None:
        self.source = source
        self.blocks: list[tuple[float, np.ndarray]] = []
        self.start_error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="test-capture", daemon=True)
        self._thread.start()
        assert self._started.wait(15) and self.start_error is None, self.start_error

    def _main(self) -> None:
        try:
            self.source.start()
        except BaseException as exc:
            self.start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                b = self.source.read(0.1)
                if b is not None:
                    with self._lock:
                        self.blocks.append((time.monotonic(), b))
                elif self.source.finished:
                    break
        finally:
            self.source.close()

    def frames(self) -> int:
        with self._lock:
            return sum(len(b) for _, b in self.blocks)

    def between(self, t0: float, t1: float) -> list[tuple[float, np.ndarray]]:
        with self._lock:
            return [(t, b) for t, b in self.blocks if t0 <= t <= t1]

    def audio(self) -> np.ndarray:
        with self._lock:
            return np.concatenate([b for _, b in self.blocks])

    def wait_steady(self, seconds: float = 0.5, timeout: float = 15.0) -> None:
        """Wait until blocks have flowed for `seconds` (PulseAudio delivers the first late)."""
        assert wait_for(lambda: self.blocks and time.monotonic() - self.blocks[0][0] > seconds,
                        timeout), "no audio arrived"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def tone(tmp_path):
    def make(seconds: float, freq: float = 440.0, amp: float = 0.5, name: str = "tone"):
        path = tmp_path / f"{name}.wav"
        sf.write(path, sine(seconds, 48000, freq, channels=2, amp=amp), 48000)
        return path

    return make


def _list_devices() -> None:
    names = [d.name for d in list_devices(refresh=True)]
    assert "loopback.monitor" in names and "second.monitor" in names


def _second_source() -> None:
    other = DeviceSource("loopback.monitor")
    other.start()
    try:
        assert wait_for(lambda: other.read(0.1) is not None, 10)
    finally:
        other.close()


def _check_routing() -> None:
    from nbscribe.routing import check_routing

    check_routing("loopback.monitor")  # plays a chirp on the default output, "loopback"


def _panel_refresh() -> None:
    pytest.importorskip("ipywidgets")
    from nbscribe.widget import Panel

    panel = Panel(source="device", device="loopback.monitor")
    try:
        assert panel.refresh_devices()
        panel.refresh_button.click()  # what the refresh button does
        assert "loopback.monitor" in [v for _, v in panel.device.options]
    finally:
        panel.close()


@pytest.mark.loopback
@pytest.mark.parametrize("action", [_list_devices, _second_source, _check_routing,
                                    _panel_refresh],
                         ids=["list_devices", "second_source", "check_routing", "panel_refresh"])
def test_nbscribes_own_actions_never_interrupt_a_capture(pulse, tone, action):
    player = pulse.play(tone(30.0))
    cap = Capture(DeviceSource("loopback.monitor"))
    try:
        cap.wait_steady()
        rate = cap.source.sample_rate
        t0, f0 = time.monotonic(), cap.frames()
        action()
        t_action = time.monotonic()
        # keep capturing a little after the action: a dead stream would deliver nothing more
        assert wait_for(lambda: time.monotonic() - t_action > 1.5, 5)
        t1, f1 = time.monotonic(), cap.frames()
        assert cap.source.error is None, cap.source.error
        assert not cap.source.finished
        assert open_stream_count() >= 1
        window = cap.between(t0, t1)
        # blocks kept arriving throughout, the last ones after the action was over
        assert window and window[-1][0] > t_action + 1.0
        arrivals = np.diff([t0] + [t for t, _ in window] + [t1])
        assert arrivals.max() < 1.0, arrivals.max()
        # no gap: the frames captured over the interval match the wall time it lasted
        wall = t1 - t0
        got = (f1 - f0) / rate
        assert abs(got - wall) < 0.3 + 0.05 * wall, (got, wall)
        print(f"\n[devices] {action.__name__.strip('_')}: {got:.2f} s captured in {wall:.2f} s, "
              f"longest wait between blocks {arrivals.max() * 1000:.0f} ms")
        # and it was the tone, not silence
        data = np.concatenate([b for _, b in window])
        assert np.sqrt(np.mean(data**2)) > 0.2
    finally:
        cap.close()
        player.kill()
        player.wait()
    assert open_stream_count() == 0


class EnvironGuard(dict):
    """os.environ stand-in that records any attempt to set PULSE_SOURCE."""

    def __init__(self, real) -> None:
        super().__init__(real)
        self.touched: list[str] = []

    def __setitem__(self, key, value) -> None:
        if key == "PULSE_SOURCE":
            self.touched.append(value)
        super().__setitem__(key, value)


@pytest.mark.loopback
def test_a_named_source_is_recorded_without_touching_the_environment(pulse, tone, monkeypatch):
    assert "PULSE_SOURCE" not in os.environ
    guard = EnvironGuard(os.environ)
    monkeypatch.setattr(os, "environ", guard)
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    seen_in_c: list[bytes] = []
    watching = threading.Event()

    def watch() -> None:  # the process environment as C code (libpulse) sees it
        while not watching.is_set():
            value = libc.getenv(b"PULSE_SOURCE")
            if value is not None:
                seen_in_c.append(value)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, name="test-env-watch", daemon=True)
    watcher.start()
    tone_player = pulse.play(tone(6.0, freq=880.0), sink="second")
    silence_player = pulse.play(tone(6.0, amp=0.0, name="silence"), sink="loopback")
    try:
        second = Capture(DeviceSource("second.monitor"))
        first = Capture(DeviceSource("loopback.monitor"))
        second.wait_steady(1.0)
        first.wait_steady(1.0)
        now = time.monotonic()
        assert wait_for(lambda: time.monotonic() - now > 1.0)
        second.close()
        first.close()
    finally:
        watching.set()
        watcher.join(5)
        tone_player.kill()
        silence_player.kill()
        tone_player.wait()
        silence_player.wait()
    assert guard.touched == [] and seen_in_c == []
    assert second.source.error is None and first.source.error is None
    a, b = second.audio(), first.audio()
    assert len(a) > 48000 and len(b) > 48000
    # second.monitor got the 880 Hz tone, loopback.monitor silence: each its own signal
    assert np.sqrt(np.mean(a**2)) > 0.3
    assert np.abs(b).max() < 1e-3
    spectrum = np.abs(np.fft.rfft(a[:, 0]))
    assert abs(np.argmax(spectrum) * 48000 / len(a) - 880) < 5


def _pactl(*args: str) -> str:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


@pytest.mark.loopback
def test_a_vanished_sink_ends_the_capture_with_a_clear_message(pulse, tone):
    name = f"temp{os.getpid()}"
    module = _pactl("load-module", "module-null-sink", f"sink_name={name}", "rate=48000",
                    "channels=2")
    player = None
    try:
        player = pulse.play(tone(20.0, freq=660.0), sink=name)
        cap = Capture(DeviceSource(f"{name}.monitor", stall_seconds=30.0))
        try:
            cap.wait_steady(1.0)
            kept = cap.frames()
            _pactl("unload-module", module)
            module = None
            # PulseAudio moves the capture to another source: nbscribe notices within about
            # a second, and well before the (here long) stall timeout
            assert wait_for(lambda: cap.source.finished, 10)
        finally:
            cap.close()
    finally:
        if module is not None:
            _pactl("unload-module", module)
        if player is not None:
            player.kill()
            player.wait()
    error = cap.source.error
    assert error is not None
    assert f"the PulseAudio source {name}.monitor disappeared" in error
    assert "moved this capture to loopback.monitor" in error
    assert "so that loopback.monitor is not transcribed as" in error
    assert f"Everything captured from {name}.monitor until then is kept" in error
    assert "unplugged, or taken by another app" not in error
    # what was captured is kept: the tone, up to the unload
    assert cap.frames() >= kept > 0
    audio = cap.audio()
    assert np.sqrt(np.mean(audio[: kept] ** 2)) > 0.3
    assert cap.source.read(0.05) is None and cap.source.finished


@pytest.mark.loopback
def test_moving_the_capture_leaves_pulseaudios_remembered_routes_alone(pulse):
    import pulsectl

    module = _pactl("load-module", "module-stream-restore")
    try:
        with pulsectl.Pulse("nbscribe-test") as pa:
            # remembered sources (an entry may remember only a volume: device None)
            before = {e.name: e.device for e in pa.stream_restore_list() if e.device}
            cap = Capture(DeviceSource("second.monitor"))
            try:
                cap.wait_steady(0.2)
            finally:
                cap.close()
            after = {e.name: e.device for e in pa.stream_restore_list() if e.device}
        assert after == before  # no "ALSA plug-in [python…] records second.monitor" left behind
        # and the next capture of the default input starts on the default source again
        default = DeviceSource("pulse")
        default.start()
        try:
            with pulsectl.Pulse("nbscribe-test") as pa:
                pid = str(os.getpid())
                ours = [so for so in pa.source_output_list()
                        if so.proplist.get("application.process.id") == pid]
                assert [pa.source_info(so.source).name for so in ours] == ["loopback.monitor"]
        finally:
            default.close()
    finally:
        _pactl("unload-module", module)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PulseAudio sources are recorded by name only on Linux")


@linux_only
def test_without_pulsectl_named_sources_are_not_listed_and_say_why(monkeypatch, caplog):
    from nbscribe.devices import _pulse_sources
    from nbscribe.pulse import PulseCapture, PulseUnavailable, list_sources

    monkeypatch.setitem(sys.modules, "pulsectl", None)  # import pulsectl raises ImportError
    with pytest.raises(PulseUnavailable, match="pulsectl"):
        list_sources()
    with caplog.at_level(logging.WARNING, logger="nbscribe.devices"):
        assert _pulse_sources() == []
    assert "pip install pulsectl" in caplog.text
    with pytest.raises(AudioError, match=r"by name: the pulsectl package is not installed.*"
                                         r"pactl set-default-source x\.monitor"):
        PulseCapture("x.monitor")


@linux_only
def test_without_a_pulseaudio_server_named_sources_say_why(monkeypatch, tmp_path):
    pytest.importorskip("pulsectl")
    from nbscribe.pulse import PulseCapture, PulseUnavailable, list_sources

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no server socket here
    for var in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    t = time.monotonic()
    with pytest.raises(PulseUnavailable, match="no PulseAudio/PipeWire server answers"):
        list_sources()
    with pytest.raises(AudioError, match="no PulseAudio/PipeWire server answers"):
        PulseCapture("x.monitor")
    assert time.monotonic() - t < 5  # refused at once, nothing spawned or waited for
