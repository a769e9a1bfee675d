"""A WAV writer for audio that is written as it is captured.

The RIFF header is rewritten after every block and the file flushed, so the file on disk is a
valid WAV at every moment: a crash loses at most the block being written, never the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["WavWriter"]


class WavWriter:
    """Append PCM16 mono (or multi-channel) frames to a WAV file that stays valid.

    Parameters
    ----------
    path : str or Path
        The file to create (parent folders are created).
    sample_rate : int
        Frames per second.
    channels : int
        Interleaved channels per frame.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int, channels: int = 1) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.bytes_written = 0
        self._file = open(self.path, "wb")
        self._write_header()

    @property
    def seconds(self) -> float:
        """Duration written so far."""
        return self.bytes_written / (2 * self.channels * self.sample_rate)

    def write(self, pcm: bytes) -> None:
        """Append little-endian PCM16 bytes and make the header describe them."""
        if self._file.closed:
            raise ValueError(f"{self.path} is closed")
        self._file.seek(0, os.SEEK_END)
        self._file.write(pcm)
        self.bytes_written += len(pcm)
        self._write_header()
        self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def _write_header(self) -> None:
        block_align = 2 * self.channels
        header = b"RIFF" + struct.pack("<I", 36 + self.bytes_written) + b"WAVE"
        header += b"fmt " + struct.pack(
            "<IHHIIHH",
            16,
            1,
            self.channels,
            self.sample_rate,
            self.sample_rate * block_align,
            block_align,
            16,
        )
        header += b"data" + struct.pack("<I", self.bytes_written)
        self._file.seek(0)
        self._file.write(header)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
