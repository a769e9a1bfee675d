"""A sound device (microphone or loopback) through PortAudio.

Only PortAudio's callbacks run outside the owner thread: one copies each block into a queue,
the other flags that the stream ended.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from ..devices import (
    DeviceInfo,
    close_stream,
    find_device,
    open_stream,
    portaudio_lock,
    resolve_index,
    sounddevice_module,
)
from ..errors import AudioError
from ..pulse import PulseCapture

__all__ = ["DeviceSource"]

logger = logging.getLogger(__name__)


class DeviceSource:
    """Audio from a sound device (microphone or loopback) through PortAudio.

    The device is opened at its own sample rate and channel count (at most `max_channels`); the
    converter resamples and downmixes. PortAudio's callback only copies each block into a
    bounded queue; a full queue or a PortAudio overflow is counted in `overflows`, never hidden.

    A PulseAudio/PipeWire source named by its name (such as a ``.monitor``) is recorded through
    PortAudio's ``pulse`` device and moved to that source (`nbscribe.pulse.PulseCapture`).
    PulseAudio moves such a capture by itself when the source goes away (it does so when the
    output whose monitor is recorded disappears): `read` checks about once a second
    (`check_seconds`) that it still records the named source, and otherwise ends the capture
    with an error that says so, rather than transcribing another source under its name.

    nbscribe's own actions never end a capture: re-scanning devices (the panel's refresh
    button, a new `DeviceSource`, `check_routing`) leaves PortAudio alone while a stream is
    open (see `nbscribe.devices`).

    Parameters
    ----------
    device : str, int or None
        A name (or part of one), an index, or ``None`` for the default input. On Linux a
        PulseAudio/PipeWire source name (such as ``"alsa_output....monitor"``) works too.
    sample_rate : int, optional
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
    check_seconds : float
        How often `read` checks that a PulseAudio source is still the one recorded.
    """

    realtime = True  # a device delivers audio as it happens

    def __init__(
        self,
        device: str | int | None = None,
        sample_rate: int | None = None,
        channels: int | None = None,
        block_ms: int = 100,
        max_channels: int = 2,
        queue_seconds: float = 30.0,
        stall_seconds: float = 5.0,
        check_seconds: float = 1.0,
    ) -> None:
        self.info: DeviceInfo = find_device(device)
        self.sample_rate = int(sample_rate or self.info.sample_rate)
        self.channels = int(channels or min(self.info.channels, max_channels))
        self.block = max(1, self.sample_rate * block_ms // 1000)
        self.finished = False
        self.overflows = 0
        self.error: str | None = None
        self.description = f"device {self.info.name} ({self.sample_rate} Hz, {self.channels} ch)"
        self._queue: queue.Queue[np.ndarray] = queue.Queue(
            maxsize=max(4, int(queue_seconds * 1000 / block_ms))
        )
        self._stream: Any = None
        self._pulse: PulseCapture | None = None
        self._closing = False
        self._ended = threading.Event()  # set by PortAudio when the stream ends by itself
        self.stall_seconds = stall_seconds
        self.check_seconds = check_seconds
        self._next_check = 0.0
        self._last_block: float | None = None
        #: `time.monotonic` when the first block began (set by PortAudio's thread)
        self.first_block_at: float | None = None
        self._captured = 0  # frames delivered by PortAudio since the capture began

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        # PortAudio's thread: copy and return; never block, never log here.
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        # When capture began: a block cannot arrive before it was recorded, so every block
        # bounds the start from above; the tightest bound wins (a burst of buffered blocks
        # after a slow start only tightens it once they are through).
        self._captured += frames
        began = time.monotonic() - self._captured / self.sample_rate
        if self.first_block_at is None or began < self.first_block_at:
            self.first_block_at = began
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.overflows += 1

    def _on_finished(self) -> None:
        # PortAudio's thread, when the stream ends, also when the device disappears: only flag
        # it; the owner thread turns it into an error in `read`.
        if not self._closing:
            self._ended.set()

    def start(self) -> None:
        """Open and start the input stream.

        Raises
        ------
        AudioError
            The device refused the settings (the message names them), or a PulseAudio source
            cannot be recorded by name (the message says why).
        """
        sd = sounddevice_module()
        named = self.info.index is None
        self._closing = False
        self._ended.clear()
        try:
            # The lock keeps re-scans out, and other nbscribe streams from opening while ours
            # is being found and moved to its PulseAudio source.
            with portaudio_lock():
                if named:
                    self._pulse = PulseCapture(self.info.name)
                    self._pulse.before_open()
                device = "pulse" if named else resolve_index(sd, self.info)
                self._stream = open_stream(lambda: sd.InputStream(
                    device=device,
                    samplerate=self.sample_rate,  # sounddevice's name
                    channels=self.channels,
                    dtype="float32",
                    blocksize=self.block,
                    callback=self._callback,
                    finished_callback=self._on_finished,
                ))
                self._stream.start()
                if self._pulse is not None:
                    self._pulse.attach()
                    # anything recorded before the move (usually nothing) is not this source's:
                    # capture begins with the next block
                    self.first_block_at, self._captured = None, 0
                    self._clear_queue()
        except sd.PortAudioError as exc:
            self.close()
            raise AudioError(
                f"cannot open {self.info.name} at {self.sample_rate} Hz with {self.channels} "
                f"channel(s): {exc}. Try sample_rate= or channels= with values the device supports."
            ) from None
        except BaseException:
            self.close()
            raise
        self.finished = False
        self._next_check = time.monotonic() + self.check_seconds
        logger.info("capturing from %s", self.description)

    def _clear_queue(self) -> int:
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return dropped
            dropped += 1

    def _check_source(self, now: float, force: bool = False) -> None:
        """End the capture if PulseAudio no longer records the named source into it."""
        if self._pulse is None or (now < self._next_check and not force):
            return
        self._next_check = now + self.check_seconds
        problem = self._pulse.check()
        if problem is None:
            return
        what, moved = problem
        self.error = f"{what} Everything captured from {self.info.name} until then is kept."
        self._stop_stream()
        if moved:  # what is still queued most likely came from the other source
            dropped = self._clear_queue()
            logger.debug("dropped %d block(s) queued when the move was noticed", dropped)

    def _stop_stream(self) -> None:
        self._closing = True
        stream, self._stream = self._stream, None
        if stream is not None:
            close_stream(stream)

    def read(self, timeout: float) -> np.ndarray | None:
        """Return the next captured block, or ``None`` after `timeout` seconds without one."""
        if self.error is None:
            self._check_source(time.monotonic())
        if self.error is None and self._ended.is_set():
            self._check_source(time.monotonic(), force=True)  # a vanished source says more
            self.error = self.error or (
                f"the device {self.info.name} stopped delivering audio (unplugged, or taken "
                "by another app?). Everything captured until then is kept.")
        try:
            block = self._queue.get(timeout=0 if self.error else timeout)
        except queue.Empty:
            now = time.monotonic()
            if (self.error is None and self._last_block is not None
                    and now - self._last_block > self.stall_seconds):
                self._check_source(now, force=True)  # a vanished or moved source says more
                self.error = self.error or (
                    f"the device {self.info.name} stopped delivering audio: none for "
                    f"{self.stall_seconds:g} s (unplugged, or taken by another app?). "
                    "Everything captured until then is kept.")
            if self.error:
                self.finished = True
            return None
        self._last_block = time.monotonic()
        return block

    def close(self) -> None:
        """Stop and close the stream (idempotent). Call it from the thread that reads."""
        try:
            self._stop_stream()
        finally:
            pulse, self._pulse = self._pulse, None
            if pulse is not None:
                pulse.close()
            self.finished = True
