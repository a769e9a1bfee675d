"""Input devices: list them, recognise loopback devices, find one by name, explain setup per OS.

sounddevice (and so PortAudio) is imported only when a function here needs it, so the rest of
nbscribe works on machines without PortAudio.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import sys
from types import ModuleType

from .errors import DeviceNotFoundError, PortAudioMissingError

__all__ = [
    "DeviceInfo",
    "find_device",
    "is_loopback_name",
    "list_devices",
    "loopback_setup_hint",
    "sounddevice_module",
]

logger = logging.getLogger(__name__)

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
        sounddevice._terminate()
        sounddevice._initialize()
    return sounddevice


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
    samplerate : float
        Its default sample rate.
    is_loopback : bool
        Whether the name looks like a loopback device (BlackHole, VB-Cable, a ``.monitor`` ...).
    """

    name: str
    index: int | None
    hostapi: str
    channels: int
    samplerate: float
    is_loopback: bool

    def __str__(self) -> str:
        mark = "loopback" if self.is_loopback else "input"
        where = f"[{self.index}]" if self.index is not None else "[pulse]"
        return (
            f"{where} {self.name} ({self.hostapi}, {self.channels} ch, "
            f"{self.samplerate:g} Hz, {mark})"
        )


def is_loopback_name(name: str) -> bool:
    """Tell whether a device name looks like a loopback (system audio) input."""
    low = name.lower()
    return any(marker in low for marker in _LOOPBACK_MARKERS)


def _pulse_sources() -> list[DeviceInfo]:
    """PulseAudio/PipeWire sources, found with ``pactl`` (Linux); empty when unavailable."""
    if not sys.platform.startswith("linux") or not shutil.which("pactl"):
        return []
    try:
        out = subprocess.run(
            ["pactl", "list", "short", "sources"],
            capture_output=True,
            text=True,
            timeout=3,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    sources = []
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) < 4:
            continue
        name, spec = cols[1], cols[3]
        channels, rate = 2, 48000.0
        for token in spec.split():
            if token.endswith("ch") and token[:-2].isdigit():
                channels = int(token[:-2])
            elif token.endswith("Hz") and token[:-2].isdigit():
                rate = float(token[:-2])
        sources.append(DeviceInfo(name, None, "PulseAudio", channels, rate, is_loopback_name(name)))
    return sources


def list_devices(refresh: bool = True) -> list[DeviceInfo]:
    """List audio inputs, loopback devices first, duplicates collapsed.

    On Linux, PulseAudio/PipeWire sources (including the ``.monitor`` of each output, which
    carries system audio) are listed too when ``pactl`` is available.

    Parameters
    ----------
    refresh : bool
        Re-scan devices (PortAudio otherwise keeps the list from its first start).
    """
    sd = sounddevice_module(refresh=refresh)
    seen: set[tuple[str, int]] = set()
    found: list[DeviceInfo] = []
    for dev in sd.query_devices():
        if dev["max_input_channels"] <= 0:
            continue
        key = (dev["name"], dev["max_input_channels"])
        if key in seen:
            continue
        seen.add(key)
        hostapi = sd.query_hostapis(dev["hostapi"])["name"]
        found.append(
            DeviceInfo(
                name=dev["name"],
                index=dev["index"],
                hostapi=hostapi,
                channels=int(dev["max_input_channels"]),
                samplerate=float(dev["default_samplerate"]),
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

