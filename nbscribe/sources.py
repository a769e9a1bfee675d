"""Audio sources: a sound device, a file, an array.

Every source delivers float32 blocks shaped (frames, channels) at its own sample rate and channel
count; `nbscribe.convert.Converter` turns them into what the service wants.

A source is used by one thread, its owner (the transcriber's pump thread): that thread calls
`start`, `read` and `close`. Only PortAudio's callback runs elsewhere, and it only copies the
block into a queue.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .devices import DeviceInfo, find_device, sounddevice_module
from .errors import AudioError, ConfigError

__all__ = ["ArraySource", "AudioSource", "DeviceSource", "FileSource"]

logger = logging.getLogger(__name__)

_PULSE_LOCK = threading.Lock()


@runtime_checkable
class AudioSource(Protocol):
    """What the transcriber needs from a source.

    Attributes
    ----------
    samplerate : int
        Frames per second of the blocks `read` returns.
    channels : int
        Channels of those blocks.
    finished : bool
        True once the source has nothing more to give (end of file, device gone).
    overflows : int
        Blocks the source lost because they were not read in time (0 for files).
    error : str or None
        Why the source finished early, if it did.
    """

    samplerate: int
    channels: int
    finished: bool
    overflows: int
    error: str | None
    description: str

    def start(self) -> None:
        """Open the source and begin producing blocks."""

    def read(self, timeout: float) -> np.ndarray | None:
        """Return the next block, or ``None`` if none arrived within `timeout` seconds."""

    def close(self) -> None:
        """Release the source (idempotent)."""


class ArraySource:
    """Audio from a NumPy array, e.g. a test signal or audio loaded by another library.

    Parameters
    ----------
    data : numpy.ndarray
        Shape (frames,) or (frames, channels); any integer or float type.
    samplerate : int
        Its sample rate.
    realtime : bool
        Deliver blocks at real-time pace (as a device would); ``False`` delivers them at once
        (only for servers that allow it, such as the local server in fast mode).
    block_ms : int
        Duration of each block.
    """

    def __init__(
        self, data: np.ndarray, samplerate: int, realtime: bool = False, block_ms: int = 50
    ) -> None:
        from .convert import to_float32

        if samplerate <= 0:
            raise ConfigError(f"samplerate must be positive, got {samplerate}")
        self._data = to_float32(data)
        if self._data.shape[0] == 0:
            raise AudioError("the array holds no audio (0 frames)")
        self.samplerate = int(samplerate)
        self.channels = int(self._data.shape[1])
        self.realtime = realtime
        self.block = max(1, self.samplerate * block_ms // 1000)
        self.finished = False
        self.overflows = 0
        self.error: str | None = None
        self.description = f"array ({self._data.shape[0] / self.samplerate:.1f} s)"
        self._pos = 0
        self._t0: float | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio in the source."""
        return self._data.shape[0] / self.samplerate

    def start(self) -> None:
        """Start the real-time clock."""
        self._t0 = time.monotonic()

    def _next_block(self) -> np.ndarray | None:
        if self._pos >= self._data.shape[0]:
            return None
        block = self._data[self._pos : self._pos + self.block]
        return block

    def read(self, timeout: float) -> np.ndarray | None:
        """Return the next block, waiting in real-time mode until its time has come."""
        if self.finished:
            return None
        if self._t0 is None:
            self.start()
        block = self._next_block()
        if block is None:
            self.finished = True
            return None
        if self.realtime:
            due = self._t0 + self._pos / self.samplerate
            wait = due - time.monotonic()
            if wait > timeout:
                time.sleep(timeout)
                return None
            if wait > 0:
                time.sleep(wait)
        self._pos += block.shape[0]
        return block

    def close(self) -> None:
        """Nothing to release."""
        self.finished = True


