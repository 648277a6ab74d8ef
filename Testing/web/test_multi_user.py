"""``clinicalai web --multi-user``: each browser has its own server process and folder.

Two real browsers (two Playwright contexts: two cookie jars) open different volumes at the same
time through one front; neither sees the other's volume or files; killing one session's process
leaves the other working; an idle session is stopped. Plus the fast parts without a browser:
the ``--users`` file and the port list."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from clinicalai.errors import InputError
from clinicalai.web.launcher import parse_ports, read_users
from clinicalai.web.page_driver import launch_server, stop_server, wait_text

IDLE_MIN = 0.75  # 45 s: long enough for both sessions to start on a busy 2-core machine


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
    from clinicalai.web.sample_data import write_sample_data

    port = _free_range(3)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = base / "front.log"
    proc = launch_server(data, port, log, ["--multi-user", "--session-ports", f"{port + 1}-{port + 2}",
                                           "--idle-timeout-min", str(IDLE_MIN)], env=env)
    write_sample_data(images)
    deadline = time.monotonic() + 60
    while "ClinicalAI web (multi-user): serving" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    yield {"url": f"http://127.0.0.1:{port}/", "data": data, "images": images, "proc": proc, "log": log}
    stop_server(proc)
    assert _session_pids(data) == {}, "stopping the front stops every session"


def _open(browser, url: str):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)  # starts this browser's session (seconds) and serves its page
    page.wait_for_selector("#data-upload", state="attached")
    return context, page


@pytest.mark.browser
@pytest.mark.slow
def test_two_browsers_have_isolated_sessions(browser, front):
    ctx_a, a = _open(browser, front["url"])
    ctx_b, b = _open(browser, front["url"])
    try:
        sessions = _session_pids(front["data"])
        assert len(sessions) == 2 and len(set(sessions.values())) == 2, sessions
        # both upload at the same time: each into its own session and folder
        a.set_input_files("#data-upload", str(front["images"] / "cardiac.nii.gz"))
        b.set_input_files("#data-upload", str(front["images"] / "brain.nii.gz"))
        wait_text(a, "#volume-name", "cardiac", timeout_ms=120_000)
        wait_text(b, "#volume-name", "brain", timeout_ms=120_000)
        files_a = a.evaluate("() => window.trame.state.get('ca_data_files').map(f => f.path)")
        files_b = b.evaluate("() => window.trame.state.get('ca_data_files').map(f => f.path)")
        assert files_a == ["uploads/cardiac.nii.gz"] and files_b == ["uploads/brain.nii.gz"], (files_a, files_b)
        folder_of = {Path(f).name: f for f in sessions.values()}
        uploaded = sorted(p.relative_to(front["data"]).as_posix() for p in front["data"].glob("sessions/*/uploads/*"))
        assert len(uploaded) == 2 and len({u.split("/")[1] for u in uploaded}) == 2, uploaded
        assert a.inner_text("#volume-name") == "cardiac", "the other browser's upload did not reach this one"
        # kill A's session process: B goes on working
        pid_a = next(pid for pid, f in sessions.items() if (Path(f) / "uploads" / "cardiac.nii.gz").exists())
        os.kill(pid_a, signal.SIGKILL)
        b.evaluate("() => window.trame.state.set('ca_message', '')")
        b.fill("#data-path", "uploads/brain.nii.gz")
        b.click("#data-open")
        wait_text(b, "#info-alert", "opened uploads/brain.nii.gz")
        assert pid_a not in _session_pids(front["data"]) and len(_session_pids(front["data"])) == 1
        assert folder_of, "folders recorded"
        # B left alone: its session is stopped after the idle timeout (the reaper's period on top)
        deadline = time.monotonic() + IDLE_MIN * 60 + 30
        while _session_pids(front["data"]):
            assert time.monotonic() < deadline, "the idle session was not stopped"
            time.sleep(1)
        assert (front["data"] / "sessions").is_dir() and len(uploaded) == 2
        assert all((front["data"] / u).exists() for u in uploaded), "a stopped session's folder is kept"
        assert front["proc"].poll() is None, "the front is still serving"
    finally:
        ctx_a.close()
        ctx_b.close()
