"""The transcriber: source -> converter -> WAV + client -> session, on background threads.

Threads and who owns what:

- the **pump thread** owns the source, the converter and the WAV writer: it opens the source,
  reads, converts, writes and sends, and at the end closes the source, flushes the last frame,
  closes the WAV and terminates the connection;
- the client's **reader thread** owns the socket and applies events to the session, then calls
  the listeners;
- the caller's thread only starts, stops and reads.

`start` and `stop` return promptly: `start` once audio flows (or with the error that prevents
it), `stop` once every thread has been joined (bounded by the terminate timeout).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import StreamingClient, resolve_api_key
from .convert import Converter
from .errors import AuthError, ConfigError, ConnectError, NbscribeError, StreamError, is_retryable
from .events import Event, Turn
from .journal import JOURNAL_NAME, Journal
from .params import StreamingParams
from .protocol import DEFAULT_URL
from .session import Session
from .sources import AudioSource
from .wavfile import WavWriter

__all__ = ["Stats", "Transcriber"]

logger = logging.getLogger(__name__)

Listener = Callable[[Event], None]


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot of a running transcription.

    Attributes
    ----------
    state : str
        ``idle``, ``connecting``, ``streaming``, ``stopping``, ``stopped`` or ``error``.
    elapsed : float
        Seconds since `Transcriber.start`.
    audio_seconds : float
        Seconds of audio sent to the service.
    bytes_sent : int
        Audio bytes sent.
    level_dbfs : float
        Level of the last captured block.
    overflows : int
        Blocks the source lost (dropped frames).
    """

    state: str
    elapsed: float
    audio_seconds: float
    bytes_sent: int
    level_dbfs: float
    overflows: int


