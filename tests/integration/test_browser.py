"""The labs as a student sees them: JupyterLab in headless Chromium, Run All, then the widgets.

Marked ``browser`` (and ``slow``): starts JupyterLab from this environment on 127.0.0.1 with a
token, opens a copy of ``notebooks/01_vae_2d.ipynb`` (smoke profile, ``INTERACTIVE = True``,
``OUT_DIR`` in a temporary folder) in headless Chromium through Playwright, runs all cells and
checks what a student would see: every cell that makes a figure shows a picture, the threshold
slider moved by keyboard changes the DICE_D line and redraws the picture, and the browser console
has no errors. Playwright must not download a browser: the test uses Debian's ``chromium`` (or the
binary named by ``$UADLAB_CHROMIUM``) and skips, naming what is missing, without one.

``UADLAB_BROWSER_NOTEBOOKS=01_vae_2d,03_erasing_ablation`` runs other labs the same way (``all``: every
lab in order, sharing one ``OUT_DIR``, as ``make test-browser`` and CI do), and
``UADLAB_SCREENSHOTS=docs`` saves a screenshot of each lab after Run All and of each explorer
(``docs/jupyterlab_*.png``, linked from docs/course.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from uadlab._threads import thread_budget
from uadlab.notebooks import NOTEBOOK_DIR, NOTEBOOKS, figure_calls

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

REPO = Path(__file__).resolve().parents[2]
RUN_ALL_TIMEOUT_S = 900  # lab 01 with the smoke profile: ~2-4 min on 2 CPU cores
#: Explorer cells whose box is screenshotted for the docs, by the function the cell calls.
_WIDGET_SHOTS = {"widgets.threshold_explorer": "jupyterlab_threshold.png",
                 "widgets.slice_explorer": "jupyterlab_slices.png",
                 "widgets.erasing_explorer": "jupyterlab_erasing.png"}


def _chromium() -> str | None:
    """Path of an executable Chromium: ``$UADLAB_CHROMIUM``, else ``chromium`` on the PATH; None without one."""
    given = os.environ.get("UADLAB_CHROMIUM")
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lab_copy(name: str, folder: Path, out_dir: Path) -> Path:
    """A copy of lab ``name`` whose parameters cell points ``OUT_DIR`` at ``out_dir`` (smoke, interactive)."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    lines = nb.cells[0].source.splitlines()
    replaced = {"PROFILE": 'PROFILE: str = "smoke"', "OUT_DIR": f"OUT_DIR: str = {str(out_dir)!r}",
                "INTERACTIVE": "INTERACTIVE: bool = True"}
    nb.cells[0].source = "\n".join(next((v for k, v in replaced.items() if line.startswith(f"{k}:")), line)
                                   for line in lines)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_chromium_is_looked_up_and_a_missing_one_is_none(tmp_path, monkeypatch):
    """The lookup behind the skip: ``$UADLAB_CHROMIUM`` when executable, else the PATH."""
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("UADLAB_CHROMIUM", str(fake))
    assert _chromium() is None  # not executable
    fake.chmod(0o755)
    assert _chromium() == str(fake)
    monkeypatch.delenv("UADLAB_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert _chromium() is None
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _chromium() == str(fake)


@pytest.fixture(scope="module")
def chromium_path():
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium: install Debian's `chromium` (apt-get install chromium) or set $UADLAB_CHROMIUM")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    return path


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, chromium_path):
    """JupyterLab from this environment on 127.0.0.1 with a random token, isolated settings; yields its URL parts."""
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    settings = root / "settings"
    # Render every cell (no virtual scrolling), so that every output is in the page; no news fetching.
    for plugin, values in {"@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                           "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                                           "checkForUpdates": False}}.items():
        package, name = plugin.rsplit("/", 1)
        target = settings / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = _free_port(), os.urandom(16).hex()
    python_path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": python_path,
           "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "JUPYTER_CONFIG_PATH": str(REPO / "notebooks" / ".jupyter"),  # as `make lab`: widget state is saved
           "JUPYTER_DATA_DIR": str(root / "data"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(thread_budget()))}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root / 'notebooks'}",
               "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.workspaces_dir={root / 'workspaces'}", "--LabApp.news_url=None",
               "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield {"root": root, "url": f"http://127.0.0.1:{port}", "token": token}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


