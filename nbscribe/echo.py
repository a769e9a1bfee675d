"""Echo: the call that a microphone hears from the speakers, removed before it is transcribed.

When a call plays on the speakers, the microphone picks it up, and "You vs Others" would write
the other side's sentences twice. Two steps keep each sentence once, under its own source:

1. **Acoustic echo cancellation** (`EchoCanceller`). The loopback source captures exactly what
   the speakers play, so it is the reference the echo is made of. WebRTC's echo canceller
   (AEC3, through LiveKit's ``livekit`` package, Apache-2.0) models the path from speakers to
   microphone (delay, level, reverberation), subtracts the echo, and suppresses what is left,
   while speech of the person at the microphone passes, also when both talk at once.
2. **A transcript-level net** (`find_echoes`, used by `nbscribe.multi.MultiSession`): a turn of
   the microphone that repeats a turn of the loopback (overlapping in time, mostly the same
   words) is marked as echo and kept out of the merged DataFrames and exports by default; it
   stays in the source's journal, and ``include_echo=True`` shows it.

`EchoCanceller` is the meeting point of two pumps (two threads): the loopback's pump gives it
each frame it captures through `EchoCanceller.reference` (a `FrameStage` that passes frames on
unchanged), and the microphone's pump sends its frames through `EchoCanceller.microphone`, which
gives them back cleaned once the reference for their time has arrived (about 0.1-0.2 s later).
Only the microphone's pump calls the canceller; the reference reaches it through a locked
buffer. Frames carry the time they were captured (`time.monotonic` for live sources, the
position in the stream for sources read faster than real time), which lines the two streams up.
Devices do not always tell the truth about that (a stream that started slowly can carry a steady
extra latency of a second), so the level envelopes of the microphone and the reference are also
cross-correlated every second, and a clear lag outside what AEC3 handles (0-0.3 s) moves the
reference into place (`EchoCanceller.offset`).
"""

from __future__ import annotations

import bisect
import collections
import difflib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["EchoCanceller", "FrameStage", "echo_cancellation_available", "find_echoes"]

logger = logging.getLogger(__name__)

_CHUNK_S = 0.01  # the canceller works on 10 ms


class FrameStage(Protocol):
    """A step between the converter and the outbox of a pump (one thread calls it).

    `push` takes a 16 kHz PCM16 frame and the time it was captured, and returns the frames
    ready to go on (maybe none, maybe earlier ones); `poll` returns frames that became ready
    meanwhile; `close` returns what is left, at the end of the stream.
    """

    def push(self, frame: bytes, at: float) -> list[bytes]:
        """Take a frame; return the frames ready to go on."""
        ...

    def poll(self) -> list[bytes]:
        """Return the frames that became ready since the last call."""
        ...

    def close(self) -> list[bytes]:
        """Return everything left (the stream ended)."""
        ...


def echo_cancellation_available() -> bool:
    """Whether the acoustic echo canceller can run (``pip install 'nbscribe[echo]'``)."""
    try:
        from livekit import rtc  # noqa: F401
    except ImportError:
        return False
    return True


class _Reference:
    """The loopback's side: records each frame for the canceller, passes it on unchanged."""

    def __init__(self, owner: EchoCanceller) -> None:
        self._owner = owner

    def push(self, frame: bytes, at: float) -> list[bytes]:
        self._owner._add_reference(frame, at)
        return [frame]

    def poll(self) -> list[bytes]:
        return []

    def close(self) -> list[bytes]:
        self._owner._end_reference()
        return []


class _Microphone:
    """The microphone's side: holds frames until their reference is there, then cleans them."""

    def __init__(self, owner: EchoCanceller) -> None:
        self._owner = owner

    def push(self, frame: bytes, at: float) -> list[bytes]:
        self._owner._pending.append((frame, at, time.monotonic()))
        return self._owner._process()

    def poll(self) -> list[bytes]:
        return self._owner._process()

    def close(self) -> list[bytes]:
        return self._owner._process(final=True)