class Transcriber:
    """Stream audio from a source to a v3 streaming service and collect the session.

    Parameters
    ----------
    source : AudioSource
        A `DeviceSource`, `FileSource`, `ArraySource` or anything with that interface.
    url : str, optional
        The service. Default: AssemblyAI when an API key is given or set in
        ``ASSEMBLYAI_API_KEY``, else nbscribe's local server, started in-process.
    api_key : str, optional
        AssemblyAI key (default ``$ASSEMBLYAI_API_KEY``). Never shown or stored.
    token : str or callable, optional
        A temporary token instead of a key. Tokens are single-use: pass a function that
        returns a new one (e.g. ``lambda: create_temporary_token(expires_in_seconds=60)``,
        run where the key lives) so that reconnects and rollovers get a token each.
    local : bool, optional
        ``True`` forces the local server even when a key is configured.
    params : StreamingParams, optional
        Connection parameters; keyword arguments such as ``speech_model="u3-rt-pro"``,
        ``keyterms_prompt=[...]`` or ``speaker_labels=True`` may be given instead.
    out_dir : str or Path, optional
        Where ``audio.wav`` (what was sent, 16 kHz mono) is written as it is captured.
        Default: a new temporary folder (see `audio_path`).
    frame_ms : int
        Audio per message, 50-1000 ms.
    connect_timeout, terminate_timeout : float
        Seconds to wait for ``Begin`` and for ``Termination``.
    reconnect : bool
        After an unexpected close (a dropped connection, 1011, 3005, 3008 ...), connect again
        with backoff and go on; errors a retry cannot fix (a bad key 1008, bad input 3006)
        stop the session. The audio captured meanwhile is buffered and sent after
        reconnecting, and so is the audio of the turn that was open when the connection
        dropped: the new server session transcribes it again.
    buffer_seconds : float
        How much audio may wait for a connection; beyond it the oldest is dropped from the
        stream (it stays in the WAV) and recorded in ``session.gaps``.
    catchup_rate : float
        How much faster than real time buffered audio is sent after a reconnect.
    rollover_seconds : float
        Open the next server session this long before the current one expires (3 hours),
        and end the old one, so long sessions go on without a gap.
    **param_kwargs
        Connection parameters by name (see `StreamingParams`).
    """

    def __init__(
        self,
        source: AudioSource,
        *,
        url: str | None = None,
        api_key: str | None = None,
        token: str | Callable[[], str] | None = None,
        local: bool | None = None,
        params: StreamingParams | None = None,
        out_dir: str | Path | None = None,
        frame_ms: int = 50,
        connect_timeout: float = 10.0,
        terminate_timeout: float = 5.0,
        reconnect: bool = True,
        buffer_seconds: float = 60.0,
        catchup_rate: float = 1.2,
        rollover_seconds: float = 60.0,
        **param_kwargs: Any,
    ) -> None:
        if params is not None and param_kwargs:
            raise ConfigError("pass either params= or parameter keywords, not both")
        self.params = (params or StreamingParams.from_kwargs(**param_kwargs)).validate()
        self.source = source
        self.frame_ms = frame_ms
        Converter(16000, 1, self.params.sample_rate, frame_ms)  # validates frame_ms early
        self._api_key = resolve_api_key(api_key)
        self._token = token
        self._local_requested = local
        self.url = url
        self.out_dir = Path(out_dir) if out_dir else None
        self.connect_timeout = connect_timeout
        self.terminate_timeout = terminate_timeout
        self.session = Session()
        self.client: StreamingClient | None = None
        self.local_server: Any = None
        self.error: NbscribeError | None = None
        self.state = "idle"
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._pump: threading.Thread | None = None
        self._t0 = 0.0
        self.reconnect = reconnect
        self.buffer_seconds = buffer_seconds
        self.catchup_rate = catchup_rate
        self.rollover_seconds = rollover_seconds
        self.reconnects = 0
        self._first_sent: float | None = None
        self._level = -120.0
        self._frames = 0  # frames captured: the next one starts at _frames * frame_ms
        self._unsent: collections.deque[tuple[int, bytes]] = collections.deque()
        self._unconfirmed: collections.deque[tuple[int, bytes]] = collections.deque()
        self._confirmed_ms = 0  # the timeline up to here is covered by final turns
        self._seg_t0 = 0.0
        self._seg_sent_ms = 0
        self._bytes_sent = 0
        self._attempt = 0
        self._next_attempt = 0.0
        self._gap: list[int] | None = None
        self._journal: Journal | None = None

    def __repr__(self) -> str:
        return (
            f"<Transcriber {self.source.description} -> {self.service_name} "
            f"state={self.state} turns={len(self.session)}>"
        )

    # -- configuration ------------------------------------------------------------------------

    @property
    def uses_local_server(self) -> bool:
        """Whether this transcriber streams to nbscribe's local server."""
        if self._local_requested is not None:
            return bool(self._local_requested)
        return self.url is None and not self._api_key and not self._token

    @property
    def service_name(self) -> str:
        """A short name of where audio goes (never containing a key)."""
        if self.uses_local_server:
            server = self.local_server
            return server.describe() if server is not None else "the local Whisper server"
        from .protocol import redact_url

        return redact_url(self.url or DEFAULT_URL)

    @property
    def audio_path(self) -> Path | None:
        """The WAV file of the audio sent so far (valid while it grows)."""
        return self._wav_path if hasattr(self, "_wav_path") else None

    @property
    def first_audio_at(self) -> float | None:
        """``time.monotonic()`` when the first audio frame was sent (the stream's time zero)."""
        return self._first_sent

    def on(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event)` for every server event; return a function that unsubscribes.

        Listeners run on the reader thread, after the session has applied the event. One that
        raises is logged and the stream goes on.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # -- running ------------------------------------------------------------------------------

    def start(self) -> Transcriber:
        """Connect, open the source and start streaming in the background; return ``self``.

        Raises
        ------
        ConfigError, AuthError, ConnectError, AudioError
            Problems known before streaming: the message says what to do. Nothing is left
            running when this raises.
        """
        if self._pump is not None:
            raise ConfigError("this transcriber was already started; create a new one")
        self._t0 = time.monotonic()
        self.state = "connecting"
        try:
            self._url = self._resolve_url()
            self._connect()
        except BaseException as exc:
            self.state = "error"
            self._stop_local_server()
            if isinstance(exc, NbscribeError):
                self.error = exc
            raise
        folder = self.out_dir or Path(tempfile.mkdtemp(prefix="nbscribe-"))
        self._wav_path = folder / "audio.wav"
        self.session.metadata.update(
            source=self.source.description,
            service=self.service_name,
            params=self.params.to_dict(),
            audio_file=str(self._wav_path),
        )
        self._journal = Journal(folder / JOURNAL_NAME)
        self._journal.meta(**self.session.metadata)
        for event in self.session.begins:
            self._journal.event(event, 0, 0)
        opened = threading.Event()
        self._pump = threading.Thread(
            target=self._pump_main, args=(opened,), name="nbscribe-pump", daemon=True
        )
        self._pump.start()
        opened.wait()
        if self.error is not None and self.state == "error":
            self._pump.join(self.terminate_timeout + 5)
            self._stop_local_server()
            raise self.error
        return self

    def _resolve_url(self) -> str:
        if self.uses_local_server:
            from .server.embedded import start_local_server

            self.local_server = start_local_server(
                fast=not getattr(self.source, "realtime", True)
            )
            logger.info("no API key: transcribing offline with %s", self.local_server.describe())
            return self.local_server.url
        return self.url or DEFAULT_URL

    def _connect(self, replay: bool = True) -> None:
        """Open a server session; its time zero is the first audio it will get.

        With `replay`, audio already sent but not yet covered by a final turn is sent again
        (the server that had it is gone). Raises what `StreamingClient.connect` raises.
        """
        if replay and self._unconfirmed:
            self._unsent.extendleft(reversed(self._unconfirmed))
            self._unconfirmed.clear()
        offset = self._unsent[0][0] if self._unsent else self._frames * self.frame_ms
        segment = self.session.new_segment(offset)
        client = StreamingClient(
            self._url,
            self.params,
            api_key=None if self.uses_local_server else self._api_key,
            token=None if self.uses_local_server else self._next_token(),
            on_event=functools.partial(self._on_event, segment=segment, offset_ms=offset),
            connect_timeout=self.connect_timeout,
            terminate_timeout=self.terminate_timeout,
        )
        client.connect()
        self.client = client
        self._seg_t0 = time.monotonic()
        self._seg_sent_ms = 0
        self._attempt = 0

    def _next_token(self) -> str | None:
        token = self._token
        if callable(token):
            return token()
        if token and self.session.begins:
            logger.warning("reconnecting with the same temporary token, which the service "
                           "may refuse (tokens are single-use): pass token=<a function>")
        return token

    def _on_event(self, event: Event, segment: int = 0, offset_ms: int = 0) -> None:
        self.session.apply(event, segment, offset_ms)
        if self._journal is not None:
            self._journal.event(event, segment, offset_ms)
        if isinstance(event, Turn) and event.end_of_turn and event.words:
            self._confirmed_ms = max(self._confirmed_ms, offset_ms + event.words[-1].end)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a transcriber listener raised; carrying on")

    def _pump_main(self, opened: threading.Event) -> None:
        source = self.source
        wav: WavWriter | None = None
        try:
            try:
                source.start()
                self.state = "streaming"
            except NbscribeError as exc:
                self.error = exc
                self.state = "error"
                if self.client is not None:
                    self.client.close(terminate=False)
                return
            finally:
                opened.set()
            conv = Converter(source.samplerate, source.channels, self.params.sample_rate,
                             self.frame_ms)
            wav = WavWriter(self._wav_path, self.params.sample_rate)
            while not self._stop.is_set():
                block = source.read(timeout=0.02 if self._unsent else 0.1)
                if block is not None:
                    for frame in conv.push(block):
                        self._capture(frame, wav)
                    self._level = conv.level
                elif source.finished:
                    break
                if not self._service():
                    break
            if source.error:
                logger.warning("%s", source.error)
                self.error = self.error or StreamError(source.error)
            source.close()
            for frame in conv.flush():
                self._capture(frame, wav)
            self._drain()
        except Exception as exc:
            logger.exception("the audio pump failed")
            self.error = self.error or StreamError(f"the audio pump failed: {exc!r}")
        finally:
            source.close()
            if wav is not None:
                wav.close()
            self._close_gap()
            client = self.client
            if client is not None:
                client.close(terminate=client.error is None)
                lost = self._unsent or self._unconfirmed or not self._recoverable(client)
                if self.error is None and client.error is not None and lost:
                    self.error = client.error
            if self._journal is not None:
                self._journal.close()
            self.state = "error" if self.error else "stopped"
            self._finished.set()

    def _capture(self, frame: bytes, wav: WavWriter) -> None:
        wav.write(frame)  # to disk first: nothing captured is lost
        self._unsent.append((self._frames * self.frame_ms, frame))
        self._frames += 1
        self.session.audio_seconds = wav.seconds
        while len(self._unsent) * self.frame_ms > self.buffer_seconds * 1000:
            pos, _ = self._unsent.popleft()  # too long without a connection: a gap
            if self._gap is not None and self._gap[1] == pos:
                self._gap[1] = pos + self.frame_ms
            else:
                self._close_gap()
                self._gap = [pos, pos + self.frame_ms]

    def _close_gap(self) -> None:
        if self._gap is None:
            return
        start, end = self._gap[0] / 1000, self._gap[1] / 1000
        self._gap = None
        self.session.gaps.append((start, end))
        if self._journal is not None:
            self._journal.gap(start, end, "no connection for longer than buffer_seconds")
        logger.warning("audio from %.1f s to %.1f s could not be sent (kept in the WAV)",
                       start, end)

    def _recoverable(self, client: StreamingClient) -> bool:
        if client.error is None:
            return client.termination is not None or self._stop.is_set()
        return self.reconnect and is_retryable(client.error.code)

    def _service(self) -> bool:
        """Keep a connection and send what pacing allows; return False to end the session."""
        client = self.client
        if client is not None and not client.connected:
            if not self._recoverable(client) or not self.reconnect:
                self.error = self.error or client.error or StreamError(
                    "the service ended the session")
                return False
            client.close(terminate=False)
            self.client = None
            self.reconnects += 1
            self.state = "reconnecting"
            buffered = (len(self._unsent) + len(self._unconfirmed)) * self.frame_ms / 1000
            logger.warning("connection lost (%s); reconnecting, %.1f s of audio to send again",
                           client.error or "closed", buffered)
        if self.client is None:
            if time.monotonic() < self._next_attempt:
                return True
            try:
                self._connect()
            except (AuthError, ConfigError) as exc:
                self.error = exc
                return False
            except ConnectError as exc:
                if exc.code is not None and not is_retryable(exc.code):
                    self.error = exc
                    return False
                self._attempt += 1
                delay = min(10.0, 0.5 * 2 ** (self._attempt - 1))
                self._next_attempt = time.monotonic() + delay
                logger.warning("reconnect failed (%s); next try in %.1f s", exc, delay)
                return True
            self._close_gap()
            self.state = "streaming"
        begin = self.client.begin
        if (begin is not None and begin.expires_at
                and time.time() > begin.expires_at - self.rollover_seconds):
            self._rollover()
        self._send_paced()
        return True

    def _rollover(self) -> None:
        old = self.client
        assert old is not None
        try:
            self._connect(replay=False)  # the old session finalises what it has
        except NbscribeError as exc:
            self.client = old
            logger.warning("could not open the next session before expiry: %s", exc)
            return
        logger.info("rolled over to a new server session before the old one expired")
        old.close(terminate=True)

    def _send_paced(self) -> None:
        client = self.client
        if client is None:
            return
        paced = getattr(self.source, "realtime", True)
        backlog = len(self._unsent) * self.frame_ms > 1000
        rate = self.catchup_rate if backlog else 1.0
        while self._unsent:
            if self._seg_sent_ms == 0:
                self._seg_t0 = time.monotonic()  # a server session's clock starts with its audio
            # Never ahead of real time (faster only to catch up after a reconnect): frame i of
            # a server session leaves no earlier than i frame-durations after its first one.
            if paced and self._seg_sent_ms > (time.monotonic() - self._seg_t0) * 1000 * rate:
                break
            pos, frame = self._unsent[0]
            try:
                client.send_audio(frame)
            except StreamError:
                return  # the next round notices the closed connection
            if self._first_sent is None:
                self._first_sent = time.monotonic()
            self._unsent.popleft()
            self._unconfirmed.append((pos, frame))
            self._seg_sent_ms += self.frame_ms
            self._bytes_sent += len(frame)
        # Keep for a replay only what no final turn covers yet (and at most 30 s).
        keep = 30_000 // self.frame_ms
        while self._unconfirmed and (
            self._unconfirmed[0][0] + self.frame_ms <= self._confirmed_ms
            or len(self._unconfirmed) > keep
        ):
            self._unconfirmed.popleft()

    def _drain(self) -> None:
        """Send what is left after the source ended, through reconnects (bounded)."""
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            client = self.client
            dead = client is None or not client.connected
            if not self._unsent and not (dead and self._unconfirmed):
                break
            if not self._service():
                return
            time.sleep(0.01)
        if self._unsent:
            logger.warning("%.1f s of audio could not be sent before stopping",
                           len(self._unsent) * self.frame_ms / 1000)

    # -- stopping -----------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source has ended and the session is closed; return whether it has."""
        return self._finished.wait(timeout)

    def stop(self) -> Session:
        """Stop capturing, send the last audio, wait for the final turns and join all threads.

        Idempotent. Errors that happened while streaming are kept in `error` and
        ``session.errors``; call `raise_for_error` to raise them.

        Returns
        -------
        Session
            The finished session.
        """
        if self._pump is not None and not self._finished.is_set():
            self.state = "stopping"
        self._stop.set()
        if self._pump is not None:
            self._pump.join(self.terminate_timeout + 10)
            if self._pump.is_alive():
                logger.warning("the audio pump did not stop in time")
        self._stop_local_server()
        if self.out_dir is not None and self._pump is not None:
            self.session.save(str(self.out_dir))
        return self.session

    def raise_for_error(self) -> None:
        """Raise the error that ended the session early, if there was one."""
        if self.error is not None:
            raise self.error

    def _stop_local_server(self) -> None:
        server, self.local_server = self.local_server, None
        if server is not None:
            server.stop()

    def stats(self) -> Stats:
        """Return a snapshot of progress (safe to call from any thread)."""
        return Stats(
            state=self.state,
            elapsed=time.monotonic() - self._t0 if self._t0 else 0.0,
            audio_seconds=self.session.audio_seconds,
            bytes_sent=self._bytes_sent,
            level_dbfs=self._level,
            overflows=getattr(self.source, "overflows", 0),
        )

    def __enter__(self) -> Transcriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- mid-session controls -----------------------------------------------------------------

    def force_endpoint(self) -> None:
        """End the current turn now."""
        self._require_client().force_endpoint()

    def update_configuration(self, **fields: Any) -> None:
        """Change settings mid-stream, e.g. ``keyterms_prompt=[...]``, ``max_turn_silence=800``."""
        self._require_client().update_configuration(**fields)

    def _require_client(self) -> StreamingClient:
        if self.client is None or not self.client.connected:
            raise StreamError("no session is streaming: call start() first")
        return self.client
