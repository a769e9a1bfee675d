"""The `Panel`: wires the layout, the form rules, the session loop, the renderers and Save.

Threads: button handlers run on the kernel's thread and return at once. Each Start makes the
recorder the form describes and hands it to a `SessionLoop`, whose thread is the only writer of
the live widgets while the session runs (through `_LiveWidgets`: renderers into the layout).
Widget values set from a thread reach the browser under ipykernel 6 and 7 (measured); printing
from threads does not, so nothing here prints.

The API key typed into the panel is moved out of the widget at once: it never stays in widget
state, so it is not saved with the notebook.
"""

from __future__ import annotations

import html
import logging
import operator
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..devices import list_devices
from ..errors import NbscribeError
from ..recorder import LiveSession, Recorder
from ..service import Service, resolve_api_key
from ..session import Session
from . import render, saving
from .layout import PanelLayout
from .loop import SessionLoop
from .settings import make_transcriber, parse_speaker_names

if TYPE_CHECKING:
    from ..browser import BrowserSource

__all__ = ["Panel"]

logger = logging.getLogger(__name__)


def _widget(name: str) -> Any:
    """Return a read-only attribute that is the layout's widget `name`."""
    return property(operator.attrgetter(f"layout.{name}"), doc=f"The ``{name}`` widget.")


class _LiveWidgets:
    """The session loop's view of the panel: renders the recorder into the layout's widgets."""

    def __init__(self, layout: PanelLayout, max_turns: int) -> None:
        self._layout = layout
        self._max_turns = max_turns

    def starting_service(self) -> None:
        self._layout.status.value = "starting the local Whisper server…"

    def refresh(self, recorder: Recorder, transcript_changed: bool) -> None:
        stats, session = recorder.stats(), recorder.session
        self._layout.show_live(
            render.live_status(stats, len(session)), render.level(stats),
            render.turns_html(session, self._max_turns) if transcript_changed else None,
            render.partial_html(session) if transcript_changed else None)

    def finish(self, recorder: Recorder, error: str | None) -> None:
        session = recorder.session
        self._layout.show_ended(render.stopped_status(recorder.stats(), len(session),
                                                      session.continuity()),
                                render.error_html(error) if error else None,
                                can_save=recorder.state != "idle")


