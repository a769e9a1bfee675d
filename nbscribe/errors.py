"""The exception tree of nbscribe, and the one table that explains close and error codes.

Exception tree::

    NbscribeError
     ├── ConfigError (also ValueError)       a bad parameter, caught before anything connects
     ├── AudioError                          capture or audio-file problems
     │    ├── PortAudioMissingError          the PortAudio library is not installed
     │    └── DeviceNotFoundError            no input device matches a name (lists them)
     ├── ConnectError                        the service could not be reached or refused us
     │    └── AuthError                      the key or token was rejected (1008, HTTP 401/403)
     └── StreamError                         the service ended a running session with an error

Every message says what went wrong and what to do about it. No message ever contains an API key.
"""

from __future__ import annotations

__all__ = [
    "AudioError",
    "AuthError",
    "ConfigError",
    "ConnectError",
    "DeviceNotFoundError",
    "NbscribeError",
    "PortAudioMissingError",
    "StreamError",
    "describe_code",
    "is_retryable",
    "refused",
]


class NbscribeError(Exception):
    """Base class of every error nbscribe raises on purpose."""


class ConfigError(NbscribeError, ValueError):
    """A parameter is invalid; raised before anything connects or opens a device."""


class AudioError(NbscribeError):
    """An audio source could not be opened or read."""


class PortAudioMissingError(AudioError):
    """The PortAudio shared library is missing, so no sound device can be used."""


class DeviceNotFoundError(AudioError):
    """No input device matches the requested name."""


class ConnectError(NbscribeError):
    """The streaming service could not be reached, or refused the session.

    Parameters
    ----------
    message : str
        What happened and what to do.
    code : int or None
        The WebSocket close code or HTTP status, when there is one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class AuthError(ConnectError):
    """The API key or temporary token was rejected."""


class StreamError(NbscribeError):
    """The service ended a running session with an error.

    Parameters
    ----------
    message : str
        What happened and what to do.
    code : int or None
        The close or error code the server sent.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


# code -> (what it means, what to do, retryable)
_CODES: dict[int, tuple[str, str, bool]] = {
    1000: ("the session ended normally", "", False),
    1006: (
        "the connection dropped without a close frame",
        "check the network connection; a new session can be started",
        True,
    ),
    1008: (
        "the key or token was rejected (or the account cannot open sessions)",
        "check ASSEMBLYAI_API_KEY (or --api-key), the account balance, or create a new "
        "temporary token",
        False,
    ),
    1011: ("the server hit an internal error", "start a new session", True),
    1013: ("the server is overloaded", "try again in a few seconds", True),
    3005: ("the server cancelled the session after an internal error", "start a new session", True),
    3006: (
        "the server rejected a message or a parameter as invalid",
        "check the session parameters and the audio encoding",
        False,
    ),
    3007: (
        "audio arrived in chunks outside 50-1000 ms, or faster than real time",
        "send 50-1000 ms chunks at real-time pace (a file source paces itself unless fast=True)",
        False,
    ),
    3008: (
        "the session reached its maximum duration (3 hours, or the token's limit)",
        "start a new session",
        True,
    ),
    3009: (
        "too many new sessions were opened in a short time",
        "wait a minute and try again, or raise the account's limit",
        True,
    ),
    4001: ("not authorized", "check the API key", False),
    4002: ("insufficient account balance", "add funds to the AssemblyAI account", False),
    4008: ("the session expired", "start a new session", True),
    4029: ("audio was sent faster than real time", "pace audio at real time", False),
    4031: ("the session was idle for too long", "send audio or KeepAlive messages", True),
}


def describe_code(code: int | None, reason: str = "") -> str:
    """Return one sentence that explains a close/error code and says what to do.

    Parameters
    ----------
    code : int or None
        A WebSocket close code, an AssemblyAI error code or an HTTP status.
    reason : str, optional
        The text the server sent with it, quoted in the message.

    Returns
    -------
    str
        For example ``"code 3007: audio arrived in chunks outside 50-1000 ms ... (server said:
        ...)"``.
    """
    if code in (401, 403):
        text = (
            f"HTTP {code}: the service refused the connection; check the API key, or whether the "
            "account, region or network allows streaming"
        )
    elif code is None:
        text = "the connection ended"
    elif code in _CODES:
        meaning, todo, _ = _CODES[code]
        text = f"code {code}: {meaning}" + (f"; {todo}" if todo else "")
    else:
        text = f"code {code}: the server closed the session"
    reason = (reason or "").strip()
    if reason and reason.lower() != "see error message for details":
        text += f" (server said: {reason})"
    return text


def is_retryable(code: int | None) -> bool:
    """Tell whether a session that ended with `code` may be retried with a new connection.

    Parameters
    ----------
    code : int or None
        The close or error code; ``None`` means the connection dropped with no code.

    Returns
    -------
    bool
        ``True`` for dropped connections and transient server errors, ``False`` for errors that
        a retry cannot fix (a bad key, bad input, bad pacing).
    """
    if code is None:
        return True
    if code in _CODES:
        return _CODES[code][2]
    return 1001 <= code <= 1015 and code not in (1002, 1003, 1007, 1008, 1009, 1010)


#: Codes that mean the credentials were refused (close codes and HTTP statuses).
AUTH_CODES = frozenset({401, 403, 1008, 4001})


def refused(message: str, code: int | None) -> ConnectError:
    """Return the error for a session the service refused: `AuthError` for a bad key or token.

    Parameters
    ----------
    message : str
        What happened and what to do.
    code : int or None
        The close code, error code or HTTP status.
    """
    cls = AuthError if code in AUTH_CODES else ConnectError
    return cls(message, code)
