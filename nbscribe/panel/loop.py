"""The panel's session loop: one thread per session that runs the recorder and paces the view.

Threads: `SessionLoop.start` (the kernel's thread) starts the ``nbscribe-panel`` thread and
returns at once. That thread starts the recorder (and first the local server, saying so), then
asks the view to refresh at most `update_hz` times a second, never once per event: the
recorder's events thread only bumps a counter, so a burst of partial turns costs one refresh.
When the session ends (a file ran out, or `stop`), it stops the recorder, flushes the final
state and tells the view, whatever went wrong: the view is the only place errors show.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from ..events import Event, SpeakerRevision, Turn
from ..pump import run_all
from ..recorder import Recorder

__all__ = ["LiveView", "SessionLoop", "period"]

logger = logging.getLogger(__name__)

#: The fastest refresh the loop allows (Jupyter drops widget updates past about 1000 a second).
MAX_HZ = 20.0


def period(update_hz: float) -> float:
    """Return the seconds between refreshes for `update_hz`, kept within 1 to `MAX_HZ`."""
    return 1.0 / min(max(update_hz, 1.0), MAX_HZ)


class LiveView(Protocol):
    """What the loop drives; every method runs on the loop's thread, its only caller."""

    def starting_service(self) -> None:
        """Say that the local server is starting (it takes a few seconds)."""
        ...

    def refresh(self, recorder: Recorder, transcript_changed: bool) -> None:
        """Show progress; re-render the transcript only when `transcript_changed`."""
        ...

    def finish(self, recorder: Recorder, error: str | None) -> None:
        """Show the final state of an ended session, and `error` if one ended it."""
        ...


class SessionLoop:
    """Run one recorder on its own thread and refresh a view while it runs.

    Parameters
    ----------
    recorder : Recorder
        A `Transcriber` or `MultiTranscriber`, not started.
    view : LiveView
        What shows the session.
    update_hz : float
        Refreshes a second, at most (see `period`).
    fast : bool
        Start a local server that accepts audio faster than real time.
    """

    def __init__(self, recorder: Recorder, view: LiveView, *, update_hz: float = 10.0,
                 fast: bool = False) -> None:
        self.recorder = recorder
        self.period = period(update_hz)
        self._view = view
        self._fast = fast
        self._stop = threading.Event()
        self._version = 0  # bumped by the recorder's events thread for every turn
        self._thread: threading.Thread | None = None
        self._unsubscribe = recorder.on(self._on_event)

    def start(self) -> None:
        """Start the session thread and return at once."""
        self._thread = threading.Thread(target=self._run, name="nbscribe-panel", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the session is being started, streamed or stopped."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Ask the session to end (the last audio is sent, the final turns arrive).

        Parameters
        ----------
        wait : bool
            Block until the thread has ended.
        timeout : float
            Seconds to wait at most.
        """
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the session has ended; return whether it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def touch(self) -> None:
        """Have the transcript shown again at the next refresh (speakers were renamed)."""
        self._version += 1

    def _on_event(self, event: Event) -> None:
        # The recorder's events thread: count, never touch the view.
        if isinstance(event, (Turn, SpeakerRevision)):
            self._version += 1

    def _run(self) -> None:
        error: str | None = None
        try:
            error = self._session()
        except Exception as exc:  # the view must hear of it: a thread's traceback is lost
            logger.exception("the panel's session failed")
            error = f"the session failed: {exc}"
            run_all(self.recorder.stop)  # never leave it running (stop is idempotent)
        finally:
            self._unsubscribe()
            self._view.finish(self.recorder, error)

    def _session(self) -> str | None:
        """Start, refresh until the end, stop; return what ended it early, if anything."""
        recorder = self.recorder
        try:
            if not recorder.service.started:
                self._view.starting_service()
                recorder.service.start(fast=self._fast)
            recorder.start()
        except Exception as exc:
            logger.info("panel session failed to start: %s", exc)
            return f"could not start: {exc}"
        shown = None
        while not self._stop.wait(self.period):
            shown = self._refresh(shown)
            if recorder.wait(0):
                break
        failure = None
        try:
            recorder.stop()
        except Exception as exc:  # pragma: no cover - stop() keeps errors on the recorder
            logger.exception("stopping the session failed")
            failure = str(exc)
        self._refresh(None)  # the final state is always flushed
        return str(recorder.error) if recorder.error else failure

    def _refresh(self, shown: int | None) -> int:
        version = self._version
        self._view.refresh(self.recorder, version != shown)
        return version