class _DelayTracker:
    """Finds how far the echo in the microphone lags the reference given with it, from the sound.

    Capture times only line the two streams up as well as the devices report them; a stream
    that started slowly can carry a steady extra latency, and Bluetooth speakers add their own.
    So the level envelopes (10 ms steps) of the microphone and of the reference are
    cross-correlated over the last seconds; a clear peak says by how much the echo lags.
    """

    def __init__(self, rate: int, window: float = 4.0, max_lag: float = 1.5,
                 min_corr: float = 0.35) -> None:
        self.hop = rate // 100
        self.window = int(window * 100)
        self.max_lag = int(max_lag * 100)
        self.min_corr = min_corr
        self.mic: list[float] = []  # envelope of the microphone since the last change
        self.clear = False  # whether the last estimate was beyond doubt
        self.first_ref_hop: int | None = None  # the reference hop paired with mic[0]

    def levels(self, samples: np.ndarray) -> np.ndarray:
        n = len(samples) // self.hop
        x = samples[:n * self.hop].astype(np.float64).reshape(n, self.hop)
        return np.log10(np.mean(x * x, axis=1) + 1.0)

    def observe(self, samples: np.ndarray, ref_start: int) -> None:
        if self.first_ref_hop is None:
            self.first_ref_hop = ref_start // self.hop
        self.mic.extend(self.levels(samples).tolist())
        del self.mic[:-(self.window + 2 * self.max_lag)]

    def restart(self) -> None:
        self.mic, self.first_ref_hop = [], None

    def estimate(self, reference: Callable[[int, int], np.ndarray]) -> float | None:
        """Return the lag (seconds) of the echo behind the reference, or ``None`` if unclear.

        `reference(first_hop, n)` returns the reference envelope of ``n`` hops from
        ``first_hop`` on (NaN where there is none).
        """
        if self.first_ref_hop is None or len(self.mic) < self.window:
            return None
        mic = np.asarray(self.mic[-self.window:])
        first = self.first_ref_hop + len(self.mic) - self.window  # ref hop paired with mic[0]
        ref = reference(first - self.max_lag, self.window + 2 * self.max_lag)
        if np.isnan(ref).mean() > 0.5 or np.nanstd(ref) < 0.3 or np.std(mic) < 0.3:
            return None  # the call was silent: nothing to line up
        ref = np.where(np.isnan(ref), np.nanmean(ref), ref)
        lags = np.arange(-self.max_lag, self.max_lag + 1)
        # mic[k] is compared with ref[first + k - lag]
        windows = np.lib.stride_tricks.sliding_window_view(ref, self.window)
        rows = windows[self.max_lag - lags]
        a = mic - mic.mean()
        b = rows - rows.mean(axis=1, keepdims=True)
        corr = (b @ a) / (np.linalg.norm(b, axis=1) * np.linalg.norm(a) + 1e-12)
        best = int(np.argmax(corr))
        peak = float(corr[best])
        elsewhere = np.abs(lags - lags[best]) > 5  # further than 50 ms from the peak
        handled = (lags >= 0) & (lags <= 30)  # where the canceller copes by itself
        logger.debug("echo lag estimate %.2f s: correlation %.2f, next best %.2f, best where "
                     "it is handled %.2f", lags[best] / 100, peak, corr[elsewhere].max(),
                     corr[handled].max())
        margin = min(peak - float(corr[elsewhere].max()), peak - float(corr[handled].max()))
        if peak < self.min_corr or margin < 0.1:
            return None  # no clear peak, or the lag the canceller handles fits about as well
        self.clear = peak >= 0.5 and margin >= 0.2
        return float(lags[best]) / 100


