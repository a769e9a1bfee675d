"""nbscribe: live transcription of system audio, a microphone or a file, inside Jupyter.

Audio comes from a `DeviceSource` (a loopback device such as BlackHole, VB-Cable or a PulseAudio
monitor, or a microphone), a `FileSource`, an `ArraySource` or the browser (`BrowserSource`).
A `Transcriber` streams it over AssemblyAI's v3 protocol to a `Service` (AssemblyAI, or
nbscribe's offline local server) and collects a `Session` whose ``turns`` and ``words`` are
pandas DataFrames; `MultiTranscriber` does it for several sources on one timeline, and `Panel`
is the Jupyter control panel. The building blocks (`nbscribe.client`, `nbscribe.convert`,
`nbscribe.connection`, `nbscribe.testing` ...) are importable from their modules.

>>> import nbscribe
>>> tr = nbscribe.Transcriber(nbscribe.FileSource(nbscribe.sample("beckett")))  # doctest: +SKIP
>>> session = tr.start().wait() and tr.stop()                                   # doctest: +SKIP
>>> session.turns[["start", "end", "text"]]                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import analysis
from ._version import __version__
from .devices import find_device, list_devices, loopback_setup_hint
from .errors import (
    AudioError,
    AuthError,
    ConfigError,
    ConnectError,
    DeviceNotFoundError,
    NbscribeError,
    PortAudioMissingError,
    StreamError,
)
from .events import (
    Begin,
    ErrorEvent,
    Event,
    SpeakerRevision,
    SpeechStarted,
    Termination,
    Turn,
    WarningEvent,
    Word,
)
from .journal import load_session
from .multi import MultiTranscriber
from .params import StreamingParams
from .routing import check_routing
from .service import Service
from .session import Session
from .sources import ArraySource, AudioSource, DeviceSource, FileSource
from .tokens import create_temporary_token
from .transcriber import Transcriber

__all__ = [
    "ArraySource",
    "AudioError",
    "AudioSource",
    "AuthError",
    "Begin",
    "BrowserSource",
    "ConfigError",
    "ConnectError",
    "DeviceNotFoundError",
    "DeviceSource",
    "ErrorEvent",
    "Event",
    "FileSource",
    "MultiTranscriber",
    "NbscribeError",
    "Panel",
    "PortAudioMissingError",
    "Service",
    "Session",
    "SpeakerRevision",
    "SpeechStarted",
    "StreamError",
    "StreamingParams",
    "Termination",
    "Transcriber",
    "Turn",
    "WarningEvent",
    "Word",
    "__version__",
    "analysis",
    "check_routing",
    "create_temporary_token",
    "find_device",
    "list_devices",
    "load_session",
    "loopback_setup_hint",
    "sample",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    # The panel and the browser source import ipywidgets: only when asked for (PEP 562).
    if name == "BrowserSource":
        try:
            from .browser import BrowserSource
        except ImportError as exc:
            raise ImportError(
                f"nbscribe.BrowserSource needs anywidget ({exc}): pip install 'nbscribe[widget]'"
            ) from None
        return BrowserSource
    if name == "Panel":
        try:
            from .panel.control import Panel
        except ImportError as exc:
            raise ImportError(
                f"nbscribe.Panel needs ipywidgets ({exc}): pip install 'nbscribe[widget]'"
            ) from None
        return Panel
    raise AttributeError(f"module 'nbscribe' has no attribute {name!r}")


def sample(name: str = "beckett") -> Path:
    """Return the path of a speech recording that ships with nbscribe.

    Parameters
    ----------
    name : str
        ``"beckett"`` (10 s, one speaker) or ``"endgame_nagg_nell"`` (28 s, two voices).
    """
    path = Path(__file__).with_name("samples") / f"{name}.wav"
    if not path.exists():
        names = sorted(p.stem for p in path.parent.glob("*.wav"))
        raise ValueError(f"no sample named {name!r}; there are: {', '.join(names)}")
    return path
