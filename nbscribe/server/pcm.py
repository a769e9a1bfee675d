"""The audio the local engine works on: the wire's PCM turned into float32 mono at 16 kHz.

`RATE` is what Whisper and Silero take; the voice activity detector looks at `WINDOW` samples
at a time, and turn detection counts in these windows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RATE", "WINDOW", "PcmDecoder", "mulaw_to_float"]

RATE = 16000
WINDOW = 512  # Silero's window at 16 kHz: 32 ms


class PcmDecoder:
    """Decode one session's audio chunks, resampling them to `RATE` (keeps the resampler's state).

    Parameters
    ----------
    sample_rate : int
        Hz of the audio the client sends.
    """

    def __init__(self, sample_rate: int) -> None:
        self._resampler = None
        if sample_rate != RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, RATE, 1, dtype="float32")

    def __call__(self, data: bytes, encoding: str) -> np.ndarray:
        """Return `data` (``pcm_s16le`` or ``pcm_mulaw``) as float32 samples at 16 kHz."""
        if encoding == "pcm_mulaw":
            audio = mulaw_to_float(np.frombuffer(data, dtype=np.uint8))
        else:
            audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio)
        return audio


def mulaw_to_float(codes: np.ndarray) -> np.ndarray:
    """Return G.711 mu-law bytes as float32 samples in [-1, 1]."""
    u = ~codes.astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    value = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    return (value / 32768.0).astype(np.float32)
