"""The HTTP side of the browser app: access control, uploads and downloads.

trame serves its page and websocket with ``aiohttp`` (through wslink). Before the server
starts, :func:`install` adds to that application:

* a middleware that checks every request, the websocket hand-shake included: with a token,
  the request must carry it (``?token=`` once, then an HttpOnly cookie, or an
  ``Authorization: Bearer`` header); always, the ``Host`` header must name this server (DNS
  rebinding) and a websocket or POST from another web site (``Origin``) is refused;
* ``POST /api/upload?name=F``: a volume streamed into ``<data>/uploads`` under the size limit;
* ``GET /api/download?path=results/F``: a saved result, as an attachment.

Nothing else reads files: patient images reach the browser only as rendered views, and as
files only through an explicit download.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from aiohttp import web

from . import security
from .security import AccessError, DataRoot

log = logging.getLogger(__name__)

COOKIE = "clinicalai_token"


@dataclass
class HttpConfig:
    data: DataRoot
    host: str
    port: int
    token: Optional[str]
    max_upload_bytes: int
    #: called on the server loop with the relative path of an uploaded image or DICOM folder
    on_upload: Optional[Callable[[str], None]] = None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_middleware(config: HttpConfig):
    hosts = set(security.allowed_hosts(config.host, config.port)) if security.is_loopback(config.host) else None

    @web.middleware
    async def guard(request: web.Request, handler):
        if hosts is not None and request.host not in hosts:
            return _error(403, f"refused: this server answers to 127.0.0.1:{config.port} only (Host was {request.host!r})")
        origin = request.headers.get("Origin")
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if origin and (is_ws or request.method not in ("GET", "HEAD")):
            if urlsplit(origin).netloc != request.host:
                return _error(403, f"refused: a page from {origin} may not talk to this server")
        if config.token:
            given = request.query.get("token")
            if given is not None:
                if not security.token_matches(config.token, given):
                    return _error(401, "wrong access token: open the address printed by 'clinicalai web'")
                if request.method == "GET" and not is_ws:
                    # the token goes into a cookie and out of the address bar (and history)
                    query = {k: v for k, v in request.query.items() if k != "token"}
                    target = request.rel_url.with_query(query) if query else request.rel_url.with_query(None)
                    response = web.Response(status=302, headers={"Location": str(target)})
                    response.set_cookie(COOKIE, config.token, httponly=True, samesite="Strict", path="/")
                    return response
            else:
                auth = request.headers.get("Authorization", "")
                bearer = auth[7:] if auth.startswith("Bearer ") else None
                if not (security.token_matches(config.token, request.cookies.get(COOKIE))
                        or security.token_matches(config.token, bearer)):
                    return _error(401, "access token required: open the address printed by 'clinicalai web' (it ends in ?token=...)")
        return await handler(request)

    return guard


def make_routes(config: HttpConfig):
    async def upload(request: web.Request) -> web.Response:
        try:
            name = security.check_upload_name(request.query.get("name", ""))
        except AccessError as exc:
            return _error(400, str(exc))
        limit = config.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            # read and drop the body (nothing is stored) so the browser gets the message
            # instead of a reset connection
            async for _ in request.content.iter_chunked(1 << 20):
                pass
            return _error(413, f"refused upload {name!r}: {request.content_length / 2**20:.1f} MiB is over the limit of {limit / 2**20:g} MiB")
        uploads = config.data.folder(security.UPLOAD_DIR)
        target = config.data.resolve(f"{security.UPLOAD_DIR}/{name}")
        tmp = tempfile.NamedTemporaryFile(dir=uploads, prefix=".upload-", delete=False)
        size, head = 0, b""
        try:
            with tmp:
                async for chunk in request.content.iter_chunked(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise AccessError(f"refused upload {name!r}: over the limit of {limit / 2**20:g} MiB")
                    if len(head) < 512:
                        head += chunk[: 512 - len(head)]
                    tmp.write(chunk)
            security.sniff_upload(name, head)
            if name.lower().endswith(".zip"):
                folder = config.data.resolve(f"{security.UPLOAD_DIR}/{name[:-4]}")
                staging = Path(tempfile.mkdtemp(dir=uploads, prefix=".unzip-"))
                try:
                    security.safe_extract_zip(Path(tmp.name), staging, limit)
                    if folder.exists():
                        shutil.rmtree(folder)
                    staging.rename(folder)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                Path(tmp.name).unlink(missing_ok=True)
                relative = config.data.relative(security.series_folder(folder))
                kind = "dicom"
            else:
                Path(tmp.name).replace(target)
                relative = config.data.relative(target)
                kind = "segmentation" if name.lower().endswith(".seg.nrrd") else "file"
        except AccessError as exc:
            Path(tmp.name).unlink(missing_ok=True)
            status = 413 if "over the limit" in str(exc) else 400
            return _error(status, str(exc))
        except Exception as exc:  # a broken zip and the like: the user's file, one line
            Path(tmp.name).unlink(missing_ok=True)
            return _error(400, f"refused upload {name!r}: {exc}")
        if config.on_upload is not None:
            config.on_upload(relative)
        return web.json_response({"path": relative, "kind": kind, "bytes": size})

    async def download(request: web.Request) -> web.StreamResponse:
        relative = request.query.get("path", "")
        try:
            path = config.data.existing(relative)
            results = config.data.resolve(security.RESULTS_DIR)
            if results not in path.parents or not path.is_file():
                raise AccessError(f"refused {relative!r}: only saved results ({security.RESULTS_DIR}/...) can be downloaded")
        except AccessError as exc:
            return _error(403 if "refused" in str(exc) else 404, str(exc))
        return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})

    async def files(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(config.data.list_images()), content_type="application/json")

    return [
        web.post("/api/upload", upload),
        web.get("/api/download", download),
        web.get("/api/files", files),
    ]


def install(app: web.Application, config: HttpConfig) -> None:
    """Add the guard and the file routes to trame's aiohttp application (before it starts)."""
    app.middlewares.insert(0, make_middleware(config))
    app.router.add_routes(make_routes(config))
