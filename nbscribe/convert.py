"""Audio conversion: any rate and channel count to fixed-size frames of mono PCM16.

The `Converter` keeps state across blocks (the resampler's filter memory and the samples of a
frame not yet full), so it is fed block by block as audio is captured. Pure NumPy + soxr.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

__all__ = ["Converter", "level_dbfs", "to_float32"]

MIN_FRAME_MS = 50
MAX_FRAME_MS = 1000


def to_float32(block: np.ndarray) -> np.ndarray:
    """Return `block` as float32 in [-1, 1], shaped (frames, channels).

    Integer input is scaled by its type's range (int16, int32, uint8 ...); float input is
    clipped to [-1, 1].
    """
    a = np.asarray(block)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ConfigError(f"audio must be 1-D or (frames, channels), got shape {a.shape}")
    if a.dtype.kind == "f":
        return np.clip(a, -1.0, 1.0).astype(np.float32, copy=False)
    if a.dtype.kind == "i":
        return (a.astype(np.float32) / float(-np.iinfo(a.dtype).min)).astype(np.float32)
    if a.dtype.kind == "u":
        info = np.iinfo(a.dtype)
        mid = (info.max + 1) / 2
        return ((a.astype(np.float32) - mid) / mid).astype(np.float32)
    raise ConfigError(f"unsupported audio sample type {a.dtype}")


def level_dbfs(block: np.ndarray) -> float:
    """Return the RMS level of a float block in dBFS (-120 for silence)."""
    a = np.asarray(block, dtype=np.float32)
    if a.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(a), dtype=np.float64)))
    return max(-120.0, 20.0 * np.log10(rms)) if rms > 0 else -120.0


class Converter:
    """Downmix, resample and cut audio into frames of mono little-endian PCM16.

    Parameters
    ----------
    in_rate : int
        Sample rate of the blocks fed in (the device's own rate, often 48000).
    in_channels : int
        Channel count of the blocks fed in; they are averaged to mono.
    out_rate : int
        Sample rate of the frames out (16000 for the service).
    frame_ms : int
        Duration of each frame out, 50-1000 ms (the service's limits).

    Examples
    --------
    >>> conv = Converter(48000, 2, 16000, 50)
    >>> frames = conv.push(np.zeros((4800, 2), dtype=np.float32))   # 100 ms -> two frames
    >>> [len(f) for f in frames]
    [1600, 1600]
    """

    def __init__(
        self, in_rate: int, in_channels: int, out_rate: int = 16000, frame_ms: int = 50
    ) -> None:
        if not MIN_FRAME_MS <= frame_ms <= MAX_FRAME_MS:
            raise ConfigError(
                f"frame_ms must be {MIN_FRAME_MS}-{MAX_FRAME_MS} ms (the service's limits), "
                f"got {frame_ms}"
            )
        if in_rate <= 0 or out_rate <= 0 or in_channels <= 0:
            raise ConfigError(
                f"rates and channels must be positive, got {in_rate} Hz, {in_channels} ch"
            )
        self.in_rate = int(in_rate)
        self.in_channels = int(in_channels)
        self.out_rate = int(out_rate)
        self.frame_ms = int(frame_ms)
        self.frame_samples = self.out_rate * self.frame_ms // 1000
        self._pending = np.zeros(0, dtype=np.int16)
        self._resampler = None
        if self.in_rate != self.out_rate:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ"
            )
        self.level = -120.0

    def push(self, block: np.ndarray) -> list[bytes]:
        """Feed one block; return the frames that are now complete (possibly none)."""
        a = to_float32(block)
        if a.shape[1] != self.in_channels:
            raise ConfigError(f"expected {self.in_channels} channel(s), got {a.shape[1]}")
        mono = a.mean(axis=1) if self.in_channels > 1 else a[:, 0]
        self.level = level_dbfs(mono)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32))
        return self._cut(mono)

    def flush(self) -> list[bytes]:
        """Drain the resampler and return what is left, the last frame padded with silence."""
        tail = np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        frames = self._cut(tail)
        if self._pending.size:
            pad = np.zeros(self.frame_samples - self._pending.size, dtype=np.int16)
            frames.append(np.concatenate([self._pending, pad]).astype("<i2").tobytes())
            self._pending = np.zeros(0, dtype=np.int16)
        return frames

    def _cut(self, mono: np.ndarray) -> list[bytes]:
        pcm = np.clip(np.round(mono * 32767.0), -32768, 32767).astype(np.int16)
        buf = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n = buf.size // self.frame_samples
        frames = [
            buf[i * self.frame_samples : (i + 1) * self.frame_samples].astype("<i2").tobytes()
            for i in range(n)
        ]
        self._pending = buf[n * self.frame_samples :].copy()
        return frames
