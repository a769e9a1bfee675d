"""PulseAudio/PipeWire sources through libpulse (`pulsectl`): list them, record one by name.

A named source (such as ``"alsa_output.pci-0000_00_1f.3.analog-stereo.monitor"``, which carries
what that output plays) is recorded through PortAudio's ``pulse`` device, which records the
*default* source. `PulseCapture` then finds the source-output PulseAudio made for that stream
and moves it to the named source, and later checks that it stays there.

Why not the alternatives:

- The ``PULSE_SOURCE`` environment variable (what nbscribe used before) is process-wide: any
  other thread, or a child process started meanwhile, sees it too.
- ``soundcard`` records a named source directly through libpulse, without a move. But it has no
  callback API (a blocking ``record()``, so one more thread per capture or a polling loop), it
  connects to PulseAudio when it is imported and runs its own mainloop thread, it would be a
  second audio backend for Linux only beside PortAudio (which every OS uses), and it does not
  tell which source a stream is really recording, which is needed to notice PulseAudio moving
  it (`PulseCapture.check`). pulsectl is a thin ctypes binding to libpulse's introspection API
  with no thread of its own, so the capture path stays PortAudio's on every OS.

A move made by a client is remembered by PulseAudio's ``module-stream-restore`` (PipeWire's
pulse server too) for every later stream of the same application name ("ALSA plug-in
[python3.x]"): every ALSA capture from Python would then start on that source. `PulseCapture`
puts the remembered entry back as it was right after the move.

pulsectl is imported only when needed; without it (or without a server) PulseAudio sources are
simply not listed, and recording one by name raises `AudioError` saying why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Any

from .errors import AudioError

__all__ = ["PulseCapture", "PulseSource", "PulseUnavailable", "list_sources"]

logger = logging.getLogger(__name__)

_CLIENT_NAME = "nbscribe"


class PulseUnavailable(Exception):
    """pulsectl is not installed, or no PulseAudio/PipeWire server answers."""


@dataclasses.dataclass(frozen=True)
class PulseSource:
    """A PulseAudio source as listed by the server.

    Attributes
    ----------
    name : str
        Its name (what ``pactl list short sources`` prints).
    index : int
        The server's index for it (valid while it exists).
    channels : int
        Its channel count.
    sample_rate : float
        Its sample rate.
    description : str
        The human-readable description.
    """

    name: str
    index: int
    channels: int
    sample_rate: float
    description: str


def connect() -> Any:
    """Connect to the PulseAudio (or PipeWire pulse) server, never spawning one.

    Returns
    -------
    pulsectl.Pulse
        An open connection; close it. It has no thread: use it from one thread.

    Raises
    ------
    PulseUnavailable
        pulsectl is missing (or this is not Linux), or no server answers.
    """
    if not sys.platform.startswith("linux"):
        raise PulseUnavailable("PulseAudio sources are recorded by name only on Linux")
    try:
        import pulsectl
    except ImportError:
        raise PulseUnavailable("the pulsectl package is not installed (pip install pulsectl)"
                               ) from None
    except OSError as exc:  # libpulse.so.0 missing
        raise PulseUnavailable(f"libpulse cannot be loaded ({exc})") from None
    pulse = pulsectl.Pulse(_CLIENT_NAME, connect=False)
    try:
        # No timeout=: pulsectl 24.12 then always waits the whole timeout, even once
        # connected. Without one it returns as soon as the server answers or refuses; only a
        # frozen server would block, and PortAudio's pulse device would block on it too.
        pulse.connect(autospawn=False)
    except pulsectl.PulseError as exc:
        pulse.close()
        raise PulseUnavailable(f"no PulseAudio/PipeWire server answers ({exc})") from None
    return pulse


def list_sources() -> list[PulseSource]:
    """List the server's sources, monitors of outputs included.

    Raises
    ------
    PulseUnavailable
        See `connect`.
    """
    pulse = connect()
    import pulsectl

    try:
        return [PulseSource(s.name, int(s.index), int(s.channel_count),
                            float(s.sample_spec.rate), s.description or s.name)
                for s in pulse.source_list()]
    except pulsectl.PulseError as exc:
        raise PulseUnavailable(f"the PulseAudio server stopped answering ({exc})") from None
    finally:
        pulse.close()


def _restore_key(proplist: dict[str, str]) -> str | None:
    """Return the name module-stream-restore files a source-output's chosen source under."""
    for prop, kind in (("media.role", "media-role"), ("application.id", "application-id"),
                       ("application.name", "application-name"), ("media.name", "media-name")):
        if proplist.get(prop):
            return f"source-output-by-{kind}:{proplist[prop]}"
    return None


