"""``clinicalai web --multi-user``: one isolated server process per browser session.

A single ``clinicalai web`` process holds one MRML scene: every tab shares it. For a shared
server, this front process starts a separate ``clinicalai web`` *session* process for each
browser (or, with a ``--users`` file, for each user) and forwards that browser's requests and
websocket to it:

* **sessions** are started, counted and stopped with wslink's own launcher components
  (:mod:`wslink.launcher`): ``SessionManager`` (ids, per-session secret, the command line from
  a template), ``ResourceManager`` (one port per session from ``--session-ports``: the cap on
  concurrent sessions), ``ProcessManager`` (start, "ready" line in the log, stop) and the
  proxy mapping file (``<data>/.launcher/proxy-mapping.txt``, the format Apache's RewriteMap
  reads, for sites that route to the sessions with their own proxy);
* a session process listens on 127.0.0.1 only and needs its own random token, which only this
  front knows (written to a 0600 file, never on a command line);
* each session's ``--data`` is its own folder: ``<data>/users/<user>`` with a ``--users``
  file, else ``<data>/sessions/<random id>``; uploads, results and the quota are per folder;
* the browser finds its session by an HttpOnly cookie holding an unguessable key (or by its
  user's token); a session with no request or websocket message from its browser for
  ``--idle-timeout-min`` is stopped, and so is one whose process ended.

Why the forwarding is written here: wslink's launcher only starts processes and returns their
address (its deployments put Apache in front, routing with the mapping file); wslink's
``relay.py`` forwards one fixed address. Routing each browser to its own process on one port
needs the few lines of :func:`_proxy_http` / :func:`_proxy_ws`.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

from ..errors import InputError
from . import http as web_http
from . import security
from .security import DataRoot

SESSION_COOKIE = "clinicalai_session"
READY_LINE = "ClinicalAI web: serving"
#: request headers not forwarded to a session (hop-by-hop, and the front's own credentials)
_DROP_REQUEST = {"host", "origin", "cookie", "authorization", "connection", "upgrade", "keep-alive",
                 "proxy-authorization", "te", "trailer", "transfer-encoding", "content-length",
                 "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "set-cookie"}
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def read_users(path: "str | os.PathLike[str]") -> Dict[str, str]:
    """The ``--users`` file: one ``USER TOKEN`` per line (``#`` comments); token -> user.

    Raises :class:`InputError` naming the line at fault (bad name, short token, repeats)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--users {path}: cannot be read ({exc})") from None
    users: Dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"--users {p.name} line {number}: expected 'USER TOKEN'")
        user, token = parts
        if not _USER_NAME.match(user):
            raise InputError(f"--users {p.name} line {number}: user names are letters, digits, '.', '_' or '-'")
        if len(token) < security.MIN_TOKEN_LENGTH:
            raise InputError(f"--users {p.name} line {number}: the token is shorter than {security.MIN_TOKEN_LENGTH} characters")
        if token in users:
            raise InputError(f"--users {p.name} line {number}: this token is already given to {users[token]}")
        users[token] = user
    if not users:
        raise InputError(f"--users {p.name}: no 'USER TOKEN' lines")
    return users


def parse_ports(text: str) -> List[int]:
    """``"9001-9004"`` -> ``[9001, ..., 9004]`` (also a comma list)."""
    ports: List[int] = []
    try:
        for part in str(text).split(","):
            lo, _, hi = part.strip().partition("-")
            ports.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InputError(f"--session-ports {text!r}: expected a range like 9001-9004") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise InputError(f"--session-ports {text!r}: not TCP ports")
    return ports


@dataclass
class LauncherConfig:
    data: DataRoot
    host: str = "127.0.0.1"
    port: int = 8080
    token: Optional[str] = None
    #: token -> user (``--users``); each user has one session and one folder
    users: Optional[Dict[str, str]] = None
    #: one port per concurrent session (the cap)
    session_ports: List[int] = field(default_factory=lambda: [8081, 8082, 8083, 8084])
    idle_timeout_s: float = 1800.0
    start_timeout_s: float = 180.0
    #: passed on to every session (``--max-upload-mb``, ``--quota-gb``)
    session_args: List[str] = field(default_factory=list)


