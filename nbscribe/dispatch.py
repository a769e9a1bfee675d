"""The events thread: the one place where a transcriber's events meet its session.

Readers (one per connection) and the pump put items on one queue; this thread alone applies
them to the `Session`, appends them to the `Journal` and calls the listeners, so every listener
runs on one thread, in order, for every connection, and a slow listener never delays a socket.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from .events import Event
from .journal import Journal
from .pump import END
from .session import Session

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)


class Dispatcher:
    """Apply, journal and announce what the readers and the pump queue (``nbscribe-events``).

    Items on the queue: ``("event", connection, offset_ms, event)``, ``("gap", start, end,
    reason)``, ``("interruption", record)``, ``("audio", seconds)``, and `END`.

    Parameters
    ----------
    session : Session
        Written by this thread alone.
    journal : Journal
        Closed when the thread ends.
    items : queue.SimpleQueue
        What to apply.
    listeners : list of callable
        Called with every event, after the session has applied and journaled it.
    """

    def __init__(self, session: Session, journal: Journal, items: queue.SimpleQueue[Any],
                 listeners: list[Callable[[Event], None]]) -> None:
        self.session = session
        self.journal = journal
        self.items = items
        self.listeners = listeners
        self._segments: dict[int, int] = {}  # connection index -> session segment

    def run(self) -> None:
        """Apply items until `END`, then close the journal."""
        try:
            while (item := self.items.get()) is not END:
                self._apply(item)
        finally:
            self.journal.close()

    def _apply(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "event":
            _, index, offset, event = item
            if index not in self._segments:  # a connection's first event: its Begin
                self._segments[index] = self.session.new_segment(offset)
            segment = self._segments[index]
            self.session.apply(event, segment, offset)
            self.journal.event(event, segment, offset)
            for listener in list(self.listeners):
                try:
                    listener(event)
                except Exception:
                    logger.exception("a transcriber listener raised; carrying on")
        elif kind == "gap":
            _, start, end, reason = item
            self.session.gaps.append((start, end))
            self.journal.gap(start, end, reason)
        elif kind == "interruption":
            self.session.interruptions.append(item[1])
            self.journal.interruption(item[1])
        elif kind == "audio":
            self.session.audio_seconds = item[1]
