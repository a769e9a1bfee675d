"""A routing self-test: check that what the computer plays reaches the loopback input.

`check_routing` plays a short chirp to the output device while recording the chosen input, then
looks for the chirp in the recording (normalised cross-correlation). The report says in words
what to fix when it is not there: the usual failure of system-audio capture is silence.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from .convert import Converter, level_dbfs
from .devices import close_stream, open_stream, sounddevice_module
from .errors import AudioError
from .sources import DeviceSource

__all__ = ["RoutingReport", "check_routing"]

RATE = 16000


@dataclasses.dataclass(frozen=True)
class RoutingReport:
    """The result of `check_routing`.

    Attributes
    ----------
    ok : bool
        The test signal arrived on the input.
    device : str
        The input that was recorded.
    correlation : float
        Normalised cross-correlation of the recording with the test signal (0 to 1).
    level_dbfs : float
        Level of the recording.
    delay_ms : float or None
        How late the signal arrived, when it did.
    message : str
        What happened, and what to do if it failed.
    """

    ok: bool
    device: str
    correlation: float
    level_dbfs: float
    delay_ms: float | None
    message: str

    def __str__(self) -> str:
        return self.message


def chirp(seconds: float = 0.6, rate: int = RATE, low: float = 300.0, high: float = 3000.0,
          amplitude: float = 0.25) -> np.ndarray:
    """Return a logarithmic sweep with 20 ms fades (float32, mono)."""
    t = np.arange(int(seconds * rate)) / rate
    k = np.log(high / low)
    phase = 2 * np.pi * low * seconds / k * (np.exp(t * k / seconds) - 1)
    x = amplitude * np.sin(phase)
    fade = min(len(x) // 2, int(0.02 * rate))
    ramp = np.linspace(0, 1, fade)
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return x.astype(np.float32)


def _best_lag(recording: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    n = len(recording) + len(reference)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(recording, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(corr[: len(recording)]))
    seg = recording[lag : lag + len(reference)]
    ref = reference[: len(seg)]
    denom = float(np.linalg.norm(seg) * np.linalg.norm(ref))
    return (float(np.dot(seg, ref) / denom) if denom > 0 else 0.0), lag


class _Player:
    """Play a mono float32 signal once on an output, through a counted PortAudio stream.

    Not ``sounddevice.play``: that closes whatever sounddevice stream played last (perhaps the
    user's) and is not counted among nbscribe's open streams (see `nbscribe.devices`).
    """

    def __init__(self, signal: np.ndarray, rate: int, output: str | int | None) -> None:
        self._signal = signal
        self._pos = 0
        sd = sounddevice_module()
        try:
            self._stream = open_stream(lambda: sd.OutputStream(
                samplerate=rate, channels=1, dtype="float32", device=output,
                callback=self._callback))
            self._stream.start()
        except sd.PortAudioError as exc:
            raise AudioError(f"cannot play the test signal on {output or 'the default output'}:"
                             f" {exc}") from None

    def _callback(self, outdata: np.ndarray, frames: int, time_info: object,
                  status: object) -> None:
        # PortAudio's thread: copy the next samples, silence after the end.
        chunk = self._signal[self._pos : self._pos + frames]
        outdata[: len(chunk), 0] = chunk
        outdata[len(chunk) :] = 0
        self._pos += len(chunk)

    def close(self) -> None:
        close_stream(self._stream)


def _advice(platform: str) -> str:
    if platform == "darwin":
        return ("Make the Multi-Output Device that includes BlackHole the system output (System "
                "Settings > Sound > Output) and check that BlackHole is ticked in it in Audio "
                "MIDI Setup; then record 'BlackHole 2ch'.")
    if platform.startswith("win"):
        return ("Make 'CABLE Input' the default playback device (Sound settings > Output), then "
                "record 'CABLE Output'; to keep hearing it, tick 'Listen to this device' on "
                "CABLE Output.")
    return ("Record the monitor of the output that is playing: `pactl get-default-sink` names it, "
            "record '<that name>.monitor'; or make the sink you record the default: "
            "`pactl set-default-sink <sink>`.")


def check_routing(device: str | int | None = None, output: str | int | None = None,
                  seconds: float = 0.6, platform: str | None = None) -> RoutingReport:
    """Play a test chirp to `output` and check that it arrives on the input `device`.

    Parameters
    ----------
    device : str, int or None
        The loopback input to test (BlackHole, CABLE Output, a ``.monitor`` ...); ``None`` is
        the default input.
    output : str, int or None
        Where to play the chirp; ``None`` is the default output, which is where calls and
        videos play.
    seconds : float
        Length of the chirp.
    platform : str, optional
        The OS whose advice to give (default: this one).

    Returns
    -------
    RoutingReport
        ``ok`` and a message that says what to fix when the chirp did not arrive.
    """
    source = DeviceSource(device)
    name = source.info.name
    signal = chirp(seconds)
    out_rate = 48000
    conv_out = Converter(RATE, 1, out_rate, 50)
    played = np.frombuffer(b"".join(conv_out.push(signal) + conv_out.flush()), "<i2")
    blocks = []
    source.start()
    try:
        # Let the input start: some deliver their first block only after a second or two.
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5 and not blocks:
            b = source.read(0.1)
            if b is not None:
                blocks.append(b)
        before = sum(len(b) for b in blocks) / source.sample_rate  # recorded before the chirp
        player = _Player(played.astype(np.float32) / 32768.0, out_rate, output)
        try:
            # Read until the chirp has had time to arrive, then for as long as blocks keep
            # coming (some inputs start delivering only once audio plays, and late).
            t1 = last = time.monotonic()
            while True:
                now = time.monotonic()
                if now - t1 > seconds + 4.0 or (now - t1 > seconds + 0.8 and now - last > 0.5):
                    break
                b = source.read(0.1)
                if b is not None:
                    blocks.append(b)
                    last = time.monotonic()
        finally:
            player.close()
    finally:
        source.close()
    if blocks:
        conv = Converter(source.sample_rate, source.channels, RATE, 50)
        frames = conv.push(np.concatenate(blocks)) + conv.flush()
        rec = np.frombuffer(b"".join(frames), "<i2").astype(np.float32) / 32768.0
    else:  # an input that delivers nothing while its output is idle: silence
        rec = np.zeros(len(signal), dtype=np.float32)
    level = level_dbfs(rec)
    corr, lag = _best_lag(rec, signal)
    advice = _advice(platform or sys.platform)
    if corr >= 0.5:
        delay = max(0.0, (lag / RATE - before) * 1000)
        return RoutingReport(True, name, corr, level, delay,
                             f"OK: what the computer plays reaches {name} (match {corr:.2f}). "
                             "Transcribe it with Transcriber(DeviceSource(...)) or the panel.")
    if level < -60:
        return RoutingReport(False, name, corr, level, None,
                             f"Silence on {name} ({level:.0f} dBFS) while a test sound played: "
                             f"the output is not routed to it. {advice}")
    return RoutingReport(False, name, corr, level, None,
                         f"Sound arrives on {name} ({level:.0f} dBFS) but not the test signal "
                         f"(match {corr:.2f}): it may be a microphone, or other audio is playing. "
                         f"{advice}")
