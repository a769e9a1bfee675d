"""The pump: the one thread that moves audio from a source to a connection.

It owns the source, the converter, the WAV writer, the `Outbox`, the `ReconnectPolicy` and the
lifecycle of every connection, and it alone writes the fields a `Transcriber` reports (`state`,
`error`, `reconnects`, the counters). It hands the session's facts (gaps, interruptions, audio
seconds) to the events thread through the events queue, and takes the positions confirmed by
final turns from the confirmation queue: no state is shared between threads but those queues.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import StreamingClient
from .convert import Converter
from .echo import FrameStage
from .errors import AuthError, ConfigError, ConnectError, NbscribeError, StreamError
from .events import Event, Turn
from .outbox import Outbox
from .params import StreamingParams
from .policy import ReconnectPolicy
from .sources import AudioSource
from .wavfile import WavWriter

__all__ = ["END", "Pump", "run_all"]

logger = logging.getLogger(__name__)

END = object()  # tells the events thread that no more events will come

#: ``new_client(on_event) -> StreamingClient``: a client for the next server session, not yet
#: connected (the transcriber knows the service, the parameters and the timeouts)
NewClient = Callable[[Callable[[Event], None]], StreamingClient]


class Pump:
    """Capture, write, send, reconnect and close: the body of the ``nbscribe-pump`` thread.

    Parameters
    ----------
    source : AudioSource
        Opened, read and closed here.
    params : StreamingParams
        The service's sample rate.
    outbox : Outbox
        What was captured, sent and confirmed.
    policy : ReconnectPolicy
        Backoff and rollover.
    new_client : callable
        Makes the client of the next server session (see `NewClient`).
    events : queue.SimpleQueue
        Where the session's facts go (to the events thread).
    confirmed : queue.SimpleQueue
        Where the readers put the positions (ms) final turns confirm.
    wav_path : Path
        The WAV file to write.
    terminate_timeout : float
        How long an old session may take to finish after its ``Terminate``.
    stage : FrameStage, optional
        A step between the converter and the WAV writer (echo cancellation,
        `nbscribe.echo`): it gets each frame with its capture time and gives back the frames
        to write and send.
    """

    def __init__(self, source: AudioSource, params: StreamingParams, outbox: Outbox,
                 policy: ReconnectPolicy, new_client: NewClient, events: queue.SimpleQueue[Any],
                 confirmed: queue.SimpleQueue[int], wav_path: Path,
                 terminate_timeout: float, stage: FrameStage | None = None) -> None:
        self.source = source
        self.params = params
        self.outbox = outbox
        self.policy = policy
        self._new_client = new_client
        self._connections = 0
        self._events = events
        self._confirmed = confirmed
        self.wav_path = wav_path
        self.terminate_timeout = terminate_timeout
        self.stage = stage
        self._frames = 0  # frames out of the converter
        self._base: float | None = None  # capture time of the first frame
        self.stop_event = threading.Event()
        self.deadline: float | None = None  # written by stop() before stop_event is set
        # what the transcriber reports; written by this thread only
        self.state = "connecting"
        self.error: NbscribeError | None = None
        self.client: StreamingClient | None = None
        self.reconnects = 0
        self.level = -120.0
        self.audio_seconds = 0.0
        self.bytes_sent = 0
        self.first_sent: float | None = None
        self._retiring: list[tuple[StreamingClient, float]] = []
        self._send_terminate = True

    # -- the thread ---------------------------------------------------------------------------

    def run(self, opened: threading.Event) -> None:
        """Stream until the source ends or `stop_event` is set; then drain and close."""
        source = self.source
        wav: WavWriter | None = None
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
            conv = Converter(source.sample_rate, source.channels, self.params.sample_rate,
                             self.outbox.frame_ms)
            wav = WavWriter(self.wav_path, self.params.sample_rate)
            self._loop(conv, wav)
            if source.error:
                logger.warning("%s", source.error)
                self.error = self.error or StreamError(source.error)
            source.close()
            for frame in conv.flush():
                self._stage(frame, wav)
            if self.stage is not None:
                stage, self.stage = self.stage, None
                for frame in stage.close():
                    self._capture(frame, wav)
            self._drain()
        except Exception as exc:
            logger.exception("the audio pump failed")
            self.error = self.error or StreamError(f"the audio pump failed: {exc!r}")
        finally:
            if self.stage is not None:  # it failed before the end: tell the stage all the same
                run_all(self.stage.close)
            run_all(source.close,
                    wav.close if wav is not None else None,
                    self._close_connections,
                    lambda: self._post_gaps(close=True))
            self._events.put(("audio", self.audio_seconds))
            self.state = "error" if self.error else "stopped"
            self._events.put(END)

    def _loop(self, conv: Converter, wav: WavWriter) -> None:
        reported = 0.0
        while not self.stop_event.is_set():
            wait = self.outbox.wait_s(time.monotonic(), self.source.realtime)
            block = self.source.read(timeout=0.1 if wait is None else min(0.1, wait + 0.001))
            if block is not None:
                if self._base is None:  # when the first block began
                    self._base = (time.monotonic() - len(block) / self.source.sample_rate
                                  if self.source.realtime else 0.0)
                for frame in conv.push(block):
                    self._stage(frame, wav)
                self.level = conv.level
                if self.audio_seconds - reported >= 1.0:
                    reported = self.audio_seconds
                    self._events.put(("audio", reported))
            elif self.source.finished:
                return
            if self.stage is not None:
                for frame in self.stage.poll():
                    self._capture(frame, wav)
            if not self._service():
                return
        self.state = "stopping"

    def _stage(self, frame: bytes, wav: WavWriter) -> None:
        """Pass a converted frame through the stage, if any, on to `_capture`."""
        if self.stage is None:
            self._capture(frame, wav)
            return
        # a source that knows when its capture began better than its first read says so (a
        # device, from its callback; its estimate tightens over the first blocks)
        began = getattr(self.source, "first_block_at", None) if self.source.realtime else None
        at = (began or self._base or 0.0) + self._frames * self.outbox.frame_ms / 1000
        self._frames += 1
        for ready in self.stage.push(frame, at):
            self._capture(ready, wav)

    def _capture(self, frame: bytes, wav: WavWriter) -> None:
        wav.write(frame)  # to disk first: nothing captured is lost
        client = self.client
        self.outbox.capture(frame, connected=client is not None and not client.finished)
        self.audio_seconds = wav.seconds
        self._post_gaps()

    def _post_gaps(self, close: bool = False) -> None:
        for start, end in self.outbox.take_gaps(close):
            logger.warning("audio from %.1f s to %.1f s could not be sent (kept in the WAV)",
                           start, end)
            self._events.put(("gap", start, end, "no connection for longer than buffer_seconds"))

    def _take_confirmations(self) -> None:
        while True:
            try:
                self.outbox.confirm(self._confirmed.get_nowait())
            except queue.Empty:
                return

    # -- keeping a connection -----------------------------------------------------------------

    def connect(self, replay: bool) -> None:
        """Open a server session whose time zero is the first frame it will get.

        With `replay`, audio sent but not covered by a final turn is sent again (the server
        that had it is gone). Runs on the caller's thread before the pump starts, then here.
        Raises what `StreamingClient.connect` raises.
        """
        self._take_confirmations()
        if replay:
            self.outbox.rewind()
        index, offset = self._connections, self.outbox.next_offset_ms()

        def post(event: Event) -> None:  # the connection's reader thread
            if isinstance(event, Turn) and event.end_of_turn and event.words:
                self._confirmed.put(offset + event.words[-1].end)  # before the event itself
            self._events.put(("event", index, offset, event))

        client = self._new_client(post)
        client.connect()
        self._connections += 1
        self.outbox.new_segment()
        self.client = client
        self.policy.connected()

    def _recoverable(self, client: StreamingClient) -> bool:
        if client.error is None:
            return client.termination is not None or self.stop_event.is_set()
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
                self.connect(replay=True)
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
        resend = (self.outbox.unsent_ms + self.outbox.unconfirmed_ms) / 1000
        at, since = self.outbox.captured_ms / 1000, self.outbox.pending_from_ms / 1000
        reason = str(client.error or "the connection closed")
        logger.warning("connection lost at %.1f s (%s); reconnecting, %.1f s of audio from "
                       "%.1f s on to send again", at, reason, resend, since)
        self._events.put(("interruption", {"at": round(at, 3), "reason": reason,
                                           "resent_from": round(since, 3),
                                           "resent_seconds": round(resend, 3)}))

    def _rollover(self) -> None:
        old = self.client
        assert old is not None
        try:
            self.connect(replay=False)  # the old session finalises what it has
        except NbscribeError as exc:
            delay = self.policy.failed(time.monotonic())
            logger.warning("could not open the next session before expiry (%s); next try in "
                           "%.1f s", exc, delay)
            return
        logger.info("rolled over to a new server session before the old one expired")
        # Never wait here: the old reader sends its Terminate, capture goes on.
        old.terminate(by_reader=True)
        self._retiring.append((old, time.monotonic() + 6 * self.terminate_timeout))

    def _retire_step(self, force: bool = False) -> None:
        if not self._retiring:
            return  # the usual case, on every round of the audio loop
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
        paced = self.source.realtime
        while (frame := self.outbox.due(time.monotonic(), paced)) is not None:
            try:
                client.send_audio(frame)
            except StreamError:
                return  # the next round notices the closed connection
            if self.first_sent is None:
                self.first_sent = time.monotonic()
            self.outbox.mark_sent()
            self.bytes_sent += len(frame)

    # -- ending -------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Send what is left after the source ended, through reconnects, within the budget."""
        natural = time.monotonic() + 30.0 + self.outbox.unsent_ms / 1000
        while time.monotonic() < min(natural, self._drain_deadline()):
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
        deadline = self.deadline
        if deadline is None:
            return float("inf")
        left = deadline - time.monotonic()
        return deadline - min(left / 2, 6 * self.terminate_timeout + 1.0)

    def _close_connections(self) -> None:
        deadline = self.deadline
        budget = None if deadline is None else max(0.0, deadline - time.monotonic() - 0.5)
        client = self.client
        if client is not None:
            client.close(terminate=self._send_terminate and client.error is None,
                         timeout=budget)
            lost = (self.outbox.unsent_ms or self.outbox.unconfirmed_ms
                    or not self._recoverable(client))
            if self.error is None and client.error is not None and lost:
                self.error = client.error
        self._retire_step(force=True)
        for old, _ in self._retiring:
            old.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def run_all(*steps: Callable[[], object] | None) -> None:
    """Run every cleanup step, even when an earlier one raises (each failure is logged)."""
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception:
            logger.exception("a cleanup step failed; carrying on with the others")
