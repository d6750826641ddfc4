"""The interactive path in a real browser: JupyterLab from the venv, driven by Playwright in Debian's
headless Chromium.

The module starts JupyterLab on a free localhost port with a token, opens 00_quickstart (a copy in
a scratch folder, so that outputs, checkpoints and figures never touch the repository) without
editing it, checks that it runs on the kernel "Python (vlm-probes)", runs all cells from the Run
menu and then, for each explorer (attention, knockout, logit lens), moves its controls as a
person would (drags the layer slider, picks from the dropdowns, clicks the toggles) and asserts
that the figure's image bytes change, that no output shows an error and that the browser console
stays clean. A missing widget front-end (the ``@jupyter-widgets/jupyterlab-manager`` lab
extension) leaves the explorers as text and fails the test.

Screenshots go to tests/.browser/ (git-ignored); with ``VLM_PROBES_DOCS_SCREENSHOTS=1`` the three
explorer screenshots are also copied to docs/ for the README. JupyterLab is stopped in the
fixture's teardown, pass or fail. Takes about 35 s on 2 CPU cores (half of it Run All on the embedded default).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "00_quickstart.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
KERNEL_DISPLAY_NAME = "Python (vlm-probes)"
ARTIFACTS = ROOT / "tests" / ".browser"
DOCS = ROOT / "docs"
RUN_TIMEOUT_S = 300  # Run All on the embedded default: about 30 s on 2 CPU cores
REDRAW_TIMEOUT_S = 10  # a control moved -> new figure bytes in the page (the redraw itself: < 1 s)
# Lab settings for the session: every cell in the DOM (no windowing), no news or update checks
# (nothing outside localhost is reached).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab serving a scratch copy of the notebooks folder; stopped at teardown."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser test drives Debian's Chromium; install it with "
                    "`apt-get install chromium` (./run_all.sh --setup does so as root)", pytrace=False)
    jupyter = Path(sys.prefix) / "bin" / "jupyter"
    work = tmp_path_factory.mktemp("lab")
    (work / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / "notebooks" / NOTEBOOK)
    for name, values in LAB_SETTINGS.items():
        path = work / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    # user-level Jupyter folders in the scratch folder: the venv's kernel spec and lab extensions
    # (sys-prefix) are what is tested, not whatever the machine's user has installed
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(work / "config"), "JUPYTER_DATA_DIR": str(work / "data"),
           "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "IPYTHONDIR": str(work / "ipython"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    port, token = _free_port(), secrets.token_hex(16)
    log = open(work / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [str(jupyter), "lab", "--allow-root", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         f"--LabApp.user_settings_dir={work / 'settings'}", f"--LabApp.workspaces_dir={work / 'workspaces'}"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {server.returncode}:\n{(work / 'jupyterlab.log').read_text()}",
                            pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {url} within 90 s:\n{(work / 'jupyterlab.log').read_text()}",
                            pytrace=False)
            time.sleep(0.5)
        yield {"url": url, "token": token, "work": work}
    finally:
        _stop(server, url, token)
        log.close()


def _stop(server: subprocess.Popen, url: str, token: str) -> None:
    """Shut JupyterLab and its kernels down (REST shutdown, then SIGTERM, then SIGKILL)."""
    if server.poll() is None:
        try:
            request = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                             headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(request, timeout=10).close()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            server.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, sig)
    server.wait(timeout=20)


@pytest.fixture(scope="module")
def lab_page(lab):
    """Chromium showing the notebook after Run All; collects the console's errors in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # no screenshot left from an earlier run
    ARTIFACTS.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            view = browser.new_page(viewport={"width": 1280, "height": 1200})
            errors: list[str] = []
            view.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
            view.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            view.errors = errors
            view.set_default_timeout(60_000)
            view.goto(f"{lab['url']}/lab/tree/notebooks/{NOTEBOOK}?token={lab['token']}")
            try:
                _run_all(view)
            except Exception:
                view.screenshot(path=ARTIFACTS / "run_all_failed.png", full_page=True)
                raise
            yield view
            view.screenshot(path=ARTIFACTS / "notebook.png", full_page=True)
        finally:
            browser.close()