class PulseCapture:
    """Put a PortAudio ``pulse`` input stream on a named source, and watch that it stays there.

    Used by `nbscribe.DeviceSource` from its owner thread only (a pulsectl connection is not
    thread-safe). The caller holds nbscribe's PortAudio lock from `before_open` to `attach`, so
    no other nbscribe stream opens in between; a stream opened meanwhile by other code of this
    process, outside nbscribe, makes the stream ambiguous and `attach` refuses to guess.

    Parameters
    ----------
    source : str
        The PulseAudio source to record.

    Raises
    ------
    AudioError
        pulsectl or the server is unavailable, or there is no such source.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.index: int | None = None  # our source-output, once attached
        try:
            self._pulse = connect()
        except PulseUnavailable as exc:
            raise AudioError(
                f"cannot record the PulseAudio source {source!r} by name: {exc}. Install "
                "pulsectl, or record the 'pulse' device after making it the default source "
                f"(`pactl set-default-source {source}`)."
            ) from None
        import pulsectl

        try:
            self._target = self._pulse.get_source_by_name(source)
        except pulsectl.PulseIndexError:
            self.close()
            raise AudioError(f"the PulseAudio source {source!r} no longer exists (its output "
                             "device was removed?); list the inputs again") from None
        self._before: set[int] = set()

    def _ours(self) -> dict[int, Any]:
        pid = str(os.getpid())
        return {so.index: so for so in self._pulse.source_output_list()
                if so.proplist.get("application.process.id") == pid}

    def before_open(self) -> None:
        """Note this process's source-outputs before the stream is opened."""
        self._before = set(self._ours())

    def attach(self, timeout: float = 2.0) -> None:
        """Find the source-output of the stream just started and move it to the named source.

        Raises
        ------
        AudioError
            The stream cannot be identified or moved (the message says why).
        """
        import pulsectl

        deadline = time.monotonic() + timeout
        try:
            while True:
                new = {i: so for i, so in self._ours().items() if i not in self._before}
                if new or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if len(new) != 1:
                raise AudioError(
                    f"cannot record {self.source!r}: "
                    + ("PulseAudio shows no stream for the capture nbscribe just opened"
                       if not new else
                       f"{len(new)} new PulseAudio streams of this process appeared at once, "
                       "so nbscribe cannot tell which one is its capture")
                    + "; try again")
            (index, so), = new.items()
            key = _restore_key(so.proplist)
            remembered = self._remembered(key)
            if so.source != self._target.index:
                self._pulse.source_output_move(index, self._target.index)
                self._forget_move(key, remembered)
            if self._pulse.source_output_info(index).source != self._target.index:
                raise AudioError(f"PulseAudio did not move the capture to {self.source!r}")
        except pulsectl.PulseIndexError:
            raise AudioError(f"the PulseAudio source {self.source!r} or the capture's stream "
                             "vanished while it was being opened; try again") from None
        except pulsectl.PulseError as exc:
            raise AudioError(f"cannot move the capture to the PulseAudio source "
                             f"{self.source!r}: {exc}") from None
        self.index = index
        logger.debug("PulseAudio source-output %d moved to %s", index, self.source)

    def _remembered(self, key: str | None) -> Any:
        if key is None:
            return None
        try:
            return next((e for e in self._pulse.stream_restore_list() if e.name == key), False)
        except Exception as exc:  # no module-stream-restore: nothing will be remembered
            logger.debug("no stream-restore database (%s)", exc)
            return None

    def _forget_move(self, key: str | None, remembered: Any) -> None:
        """Put module-stream-restore's entry for our application back as it was."""
        if key is None or remembered is None:
            return
        try:
            if remembered is False:
                self._pulse.stream_restore_delete(key)
            else:
                self._pulse.stream_restore_write(remembered, mode="replace")
        except Exception as exc:
            logger.warning("PulseAudio may now start new captures of this program on %s "
                           "(could not undo its stream-restore entry: %s)", self.source, exc)

    def check(self) -> tuple[str, bool] | None:
        """Say what went wrong if the stream no longer records the named source, else ``None``.

        One round trip to the server (well under a millisecond on a local one).

        Returns
        -------
        tuple of (str, bool) or None
            What happened, in words, and whether the stream now records another source (so
            that what it delivers is no longer the named source's audio).
        """
        import pulsectl

        if self.index is None:
            return None
        gone = (f"the PulseAudio source {self.source} disappeared (its output device was removed "
                "or turned off)")
        try:
            now_on = self._pulse.source_output_info(self.index).source
            if now_on == self._target.index:
                return None
            try:
                other = self._pulse.source_info(now_on).name
            except pulsectl.PulseIndexError:
                other = f"source #{now_on}"
            if other == self.source:  # the same source, re-created under a new index
                return None
            still_there = self._exists()
        except pulsectl.PulseIndexError:
            return f"{gone} and PulseAudio ended the capture.", False
        except pulsectl.PulseError as exc:
            return f"the connection to the PulseAudio server was lost ({exc}).", False
        stopped = f"nbscribe stopped it so that {other} is not transcribed as {self.source}."
        if still_there:
            return (f"PulseAudio moved this capture from {self.source} to {other} (another "
                    f"program, such as pavucontrol, moved it); {stopped}"), True
        return f"{gone} and PulseAudio moved this capture to {other}; {stopped}", True

    def _exists(self) -> bool:
        import pulsectl

        try:
            self._pulse.get_source_by_name(self.source)
        except pulsectl.PulseIndexError:
            return False
        return True

    def close(self) -> None:
        """Close the connection to the server (idempotent)."""
        pulse, self._pulse = getattr(self, "_pulse", None), None
        if pulse is not None:
            pulse.close()
