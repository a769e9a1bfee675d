"""A local server that speaks AssemblyAI's v3 streaming protocol over the offline Whisper engine.

``ws://HOST:PORT/v3/ws`` takes the same query parameters, headers and messages as
``wss://streaming.assemblyai.com/v3/ws``, so every v3 client works against it unchanged: the
official SDKs, and nbscribe's own client. What it does, per the protocol:

- auth: with a key configured, the ``Authorization`` header or a ``token`` (from ``GET /v3/token``)
  must match, else ``Error`` + close 1008. Without one (loopback only) anything is accepted.
- ``Begin`` at once; ``SpeechStarted``, partial and final ``Turn`` messages (U3-Pro shape);
  ``ForceEndpoint``, ``UpdateConfiguration``, ``KeepAlive``; ``Terminate`` -> flush ->
  ``Termination`` -> close 1000.
- checks: chunks of 50-1000 ms and no faster than ``max_rate`` x real time (3007), valid
  parameters and messages (3006), the session's maximum duration (3008), a cap on concurrent
  sessions (3009). Every error is an ``Error`` frame followed by a close with the same code.

One event loop thread serves every connection; decoding runs on a worker pool so that audio keeps
being received while Whisper works.

Liveness: each session pings its client every ``ping_interval`` seconds and ends when no pong comes
back within ``ping_timeout`` (a laptop that slept, a NAT that forgot the connection: the TCP
connection looks open but nothing arrives). This does not depend on audio: a client that answers
pings may pause its audio (only ``inactivity_timeout`` ends that). Sends to a client that stopped
reading are bounded by ``send_timeout``, the closing handshake by ``close_timeout``. However a
session ends, everything it started ends with it: no queued audio is decoded and no decode is
submitted any more (one already running in the pool finishes, and its results are dropped), its
place under ``max_sessions`` is free at once, and one INFO line gives the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import http
import json
import logging
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..errors import ConfigError
from ..events import Begin, ErrorEvent, Event, Termination
from ..params import StreamingParams, merge_update
from ..protocol import API_VERSION, decode_control, encode
from .speakers import SpeakerLabeller, SpeakerSettings
from .turns import EngineSettings, TurnEngine
from .voice import VoiceEncoder
from .whisper import WhisperEngine

__all__ = ["LocalServer", "ServerConfig", "serve_forever"]

logger = logging.getLogger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ERRORS = {
    1008: "Unauthorized Connection",
    3005: "Session Cancelled",
    3006: "Invalid Message",
    3007: "Input Duration Error",
    3008: "Session Expired: Maximum session duration exceeded",
    3009: "Unauthorized Connection: Too many concurrent sessions",
}


@dataclasses.dataclass
class ServerConfig:
    """How the local server runs.

    Attributes
    ----------
    host : str
        Address to bind; anything but loopback requires `api_key`.
    port : int
        0 picks a free port.
    api_key : str, optional
        When set, clients must send it (or a token minted with it).
    model : str, optional
        A faster-whisper model folder or name; default the bundled tiny.en.
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    max_rate : float or None
        Refuse audio arriving faster than this multiple of real time (after a 5 s allowance);
        ``None`` accepts any speed (fast mode for files).
    max_sessions : int
        Concurrent sessions; more get 3009.
    max_session_seconds : int
        A session's maximum duration (3 hours, as the service's); ``Begin.expires_at``.
    settings : EngineSettings
        Turn-detection defaults.
    ping_interval : float or None
        Seconds between the WebSocket pings each session sends its client; ``None`` or 0 sends
        none (and so never notices a client that vanished without closing).
    ping_timeout : float or None
        A session whose client does not answer a ping within this many seconds ends ("no
        pong"), so a vanished client is found within ``ping_interval + ping_timeout``. ``None``
        or 0 keeps pinging (which keeps NATs open) without waiting for pongs. Every WebSocket
        client answers pings while it reads (websocket-client, ``websockets``, the official
        SDKs, browsers); pongs, not audio, show that the client is there.
    send_timeout : float or None
        A message that cannot be written within this many seconds (the client stopped reading
        and the buffers are full) ends the session; ``None`` or 0 waits forever.
    close_timeout : float
        Seconds the closing handshake may take before the connection is dropped.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    model: str | None = None
    device: str = "auto"
    max_rate: float | None = 1.5
    max_sessions: int = 8
    max_session_seconds: int = 10800
    settings: EngineSettings = dataclasses.field(default_factory=EngineSettings)
    ping_interval: float | None = 5.0
    ping_timeout: float | None = 10.0
    send_timeout: float | None = 10.0
    close_timeout: float = 2.0

    def validate(self) -> None:
        """Refuse an open bind without a key, and impossible limits."""
        if self.host not in _LOOPBACK and not self.api_key:
            raise ConfigError(
                f"binding to {self.host} would let anyone on the network use this server: set "
                "an API key (--api-key or NBSCRIBE_SERVER_KEY), or bind to 127.0.0.1"
            )
        if self.max_sessions < 1:
            raise ConfigError("max_sessions must be at least 1")
        if self.max_rate is not None and self.max_rate < 1:
            raise ConfigError("max_rate must be at least 1 (real time), or None")
        for name in ("ping_interval", "ping_timeout", "send_timeout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be positive, or 0/None to turn it off")
        if self.close_timeout <= 0:
            raise ConfigError("close_timeout must be positive")


class _SessionError(Exception):
    """A protocol error: sent as an ``Error`` frame, then a close with the same code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _ClientGone(Exception):
    """The client stopped answering or reading: drop the connection without a handshake."""


class _Ended(Exception):
    """The session is over: the task that raises it stops quietly."""


class _App:
    """The protocol: one instance per server, shared by its connections (event-loop thread)."""

    def __init__(self, config: ServerConfig, engine: WhisperEngine) -> None:
        self.config = config
        self.engine = engine
        self.sessions = 0
        self.tokens: dict[str, tuple[float, int]] = {}  # token -> (redeem by, max seconds)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_sessions, thread_name_prefix="nbscribe-server-engine"
        )
        self._voices: VoiceEncoder | None = None

    def speaker_labeller(self, params: StreamingParams) -> SpeakerLabeller | None:
        """Return a labeller for a session that asks for ``speaker_labels`` (else ``None``).

        The voice encoder is loaded by the first such session and shared by the next.
        """
        if not params.speaker_labels:
            return None
        if self._voices is None:
            self._voices = VoiceEncoder()
        return SpeakerLabeller(self._voices, SpeakerSettings(max_speakers=params.max_speakers))

    # -- plain HTTP: health and temporary tokens ---------------------------------------------

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        parts = urllib.parse.urlsplit(request.path)
        if parts.path in ("/health", "/v3/health", "/v3/ws/health"):
            return conn.respond(http.HTTPStatus.OK, "ok\n")
        if parts.path == "/v3/token":
            return self._mint_token(conn, request, parts.query)
        if parts.path not in ("/v3/ws", "/", ""):
            return conn.respond(http.HTTPStatus.NOT_FOUND, "the streaming endpoint is /v3/ws\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return conn.respond(http.HTTPStatus.UPGRADE_REQUIRED,
                                "connect with a WebSocket client to /v3/ws\n")
        return None

    def _mint_token(self, conn: ServerConnection, request: Request, query: str) -> Response:
        if not self.config.api_key or request.headers.get("Authorization") != self.config.api_key:
            body = json.dumps({"error": "Unauthorized: a valid Authorization key is required"})
            return conn.respond(http.HTTPStatus.UNAUTHORIZED, body)
        args = dict(urllib.parse.parse_qsl(query))
        try:
            expires = int(args.get("expires_in_seconds", "60"))
            max_s = int(args.get("max_session_duration_seconds",
                                 str(self.config.max_session_seconds)))
            if not 1 <= expires <= 600 or not 60 <= max_s <= 10800:
                raise ValueError
        except ValueError:
            body = json.dumps({"error": "expires_in_seconds must be 1-600 and "
                                        "max_session_duration_seconds 60-10800"})
            return conn.respond(http.HTTPStatus.BAD_REQUEST, body)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = (time.time() + expires, max_s)
        return conn.respond(http.HTTPStatus.OK,
                            json.dumps({"token": token, "expires_in_seconds": expires}))

    # -- the streaming session ---------------------------------------------------------------

    def _authorize(self, conn: ServerConnection, query: dict[str, str]) -> int:
        """Return the session's maximum seconds, or raise a 1008 error."""
        if not self.config.api_key:
            return self.config.max_session_seconds
        given = conn.request.headers.get("Authorization") or query.get("token") or ""
        if given and secrets.compare_digest(given, self.config.api_key):
            return self.config.max_session_seconds
        entry = self.tokens.pop(given, None)  # single use
        if entry is not None and entry[0] >= time.time():
            return entry[1]
        reason = "Missing Authorization header" if not given else "Invalid API key or token"
        raise _SessionError(1008, f"Unauthorized Connection: {reason}")

    async def handle(self, conn: ServerConnection) -> None:
        query_pairs = urllib.parse.parse_qsl(
            urllib.parse.urlsplit(conn.request.path).query, keep_blank_values=True
        )
        try:
            max_seconds = self._authorize(conn, dict(query_pairs))
            try:
                params, ignored = StreamingParams.from_query(query_pairs)
            except ConfigError as exc:
                raise _SessionError(3006, f"User Input Validation Error: {exc}") from None
            if ignored:
                logger.info("ignoring unknown parameters: %s", ", ".join(ignored))
            if self.sessions >= self.config.max_sessions:
                raise _SessionError(3009, _ERRORS[3009])
        except _SessionError as exc:
            logger.info("refused a session: error %s: %s", exc.code, exc)
            await _fail(conn, exc, self.config.close_timeout)
            return
        self.sessions += 1
        session = _Session(self, conn, params, max_seconds)
        try:
            await session.run()
        finally:
            session.release()


class _Session:
    """One streaming session: a receiver, a decoding worker, a watchdog and a liveness check.

    The tasks end the session through `_end`, which records the first reason only, frees the
    session's place under ``max_sessions`` and wakes `run`; `run` then cancels every task and
    closes the connection as the reason requires.
    """

    def __init__(self, app: _App, conn: ServerConnection, params: StreamingParams,
                 max_seconds: int) -> None:
        self.app = app
        self.conn = conn
        self.params = params
        self.id = str(uuid.uuid4())
        self.started = time.time()
        self.expires_at = int(self.started + max_seconds)
        self.engine = TurnEngine(app.engine, params, app.config.settings,
                                 speakers=app.speaker_labeller(params))
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.audio_seconds = 0.0
        self.first_audio: float | None = None
        self.last_activity = time.monotonic()
        bytes_per_sample = 1 if params.encoding == "pcm_mulaw" else 2
        self.bytes_per_second = params.sample_rate * bytes_per_sample
        self.terminating = False  # Terminate received, or idle: the worker flushes and ends
        self.ended = False
        self.end_reason = ""
        self._end_error: _SessionError | None = None
        self._end_close: int | None = None
        self._end_abort = False
        self._done = asyncio.Event()
        self._released = False

    def release(self) -> None:
        """Free this session's place under max_sessions (idempotent)."""
        if not self._released:
            self._released = True
            self.app.sessions -= 1

    def _end(self, reason: str, *, error: _SessionError | None = None,
             close: int | None = None, abort: bool = False) -> None:
        """End the session now; only the first call counts.

        Parameters
        ----------
        reason : str
            For the log line.
        error : _SessionError, optional
            Send it as an ``Error`` frame and close with its code.
        close : int, optional
            Close with this code (after ``Termination``).
        abort : bool
            Drop the TCP connection without a closing handshake (the client is gone).
        """
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        self._end_error, self._end_close, self._end_abort = error, close, abort
        self.release()
        self._done.set()

    async def run(self) -> None:
        """Serve the session until it ends, then stop everything it started."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._guard(self._send(Begin(
                id=self.id,
                expires_at=self.expires_at,
                configuration={
                    "model": self.params.speech_model,
                    "mode": self.params.mode,
                    "api_version": API_VERSION,
                    "speaker_labels": bool(self.params.speaker_labels),
                    "engine": self.app.engine.describe(),
                },
            )))
            if not self.ended:
                tasks = [asyncio.create_task(self._guard(job)) for job in
                         (self._receive(), self._work(), self._watch(), self._liveness())]
                await self._done.wait()
        finally:
            self._end("the server stopped the session")  # no-op when a reason was given
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close()
            logger.info("session %s ended after %.1f s (%.1f s of audio): %s", self.id,
                        time.time() - self.started, self.audio_seconds, self.end_reason)

    async def _close(self) -> None:
        timeout = self.app.config.close_timeout
        if self._end_abort:
            self.conn.transport.abort()
        elif self._end_error is not None:
            await _fail(self.conn, self._end_error, timeout)
        elif self._end_close is not None:
            await _bounded_close(self.conn, self.conn.close(self._end_close), timeout)

    async def _guard(self, job: Coroutine[Any, Any, None]) -> None:
        """Run one of the session's jobs, turning how it fails into the session's end."""
        try:
            await job
        except _Ended:
            pass
        except _SessionError as exc:
            self._end(f"error {exc.code}: {exc}", error=exc)
        except _ClientGone as exc:
            self._end(str(exc), abort=True)
        except ConnectionClosed:
            self._end(_closed_reason(self.conn))
        except Exception as exc:
            logger.exception("session %s failed", self.id)
            self._end(f"internal error: {exc!r}",
                      error=_SessionError(3005, f"{_ERRORS[3005]}: internal server error"))

    async def _send(self, event: Event) -> None:
        """Send an event's message, unless the session is over; bounded by ``send_timeout``."""
        if self.ended:
            raise _Ended
        limit = self.app.config.send_timeout or None
        try:
            await asyncio.wait_for(self.conn.send(encode(event)), limit)
        except asyncio.TimeoutError:
            raise _ClientGone(f"client stopped reading (a send was stuck for {limit:g} s)"
                              ) from None

    async def _decode(self, call: Callable[[], list[Event]]) -> list[Event]:
        """Run an engine call in the pool; never for a session that is over.

        A call still running when the session ends finishes in its thread (the engine is not
        interruptible) and its messages are dropped.
        """
        if self.ended:
            raise _Ended
        messages = await asyncio.get_running_loop().run_in_executor(self.app.pool, call)
        if self.ended:
            raise _Ended
        return messages

    async def _receive(self) -> None:
        async for data in self.conn:
            if self.terminating:
                continue  # read on only to see the client's close
            self.last_activity = time.monotonic()
            if isinstance(data, bytes):
                self._check_audio(data)
                self.queue.put_nowait(("audio", data))
                continue
            try:
                kind, fields = decode_control(data)
            except ValueError as exc:
                raise _SessionError(3006, str(exc)) from None
            if kind == "Terminate":
                self.terminating = True
                self.queue.put_nowait(("terminate", "terminated by the client"))
            elif kind == "ForceEndpoint":
                self.queue.put_nowait(("force", None))
            elif kind == "KeepAlive":
                pass
            else:  # UpdateConfiguration
                try:
                    self.params = merge_update(self.params, fields)
                except (ConfigError, TypeError) as exc:
                    raise _SessionError(3006, f"User Input Validation Error: {exc}") from None
                self.queue.put_nowait(("update", self.params))
        self._end(_closed_reason(self.conn))  # closed normally, without Terminate or after it

    def _check_audio(self, data: bytes) -> None:
        if self.params.encoding == "pcm_s16le" and len(data) % 2:
            raise _SessionError(3006, "Invalid Message: PCM16 audio must have an even length")
        ms = 1000.0 * len(data) / self.bytes_per_second
        if not 50 <= ms <= 1000:
            raise _SessionError(3007, f"Input Duration Error: Input Duration Violation: "
                                      f"{ms:.1f} ms. Expected between 50 and 1000 ms")
        now = time.monotonic()
        if self.first_audio is None:
            self.first_audio = now
        self.audio_seconds += ms / 1000.0
        rate = self.app.config.max_rate
        elapsed = now - self.first_audio
        if rate is not None and self.audio_seconds > 5.0 + elapsed * rate:
            raise _SessionError(3007, f"Audio Transmission Rate Exceeded: Received "
                                      f"{self.audio_seconds:.1f} sec. audio in {elapsed:.1f} sec")

    async def _work(self) -> None:
        while True:
            kind, value = await self.queue.get()
            if kind == "audio":
                # Take chunks already waiting (up to 2 s): one engine call catches up on a
                # backlog, and its results still go out as it progresses.
                chunks = [value]
                size, limit = len(value), 2 * self.bytes_per_second
                waiting = self.queue._queue  # type: ignore[attr-defined]
                while waiting and waiting[0][0] == "audio" and size < limit:
                    chunks.append(self.queue.get_nowait()[1])
                    size += len(chunks[-1])
                data = b"".join(chunks)
                behind = len(data) > self.bytes_per_second  # over 1 s queued: catch up first
                events = await self._decode(
                    functools.partial(self.engine.feed, data, not behind))
            elif kind == "force":
                events = await self._decode(self.engine.force_endpoint)
            elif kind == "update":
                self.engine.update(value)
                events = []
            else:  # terminate: flush, Termination, close 1000
                for event in await self._decode(self.engine.finish):
                    await self._send(event)
                await self._send(Termination(
                    audio_duration_seconds=round(self.audio_seconds),
                    session_duration_seconds=round(time.time() - self.started),
                ))
                self._end(value, close=1000)
                return
            for event in events:
                await self._send(event)

    async def _watch(self) -> None:
        """End the session at its maximum duration; terminate it after inactivity_timeout."""
        while True:
            await asyncio.sleep(0.5)
            if time.time() >= self.expires_at:
                raise _SessionError(3008, _ERRORS[3008])
            timeout = self.params.inactivity_timeout
            if (timeout and not self.terminating
                    and time.monotonic() - self.last_activity > timeout):
                self.terminating = True
                self.queue.put_nowait(("terminate", f"idle for {timeout} s (inactivity_timeout)"))

    async def _liveness(self) -> None:
        """Ping the client every ping_interval; end the session when a pong is late."""
        config = self.app.config
        interval, timeout = config.ping_interval or None, config.ping_timeout or None
        if interval is None:
            return

        async def ping_pong() -> None:
            pong = await self.conn.ping()
            await pong

        # websockets' own keepalive starts timing the pong only once the ping is written, and
        # a client that stopped reading can make that wait forever: time both together.
        limit = timeout or config.send_timeout or None
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.wait_for(ping_pong() if timeout else self.conn.ping(), limit)
            except asyncio.TimeoutError:
                if timeout:
                    raise _ClientGone(f"no pong within {timeout:g} s") from None
                raise _ClientGone(f"client stopped reading (a ping was stuck for {limit:g} s)"
                                  ) from None


def _closed_reason(conn: ServerConnection) -> str:
    """Say who closed a connection that is closed (or closing)."""
    proto = conn.protocol
    rcvd, sent = proto.close_rcvd, proto.close_sent
    if rcvd is None and sent is None:
        return "client went away (connection dropped without a close frame)"
    if rcvd is not None and (sent is None or proto.close_rcvd_then_sent):
        reason = f": {rcvd.reason}" if rcvd.reason else ""
        return f"client closed the connection ({rcvd.code}{reason})"
    assert sent is not None
    if sent.code == 1001:
        return "server shutting down"
    return f"closed by the server ({sent.code})"


async def _bounded_close(conn: ServerConnection, closing: Awaitable[None], timeout: float) -> None:
    """Await a closing step; drop the connection if it takes over `timeout` seconds.

    websockets bounds the wait for the client's close frame by its ``close_timeout``, but not
    the wait for room in the write buffer of a client that stopped reading.
    """
    try:
        await asyncio.wait_for(closing, timeout)
    except ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        logger.debug("the closing handshake took over %g s: dropping the connection", timeout)
        conn.transport.abort()


async def _fail(conn: ServerConnection, exc: _SessionError, timeout: float) -> None:
    """Send an ``Error`` frame and close with its code, within `timeout` seconds."""

    async def send_and_close() -> None:
        await conn.send(encode(ErrorEvent(exc.code, str(exc))))
        await conn.close(exc.code, str(exc)[:120])

    await _bounded_close(conn, send_and_close(), timeout)


async def _shut_down(server: Server, timeout: float) -> None:
    """Close the server; drop the connections still open after `timeout` seconds."""
    server.close()  # sends every connection a close 1001
    try:
        await asyncio.wait_for(asyncio.shield(server.wait_closed()), timeout)
    except asyncio.TimeoutError:
        stuck = list(server.all_connections)
        logger.info("dropping %d connection(s) that did not close within %g s",
                    len(stuck), timeout)
        for conn in stuck:
            conn.transport.abort()


async def _serve(config: ServerConfig, engine: WhisperEngine,
                 ready: threading.Event | None = None, holder: dict | None = None) -> None:
    app = _App(config, engine)
    try:
        # Sessions ping their clients themselves (see _Session._liveness).
        async with serve(app.handle, config.host, config.port,
                         process_request=app.process_request, max_size=2**22,
                         ping_interval=None, close_timeout=config.close_timeout) as server:
            if holder is not None:
                holder["app"] = app
                holder["server"] = server
                holder["loop"] = asyncio.get_running_loop()
                holder["port"] = server.sockets[0].getsockname()[1]
            if ready is not None:
                ready.set()
            await server.serve_forever()
    finally:
        app.pool.shutdown(wait=True, cancel_futures=True)


class LocalServer:
    """The local server on a background thread, for use from Python (tests, notebooks).

    Parameters
    ----------
    config : ServerConfig, optional
        Default: loopback on a free port, real-time pacing enforced.
    engine : WhisperEngine, optional
        A loaded model to share; default loads one from ``config.model``.

    Examples
    --------
    >>> server = LocalServer().start()      # doctest: +SKIP
    >>> server.url                          # doctest: +SKIP
    'ws://127.0.0.1:40123/v3/ws'
    >>> server.stop()                       # doctest: +SKIP
    """

    def __init__(self, config: ServerConfig | None = None,
                 engine: WhisperEngine | None = None) -> None:
        self.config = config or ServerConfig(port=0)
        self.config.validate()
        self.engine = engine
        self._holder: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def active_sessions(self) -> int:
        """How many sessions hold a place under ``max_sessions`` now."""
        app = self._holder.get("app")
        return app.sessions if app is not None else 0

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        return f"ws://{self.config.host}:{self._holder['port']}/v3/ws"

    def describe(self) -> str:
        """Return e.g. ``"the local server at ws://127.0.0.1:PORT/v3/ws (tiny.en on cpu)"``."""
        return f"the local server at {self.url} ({self.engine.describe()})"

    def start(self) -> LocalServer:
        """Load the model (if needed), start serving, and return once connections are taken."""
        if self.engine is None:
            self.engine = WhisperEngine(self.config.model, self.config.device)
        ready = threading.Event()

        def main() -> None:
            try:
                asyncio.run(_serve(self.config, self.engine, ready, self._holder))
            except BaseException as exc:  # reported by start()
                self._error = exc
                ready.set()

        self._thread = threading.Thread(target=main, name="nbscribe-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if self._error is not None or "port" not in self._holder:
            self.stop()
            raise ConfigError(f"the local server could not start on {self.config.host}:"
                              f"{self.config.port}: {self._error}")
        logger.info("serving %s", self.describe())
        return self

    def stop(self) -> None:
        """Close every session and the server, and join its thread (idempotent).

        Connections whose closing handshake takes over ``close_timeout`` (a client that
        stopped reading) are dropped.
        """
        server: Server | None = self._holder.pop("server", None)
        loop = self._holder.get("loop")
        if server is not None and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(_shut_down(server, self.config.close_timeout), loop)
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(config: ServerConfig) -> None:
    """Run the server in the foreground until Ctrl+C (``nbscribe serve``)."""
    config.validate()
    engine = WhisperEngine(config.model, config.device)
    logger.warning("nbscribe serve: ws://%s:%s/v3/ws (%s)%s", config.host, config.port,
                   engine.describe(), "" if config.api_key else ", no key required")
    try:
        asyncio.run(_serve(config, engine))
    except KeyboardInterrupt:
        pass
