"""Driving ``clinicalai web`` from Python with Playwright: start and stop a server, set page
state, open files, run a panel, read a slice view's pixels.

One place for what the browser tests (``Testing/web``) and ``scripts/screenshots.py`` both do.
The functions take a Playwright ``page`` and never import Playwright themselves; headless
Debian chromium (:data:`CHROMIUM`, never a downloaded one) is launched by the caller.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
from .security import TOKEN_ENV

REPO = Path(__file__).resolve().parents[2]
#: the browser: Debian's chromium (``apt-get install chromium``)
CHROMIUM = os.environ.get("CLINICALAI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class PageError(RuntimeError):
    """The server did not start, or a panel did not show its result; the message says why."""


# ---------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_server(data: Path, port: int, log_path: Path, args: Sequence[str] = (), env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """``python -m clinicalai web --port port --data data *args`` from this checkout, its
    output in ``log_path``; returns at once (see :func:`wait_for_server`). Without ``--token``
    in ``args`` the server runs on loopback without one (the token variable is dropped)."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    env.pop(TOKEN_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "clinicalai", "web", "--port", str(port), "--data", str(data), *args],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_server(proc: subprocess.Popen, port: int, log_path: Path, token: str = "", timeout_s: float = 120.0) -> str:
    """Wait until the page answers; its URL. Raises :class:`PageError` (with the end of the
    log) when the server exits or does not answer within ``timeout_s`` (then it is stopped)."""
    url = f"http://127.0.0.1:{port}/"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise PageError(f"the web server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "index.html", headers=headers), timeout=2) as r:
                if r.status == 200:
                    return url
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            raise PageError(f"the web server did not start in {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- page state and panels
def open_app_page(browser: Any, url: str, token: str, **context_options: Any) -> tuple:
    """A new browser context and page on the app at ``url``, logged in with ``token`` (the cookie
    it sets), once the data list is shown; ``(context, page)``: close the context when done."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, **context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url + f"?token={token}")
    page.wait_for_selector("#data-files .ca-data-file")
    return context, page


def set_state(page: Any, key: str, value: Any) -> None:
    """Set a state value as a page control would, and make sure the server has it before the
    next click (the client batches state updates; triggers go out at once)."""
    page.evaluate("async ([k, v]) => { window.trame.state.set(k, v); await window.trame.state.flush(); }", [key, value])
    page.wait_for_function("() => !window.trame.state.dirtyKeys || window.trame.state.dirtyKeys.size === 0")
    page.wait_for_timeout(300)


def open_tool(page: Any, key: str) -> None:
    """Show the drawer panel ``key`` (data, segcorrect, pet, attribution, editor, ...)."""
    if not page.locator(f"#panel-{key}").is_visible():
        page.click(f"#tool-{key}")
    page.wait_for_selector(f"#panel-{key}", state="visible")


def open_file(page: Any, relative: str) -> str:
    """Type ``relative`` (inside --data) in the data panel, press Open, wait for the server's
    answer; the error the page shows ("" when it opened)."""
    open_tool(page, "data")
    set_state(page, "ca_message", "")
    set_state(page, "ca_error", "")
    page.fill("#data-path", relative)
    page.click("#data-open")
    page.wait_for_function("() => window.trame.state.get('ca_message') || window.trame.state.get('ca_error')")
    return page.evaluate("() => window.trame.state.get('ca_error')") or ""


def run_panel(page: Any, key: str, timeout_ms: float = 120_000) -> str:
    """Press the panel's Run and wait for its result (the run counter moves) or its error;
    the error ("" when the run succeeded)."""
    open_tool(page, key)
    runs = page.evaluate(f"() => window.trame.state.get('ca_{key}_runs')")
    set_state(page, f"ca_{key}_error", "")  # an earlier run's message must not pass for this run's
    page.click(f"#{key}-run")
    page.wait_for_function(
        f"() => window.trame.state.get('ca_{key}_runs') > {runs} || window.trame.state.get('ca_{key}_error')",
        timeout=timeout_ms,
    )
    return page.evaluate(f"() => window.trame.state.get('ca_{key}_error')") or ""


def wait_text(page: Any, selector: str, pattern: str, timeout_ms: float = 30_000) -> str:
    """Wait until the element ``selector`` exists and its text matches the regex ``pattern``; the text."""
    page.wait_for_function(
        "([sel, pat]) => { const e = document.querySelector(sel); return e && new RegExp(pat).test(e.textContent); }",
        arg=[selector, pattern],
        timeout=timeout_ms,
    )
    return page.locator(selector).inner_text()


def segmentation_id(page: Any, items_key: str, prefix: str) -> str:
    """The node id of the segmentation named ``prefix...`` in a panel's state list ``items_key``."""
    find = f"window.trame.state.get('{items_key}').find(i => i.title.startsWith('{prefix}'))"
    page.wait_for_function(f"() => {find}")
    return page.evaluate(f"() => {find}.value")


# ---------------------------------------------------------------------- pixels
def view_box(page: Any, tag: str) -> Any:
    """The element around the slice view ``tag`` (Red, Yellow, Green, ...)."""
    return page.locator(f".ca-view-{tag}").locator("xpath=..")


def view_pixels(page: Any, tag: str) -> np.ndarray:
    """RGB pixels (h, w, 3), int32, of the slice view ``tag`` as the browser shows it."""
    from PIL import Image  # a dependency of trame-rca (the web extra)

    return np.asarray(Image.open(io.BytesIO(view_box(page, tag).screenshot())).convert("RGB")).astype(np.int32)


def coloured_fraction(rgb: np.ndarray, min_chroma: int = 25) -> float:
    """Fraction of clearly coloured pixels (a grey slice view gives ~0)."""
    rgb = np.asarray(rgb, dtype=np.int32)
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) >= min_chroma).mean())


def wait_view(page: Any, tag: str, condition: Any, message: str, timeout: float = 20_000) -> np.ndarray:
    """Poll the slice view ``tag`` until ``condition(rgb)`` holds; its pixels then.

    A change (a slider, a jump, a new overlay) reaches the page as a re-rendered, streamed
    frame some time later, and later still on a loaded machine: a fixed wait made these checks
    flaky, so each check waits for its own outcome (and fails with ``message`` after ``timeout`` ms).
    """
    deadline = time.monotonic() + timeout / 1000.0
    while True:
        rgb = view_pixels(page, tag)
        if condition(rgb):
            return rgb
        if time.monotonic() > deadline:
            # what the view showed, for a failure seen only in CI's log: the centre's colour and a picture
            shot = Path("/tmp") / f"ca-failed-view-{tag}-{time.monotonic_ns()}.png"
            page.screenshot(path=str(shot))
            mean = centre(rgb).reshape(-1, 3).mean(axis=0).round().astype(int).tolist()
            raise AssertionError(f"{message} (not within {timeout / 1000:.0f} s; centre mean RGB {mean}, "
                                 f"coloured {coloured_fraction(rgb):.4f} of the view; page saved as {shot})")
        page.wait_for_timeout(250)


def centre(rgb: np.ndarray, half: float = 0.03) -> np.ndarray:
    """The central patch of a view's pixels (``half`` of the shorter side each way): where a
    point the views were centred on ("go to lesion") is drawn."""
    h, w = rgb.shape[:2]
    r = max(2, int(half * min(h, w)))
    return rgb[h // 2 - r: h // 2 + r, w // 2 - r: w // 2 + r]
