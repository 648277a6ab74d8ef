"""The HTTP side of the browser app: access control, uploads and downloads.

trame serves its page and websocket with ``aiohttp`` (through wslink). Before the server
starts, :func:`install` adds to that application:

* a middleware that checks every request, the websocket hand-shake included: with a token,
  the request must carry it (``?token=`` once, then an HttpOnly cookie, or an
  ``Authorization: Bearer`` header); always, the ``Host`` header must name this server (DNS
  rebinding) and a websocket or POST from another web site (``Origin``) is refused;
* ``POST /api/upload?name=F``: a volume streamed into ``<data>/uploads`` under the size limit
  and the quota of ``uploads/`` + ``results/``; a zip must hold DICOM files only; the file is
  tried in a throw-away process (:mod:`clinicalai.web.probe`) and kept only if it loads;
* ``GET /api/download?path=results/F``: a saved result, as an attachment.

Nothing else reads files: patient images reach the browser only as rendered views, and as
files only through an explicit download.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from aiohttp import web

from . import security
from ..volume.dicom_seg import is_dicom_seg_file
from .security import AccessError, DataRoot, TooLarge

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
    #: bytes allowed under uploads/ + results/ together (None: no quota)
    quota_bytes: Optional[int] = None
    #: ``probe(path, kind, shown_name)`` raises unless the file loads (run on a worker thread;
    #: :meth:`clinicalai.web.probe.FileProber.check`); None: no probe (bare HTTP tests)
    probe: Optional[Callable[[Path, str, str], None]] = None
    #: token -> user name (``--users`` file of the multi-user launcher); replaces ``token``
    users: Optional[Dict[str, str]] = None


#: key of the request's user name (the ``--users`` file's name; "" with one shared token)
USER_KEY = web.RequestKey("clinicalai_user", str)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _user_of(tokens: Dict[str, str], given: Optional[str]) -> Optional[str]:
    """The user whose token ``given`` is (compared in constant time with every token), or None."""
    found = None
    for token, user in tokens.items():
        if security.token_matches(token, given):
            found = user
    return found


def make_middleware(config: HttpConfig):
    hosts = set(security.allowed_hosts(config.host, config.port)) if security.is_loopback(config.host) else None
    tokens: Dict[str, str] = dict(config.users) if config.users else ({config.token: ""} if config.token else {})

    @web.middleware
    async def guard(request: web.Request, handler):
        if hosts is not None and request.host not in hosts:
            return _error(403, f"refused: this server answers to 127.0.0.1:{config.port} only (Host was {request.host!r})")
        origin = request.headers.get("Origin")
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if origin and (is_ws or request.method not in ("GET", "HEAD")):
            if urlsplit(origin).netloc != request.host:
                return _error(403, f"refused: a page from {origin} may not talk to this server")
        request[USER_KEY] = ""
        if tokens:
            given = request.query.get("token")
            if given is not None:
                user = _user_of(tokens, given)
                if user is None:
                    return _error(401, "wrong access token: open the address printed by 'clinicalai web'")
                if request.method == "GET" and not is_ws:
                    # the token goes into a cookie and out of the address bar (and history)
                    query = {k: v for k, v in request.query.items() if k != "token"}
                    target = request.rel_url.with_query(query) if query else request.rel_url.with_query(None)
                    response = web.Response(status=302, headers={"Location": str(target)})
                    response.set_cookie(COOKIE, given, httponly=True, samesite="Strict", path="/")
                    return response
            else:
                auth = request.headers.get("Authorization", "")
                bearer = auth[7:] if auth.startswith("Bearer ") else None
                user = _user_of(tokens, request.cookies.get(COOKIE))
                if user is None:
                    user = _user_of(tokens, bearer)
                if user is None:
                    return _error(401, "access token required: open the address printed by 'clinicalai web' (it ends in ?token=...)")
            request[USER_KEY] = user
        return await handler(request)

    return guard


def make_routes(config: HttpConfig):
    """The file routes: upload (:func:`_upload`), download of a saved result, the image list."""
    return [
        web.post("/api/upload", functools.partial(_upload, config)),
        web.get("/api/download", functools.partial(_download, config)),
        web.get("/api/files", functools.partial(_files, config)),
    ]


async def _upload(config: HttpConfig, request: web.Request) -> web.Response:
    """``POST /api/upload?name=F``: check the name and the size, receive the body into a
    hidden staging file, keep it if it loads (:func:`_keep_upload`); one JSON error line else."""
    try:
        name = security.check_upload_name(request.query.get("name", ""))
    except AccessError as exc:
        await _drain(request)
        return _error(400, str(exc))
    left = security.quota_left(config.data, config.quota_bytes)
    limit = config.max_upload_bytes if left is None else min(config.max_upload_bytes, left)
    if request.content_length is not None and request.content_length > limit:
        # read and drop the body (nothing is stored) so the browser gets the message
        # instead of a reset connection
        await _drain(request)
        return _error(413, _too_large(name, request.content_length, config, left))
    uploads = config.data.folder(security.UPLOAD_DIR)
    target = config.data.resolve(f"{security.UPLOAD_DIR}/{name}")
    # hidden staging names that keep the image suffix (Slicer's readers go by it)
    tmp = tempfile.NamedTemporaryFile(dir=uploads, prefix=".upload-", suffix=f"-{name}", delete=False)
    try:
        size = await _receive(request, tmp, name, limit, lambda n: _too_large(name, n, config, left))
        relative, kind = await _keep_upload(config, Path(tmp.name), name, target, limit)
    except TooLarge as exc:
        return _error(413, str(exc))
    except AccessError as exc:
        return _error(400, str(exc))
    except security.ClinicalAIError as exc:  # the probe's verdict ("refused upload 'F': why")
        return _error(400, str(exc))
    except Exception as exc:  # a broken zip and the like: the user's file, one line
        return _error(400, f"refused upload {name!r}: {exc}")
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    if config.on_upload is not None:
        config.on_upload(relative)
    return web.json_response({"path": relative, "kind": kind, "bytes": size})


async def _receive(request: web.Request, tmp: Any, name: str, limit: int, too_large: Callable[[int], str]) -> int:
    """Stream the body into ``tmp`` (closed after), at most ``limit`` bytes (else
    :class:`TooLarge` with ``too_large(size)``); its first bytes must look like ``name``'s
    type. Returns the size in bytes."""
    size, head = 0, b""
    with tmp:
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > limit:
                raise TooLarge(too_large(size))
            if len(head) < 512:
                head += chunk[: 512 - len(head)]
            tmp.write(chunk)
    security.sniff_upload(name, head)
    return size


async def _keep_upload(config: HttpConfig, staged: Path, name: str, target: Path, limit: int) -> Tuple[str, str]:
    """Keep a received file once it loads in the probe: a zip as the DICOM series folder it
    holds, else the file as ``target``. Returns ``(path relative to the data folder, kind)``."""
    if name.lower().endswith(".zip"):
        return await _keep_dicom_zip(config, staged, name, limit), "dicom"
    if name.lower().endswith(".dcm"):
        if not is_dicom_seg_file(staged):
            raise AccessError(f"refused upload {name!r}: a single .dcm is taken when it is a DICOM SEG; "
                                       "upload an image series as a .zip of its folder")
        await _probe(config, staged, "dicom-seg", name)
        staged.replace(target)
        return config.data.relative(target), "dicom-seg"
    is_segmentation = name.lower().endswith(".seg.nrrd")
    await _probe(config, staged, "segmentation" if is_segmentation else "volume", name)
    staged.replace(target)
    return config.data.relative(target), "segmentation" if is_segmentation else "file"


async def _keep_dicom_zip(config: HttpConfig, archive: Path, name: str, limit: int) -> str:
    """Expand a zip of DICOM files into ``uploads/<name without .zip>`` (what it expands to
    must fit ``limit``: the archive is deleted after), once its series loads in the probe.
    Returns the series folder relative to the data folder."""
    folder = config.data.resolve(f"{security.UPLOAD_DIR}/{name[:-4]}")
    staging = Path(tempfile.mkdtemp(dir=config.data.folder(security.UPLOAD_DIR), prefix=".unzip-"))
    try:
        security.safe_extract_zip(archive, staging, limit)
        await _probe(config, security.series_folder(staging), "dicom", name)
        if folder.exists():
            shutil.rmtree(folder)  # an earlier upload of the same name (uploads/ is the server's)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    archive.unlink(missing_ok=True)
    return config.data.relative(security.series_folder(folder))


async def _download(config: HttpConfig, request: web.Request) -> web.StreamResponse:
    """``GET /api/download?path=results/F``: a saved result, as an attachment."""
    relative = request.query.get("path", "")
    try:
        path = config.data.existing(relative)
        results = config.data.resolve(security.RESULTS_DIR)
        if results not in path.parents or not path.is_file():
            raise AccessError(f"refused {relative!r}: only saved results ({security.RESULTS_DIR}/...) can be downloaded")
    except AccessError as exc:
        return _error(403 if "refused" in str(exc) else 404, str(exc))
    return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})


async def _files(config: HttpConfig, request: web.Request) -> web.Response:
    """``GET /api/files``: the images in the data folder."""
    return web.Response(text=json.dumps(config.data.list_images()), content_type="application/json")


async def _drain(request: web.Request) -> None:
    """Read and drop a refused request's body (bounded by what the client sends)."""
    async for _ in request.content.iter_chunked(1 << 20):
        pass


def _too_large(name: str, size: int, config: HttpConfig, left: Optional[int]) -> str:
    if left is not None and size > left and left < config.max_upload_bytes:
        return (f"refused upload {name!r}: the data folder's quota for uploads and results "
                f"({config.quota_bytes / 2**30:g} GiB) has {left / 2**20:.1f} MiB left; remove old uploads or results")
    return f"refused upload {name!r}: {size / 2**20:.1f} MiB is over the limit of {config.max_upload_bytes / 2**20:g} MiB"


async def _probe(config: HttpConfig, path: Path, kind: str, name: str) -> None:
    """The file must load in a throw-away process before it is kept (worker thread)."""
    if config.probe is not None:
        await asyncio.get_running_loop().run_in_executor(None, config.probe, path, kind, f"refused upload {name!r}")


def install(app: web.Application, config: HttpConfig) -> None:
    """Add the guard and the file routes to trame's aiohttp application (before it starts)."""
    app.middlewares.insert(0, make_middleware(config))
    app.router.add_routes(make_routes(config))
