"""``clinicalai web``: serve the three panels in a browser."""

from __future__ import annotations

import argparse

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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    token = security.resolve_token(args.token)
    # refuse a bad binding before importing trame / Slicer (seconds) so the message is immediate
    security.check_bind(args.host, token)
    if not (0 <= args.port <= 65535):
        raise security.AccessError(f"--port {args.port}: not a TCP port")
    if args.max_upload_mb <= 0:
        raise security.AccessError("--max-upload-mb must be positive")
    data = security.DataRoot.create(args.data)
    _check_port_free(args.host, args.port)
    import os

    if not os.environ.get("DISPLAY"):
        # a server has no X display: render offscreen with EGL straight away (Mesa llvmpipe
        # without a GPU) instead of VTK trying X first
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from .app import WebConfig, serve

    serve(WebConfig(data=data, host=args.host, port=args.port, token=token, max_upload_mb=args.max_upload_mb))
    return 0


def _check_port_free(host: str, port: int) -> None:
    """A clear message instead of a traceback deep in aiohttp when the port is taken."""
    import socket

    from ..errors import InputError

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None
