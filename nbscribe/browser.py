"""The browser as an audio source, for kernels that cannot hear the user (Binder, JupyterHub).

`BrowserSource` is an `AudioSource` that has a widget, `BrowserCapture` (anywidget): its
lifetime as a source (start, read, close: one capture) is separate from the widget's (shown in
the page, reused from session to session). In the page, a button captures the microphone
(``getUserMedia``) or a tab or the screen with its audio (``getDisplayMedia``); an AudioWorklet
turns it into 16 kHz mono PCM16 in 100 ms chunks, which go to the kernel over the widget's comm
as binary buffers. In the kernel the chunks only enter a queue (comm messages are handled on the
kernel's main thread, which may be busy); the transcriber's pump thread reads them like any
other source.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

import anywidget
import numpy as np
import traitlets

__all__ = ["BrowserCapture", "BrowserSource"]

logger = logging.getLogger(__name__)

_ESM = r"""
const WORKLET = `
class NbscribePCM extends AudioWorkletProcessor {
  constructor() { super(); this.buf = new Int16Array(1600); this.n = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) for (let i = 0; i < ch.length; i++) {
      const s = Math.max(-1, Math.min(1, ch[i]));
      this.buf[this.n++] = s < 0 ? s * 32768 : s * 32767;
      if (this.n === this.buf.length) {
        this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
        this.buf = new Int16Array(1600); this.n = 0;
      }
    }
    return true;
  }
}
registerProcessor("nbscribe-pcm", NbscribePCM);`;

function render({ model, el }) {
  const btn = document.createElement("button");
  btn.className = "nbs-share jupyter-button";
  const status = document.createElement("span");
  status.className = "nbs-share-status";
  let stream = null, ctx = null;
  const label = () => { btn.textContent = model.get("kind") === "display"
      ? "Share a tab or screen (with audio)" : "Share microphone"; };
  label();
  model.on("change:kind", () => { if (!stream) label(); });
  async function start() {
    const AC = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
    try {
      stream = model.get("kind") === "display"
        ? await navigator.mediaDevices.getDisplayMedia({ video: true, audio: AC })
        : await navigator.mediaDevices.getUserMedia({ audio: AC });
      if (!stream.getAudioTracks().length) {
        throw new Error("the shared tab or screen has no audio: tick 'Share audio'");
      }
      ctx = new AudioContext({ sampleRate: 16000 });
      await ctx.resume();
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
      await ctx.audioWorklet.addModule(url);
      const node = new AudioWorkletNode(ctx, "nbscribe-pcm");
      node.port.onmessage = (e) =>
        model.send({ type: "audio", sr: ctx.sampleRate }, undefined, [e.data]);
      ctx.createMediaStreamSource(stream).connect(node);
      stream.getAudioTracks()[0].onended = () => stop("the browser stopped sharing");
      btn.textContent = "Stop sharing";
      status.textContent = " sharing: " + stream.getAudioTracks()[0].label;
      model.set("sharing", true); model.save_changes();
    } catch (err) {
      stop(String(err));
      model.send({ type: "error", message: String(err) });
    }
  }
  function stop(why) {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (ctx) ctx.close();
    stream = ctx = null;
    label();
    status.textContent = why ? " " + why : " not sharing";
    if (model.get("sharing")) { model.set("sharing", false); model.save_changes(); }
  }
  btn.onclick = () => (stream ? stop("stopped") : start());
  model.on("msg:custom", (m) => { if (m.type === "stop") stop("stopped"); });
  status.textContent = " not sharing";
  el.append(btn, status);
}
export default { render };
"""


class BrowserCapture(anywidget.AnyWidget):
    """The widget: a share button in the page that sends captured audio to the kernel.

    Attributes
    ----------
    kind : str
        ``"mic"`` or ``"display"`` (a tab or the screen with its audio).
    sharing : bool
        Whether the browser is capturing now.
    """

    _esm = _ESM
    kind = traitlets.Unicode("mic").tag(sync=True)
    sharing = traitlets.Bool(False).tag(sync=True)

    def stop_sharing(self) -> None:
        """Ask the page to stop capturing (the page may be gone: then nothing happens)."""
        try:
            self.send({"type": "stop"})
        except Exception:
            logger.debug("could not tell the browser to stop sharing", exc_info=True)


class BrowserSource:
    """Audio captured by the user's browser: the microphone, or a tab or screen with its audio.

    Show it (or choose *Browser* in the panel), click its button, and pass it to a
    `Transcriber` like any source. Works with a remote kernel: the audio travels over the
    widget's connection. Tab or system audio needs a browser that shares it (Chrome: tick
    *Share tab audio* / *Share system audio* in the dialog).

    Parameters
    ----------
    kind : {"mic", "display"}
        ``"mic"`` for the microphone, ``"display"`` for a tab or the screen with its audio.
    queue_seconds : float
        Audio that may wait for the transcriber before chunks are dropped (and counted).

    Attributes
    ----------
    widget : BrowserCapture
        The button in the page; it outlives a capture (see `close_widget`).
    chunks : int
        100 ms chunks the page has sent.
    """

    sample_rate = 16000
    channels = 1
    realtime = True

    def __init__(self, kind: str = "mic", queue_seconds: float = 60.0) -> None:
        if kind not in ("mic", "display"):
            raise ValueError(f"kind must be 'mic' or 'display', got {kind!r}")
        self.widget = BrowserCapture(kind=kind)
        self.finished = False
        self.overflows = 0
        self.error: str | None = None
        self.chunks = 0
        self._active = False
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=int(queue_seconds * 10))
        self.widget.on_msg(self._on_msg)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def kind(self) -> str:
        """``"mic"`` or ``"display"``."""
        return str(self.widget.kind)

    @kind.setter
    def kind(self, value: str) -> None:
        self.widget.kind = value

    @property
    def sharing(self) -> bool:
        """Whether the browser is capturing now."""
        return bool(self.widget.sharing)

    @property
    def description(self) -> str:
        """What is captured, for status lines."""
        return "browser microphone" if self.kind == "mic" else "browser tab/screen audio"

    def _on_msg(self, widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        # The kernel's main thread: queue and return.
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "audio" and buffers:
            if content.get("sr") != self.sample_rate:
                self.error = f"the browser sent {content.get('sr')} Hz audio, not 16000 Hz"
                return
            self.chunks += 1
            if not self._active:
                return  # captured before start(): not part of the session
            pcm = np.frombuffer(bytes(buffers[0]), dtype="<i2").reshape(-1, 1)
            try:
                self._queue.put_nowait(pcm)
            except queue.Full:
                self.overflows += 1
        elif kind == "error":
            logger.warning("browser capture failed: %s", content.get("message"))

    def start(self) -> None:
        """Take the audio the browser sends from now on."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.finished = False
        self.error = None
        self._active = True

    def read(self, timeout: float) -> np.ndarray | None:
        """Return the next chunk (100 ms), or ``None`` after `timeout` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """End this capture and ask the browser to stop sharing (idempotent).

        The widget stays on the page for the next session; see `close_widget`.
        """
        if self._active:
            self._active = False
            self.widget.stop_sharing()
        self.finished = True

    def close_widget(self) -> None:
        """End any capture and close the widget itself."""
        self.close()
        self.widget.close()