class Panel:
    """A control panel for live transcription in a notebook.

    Show it by making it the last expression of a cell: ``nbscribe.Panel()``. Pick a source
    (a loopback device, a microphone or a file) and a service (the offline local server, or
    AssemblyAI with a key from ``ASSEMBLYAI_API_KEY`` or typed into the panel), then Start and
    Stop. While it runs, the kernel stays free; afterwards `turns` and `words` hold the session
    as DataFrames and Save writes the export folder.

    Creating a panel stops and closes the panels created before it, so re-running the cell
    never leaves capture threads behind.

    Parameters
    ----------
    file : str or Path, optional
        A file to offer as the source (default: a speech sample that ships with nbscribe).
    device : str, optional
        The device to preselect (default: the first loopback device).
    source : {"device", "file"}, optional
        Which source is selected (default: a device when one exists, else the file).
    service : {"local", "assemblyai"}, optional
        Default: AssemblyAI when a key is set in the environment, else local.
    api_key : str, optional
        AssemblyAI key; never displayed or stored in widget state.
    url : str, optional
        A v3 server to use for the "local" choice instead of starting one.
    realtime : bool
        Send files at real time (as a live source would); ``False`` lets the local server go
        as fast as it can.
    max_turns_shown : int
        The live view shows the latest turns only, so it stays cheap in long sessions.
    update_hz : float
        Refresh rate of the live widgets (at most 20).
    out_dir : str, optional
        The folder Save writes to (default ``"transcript"``).

    Attributes
    ----------
    layout : PanelLayout
        The widgets; each is also an attribute of the panel (``start_button``, ``status`` ...).
    transcriber : Recorder or None
        The last session's `Transcriber` (or `MultiTranscriber` for "You vs Others").
    browser : BrowserSource or None
        The browser source, made when first chosen.
    """

    _instances: ClassVar[weakref.WeakSet[Panel]] = weakref.WeakSet()

    source_kind = _widget("source_kind")
    device = _widget("device")
    refresh_button = _widget("refresh_button")
    mic = _widget("mic")
    file = _widget("file")
    browser_kind = _widget("browser_kind")
    hint = _widget("hint")
    service = _widget("service")
    key = _widget("key")
    key_status = _widget("key_status")
    model = _widget("model")
    keyterms = _widget("keyterms")
    max_silence = _widget("max_silence")
    speaker_labels = _widget("speaker_labels")
    speaker_names = _widget("speaker_names")
    cancel_echo = _widget("cancel_echo")
    start_button = _widget("start_button")
    stop_button = _widget("stop_button")
    status = _widget("status")
    level = _widget("level")
    turns_view = _widget("turns_view")
    partial = _widget("partial")
    error = _widget("error")
    save_dir = _widget("save_dir")
    save_button = _widget("save_button")
    saved = _widget("saved")

    def __init__(
        self,
        *,
        file: str | os.PathLike[str] | None = None,
        device: str | None = None,
        source: str | None = None,
        service: str | None = None,
        api_key: str | None = None,
        url: str | None = None,
        realtime: bool = True,
        max_turns_shown: int = 200,
        update_hz: float = 10.0,
        out_dir: str = "transcript",
    ) -> None:
        from .. import sample

        for old in list(Panel._instances):
            old.close()
        Panel._instances.add(self)
        self._api_key = resolve_api_key(api_key)
        self._url = url
        self.realtime = realtime
        self.max_turns_shown = max_turns_shown
        self.update_hz = update_hz
        self.transcriber: Recorder | None = None
        self.browser: BrowserSource | None = None
        self._loop: SessionLoop | None = None
        self._service: Service | None = None  # the local server, started on first use
        self._names: dict[str, str] = {}  # speaker names, kept for the next sessions too
        self.layout = PanelLayout(file or sample("endgame_nagg_nell"),
                                  service or ("assemblyai" if self._api_key else "local"),
                                  out_dir)
        self.widget = self.layout.widget
        self.refresh_button.on_click(lambda _: self.refresh_devices())
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop(wait=False))
        self.save_button.on_click(lambda _: self._save_clicked())
        self.key.observe(self._take_key, names="value")
        self.service.observe(lambda _: self._show_service(), names="value")
        self.source_kind.observe(lambda _: self._show_source(), names="value")
        self.mic.observe(lambda _: self._show_source(), names="value")
        self.browser_kind.observe(self._browser_kind_changed, names="value")
        self.speaker_labels.observe(lambda _: self.layout.show_speaker_names(), names="value")
        self.speaker_names.observe(self._names_typed, names="value")
        self.layout.show_speaker_names()
        has_device = self.refresh_devices(preselect=device)
        self.source_kind.value = source or ("device" if has_device and device else "file")
        self._show_source()  # (again: the observer does not fire when the value is unchanged)
        self._show_service()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            # What shows where widgets cannot render (a saved notebook without its kernel,
            # GitHub, nbconvert): a sentence, not the widget tree.
            bundle["text/plain"] = (f"{self!r}: the nbscribe control panel (run the cell in a "
                                    "live Jupyter kernel to see it)")
        return bundle

    # -- the form -----------------------------------------------------------------------------

    def refresh_devices(self, preselect: str | None = None) -> bool:
        """Re-scan input devices (loopback devices first); return whether any exist.

        A running capture is never disturbed (see `nbscribe.devices`).
        """
        try:
            devices = list_devices()
        except NbscribeError as exc:
            self.layout.show_no_devices(render.error_html(str(exc)))
            return False
        self.layout.show_devices(devices, preselect)
        return bool(devices)

    def _browser_kind_changed(self, change: dict[str, Any]) -> None:
        if self.browser is not None:
            self.browser.kind = change["new"]

    def _show_source(self) -> None:
        made = None
        if self.source_kind.value == "browser" and self.browser is None:
            try:
                from ..browser import BrowserSource
            except ImportError:
                self.hint.value = render.error_html(
                    "the browser source needs anywidget: pip install 'nbscribe[widget]'")
            else:
                self.browser = made = BrowserSource(kind=self.browser_kind.value)
        self.layout.show_source(made.widget if made is not None else None)

    def _show_service(self) -> None:
        self.layout.show_service(key_set=self._api_key is not None)

    def _take_key(self, change: dict[str, Any]) -> None:
        value = (change.get("new") or "").strip()
        if value:
            self._api_key = value
            self.key.value = ""  # out of widget state at once: never saved with the notebook
            self._show_service()

    def _own_service(self) -> Service:
        """Return the panel's own service (the local server, or `url`), kept across sessions."""
        if self._service is None:
            self._service = Service(self._url) if self._url else Service(local=True)
        return self._service

    # -- running ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a session is being started, streamed or stopped."""
        return self._loop is not None and self._loop.running

    def start(self) -> None:
        """Start a session with the panel's settings; returns at once (errors show in the panel)."""
        if self.running:
            return
        self.layout.clear_messages()
        try:
            recorder = make_transcriber(self.layout.settings(self.realtime),
                                        api_key=self._api_key, local_service=self._own_service,
                                        browser=self.browser)
        except (NbscribeError, ValueError) as exc:
            self.layout.show_error(render.error_html(str(exc)))
            return
        self.transcriber = recorder
        recorder.session.name_speakers(self._names)
        self._loop = SessionLoop(recorder, _LiveWidgets(self.layout, self.max_turns_shown),
                                 update_hz=self.update_hz, fast=not self.realtime)
        self.layout.show_starting()
        self._loop.start()

    def name_speakers(self, names: Mapping[str, str | None] | None = None, /,
                      **more: str | None) -> None:
        """Name speakers: ``panel.name_speakers(A="Nagg", B="Nell")`` (``None`` un-names).

        The names show in the live view at once (during or after a session), and in `turns`,
        `words` and what Save writes; they stay for the panel's next sessions. Typing
        ``A=Nagg, B=Nell`` into the Names box does the same.
        """
        changes = {**(names or {}), **more}
        for label, name in changes.items():
            if name is None or name == label:
                self._names.pop(label, None)
            else:
                self._names[label] = name
        if self.transcriber is not None:
            self.transcriber.session.name_speakers(changes)
        if self._loop is not None and self._loop.running:
            self._loop.touch()  # the session thread renders it at its next refresh
        else:
            self.turns_view.value = self.render_turns(self.session)
        shown = ", ".join(f"{k}={v}" for k, v in self._names.items())
        if self.speaker_names.value != shown and changes:
            self.speaker_names.value = shown

    def _names_typed(self, change: dict[str, Any]) -> None:
        try:
            names = parse_speaker_names(change["new"])
        except ValueError as exc:
            self.layout.show_error(render.error_html(str(exc)))
            return
        self.layout.show_error("")
        self.name_speakers({**dict.fromkeys(set(self._names) - set(names)), **names})

    def stop(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop the session: the last audio is sent and the final turns arrive.

        Parameters
        ----------
        wait : bool
            Block until everything is stopped (the Stop button does not wait).
        timeout : float
            Seconds to wait at most.
        """
        if self._loop is not None:
            self._loop.stop(wait=wait, timeout=timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the session has ended (a file ran out or Stop); return whether it has."""
        return self._loop is None or self._loop.wait(timeout)

    def close(self) -> None:
        """Stop any session, stop the panel's local server and close its widgets."""
        self.stop(wait=True)
        service, self._service = self._service, None
        if service is not None:
            service.stop()
        if self.browser is not None:
            self.browser.close_widget()
        self.widget.close()
        Panel._instances.discard(self)

    # -- results ------------------------------------------------------------------------------

    @property
    def session(self) -> LiveSession:
        """The last session (empty before the first Start)."""
        return self.transcriber.session if self.transcriber else Session()

    @property
    def turns(self) -> Any:
        """The last session's final turns as a DataFrame."""
        return self.session.turns

    @property
    def words(self) -> Any:
        """The last session's words as a DataFrame."""
        return self.session.words

    def render_turns(self, session: LiveSession) -> str:
        """Return the live view's HTML: the latest `max_turns_shown` final turns."""
        return render.turns_html(session, self.max_turns_shown)

    def save(self, folder: str | os.PathLike[str] | None = None) -> Path:
        """Write audio.wav, CSV, Parquet (with pyarrow), JSON, SRT and VTT into `folder`.

        "You vs Others" writes the merged turns.csv and words.csv, and each source's files in
        a folder of its own. Returns the folder.
        """
        return saving.save(self.session, folder or self.save_dir.value or "transcript")

    def _save_clicked(self) -> None:
        if self.running:
            self.saved.value = "stop the session first"
            return
        try:
            out = self.save()
        except (OSError, ValueError) as exc:
            self.saved.value = render.error_html(str(exc))
            return
        self.saved.value = f"saved to {html.escape(str(out))}/"

    def __repr__(self) -> str:
        state = self.transcriber.state if self.transcriber else "idle"
        return f"<nbscribe.Panel {state}, {len(self.session)} turns>"
