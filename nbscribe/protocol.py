"""The v3 streaming wire format as pure functions: URLs, headers, and every message both ways.

Nothing here does I/O. The client's control messages (``Terminate``, ``ForceEndpoint``,
``KeepAlive``, ``UpdateConfiguration``) are encoded here and read back by a server with
`decode_control`; the server's messages are decoded with `decode` and encoded with `encode`,
both from `nbscribe.messages`, re-exported here.
"""

from __future__ import annotations

import json
import platform
import urllib.parse
from typing import Any

from ._version import __version__
from .messages import (
    decode,
    encode,
)
from .params import StreamingParams

__all__ = [
    "API_VERSION",
    "CONTROL_TYPES",
    "DEFAULT_URL",
    "build_url",
    "decode",
    "decode_control",
    "encode",
    "encode_force_endpoint",
    "encode_keep_alive",
    "encode_terminate",
    "encode_update",
    "headers",
    "redact_url",
]

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


#: The messages a client may send as text.
CONTROL_TYPES = ("Terminate", "ForceEndpoint", "KeepAlive", "UpdateConfiguration")


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


def decode_control(text: str) -> tuple[str, dict[str, Any]]:
    """Read one text message from a client (the server's side of the control messages).

    Parameters
    ----------
    text : str
        The frame's payload.

    Returns
    -------
    kind : str
        One of `CONTROL_TYPES`.
    fields : dict
        The message's other fields (those of ``UpdateConfiguration``; empty for the others).

    Raises
    ------
    ValueError
        For a frame that is not JSON, not an object, or of an unknown type; the message is the
        text a server sends with error 3006.
    """
    try:
        msg = json.loads(text)
    except ValueError:
        raise ValueError(f"Invalid JSON: {text[:200]}") from None
    if not isinstance(msg, dict):
        raise ValueError(f"Invalid Message: {text[:200]}")
    kind = msg.get("type")
    if kind not in CONTROL_TYPES:
        raise ValueError(f"Invalid Message Type: {kind}")
    return kind, {k: v for k, v in msg.items() if k != "type"}
