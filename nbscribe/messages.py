"""The messages a v3 server sends, both ways: JSON frame <-> event (pure functions).

`decode` is what a client uses; `encode` is what a server (nbscribe's local server, the
`nbscribe.testing` fake) uses. Both go through one table keyed by the event classes of
`nbscribe.events.EVENT_TYPES`, so a message type exists for both directions or for neither.

`decode` never raises on what a server sends: unknown message types and malformed frames give
``None`` (logged at debug level) so a client can ignore them. Fields with the wrong type get
neutral defaults. Encoders leave out fields that are ``None``, and write the fields in the
order the service does (``type`` first, except in a ``Turn``, where it comes last).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from .errors import describe_code
from .events import (
    EVENT_TYPES,
    Begin,
    ErrorEvent,
    Event,
    SpeakerRevision,
    SpeechStarted,
    Termination,
    Turn,
    WarningEvent,
    Word,
    wire_type,
)

__all__ = [
    "decode",
    "encode",
]

logger = logging.getLogger(__name__)


# -- reading fields that may have the wrong type ----------------------------------------------


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return int(value)


def _float(value: Any, default: float | None = 0.0) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _str(value: Any, default: str | None = "") -> str | None:
    return value if isinstance(value, str) else default


def _code(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _order(value: Any) -> int | None:
    return None if isinstance(value, bool) or not isinstance(value, int) else value


def _present(**fields: Any) -> dict[str, Any]:
    """Return `fields` without the ``None`` values."""
    return {k: v for k, v in fields.items() if v is not None}


# -- words ----------------------------------------------------------------------------------


def _decode_words(raw: Any) -> tuple[Word, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        Word(
            text=_str(item.get("text")) or "",
            start=_int(item.get("start")),
            end=_int(item.get("end")),
            confidence=_float(item.get("confidence")) or 0.0,
            word_is_final=item.get("word_is_final") is True,
            speaker=_str(item.get("speaker"), None),
        )
        for item in raw
        if isinstance(item, dict)
    )


def _encode_words(words: tuple[Word, ...]) -> list[dict[str, Any]]:
    return [
        _present(start=w.start, end=w.end, text=w.text, confidence=w.confidence,
                 word_is_final=w.word_is_final, speaker=w.speaker)
        for w in words
    ]


# -- one reader and one writer per message type -----------------------------------------------


def _decode_begin(msg: dict[str, Any]) -> Begin:
    config = msg.get("configuration")
    return Begin(
        id=_str(msg.get("id")) or "",
        expires_at=_int(msg.get("expires_at"), 0) or None,
        configuration=config if isinstance(config, dict) else {},
    )


def _encode_begin(event: Begin) -> dict[str, Any]:
    return _present(type=wire_type(event), id=event.id, expires_at=event.expires_at,
                    configuration=dict(event.configuration))


def _decode_turn(msg: dict[str, Any]) -> Turn | None:
    order = _order(msg.get("turn_order"))
    if order is None:
        logger.debug("ignoring a Turn without an integer turn_order")
        return None
    return Turn(
        turn_order=order,
        transcript=_str(msg.get("transcript")) or "",
        end_of_turn=msg.get("end_of_turn") is True,
        turn_is_formatted=msg.get("turn_is_formatted") is True,
        end_of_turn_confidence=_float(msg.get("end_of_turn_confidence")) or 0.0,
        words=_decode_words(msg.get("words")),
        utterance=_str(msg.get("utterance")) or "",
        speaker_label=_str(msg.get("speaker_label"), None),
        language_code=_str(msg.get("language_code"), None),
        language_confidence=_float(msg.get("language_confidence"), None),
    )


def _encode_turn(event: Turn) -> dict[str, Any]:
    return _present(
        turn_order=event.turn_order,
        turn_is_formatted=event.turn_is_formatted,
        end_of_turn=event.end_of_turn,
        transcript=event.transcript,
        end_of_turn_confidence=event.end_of_turn_confidence,
        words=_encode_words(event.words),
        utterance=event.utterance,
        speaker_label=event.speaker_label,
        language_code=event.language_code,
        language_confidence=event.language_confidence,
        type=wire_type(event),
    )


def _decode_speech_started(msg: dict[str, Any]) -> SpeechStarted:
    return SpeechStarted(
        timestamp=_int(msg.get("timestamp")),
        confidence=_float(msg.get("confidence"), None),
    )


def _encode_speech_started(event: SpeechStarted) -> dict[str, Any]:
    return _present(type=wire_type(event), timestamp=event.timestamp,
                    confidence=event.confidence)


def _decode_speaker_revision(msg: dict[str, Any]) -> SpeakerRevision:
    revisions = []
    for item in msg.get("revisions") or []:
        if not isinstance(item, dict):
            continue
        order = _order(item.get("turn_order"))
        if order is None:
            continue
        revisions.append(
            (order, _str(item.get("speaker_label"), None), _decode_words(item.get("words")))
        )
    return SpeakerRevision(revisions=tuple(revisions))


def _encode_speaker_revision(event: SpeakerRevision) -> dict[str, Any]:
    return {"type": wire_type(event), "revisions": [
        _present(turn_order=order, speaker_label=label, words=_encode_words(words))
        for order, label, words in event.revisions
    ]}


def _decode_termination(msg: dict[str, Any]) -> Termination:
    return Termination(
        audio_duration_seconds=_float(msg.get("audio_duration_seconds"), None),
        session_duration_seconds=_float(msg.get("session_duration_seconds"), None),
    )


def _encode_termination(event: Termination) -> dict[str, Any]:
    return _present(type=wire_type(event), audio_duration_seconds=event.audio_duration_seconds,
                    session_duration_seconds=event.session_duration_seconds)


def _decode_error(msg: dict[str, Any]) -> ErrorEvent:
    code = _code(msg.get("error_code"))
    return ErrorEvent(code=code, message=describe_code(code, str(msg.get("error", ""))))


def _encode_error(event: ErrorEvent) -> dict[str, Any]:
    return _present(type=wire_type(event), error_code=event.code, error=event.message)


def _decode_warning(msg: dict[str, Any]) -> WarningEvent:
    return WarningEvent(code=_code(msg.get("warning_code")), message=str(msg.get("warning", "")))


def _encode_warning(event: WarningEvent) -> dict[str, Any]:
    return _present(type=wire_type(event), warning_code=event.code, warning=event.message)


_Decoder = Callable[[dict[str, Any]], Event | None]
_Encoder = Callable[[Any], dict[str, Any]]

#: Event class -> (reader, writer); the same classes as `EVENT_TYPES` (a test checks it).
_CODECS: dict[type, tuple[_Decoder, _Encoder]] = {
    Begin: (_decode_begin, _encode_begin),
    Turn: (_decode_turn, _encode_turn),
    SpeechStarted: (_decode_speech_started, _encode_speech_started),
    SpeakerRevision: (_decode_speaker_revision, _encode_speaker_revision),
    Termination: (_decode_termination, _encode_termination),
    ErrorEvent: (_decode_error, _encode_error),
    WarningEvent: (_decode_warning, _encode_warning),
}


# -- the public functions ---------------------------------------------------------------------


def decode(text: str | bytes) -> Event | None:
    """Turn one server frame into an event.

    Parameters
    ----------
    text : str or bytes
        The frame's payload.

    Returns
    -------
    Event or None
        ``None`` for frames that are not JSON objects, have an unknown ``type``, or lack a
        field the event cannot do without. An ``Error``'s message says what its code means
        and what to do (`nbscribe.errors.describe_code`), quoting the server's text.
    """
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        logger.debug("ignoring a frame that is not JSON (%d bytes)", len(text))
        return None
    if not isinstance(msg, dict):
        logger.debug("ignoring a JSON frame that is not an object")
        return None
    kind = msg.get("type")
    if kind is None and "error" in msg:
        kind = "Error"  # the first v3 servers sent errors without a type
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        logger.debug("ignoring a message of unknown type %r", kind)
        return None
    return _CODECS[cls][0](msg)


def encode(event: Event) -> str:
    """Return the JSON frame a server sends for `event`.

    Parameters
    ----------
    event : Event
        Any event of `nbscribe.events.EVENT_TYPES`.

    Returns
    -------
    str
        What `decode` turns back into an equal event (an ``Error``'s message then also says
        what its code means).
    """
    return json.dumps(_CODECS[type(event)][1](event))
