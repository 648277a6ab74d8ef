"""Issue 15, oversized websocket messages, end to end: a real ``clinicalai web`` server on
loopback (its own process, so its memory figures are this test's alone), an aiohttp websocket
client with the token and a same-site Origin that authenticates as the page does
(``wslink.hello``), then sends what a hostile client would: a chunk header declaring a 4 GiB
message, one frame over the cap, and a flood of unfinished chunked messages. Each closes that
connection only, the server reserves nothing beyond the cap (its peak virtual size, which any
reservation of the declared size would raise by gigabytes), and afterwards it still answers a
page and a new websocket, and a connection opened before the attack still works.

``test_hostile.py`` checks the bounded re-assembly class itself; this checks it is the one the
running server uses, together with aiohttp's per-frame limit."""

from __future__ import annotations

import asyncio
import itertools
import os
import urllib.request
from pathlib import Path
from typing import Any, Dict

import pytest

from clinicalai.web.page_driver import free_port, launch_server, stop_server, wait_for_server
from clinicalai.web.security import WS_MAX_MESSAGE_BYTES

aiohttp = pytest.importorskip("aiohttp")
msgpack = pytest.importorskip("msgpack")
pytest.importorskip("trame_slicer", reason="the web server needs trame-slicer (pip install -e .[web])")


def _run(scenario, timeout_s: float) -> None:
    """Run the client ``scenario`` on a fresh event loop in its own thread: in the full suite an
    earlier test can leave an event loop running in the main thread (Playwright's sync API
    does), where ``asyncio.run`` refuses to start."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, asyncio.wait_for(scenario(), timeout_s)).result()


TOKEN = "ws-test-token-0123456789abcdef"
#: trame's default wslink secret: what its page sends in ``wslink.hello``
WSLINK_SECRET = "wslink-secret"
#: every wait on the server is bounded: a server that does not close a connection fails the test
TIMEOUT_S = 15.0
#: growth of the server's peak virtual size that would show a reservation of a declared
#: message (4 GiB) or of the flood (300 x 4 MiB); the bounded server stays near 16 MiB.
MAX_GROWTH_BYTES = 512 * 1024 * 1024
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory) -> Dict[str, Any]:
    """A ``clinicalai web`` server with a token on a free loopback port, an empty data folder."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's memory figures")
    base = tmp_path_factory.mktemp("ws")
    (base / "data").mkdir()
    port = free_port()
    log = base / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = launch_server(base / "data", port, log, ["--token", TOKEN], env=env)
    url = wait_for_server(proc, port, log, token=TOKEN, timeout_s=90)
    yield {"url": url, "port": port, "proc": proc, "log": log}
    stop_server(proc)


def _headers(port: int) -> Dict[str, str]:
    """What the page's websocket hand-shake carries: the token and its own site as Origin."""
    return {"Authorization": f"Bearer {TOKEN}", "Origin": f"http://127.0.0.1:{port}"}


def _peak_virtual_bytes(pid: int) -> int:
    """``VmPeak`` of a process: the most address space it ever reserved (never goes down, so a
    reservation freed at once on close still shows)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmPeak in /proc status")


async def _send_message(ws, message: Dict[str, Any], chunk_bytes: int = 512 * 1024) -> None:
    """Send one wslink message the way the page does: msgpack, split into chunks with headers."""
    from wslink.chunking import generate_chunks

    for chunk in generate_chunks(msgpack.packb(message), chunk_bytes):
        await ws.send_bytes(chunk)


async def _hello(ws, pad_bytes: int = 0) -> Dict[str, Any]:
    """Authenticate as the page does (``wslink.hello`` with the secret, optionally padded to
    make the message large) and return the server's answer."""
    from wslink.chunking import UnChunker

    rpc_id = f"system:c0:{next(_ids)}"
    await _send_message(ws, {"wslink": "1.0", "id": rpc_id, "method": "wslink.hello",
                             "args": [{"secret": WSLINK_SECRET, "pad": b"x" * pad_bytes}], "kwargs": {}})
    unchunker = UnChunker()
    unchunker.set_max_message_size(64 * 1024 * 1024)  # the client's own; the server's answers are small
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
        assert msg.type == aiohttp.WSMsgType.BINARY, f"the server answered {msg.type} instead of a message"
        answer = unchunker.process_chunk(msg.data)
        if answer is not None and answer.get("id") == rpc_id:
            return answer