class EchoCanceller:
    """Removes what a loopback source captured from a microphone that hears it.

    Parameters
    ----------
    sample_rate : int
        Of the frames both sides give (the service's rate, 16 kHz by default).
    lead : float
        Seconds of reference, past a microphone frame's time, given to the canceller with that
        frame. Echo always comes after what the loopback captured; the lead keeps it so when
        the two sources' timestamps are off by up to this much. Larger errors (a stream with
        a steady extra latency) are found from the sound and corrected (`offset`).
    max_wait : float
        How long (wall seconds) a microphone frame may wait for its reference; past it the
        frame goes on with what reference there is (the loopback stalled, or never started).

    Attributes
    ----------
    active : bool
        Whether echo is being cancelled (``False``: the ``livekit`` package is missing, and
        frames pass through unchanged).
    processed_seconds, unreferenced_seconds : float
        Microphone audio processed, and how much of it went on before its reference came
        (echo in it was not cancelled).
    reference, microphone : FrameStage
        The stages to give the loopback's pump and the microphone's pump.
    """

    def __init__(self, sample_rate: int = 16000, lead: float = 0.1, max_wait: float = 2.0
                 ) -> None:
        self.sample_rate = sample_rate
        self.lead = lead
        self.max_wait = max_wait
        self._chunk = int(sample_rate * _CHUNK_S)
        self._lock = threading.Lock()
        # reference samples from index `_ref_start` on, in arrival order; guarded by _lock
        self._ref: collections.deque[np.ndarray] = collections.deque()
        self._ref_start = 0
        self._ref_end = 0
        self._ref_t0: float | None = None  # the capture time of reference sample 0
        self._ref_done = False
        self._pending: collections.deque[tuple[bytes, float, float]] = collections.deque()
        self._apm: Any = None
        self._frame_cls: Any = None
        self.processed_seconds = 0.0
        self.unreferenced_seconds = 0.0
        #: seconds added to the reference's time for a microphone frame, found from the sound
        #: by `_DelayTracker` when the capture times do not line the streams up
        self.offset = 0.0
        self._tracker = _DelayTracker(sample_rate)
        self._next_estimate = 4.0  # seconds of microphone audio
        self._last_lag: float | None = None
        # reference kept behind the current frame: what the tracker's window looks back on
        self._history = int(10 * sample_rate)
        self.reference = _Reference(self)
        self.microphone = _Microphone(self)
        try:
            from livekit import rtc
        except ImportError:
            logger.warning("echo cancellation is off: it needs the livekit package "
                           "(pip install 'nbscribe[echo]'); echo turns are still marked")
            self.active = False
        else:
            self._apm = rtc.AudioProcessingModule(echo_cancellation=True)
            self._frame_cls = rtc.AudioFrame
            self.active = True

    # -- the loopback's thread ----------------------------------------------------------------

    def _add_reference(self, frame: bytes, at: float) -> None:
        samples = np.frombuffer(frame, dtype="<i2")
        with self._lock:
            if self._ref_t0 is None:
                self._ref_t0 = at
            self._ref.append(samples)
            self._ref_end += len(samples)

    def _end_reference(self) -> None:
        with self._lock:
            self._ref_done = True

    # -- the microphone's thread --------------------------------------------------------------

    def _reference_for(self, start: int, n: int, keep: bool = False) -> np.ndarray:
        """Return reference samples ``start:start + n`` (zeros where there are none).

        Unless `keep`, what lies further back than the tracker's history is let go.
        """
        out = np.zeros(n, dtype=np.int16)
        with self._lock:
            while (not keep and self._ref
                   and self._ref_start + len(self._ref[0]) <= start - self._history):
                self._ref_start += len(self._ref.popleft())
            pos = self._ref_start
            for block in self._ref:
                if pos >= start + n:
                    break
                lo, hi = max(start, pos), min(start + n, pos + len(block))
                if lo < hi:
                    out[lo - start:hi - start] = block[lo - pos:hi - pos]
                pos += len(block)
        return out

    def _reference_levels(self, first_hop: int, n: int) -> np.ndarray:
        """Return the reference's envelope for `n` hops from `first_hop` (NaN where none)."""
        hop = self._tracker.hop
        samples = self._reference_for(first_hop * hop, n * hop, keep=True)
        levels = self._tracker.levels(samples)
        with self._lock:
            have_from, have_to = self._ref_start // hop, self._ref_end // hop
        hops = np.arange(first_hop, first_hop + n)
        return np.where((hops >= have_from) & (hops < have_to), levels, np.nan)

    def _track(self, frame: bytes, start: int) -> None:
        """Follow the lag of the echo behind the reference; correct `offset` when it is off."""
        self._tracker.observe(np.frombuffer(frame, dtype="<i2"), start)
        if self.processed_seconds < self._next_estimate:
            return
        self._next_estimate = self.processed_seconds + 1.0
        lag = self._tracker.estimate(self._reference_levels)
        previous, self._last_lag = self._last_lag, lag
        if lag is None or 0.0 <= lag <= 0.3:
            return  # unclear, or where the canceller handles it
        if not self._tracker.clear and (previous is None or abs(previous - lag) > 0.05):
            return  # act on one estimate beyond doubt, or two a second apart that agree
        self._last_lag = None
        self.offset += self.lead + 0.02 - lag
        self._tracker.restart()
        self._next_estimate = self.processed_seconds + 4.0
        logger.info("the echo lagged the loopback by %.2f s: lining them up again (offset "
                    "%.2f s)", lag, self.offset)

    def _process(self, final: bool = False) -> list[bytes]:
        out = []
        while self._pending:
            frame, at, arrived = self._pending[0]
            n = len(frame) // 2
            with self._lock:
                t0, end, done = self._ref_t0, self._ref_end, self._ref_done
            if t0 is None:
                start = None
            else:
                start = round((at + self.lead + self.offset - t0) * self.sample_rate)
            covered = start is not None and end >= start + n
            ready = (final or done or covered or time.monotonic() - arrived > self.max_wait)
            if not ready:
                break
            if not covered and not done and t0 is not None:
                if not self.unreferenced_seconds:
                    logger.warning("the loopback's audio is late by more than %.1f s: the "
                                   "microphone goes on without cancelling echo", self.max_wait)
                self.unreferenced_seconds += n / self.sample_rate
            self._pending.popleft()
            out.append(self._cancel(frame, start))
            if self.active and start is not None:
                self._track(frame, start)
        return out

    def _cancel(self, frame: bytes, start: int | None) -> bytes:
        if not self.active:
            return frame
        n = len(frame) // 2
        reference = (self._reference_for(start, n) if start is not None
                     else np.zeros(n, dtype=np.int16))
        near = np.frombuffer(frame, dtype="<i2").copy()
        rate, chunk = self.sample_rate, self._chunk
        for i in range(0, n - chunk + 1, chunk):
            far_frame = self._frame_cls.create(rate, 1, chunk)
            np.frombuffer(far_frame.data, dtype=np.int16)[:] = reference[i:i + chunk]
            self._apm.process_reverse_stream(far_frame)
            near_frame = self._frame_cls.create(rate, 1, chunk)
            view = np.frombuffer(near_frame.data, dtype=np.int16)
            view[:] = near[i:i + chunk]
            self._apm.process_stream(near_frame)
            near[i:i + chunk] = view
        self.processed_seconds += n / rate
        return near.astype("<i2").tobytes()


