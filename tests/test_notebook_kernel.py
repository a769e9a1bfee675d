"""The panel in a real Jupyter kernel (nbclient), with the assertions run inside the kernel."""

from __future__ import annotations

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = [pytest.mark.engine]

CELLS = [
    "import time, threading, nbscribe\n"
    "panel = nbscribe.Panel(source='file', realtime=False)\n"
    "panel",
    # clicked as a user would; the handler returns at once and the kernel stays free
    "t = time.monotonic()\n"
    "panel.start_button.click()\n"
    "assert time.monotonic() - t < 0.5 and panel.running",
    "assert panel.wait(120), 'the session did not end'\n"
    "assert 'stopped' in panel.status.value, panel.status.value\n"
    "assert panel.error.value == '', panel.error.value\n"
    "text = ' '.join(panel.turns.text).lower()\n"
    "assert 'hear me' in text and 'ditch' in text, text\n"
    "assert 'hear me' in panel.turns_view.value.lower()\n"
    "assert len(panel.words) > 40",
    # re-running the first cell closes the old panel and its threads
    "old = panel\n"
    "panel = nbscribe.Panel(source='file')\n"
    "assert old.widget.comm is None and not old.running\n"
    "assert not [t.name for t in threading.enumerate() if t.name.startswith('nbscribe-') "
    "and not t.name.startswith('nbscribe-server')]",
]


def test_panel_runs_in_a_real_kernel(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    env_key = os.environ.pop("ASSEMBLYAI_API_KEY", None)
    try:
        client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()  # raises CellExecutionError if an assert cell fails
    finally:
        if env_key is not None:
            os.environ["ASSEMBLYAI_API_KEY"] = env_key
    outputs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