@dataclass
class _Live:
    """One running session: wslink's session record plus what the front needs."""

    key: str
    record: dict
    folder: Path
    secret_file: Path
    last_active: float = field(default_factory=time.monotonic)
    sockets: set = field(default_factory=set)
    #: HTTP requests being forwarded to it now (an upload of a large file on a slow link, or one
    #: the session takes long to open, may outlast the idle timeout: the session is in use)
    requests_in_flight: int = 0

    @property
    def port(self) -> int:
        return int(self.record["port"])


class Launcher:
    """The sessions of the front process (wslink's managers underneath)."""

    def __init__(self, config: LauncherConfig) -> None:
        from wslink.launcher import ProcessManager, ProxyMappingManagerTXT, SessionManager

        self.config = config
        self.state_dir = config.data.root / ".launcher"  # hidden: never listed, outside every session's folder
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        wslink_config = {
            "configuration": {
                "host": config.host, "port": config.port, "endpoint": "session", "content": "",
                "proxy_file": str(self.state_dir / "proxy-mapping.txt"),
                "sessionURL": "ws://${host}:${port}/ws", "timeout": int(config.start_timeout_s),
                "log_dir": str(self.state_dir), "fields": [], "sanitize": {},
            },
            # one resource per port: the ports need not be contiguous
            "resources": [{"host": "127.0.0.1", "port_range": [p, p]} for p in config.session_ports],
            "properties": {"python": sys.executable},
            "apps": {
                "clinicalai": {
                    "cmd": ["${python}", "-m", "clinicalai", "web", "--host", "127.0.0.1", "--port", "${port}",
                            "--data", "${folder}", "--session-secret-file", "${secret_file}",
                            "--idle-exit-s", str(int(max(config.idle_timeout_s, 60))),
                            *config.session_args],
                    "ready_line": READY_LINE,
                }
            },
        }
        self.sessions = SessionManager(wslink_config, ProxyMappingManagerTXT(wslink_config["configuration"]["proxy_file"]))
        self.processes = ProcessManager(wslink_config)
        self.live: Dict[str, _Live] = {}
        self._starting: Dict[str, asyncio.Future] = {}

    # ------------------------------------------------------------------ sessions
    def folder_of(self, key: str, user: str) -> Path:
        """``<data>/users/<user>`` or ``<data>/sessions/<key>`` (created)."""
        folder = self.config.data.root / ("users" if user else "sessions") / (user or key)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def session_for(self, key: str, user: str) -> _Live:
        """The live session of ``key``, started (and waited for) when there is none."""
        live = self.live.get(key)
        if live is not None and self.processes.isRunning(live.record["id"]):
            return live
        if live is not None:
            self.stop(key)
        if key not in self._starting:
            self._starting[key] = asyncio.ensure_future(self._start(key, user))
        try:
            return await asyncio.shield(self._starting[key])
        finally:
            if key in self._starting and self._starting[key].done():
                del self._starting[key]

    async def _start(self, key: str, user: str) -> _Live:
        self.reap()
        folder = self.folder_of(key, user)
        secret = secrets.token_urlsafe(24)
        secret_file = self.state_dir / f"{secrets.token_hex(8)}.secret"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        record = self.sessions.createSession({"application": "clinicalai", "secret": secret,
                                              "folder": str(folder), "secret_file": str(secret_file)})
        if record is None:
            secret_file.unlink(missing_ok=True)
            raise web_http_error(503, f"all {len(self.config.session_ports)} sessions of this server are in use; "
                                      "try again when a colleague has finished (idle sessions end after "
                                      f"{self.config.idle_timeout_s / 60:g} minutes)")
        if self.processes.startProcess(record) is None:
            self.sessions.deleteSession(record["id"])
            secret_file.unlink(missing_ok=True)
            raise web_http_error(503, "the session process could not be started; see the server's log")
        live = _Live(key=key, record=record, folder=folder, secret_file=secret_file)
        self.live[key] = live
        deadline = time.monotonic() + self.config.start_timeout_s
        while not self._ready(record):
            if not self.processes.isRunning(record["id"]) or time.monotonic() > deadline:
                self.stop(key)
                raise web_http_error(503, "the session did not start; see the server's log")
            await asyncio.sleep(0.5)
        live.last_active = time.monotonic()
        return live

    def _ready(self, record: dict) -> bool:
        log = Path(self.state_dir) / f"{record['id']}.txt"
        try:
            return READY_LINE in log.read_text(errors="replace")
        except OSError:
            return False

    def stop(self, key: str) -> None:
        """Stop the session of ``key``: its process, its sockets, its records (not its folder)."""
        live = self.live.pop(key, None)
        if live is None:
            return
        session_id = live.record["id"]
        if session_id in self.processes.processes:
            proc = self.processes.processes[session_id]
            self.processes.stopProcess(session_id)
            try:
                proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - it would not stop politely
                proc.kill()
        if self.sessions.getSession(session_id) is not None:
            self.sessions.deleteSession(session_id)
        live.secret_file.unlink(missing_ok=True)
        for ws in list(live.sockets):
            asyncio.ensure_future(ws.close(message=b"session ended"))

    def reap(self) -> List[str]:
        """Stop idle sessions and forget ended ones; the keys stopped."""
        now = time.monotonic()
        stopped = []
        for key, live in list(self.live.items()):
            starting = self._starting.get(key)
            if starting is not None and not starting.done():
                continue  # its browser is waiting for it to start (which may take longer than the idle timeout)
            session_id = live.record["id"]
            ended = session_id in self.processes.processes and not self.processes.isRunning(session_id)
            idle = live.requests_in_flight == 0 and now - live.last_active > self.config.idle_timeout_s
            if ended or idle:
                # the front's log is what an administrator (or a failed test) reads to see why
                # a user's session went away
                why = "its process ended" if ended else f"idle for {now - live.last_active:.0f} s"
                print(f"ClinicalAI web (multi-user): session {live.folder.name} stopped: {why}", flush=True)
                self.stop(key)
                stopped.append(key)
        return stopped

    def stop_all(self) -> None:
        for key in list(self.live):
            self.stop(key)

    def pid_of(self, key: str) -> Optional[int]:
        live = self.live.get(key)
        proc = live and self.processes.processes.get(live.record["id"])
        return proc.pid if proc else None


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def web_http_error(status: int, message: str) -> _HttpError:
    return _HttpError(status, message)


