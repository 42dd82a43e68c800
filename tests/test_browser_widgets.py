"""The lessons' widgets in a real browser: JupyterLab 4 driven by headless Chromium (selenium + chromedriver).

nbval cannot see whether a slider moves a plot: under nbval ``viz.interactive`` draws a static figure, and no
front-end renders the widgets. Here JupyterLab starts on a copy of each lesson with widgets, its kernel started by
JupyterLab (``JPY_SESSION_NAME`` set, so ``viz.live_frontend()`` is true, as for a learner), runs the cells up to
the last widget, then moves every slider, dropdown and checkbox of every widget and checks that the plot image in
that widget's cell changed and that no widget shows an error. Issue #14: before ``viz.interactive`` drew into its
Output itself, the plot never changed. A small notebook written here (``LIVE``) starts a short training run in
the background and follows it with ``viz.live_curves``: its plot must change while the run trains, with the kernel
idle, the progress line showing the epoch and step, then "finished".

Needs ``chromium`` and ``chromedriver`` (Debian: ``apt-get install chromium chromium-driver``; ``.ci/run`` installs
them) and ``selenium`` (the test extra). Without them it is skipped, saying why, except under CI (``CI`` set),
where it fails instead. About 1-2 minutes.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ["06_classification_losses.ipynb", "07_matchability_aware_loss.ipynb", "11_deim_end_to_end.ipynb"]
WIDGET_CALLS = ("viz.interactive(", "loss_curve_explorer(")
CONTROLS = ".widget-slider, .widget-dropdown, .widget-checkbox"
# Upper bounds of each wait (a passing run waits only as long as it takes): wide, for a loaded 2-core machine
STARTUP_S, RUN_S, CHANGE_S = 180, 480, 60
LIVE, LIVE_EPOCHS = "live_curves.ipynb", 6
# the tiny DEIM of tests/test_train_rtdetr.py, 64 images, 6 epochs of 8 steps: about 10 s on one core
LIVE_TRAIN = ["epochs=6", "batch_size=8", "data.image_size=64", "data.shapes_num_train=64", "data.shapes_num_val=8"]
LIVE_TRAIN += ["data.shapes_image_size=64", "log_every=1", "num_top_queries=20", "flat_epoch=0", "no_aug_epoch=0"]


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {what}: .ci/run installs chromium and chromium-driver with apt-get")
    pytest.skip(f"no chromium/chromedriver: {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(root: Path) -> Path:
    """JupyterLab user settings for the test: every cell kept in the page (no windowing), no autosave, no news."""
    settings = {
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for name, values in settings.items():
        path = root / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return root


def _write_live_notebook(path: Path) -> None:
    """A training run started in the background, followed by ``viz.live_curves``, and a cell after it."""
    sources = [
        "import os, subprocess, sys, tempfile\nfrom pathlib import Path\nfrom minidetr import viz\n"
        "run_dir = Path(tempfile.mkdtemp(prefix='live_run_', dir='.'))  # beside the notebook\n"
        "cmd = [sys.executable, '-m', 'minidetr.train', '--preset', 'deim_shapes', '--output', str(run_dir),\n"
        f"       '--no-progress', '--device', 'cpu', '--set', *{LIVE_TRAIN!r}]\n"
        "log, env = open(run_dir / 'train.log', 'w'), {**os.environ, 'OMP_NUM_THREADS': '1'}\n"
        "proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)",
        "live = viz.live_curves(run_dir, keys=('loss', 'lr'), interval=0.5, process=proc)",
        "print('the kernel is free while the run trains:', live.state)",
    ]
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": []}
    cells = [{**cell, "source": src} for src in sources]
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path.write_text(
        json.dumps({"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 4})
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of the lessons; yields (base url, token)."""
    tmp = tmp_path_factory.mktemp("lab")
    work = tmp / "notebooks"
    work.mkdir()
    for name in LESSONS:
        shutil.copy(ROOT / "notebooks" / name, work / name)
    _write_live_notebook(work / LIVE)
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("MINIDETR_WIDGETS", "JPY_SESSION_NAME")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),  # nobody's own ~/.jupyter settings
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
    )
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1"]
    cmd += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
    cmd += [f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True"]
    cmd += [f"--LabApp.user_settings_dir={_settings(tmp / 'settings')}", f"--LabApp.workspaces_dir={tmp / 'ws'}"]
    cmd += ["--LabApp.extension_manager=readonly"] + (["--allow-root"] if os.geteuid() == 0 else [])  # CI containers
    log = open(tmp / "lab.log", "w")  # noqa: SIM115
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _missing(f"chromium: {chromium or 'not found'}, chromedriver: {driver_path or 'not found'} on PATH")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, seconds: float, probe, detail=lambda: ""):
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}{detail()}")
        time.sleep(0.25)


