"""The connection seam: what the streaming client needs from a WebSocket, and the real one.

`StreamingClient` talks to a `Connection`, never to a socket library directly, so a test (or a
user testing their own listeners) can hand it a scripted connection instead: see
`nbscribe.testing.FakeService`. The real connection, `WebSocketConnection`, wraps
websocket-client and adds the two things that library leaves to its caller:

- **sends never block forever**: a frame that cannot be written within `send_timeout` seconds
  (the peer stopped reading, the socket buffer is full) raises `ConnectionLost`;
- **receives return periodically** (`recv(timeout)` returns ``None``), so the reader thread can
  ping and notice a peer that went silent without a close.

Threads: one thread (the reader) calls `recv` and, at the end, `close`; any thread may send
(sends are serialised by a lock) and any thread may call `abort`, which wakes a blocked `recv`
or send; only the reader closes.
"""

from __future__ import annotations

import enum
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import websocket

__all__ = [
    "Connection",
    "ConnectionLost",
    "Connector",
    "HandshakeError",
    "Opcode",
    "WebSocketConnection",
    "open_websocket",
]


class Opcode(enum.IntEnum):
    """Kinds of frame a `Connection` returns (the WebSocket opcodes)."""

    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class ConnectionLost(Exception):
    """The connection broke (reset, aborted, or a send blocked past its deadline)."""


class HandshakeError(Exception):
    """The server answered the WebSocket upgrade with an HTTP error status.

    Parameters
    ----------
    status : int
        The HTTP status (401, 403, 404 ...).
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Connection(Protocol):
    """One open WebSocket, as `StreamingClient` uses it."""

    def recv(self, timeout: float | None) -> tuple[Opcode, bytes] | None:
        """Return the next data or control frame, or ``None`` after `timeout` seconds.

        Raises `ConnectionLost` when the connection broke or was aborted.
        """

    def send_text(self, text: str) -> None:
        """Send a text frame; raise `ConnectionLost` if it cannot be sent in time."""

    def send_binary(self, data: bytes) -> None:
        """Send a binary frame; raise `ConnectionLost` if it cannot be sent in time."""

    def ping(self) -> None:
        """Send a ping; the peer answers with a pong that `recv` returns."""

    def abort(self) -> None:
        """Wake any thread blocked in `recv` or a send (from any thread; idempotent)."""

    def close(self) -> None:
        """Release the connection (the reader thread, at its end; idempotent)."""


#: ``connector(url, headers, timeout)`` opens a `Connection`; raises `HandshakeError`,
#: `ssl.SSLError` or `OSError`.
Connector = Callable[[str, list[str], float], Connection]


class WebSocketConnection:
    """A `Connection` over websocket-client.

    Parameters
    ----------
    ws : websocket.WebSocket
        An open connection.
    send_timeout : float
        Seconds a single frame may take to leave; past that the connection counts as dead.
    poll : float
        The socket's timeout: how often a blocked `recv` or send wakes to check its deadline.
    """

    def __init__(self, ws: websocket.WebSocket, send_timeout: float = 10.0,
                 poll: float = 0.25) -> None:
        self._ws = ws
        self._send_timeout = send_timeout
        self._poll = poll
        self._aborted = False
        ws.settimeout(poll)

    def recv(self, timeout: float | None) -> tuple[Opcode, bytes] | None:
        """Return the next frame, or ``None`` after `timeout` seconds (``None``: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._aborted:
                raise ConnectionLost("the connection was aborted")
            try:
                # websocket-client keeps a partly read frame across timeouts, and answers a
                # ping with a pong itself (control_frame=True still returns it to us).
                opcode, frame = self._ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            except (OSError, websocket.WebSocketException) as exc:
                raise ConnectionLost(f"{exc.__class__.__name__}: {exc}") from None
            if opcode == Opcode.CLOSE:
                return Opcode.CLOSE, frame.data
            if opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG):
                return Opcode(opcode), frame.data

    def _send_frame(self, data: bytes | str, opcode: int) -> None:
        frame = websocket.ABNF.create_frame(data, opcode)
        if self._ws.get_mask_key:
            frame.get_mask_key = self._ws.get_mask_key
        payload = frame.format()
        deadline = time.monotonic() + self._send_timeout
        # websocket-client's own send loop gives up at the first socket timeout, halfway
        # through a frame; this one keeps its place and gives up only at the deadline.
        with self._ws.lock:
            view = memoryview(payload)
            while view:
                if self._aborted:
                    raise ConnectionLost("the connection was aborted")
                try:
                    sent = self._ws.sock.send(view)
                except (TimeoutError, ssl.SSLWantWriteError):
                    sent = 0
                except OSError as exc:
                    raise ConnectionLost(f"{exc.__class__.__name__}: {exc}") from None
                if sent == 0 and time.monotonic() >= deadline:
                    raise ConnectionLost(
                        f"a message could not be sent for {self._send_timeout:g} s "
                        "(the service stopped reading)")
                view = view[sent:]

    def send_text(self, text: str) -> None:
        """Send a text frame."""
        self._send_frame(text, websocket.ABNF.OPCODE_TEXT)

    def send_binary(self, data: bytes) -> None:
        """Send a binary frame."""
        self._send_frame(data, websocket.ABNF.OPCODE_BINARY)

    def ping(self) -> None:
        """Send a ping frame."""
        self._send_frame(b"", websocket.ABNF.OPCODE_PING)

    def abort(self) -> None:
        """Shut the socket down, which wakes a blocked `recv` or send."""
        self._aborted = True
        sock = self._ws.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Close the socket."""
        self._aborted = True
        self._ws.shutdown()


def open_websocket(url: str, header: list[str], timeout: float,
                   send_timeout: float = 10.0) -> WebSocketConnection:
    """Open a real WebSocket (the default `Connector`).

    Parameters
    ----------
    url : str
        ``ws://`` or ``wss://`` URL.
    header : list of str
        Extra request headers (``Authorization: ...``).
    timeout : float
        Seconds for the TCP, TLS and WebSocket handshakes.
    send_timeout : float
        See `WebSocketConnection`.

    Raises
    ------
    HandshakeError
        The server answered the upgrade with an HTTP error.
    ssl.SSLError, OSError
        The server could not be reached, or TLS failed.
    """
    try:
        ws = websocket.create_connection(url, header=header, timeout=timeout,
                                         enable_multithread=True)
    except websocket.WebSocketBadStatusException as exc:
        raise HandshakeError(exc.status_code) from None
    except websocket.WebSocketException as exc:
        raise OSError(str(exc)) from None
    return WebSocketConnection(ws, send_timeout=send_timeout)