def _words(text: str) -> list[str]:
    return [w for w in ("".join(c if c.isalnum() or c == "'" else " " for c in text.lower())
                        ).split() if w]


def find_echoes(mine: Sequence[tuple[Any, float, float, str]],
                theirs: Sequence[tuple[float, float, str]], *, slack: float = 1.5,
                min_share: float = 0.6) -> dict[Any, str]:
    """Return the turns of `mine` that repeat a turn of `theirs`: key -> the repeated text.

    A turn of the microphone is echo when turns of the loopback overlap it in time (with
    `slack` seconds either side, for the delay of the speakers and of recognition) and at least
    `min_share` of its words appear, in order, in their words. A turn of one or two words must
    match entirely. Both inputs are on one timeline.

    Parameters
    ----------
    mine : sequence of (key, start, end, text)
        The microphone's final turns.
    theirs : sequence of (start, end, text)
        The loopback's final turns.
    """
    theirs = sorted(theirs)
    starts = [t[0] for t in theirs]
    out = {}
    for key, start, end, text in mine:
        words = _words(text)
        if not words or start is None or end is None:
            continue
        # loopback turns that overlap [start - slack, end + slack]
        lo = bisect.bisect_left(starts, start - slack - 120.0)
        near = [t for t in theirs[lo:] if t[0] <= end + slack and t[1] >= start - slack]
        if not near:
            continue
        other = [w for t in near for w in _words(t[2])]
        blocks = difflib.SequenceMatcher(None, words, other, autojunk=False).get_matching_blocks()
        matched = sum(b.size for b in blocks)
        need = len(words) if len(words) <= 2 else min_share * len(words)
        if matched >= need:
            out[key] = " ".join(t[2] for t in near)
    return out
