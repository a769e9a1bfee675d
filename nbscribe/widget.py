"""The Jupyter control panel: the only module of nbscribe that imports ipywidgets.

Threads: button handlers run on the kernel's thread and return at once. Each Start begins one
*session thread*, which starts the `Transcriber`, then refreshes the live widgets at
``update_hz`` (the only writer of those widgets while a session runs: updates are coalesced,
never one per event) and, when the session ends, stops it and flushes the final state. The
transcriber's events thread only bumps a counter. Widget values set from a thread reach the
browser under ipykernel 6 and 7 (measured); printing from threads does not, so nothing here
prints.

The API key typed into the panel is moved out of the widget at once: it never stays in widget
state, so it is not saved with the notebook.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any, ClassVar

import ipywidgets as W

from .devices import list_devices, loopback_setup_hint
from .errors import NbscribeError
from .events import Event, Turn
from .service import Service, resolve_api_key
from .session import Session
from .sources import DeviceSource, FileSource
from .transcriber import Transcriber

__all__ = ["Panel"]

logger = logging.getLogger(__name__)

MODELS = [
    ("u3-rt-pro (default)", "u3-rt-pro"),
    ("universal-3-5-pro", "universal-3-5-pro"),
    ("universal-streaming-english", "universal-streaming-english"),
    ("universal-streaming-multilingual", "universal-streaming-multilingual"),
    ("whisper-rt", "whisper-rt"),
]

#: Placeholder URL of a transcriber whose local server the session thread starts.

_CSS = """<style>
.nbs-turns { max-height: 320px; overflow-y: auto; border: 1px solid #ddd; padding: 4px 8px; }
.nbs-turn { margin: 2px 0; } .nbs-time { color: #888; font-family: monospace; }
.nbs-spk { font-weight: 600; } .nbs-partial-text { color: #666; font-style: italic; }
.nbs-err { color: #b00020; }
</style>"""


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


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
    """

    _instances: ClassVar[weakref.WeakSet[Panel]] = weakref.WeakSet()

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
        for old in list(Panel._instances):
            old.close()
        Panel._instances.add(self)
        self._api_key = resolve_api_key(api_key)
        self._url = url
        self.realtime = realtime
        self.max_turns_shown = max_turns_shown
        self.period = 1.0 / min(max(update_hz, 1.0), 20.0)
        self.transcriber: Transcriber | None = None
        self._service: Service | None = None  # the local server, started on first use
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._version = 0  # bumped by the events thread on every transcript change
        self._build(file, device, source, service, out_dir)

    # -- layout -------------------------------------------------------------------------------

    def _build(self, file: Any, device: str | None, source: str | None, service: str | None,
               out_dir: str) -> None:
        from . import sample

        self.device = W.Dropdown(description="Device", layout=W.Layout(width="420px"))
        self.refresh_button = W.Button(icon="refresh", tooltip="Refresh devices",
                                       layout=W.Layout(width="40px"))
        self.mic = W.Dropdown(description="+ You (mic)", layout=W.Layout(width="420px"),
                              tooltip="also transcribe your microphone as a second source")
        self.file = W.Text(value=str(file or sample("endgame_nagg_nell")), description="File",
                           layout=W.Layout(width="460px"))
        self.source_kind = W.ToggleButtons(
            options=[("Device", "device"), ("File", "file"), ("Browser", "browser")],
            description="Source",
            tooltips=["a sound device of the kernel's machine", "an audio file",
                      "your browser's microphone or a tab's audio (remote kernels)"])
        self.browser_kind = W.Dropdown(
            options=[("microphone", "mic"), ("a tab or screen, with its audio", "display")],
            description="Capture", layout=W.Layout(width="330px"))
        self.browser: Any = None  # the BrowserSource widget, made when first chosen
        self.hint = W.HTML()
        self.service = W.ToggleButtons(
            options=[("Local (offline)", "local"), ("AssemblyAI", "assemblyai")],
            value=service or ("assemblyai" if self._api_key else "local"),
            description="Service")
        self.key = W.Password(placeholder="paste an API key (kept out of the notebook)",
                              description="API key", layout=W.Layout(width="420px"))
        self.key_status = W.HTML()
        self.model = W.Dropdown(options=MODELS, value="u3-rt-pro", description="Model")
        self.keyterms = W.Text(placeholder="comma-separated words to recognise better",
                               description="Keyterms", layout=W.Layout(width="460px"))
        self.max_silence = W.IntSlider(value=1000, min=200, max=5000, step=100,
                                       description="Turn silence", readout_format="d")
        self.speaker_labels = W.Checkbox(value=False, description="Speaker labels")
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop",
                                    disabled=True)
        self.status = W.HTML("idle")
        self.level = W.FloatProgress(value=-60.0, min=-60.0, max=0.0, description="Level",
                                     layout=W.Layout(width="300px"))
        self.turns_view = W.HTML("<i>No turns yet.</i>")
        self.partial = W.HTML("")
        self.error = W.HTML("")
        self.save_dir = W.Text(value=out_dir, description="Folder")
        self.save_button = W.Button(description="Save", icon="save", disabled=True)
        self.saved = W.HTML("")
        for w, cls in [
            (self.device, "nbs-device"), (self.file, "nbs-file"), (self.hint, "nbs-hint"),
            (self.source_kind, "nbs-source"), (self.service, "nbs-service"),
            (self.key, "nbs-key"), (self.start_button, "nbs-start"),
            (self.stop_button, "nbs-stop"), (self.status, "nbs-status"),
            (self.level, "nbs-level"), (self.turns_view, "nbs-turns"),
            (self.partial, "nbs-partial"), (self.error, "nbs-error"),
            (self.save_button, "nbs-save"), (self.saved, "nbs-saved"),
        ]:
            w.add_class(cls)
        self.refresh_button.on_click(lambda _: self.refresh_devices())
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop(wait=False))
        self.save_button.on_click(lambda _: self._save_clicked())
        self.key.observe(self._take_key, names="value")
        self.service.observe(lambda _: self._show_service(), names="value")
        self.source_kind.observe(lambda _: self._show_source(), names="value")
        self._browser_box = W.HBox([self.browser_kind])
        self.browser_kind.observe(self._browser_kind_changed, names="value")
        has_device = self.refresh_devices(preselect=device)
        self.source_kind.value = source or ("device" if has_device and device else "file")
        self._show_source()  # (again: the observer does not fire when the value is unchanged)
        self._show_service()
        self.widget = W.VBox([
            W.HTML(_CSS),
            W.HBox([self.source_kind]),
            W.HBox([self.device, self.refresh_button]), self.mic, self.file,
            self._browser_box, self.hint,
            self.service, W.HBox([self.key, self.key_status]),
            W.HBox([self.model, self.speaker_labels]), self.keyterms, self.max_silence,
            W.HBox([self.start_button, self.stop_button, self.level]),
            self.status, self.error, self.turns_view, self.partial,
            W.HBox([self.save_dir, self.save_button, self.saved]),
        ])
        self.widget.add_class("nbs-panel")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            # What shows where widgets cannot render (a saved notebook without its kernel,
            # GitHub, nbconvert): a sentence, not the widget tree.
            bundle["text/plain"] = (f"{self!r}: the nbscribe control panel (run the cell in a "
                                    "live Jupyter kernel to see it)")
        return bundle

    def refresh_devices(self, preselect: str | None = None) -> bool:
        """Re-scan input devices (loopback devices first); return whether any exist.

        A running capture is never disturbed (see `nbscribe.devices`).
        """
        try:
            devices = list_devices()
        except NbscribeError as exc:
            self.device.options = []
            self.hint.value = f"<span class='nbs-err'>{html.escape(str(exc))}</span>"
            return False
        self.device.options = [
            (f"{'🔁 ' if d.is_loopback else ''}{d.name} ({d.hostapi})", d.name) for d in devices
        ]
        self.mic.options = [("none: only the device above", "")] + [
            (f"{d.name} ({d.hostapi})", d.name) for d in devices if not d.is_loopback
        ] + [(f"🔁 {d.name} ({d.hostapi})", d.name) for d in devices if d.is_loopback]
        self.mic.value = ""
        if preselect is not None:
            match = [d.name for d in devices if preselect.lower() in d.name.lower()]
            if match:
                self.device.value = match[0]
        if not any(d.is_loopback for d in devices):
            hint = html.escape(loopback_setup_hint())
            self.hint.value = f"<small>No loopback device found. {hint}</small>"
        else:
            self.hint.value = ""
        return bool(devices)

    def _browser_kind_changed(self, change: dict[str, Any]) -> None:
        if self.browser is not None:
            self.browser.kind = change["new"]

    def _show_source(self) -> None:
        if self.source_kind.value == "browser" and self.browser is None:
            try:
                from .browser import BrowserSource
            except ImportError:
                self.hint.value = ("<span class='nbs-err'>the browser source needs anywidget: "
                                   "pip install 'nbscribe[widget]'</span>")
            else:
                self.browser = BrowserSource(kind=self.browser_kind.value)
                self._browser_box.children = (self.browser_kind, self.browser.widget)
        self._browser_box.layout.display = (
            None if self.source_kind.value == "browser" else "none")
        is_file = self.source_kind.value == "file"
        is_device = self.source_kind.value == "device"
        self.file.layout.display = None if is_file else "none"
        for w in (self.device, self.refresh_button, self.mic, self.hint):
            w.layout.display = None if is_device else "none"

    def _show_service(self) -> None:
        cloud = self.service.value == "assemblyai"
        for w in (self.key, self.model):
            w.layout.display = None if cloud else "none"
        self.key_status.value = ("key set (not shown)" if self._api_key else
                                 "no key: set ASSEMBLYAI_API_KEY or paste one") if cloud else ""

    def _take_key(self, change: dict[str, Any]) -> None:
        value = (change.get("new") or "").strip()
        if value:
            self._api_key = value
            self.key.value = ""  # out of widget state at once: never saved with the notebook
            self._show_service()

    # -- running ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a session is being started, streamed or stopped."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start a session with the panel's settings; returns at once (errors show in the panel)."""
        if self.running:
            return
        self.error.value = ""
        self.saved.value = ""
        try:
            self.transcriber = self._make_transcriber()
        except (NbscribeError, ValueError) as exc:
            self.error.value = f"<span class='nbs-err'>{html.escape(str(exc))}</span>"
            return
        self.transcriber.on(self._on_event)
        self._stop.clear()
        self._version += 1
        self.start_button.disabled = True
        self.stop_button.disabled = False
        self.save_button.disabled = True
        self.status.value = "connecting…"
        self._thread = threading.Thread(target=self._run, name="nbscribe-panel", daemon=True)
        self._thread.start()

    def _make_transcriber(self) -> Transcriber:
        if self.source_kind.value == "file":
            source = FileSource(self.file.value.strip(), realtime=self.realtime)
        elif self.source_kind.value == "browser":
            if self.browser is None:
                raise NbscribeError("the browser source needs anywidget: "
                                    "pip install 'nbscribe[widget]'")
            source = self.browser
        else:
            if not self.device.value:
                raise NbscribeError("no input device selected. " + loopback_setup_hint())
            source = DeviceSource(self.device.value)
            if self.mic.value:
                if self.mic.value == self.device.value:
                    raise NbscribeError("choose a different device for 'You' (your microphone)")
                source = {"you": DeviceSource(self.mic.value), "others": source}
        params: dict[str, Any] = {"max_turn_silence": int(self.max_silence.value)}
        terms = [t.strip() for t in self.keyterms.value.split(",") if t.strip()]
        if terms:
            params["keyterms_prompt"] = terms
        if self.speaker_labels.value:
            params["speaker_labels"] = True
        params["min_turn_silence"] = min(400, params["max_turn_silence"])
        if self.service.value == "assemblyai":
            if not self._api_key:
                raise NbscribeError("AssemblyAI needs an API key: set ASSEMBLYAI_API_KEY or "
                                    "paste it into the API key box (or choose Local)")
            params.pop("min_turn_silence")
            return self._runner(source, api_key=self._api_key, speech_model=self.model.value,
                                **params)
        return self._runner(source, service=self._own_service(), **params)

    @staticmethod
    def _runner(source: Any, **kwargs: Any) -> Any:
        if isinstance(source, dict):  # "You vs Others": one session per source
            from .multi import MultiTranscriber

            return MultiTranscriber(source, **kwargs)
        return Transcriber(source, **kwargs)

    def _own_service(self) -> Service:
        """Return the panel's own service (the local server, or `url`), kept across sessions."""
        if self._service is None:
            self._service = Service(self._url) if self._url else Service(local=True)
        return self._service

    def _on_event(self, event: Event) -> None:
        # The transcriber's events thread: count, never touch widgets.
        if isinstance(event, Turn):
            self._version += 1

    def _run(self) -> None:
        tr = self.transcriber
        assert tr is not None
        try:
            if not tr.service.started:
                self.status.value = "starting the local Whisper server…"
                tr.service.start(fast=not self.realtime)
            tr.start()
        except Exception as exc:
            logger.info("panel session failed to start: %s", exc)
            self._finish(f"could not start: {exc}")
            return
        shown = -1
        while not self._stop.wait(self.period):
            shown = self._refresh(shown)
            if tr.wait(0):
                break
        failure = None
        try:
            tr.stop()
        except Exception as exc:  # pragma: no cover - stop() keeps errors on the session
            logger.exception("stopping the session failed")
            failure = str(exc)
        self._refresh(-1)  # the final state is always flushed
        self._finish(str(tr.error) if tr.error else failure)

    def _finish(self, error: str | None) -> None:
        tr = self.transcriber
        with self.status.hold_sync():
            stats = tr.stats() if tr else None
            n = len(tr.session) if tr else 0
            self.status.value = (f"stopped · {n} turns · "
                                 f"{stats.audio_seconds if stats else 0:.1f} s of audio")
        if error:
            self.error.value = f"<span class='nbs-err'>{html.escape(error)}</span>"
        self.partial.value = ""
        self.level.value = -60.0
        self.start_button.disabled = False
        self.stop_button.disabled = True
        self.save_button.disabled = tr is None or tr.state == "idle"

    def _refresh(self, shown: int) -> int:
        tr = self.transcriber
        assert tr is not None
        s = tr.stats()
        status = (f"● {s.state} · {_clock(s.elapsed)} · {s.audio_seconds:.1f} s sent · "
                  f"{s.overflows} dropped · {len(tr.session)} turns")
        self.status.value = status
        self.level.value = max(-60.0, min(0.0, s.level_dbfs))
        version = self._version
        if version != shown:
            self.turns_view.value = self.render_turns(tr.session)
            partial = tr.session.partial  # at most a few open turns: cheap
            text = partial.turn.transcript if partial else ""
            self.partial.value = (f"<span class='nbs-partial-text'>{html.escape(text)}</span>"
                                  if text else "")
        return version

    def render_turns(self, session: Session) -> str:
        """Return the live view's HTML: the latest `max_turns_shown` final turns."""
        records = session.latest(self.max_turns_shown)
        hidden = len(session) - len(records)
        rows = []
        if hidden:
            rows.append(f"<div class='nbs-more'><i>{hidden} earlier turns: see "
                        "panel.turns</i></div>")
        for r in records:
            label = " · ".join(x for x in (getattr(r, "source", None), r.speaker) if x)
            who = f"<span class='nbs-spk'>{html.escape(label)}</span> " if label else ""
            rows.append(f"<div class='nbs-turn'><span class='nbs-time'>{_clock(r.start)}"
                        f"</span> {who}{html.escape(r.turn.transcript)}</div>")
        return "\n".join(rows) or "<i>No turns yet.</i>"

    def stop(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop the session: the last audio is sent and the final turns arrive.

        Parameters
        ----------
        wait : bool
            Block until everything is stopped (the Stop button does not wait).
        timeout : float
            Seconds to wait at most.
        """
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the session has ended (a file ran out or Stop); return whether it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

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
    def session(self) -> Session:
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

    def save(self, folder: str | os.PathLike[str] | None = None) -> Path:
        """Write audio.wav, CSV, Parquet (with pyarrow), JSON, SRT and VTT into `folder`."""
        import shutil

        out = Path(folder or self.save_dir.value or "transcript")
        formats = ["csv", "json", "srt", "vtt"]
        try:
            import pyarrow  # noqa: F401

            formats.append("parquet")
        except ImportError:
            pass
        session = self.session
        if hasattr(session, "sessions"):  # You vs Others: merged files + a folder per source
            session.save(out)
            for name, tr in self.transcriber.transcribers.items():
                if tr.audio_path is not None and tr.audio_path.exists():
                    shutil.copyfile(tr.audio_path, out / name / "audio.wav")
            return out
        session.save(str(out), tuple(formats))
        audio = self.transcriber.audio_path if self.transcriber else None
        target = out / "audio.wav"
        if audio is not None and audio.exists() and audio.resolve() != target.resolve():
            shutil.copyfile(audio, target)
        return out

    def _save_clicked(self) -> None:
        if self.running:
            self.saved.value = "stop the session first"
            return
        try:
            out = self.save()
        except (OSError, ValueError) as exc:
            self.saved.value = f"<span class='nbs-err'>{html.escape(str(exc))}</span>"
            return
        self.saved.value = f"saved to {html.escape(str(out))}/"

    def __repr__(self) -> str:
        state = self.transcriber.state if self.transcriber else "idle"
        return f"<nbscribe.Panel {state}, {len(self.session)} turns>"

