"""Input devices: list them, recognise loopback devices, find one by name, explain setup per OS.

sounddevice (and so PortAudio) is imported only when a function here needs it, so the rest of
nbscribe works on machines without PortAudio.

PortAudio is one per process, and it lists devices only when it starts: the only way to see a
device plugged in since is to terminate and re-initialise it, which closes every stream it has
open. So every stream nbscribe opens goes through `open_stream` and `close_stream`, and a
re-scan (`list_devices(refresh=True)`, which the panel's refresh button, `find_device` and so
every new `DeviceSource` and `check_routing` use) re-initialises PortAudio only while none is
open. While captures run, PortAudio's device list stays as it was (its indices stay valid for
this process) and PulseAudio/PipeWire sources, which are asked from the server, are fresh.

Enumerating in a child process instead was rejected: its device indices belong to the child's
PortAudio and need not match this process's (that is the point of a re-scan), so a device it
found could not be opened here by index until PortAudio is re-initialised here anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from .errors import AudioError, DeviceNotFoundError, PortAudioMissingError

__all__ = [
    "DeviceInfo",
    "close_stream",
    "find_device",
    "is_loopback_name",
    "list_devices",
    "loopback_setup_hint",
    "open_stream",
    "open_stream_count",
    "portaudio_lock",
    "resolve_index",
    "sounddevice_module",
]

logger = logging.getLogger(__name__)

_Stream = TypeVar("_Stream")

# Process-wide because PortAudio is: orders re-scans against opening and querying, and holds
# the streams nbscribe has open (strong references: an unclosed stream still counts).
_PORTAUDIO_LOCK = threading.RLock()
_OPEN_STREAMS: set[Any] = set()

_LOOPBACK_MARKERS = (
    "blackhole",
    "cable output",
    "vb-audio",
    "vb-cable",
    "virtual audio cable",
    "line 1 (virtual",
    ".monitor",
    "monitor of",
    "stereo mix",
    "what u hear",
    "loopback",
    "soundflower",
)


def sounddevice_module(refresh: bool = False) -> ModuleType:
    """Import sounddevice, turning a missing PortAudio into an error that says what to install.

    Parameters
    ----------
    refresh : bool
        Re-initialise PortAudio so that devices added since the first import are listed
        (PortAudio lists devices once, when it starts).
    """
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError('PortAudio library not found')
        raise PortAudioMissingError(
            "the PortAudio library is not installed, so sound devices cannot be used "
            f"({exc}). Install it: Debian/Ubuntu `sudo apt-get install libportaudio2`, "
            "Fedora `sudo dnf install portaudio`, macOS `brew install portaudio`, conda "
            "`conda install -c conda-forge portaudio`. Files and arrays work without it."
        ) from None
    if refresh:
        _rescan(sounddevice)
    return sounddevice


def portaudio_lock() -> threading.RLock:
    """Return the lock that orders PortAudio re-scans against opening streams (re-entrant)."""
    return _PORTAUDIO_LOCK


def open_stream(factory: Callable[[], _Stream]) -> _Stream:
    """Open a PortAudio stream with `factory` and count it as open until `close_stream`.

    While any counted stream is open, re-scans leave PortAudio alone.
    """
    with _PORTAUDIO_LOCK:
        stream = factory()
        _OPEN_STREAMS.add(stream)
    return stream


def close_stream(stream: Any) -> None:
    """Stop and close a stream from `open_stream`, then stop counting it."""
    try:
        stream.stop()
    finally:
        try:
            stream.close()
        finally:
            with _PORTAUDIO_LOCK:
                if getattr(stream, "closed", True):
                    _OPEN_STREAMS.discard(stream)


def open_stream_count(sd: ModuleType | None = None) -> int:
    """Count open PortAudio streams: nbscribe's, and sounddevice's ``play``/``rec`` stream."""
    with _PORTAUDIO_LOCK:
        _OPEN_STREAMS.difference_update([s for s in _OPEN_STREAMS if s.closed])
        count = len(_OPEN_STREAMS)
        if sd is not None:
            try:
                count += not sd.get_stream().closed
            except RuntimeError:  # sounddevice has no play/rec stream
                pass
        return count


def _rescan(sd: ModuleType) -> bool:
    """Re-initialise PortAudio so that it lists devices afresh, unless a stream is open."""
    with _PORTAUDIO_LOCK:
        count = open_stream_count(sd)
        if count:
            logger.info("PortAudio's device list was not re-scanned: %d audio stream(s) are "
                        "open and a re-scan would close them; it will be once they end "
                        "(PulseAudio sources are listed afresh)", count)
            return False
        sd._terminate()
        sd._initialize()
        return True


def resolve_index(sd: ModuleType, info: DeviceInfo) -> int:
    """Return `info`'s PortAudio index now, found again by name if a re-scan moved it.

    Call it holding `portaudio_lock` and open the stream before releasing it.

    Raises
    ------
    AudioError
        The device is no longer listed.
    """
    if info.index is None:
        raise ValueError(f"{info.name} is a PulseAudio source, not a PortAudio device")
    devices = sd.query_devices()
    if info.index < len(devices) and devices[info.index]["name"] == info.name:
        return info.index
    for dev in devices:
        if dev["name"] == info.name and dev["max_input_channels"] > 0:
            return int(dev["index"])
    raise AudioError(f"the input device {info.name} is no longer there (unplugged?); "
                     "list the inputs again")


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """An audio input.

    Attributes
    ----------
    name : str
        The name to pass as ``device=``.
    index : int or None
        PortAudio's device index; ``None`` for a PulseAudio source reached through PortAudio's
        ``pulse`` device.
    hostapi : str
        ``"Core Audio"``, ``"Windows WASAPI"``, ``"ALSA"``, ``"PulseAudio"`` ...
    channels : int
        Input channels the device offers.
    sample_rate : float
        Its default sample rate.
    is_loopback : bool
        Whether the name looks like a loopback device (BlackHole, VB-Cable, a ``.monitor`` ...).
    """

    name: str
    index: int | None
    hostapi: str
    channels: int
    sample_rate: float
    is_loopback: bool

    def __str__(self) -> str:
        mark = "loopback" if self.is_loopback else "input"
        where = f"[{self.index}]" if self.index is not None else "[pulse]"
        return (
            f"{where} {self.name} ({self.hostapi}, {self.channels} ch, "
            f"{self.sample_rate:g} Hz, {mark})"
        )


def is_loopback_name(name: str) -> bool:
    """Tell whether a device name looks like a loopback (system audio) input."""
    low = name.lower()
    return any(marker in low for marker in _LOOPBACK_MARKERS)


def _pulse_sources() -> list[DeviceInfo]:
    """PulseAudio/PipeWire sources, asked from the server (Linux); empty when unavailable."""
    from .pulse import PulseUnavailable, list_sources

    try:
        sources = list_sources()
    except PulseUnavailable as exc:
        logger.log(logging.WARNING if "pulsectl" in str(exc) else logging.DEBUG,
                   "PulseAudio sources are not listed: %s", exc)
        return []
    return [DeviceInfo(s.name, None, "PulseAudio", s.channels, s.sample_rate,
                       is_loopback_name(s.name)) for s in sources]


def list_devices(refresh: bool = True) -> list[DeviceInfo]:
    """List audio inputs, loopback devices first, duplicates collapsed.

    On Linux, PulseAudio/PipeWire sources (including the ``.monitor`` of each output, which
    carries system audio) are listed too, asked from the server with pulsectl.

    Parameters
    ----------
    refresh : bool
        Re-scan devices (PortAudio otherwise keeps the list from its first start). Open streams
        are never disturbed: while one is open PortAudio is not re-scanned (see the module's
        docstring), and only the PulseAudio sources are fresh.
    """
    sd = sounddevice_module()
    with _PORTAUDIO_LOCK:
        if refresh:
            _rescan(sd)
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    seen: set[tuple[str, int]] = set()
    found: list[DeviceInfo] = []
    for dev in devices:
        if dev["max_input_channels"] <= 0:
            continue
        key = (dev["name"], dev["max_input_channels"])
        if key in seen:
            continue
        seen.add(key)
        hostapi = hostapis[dev["hostapi"]]["name"]
        found.append(
            DeviceInfo(
                name=dev["name"],
                index=dev["index"],
                hostapi=hostapi,
                channels=int(dev["max_input_channels"]),
                sample_rate=float(dev["default_samplerate"]),
                is_loopback=is_loopback_name(dev["name"]),
            )
        )
    if any(d.name == "pulse" for d in found):
        names = {d.name for d in found}
        found += [s for s in _pulse_sources() if s.name not in names]
    return sorted(found, key=lambda d: not d.is_loopback)


def find_device(name: str | int | None) -> DeviceInfo:
    """Find one input device by index, exact name or case-insensitive substring.

    Parameters
    ----------
    name : str, int or None
        ``None`` picks the system's default input.

    Raises
    ------
    DeviceNotFoundError
        No device or several match; the message lists the inputs there are.
    """
    devices = list_devices()
    if name is None:
        sd = sounddevice_module()
        default = sd.default.device[0]
        if default is None or default < 0:
            raise DeviceNotFoundError(_no_match("the default input", devices))
        name = int(default)
    if isinstance(name, int):
        matches = [d for d in devices if d.index == name]
    else:
        exact = [d for d in devices if d.name == name]
        matches = exact or [d for d in devices if name.lower() in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceNotFoundError(_no_match(repr(name), devices))
    listing = "\n  ".join(str(d) for d in matches)
    raise DeviceNotFoundError(
        f"{len(matches)} input devices match {name!r}; use the full name or the index:\n  "
        f"{listing}"
    )


def _no_match(what: str, devices: list[DeviceInfo]) -> str:
    if not devices:
        return (
            f"no input device matches {what}: no input devices were found at all. "
            + loopback_setup_hint()
        )
    listing = "\n  ".join(str(d) for d in devices)
    text = f"no input device matches {what}. Inputs found:\n  {listing}"
    if not any(d.is_loopback for d in devices):
        text += "\n" + loopback_setup_hint()
    return text


def loopback_setup_hint(platform: str | None = None) -> str:
    """Say in one line how to get a loopback device for system audio on this OS."""
    platform = platform or sys.platform
    if platform == "darwin":
        return (
            "To capture system audio on macOS, install BlackHole (`brew install blackhole-2ch`), "
            "create a Multi-Output Device with BlackHole and your speakers in Audio MIDI Setup, "
            "make it the output, then capture from 'BlackHole 2ch'."
        )
    if platform.startswith("win"):
        return (
            "To capture system audio on Windows, install VB-Cable (vb-audio.com/Cable), make "
            "'CABLE Input' the playback device (listen to it via Sound > Recording > CABLE "
            "Output > Listen), then capture from 'CABLE Output'."
        )
    return (
        "To capture system audio on Linux, capture the monitor of your output: "
        "`pactl list short sources | grep monitor`, then pass that name (e.g. "
        "'alsa_output...analog-stereo.monitor') as the device."
    )