# ---------------------------------------------------------------------- forwarding
async def _proxy_http(request: web.Request, live: _Live, client: ClientSession) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["Authorization"] = f"Bearer {live.record['secret']}"
    url = f"http://127.0.0.1:{live.port}{request.rel_url}"
    body = request.content if request.body_exists else None
    async with client.request(request.method, url, headers=headers, data=body, allow_redirects=False) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in _DROP_RESPONSE:
                response.headers.add(k, v)
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(1 << 16):
            await response.write(chunk)
        await response.write_eof()
        return response


async def _proxy_ws(request: web.Request, live: _Live, client: ClientSession) -> web.WebSocketResponse:
    """Browser <-> session websocket; messages from the browser count as activity and are
    bounded like the session's own limit (:data:`security.WS_MAX_MESSAGE_BYTES`)."""
    browser = web.WebSocketResponse(max_msg_size=security.WS_MAX_MESSAGE_BYTES + 4096, heartbeat=30)
    await browser.prepare(request)
    headers = {"Authorization": f"Bearer {live.record['secret']}"}
    url = f"ws://127.0.0.1:{live.port}{request.rel_url}"
    live.sockets.add(browser)
    try:
        async with client.ws_connect(url, headers=headers, max_msg_size=0, autoping=True) as session_ws:
            async def to_session() -> None:
                async for msg in browser:
                    live.last_active = time.monotonic()
                    if msg.type == WSMsgType.BINARY:
                        await session_ws.send_bytes(msg.data)
                    elif msg.type == WSMsgType.TEXT:
                        await session_ws.send_str(msg.data)
                await session_ws.close()

            async def to_browser() -> None:
                async for msg in session_ws:
                    if msg.type == WSMsgType.BINARY:
                        await browser.send_bytes(msg.data)
                    elif msg.type == WSMsgType.TEXT:
                        await browser.send_str(msg.data)
                await browser.close()

            tasks = [asyncio.ensure_future(to_session()), asyncio.ensure_future(to_browser())]
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
    except Exception:  # noqa: BLE001 - the session went away: close the browser's side
        pass
    finally:
        live.sockets.discard(browser)
        if not browser.closed:
            await browser.close()
    return browser


