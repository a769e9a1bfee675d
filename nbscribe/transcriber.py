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

from .client import StreamingClient
from .connection import Connector
from .convert import Converter
from .dispatch import Dispatcher
from .echo import FrameStage
from .errors import ConfigError, NbscribeError, StreamError
from .events import Event
from .journal import JOURNAL_NAME, Journal
from .outbox import Outbox
from .params import StreamingParams
from .policy import ReconnectPolicy
from .pump import END, Pump, run_all
from .service import Service
from .session import Session
from .sources import AudioSource

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
        A `DeviceSource`, `FileSource`, `ArraySource`, `BrowserSource` or anything with that
        interface.
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
    service : Service, optional
        A service resolved already, to share (instead of `url`, `api_key`, `token`, `local`);
        a service this transcriber did not start, it does not stop.
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
        After an unexpected close (a drop, 1011, 3005, 3008 ...) or a silent connection,
        connect again with backoff; errors a retry cannot fix (1008, 3006) end the session.
        Audio captured meanwhile, and audio no final turn covered, go to the new session.
    buffer_seconds : float
        How much audio may wait for a connection; beyond it the oldest is dropped from the
        stream (it stays in the WAV) and recorded in ``session.gaps``.
    catchup_rate : float
        How much faster than real time buffered audio is sent after a reconnect.
    rollover_seconds : float
        Open the next server session this long before the current one expires (3 hours),
        and end the old one, so long sessions go on without a gap.
    ping_interval, liveness_timeout : float
        Ping a quiet service after `ping_interval` s; nothing back, not even a pong, for
        `liveness_timeout` s means the connection is dead: reconnect.
    send_timeout : float
        A message that cannot leave for this long means the connection is dead.
    stop_timeout : float
        The budget of `stop`: the last audio, the final turns and every join.
    connector : callable, optional
        Opens connections (`nbscribe.connection.Connector`; tests: `testing.FakeService`).
    stage : FrameStage, optional
        A step every converted frame goes through before it is written and sent, with its
        capture time (`nbscribe.echo.FrameStage`); `MultiTranscriber` uses it to cancel echo.
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
        service: Service | None = None,
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
        stage: FrameStage | None = None,
        **param_kwargs: Any,
    ) -> None:
        if params is not None and param_kwargs:
            raise ConfigError("pass either params= or parameter keywords, not both")
        if service is not None and (url, api_key, token, local) != (None,) * 4:
            raise ConfigError("pass either service= or url/api_key/token/local, not both")
        self.params = (params or StreamingParams.from_kwargs(**param_kwargs)).validate()
        self.source = source
        self.frame_ms = frame_ms
        Converter(16000, 1, self.params.sample_rate, frame_ms)  # validates frame_ms early
        self.service = service or Service(url, api_key=api_key, token=token, local=local)
        self._owns_service = service is None
        self.out_dir = Path(out_dir) if out_dir else None
        self.connect_timeout = connect_timeout
        self.terminate_timeout = terminate_timeout
        self.ping_interval = ping_interval
        self.liveness_timeout = liveness_timeout
        self.send_timeout = send_timeout
        self.stop_timeout = stop_timeout
        self._connector = connector
        self.stage = stage
        self.policy = ReconnectPolicy(enabled=reconnect, rollover_seconds=rollover_seconds)
        self.outbox = Outbox(frame_ms, int(buffer_seconds * 1000), catchup_rate=catchup_rate)
        self.session = Session()
        self._listeners: list[Listener] = []
        self._state = "idle"
        self._error: NbscribeError | None = None
        self._pump: Pump | None = None
        self._pump_thread: threading.Thread | None = None
        self._events_thread: threading.Thread | None = None
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._confirmed: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._t0 = 0.0
        self._wav_path: Path | None = None
        self._journal: Journal | None = None
        self._saved = False

    def __repr__(self) -> str:
        return (
            f"<Transcriber {self.source.description} -> {self.service_name} "
            f"state={self.state} turns={len(self.session)}>"
        )

    # -- what it reports (written by the pump thread alone once it runs) -----------------------

    @property
    def state(self) -> str:
        """The stage (``connecting``, ``streaming``, ``reconnecting``, ``stopped`` ...)."""
        pump = self._pump
        return self._state if pump is None or self._error is not None else pump.state

    @property
    def error(self) -> NbscribeError | None:
        """The error that ended the session early, if one did."""
        pump = self._pump
        return self._error or (pump.error if pump is not None else None)

    @property
    def reconnects(self) -> int:
        """How many times a lost connection was replaced."""
        return self._pump.reconnects if self._pump is not None else 0

    @property
    def client(self) -> StreamingClient | None:
        """The current connection, if there is one."""
        return self._pump.client if self._pump is not None else None

    @property
    def uses_local_server(self) -> bool:
        """Whether this transcriber streams to nbscribe's local server."""
        return self.service.local

    @property
    def service_name(self) -> str:
        """A short name of where audio goes (never containing a key)."""
        return self.service.describe()

    @property
    def audio_path(self) -> Path | None:
        """The WAV file of the audio sent so far (valid while it grows)."""
        return self._wav_path

    @property
    def first_audio_at(self) -> float | None:
        """``time.monotonic()`` when the first audio frame was sent (the stream's time zero)."""
        return self._pump.first_sent if self._pump is not None else None

    def stats(self) -> Stats:
        """Return a snapshot of progress (safe to call from any thread)."""
        pump = self._pump
        return Stats(
            state=self.state,
            elapsed=time.monotonic() - self._t0 if self._t0 else 0.0,
            audio_seconds=pump.audio_seconds if pump else 0.0,
            bytes_sent=pump.bytes_sent if pump else 0,
            level_dbfs=pump.level if pump else -120.0,
            overflows=self.source.overflows,
        )

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
        if self._events_thread is not None:
            raise ConfigError("this transcriber was already started; create a new one")
        self._t0 = time.monotonic()
        self._state = "connecting"
        folder = self.out_dir or Path(tempfile.mkdtemp(prefix="nbscribe-"))
        self._wav_path = folder / "audio.wav"
        # The journal is open, and its writer running, before the first event can arrive.
        self._journal = Journal(folder / JOURNAL_NAME)
        dispatcher = Dispatcher(self.session, self._journal, self._events, self._listeners)
        self._events_thread = threading.Thread(target=dispatcher.run, name="nbscribe-events",
                                               daemon=True)
        self._events_thread.start()
        pump = Pump(self.source, self.params, self.outbox, self.policy, self._new_client,
                    self._events, self._confirmed, self._wav_path, self.terminate_timeout,
                    stage=self.stage)
        try:
            self.service.start(fast=not self.source.realtime)
            self.session.metadata.update(source=self.source.description,
                                         service=self.service_name,
                                         params=self.params.to_dict(),
                                         audio_file=str(self._wav_path))
            self.session.audio_path = self._wav_path
            self._journal.meta(**self.session.metadata)
            pump.connect(replay=False)
        except BaseException as exc:
            self._state = "error"
            if isinstance(exc, NbscribeError):
                self._error = exc
            self._events.put(END)
            self._join(time.monotonic() + 5.0)
            self._stop_own_service()
            raise
        opened = threading.Event()
        self._pump = pump
        self._pump_thread = threading.Thread(target=pump.run, args=(opened,),
                                             name="nbscribe-pump", daemon=True)
        self._pump_thread.start()
        opened.wait()
        if pump.error is not None and pump.state == "error":
            self._join(time.monotonic() + self.stop_timeout)
            self._stop_own_service()
            raise pump.error
        return self

    def _new_client(self, on_event: Callable[[Event], None]) -> StreamingClient:
        """Make an unconnected client for the next server session (the pump connects it)."""
        api_key, token = self.service.credentials()
        return StreamingClient(
            self.service.url, self.params, api_key=api_key, token=token, on_event=on_event,
            connect_timeout=self.connect_timeout, terminate_timeout=self.terminate_timeout,
            ping_interval=self.ping_interval, liveness_timeout=self.liveness_timeout,
            send_timeout=self.send_timeout, connector=self._connector,
        )

    # -- stopping -----------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source has ended and the session is closed; return whether it has."""
        if self._events_thread is None:
            return False
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
        pump = self._pump
        if pump is not None:
            if pump.deadline is None or deadline < pump.deadline:
                pump.deadline = deadline
            pump.stop_event.set()

    def finish_stop(self, deadline: float, *, save: bool = True) -> bool:
        """Join the threads by `deadline`, stop an own server, save once; return if all ended.

        `deadline` is a ``time.monotonic()`` reading; ``save=False`` leaves saving to the caller
        (a `MultiTranscriber` saves its sources with the merged tables).
        """
        ended = self._join(deadline)
        run_all(self._stop_own_service, self._save_once if ended and save else None)
        if not ended:
            logger.warning("the session is not saved: a thread is still running (a listener "
                           "that blocks?); the journal in %s has every event",
                           self._wav_path.parent if self._wav_path else "the output folder")
        return ended

    def _save_once(self) -> None:
        if self.out_dir is not None and self._pump is not None and not self._saved:
            self._saved = True
            self.session.save(self.out_dir)

    def _join(self, deadline: float) -> bool:
        threads = [t for t in (self._pump_thread, self._events_thread) if t is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            logger.warning("%s did not end in time", ", ".join(alive))
        return not alive

    def _stop_own_service(self) -> None:
        if self._owns_service:
            self.service.stop()

    def raise_for_error(self) -> None:
        """Raise the error that ended the session early, if there was one."""
        if self.error is not None:
            raise self.error

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
