"""The outbox: every captured frame, from capture until a final turn covers it.

Pure bookkeeping, no threads, sockets or clocks of its own (the caller passes ``now``), so its
rules are tested alone. A frame is *unsent* (waiting for a connection or for its time to
leave), then *unconfirmed* (a server session has it, but no final turn covers it yet), then
forgotten. When a connection is lost, the unconfirmed frames go back to the front of the unsent
ones: the next server session transcribes them again. When there is no connection for longer
than the buffer allows, the oldest unsent frames are dropped from the stream (they stay in the
WAV) and recorded as a gap.

Positions are milliseconds on the session timeline: frame ``k`` starts at ``k * frame_ms``.
"""

from __future__ import annotations

import collections
import dataclasses

__all__ = ["Outbox"]


@dataclasses.dataclass
class Outbox:
    """What was captured, sent and confirmed, and what must be sent (again).

    Parameters
    ----------
    frame_ms : int
        Duration of each frame.
    buffer_ms : int
        How much unsent audio may wait; older frames are dropped into a gap.
    replay_ms : int
        At most this much sent-but-unconfirmed audio is kept for a replay.
    catchup_rate : float
        How much faster than real time a backlog (over a second) is sent.
    """

    frame_ms: int
    buffer_ms: int
    replay_ms: int = 30_000
    catchup_rate: float = 1.2
    captured: int = 0  # frames captured so far
    confirmed_ms: int = 0  # the timeline up to here is covered by final turns
    _unsent: collections.deque[tuple[int, bytes]] = dataclasses.field(
        default_factory=collections.deque)
    _unconfirmed: collections.deque[tuple[int, bytes]] = dataclasses.field(
        default_factory=collections.deque)
    _gap: list[int] | None = None
    _done_gaps: list[list[int]] = dataclasses.field(default_factory=list)
    _seg_t0: float = 0.0
    _seg_sent_ms: int = 0

    # -- capture ----------------------------------------------------------------------------

    def capture(self, frame: bytes, connected: bool = False) -> None:
        """Queue a captured frame.

        Without a connection, the oldest unsent frames beyond the buffer are dropped into a
        gap. With one, nothing is dropped: the backlog shrinks at the catch-up rate (and a
        connection that takes nothing for long is declared dead by its send deadline).
        """
        self._unsent.append((self.captured * self.frame_ms, frame))
        self.captured += 1
        while not connected and len(self._unsent) * self.frame_ms > self.buffer_ms:
            pos, _ = self._unsent.popleft()
            if self._gap is not None and self._gap[1] == pos:
                self._gap[1] = pos + self.frame_ms
            else:
                if self._gap is not None:
                    self._done_gaps.append(self._gap)
                self._gap = [pos, pos + self.frame_ms]

    def take_gaps(self, close: bool = False) -> list[tuple[float, float]]:
        """Return the gaps recorded since the last call, as (start, end) seconds.

        Parameters
        ----------
        close : bool
            Also end the gap still growing (a connection takes audio again, or the session
            ends).
        """
        if close and self._gap is not None:
            self._done_gaps.append(self._gap)
            self._gap = None
        done, self._done_gaps = self._done_gaps, []
        return [(a / 1000, b / 1000) for a, b in done]

    # -- a new server session ---------------------------------------------------------------

    def rewind(self) -> None:
        """Put unconfirmed frames back in front of the unsent ones (their server is gone)."""
        self._unsent.extendleft(reversed(self._unconfirmed))
        self._unconfirmed.clear()

    def next_offset_ms(self) -> int:
        """Where the next server session's time zero lies: the first frame it will get."""
        return self._unsent[0][0] if self._unsent else self.captured * self.frame_ms

    def new_segment(self) -> None:
        """Start pacing afresh: a server session's clock starts with its first audio."""
        self._seg_sent_ms = 0

    # -- sending ----------------------------------------------------------------------------

    def due(self, now: float, paced: bool = True) -> bytes | None:
        """Return the next frame if it may leave at `now`, else ``None``.

        Never ahead of real time by more than one frame (faster only to catch up on a
        backlog): frame i of a server session leaves no earlier than i - 1 frame-durations
        after its first one, so a device block of two frames leaves at once (one wake-up).
        """
        if not self._unsent:
            return None
        if self._seg_sent_ms == 0:
            self._seg_t0 = now
        if paced and self._seg_sent_ms > self._allowed_ms(now):
            return None
        return self._unsent[0][1]

    def wait_s(self, now: float, paced: bool = True) -> float | None:
        """Return the seconds until the next frame may leave (0: now; ``None``: none waits)."""
        if not self._unsent:
            return None
        if not paced or self._seg_sent_ms == 0:
            return 0.0
        return max(0.0, (self._seg_sent_ms - self._allowed_ms(now)) / 1000 / self._rate())

    def _rate(self) -> float:
        # Behind real time (more than two frames waiting): catch up, however small the backlog,
        # or a buffer at its limit would go on dropping frames after a reconnect.
        return self.catchup_rate if len(self._unsent) > 2 else 1.0

    def _allowed_ms(self, now: float) -> float:
        return (now - self._seg_t0) * 1000 * self._rate() + self.frame_ms

    def mark_sent(self) -> None:
        """Record that the frame `due` returned has left."""
        item = self._unsent.popleft()
        self._unconfirmed.append(item)
        self._seg_sent_ms += self.frame_ms
        self._forget()

    def confirm(self, end_ms: int) -> None:
        """Record that a final turn covers the timeline up to `end_ms`."""
        if end_ms > self.confirmed_ms:
            self.confirmed_ms = end_ms
            self._forget()

    def _forget(self) -> None:
        keep = max(1, self.replay_ms // self.frame_ms)
        while self._unconfirmed and (
            self._unconfirmed[0][0] + self.frame_ms <= self.confirmed_ms
            or len(self._unconfirmed) > keep
        ):
            self._unconfirmed.popleft()

    # -- state --------------------------------------------------------------------------------

    @property
    def unsent_ms(self) -> int:
        """Audio waiting to be sent."""
        return len(self._unsent) * self.frame_ms

    @property
    def unconfirmed_ms(self) -> int:
        """Audio sent but not yet covered by a final turn."""
        return len(self._unconfirmed) * self.frame_ms

    @property
    def pending_from_ms(self) -> int:
        """Where the audio not yet covered by a final turn begins (what a replay starts with)."""
        if self._unconfirmed:
            return self._unconfirmed[0][0]
        return self._unsent[0][0] if self._unsent else self.captured_ms

    @property
    def captured_ms(self) -> int:
        """Audio captured so far."""
        return self.captured * self.frame_ms