def make_front_app(launcher: Launcher) -> web.Application:
    """The front aiohttp application: the HTTP guard, then every path forwarded to the
    browser's own session."""
    config = launcher.config
    http_config = web_http.HttpConfig(data=config.data, host=config.host, port=config.port, token=config.token,
                                      max_upload_bytes=0, users=config.users)
    app = web.Application(client_max_size=1024**2)
    app.middlewares.append(web_http.make_middleware(http_config))
    state: dict = {}

    async def startup(_app: web.Application) -> None:
        state["client"] = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10))

        async def reaper() -> None:
            while True:
                await asyncio.sleep(min(5.0, max(0.5, config.idle_timeout_s / 4)))
                launcher.reap()

        state["reaper"] = asyncio.ensure_future(reaper())

    async def cleanup(_app: web.Application) -> None:
        state["reaper"].cancel()
        launcher.stop_all()
        await state["client"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        user = request.get(web_http.USER_KEY, "")
        key = user or request.cookies.get(SESSION_COOKIE, "")
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        new_cookie = None
        if not user and (not key or key not in launcher.live):
            if is_ws or request.path not in ("/", "/index.html"):
                return web.json_response({"error": "your session has ended: reload the page to start a new one"}, status=410)
            key = new_cookie = secrets.token_urlsafe(24)
        try:
            live = await launcher.session_for(key, user)
        except _HttpError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        live.last_active = time.monotonic()
        if is_ws:
            return await _proxy_ws(request, live, state["client"])
        if new_cookie is not None:
            # the page is served after a redirect that carries the cookie (a streamed response
            # cannot add it once started)
            response = web.Response(status=302, headers={"Location": str(request.rel_url)})
            response.set_cookie(SESSION_COOKIE, new_cookie, httponly=True, samesite="Strict", path="/")
            return response
        live.requests_in_flight += 1
        try:
            return await _proxy_http(request, live, state["client"])
        finally:
            live.requests_in_flight -= 1
            live.last_active = time.monotonic()

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_route("*", "/{tail:.*}", forward)
    app["launcher"] = launcher
    return app


def serve_multi_user(config: LauncherConfig) -> None:
    """Run the front until interrupted (blocking); stops every session on the way out."""
    security.check_bind(config.host, config.token or (config.users and "users"))
    launcher = Launcher(config)
    url_host = config.host if ":" not in config.host else f"[{config.host}]"
    who = f"{len(config.users)} users" if config.users else ("a shared token" if config.token else "no token (loopback)")
    print(f"ClinicalAI web (multi-user): serving {config.data.root} at http://{url_host}:{config.port}/ "
          f"with {who}, up to {len(config.session_ports)} sessions", flush=True)
    try:
        web.run_app(make_front_app(launcher), host=config.host, port=config.port, print=None)
    finally:
        launcher.stop_all()