class LabPage:
    """One notebook open in JupyterLab (its own workspace): run it, read its cells, collect console errors."""

    def __init__(self, browser, server, name: str) -> None:
        self.name = name
        self.path = _lab_copy(name, server["root"] / "notebooks", server["root"] / "out")
        self.source = nbformat.read(self.path, as_version=4)
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        # a fresh workspace per notebook: JupyterLab would otherwise reopen the previous lab beside it
        self.url = f"{server['url']}/lab/workspaces/{name}/tree/{self.path.name}?reset&token={server['token']}"
        self._open()

    def _open(self) -> None:
        """Load the notebook's page and wait for its kernel."""
        self.page.goto(self.url)
        self.page.wait_for_function(f"() => {{ {self._panel} return panel && panel.sessionContext.session"
                                    " && panel.sessionContext.session.kernel"
                                    " && panel.sessionContext.kernelDisplayStatus === 'idle'; }",
                                    timeout=120_000)
        self.page.evaluate(f"() => {{ {self._panel} window.jupyterapp.shell.activateById(panel.id); }}")

    def reopen(self) -> None:
        """Save the notebook, shut its kernel down and open it again, as a student does the next day."""
        self.page.evaluate(f"""async () => {{
            {self._panel}
            await panel.context.save();
            await panel.sessionContext.shutdown();
        }}""")
        self.errors.clear()
        self._open()
        self.page.wait_for_timeout(3000)  # the widget manager restores what the notebook saved

    @property
    def _panel(self) -> str:
        """JavaScript that binds ``panel`` to this notebook's panel (found by its path)."""
        return ("const panel = Array.from(window.jupyterapp ? window.jupyterapp.shell.widgets('main') : [])"
                f".find(w => w.context && w.context.path === {json.dumps(self.path.name)});")

    def run_all(self) -> float:
        """Run > Run All Cells, wait until every code cell has run; returns the seconds it took."""
        start = time.monotonic()
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.page.wait_for_function(
            f"""() => {{
                {self._panel}
                const cells = panel.content.model.cells;
                const codes = Array.from({{length: cells.length}}, (_, i) => cells.get(i))
                    .filter(c => c.type === 'code');
                return panel.sessionContext.kernelDisplayStatus === 'idle'
                    && codes.every(c => c.executionCount !== null);
            }}""", timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
        return time.monotonic() - start

    def wait_idle(self) -> None:
        """Wait until the kernel has handled every queued request (e.g. the redraws of a widget)."""
        self.page.wait_for_timeout(300)
        idle = f"() => {{ {self._panel} return panel.sessionContext.kernelDisplayStatus === 'idle'; }}"
        self.page.wait_for_function(idle, timeout=60_000)
        self.page.wait_for_timeout(500)

    def model(self) -> dict:
        """The notebook as the frontend holds it (nbformat JSON with outputs)."""
        return self.page.evaluate(f"() => {{ {self._panel} return panel.content.model.toJSON(); }}")

    def cell(self, index: int):
        """The DOM element of cell ``index``, scrolled into view."""
        element = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)
        element.scroll_into_view_if_needed()
        return element

    def figure_cells(self) -> dict[int, list[str]]:
        return {i: figure_calls(c.source) for i, c in enumerate(self.source.cells)
                if c.cell_type == "code" and figure_calls(c.source)}

    def shown_pictures(self, index: int) -> int:
        """Pictures a reader sees in cell ``index``'s output: loaded, non-empty images and plotly plots."""
        outputs = self.cell(index).locator(".jp-OutputArea")
        self.page.wait_for_timeout(200)
        return outputs.evaluate(
            """area => Array.from(area.querySelectorAll('img, .js-plotly-plot')).filter(el => {
                const box = el.getBoundingClientRect();
                const loaded = el.tagName !== 'IMG' || (el.complete && el.naturalWidth > 0);
                return loaded && box.width > 50 && box.height > 50;
            }).length""")

    def screenshot(self, folder: Path) -> Path:
        """The whole notebook from its top (side bar closed), 1280 px wide, cut below the last cell."""
        outer = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer"
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        self.page.wait_for_timeout(300)
        extra = self.page.evaluate(f"""() => {{
            const outer = document.querySelector('{outer}');
            outer.scrollTop = 0;
            return outer.scrollHeight - outer.clientHeight;
        }}""")
        height = 900 + int(extra)
        self.page.set_viewport_size({"width": 1280, "height": height})
        self.page.wait_for_timeout(1000)
        bottom = self.page.evaluate(f"""() => {{
            const cells = document.querySelectorAll('{outer} .jp-Cell');
            return cells[cells.length - 1].getBoundingClientRect().bottom;
        }}""")
        path = folder / f"jupyterlab_{self.name}.png"
        self.page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": 1280, "height": min(height, bottom + 24)})
        self.page.set_viewport_size({"width": 1280, "height": 900})
        from PIL import Image  # matplotlib's dependency

        with Image.open(path) as shot:  # 128 colours: a third of the bytes, the same to the eye
            shot.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        return path


def _notebooks() -> list[str]:
    """The labs to open: ``$UADLAB_BROWSER_NOTEBOOKS`` (names, or ``all`` for every lab in order), else lab 01."""
    given = os.environ.get("UADLAB_BROWSER_NOTEBOOKS", "01_vae_2d")
    if given.strip() == "all":
        return [Path(name).stem for name in NOTEBOOKS]
    return [n.strip() for n in given.split(",") if n.strip()]


