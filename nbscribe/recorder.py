"""What a live view needs from a transcription: the `Recorder` and `LiveSession` protocols.

`Transcriber` (one source) and `MultiTranscriber` (several, merged on one timeline) both are
recorders, and their sessions (`Session`, `MultiSession`) both are live sessions: the panel, and
any view like it, is written against these protocols and never asks which one it holds.
Nothing here runs; the protocols only name what is shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from .events import Event
    from .service import Service
    from .session import TurnRecord
    from .transcriber import Stats

__all__ = ["LiveSession", "Recorder"]


@runtime_checkable
class LiveSession(Protocol):
    """What a view reads from a session while it grows (every method is thread-safe)."""

    def latest(self, n: int) -> list[TurnRecord]:
        """Return the last `n` final turns in timeline order (``source`` set when merged)."""
        ...

    @property
    def partial(self) -> TurnRecord | None:
        """The turn still being spoken, or ``None``."""
        ...

    @property
    def turns(self) -> pd.DataFrame:
        """Final turns as a DataFrame."""
        ...

    @property
    def words(self) -> pd.DataFrame:
        """Words of the final turns as a DataFrame."""
        ...

    def __len__(self) -> int:
        """Return the number of final turns."""
        ...

    def continuity(self) -> str:
        """One line on interruptions and lost audio; empty when the stream never broke."""
        ...

    def name_speakers(self, names: Mapping[str, str] | None = None, /, **more: str) -> None:
        """Give speaker labels names in every view and export (see `Session.name_speakers`)."""
        ...

    def save(self, folder: str | os.PathLike[str],
             formats: tuple[str, ...] = ("csv", "json", "srt", "vtt")) -> Path:
        """Write the session's files into `folder` and return it (see `nbscribe.export.save`)."""
        ...


@runtime_checkable
class Recorder(Protocol):
    """What a view needs from a transcription: start it, follow it, stop it, read its session.

    Attributes
    ----------
    service : Service
        Where the audio goes; a view may start it first to say that it is starting.
    """

    service: Service

    @property
    def state(self) -> str:
        """``idle``, ``connecting``, ``streaming``, ``stopping``, ``stopped``, ``error`` ..."""
        ...

    @property
    def error(self) -> Exception | None:
        """The error that ended the transcription early, if one did."""
        ...

    @property
    def session(self) -> LiveSession:
        """What has been said so far (it grows while the recorder runs)."""
        ...

    def on(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener(event)`` on the events thread; return a function that unsubscribes."""
        ...

    def start(self) -> Recorder:
        """Start in the background once audio flows; raise what prevents it."""
        ...

    def stop(self, timeout: float | None = None) -> LiveSession:
        """Stop within `timeout` seconds, after the final turns; return the session."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sources have ended; return whether they have."""
        ...

    def stats(self) -> Stats:
        """Return a snapshot of progress (safe from any thread)."""
        ...
