"""Sources from memory and files: a NumPy array, or any file libsndfile reads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..errors import AudioError, ConfigError

__all__ = ["ArraySource", "FileSource"]


class ArraySource:
    """Audio from a NumPy array, e.g. a test signal or audio loaded by another library.

    Parameters
    ----------
    data : numpy.ndarray
        Shape (frames,) or (frames, channels); any integer or float type.
    sample_rate : int
        Its sample rate.
    realtime : bool
        Deliver blocks at real-time pace (as a device would); ``False`` delivers them at once
        (only for servers that allow it, such as the local server in fast mode).
    block_ms : int
        Duration of each block.
    """

    def __init__(
        self, data: np.ndarray, sample_rate: int, realtime: bool = True, block_ms: int = 50
    ) -> None:
        from ..convert import to_float32

        if sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {sample_rate}")
        self._data = to_float32(data)
        if self._data.shape[0] == 0:
            raise AudioError("the array holds no audio (0 frames)")
        self.sample_rate = int(sample_rate)
        self.channels = int(self._data.shape[1])
        self.realtime = realtime
        self.block = max(1, self.sample_rate * block_ms // 1000)
        self.finished = False
        self.overflows = 0
        self.error: str | None = None
        self.description = f"array ({self._data.shape[0] / self.sample_rate:.1f} s)"
        self._pos = 0
        self._t0: float | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio in the source."""
        return self._data.shape[0] / self.sample_rate

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
            due = self._t0 + self._pos / self.sample_rate
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
