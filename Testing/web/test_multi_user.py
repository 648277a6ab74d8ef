"""``clinicalai web --multi-user``: each browser has its own server process and folder.

Two real browsers (two Playwright contexts: two cookie jars) open different volumes at the same
time through one front; neither sees the other's volume or files; killing one session's process
leaves the other working; an idle session is stopped. Plus the fast parts without a browser:
the ``--users`` file and the port list.

Timing: the two sessions start at the same time, and each page says it is in use once a second
(:data:`KEEP_ALIVE`: real messages through the front) until the test lets it go quiet; so the
idle timeout can be short (:data:`IDLE_MIN`) without a session in use going idle while the other
starts, and the idle check waits seconds, not a minute."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clinicalai.errors import InputError
from clinicalai.web.launcher import Launcher, LauncherConfig, _Live, parse_ports, read_users
from clinicalai.web.page_driver import launch_server, stop_server, wait_text

#: 30 s (the reaper looks every 5 s): a page in use sends something every second, so its only
#: quiet spells are while its own script is busy (starting up: 2-7 s seen on a loaded 2-core
#: machine; 12 s was once not enough in CI, where the other test worker trains networks); a
#: session still starting, or answering a request (an upload), is never idle
IDLE_MIN = 0.5
#: every app page of a test context says it is in use once a second, as a tab in use does:
#: a websocket message once connected (a trame call the app does not handle:
#: ``trame.lifecycle.update`` of a name without a handler), a request before (``HEAD
#: /api/files``: never a page address, so never a new session); until ``QUIET``
KEEP_ALIVE = """
if (['/', '/index.html'].includes(window.location.pathname)) {  // the app's page, not the 410 one
  window.__caKeepAlive = setInterval(() => {
    const client = window.trame && window.trame.client;
    try {
      if (client && client.isConnected()) client.getRemote().Trame.lifeCycleUpdate('test_keep_alive').catch(() => {});
      else fetch('/api/files', {method: 'HEAD'}).catch(() => {});
    } catch (e) {}
  }, 1000);
}
"""
QUIET = "() => clearInterval(window.__caKeepAlive)"


def test_users_file_and_ports(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("# department\nalice alice-token-0123456789\nbob   bob-token-0123456789xx\n")
    assert read_users(f) == {"alice-token-0123456789": "alice", "bob-token-0123456789xx": "bob"}
    for text, words in [("alice short", "shorter than 16"), ("../x token-0123456789abcdef", "user names are"),
                        ("a t1-0123456789abcdef\nb t1-0123456789abcdef", "already given to a"), ("a", "expected 'USER TOKEN'")]:
        f.write_text(text)
        with pytest.raises(InputError, match=words):
            read_users(f)
    assert parse_ports("9001-9003") == [9001, 9002, 9003] and parse_ports("9001,9005") == [9001, 9005]
    with pytest.raises(InputError, match="expected a range"):
        parse_ports("lots")


def test_a_starting_session_is_not_idle(tmp_path):
    """Its browser waits for it: a start longer than the idle timeout (seconds on a busy
    machine, the test below's 12 s included) must not get it reaped; idle once started."""
    from clinicalai.web.security import DataRoot

    launcher = Launcher(LauncherConfig(data=DataRoot.create(tmp_path), idle_timeout_s=1.0))
    loop = asyncio.new_event_loop()
    try:
        starting = launcher._starting["key"] = loop.create_future()
        launcher.live["key"] = _Live(key="key", record={"id": "not-started", "port": 1}, folder=tmp_path,
                                     secret_file=tmp_path / "secret", last_active=time.monotonic() - 60)
        assert launcher.reap() == [] and "key" in launcher.live
        starting.set_result(launcher.live["key"])
        assert launcher.reap() == ["key"] and launcher.live == {}
    finally:
        loop.close()


def test_a_session_answering_a_request_is_not_idle(tmp_path):
    """An upload (or a slow open) still being forwarded is use, however long it takes; once it
    is answered the idle clock starts again from then."""
    from clinicalai.web.security import DataRoot

    launcher = Launcher(LauncherConfig(data=DataRoot.create(tmp_path), idle_timeout_s=1.0))
    live = launcher.live["key"] = _Live(key="key", record={"id": "not-started", "port": 1}, folder=tmp_path,
                                        secret_file=tmp_path / "secret", last_active=time.monotonic() - 60,
                                        requests_in_flight=1)
    assert launcher.reap() == [] and "key" in launcher.live
    live.requests_in_flight = 0
    assert launcher.reap() == ["key"] and launcher.live == {}


def _free_range(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports."""
    for base in range(23000, 60000, 97):
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def _session_pids(data: Path) -> dict:
    """pid -> session folder of the session processes serving folders under ``data``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--session-secret-file" in argv and b"--data" in argv:
            folder = argv[argv.index(b"--data") + 1].decode()
            if folder.startswith(str(data)):
                found[int(entry.name)] = folder
    return found


@pytest.fixture(scope="module")
def front(tmp_path_factory, browser):
    base = tmp_path_factory.mktemp("multi")
    data = base / "data"
    data.mkdir()
    images = base / "images"
    from clinicalai.phantoms.brain import brain_case
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.volume.io import write_volume

    port = _free_range(3)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = base / "front.log"
    proc = launch_server(data, port, log, ["--multi-user", "--session-ports", f"{port + 1}-{port + 2}",
                                           "--idle-timeout-min", str(IDLE_MIN)], env=env)
    # the two volumes the browsers upload (the other sample files are not needed here)
    images.mkdir()
    write_volume(cardiac_case(0).image, images / "cardiac.nii.gz")
    write_volume(brain_case(1, pathological=True).image, images / "brain.nii.gz")
    deadline = time.monotonic() + 60
    while "ClinicalAI web (multi-user): serving" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    yield {"url": f"http://127.0.0.1:{port}/", "data": data, "images": images, "proc": proc, "log": log}
    stop_server(proc)
    assert _session_pids(data) == {}, "stopping the front stops every session"


def _open_both(browser, url: str) -> list:
    """Two browsers (contexts: cookie jars) opening ``url`` at the same time: both sessions start
    together; ``[(context, page), ...]`` once both pages show their data panel."""
    opened = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        context.add_init_script(KEEP_ALIVE)
        page = context.new_page()
        page.set_default_timeout(120_000)
        opened.append((context, page))
        # a path that starts no session (410 at once): the page is then on the front's origin,
        # so the next navigation is same-site and carries the session cookie (SameSite=Strict)
        # through the front's redirect
        page.goto(url + "no-session")
        # navigate without waiting: the front answers only once this browser's session runs
        page.evaluate("u => { window.location.href = u; }", url)
    for _context, page in opened:
        page.wait_for_selector("#data-upload", state="attached")
    return opened


def _wait_text(front: dict, page, selector: str, pattern: str) -> None:
    """:func:`wait_text` (2 minutes) that, when it times out, says what the page and the front
    saw: the page's error line, the sessions running, the end of the front's log."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        wait_text(page, selector, pattern, timeout_ms=120_000)
    except PlaywrightTimeout:
        shown = page.evaluate(f"() => {{ const e = document.querySelector({selector!r}); return e && e.textContent; }}")
        error = page.evaluate("() => window.trame && window.trame.state.get('ca_error')")
        raise AssertionError(f"{selector} never matched {pattern!r} (shows {shown!r}; page error {error!r}; "
                             f"sessions {_session_pids(front['data'])}); front log:\n"
                             + front["log"].read_text()[-3000:]) from None


@pytest.mark.browser
@pytest.mark.slow
def test_two_browsers_have_isolated_sessions(browser, front):
    (ctx_a, a), (ctx_b, b) = _open_both(browser, front["url"])
    try:
        sessions = _session_pids(front["data"])
        assert len(sessions) == 2 and len(set(sessions.values())) == 2, sessions
        # both upload at the same time: each into its own session and folder
        a.set_input_files("#data-upload", str(front["images"] / "cardiac.nii.gz"))
        b.set_input_files("#data-upload", str(front["images"] / "brain.nii.gz"))
        _wait_text(front, a, "#volume-name", "cardiac")
        _wait_text(front, b, "#volume-name", "brain")
        files_a = a.evaluate("() => window.trame.state.get('ca_data_files').map(f => f.path)")
        files_b = b.evaluate("() => window.trame.state.get('ca_data_files').map(f => f.path)")
        assert files_a == ["uploads/cardiac.nii.gz"] and files_b == ["uploads/brain.nii.gz"], (files_a, files_b)
        folder_of = {Path(f).name: f for f in sessions.values()}
        uploaded = sorted(p.relative_to(front["data"]).as_posix() for p in front["data"].glob("sessions/*/uploads/*"))
        assert len(uploaded) == 2 and len({u.split("/")[1] for u in uploaded}) == 2, uploaded
        assert a.inner_text("#volume-name") == "cardiac", "the other browser's upload did not reach this one"
        now = _session_pids(front["data"])
        assert now == sessions, f"a session whose page is in use was stopped: {sessions} -> {now}"
        # kill A's session process (its page quiet first): B goes on working
        a.evaluate(QUIET)
        pid_a = next(pid for pid, f in sessions.items() if (Path(f) / "uploads" / "cardiac.nii.gz").exists())
        os.kill(pid_a, signal.SIGKILL)
        b.evaluate("() => window.trame.state.set('ca_message', '')")
        b.fill("#data-path", "uploads/brain.nii.gz")
        b.click("#data-open")
        _wait_text(front, b, "#info-alert", "opened uploads/brain.nii.gz")
        assert pid_a not in _session_pids(front["data"]) and len(_session_pids(front["data"])) == 1
        assert folder_of, "folders recorded"
        # B's page goes quiet (still open and connected): its session is stopped after the idle
        # timeout (the reaper's period on top)
        b.evaluate(QUIET)
        deadline = time.monotonic() + IDLE_MIN * 60 + 60
        while _session_pids(front["data"]):
            assert time.monotonic() < deadline, f"the idle session was not stopped: {_session_pids(front['data'])}"
            time.sleep(0.5)
        assert (front["data"] / "sessions").is_dir() and len(uploaded) == 2
        assert all((front["data"] / u).exists() for u in uploaded), "a stopped session's folder is kept"
        assert front["proc"].poll() is None, "the front is still serving"
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(front["url"] + "no-session", timeout=30)
        assert answer.value.code == 410, "the front answers after its sessions ended"
    finally:
        ctx_a.close()
        ctx_b.close()
