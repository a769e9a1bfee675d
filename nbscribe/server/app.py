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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import http
import json
import logging
import secrets
import threading
import time
import urllib.parse
import uuid
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..errors import ConfigError
from ..params import StreamingParams, merge_update
from ..protocol import API_VERSION
from .engine import EngineSettings, TurnEngine, WhisperEngine

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


class _SessionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


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
            await _fail(conn, exc)
            return
        self.sessions += 1
        session = _Session(self, conn, params, max_seconds)
        try:
            await session.run()
        finally:
            session.release()


class _Session:
    def __init__(self, app: _App, conn: ServerConnection, params: StreamingParams,
                 max_seconds: int) -> None:
        self.app = app
        self.conn = conn
        self.params = params
        self.id = str(uuid.uuid4())
        self.started = time.time()
        self.expires_at = int(self.started + max_seconds)
        self.engine = TurnEngine(app.engine, params, app.config.settings)
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.audio_seconds = 0.0
        self.first_audio: float | None = None
        self.last_activity = time.monotonic()
        bytes_per_sample = 1 if params.encoding == "pcm_mulaw" else 2
        self.bytes_per_second = params.sample_rate * bytes_per_sample
        self._released = False

    def release(self) -> None:
        """Free this session's place under max_sessions.

        Called as soon as the session is over, before the closing handshake, which a slow
        client may drag out.
        """
        if not self._released:
            self._released = True
            self.app.sessions -= 1

    async def run(self) -> None:
        await self.conn.send(json.dumps({
            "type": "Begin",
            "id": self.id,
            "expires_at": self.expires_at,
            "configuration": {
                "model": self.params.speech_model,
                "mode": self.params.mode,
                "api_version": API_VERSION,
                "speaker_labels": bool(self.params.speaker_labels),
                "engine": self.app.engine.describe(),
            },
        }))
        worker = asyncio.create_task(self._work())
        watchdog = asyncio.create_task(self._watch())
        try:
            await self._receive()
            await worker
        except _SessionError as exc:
            self.release()
            await _fail(self.conn, exc)
        except ConnectionClosed:
            pass
        finally:
            self.release()
            for task in (worker, watchdog):
                task.cancel()
            await asyncio.gather(worker, watchdog, return_exceptions=True)

    async def _receive(self) -> None:
        async for data in self.conn:
            self.last_activity = time.monotonic()
            if isinstance(data, bytes):
                self._check_audio(data)
                await self.queue.put(("audio", data))
                continue
            try:
                msg = json.loads(data)
            except ValueError:
                raise _SessionError(3006, f"Invalid JSON: {data[:200]}") from None
            if not isinstance(msg, dict):
                raise _SessionError(3006, f"Invalid Message: {data[:200]}")
            kind = msg.get("type")
            if kind == "Terminate":
                await self.queue.put(("terminate", None))
                return
            if kind == "ForceEndpoint":
                await self.queue.put(("force", None))
            elif kind == "KeepAlive":
                pass
            elif kind == "UpdateConfiguration":
                fields = {k: v for k, v in msg.items() if k != "type"}
                try:
                    self.params = merge_update(self.params, fields)
                except (ConfigError, TypeError) as exc:
                    raise _SessionError(3006, f"User Input Validation Error: {exc}") from None
                await self.queue.put(("update", self.params))
            else:
                raise _SessionError(3006, f"Invalid Message Type: {kind}")
        raise ConnectionClosed(None, None)  # the client went away without Terminate

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
        loop = asyncio.get_running_loop()
        pool = self.app.pool
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
                messages = await loop.run_in_executor(pool, self.engine.feed, data, not behind)
            elif kind == "force":
                messages = await loop.run_in_executor(pool, self.engine.force_endpoint)
            elif kind == "update":
                self.engine.update(value)
                messages = []
            else:  # terminate
                messages = await loop.run_in_executor(pool, self.engine.finish)
                for msg in messages:
                    await self.conn.send(json.dumps(msg))
                await self.conn.send(json.dumps({
                    "type": "Termination",
                    "audio_duration_seconds": round(self.audio_seconds),
                    "session_duration_seconds": round(time.time() - self.started),
                }))
                self.release()
                await self.conn.close(1000)
                return
            for msg in messages:
                await self.conn.send(json.dumps(msg))

    async def _watch(self) -> None:
        timeout = self.params.inactivity_timeout
        while True:
            await asyncio.sleep(0.5)
            if time.time() >= self.expires_at:
                self.release()
                await _fail(self.conn, _SessionError(3008, _ERRORS[3008]))
                return
            if timeout and time.monotonic() - self.last_activity > timeout:
                logger.info("session %s idle for %s s: terminating", self.id, timeout)
                await self.queue.put(("terminate", None))
                return


async def _fail(conn: ServerConnection, exc: _SessionError) -> None:
    logger.info("closing a session with %s: %s", exc.code, exc)
    try:
        await conn.send(json.dumps({"type": "Error", "error_code": exc.code, "error": str(exc)}))
        await conn.close(exc.code, str(exc)[:120])
    except ConnectionClosed:
        pass


async def _serve(config: ServerConfig, engine: WhisperEngine,
                 ready: threading.Event | None = None, holder: dict | None = None) -> None:
    app = _App(config, engine)
    try:
        async with serve(app.handle, config.host, config.port,
                         process_request=app.process_request, max_size=2**22,
                         close_timeout=2) as server:
            if holder is not None:
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
        """Close every session and the server, and join its thread (idempotent)."""
        server: Server | None = self._holder.pop("server", None)
        loop = self._holder.get("loop")
        if server is not None and loop is not None and loop.is_running():
            loop.call_soon_threadsafe(server.close)
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