async def _closed_by_server(ws, attack) -> bool:
    """Run ``attack(ws)`` and wait (bounded) until the server ends the connection. The server
    may reset it while the client is still sending: that counts as closed too."""
    try:
        await attack(ws)
    except (ConnectionError, aiohttp.ClientError):
        return True
    while True:
        try:
            msg = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
        except asyncio.TimeoutError:
            return False
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR):
            return True


async def _declare_huge_message(ws) -> None:
    """One chunk whose header declares a message of 4 GiB - 1 (the most a header can say)."""
    from wslink.chunking import _encode_header

    await ws.send_bytes(_encode_header(7, 0, 0xFFFFFFFF) + b"x" * 100)


async def _frame_over_the_cap(ws) -> None:
    """A complete, well-formed wslink message of the cap + 1 MiB in one websocket frame
    (aiohttp's per-frame limit; without it the server would take the message)."""
    from wslink.chunking import _encode_header

    body = msgpack.packb({"wslink": "1.0", "pad": b"x" * (WS_MAX_MESSAGE_BYTES + 1024 * 1024)})
    await ws.send_bytes(_encode_header(9, 0, len(body)) + body)


async def _declare_just_over_the_cap(ws) -> None:
    """A chunked message declaring one byte more than the cap, in small frames."""
    from wslink.chunking import _encode_header

    await ws.send_bytes(_encode_header(8, 0, WS_MAX_MESSAGE_BYTES + 1) + b"x" * 1000)


async def _flood_unfinished_messages(ws) -> None:
    """300 messages each declaring the cap and sending one byte: an unbounded server would
    reserve 1.2 GiB for messages that never finish."""
    from wslink.chunking import _encode_header

    for k in range(300):
        await ws.send_bytes(_encode_header(1000 + k, 0, WS_MAX_MESSAGE_BYTES) + b"x")


ATTACKS = {"declared 4 GiB": _declare_huge_message, "frame over the cap": _frame_over_the_cap,
           "declared cap + 1": _declare_just_over_the_cap, "flood of unfinished messages": _flood_unfinished_messages}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_oversized_websocket_messages_close_that_connection_only(ws_server, name):
    port, pid = ws_server["port"], ws_server["proc"].pid
    ws_url = f"ws://127.0.0.1:{port}/ws"

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url, headers=_headers(port), max_msg_size=0) as bystander:
                assert "clientID" in (await _hello(bystander))["result"]
                peak_before = _peak_virtual_bytes(pid)
                async with session.ws_connect(ws_url, headers=_headers(port), max_msg_size=0) as attacker:
                    assert "clientID" in (await _hello(attacker))["result"], "authenticated like a page"
                    assert await _closed_by_server(attacker, ATTACKS[name]), f"{name}: the connection stayed open"
                grown = _peak_virtual_bytes(pid) - peak_before
                assert grown < MAX_GROWTH_BYTES, f"{name}: the server reserved {grown / 2**20:.0f} MiB"
                # the other connection (another tab) is untouched, and a new one works
                assert "clientID" in (await _hello(bystander))["result"]
            async with session.ws_connect(ws_url, headers=_headers(port), max_msg_size=0) as fresh:
                assert "clientID" in (await _hello(fresh))["result"]

    _run(scenario, 4 * TIMEOUT_S)
    assert ws_server["proc"].poll() is None, "the server is alive"
    request = urllib.request.Request(ws_server["url"] + "index.html", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as page:
        assert page.status == 200


def test_a_message_just_under_the_cap_is_accepted(ws_server):
    """The cap does not stop what a page may legitimately send once authenticated (before
    ``wslink.hello`` wslink allows 512 bytes): a 3 MiB message in chunks."""
    port = ws_server["port"]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/ws", headers=_headers(port)) as ws:
                await _hello(ws)
                answer = await _hello(ws, pad_bytes=WS_MAX_MESSAGE_BYTES - 1024 * 1024)
                assert "clientID" in answer["result"]

    _run(scenario, 2 * TIMEOUT_S)
