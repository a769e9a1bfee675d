"""The streaming client: one WebSocket connection speaking AssemblyAI's v3 protocol.

Threads: the caller connects and sends (sending is thread-safe); one reader thread per
connection receives, decodes and hands every event, ``Begin`` first, to ``on_event``. The
reader owns the connection and is the only one that closes it; other threads wake it with
`StreamingClient.abort`.

Liveness: a connection can die without a close (a laptop sleeps, Wi-Fi changes, a NAT forgets
it). The reader pings whenever the service has been quiet for ``ping_interval`` seconds and
declares the connection dead (code 1006, retryable) when nothing at all, not even a pong, has
come back for ``liveness_timeout`` seconds. Sends give up after ``send_timeout`` seconds. Both
are standard WebSocket behaviour that the real service and the local server honour.
"""

from __future__ import annotations

import functools
import logging
import ssl
import struct
import threading
import time
from collections.abc import Callable

from .connection import (
    Connection,
    ConnectionLost,
    Connector,
    HandshakeError,
    Opcode,
    open_websocket,
)
from .errors import ConnectError, StreamError, describe_code, refused
from .events import Begin, ErrorEvent, Event, Termination
from .params import StreamingParams, merge_update
from .policy import Liveness
from .protocol import (
    DEFAULT_URL,
    build_url,
    decode,
    encode_force_endpoint,
    encode_keep_alive,
    encode_terminate,
    encode_update,
    headers,
    redact_url,
)

__all__ = ["StreamingClient"]

logger = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]


