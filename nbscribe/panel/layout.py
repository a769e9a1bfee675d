"""The panel's layout: its widgets, how they are arranged and shown, and what the form says.

Widgets only: nothing here knows of transcribers, threads or files. The `Panel` wires the
buttons, and writes the live widgets through the ``show_*`` methods (from its session thread,
the only writer while a session runs). Every widget that tests or pages look for has a stable
CSS class (``nbs-start``, ``nbs-status``, ``nbs-turns`` ...).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import Any

import ipywidgets as W

from ..devices import DeviceInfo, loopback_setup_hint
from .render import CSS, LEVEL_FLOOR, NO_TURNS
from .settings import MODELS, PanelSettings

__all__ = ["PanelLayout"]


class PanelLayout:
    """The panel's widgets in a `widget` box.

    Parameters
    ----------
    file : str or Path
        The file offered as the source.
    service : {"local", "assemblyai"}
        The service chosen at first.
    out_dir : str
        The folder Save writes to.
    """

    def __init__(self, file: str | os.PathLike[str], service: str, out_dir: str) -> None:
        wide, wider = W.Layout(width="420px"), W.Layout(width="460px")
        self.source_kind = W.ToggleButtons(
            options=[("Device", "device"), ("File", "file"), ("Browser", "browser")],
            description="Source",
            tooltips=["a sound device of the kernel's machine", "an audio file",
                      "your browser's microphone or a tab's audio (remote kernels)"])
        self.device = W.Dropdown(description="Device", layout=wide)
        self.refresh_button = W.Button(icon="refresh", tooltip="Refresh devices",
                                       layout=W.Layout(width="40px"))
        self.mic = W.Dropdown(description="+ You (mic)", layout=W.Layout(width="420px"),
                              tooltip="also transcribe your microphone as a second source")
        self.cancel_echo = W.Checkbox(
            value=True, description="Remove the call from the mic (speakers, not headphones)",
            indent=False, layout=W.Layout(width="420px", margin="0 0 0 90px"))
        self.file = W.Text(value=str(file), description="File", layout=wider)
        self.browser_kind = W.Dropdown(
            options=[("microphone", "mic"), ("a tab or screen, with its audio", "display")],
            description="Capture", layout=W.Layout(width="330px"))
        self.browser_box = W.HBox([self.browser_kind])
        self.hint = W.HTML()
        self.service = W.ToggleButtons(
            options=[("Local (offline)", "local"), ("AssemblyAI", "assemblyai")],
            value=service, description="Service")
        self.key = W.Password(placeholder="paste an API key (kept out of the notebook)",
                              description="API key", layout=W.Layout(width="420px"))
        self.key_status = W.HTML()
        self.model = W.Dropdown(options=MODELS, value="u3-rt-pro", description="Model")
        self.keyterms = W.Text(placeholder="comma-separated words to recognise better",
                               description="Keyterms", layout=W.Layout(width="460px"))
        self.max_silence = W.IntSlider(value=1000, min=200, max=5000, step=100,
                                       description="Turn silence", readout_format="d")
        self.speaker_labels = W.Checkbox(value=False, description="Speaker labels")
        self.speaker_names = W.Text(placeholder="A=Nagg, B=Nell", description="Names",
                                    continuous_update=False, layout=W.Layout(width="300px"),
                                    tooltip="names for the speaker labels, in the view, the "
                                    "DataFrames and Save")
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop",
                                    disabled=True)
        self.status = W.HTML("idle")
        self.level = W.FloatProgress(value=LEVEL_FLOOR, min=LEVEL_FLOOR, max=0.0,
                                     description="Level", layout=W.Layout(width="300px"))
        self.turns_view = W.HTML(NO_TURNS)
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
            (self.speaker_labels, "nbs-speaker-labels"), (self.speaker_names, "nbs-names"),
            (self.cancel_echo, "nbs-cancel-echo"),
        ]:
            w.add_class(cls)
        self.widget = W.VBox([
            W.HTML(CSS),
            W.HBox([self.source_kind]),
            W.HBox([self.device, self.refresh_button]), self.mic, self.cancel_echo, self.file,
            self.browser_box, self.hint,
            self.service, W.HBox([self.key, self.key_status]),
            W.HBox([self.model, self.speaker_labels, self.speaker_names]), self.keyterms,
            self.max_silence,
            W.HBox([self.start_button, self.stop_button, self.level]),
            self.status, self.error, self.turns_view, self.partial,
            W.HBox([self.save_dir, self.save_button, self.saved]),
        ])
        self.widget.add_class("nbs-panel")

    # -- the form -----------------------------------------------------------------------------

    def settings(self, realtime: bool) -> PanelSettings:
        """Return what the form says (`realtime` is the panel's, not a widget's)."""
        return PanelSettings(
            source=self.source_kind.value, file=self.file.value, device=self.device.value or "",
            mic=self.mic.value or "", service=self.service.value, model=self.model.value,
            keyterms=self.keyterms.value, max_turn_silence=int(self.max_silence.value),
            speaker_labels=bool(self.speaker_labels.value),
            cancel_echo=bool(self.cancel_echo.value), realtime=realtime)

    def show_devices(self, devices: Sequence[DeviceInfo], preselect: str | None) -> None:
        """Offer `devices` (loopback ones marked), preselect one by substring, hint at setup."""
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

    def show_no_devices(self, message_html: str) -> None:
        """Offer no device, and say why."""
        self.device.options = []
        self.hint.value = message_html

    def show_source(self, browser_widget: Any = None) -> None:
        """Show the controls of the chosen source kind (and the browser's capture button)."""
        kind = self.source_kind.value
        if browser_widget is not None:
            self.browser_box.children = (self.browser_kind, browser_widget)
        self.browser_box.layout.display = None if kind == "browser" else "none"
        self.file.layout.display = None if kind == "file" else "none"
        for w in (self.device, self.refresh_button, self.mic, self.hint):
            w.layout.display = None if kind == "device" else "none"
        self.cancel_echo.layout.display = None if kind == "device" and self.mic.value else "none"

    def show_speaker_names(self) -> None:
        """Offer names for speakers when speaker labels are asked for."""
        self.speaker_names.layout.display = None if self.speaker_labels.value else "none"

    def show_service(self, key_set: bool) -> None:
        """Show the key and model for AssemblyAI (whether a key is set, never the key)."""
        cloud = self.service.value == "assemblyai"
        for w in (self.key, self.model):
            w.layout.display = None if cloud else "none"
        self.key_status.value = ("key set (not shown)" if key_set else
                                 "no key: set ASSEMBLYAI_API_KEY or paste one") if cloud else ""

    # -- a session ----------------------------------------------------------------------------

    def clear_messages(self) -> None:
        """Forget the last error and the last Save's message."""
        self.error.value = ""
        self.saved.value = ""

    def show_error(self, error_html: str) -> None:
        """Show why the panel cannot do what was asked."""
        self.error.value = error_html

    def show_starting(self) -> None:
        """Show a session starting: only Stop can be clicked."""
        self.start_button.disabled = True
        self.stop_button.disabled = False
        self.save_button.disabled = True
        self.status.value = "connecting…"

    def show_live(self, status: str, level: float, turns_html: str | None = None,
                  partial_html: str | None = None) -> None:
        """Show progress, and the transcript when it changed (``None``: leave it)."""
        self.status.value = status
        self.level.value = level
        if turns_html is not None:
            self.turns_view.value = turns_html
        if partial_html is not None:
            self.partial.value = partial_html

    def show_ended(self, status: str, error_html: str | None, can_save: bool) -> None:
        """Show an ended session: its final status, its error if any; Start and Save again."""
        self.status.value = status
        if error_html:
            self.error.value = error_html
        self.partial.value = ""
        self.level.value = LEVEL_FLOOR
        self.start_button.disabled = False
        self.stop_button.disabled = True
        self.save_button.disabled = not can_save
