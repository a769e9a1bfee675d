"""The panel's form rules: its choices as a pure `PanelSettings`, and the transcriber they make.

No widgets here: the layout reads its widgets into a `PanelSettings`; `make_transcriber` turns
settings into a `Transcriber` (one source) or a `MultiTranscriber` ("You vs Others": the
microphone beside a device), or raises an error that says what to change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..devices import loopback_setup_hint
from ..errors import NbscribeError
from ..multi import MultiTranscriber
from ..recorder import Recorder
from ..service import Service
from ..sources import AudioSource, DeviceSource, FileSource
from ..transcriber import Transcriber

__all__ = ["MODELS", "PanelSettings", "make_sources", "make_transcriber", "parse_speaker_names",
           "streaming_params"]

#: The AssemblyAI models the panel offers: (label, ``speech_model``).
MODELS = [
    ("u3-rt-pro (default)", "u3-rt-pro"),
    ("universal-3-5-pro", "universal-3-5-pro"),
    ("universal-streaming-english", "universal-streaming-english"),
    ("universal-streaming-multilingual", "universal-streaming-multilingual"),
    ("whisper-rt", "whisper-rt"),
]

#: The source names of "You vs Others" (the microphone, the device).
YOU, OTHERS = "you", "others"


def parse_speaker_names(text: str) -> dict[str, str]:
    """Read ``"A=Nagg, B=Nell"`` (commas or semicolons between pairs) into a dict.

    Raises
    ------
    ValueError
        A pair without ``=``, or with an empty side; the message shows the expected form.
    """
    names: dict[str, str] = {}
    for pair in text.replace(";", ",").split(","):
        if not pair.strip():
            continue
        label, sep, name = pair.partition("=")
        if not sep or not label.strip() or not name.strip():
            raise ValueError(f"speaker names are LABEL=NAME pairs, like A=Nagg, B=Nell; "
                             f"got {pair.strip()!r}")
        names[label.strip()] = name.strip()
    return names


@dataclasses.dataclass(frozen=True)
class PanelSettings:
    """What the panel's form says, independent of any widget.

    Attributes
    ----------
    source : {"device", "file", "browser"}
        Where the audio comes from.
    file : str
        The audio file (for ``source="file"``).
    device : str
        The input device's name (for ``source="device"``).
    mic : str
        A second device transcribed as "you" beside `device` ("others"); empty for none.
    service : {"local", "assemblyai"}
        The offline local server or AssemblyAI.
    model : str
        AssemblyAI's ``speech_model``.
    keyterms : str
        Comma-separated words to recognise better.
    max_turn_silence : int
        Milliseconds of silence that end a turn.
    speaker_labels : bool
        Ask for speaker labels.
    cancel_echo : bool
        With `mic`: remove the call (what `device` captures) from the microphone, and leave
        out microphone turns that still repeat it (for calls on speakers, not headphones).
    realtime : bool
        Send files at real time; ``False`` lets the local server go as fast as it can.
    """

    source: str = "file"
    file: str = ""
    device: str = ""
    mic: str = ""
    service: str = "local"
    model: str = "u3-rt-pro"
    keyterms: str = ""
    max_turn_silence: int = 1000
    speaker_labels: bool = False
    cancel_echo: bool = True
    realtime: bool = True

    @property
    def cloud(self) -> bool:
        """Whether the audio goes to AssemblyAI."""
        return self.service == "assemblyai"


def streaming_params(settings: PanelSettings) -> dict[str, Any]:
    """Return the connection parameters the settings ask for (``StreamingParams`` keywords).

    The local server also gets ``min_turn_silence`` (at most 400 ms); AssemblyAI gets the
    chosen ``speech_model``.
    """
    params: dict[str, Any] = {"max_turn_silence": int(settings.max_turn_silence)}
    terms = [t.strip() for t in settings.keyterms.split(",") if t.strip()]
    if terms:
        params["keyterms_prompt"] = terms
    if settings.speaker_labels:
        params["speaker_labels"] = True
    if settings.cloud:
        params["speech_model"] = settings.model
    else:
        params["min_turn_silence"] = min(400, params["max_turn_silence"])
    return params


def make_sources(
    settings: PanelSettings,
    *,
    browser: AudioSource | None = None,
    open_device: Callable[[str], AudioSource] = DeviceSource,
) -> AudioSource | dict[str, AudioSource]:
    """Return the source the settings name, or ``{"you": mic, "others": device}``.

    Parameters
    ----------
    settings : PanelSettings
        The form.
    browser : AudioSource, optional
        The panel's browser source (``None`` when anywidget is missing).
    open_device : callable
        Opens a device by name (`DeviceSource`; tests pass a stand-in).

    Raises
    ------
    NbscribeError
        No device chosen, the same device twice, no browser source, a file that cannot be read.
    """
    if settings.source == "file":
        return FileSource(settings.file.strip(), realtime=settings.realtime)
    if settings.source == "browser":
        if browser is None:
            raise NbscribeError("the browser source needs anywidget: "
                                "pip install 'nbscribe[widget]'")
        return browser
    if not settings.device:
        raise NbscribeError("no input device selected. " + loopback_setup_hint())
    source = open_device(settings.device)
    if not settings.mic:
        return source
    if settings.mic == settings.device:
        raise NbscribeError("choose a different device for 'You' (your microphone)")
    return {YOU: open_device(settings.mic), OTHERS: source}


def make_transcriber(
    settings: PanelSettings,
    *,
    api_key: str | None,
    local_service: Callable[[], Service],
    browser: AudioSource | None = None,
    open_device: Callable[[str], AudioSource] = DeviceSource,
) -> Recorder:
    """Return the transcriber the settings describe (not started).

    Parameters
    ----------
    settings : PanelSettings
        The form.
    api_key : str, optional
        The AssemblyAI key (required for ``service="assemblyai"``).
    local_service : callable
        Returns the panel's own service for the "local" choice (it outlives a session).
    browser, open_device
        See `make_sources`.

    Raises
    ------
    NbscribeError
        What to change in the form (see `make_sources`), or AssemblyAI without a key.
    ValueError
        Parameters out of range.
    """
    sources = make_sources(settings, browser=browser, open_device=open_device)
    params = streaming_params(settings)
    if settings.cloud:
        if not api_key:
            raise NbscribeError("AssemblyAI needs an API key: set ASSEMBLYAI_API_KEY or "
                                "paste it into the API key box (or choose Local)")
        where: dict[str, Any] = {"api_key": api_key}
    else:
        where = {"service": local_service()}
    if isinstance(sources, dict):  # "You vs Others": one server session per source
        return MultiTranscriber(sources, cancel_echo=settings.cancel_echo,
                                include_echo=not settings.cancel_echo, **where, **params)
    return Transcriber(sources, **where, **params)
