"""The transcriber: source -> converter -> WAV + outbox -> connection -> session.

Threads and who owns what (see ARCHITECTURE.md):

- the **pump thread** owns the source, the converter, the WAV writer, the `Outbox` and the
  connections' lifecycle: it opens the source, reads, converts, writes and sends; it connects,
  reconnects and rolls over; at the end it closes the source, flushes the last frame, closes
  the WAV and terminates the connection. It alone writes the transcriber's state;
- each connection's **reader thread** owns its socket; it only decodes and queues events;
- the **events thread** applies every event, of every connection, to the session and the
  journal, tells the pump which audio final turns now cover, and calls the listeners: all
  events reach listeners on this one thread, in order, and a slow listener never delays a
  socket (or its pongs);
- the caller's thread starts, stops and reads.

`start` returns once audio flows (or raises what prevents it); `stop` hands one deadline to
the pump (drain, ``Terminate``, joins) and returns once every thread it started has ended.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import StreamingClient, resolve_api_key
from .connection import Connector
from .convert import Converter
from .errors import AuthError, ConfigError, ConnectError, NbscribeError, StreamError
from .events import Event, Turn
from .journal import JOURNAL_NAME, Journal
from .outbox import Outbox
from .params import StreamingParams
from .policy import ReconnectPolicy, TokenSource
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


_END = object()  # tells the events thread that no more events will come


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
        After an unexpected close (a dropped connection, 1011, 3005, 3008 ...) or a connection
        that went silent, connect again with backoff and go on; errors a retry cannot fix (a
        bad key 1008, bad input 3006) stop the session. The audio captured meanwhile is
        buffered and sent after reconnecting, and so is the audio that no final turn covered
        when the connection was lost: the new server session transcribes it again.
    buffer_seconds : float
        How much audio may wait for a connection; beyond it the oldest is dropped from the
        stream (it stays in the WAV) and recorded in ``session.gaps``.
    catchup_rate : float
        How much faster than real time buffered audio is sent after a reconnect.
    rollover_seconds : float
        Open the next server session this long before the current one expires (3 hours),
        and end the old one, so long sessions go on without a gap.
    ping_interval, liveness_timeout : float
        Ping a quiet service after `ping_interval` seconds; a connection from which nothing,
        not even a pong, came for `liveness_timeout` seconds is dead: reconnect.
    send_timeout : float
        A message that cannot leave for this long means the connection is dead.
    stop_timeout : float
        The budget of `stop`: sending the last audio, waiting for the final turns and
        joining every thread.
    connector : callable, optional
        Opens connections (see `nbscribe.connection.Connector`); tests pass
        `nbscribe.testing.FakeService`.
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
        ping_interval: float = 2.0,
        liveness_timeout: float = 6.0,
        send_timeout: float = 10.0,
        stop_timeout: float = 30.0,
        connector: Connector | None = None,
        **param_kwargs: Any,
    ) -> None:
        if params is not None and param_kwargs:
            raise ConfigError("pass either params= or parameter keywords, not both")
        self.params = (params or StreamingParams.from_kwargs(**param_kwargs)).validate()
        self.source = source
        self.frame_ms = frame_ms
        Converter(16000, 1, self.params.sample_rate, frame_ms)  # validates frame_ms early
        self._api_key = resolve_api_key(api_key)
        self._tokens = TokenSource(token)
        self._has_token = token is not None
        self._local_requested = local
        self.url = url
        self.out_dir = Path(out_dir) if out_dir else None
        self.connect_timeout = connect_timeout
        self.terminate_timeout = terminate_timeout
        self.ping_interval = ping_interval
        self.liveness_timeout = liveness_timeout
        self.send_timeout = send_timeout
        self.stop_timeout = stop_timeout
        self._connector = connector
        self.policy = ReconnectPolicy(enabled=reconnect, rollover_seconds=rollover_seconds)
        self.outbox = Outbox(frame_ms, int(buffer_seconds * 1000), catchup_rate=catchup_rate)
        self.session = Session()
        self.client: StreamingClient | None = None
        self.local_server: Any = None
        self.error: NbscribeError | None = None
        self.state = "idle"
        self.reconnects = 0
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._deadline: float | None = None  # set by stop() before _stop, read by the pump
        self._finished = threading.Event()
        self._pump: threading.Thread | None = None
        self._events_thread: threading.Thread | None = None
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._confirmed: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._retiring: list[tuple[StreamingClient, float]] = []
        self._connections = 0
        self._t0 = 0.0
        self._first_sent: float | None = None
        self._level = -120.0
        self._audio_seconds = 0.0
        self._bytes_sent = 0
        self._journal: Journal | None = None
        self._saved = False
        self._send_terminate = True

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
        return self.url is None and not self._api_key and not self._has_token

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

        Every listener runs on one thread (the transcriber's events thread), after the session
        has applied and journaled the event, for the events of every connection in order. One
        that raises is logged and the stream goes on; one that blocks delays only other
        listeners and the live session, never the audio or the connection.
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
        if self._pump is not None or self._events_thread is not None:
            raise ConfigError("this transcriber was already started; create a new one")
        self._t0 = time.monotonic()
        self.state = "connecting"
        folder = self.out_dir or Path(tempfile.mkdtemp(prefix="nbscribe-"))
        self._wav_path = folder / "audio.wav"
        # The journal is open, and its writer running, before the first event can arrive.
        self._journal = Journal(folder / JOURNAL_NAME)
        self._events_thread = threading.Thread(target=self._events_main, name="nbscribe-events",
                                               daemon=True)
        self._events_thread.start()
        try:
            self._url = self._resolve_url()
            self.session.metadata.update(
                source=self.source.description,
                service=self.service_name,
                params=self.params.to_dict(),
                audio_file=str(self._wav_path),
            )
            self._journal.meta(**self.session.metadata)
            self._open_connection(replay=False)
        except BaseException as exc:
            self.state = "error"
            if isinstance(exc, NbscribeError):
                self.error = exc
            self._end_events(time.monotonic() + 5.0)
            self._stop_local_server()
            raise
        opened = threading.Event()
        self._pump = threading.Thread(
            target=self._pump_main, args=(opened,), name="nbscribe-pump", daemon=True
        )
        self._pump.start()
        opened.wait()
        if self.error is not None and self.state == "error":
            self._join(time.monotonic() + self.stop_timeout)
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

    def _open_connection(self, replay: bool) -> None:
        """Open a server session; its time zero is the first audio it will get.

        With `replay`, audio already sent but not yet covered by a final turn is sent again
        (the server that had it is gone). Raises what `StreamingClient.connect` raises.
        """
        self._take_confirmations()
        if replay:
            self.outbox.rewind()
        index, offset = self._connections, self.outbox.next_offset_ms()

        def post(event: Event) -> None:  # the connection's reader thread
            if isinstance(event, Turn) and event.end_of_turn and event.words:
                self._confirmed.put(offset + event.words[-1].end)
            self._events.put(("event", index, offset, event))

        local = self.uses_local_server
        client = StreamingClient(
            self._url,
            self.params,
            api_key=None if local else self._api_key,
            token=None if local else self._tokens.next(),
            on_event=post,
            connect_timeout=self.connect_timeout,
            terminate_timeout=self.terminate_timeout,
            ping_interval=self.ping_interval,
            liveness_timeout=self.liveness_timeout,
            send_timeout=self.send_timeout,
            connector=self._connector,
        )
        client.connect()
        self._connections += 1
        self.client = client
        self.outbox.new_segment()
        self.policy.connected()

    def _take_confirmations(self) -> None:
        while True:
            try:
                self.outbox.confirm(self._confirmed.get_nowait())
            except queue.Empty:
                return

    # -- the events thread --------------------------------------------------------------------

    def _events_main(self) -> None:
        segments: dict[int, int] = {}  # connection index -> session segment
        journal = self._journal
        assert journal is not None
        try:
            while True:
                item = self._events.get()
                if item is _END:
                    return
                kind = item[0]
                if kind == "event":
                    _, index, offset, event = item
                    if index not in segments:
                        segments[index] = self.session.new_segment(offset)
                    segment = segments[index]
                    self.session.apply(event, segment, offset)
                    journal.event(event, segment, offset)
                    self._call_listeners(event)
                elif kind == "gap":
                    _, start, end, reason = item
                    self.session.gaps.append((start, end))
                    journal.gap(start, end, reason)
                elif kind == "interruption":
                    self.session.interruptions.append(item[1])
                    journal.interruption(item[1])
                elif kind == "audio":
                    self.session.audio_seconds = item[1]
        finally:
            journal.close()

    def _call_listeners(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a transcriber listener raised; carrying on")

    # -- the pump thread ----------------------------------------------------------------------

    def _pump_main(self, opened: threading.Event) -> None:
        source = self.source
        wav: WavWriter | None = None
        conv: Converter | None = None
        try:
            try:
                source.start()
                self.state = "streaming"
            except NbscribeError as exc:
                self.error = exc
                self.state = "error"
                self._send_terminate = False  # nothing was sent: no final turn to wait for
                return
            finally:
                opened.set()
            conv = Converter(source.samplerate, source.channels, self.params.sample_rate,
                             self.frame_ms)
            wav = WavWriter(self._wav_path, self.params.sample_rate)
            reported = 0.0
            while not self._stop.is_set():
                block = source.read(timeout=0.02 if self.outbox.unsent_ms else 0.1)
                if block is not None:
                    for frame in conv.push(block):
                        self._capture(frame, wav)
                    self._level = conv.level
                    if self._audio_seconds - reported >= 1.0:
                        reported = self._audio_seconds
                        self._events.put(("audio", reported))
                elif source.finished:
                    break
                if not self._service():
                    break
            if self._stop.is_set():
                self.state = "stopping"
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
            run_all(source.close,
                  wav.close if wav is not None else None,
                  self._close_connections,
                  lambda: self._post_gaps(close=True))
            self._events.put(("audio", self._audio_seconds))
            self.state = "error" if self.error else "stopped"
            self._events.put(_END)

    def _capture(self, frame: bytes, wav: WavWriter) -> None:
        wav.write(frame)  # to disk first: nothing captured is lost
        self.outbox.capture(frame)
        self._audio_seconds = wav.seconds
        self._post_gaps()

    def _post_gaps(self, close: bool = False) -> None:
        for start, end in self.outbox.take_gaps(close):
            logger.warning("audio from %.1f s to %.1f s could not be sent (kept in the WAV)",
                           start, end)
            self._events.put(("gap", start, end,
                              "no connection for longer than buffer_seconds"))

    def _recoverable(self, client: StreamingClient) -> bool:
        if client.error is None:
            return client.termination is not None or self._stop.is_set()
        return self.policy.retryable(client.error)

    def _service(self) -> bool:
        """Keep a connection and send what pacing allows; return False to end the session."""
        self._take_confirmations()
        self._retire_step()
        client = self.client
        if client is not None and client.finished:
            if not self.policy.enabled or not self._recoverable(client):
                self.error = self.error or client.error or StreamError(
                    "the service ended the session")
                return False
            self._lost(client)
        now = time.monotonic()
        if self.client is None:
            if not self.policy.may_attempt(now):
                return True
            try:
                self._open_connection(replay=True)
            except (AuthError, ConfigError) as exc:
                self.error = exc
                return False
            except ConnectError as exc:
                if exc.code is not None and not self.policy.retryable(exc):
                    self.error = exc
                    return False
                delay = self.policy.failed(now)
                logger.warning("reconnect failed (%s); next try in %.1f s", exc, delay)
                return True
            self._post_gaps(close=True)
            self.state = "streaming"
        elif (self.policy.rollover_due(self.client.begin, time.time())
              and self.policy.may_attempt(now)):
            self._rollover()
        self._send_paced()
        return True

    def _lost(self, client: StreamingClient) -> None:
        """Record a connection that ended unexpectedly; the next round reconnects."""
        client.close(terminate=False, timeout=1.0)
        self.client = None
        self.reconnects += 1
        self.state = "reconnecting"
        self._take_confirmations()
        replay = (self.outbox.unsent_ms + self.outbox.unconfirmed_ms) / 1000
        at = self.outbox.captured_ms / 1000
        reason = str(client.error or "the connection closed")
        logger.warning("connection lost at %.1f s (%s); reconnecting, %.1f s of audio to send "
                       "again", at, reason, replay)
        self._events.put(("interruption", {"at": round(at, 3), "reason": reason,
                                           "resent_seconds": round(replay, 3)}))

    def _rollover(self) -> None:
        old = self.client
        assert old is not None
        try:
            self._open_connection(replay=False)  # the old session finalises what it has
        except NbscribeError as exc:
            delay = self.policy.failed(time.monotonic())
            logger.warning("could not open the next session before expiry (%s); next try in "
                           "%.1f s", exc, delay)
            return
        logger.info("rolled over to a new server session before the old one expired")
        # Never wait here: the pump keeps capturing while the old session finalises.
        old.terminate(by_reader=True)
        self._retiring.append((old, time.monotonic() + 6 * self.terminate_timeout))

    def _retire_step(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for client, deadline in self._retiring:
            if client.finished and client.join(0.0):
                continue
            if force or now > deadline:
                client.abort()
            keep.append((client, deadline))
        self._retiring = keep

    def _send_paced(self) -> None:
        client = self.client
        if client is None:
            return
        paced = getattr(self.source, "realtime", True)
        while (frame := self.outbox.due(time.monotonic(), paced)) is not None:
            try:
                client.send_audio(frame)
            except StreamError:
                return  # the next round notices the closed connection
            if self._first_sent is None:
                self._first_sent = time.monotonic()
            self.outbox.mark_sent()
            self._bytes_sent += len(frame)

    def _drain(self) -> None:
        """Send what is left after the source ended, through reconnects, within the budget."""
        natural = time.monotonic() + 30.0 + self.outbox.unsent_ms / 1000
        while True:
            now = time.monotonic()
            if now >= min(natural, self._drain_deadline()):
                break
            client = self.client
            dead = client is None or client.finished
            if not self.outbox.unsent_ms and not (dead and self.outbox.unconfirmed_ms):
                break
            if not self._service():
                return
            time.sleep(0.01)
        if self.outbox.unsent_ms:
            logger.warning("%.1f s of audio could not be sent before stopping",
                           self.outbox.unsent_ms / 1000)

    def _drain_deadline(self) -> float:
        """Return the stop deadline less what closing the connection needs (or infinity)."""
        deadline = self._deadline
        if deadline is None:
            return float("inf")
        left = deadline - time.monotonic()
        return deadline - min(left / 2, 6 * self.terminate_timeout + 1.0)

    def _close_connections(self) -> None:
        deadline = self._deadline
        budget = None if deadline is None else max(0.0, deadline - time.monotonic() - 0.5)
        client = self.client
        if client is not None:
            client.close(terminate=self._send_terminate and client.error is None,
                         timeout=budget)
            lost = self.outbox.unsent_ms or self.outbox.unconfirmed_ms or not self._recoverable(
                client)
            if self.error is None and client.error is not None and lost:
                self.error = client.error
        self._retire_step(force=True)
        for old, _ in self._retiring:
            old.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- stopping -----------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source has ended and the session is closed; return whether it has."""
        if self._events_thread is None:
            return self._finished.is_set()
        self._events_thread.join(timeout)
        return not self._events_thread.is_alive()

    def stop(self, timeout: float | None = None) -> Session:
        """Stop capturing, send the last audio, wait for the final turns and join all threads.

        Idempotent. Errors that happened while streaming are kept in `error` and
        ``session.errors``; call `raise_for_error` to raise them.

        Parameters
        ----------
        timeout : float, optional
            The budget for all of it (default `stop_timeout`): the last audio, ``Terminate``
            and the joins share one deadline.

        Returns
        -------
        Session
            The finished session, saved to `out_dir` (once) when one was given.
        """
        deadline = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
        self.request_stop(deadline)
        self.finish_stop(deadline)
        return self.session

    def request_stop(self, deadline: float) -> None:
        """Ask the pump to stop by `deadline` (``time.monotonic()``) and return at once."""
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
        self._stop.set()

    def finish_stop(self, deadline: float) -> bool:
        """Join the threads by `deadline`, stop an embedded server, save; return if all ended."""
        ended = self._join(deadline)
        run_all(self._stop_local_server, self._save_once if ended else None)
        if not ended:
            logger.warning("the session is not saved: a thread is still running (a listener "
                           "that blocks?); the journal in %s has every event",
                           self._wav_path.parent)
        return ended

    def _save_once(self) -> None:
        if self.out_dir is not None and self._pump is not None and not self._saved:
            self._saved = True
            self.session.save(str(self.out_dir))

    def _join(self, deadline: float) -> bool:
        threads = [t for t in (self._pump, self._events_thread) if t is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            logger.warning("%s did not end in time", ", ".join(alive))
            return False
        self._finished.set()
        return True

    def _end_events(self, deadline: float) -> None:
        self._events.put(_END)
        self._join(deadline)

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
            audio_seconds=self._audio_seconds,
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
        client = self.client
        if client is None or not client.connected:
            raise StreamError("no session is streaming: call start() first")
        return client


def run_all(*steps: Callable[[], object] | None) -> None:
    """Run every cleanup step, even when an earlier one raises (each failure is logged)."""
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception:
            logger.exception("a cleanup step failed; carrying on with the others")
