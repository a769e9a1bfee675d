"""The streaming client: one WebSocket connection speaking AssemblyAI's v3 protocol.

Threads: the caller connects and sends (sending is thread-safe); one reader thread per
connection receives, decodes and hands each event to ``on_event``. The reader thread owns the
socket and is the only one that closes it; other threads wake it with ``abort()``.
"""

from __future__ import annotations

import logging
import os
import ssl
import struct
import threading
import time
from collections.abc import Callable

import websocket

from .errors import AuthError, ConnectError, StreamError, describe_code
from .events import Begin, ErrorEvent, Event, Termination
from .params import StreamingParams
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

__all__ = ["StreamingClient", "resolve_api_key"]

logger = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]


def resolve_api_key(api_key: str | None) -> str | None:
    """Return `api_key`, else ``$ASSEMBLYAI_API_KEY``, else ``None`` (blank counts as unset)."""
    key = api_key if api_key is not None else os.environ.get("ASSEMBLYAI_API_KEY")
    return key.strip() or None if key else None


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
        Called with each `nbscribe.events.Event`, on the reader thread. If it raises, the
        exception is logged and the client carries on.
    connect_timeout : float
        Seconds to wait for the connection and the ``Begin`` message.
    terminate_timeout : float
        Seconds `close` waits for ``Termination`` after sending ``Terminate``; the wait is
        extended while the server keeps sending results, up to six times this.
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
    ) -> None:
        self.url = url
        self.params = params or StreamingParams()
        self._api_key = api_key
        self._token = token
        self.on_event = on_event
        self.connect_timeout = connect_timeout
        self.terminate_timeout = terminate_timeout
        self.begin: Begin | None = None
        self.termination: Termination | None = None
        self.error: StreamError | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.bytes_sent = 0
        self._last_message_at = 0.0
        self._ws: websocket.WebSocket | None = None
        self._reader: threading.Thread | None = None
        self._done = threading.Event()
        self._closing = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self.connected else "closed"
        auth = "token" if self._token else ("key" if self._api_key else "none")
        return f"<StreamingClient {redact_url(self.url)} auth={auth} {state}>"

    @property
    def connected(self) -> bool:
        """Whether the session is open (connected and not yet ended)."""
        return self._ws is not None and not self._done.is_set()

    # -- connecting ---------------------------------------------------------------------------

    def connect(self) -> Begin:
        """Open the connection and wait for the server's ``Begin``.

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
        if self._ws is not None:
            raise ConnectError("this client is already connected; create a new one")
        url = build_url(self.url, self.params, self._token)
        shown = redact_url(url)
        logger.info("connecting to %s", shown)
        try:
            ws = websocket.create_connection(
                url,
                header=headers(self._api_key),
                timeout=self.connect_timeout,
                enable_multithread=True,
            )
        except websocket.WebSocketBadStatusException as exc:
            code = exc.status_code
            cls = AuthError if code in (401, 403) else ConnectError
            raise cls(f"cannot open a session at {shown}: {describe_code(code)}", code) from None
        except ssl.SSLError as exc:
            raise ConnectError(
                f"TLS error connecting to {shown}: {exc}. On macOS run Python's 'Install "
                "Certificates.command'; behind a proxy, set SSL_CERT_FILE to its CA bundle."
            ) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectError(
                f"cannot reach {shown}: {exc.__class__.__name__}: {exc}. Check the URL and the "
                "network (for the local server, is `nbscribe serve` running?)."
            ) from None
        self._ws = ws
        try:
            begin = self._await_begin(ws, shown)
        except BaseException:
            ws.shutdown()
            self._ws = None
            raise
        ws.settimeout(None)
        self.begin = begin
        self._reader = threading.Thread(
            target=self._read_loop, name="nbscribe-reader", daemon=True
        )
        self._reader.start()
        self._dispatch(begin)
        logger.info("session %s open", begin.id)
        return begin

    def _await_begin(self, ws: websocket.WebSocket, shown: str) -> Begin:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                raise ConnectError(
                    f"{shown} accepted the connection but sent no Begin within "
                    f"{self.connect_timeout:g} s; is it a v3 streaming server?"
                ) from None
            except (OSError, websocket.WebSocketException) as exc:
                raise ConnectError(f"the connection to {shown} broke during setup: {exc}") from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code, reason = _close_info(frame.data)
                cls = AuthError if code in (1008, 4001) else ConnectError
                raise cls(f"the server refused the session: {describe_code(code, reason)}", code)
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            event = decode(frame.data.decode("utf-8", "replace"))
            if isinstance(event, Begin):
                return event
            if isinstance(event, ErrorEvent):
                cls = AuthError if event.code in (1008, 4001) else ConnectError
                raise cls(f"the server refused the session: {event.message}", event.code)

    # -- sending ------------------------------------------------------------------------------

    def send_audio(self, pcm: bytes) -> None:
        """Send one chunk of audio (50-1000 ms of PCM in the declared encoding).

        Raises
        ------
        StreamError
            The session has ended; the message says why.
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
        """Change session settings mid-stream (e.g. ``keyterms_prompt``, ``max_turn_silence``).

        The fields are validated against the connection parameters first.
        """
        from .params import merge_update

        self.params = merge_update(self.params, fields)
        self._send(encode_update(**fields))

    def _send(self, data: bytes | str, binary: bool = False) -> None:
        ws = self._ws
        if ws is None or self._done.is_set():
            raise self._ended_error()
        try:
            if binary:
                ws.send_bytes(data)
            else:
                ws.send_text(data)
        except (OSError, websocket.WebSocketException):
            self._done.wait(1.0)  # let the reader record the close code, if one came
            raise self._ended_error() from None

    def _ended_error(self) -> StreamError:
        if self.error is not None:
            return self.error
        if self._ws is None:
            return StreamError("not connected: call connect() first")
        return StreamError(f"the session has ended ({describe_code(self.close_code)})")

    # -- receiving ----------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            logger.exception("an on_event handler raised; carrying on")

    def _fail(self, code: int | None, message: str) -> None:
        if self.error is None:
            self.error = StreamError(message, code)
            self._dispatch(ErrorEvent(code, message))

    def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while True:
                try:
                    opcode, frame = ws.recv_data_frame(True)
                except (OSError, websocket.WebSocketException) as exc:
                    if not self._closing and self.termination is None:
                        self.close_code = 1006
                        self._fail(1006, describe_code(1006, str(exc)))
                    return
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_code, self.close_reason = _close_info(frame.data)
                    if self.close_code not in (1000, None):
                        message = describe_code(self.close_code, self.close_reason)
                        self._fail(self.close_code, message)
                    elif self.termination is None and not self._closing:
                        logger.warning("the server closed the session without a Termination")
                    return
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    logger.debug("ignoring a binary frame from the server")
                    continue
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                self._last_message_at = time.monotonic()
                event = decode(frame.data.decode("utf-8", "replace"))
                if event is None:
                    continue
                if isinstance(event, ErrorEvent):
                    self._fail(event.code, event.message)
                    continue
                if isinstance(event, Termination):
                    self.termination = event
                self._dispatch(event)
        finally:
            self._done.set()
            ws.shutdown()

    # -- closing ------------------------------------------------------------------------------

    def close(self, terminate: bool = True) -> None:
        """End the session (idempotent) and join the reader thread.

        Parameters
        ----------
        terminate : bool
            Send ``Terminate`` and wait up to `terminate_timeout` seconds for ``Termination``,
            so the last turn arrives; otherwise just drop the connection.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
        ws, reader = self._ws, self._reader
        if ws is None:
            return
        if terminate and not self._done.is_set():
            try:
                ws.send_text(encode_terminate())
                self._await_termination()
            except (OSError, websocket.WebSocketException):
                pass
        if not self._done.is_set():
            ws.abort()  # wakes the reader, which closes the socket
        if reader is not None and reader is not threading.current_thread():
            reader.join(5.0)
            if reader.is_alive():
                logger.warning("the reader thread did not stop within 5 s")

    def _await_termination(self) -> None:
        # A server may still be working through audio it has queued (the local server in fast
        # mode): keep waiting while it sends results, up to terminate_timeout of silence and
        # at most six times that in all.
        sent = time.monotonic()
        self._last_message_at = sent
        while not self._done.wait(0.05):
            now = time.monotonic()
            quiet = now - max(sent, self._last_message_at)
            if quiet > self.terminate_timeout or now - sent > 6 * self.terminate_timeout:
                logger.warning("no Termination within %.1f s of Terminate; closing anyway",
                               now - sent)
                return

    def __enter__(self) -> StreamingClient:
        if self._ws is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_info(data: bytes) -> tuple[int | None, str]:
    if len(data) < 2:
        return None, ""
    (code,) = struct.unpack("!H", data[:2])
    return code, data[2:].decode("utf-8", "replace")
