"""What the streaming service says, as frozen dataclasses (standard library only).

One class per server message of AssemblyAI's v3 streaming protocol. Times are integers in
milliseconds from the start of the audio stream of that server session, as on the wire.

`EVENT_TYPES` is the one list of these messages: `nbscribe.messages` decodes and encodes by it,
and the journal names and rebuilds events by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EVENT_TYPES",
    "Begin",
    "ErrorEvent",
    "Event",
    "SpeakerRevision",
    "SpeechStarted",
    "Termination",
    "Turn",
    "WarningEvent",
    "Word",
    "wire_type",
]


@dataclass(frozen=True)
class Word:
    """One word of a turn.

    Attributes
    ----------
    text : str
        The word as the service wrote it (with punctuation when the turn is formatted).
    start, end : int
        Milliseconds from the start of the session's audio.
    confidence : float
        0 to 1.
    word_is_final : bool
        Whether the service will no longer change this word.
    speaker : str or None
        ``"A"``, ``"B"`` ... with ``speaker_labels``; ``"PENDING"`` or ``None`` otherwise.
    """

    text: str
    start: int
    end: int
    confidence: float = 0.0
    word_is_final: bool = False
    speaker: str | None = None


@dataclass(frozen=True)
class Begin:
    """The session is open. ``expires_at`` is a Unix time in seconds."""

    id: str
    expires_at: int | None = None
    configuration: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """A partial or final result for one turn, identified by ``turn_order``.

    Every message of a turn carries the whole text so far, not a delta: a later message with the
    same ``turn_order`` replaces the earlier one.
    """

    turn_order: int
    transcript: str
    end_of_turn: bool
    turn_is_formatted: bool = False
    end_of_turn_confidence: float = 0.0
    words: tuple[Word, ...] = ()
    utterance: str = ""
    speaker_label: str | None = None
    language_code: str | None = None
    language_confidence: float | None = None


@dataclass(frozen=True)
class SpeechStarted:
    """The service's voice activity detector heard speech at ``timestamp`` ms."""

    timestamp: int
    confidence: float | None = None


@dataclass(frozen=True)
class SpeakerRevision:
    """New speaker labels for earlier turns: ``revisions`` maps turn_order to label and words."""

    revisions: tuple[tuple[int, str | None, tuple[Word, ...]], ...]


@dataclass(frozen=True)
class Termination:
    """The session ended after a ``Terminate``; the server closes the socket next."""

    audio_duration_seconds: float | None = None
    session_duration_seconds: float | None = None


@dataclass(frozen=True)
class ErrorEvent:
    """The server reported an error (an ``Error`` frame or an abnormal close).

    ``message`` already says what the code means and what to do.
    """

    code: int | None
    message: str


@dataclass(frozen=True)
class WarningEvent:
    """A non-fatal warning from the server; the session goes on."""

    code: int | None
    message: str


Event = Begin | Turn | SpeechStarted | SpeakerRevision | Termination | ErrorEvent | WarningEvent

#: Every server message: its ``type`` on the wire -> the event class it becomes.
EVENT_TYPES: dict[str, type[Event]] = {
    "Begin": Begin,
    "Turn": Turn,
    "SpeechStarted": SpeechStarted,
    "SpeakerRevision": SpeakerRevision,
    "Termination": Termination,
    "Error": ErrorEvent,
    "Warning": WarningEvent,
}

_WIRE_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}


def wire_type(event: Event) -> str:
    """Return the ``type`` an event has on the wire (``"Error"`` for an `ErrorEvent`)."""
    return _WIRE_NAMES[type(event)]
