"""End to end: JupyterLab on localhost, the exploration notebook opened and run in headless Chromium,
a slider moved, and the output seen to change. Needs chromium and chromedriver (CI installs them)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on localhost serving a smoke-parameterised copy of notebooks/explore.ipynb."""
    import papermill as pm

    work = tmp_path / "lab"
    work.mkdir()
    pm.execute_notebook(str(NOTEBOOKS / "explore.ipynb"), str(work / "explore.ipynb"), parameters={"smoke": True}, prepare_only=True)
    port, token = _free_port(), "msflow-test"
    env = {**os.environ, "MSFLOW_SMOKE_DIR": str(tmp_path / "smoke"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.expose_app_in_browser=True"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        yield f"{base}/lab/tree/explore.ipynb?token={token}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait(driver, script: str, timeout: float, what: str, *args):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


SUMMARY = """const t = Array.from(document.querySelectorAll('.widget-html-content')).map(e => e.innerText)
                .find(t => t.includes('rejecting the')) || '';
             return t && t !== arguments[0] ? t : '';"""


def test_slider_changes_the_output_in_jupyterlab(lab, tmp_path):
    from selenium.webdriver.common.keys import Keys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from check_book import browser

    driver = browser(str(tmp_path / "chrome"))
    try:
        driver.get(lab)
        _wait(driver, "return !!window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell') !== null", 120, "the notebook to open")
        # the notebook's panel among the main area's widgets: a headless Chromium window never has the focus, and
        # without it JupyterLab's shell has no current widget (Chromium 150 here)
        _wait(driver, """let w = null;
                         for (const x of window.jupyterapp.shell.widgets('main')) { if (x.sessionContext) { w = x; break; } }
                         const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
                         return !!k && k.status === 'idle';""", 120, "the kernel to start")
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        before = _wait(driver, SUMMARY, 240, "the abstain panel", "")
        handle = _wait(driver, """return Array.from(document.querySelectorAll('.widget-slider'))
                                  .filter(s => (s.innerText || '').includes('reject'))
                                  .map(s => s.querySelector('.noUi-handle'))[0] || null""", 30, "the rejection slider")
        handle.click()
        handle.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        after = _wait(driver, SUMMARY, 60, "the output to change", before)
        assert "rejecting the" in before and "rejecting the" in after and after != before
    except BaseException:
        driver.save_screenshot(str(tmp_path / "jupyterlab.png"))
        print(f"screenshot: {tmp_path / 'jupyterlab.png'}")
        raise
    finally:
        driver.quit()