class StreamingClient:
    """A v3 streaming connection.

    Parameters
    ----------
    url : str
        ``wss://streaming.assemblyai.com/v3/ws`` (default) or a compatible server, such as
        ``ws://127.0.0.1:8765/v3/ws`` for ``nbscribe serve``.
    params : StreamingParams, optional
        Connection parameters; validated by `connect` before anything is sent.
    api_key : str, optional
        Sent in the ``Authorization`` header. Never logged or shown in a repr.
    token : str, optional
        A temporary token instead of a key (sent as the ``token`` query parameter).
    on_event : callable, optional
        Called with each `nbscribe.events.Event`, ``Begin`` first, on the reader thread. If it
        raises, the exception is logged and the client carries on.
    connect_timeout : float
        Seconds to wait for the connection and the ``Begin`` message.
    terminate_timeout : float
        Seconds `close` waits for ``Termination`` after sending ``Terminate``; the wait is
        extended while the server keeps sending results, up to six times this.
    ping_interval : float
        Ping after this many seconds without a frame from the service (0: never).
    liveness_timeout : float
        Declare the connection dead after this many seconds without any frame (0: never).
    send_timeout : float
        A message that cannot be sent for this long means the connection is dead.
    connector : callable, optional
        Opens the connection: ``connector(url, headers, timeout) -> Connection``. Default: a
        real WebSocket (`nbscribe.connection.open_websocket`); tests pass a scripted one
        (`nbscribe.testing.FakeService`).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        params: StreamingParams | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        on_event: EventHandler | None = None,
        connect_timeout: float = 10.0,
        terminate_timeout: float = 5.0,
        ping_interval: float = 2.0,
        liveness_timeout: float = 6.0,
        send_timeout: float = 10.0,
        connector: Connector | None = None,
    ) -> None:
        self.url = url
        self.params = params or StreamingParams()
        self._api_key = api_key
        self._token = token
        self.on_event = on_event
        self.connect_timeout = connect_timeout
        self.terminate_timeout = terminate_timeout
        self.ping_interval = ping_interval
        self.liveness_timeout = liveness_timeout
        self.send_timeout = send_timeout
        self._connector = connector
        self.begin: Begin | None = None
        self.termination: Termination | None = None
        self.error: StreamError | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.bytes_sent = 0
        self._last_message_at = 0.0
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._done = threading.Event()
        self._closing = False
        self._terminated = False
        self._send_failure: str | None = None
        self._terminate_pending = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self.connected else "closed"
        auth = "token" if self._token else ("key" if self._api_key else "none")
        return f"<StreamingClient {redact_url(self.url)} auth={auth} {state}>"

    @property
    def connected(self) -> bool:
        """Whether the session is open (connected and not yet ended)."""
        return self._conn is not None and not self._done.is_set()

    @property
    def finished(self) -> bool:
        """Whether the reader has ended (the connection is closed, for whatever reason)."""
        return self._done.is_set()

    # -- connecting ---------------------------------------------------------------------------

    def connect(self) -> Begin:
        """Open the connection, wait for the server's ``Begin`` and start the reader.

        The reader hands ``Begin`` to ``on_event`` first, then every later event.

        Returns
        -------
        Begin
            The session id, its expiry and the configuration the server applied.

        Raises
        ------
        ConfigError
            A parameter is invalid (nothing was sent).
        AuthError
            The key or token was rejected.
        ConnectError
            The server could not be reached or refused the session; the message says why.
        """
        self.params.validate()
        if self._conn is not None:
            raise ConnectError("this client is already connected; create a new one")
        url = build_url(self.url, self.params, self._token)
        shown = redact_url(url)
        logger.info("connecting to %s", shown)
        connector = self._connector or functools.partial(open_websocket,
                                                         send_timeout=self.send_timeout)
        conn, begin = _handshake(connector, url, headers(self._api_key), self.connect_timeout)
        self._conn = conn
        self.begin = begin
        self._reader = threading.Thread(target=self._read_loop, args=(conn, begin),
                                        name="nbscribe-reader", daemon=True)
        self._reader.start()
        logger.info("session %s open", begin.id)
        return begin

    # -- sending ------------------------------------------------------------------------------

    def send_audio(self, pcm: bytes) -> None:
        """Send one chunk of audio (50-1000 ms of PCM in the declared encoding).

        Raises
        ------
        StreamError
            The session has ended, or the chunk could not be sent in time (the connection is
            then aborted); the message says why.
        """
        self._send(pcm, binary=True)
        self.bytes_sent += len(pcm)

    def force_endpoint(self) -> None:
        """Ask the server to end the current turn now."""
        self._send(encode_force_endpoint())

    def keep_alive(self) -> None:
        """Reset the server's inactivity timer."""
        self._send(encode_keep_alive())

    def update_configuration(self, **fields: object) -> None:
        """Change settings mid-stream (``keyterms_prompt``, ...), validated like parameters."""
        self.params = merge_update(self.params, fields)
        self._send(encode_update(**fields))

    def _send(self, data: bytes | str, binary: bool = False) -> None:
        conn = self._conn
        if conn is None or self._done.is_set():
            raise self._ended_error()
        try:
            if binary:
                conn.send_binary(data)  # type: ignore[arg-type]
            else:
                conn.send_text(data)  # type: ignore[arg-type]
        except ConnectionLost as exc:
            # The reader records why the connection ended; wake it if it is still waiting.
            self._send_failure = self._send_failure or str(exc)  # the first cause
            conn.abort()
            raise StreamError(f"the connection broke while sending: {exc}", 1006) from None

    def _ended_error(self) -> StreamError:
        if self._conn is None:
            return StreamError("not connected: call connect() first")
        return self.error or StreamError(f"the session has ended "
                                         f"({describe_code(self.close_code)})")

    # -- receiving ----------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        try:
            if self.on_event is not None:
                self.on_event(event)
        except Exception:
            logger.exception("an on_event handler raised; carrying on")

    def _fail(self, code: int | None, message: str) -> None:
        if self.error is None:
            self.error = StreamError(message, code)
            self._dispatch(ErrorEvent(code, message))

    def _read_loop(self, conn: Connection, begin: Begin) -> None:
        try:
            self._dispatch(begin)
            self._receive(conn)
        finally:
            self._done.set()
            conn.close()

    def _receive(self, conn: Connection) -> None:
        alive = Liveness(self.ping_interval, self.liveness_timeout, time.monotonic())
        while True:
            try:
                item = conn.recv(alive.tick)
            except ConnectionLost as exc:
                if not self._closing and self.termination is None:
                    self.close_code = 1006
                    self._fail(1006, describe_code(1006, self._send_failure or str(exc)))
                return
            now = time.monotonic()
            if self._terminate_pending:
                self._send_terminate(conn)
            if item is None:
                if alive.dead(now):
                    if not self._closing:
                        self.close_code = 1006
                        self._fail(1006, describe_code(1006, (
                            f"the service sent nothing, not even a pong, for "
                            f"{alive.quiet(now):.1f} s (the network changed, or the computer "
                            "slept)")))
                    return
                if alive.ping_due(now):
                    try:
                        conn.ping()
                    except ConnectionLost:
                        continue  # the next recv reports it
                continue
            alive.heard(now)
            opcode, data = item
            if opcode == Opcode.CLOSE:
                self.close_code, self.close_reason = _close_info(data)
                if self.close_code not in (1000, None):
                    self._fail(self.close_code, describe_code(self.close_code, self.close_reason))
                elif self.termination is None and not self._closing:
                    logger.warning("the server closed the session without a Termination")
                return
            if opcode == Opcode.BINARY:
                logger.debug("ignoring a binary frame from the server")
                continue
            if opcode != Opcode.TEXT:
                continue  # a pong (or a ping, answered already): the connection is alive
            self._last_message_at = now
            event = decode(data.decode("utf-8", "replace"))
            if event is None:
                continue
            if isinstance(event, ErrorEvent):
                self._fail(event.code, event.message)
                continue
            if isinstance(event, Termination):
                self.termination = event
            self._dispatch(event)

    # -- closing ------------------------------------------------------------------------------

    def terminate(self, by_reader: bool = False) -> None:
        """Send ``Terminate`` (once); the server finalises the open turn, then ``Termination``.

        With `by_reader`, the reader thread sends it (within half a second) and this returns at
        once even if the connection is wedged: the transcriber's rollover does so, so capture
        never waits on an old session. `close` also waits; or poll `finished` and `abort`.
        """
        with self._lock:
            if self._terminated:
                return
            self._terminated = self._closing = True
        conn = self._conn
        if conn is None or self._done.is_set():
            return
        self._last_message_at = time.monotonic()
        if by_reader:
            self._terminate_pending = True
        else:
            self._send_terminate(conn)

    def _send_terminate(self, conn: Connection) -> None:
        self._terminate_pending = False
        try:
            conn.send_text(encode_terminate())
        except ConnectionLost:
            conn.abort()

    def abort(self) -> None:
        """Drop the connection without waiting (any thread; idempotent); the reader closes it."""
        self._closing = True
        conn = self._conn
        if conn is not None and not self._done.is_set():
            conn.abort()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader thread to end; return whether it has."""
        reader = self._reader
        if reader is None or reader is threading.current_thread():
            return True
        reader.join(timeout)
        return not reader.is_alive()

    def close(self, terminate: bool = True, timeout: float | None = None) -> bool:
        """End the session (idempotent) and join the reader thread.

        Parameters
        ----------
        terminate : bool
            Send ``Terminate`` and wait for ``Termination``, so the last turn arrives;
            otherwise just drop the connection.
        timeout : float, optional
            The most this call may take in all. Default: six times `terminate_timeout`, plus
            5 s for the reader to end.

        Returns
        -------
        bool
            Whether the reader thread has ended.
        """
        budget = 6 * self.terminate_timeout + 5.0 if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._closing = True
        if self._conn is None:
            return True
        if terminate and not self._done.is_set():
            self.terminate()
            # leave part of the budget for the reader to end once it is woken
            self._await_termination(deadline - min(1.0, budget / 4))
        self.abort()
        ended = self.join(max(0.0, deadline - time.monotonic()))
        if not ended:
            logger.warning("the reader thread did not end in time")
        return ended

    def _await_termination(self, deadline: float) -> None:
        # A server may still be working through audio it has queued (the local server in fast
        # mode): keep waiting while it sends results, up to terminate_timeout of silence and
        # at most six times that in all, and never past the caller's deadline.
        sent = time.monotonic()
        limit = min(deadline, sent + 6 * self.terminate_timeout)
        while not self._done.wait(0.02):
            now = time.monotonic()
            quiet = now - max(sent, self._last_message_at)
            if quiet > self.terminate_timeout or now >= limit:
                logger.warning("no Termination within %.1f s of Terminate; closing anyway",
                               now - sent)
                return

    def __enter__(self) -> StreamingClient:
        if self._conn is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handshake(connector: Connector, url: str, header: list[str],
               timeout: float) -> tuple[Connection, Begin]:
    """Open a connection and wait for ``Begin``; turn every refusal into an error that says why."""
    shown = redact_url(url)
    try:
        conn = connector(url, header, timeout)
    except HandshakeError as exc:
        raise refused(f"cannot open a session at {shown}: {describe_code(exc.status)}",
                      exc.status) from None
    except ssl.SSLError as exc:
        raise ConnectError(
            f"TLS error connecting to {shown}: {exc}. On macOS run Python's 'Install "
            "Certificates.command'; behind a proxy, set SSL_CERT_FILE to its CA bundle."
        ) from None
    except OSError as exc:
        raise ConnectError(
            f"cannot reach {shown}: {exc.__class__.__name__}: {exc}. Check the URL and the "
            "network (for the local server, is `nbscribe serve` running?)."
        ) from None
    try:
        return conn, _await_begin(conn, shown, timeout)
    except BaseException:
        conn.close()
        raise


def _await_begin(conn: Connection, shown: str, timeout: float) -> Begin:
    deadline = time.monotonic() + timeout
    while True:
        try:
            item = conn.recv(max(0.01, deadline - time.monotonic()))
        except ConnectionLost as exc:
            raise ConnectError(f"the connection to {shown} broke during setup: {exc}") from None
        if item is None:
            raise ConnectError(f"{shown} accepted the connection but sent no Begin within "
                               f"{timeout:g} s; is it a v3 streaming server?")
        opcode, data = item
        if opcode == Opcode.CLOSE:
            code, reason = _close_info(data)
            raise refused(f"the server refused the session: {describe_code(code, reason)}", code)
        if opcode != Opcode.TEXT:
            continue
        event = decode(data.decode("utf-8", "replace"))
        if isinstance(event, Begin):
            return event
        if isinstance(event, ErrorEvent):
            raise refused(f"the server refused the session: {event.message}", event.code)


def _close_info(data: bytes) -> tuple[int | None, str]:
    if len(data) < 2:
        return None, ""
    (code,) = struct.unpack("!H", data[:2])
    return code, data[2:].decode("utf-8", "replace")