class FileSource(ArraySource):
    """Audio from a file: WAV (16/24/32-bit, float), FLAC, OGG, MP3 ... (what libsndfile reads).

    The file is checked when the source is created: a missing, empty, corrupt or unsupported
    file raises `AudioError` right away. Any rate and channel count is accepted and converted.

    Parameters
    ----------
    path : str or Path
        The audio file.
    realtime : bool
        Deliver audio at real-time pace (default), as the AssemblyAI service requires.
        ``False`` (fast mode) sends as fast as possible, for servers that allow it.
    block_ms : int
        Duration of each block.
    """

    def __init__(self, path: str | os.PathLike[str], realtime: bool = True, block_ms: int = 50):
        import soundfile

        self.path = Path(path)
        if not self.path.exists():
            raise AudioError(f"audio file not found: {self.path}")
        if self.path.is_dir():
            raise AudioError(f"{self.path} is a folder, not an audio file")
        if self.path.stat().st_size == 0:
            raise AudioError(f"audio file is empty (0 bytes): {self.path}")
        try:
            data, rate = soundfile.read(str(self.path), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
            formats = ", ".join(sorted(soundfile.available_formats()))
            raise AudioError(
                f"cannot read {self.path} as audio ({exc}). Supported formats: {formats}. "
                "Convert other formats first, e.g. `ffmpeg -i in.m4a out.wav`."
            ) from None
        if data.shape[0] == 0:
            raise AudioError(f"audio file holds no audio (0 frames): {self.path}")
        super().__init__(data, rate, realtime=realtime, block_ms=block_ms)
        self.description = f"file {self.path.name} ({self.duration:.1f} s, {rate} Hz)"


class DeviceSource:
    """Audio from a sound device (microphone or loopback) through PortAudio.

    The device is opened at its own sample rate and channel count (at most `max_channels`); the
    converter resamples and downmixes. PortAudio's callback only copies each block into a
    bounded queue; a full queue or a PortAudio overflow is counted in `overflows`, never hidden.

    Parameters
    ----------
    device : str, int or None
        A name (or part of one), an index, or ``None`` for the default input. On Linux a
        PulseAudio/PipeWire source name (such as ``"alsa_output....monitor"``) works too.
    samplerate : int, optional
        Override the device's default rate.
    channels : int, optional
        Override the channel count (default: the device's, at most `max_channels`).
    block_ms : int
        Duration of each block PortAudio delivers.
    max_channels : int
        Upper bound on the channels opened by default.
    queue_seconds : float
        How much audio may wait in the queue before blocks are dropped (and counted).
    stall_seconds : float
        Once audio has flowed, this long without a block ends the capture with an error that
        says the device stopped (unplugged, or taken by another app).
    """

    def __init__(
        self,
        device: str | int | None = None,
        samplerate: int | None = None,
        channels: int | None = None,
        block_ms: int = 50,
        max_channels: int = 2,
        queue_seconds: float = 30.0,
        stall_seconds: float = 5.0,
    ) -> None:
        self.info: DeviceInfo = find_device(device)
        self.samplerate = int(samplerate or self.info.samplerate)
        self.channels = int(channels or min(self.info.channels, max_channels))
        self.block = max(1, self.samplerate * block_ms // 1000)
        self.finished = False
        self.overflows = 0
        self.error: str | None = None
        self.description = f"device {self.info.name} ({self.samplerate} Hz, {self.channels} ch)"
        self._queue: queue.Queue[np.ndarray] = queue.Queue(
            maxsize=max(4, int(queue_seconds * 1000 / block_ms))
        )
        self._stream = None
        self.stall_seconds = stall_seconds
        self._last_block: float | None = None

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        # PortAudio's thread: copy and return; never block, never log here.
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.overflows += 1

    def start(self) -> None:
        """Open and start the input stream.

        Raises
        ------
        AudioError
            The device refused the settings (the message names them).
        """
        sd = sounddevice_module()
        device: str | int = self.info.index if self.info.index is not None else "pulse"
        try:
            # A PulseAudio source is recorded through PortAudio's "pulse" device, which takes
            # the source from PULSE_SOURCE while the stream is opened.
            with _PULSE_LOCK:
                saved = os.environ.get("PULSE_SOURCE")
                if self.info.index is None:
                    os.environ["PULSE_SOURCE"] = self.info.name
                try:
                    self._stream = sd.InputStream(
                        device=device,
                        samplerate=self.samplerate,
                        channels=self.channels,
                        dtype="float32",
                        blocksize=self.block,
                        callback=self._callback,
                        finished_callback=self._on_finished,
                    )
                    self._stream.start()
                finally:
                    if self.info.index is None:
                        if saved is None:
                            os.environ.pop("PULSE_SOURCE", None)
                        else:
                            os.environ["PULSE_SOURCE"] = saved
        except sd.PortAudioError as exc:
            raise AudioError(
                f"cannot open {self.info.name} at {self.samplerate} Hz with {self.channels} "
                f"channel(s): {exc}. Try samplerate= or channels= with values the device supports."
            ) from None
        logger.info("capturing from %s", self.description)

    def _on_finished(self) -> None:
        # Called by PortAudio when the stream ends, including when the device disappears.
        if self._stream is not None and not getattr(self, "_closing", False):
            self.error = (f"the device {self.info.name} stopped delivering audio (unplugged, or "
                          "taken by another app?). Everything captured until then is kept.")

    def read(self, timeout: float) -> np.ndarray | None:
        """Return the next captured block, or ``None`` after `timeout` seconds without one."""
        try:
            block = self._queue.get(timeout=timeout)
        except queue.Empty:
            now = time.monotonic()
            if (not self.error and self._last_block is not None
                    and now - self._last_block > self.stall_seconds):
                self.error = (f"the device {self.info.name} stopped delivering audio: none for "
                              f"{self.stall_seconds:g} s (unplugged, or taken by another app?). "
                              "Everything captured until then is kept.")
            if self.error and self._queue.empty():
                self.finished = True
            return None
        self._last_block = time.monotonic()
        return block

    def close(self) -> None:
        """Stop and close the stream (idempotent). Call it from the thread that reads."""
        self._closing = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()
        self.finished = True
