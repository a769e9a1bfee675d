"""The panel in a real JupyterLab, driven in headless Chromium (Debian's, through Playwright).

The notebook runs the real local Whisper server in its kernel and transcribes a speech sample at
real time; the test sees real transcript text appear in the page while another cell runs.
Screenshots are written to ``$NBSCRIBE_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from .conftest import need

pytestmark = [pytest.mark.browser, pytest.mark.engine]

CHROME = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if
               os.path.exists(p)), None)
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KSTAT = ("window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status")

CELLS = [
    "import nbscribe\n"
    "panel = nbscribe.Panel(source='file')  # the bundled two-voice sample, local engine\n"
    "panel",
    "import time\nprint('kernel free; panel running:', panel.running)",
    "panel.turns[['start', 'end', 'speaker', 'text']]",
]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    need(CHROME is not None, "chromium is needed for browser tests (apt-get install chromium)")
    pytest.importorskip("jupyterlab")
    pytest.importorskip("playwright")
    root = tmp_path_factory.mktemp("nbroot")
    home = tmp_path_factory.mktemp("jhome")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "panel.ipynb")
    for kind in ("mic", "display"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            f"import nbscribe\npanel = nbscribe.Panel(source='browser')\n"
            f"panel.browser_kind.value = {kind!r}\npanel")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, root / f"browser_{kind}.ipynb")
    settings = home / "cfg/lab/user-settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "cfg"),
               JUPYTER_RUNTIME_DIR=str(home / "rt"), JUPYTER_DATA_DIR=str(home / "data"),
               IPYTHONDIR=str(home / "ipy"), HF_HUB_OFFLINE="1")
    env.pop("ASSEMBLYAI_API_KEY", None)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    token = "t" + os.urandom(8).hex()
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
                time.sleep(0.2)
        yield url, token, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROME, headless=True, args=CHROME_ARGS,
            viewport={"width": 1200, "height": 1000})
        try:
            yield ctx.new_page()
        finally:
            ctx.close()


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NBSCRIBE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run_cell(page, index: int) -> None:
    page.evaluate(f"""() => {{ const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = {index};
        return window.jupyterapp.commands.execute('notebook:run-cell'); }}""")


def test_live_transcript_appears_in_jupyterlab(jupyter, page, tmp_path):
    from playwright.sync_api import expect

    url, token, _ = jupyter
    shots = _shots(tmp_path)
    page.goto(f"{url}/lab/tree/panel.ipynb?token={token}&reset")
    page.wait_for_function(f"{KSTAT} === 'idle'", timeout=90_000)
    _run_cell(page, 0)
    expect(page.locator(".nbs-start")).to_be_visible(timeout=60_000)
    page.wait_for_function(f"{KSTAT} === 'idle'", timeout=30_000)
    page.locator(".nbs-speaker-labels input").check()  # offline speaker labels, as a user asks
    expect(page.locator(".nbs-names input")).to_be_visible()
    page.locator(".nbs-start").click()
    # the kernel is free while the session runs: another cell executes
    _run_cell(page, 1)
    expect(page.locator(".jp-OutputArea-output").filter(
        has_text="panel running: True")).to_be_visible(timeout=15_000)
    # real transcript text from the sample's first lines ("Do you hear me?")
    expect(page.locator(".nbs-turns")).to_contain_text("hear me", timeout=60_000)
    expect(page.locator(".nbs-status")).to_contain_text("streaming")
    page.screenshot(path=str(shots / "panel-streaming.png"), full_page=True)
    expect(page.locator(".nbs-turns .nbs-spk").first).to_contain_text("A", timeout=30_000)
    page.locator(".nbs-stop").click()
    expect(page.locator(".nbs-status")).to_contain_text("stopped", timeout=30_000)
    page.wait_for_function(f"{KSTAT} === 'idle'", timeout=30_000)
    names = page.locator(".nbs-names input")
    names.fill("A=Nagg, B=Nell")
    names.press("Enter")
    expect(page.locator(".nbs-turns")).to_contain_text("Nagg", timeout=15_000)
    page.wait_for_function(f"{KSTAT} === 'idle'", timeout=30_000)
    _run_cell(page, 2)
    table = page.locator(".jp-OutputArea-output table.dataframe")
    expect(table).to_be_visible(timeout=15_000)
    expect(table).to_contain_text("hear me")
    expect(table).to_contain_text("Nagg")
    page.screenshot(path=str(shots / "panel-stopped.png"), full_page=True)
    # nothing sensitive or broken in the page: the turns view holds escaped text only
    assert page.locator(".nbs-turns .nbs-turn").count() >= 1



@pytest.mark.parametrize("kind", ["mic", "display"])
def test_browser_capture_is_transcribed(jupyter, espeak_wav, tmp_path, kind):
    """The browser as the source: Chromium's fake capture device (the microphone, or a shared
    tab/screen with audio) plays a speech file."""
    from playwright.sync_api import expect, sync_playwright

    pytest.importorskip("anywidget")
    speech = espeak_wav("Please send the quarterly report to the marketing team by Friday.",
                        "browser_mic", rate=48000, pad=1.0)
    url, token, _ = jupyter
    shots = _shots(tmp_path)
    args = [*CHROME_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech}",
            "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROME, headless=True, args=args,
            permissions=["microphone"], viewport={"width": 1200, "height": 1000})
        try:
            page = ctx.new_page()
            page.goto(f"{url}/lab/tree/browser_{kind}.ipynb?token={token}&reset")
            page.wait_for_function(f"{KSTAT} === 'idle'", timeout=90_000)
            _run_cell(page, 0)
            expect(page.locator(".nbs-share")).to_be_visible(timeout=60_000)
            label = "Share microphone" if kind == "mic" else "Share a tab or screen"
            expect(page.locator(".nbs-share")).to_contain_text(label)
            page.locator(".nbs-share").click()  # the user's gesture: share the microphone
            expect(page.locator(".nbs-share-status")).to_contain_text("sharing", timeout=15_000)
            page.locator(".nbs-start").click()
            # Whisper tiny may slip on a word of synthetic speech: any two of these will do
            expect(page.locator(".nbs-turns")).to_contain_text(
                re.compile(r"(quarterly|report|marketing|team|friday).*"
                           r"(report|marketing|team|friday)", re.IGNORECASE), timeout=60_000)
            page.screenshot(path=str(shots / f"browser-{kind}.png"), full_page=True)
            page.locator(".nbs-stop").click()
            expect(page.locator(".nbs-status")).to_contain_text("stopped", timeout=30_000)
            expect(page.locator(".nbs-share-status")).to_contain_text("stopped",
                                                                      timeout=10_000)
        finally:
            ctx.close()
