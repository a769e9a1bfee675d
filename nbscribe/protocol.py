"""The v3 streaming wire format as pure functions: URLs, headers, decoding and control messages.

Nothing here does I/O. `decode` never raises on what a server sends: unknown message types and
malformed frames give ``None`` (logged at debug level) so a client can ignore them.
"""

from __future__ import annotations

import json
import logging
import platform
import urllib.parse
from typing import Any

from ._version import __version__
from .errors import describe_code
from .events import (
    Begin,
    ErrorEvent,
    Event,
    SpeakerRevision,
    SpeechStarted,
    Termination,
    Turn,
    WarningEvent,
    Word,
)
from .params import StreamingParams

__all__ = [
    "API_VERSION",
    "DEFAULT_URL",
    "build_url",
    "decode",
    "encode_force_endpoint",
    "encode_keep_alive",
    "encode_terminate",
    "encode_update",
    "headers",
    "redact_url",
]

logger = logging.getLogger(__name__)

#: AssemblyAI's streaming endpoint.
DEFAULT_URL = "wss://streaming.assemblyai.com/v3/ws"
#: The API version nbscribe was written against (sent as ``AssemblyAI-Version``).
API_VERSION = "2025-05-12"


def build_url(base: str, params: StreamingParams, token: str | None = None) -> str:
    """Return the WebSocket URL with the parameters in its query string.

    Parameters
    ----------
    base : str
        ``wss://host/v3/ws``, ``ws://127.0.0.1:PORT`` (``/v3/ws`` is added when the path is
        empty) or a host name (``wss://`` and ``/v3/ws`` are added).
    params : StreamingParams
        Encoded with `StreamingParams.to_query`.
    token : str, optional
        A temporary token, sent as the ``token`` query parameter.
    """
    if "://" not in base:
        base = "wss://" + base
    parts = urllib.parse.urlsplit(base)
    path = parts.path if parts.path not in ("", "/") else "/v3/ws"
    query = params.to_query()
    if token:
        query.append(("token", token))
    return urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, path, urllib.parse.urlencode(query), "")
    )


def redact_url(url: str) -> str:
    """Return `url` with a ``token`` query value replaced by ``***`` (for logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    pairs = [(k, "***" if k == "token" else v) for k, v in pairs]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(pairs)))


def headers(api_key: str | None) -> list[str]:
    """Return the handshake headers: the raw key in ``Authorization`` (no ``Bearer``)."""
    out = [
        f"User-Agent: AssemblyAI/1.0 (integration=nbscribe/{__version__} "
        f"runtime_env=Python/{platform.python_version()})",
        f"AssemblyAI-Version: {API_VERSION}",
    ]
    if api_key:
        out.append(f"Authorization: {api_key}")
    return out


def encode_terminate() -> str:
    """Return the ``Terminate`` message: the server flushes, sends Termination and closes."""
    return '{"type": "Terminate"}'


def encode_force_endpoint() -> str:
    """Return the ``ForceEndpoint`` message: the server ends the current turn now."""
    return '{"type": "ForceEndpoint"}'


def encode_keep_alive() -> str:
    """Return the ``KeepAlive`` message, which resets the inactivity timer."""
    return '{"type": "KeepAlive"}'


def encode_update(**fields: Any) -> str:
    """Return an ``UpdateConfiguration`` message; ``None`` values are left out.

    Lists (``keyterms_prompt``, ``language_codes``) are sent as real JSON arrays here.
    """
    body = {k: v for k, v in fields.items() if v is not None}
    body["type"] = "UpdateConfiguration"
    return json.dumps(body)


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


def _words(raw: Any) -> tuple[Word, ...]:
    if not isinstance(raw, list):
        return ()
    words = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        words.append(
            Word(
                text=_str(item.get("text")) or "",
                start=_int(item.get("start")),
                end=_int(item.get("end")),
                confidence=_float(item.get("confidence")) or 0.0,
                word_is_final=item.get("word_is_final") is True,
                speaker=_str(item.get("speaker"), None),
            )
        )
    return tuple(words)


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
        field the event cannot do without. Fields with the wrong type get neutral defaults.
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
    if kind == "Turn":
        order = msg.get("turn_order")
        if isinstance(order, bool) or not isinstance(order, int):
            logger.debug("ignoring a Turn without an integer turn_order")
            return None
        return Turn(
            turn_order=order,
            transcript=_str(msg.get("transcript")) or "",
            end_of_turn=msg.get("end_of_turn") is True,
            turn_is_formatted=msg.get("turn_is_formatted") is True,
            end_of_turn_confidence=_float(msg.get("end_of_turn_confidence")) or 0.0,
            words=_words(msg.get("words")),
            utterance=_str(msg.get("utterance")) or "",
            speaker_label=_str(msg.get("speaker_label"), None),
            language_code=_str(msg.get("language_code"), None),
            language_confidence=_float(msg.get("language_confidence"), None),
        )
    if kind == "Begin":
        config = msg.get("configuration")
        return Begin(
            id=_str(msg.get("id")) or "",
            expires_at=_int(msg.get("expires_at"), 0) or None,
            configuration=config if isinstance(config, dict) else {},
        )
    if kind == "SpeechStarted":
        return SpeechStarted(
            timestamp=_int(msg.get("timestamp")),
            confidence=_float(msg.get("confidence"), None),
        )
    if kind == "Termination":
        return Termination(
            audio_duration_seconds=_float(msg.get("audio_duration_seconds"), None),
            session_duration_seconds=_float(msg.get("session_duration_seconds"), None),
        )
    if kind == "SpeakerRevision":
        revisions = []
        for item in msg.get("revisions") or []:
            if not isinstance(item, dict):
                continue
            order = item.get("turn_order")
            if isinstance(order, bool) or not isinstance(order, int):
                continue
            revisions.append(
                (order, _str(item.get("speaker_label"), None), _words(item.get("words")))
            )
        return SpeakerRevision(revisions=tuple(revisions))
    if kind == "Error" or (kind is None and "error" in msg):
        code = msg.get("error_code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        return ErrorEvent(code=code, message=describe_code(code, str(msg.get("error", ""))))
    if kind == "Warning":
        code = msg.get("warning_code")
        return WarningEvent(
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            message=str(msg.get("warning", "")),
        )
    logger.debug("ignoring a message of unknown type %r", kind)
    return None
