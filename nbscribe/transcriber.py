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

import dataclasses
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import StreamingClient, resolve_api_key
from .convert import Converter
from .errors import ConfigError, NbscribeError, StreamError
from .events import Event
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
    token : str, optional
        A temporary token instead of a key.
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
    **param_kwargs
        Connection parameters by name (see `StreamingParams`).
    """

    def __init__(
        self,
        source: AudioSource,
        *,
        url: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        local: bool | None = None,
        params: StreamingParams | None = None,
        out_dir: str | Path | None = None,
        frame_ms: int = 50,
        connect_timeout: float = 10.0,
        terminate_timeout: float = 5.0,
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
        self._first_sent: float | None = None
        self._level = -120.0
        self._lock = threading.Lock()

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
            url = self._resolve_url()
            self.client = StreamingClient(
                url,
                self.params,
                api_key=None if self.uses_local_server else self._api_key,
                token=None if self.uses_local_server else self._token,
                on_event=self._on_event,
                connect_timeout=self.connect_timeout,
                terminate_timeout=self.terminate_timeout,
            )
            self.client.connect()
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

    def _on_event(self, event: Event) -> None:
        self.session.apply(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a transcriber listener raised; carrying on")

    def _pump_main(self, opened: threading.Event) -> None:
        source, client = self.source, self.client
        assert client is not None
        wav: WavWriter | None = None
        try:
            try:
                source.start()
                self.state = "streaming"
            except NbscribeError as exc:
                self.error = exc
                self.state = "error"
                client.close(terminate=False)
                return
            finally:
                opened.set()
            conv = Converter(source.samplerate, source.channels, self.params.sample_rate,
                             self.frame_ms)
            wav = WavWriter(self._wav_path, self.params.sample_rate)
            while not self._stop.is_set():
                block = source.read(timeout=0.1)
                if block is None:
                    if source.finished:
                        break
                    continue
                self._send(conv.push(block), wav, client)
                self._level = conv.level
                if client.error is not None:
                    break
            if source.error:
                logger.warning("%s", source.error)
                self.error = self.error or StreamError(source.error)
            source.close()
            if client.error is None:
                self._send(conv.flush(), wav, client)
        except StreamError as exc:
            self.error = self.error or exc
        except Exception as exc:
            logger.exception("the audio pump failed")
            self.error = self.error or StreamError(f"the audio pump failed: {exc!r}")
        finally:
            source.close()
            if wav is not None:
                wav.close()
            client.close(terminate=client.error is None)
            if client.error is not None:
                self.error = self.error or client.error
            self.state = "error" if self.error else "stopped"
            self._finished.set()

    def _send(self, frames: list[bytes], wav: WavWriter, client: StreamingClient) -> None:
        paced = getattr(self.source, "realtime", True)
        for frame in frames:
            if self._first_sent is None:
                self._first_sent = time.monotonic()
            if paced:
                # Never ahead of real time, even for the resampler's tail at the end: frame i
                # leaves no earlier than i frame-durations after the first one.
                wait = self._first_sent + wav.seconds - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            wav.write(frame)  # to disk first: nothing captured is lost
            if client.error is None:
                client.send_audio(frame)
        self.session.audio_seconds = wav.seconds

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
        client = self.client
        return Stats(
            state=self.state,
            elapsed=time.monotonic() - self._t0 if self._t0 else 0.0,
            audio_seconds=self.session.audio_seconds,
            bytes_sent=client.bytes_sent if client else 0,
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