def _run_all(view) -> None:
    """Check the kernel, run every cell from the Run menu and wait until the last one has run."""
    kernel = view.locator(".jp-NotebookPanel-toolbar [data-jp-item-name='kernelName']")
    kernel.wait_for()
    try:  # the toolbar reads "No Kernel" / "Kernel" until the notebook's kernel has started
        view.wait_for_function("([element, name]) => element.textContent.includes(name)",
                               arg=[kernel.element_handle(), KERNEL_DISPLAY_NAME], timeout=90_000)
    except Exception:
        pytest.fail(f"the notebook's kernel is {kernel.inner_text().strip()!r}, not {KERNEL_DISPLAY_NAME!r}: is the "
                    "kernel registered (./run_all.sh --setup)?", pytrace=False)
    view.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached")
    view.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    view.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    # every code cell's prompt reads [n]: (not [ ] or [*]) once the whole notebook has run
    view.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
            return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
        }""", timeout=RUN_TIMEOUT_S * 1000)


def _error_outputs(view) -> list[str]:
    """Texts of the outputs in the page (cells and widgets) that show an error."""
    texts = view.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t for t in texts if "Traceback" in t or re.search(r"\b\w*Error\b", t)]


def _image_bytes(explorer) -> bytes:
    """The bytes of the figure an explorer shows (its <img>'s blob or data URL, read in the page)."""
    image = explorer.locator("img.widget-image")
    image.wait_for()
    encoded = image.evaluate("""async (img) => {
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let text = '';
        for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        return btoa(text);
    }""")
    return base64.b64decode(encoded)


def _settled(explorer) -> bytes:
    """The explorer's figure once the kernel is idle and the bytes stay the same for a moment."""
    last, deadline = None, time.monotonic() + REDRAW_TIMEOUT_S
    while time.monotonic() < deadline:
        explorer.page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached")
        now = _image_bytes(explorer)
        if now == last:
            return now
        last = now
        time.sleep(0.3)
    pytest.fail(f"the figure kept changing for {REDRAW_TIMEOUT_S} s", pytrace=False)


def _changes_figure(explorer, action, what: str) -> tuple[float, bytes]:
    """Do ``action``; wait until the explorer's figure bytes change; return the seconds that took
    and the figure once it has settled."""
    before = _settled(explorer)
    start = time.monotonic()
    action()
    while _image_bytes(explorer) == before:
        if time.monotonic() - start > REDRAW_TIMEOUT_S:
            explorer.page.screenshot(path=ARTIFACTS / "no_redraw.png", full_page=True)
            pytest.fail(f"{what} did not change the figure within {REDRAW_TIMEOUT_S} s "
                        f"(console: {explorer.page.errors}; output: {_error_outputs(explorer.page)})", pytrace=False)
        time.sleep(0.05)
    seconds = time.monotonic() - start
    after = _settled(explorer)
    assert after != before and after.startswith(b"\x89PNG"), f"after {what}, the figure is not a new PNG"
    return seconds, after


def _explorer(view, name: str):
    explorer = view.locator(f".vlm-{name}-explorer")
    try:
        explorer.wait_for(timeout=15_000)
    except Exception:
        view.screenshot(path=ARTIFACTS / f"{name}_missing.png", full_page=True)
        pytest.fail(f"no {name} explorer in the page: is the widget front-end (@jupyter-widgets/jupyterlab-manager) "
                    "installed and enabled?", pytrace=False)
    explorer.scroll_into_view_if_needed()
    return explorer


def _labelled(explorer, kind: str, label: str):
    """The ipywidgets control of CSS class ``kind`` whose description is ``label``."""
    return explorer.locator(kind, has=explorer.page.locator("label", has_text=re.compile(f"^{re.escape(label)}$")))


def _dropdown(explorer, label: str):
    return _labelled(explorer, ".widget-dropdown", label).locator("select")


def _toggle(explorer, label: str, option: str):
    return _labelled(explorer, ".widget-toggle-buttons", label).locator("button", has_text=re.compile(f"^{option}$"))


def _finish(view, explorer, name: str, timings: dict[str, float]) -> None:
    """Screenshot the explorer; assert no error output and no console error; report the timings."""
    shot = ARTIFACTS / f"{name}_explorer.png"
    explorer.screenshot(path=shot)
    if os.environ.get("VLM_PROBES_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / shot.name)
    assert not _error_outputs(view), f"error output in the page: {_error_outputs(view)}"
    assert not view.errors, f"browser console errors: {view.errors}"
    print(f"{name} explorer redraws (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


def test_notebook_runs_on_the_vlm_probes_kernel_without_errors(lab, lab_page):
    page = lab_page
    page.keyboard.press("Control+s")
    page.wait_for_selector(".jp-mod-dirty", state="detached")
    saved = json.loads((lab["work"] / "notebooks" / NOTEBOOK).read_text())
    assert saved["metadata"]["kernelspec"]["display_name"] == KERNEL_DISPLAY_NAME
    errors = [f"{o['ename']}: {o['evalue']}" for c in saved["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors == [] and not _error_outputs(page)
    assert not page.errors, f"browser console errors: {page.errors}"


def test_attention_explorer(lab_page):
    page = lab_page
    explorer = _explorer(page, "attention")
    slider = explorer.locator(".widget-slider")
    handle = slider.locator(".noUi-handle")
    readout = slider.locator(".widget-readout")
    assert readout.inner_text().strip() == "0"

    def drag_layer():  # drag the handle two thirds along the track: layer 2 of 0..3
        track = slider.locator(".noUi-target").bounding_box()
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + track["width"] * 2 / 3, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()

    timings = {}
    timings["layer slider"], _ = _changes_figure(explorer, drag_layer, "dragging the layer slider")
    assert readout.inner_text().strip() == "2"
    timings["head"], _ = _changes_figure(explorer, lambda: _dropdown(explorer, "head").select_option(label="1"),
                                         "choosing head 1")
    query = _dropdown(explorer, "query")
    first = query.locator("option").first.inner_text()
    timings["query"], shown = _changes_figure(explorer, lambda: query.select_option(label=first), f"choosing query {first}")
    timings["grid view"], _ = _changes_figure(explorer, lambda: _toggle(explorer, "view", "grid").click(), "the grid view")
    timings["overlay again"], again = _changes_figure(explorer, lambda: _toggle(explorer, "view", "overlay").click(),
                                                      "the overlay view")
    assert again == shown, "a setting shown before should come back from the cache, byte for byte"
    _finish(page, explorer, "attention", timings)


def test_knockout_explorer(lab_page):
    page = lab_page
    explorer = _explorer(page, "knockout")
    edges = explorer.locator(".widget-select-multiple select")
    assert edges.evaluate("s => [...s.selectedOptions].length") == 4
    timings = {}
    timings["one edge set"], _ = _changes_figure(explorer, lambda: edges.select_option(["image->last"]),
                                                 "selecting only image->last")
    timings["two edge sets"], _ = _changes_figure(explorer, lambda: edges.select_option(["question->last", "image->last"]),
                                                  "selecting question->last and image->last")
    _finish(page, explorer, "knockout", timings)


def test_logit_lens_explorer(lab_page):
    page = lab_page
    explorer = _explorer(page, "logit-lens")
    position = _dropdown(explorer, "position")
    assert position.evaluate("s => s.selectedOptions[0].textContent").endswith("(last)")
    timings = {}
    timings["final norm off"], _ = _changes_figure(explorer, lambda: _toggle(explorer, "final norm", "off").click(),
                                                   "turning the final norm off")
    first = position.locator("option").first.inner_text()
    timings["position"], _ = _changes_figure(explorer, lambda: position.select_option(label=first),
                                             f"choosing position {first}")
    timings["log scale"], _ = _changes_figure(explorer, lambda: _toggle(explorer, "y axis", "log").click(), "the log scale")
    _finish(page, explorer, "logit-lens", timings)
