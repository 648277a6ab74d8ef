"""``clinicalai web``: serve the three panels in a browser."""

from __future__ import annotations

import argparse

from ..errors import InputError
from . import security


def register(commands) -> None:
    p = commands.top.add_parser(
        "web",
        help="the SegCorrect, PetRecurrence and AttributionViewer panels in a browser (trame-slicer)",
        description=(
            "Serve the panels in a browser. Listens on 127.0.0.1 by default; any other --host needs an "
            f"access token (--token or ${security.TOKEN_ENV}). Only files inside --data are opened or saved."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--data", default=".", help="folder the browser may open images from and save results to (default: .)")
    p.add_argument(
        "--token",
        default=None,
        help=f"access token required from every browser (default ${security.TOKEN_ENV}); mandatory beyond loopback",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=security.DEFAULT_MAX_UPLOAD_MB,
        help=f"largest accepted upload in MiB (default {security.DEFAULT_MAX_UPLOAD_MB})",
    )
    p.add_argument(
        "--quota-gb",
        type=float,
        default=security.DEFAULT_QUOTA_GB,
        help=f"GiB allowed under uploads/ and results/ together, per session folder in --multi-user "
             f"(default {security.DEFAULT_QUOTA_GB:g}; 0 = no quota)",
    )
    m = p.add_argument_group("several users on one server (see docs/web.md, Deployment)")
    m.add_argument("--multi-user", action="store_true",
                   help="one isolated server process per browser session (per user with --users); "
                        "each has its own folder under --data")
    m.add_argument("--users", metavar="FILE", help="with --multi-user: 'USER TOKEN' lines; each user logs in with their token "
                                                    "and has one session and the folder <data>/users/USER")
    m.add_argument("--max-sessions", type=int, default=4, help="with --multi-user: sessions at the same time (default 4)")
    m.add_argument("--session-ports", metavar="A-B",
                   help="with --multi-user: loopback ports of the sessions (default: the --max-sessions ports after --port)")
    m.add_argument("--idle-timeout-min", type=float, default=30.0,
                   help="with --multi-user: stop a session after this many minutes without use (default 30)")
    # set by the multi-user launcher for its session processes (not for people)
    p.add_argument("--session-secret-file", help=argparse.SUPPRESS)
    p.add_argument("--idle-exit-s", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.session_secret_file:
        token = _read_secret_file(args.session_secret_file)
    else:
        token = security.resolve_token(args.token)
    users = None
    if args.users:
        if not args.multi_user:
            raise security.AccessError("--users needs --multi-user")
        from .launcher import read_users  # aiohttp: only for the multi-user launcher

        users = read_users(args.users)
    # refuse a bad binding before importing trame / Slicer (seconds) so the message is immediate
    security.check_bind(args.host, token or (users and "users"))
    if not (0 <= args.port <= 65535):
        raise security.AccessError(f"--port {args.port}: not a TCP port")
    if args.max_upload_mb <= 0:
        raise security.AccessError("--max-upload-mb must be positive")
    if args.quota_gb < 0:
        raise security.AccessError("--quota-gb must be zero (no quota) or positive")
    data = security.DataRoot.create(args.data)
    _check_port_free(args.host, args.port)
    if args.multi_user:
        return _run_multi_user(args, data, token, users)
    import os

    if not os.environ.get("DISPLAY"):
        # a server has no X display: render offscreen with EGL straight away (Mesa llvmpipe
        # without a GPU) instead of VTK trying X first
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from .app import WebConfig, serve  # trame + Slicer: after the checks above, so their errors come at once

    serve(WebConfig(data=data, host=args.host, port=args.port, token=token, max_upload_mb=args.max_upload_mb,
                    quota_gb=args.quota_gb or None, idle_timeout_s=max(0, args.idle_exit_s)))
    return 0


def _read_secret_file(path: str) -> str:
    """A session's token, written by the multi-user launcher (0600; never on a command line)."""
    try:
        secret = open(path, encoding="utf-8").read().strip()
    except OSError as exc:
        raise security.AccessError(f"cannot read the session secret: {exc}") from None
    return security.resolve_token(secret)


def _run_multi_user(args: argparse.Namespace, data, token, users) -> int:
    from .launcher import LauncherConfig, parse_ports, serve_multi_user  # aiohttp: only for this command

    if args.max_sessions < 1:
        raise security.AccessError("--max-sessions must be at least 1")
    if args.idle_timeout_min <= 0:
        raise security.AccessError("--idle-timeout-min must be positive")
    ports = parse_ports(args.session_ports) if args.session_ports else [args.port + 1 + i for i in range(args.max_sessions)]
    if args.port in ports:
        raise security.AccessError(f"--session-ports must not include --port {args.port}")
    session_args = ["--max-upload-mb", f"{args.max_upload_mb:g}", "--quota-gb", f"{args.quota_gb:g}"]
    serve_multi_user(LauncherConfig(data=data, host=args.host, port=args.port, token=None if users else token, users=users,
                                    session_ports=ports, idle_timeout_s=args.idle_timeout_min * 60,
                                    session_args=session_args))
    return 0


def _check_port_free(host: str, port: int) -> None:
    """A clear message instead of a traceback deep in aiohttp when the port is taken."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None