def _js(body: str) -> str:
    """JavaScript run with ``nb``: this lesson's notebook panel (``window.lesson``), not whichever tab is current."""
    return (
        "const app = window.jupyterapp, nb = app && Array.from(app.shell.widgets('main'))"
        ".find(w => w.context && w.context.path === window.lesson);\n" + body
    )


KERNEL_IDLE = _js("""const k = nb && nb.sessionContext.session && nb.sessionContext.session.kernel;
return !!(k && k.status === 'idle' && !nb.sessionContext.pendingInput);""")
RUN_THROUGH = _js("""const last = arguments[0], n = nb.content.widgets.length;
nb.content.activeCellIndex = last + 1 < n ? last + 1 : last;
app.commands.execute(last + 1 < n ? 'notebook:run-all-above' : 'notebook:run-all-cells');""")
CELLS_DONE = _js("""const cells = nb.content.widgets.slice(0, arguments[0] + 1).filter(c => c.model.type === 'code');
if (!cells.every(c => c.model.executionCount !== null)) return null;
const errors = cells.flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error'));
return {errors: errors.map(e => e.ename + ': ' + e.evalue + '\\n' + e.traceback.join('\\n'))};""")
SHUTDOWN = _js("if (nb) nb.sessionContext.shutdown();")
CELL_NODE = _js("return nb.content.widgets[arguments[0]].node;")
STATUS = "const s = arguments[0].querySelector('.minidetr-live-status'); return s ? s.textContent : '';"
IMAGES = "return Array.from(arguments[0].querySelectorAll('.jp-OutputArea-output img')).map(i => i.src);"
ERRORS = """const cell = arguments[0];
const found = Array.from(cell.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map(e => e.textContent).filter(t => /Traceback|Error/.test(t));
if (cell.textContent.includes('Error displaying widget')) found.push('Error displaying widget');
return found;"""


def _move(driver, control) -> str:
    """Change one control as a learner would; return a description of the move."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    label = control.text.strip().splitlines()[0] if control.text.strip() else "?"  # its description
    classes = control.get_attribute("class")
    if "widget-slider" in classes:
        handle = control.find_element("css selector", ".noUi-handle")
        at_max = float(handle.get_attribute("aria-valuenow")) >= float(handle.get_attribute("aria-valuemax"))
        driver.execute_script("arguments[0].focus();", handle)
        handle.send_keys(Keys.ARROW_LEFT if at_max else Keys.ARROW_RIGHT)
        return f"slider {label!r} one step {'left' if at_max else 'right'}"
    if "widget-dropdown" in classes:
        select = Select(control.find_element("css selector", "select"))
        i = [o.get_attribute("value") for o in select.options].index(
            select.first_selected_option.get_attribute("value")
        )
        select.select_by_index((i + 1) % len(select.options))
        return f"dropdown {label!r} to {select.first_selected_option.text!r}"
    control.find_element("css selector", "input[type=checkbox]").click()
    return f"checkbox {label!r} clicked"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_widget_control_redraws_its_plot(browser, lab, lesson):  # browser first: a skip starts no server
    url, token = lab
    cells = json.loads((ROOT / "notebooks" / lesson).read_text())["cells"]
    widget_cells = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "code" and any(w in "".join(c["source"]) for w in WIDGET_CALLS)
    ]
    assert widget_cells, f"{lesson} has no widget any more: update LESSONS"
    browser.get(f"{url}/lab/tree/{lesson}?reset&token={token}")  # reset: no tab of the previous lesson restored
    _wait("JupyterLab's page", STARTUP_S, lambda: browser.execute_script("return !!window.jupyterapp;"))
    browser.execute_script("window.lesson = arguments[0];", lesson)
    _wait(f"{lesson} open with an idle kernel", STARTUP_S, lambda: browser.execute_script(KERNEL_IDLE))
    browser.execute_script(RUN_THROUGH, widget_cells[-1])  # the cells after the last widget are not needed here
    done = _wait(f"{lesson}'s cells to run", RUN_S, lambda: browser.execute_script(CELLS_DONE, widget_cells[-1]))
    assert not done["errors"], f"{lesson} raised:\n" + "\n".join(done["errors"])
    _wait("the kernel to go idle", RUN_S, lambda: browser.execute_script(KERNEL_IDLE))
    try:
        for i in widget_cells:
            _move_every_control(browser, lesson, i)
    finally:
        browser.execute_script(SHUTDOWN)


def _move_every_control(browser, lesson: str, i: int) -> None:
    """Move each control of cell ``i``'s widget in turn; the plot must change each time, with no error shown."""
    cell = browser.execute_script(CELL_NODE, i)
    browser.execute_script("arguments[0].scrollIntoView();", cell)
    shows = lambda: f"; the cell shows:\n{cell.text[-2000:]}"  # noqa: E731
    # Controls at all: live_frontend() saw JupyterLab's kernel (JPY_SESSION_NAME; MINIDETR_WIDGETS is unset).
    controls = _wait(f"cell {i}'s widget", CHANGE_S, lambda: cell.find_elements("css selector", CONTROLS), shows)
    before = _wait(f"cell {i}'s plot", CHANGE_S, lambda: browser.execute_script(IMAGES, cell))
    for control in controls:
        move = _move(browser, control)
        deadline = time.monotonic() + CHANGE_S
        while (after := browser.execute_script(IMAGES, cell)) in (before, []) and time.monotonic() < deadline:
            time.sleep(0.25)  # (an empty list: between the old image and the new one)
        if after in (before, []):  # not an assert: pytest would print both data URLs
            pytest.fail(f"{lesson}, cell {i}: {move} {'did not change' if after else 'removed'} the plot")
        errors = browser.execute_script(ERRORS, cell)
        assert not errors, f"{lesson}, cell {i}: {move} shows an error:\n" + "\n".join(errors)
        print(f"{lesson}, cell {i}: {move}: the plot changed")
        before = after


