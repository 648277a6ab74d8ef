"""Fixtures of the browser-app tests: a data folder of phantoms, one ``clinicalai web`` server
per session (a free loopback port, an access token, stopped after), and one headless
Debian chromium driven by Playwright (never downloaded: ``executable_path``)."""

from __future__ import annotations

import ctypes.util
import os
import shutil
from pathlib import Path

import pytest

from clinicalai.web.page_driver import CHROMIUM, CHROMIUM_ARGS, free_port, launch_server, open_app_page, stop_server, wait_for_server

TOKEN = "test-token-0123456789abcdef"
MAX_UPLOAD_MB = 4


def browser_skip_reason() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM} (apt-get install chromium; see docs/web.md)"
    if not ctypes.util.find_library("EGL"):
        return "EGL library missing (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)"
    try:
        import playwright  # noqa: F401
        import trame_slicer  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e .[web,test])"
    return ""


def write_phantoms(folder: Path) -> dict:
    """The images the tests open: cardiac MRI (+ a damaged mask, + as DICOM), FDOPA PET (+ lesion
    VOI), brain MRI (+ lesion); shared with ``scripts/screenshots.py``."""
    from clinicalai.web.sample_data import write_sample_data

    return write_sample_data(folder)


@pytest.fixture(scope="session")
def web_root(tmp_path_factory) -> dict:
    """``{"data": folder to serve, "outside": a file beside it}``; the phantoms are written by
    ``web_server`` while the server starts (the page lists files when it connects)."""
    base = tmp_path_factory.mktemp("web")
    data = base / "data"
    data.mkdir()
    return {"data": data, "outside": base / "outside.nii.gz"}


@pytest.fixture(scope="session")
def web_server(web_root):
    """A ``clinicalai web`` server (loopback, with a token, 1 MiB upload limit) for the session."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    log_path = web_root["data"].parent / "server.log"
    proc = launch_server(web_root["data"], port, log_path, ["--token", TOKEN, "--max-upload-mb", str(MAX_UPLOAD_MB)], env=env)
    # the phantoms (and a symlink escaping the data folder) are written while the server starts
    cases = write_phantoms(web_root["data"])
    shutil.copy(web_root["data"] / "cardiac.nii.gz", web_root["outside"])
    (web_root["data"] / "escape.nii.gz").symlink_to(web_root["outside"])
    url = wait_for_server(proc, port, log_path, token=TOKEN, timeout_s=90)
    yield {"url": url, "port": port, "token": TOKEN, "proc": proc, "log": log_path, "max_upload_mb": MAX_UPLOAD_MB, "cases": cases, **web_root}
    stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    reason = browser_skip_reason()
    if reason:
        print(f"\nskipping browser tests: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def page(browser, web_server):
    """One page on the app, logged in with the token (the cookie it sets)."""
    context, pg = open_app_page(browser, web_server["url"], web_server["token"], accept_downloads=True)
    yield pg
    context.close()
