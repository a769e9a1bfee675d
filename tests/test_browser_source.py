"""The browser source without a browser: comm messages as the page sends them."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("anywidget")

from nbscribe import Transcriber
from nbscribe.browser import BrowserSource

from .scripted_server import ScriptedServer, replay


def chunk(k: int) -> memoryview:
    """100 ms of 16 kHz PCM16 whose samples are all k (as the AudioWorklet sends it)."""
    return memoryview(np.full(1600, k, dtype="<i2").tobytes())


def test_chunks_from_the_page_reach_the_service():
    src = BrowserSource()
    src._on_msg(src.widget, {"type": "audio", "sr": 16000}, [chunk(99)])  # before start: not used
    with ScriptedServer(replay([])) as server:
        tr = Transcriber(src, url=server.url, api_key="k")
        tr.start()
        for k in range(1, 11):  # one second, at the page's pace
            src._on_msg(src.widget, {"type": "audio", "sr": 16000}, [chunk(k)])
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while len(server.sessions[0].audio) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        tr.stop()
    frames = [np.frombuffer(b, "<i2") for _, b in server.sessions[0].audio]
    values = [int(f[0]) for f in frames[:20]]
    assert values == [k for k in range(1, 11) for _ in range(2)]  # 100 ms -> two 50 ms frames
    assert 99 not in values
    assert server.sessions[0].control_types == ["Terminate"]
    assert src.finished and src.chunks == 11


def test_wrong_rate_and_errors_are_reported():
    src = BrowserSource(kind="display")
    assert src.description == "browser tab/screen audio"
    src.start()
    src._on_msg(src.widget, {"type": "audio", "sr": 48000}, [chunk(1)])
    assert "48000 Hz" in src.error and src.read(0.05) is None
    src._on_msg(src.widget, {"type": "error", "message": "NotAllowedError"}, [])
    src.close()
    assert src.finished
    src.close_widget()
    assert src.widget.comm is None  # the widget is closed too
    with pytest.raises(ValueError, match="kind"):
        BrowserSource(kind="speakers")