def test_live_curves_redraw_while_a_run_trains(browser, lab):
    """viz.live_curves in JupyterLab: the cell returns, the kernel goes idle, and the plot keeps changing (a thread
    updates an ipywidgets.Image) with the epoch and step on the progress line until the run has finished."""
    url, token = lab
    browser.get(f"{url}/lab/tree/{LIVE}?reset&token={token}")
    _wait("JupyterLab's page", STARTUP_S, lambda: browser.execute_script("return !!window.jupyterapp;"))
    browser.execute_script("window.lesson = arguments[0];", LIVE)
    _wait(f"{LIVE} open with an idle kernel", STARTUP_S, lambda: browser.execute_script(KERNEL_IDLE))
    try:
        browser.execute_script(RUN_THROUGH, 2)  # every cell
        done = _wait("the cells to run", RUN_S, lambda: browser.execute_script(CELLS_DONE, 2))
        assert not done["errors"], f"{LIVE} raised:\n" + "\n".join(done["errors"])
        _wait("the kernel to go idle", RUN_S, lambda: browser.execute_script(KERNEL_IDLE))
        cell = browser.execute_script(CELL_NODE, 1)
        browser.execute_script("arguments[0].scrollIntoView();", cell)
        seen = []  # (progress line, image) pairs, each time either changed
        deadline = time.monotonic() + RUN_S
        while not re.match(r"(finished|failed|error|timed out)", status := browser.execute_script(STATUS, cell)):
            shot = (status, tuple(browser.execute_script(IMAGES, cell)))
            if not seen or shot != seen[-1]:
                seen.append(shot)
            if time.monotonic() > deadline:
                pytest.fail(f"the run did not finish in {RUN_S} s; the cell shows:\n{cell.text[-2000:]}")
            time.sleep(0.2)
        assert status.startswith(f"finished, epoch {LIVE_EPOCHS}/{LIVE_EPOCHS}, step "), cell.text[-2000:]
        running = [s for s in seen if re.match(rf"running, epoch \d/{LIVE_EPOCHS}, step \d+, loss ", s[0])]
        images = {img for _, img in running if img}
        assert len(images) >= 3, f"the plot changed {len(images) - 1} times while the run trained: {running}"
        errors = browser.execute_script(ERRORS, cell)
        assert not errors, f"{LIVE} shows an error:\n" + "\n".join(errors)
        print(f"{LIVE}: {len(images)} plots while the run trained, then {status!r}")
    finally:
        browser.execute_script(SHUTDOWN)
