"""The source protocol: what the transcriber's pump needs from any audio source.

A source is used by one thread, its owner (the transcriber's pump thread): that thread calls
`start`, `read` and `close`, and only it closes what the source opened.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["AudioSource"]


@runtime_checkable
class AudioSource(Protocol):
    """What the transcriber needs from a source.

    Attributes
    ----------
    sample_rate : int
        Frames per second of the blocks `read` returns.
    channels : int
        Channels of those blocks.
    realtime : bool
        Whether blocks arrive at real-time pace (devices, the browser, paced files); a source
        that is not real-time is sent as fast as the service allows.
    description : str
        What it is, for status lines (``"device BlackHole 2ch (48000 Hz, 2 ch)"``).
    finished : bool
        True once the source has nothing more to give (end of file, device gone).
    overflows : int
        Blocks the source lost because they were not read in time (0 for files).
    error : str or None
        Why the source finished early, if it did.

    A source may also have ``first_block_at``: the `time.monotonic` time its first block
    began, when it knows it better than the moment the block is read (a device's callback
    does). Two sources are lined up with it for echo cancellation.
    """

    sample_rate: int
    channels: int
    realtime: bool
    finished: bool
    overflows: int
    error: str | None

    @property
    def description(self) -> str:
        """What the source is, for status lines."""

    def start(self) -> None:
        """Open the source and begin producing blocks."""

    def read(self, timeout: float) -> np.ndarray | None:
        """Return the next block, or ``None`` if none arrived within `timeout` seconds."""

    def close(self) -> None:
        """Release the source (idempotent)."""