@pytest.fixture(scope="module", params=_notebooks())
def lab(request, browser, lab_server):
    """A lab opened in JupyterLab after Run All."""
    page = LabPage(browser, lab_server, request.param)
    page.seconds = page.run_all()
    yield page
    page.page.close()


def test_run_all_runs_every_cell_without_an_error(lab):
    cells = lab.model()["cells"]
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(cells) if c["cell_type"] == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert all(c.get("execution_count") for c in cells if c["cell_type"] == "code")


def test_every_figure_cell_shows_a_picture(lab):
    figure_cells = lab.figure_cells()
    assert figure_cells, f"{lab.name}: no figure cell"
    missing = {i: calls for i, calls in figure_cells.items() if lab.shown_pictures(i) < 1}
    assert missing == {}, f"{lab.name}: cells without a visible picture: {missing}"
    assert not any("<Figure size" in lab.cell(i).inner_text() for i in figure_cells)


def test_screenshots_for_the_docs(lab):
    folder = os.environ.get("UADLAB_SCREENSHOTS")
    if not folder:
        pytest.skip("set UADLAB_SCREENSHOTS=docs to write the labs' screenshots")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lab.wait_idle()
    for index, calls in lab.figure_cells().items():
        for call in calls:
            if call in _WIDGET_SHOTS:
                lab.cell(index).locator(".jp-OutputArea").screenshot(path=str(folder / _WIDGET_SHOTS[call]))
    assert lab.screenshot(folder).stat().st_size > 10_000


def test_the_threshold_slider_moved_by_keyboard_changes_dice_and_redraws(lab):
    index = next((i for i, calls in lab.figure_cells().items() if "widgets.threshold_explorer" in calls), None)
    if index is None:
        pytest.skip(f"{lab.name} has no threshold explorer")
    cell = lab.cell(index)
    summary = cell.locator(".widget-html", has_text="DICE_D")
    picture = cell.locator(".widget-image")
    before_text, before_src = summary.inner_text(), picture.get_attribute("src")
    handle = cell.locator(".widget-hslider", has_text="threshold").locator(".noUi-handle")
    handle.focus()
    for _ in range(8):
        handle.press("PageDown")  # 8 x 5 of the 200 slider steps towards 0
    lab.page.wait_for_function(
        "([el, text]) => el.innerText !== text", arg=[summary.element_handle(), before_text], timeout=30_000)
    lab.page.wait_for_function(
        "([el, src]) => el.getAttribute('src') !== src", arg=[picture.element_handle(), before_src], timeout=30_000)
    lab.wait_idle()  # every keypress was one change: the last redraw shows the slider's final value
    readout = cell.locator(".widget-hslider", has_text="threshold").locator(".widget-readout").inner_text().strip()
    assert float(readout) < float(before_text.split()[1])  # moved down
    assert " ".join(summary.inner_text().split()).startswith(f"threshold {readout} DICE_D = ")  # &nbsp; -> " "


def test_widget_controls_are_comfortable_in_a_1280_px_window(lab):
    """Slider tracks are long enough to drag, toggle buttons sit on one line (the window is 1280 px wide)."""
    if not any(c.startswith("widgets.") for calls in lab.figure_cells().values() for c in calls):
        pytest.skip(f"{lab.name} has no explorer")
    sizes = lab.page.evaluate(
        """() => ({
            tracks: Array.from(document.querySelectorAll('.widget-hslider .noUi-target'))
                .map(el => el.getBoundingClientRect().width),
            toggles: Array.from(document.querySelectorAll('.widget-toggle-buttons .widget-toggle-button'))
                .map(el => el.parentElement).filter((el, i, all) => all.indexOf(el) === i)
                .map(group => new Set(Array.from(group.children)
                    .map(b => Math.round(b.getBoundingClientRect().top))).size),
            labels: Array.from(document.querySelectorAll('.widget-toggle-buttons')).map(widget => {
                const label = widget.querySelector('.widget-label').getBoundingClientRect();
                const button = widget.querySelector('.widget-toggle-button').getBoundingClientRect();
                const middle = (label.top + label.bottom) / 2;
                return middle > button.top && middle < button.bottom;  // the label beside its buttons
            }),
        })""")
    assert sizes["tracks"] and min(sizes["tracks"]) >= 300, sizes
    assert all(rows == 1 for rows in sizes["toggles"]), sizes
    assert all(sizes["labels"]), sizes


def test_no_console_errors(lab):
    assert lab.errors == []


def test_a_reopened_lab_shows_every_output_and_no_missing_widget(lab):
    """A saved lab opened again with a new kernel: no "Error displaying widget: model not found" (progress
    bars are text; the explorers' state is saved, as `make lab` sets JupyterLab to) and no console error.
    Runs last: it shuts the lab's kernel down.
    """
    lab.reopen()
    missing = lab.page.locator(".jp-OutputArea-output", has_text="Error displaying widget").count()
    assert missing == 0 and lab.errors == [], lab.errors[:5]
    assert lab.shown_pictures(next(iter(lab.figure_cells()))) >= 1
