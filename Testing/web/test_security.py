"""The browser app's access rules, without a browser: data-folder confinement, upload checks,
the binding rule and the HTTP guard (on a bare aiohttp app with the same middleware and routes
the real server gets)."""

from __future__ import annotations

import asyncio
import gzip
import zipfile

import pytest

from clinicalai.cli import main
from clinicalai.web import security
from clinicalai.web.security import AccessError, DataRoot

TOKEN = "a-long-enough-token-0123"


@pytest.fixture
def root(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.nii.gz").write_bytes(gzip.compress(b"x" * 400))
    (data / "results").mkdir()
    (data / "results" / "r.json").write_text("{}")
    secret = tmp_path / "secret.nii.gz"
    secret.write_bytes(b"patient")
    (data / "link.nii.gz").symlink_to(secret)
    (data / "linkdir").symlink_to(tmp_path)
    return DataRoot.create(data)


def test_paths_stay_inside_the_data_folder(root):
    assert root.resolve("sub/a.nii.gz") == root.root / "sub" / "a.nii.gz"
    for bad, words in [
        ("../secret.nii.gz", "'..' would leave the data folder"),
        ("sub/../../secret.nii.gz", "'..'"),
        ("..\\secret.nii.gz", "'..'"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("link.nii.gz", "link that points outside"),
        ("linkdir/secret.nii.gz", "link that points outside"),
        ("a\x00b", "NUL"),
    ]:
        with pytest.raises(AccessError, match=words.replace("(", r"\(")):
            root.resolve(bad)
    listed = {item["path"] for item in root.list_images()}
    assert "sub/a.nii.gz" in listed
    assert not any("link" in p for p in listed), "links leading outside must not be listed"


def test_binding_beyond_loopback_needs_a_token():
    security.check_bind("127.0.0.1", None)
    security.check_bind("::1", None)
    security.check_bind("localhost", None)
    with pytest.raises(AccessError, match="without an access token"):
        security.check_bind("0.0.0.0", None)
    security.check_bind("0.0.0.0", TOKEN)
    with pytest.raises(AccessError, match="too short"):
        security.resolve_token("short")
    assert security.resolve_token(None, {security.TOKEN_ENV: TOKEN}) == TOKEN


def test_cli_refuses_non_loopback_bind_without_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(security.TOKEN_ENV, raising=False)
    code = main(["web", "--host", "0.0.0.0", "--port", "8099", "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "refusing to listen on 0.0.0.0 without an access token" in err[0]
    code = main(["web", "--data", str(tmp_path / "missing")])
    assert code == 1 and "no such folder" in capsys.readouterr().err
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["web", "--port", str(port), "--data", str(tmp_path)])
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_upload_names_and_contents_are_checked(tmp_path):
    assert security.check_upload_name("scan.nii.gz") == "scan.nii.gz"
    for bad in ["../x.nii.gz", "a/b.nii", "notes.txt", "model.pt", ".hidden.nii", "x.exe"]:
        with pytest.raises(AccessError):
            security.check_upload_name(bad)
    security.sniff_upload("a.nii.gz", gzip.compress(b"abc"))
    security.sniff_upload("a.nrrd", b"NRRD0004\n")
    with pytest.raises(AccessError, match="not a .nii.gz image"):
        security.sniff_upload("a.nii.gz", b"#!/bin/sh\nrm -rf /")
    # zip slip: a member named ../evil is refused, nothing written outside
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/1.dcm", b"x")
        zf.writestr("../evil.dcm", b"x")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(AccessError, match=r"'\.\.'"):
        security.safe_extract_zip(archive, dest, 10**6)
    assert not (tmp_path / "evil.dcm").exists()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"\0" * 2_000_000)
    with pytest.raises(AccessError, match="over the upload limit"):
        security.safe_extract_zip(bomb, dest, 1_000_000)


# ---------------------------------------------------------------------- HTTP guard
def _serve(root: DataRoot, token, host="127.0.0.1", limit=1000):
    from aiohttp import web

    from clinicalai.web import http as web_http

    uploaded = []
    app = web.Application()
    config = web_http.HttpConfig(data=root, host=host, port=8080, token=token, max_upload_bytes=limit, on_upload=uploaded.append)
    web_http.install(app, config)

    async def index(request):
        return web.Response(text="page")

    app.router.add_get("/index.html", index)
    app.router.add_get("/ws", index)
    return app, uploaded


def _run(coro):
    # a thread of its own: the browser tests' sync Playwright keeps a loop on the main thread
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _client(app):
    from aiohttp.test_utils import TestClient, TestServer

    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_http_token_is_required_and_checked(root):
    app, _ = _serve(root, TOKEN)

    async def scenario():
        c = await _client(app)
        try:
            h = {"Host": "127.0.0.1:8080"}
            r = await c.get("/index.html", headers=h)
            assert r.status == 401 and "access token required" in (await r.json())["error"]
            r = await c.get("/index.html?token=wrong-token-wrong-token", headers=h)
            assert r.status == 401 and "wrong access token" in (await r.json())["error"]
            r = await c.get("/ws", headers={**h, "Upgrade": "websocket", "Origin": "http://127.0.0.1:8080"})
            assert r.status == 401, "the websocket hand-shake needs the token too"
            r = await c.get(f"/index.html?token={TOKEN}", headers=h, allow_redirects=False)
            assert r.status == 302 and "token" not in r.headers["Location"]
            assert "HttpOnly" in r.headers["Set-Cookie"]
            r = await c.get("/index.html", headers=h)  # the cookie jar now holds the token
            assert r.status == 200 and await r.text() == "page"
            r = await c.get("/index.html", headers={**h, "Authorization": f"Bearer {TOKEN}"})
            assert r.status == 200
        finally:
            await c.close()

    _run(scenario())


def test_http_loopback_rejects_foreign_hosts_and_origins(root):
    app, _ = _serve(root, None)

    async def scenario():
        c = await _client(app)
        try:
            r = await c.get("/index.html", headers={"Host": "127.0.0.1:8080"})
            assert r.status == 200
            r = await c.get("/index.html", headers={"Host": "evil.example:8080"})
            assert r.status == 403 and "answers to 127.0.0.1" in (await r.json())["error"]
            r = await c.get("/ws", headers={"Host": "127.0.0.1:8080", "Upgrade": "websocket", "Origin": "http://evil.example"})
            assert r.status == 403 and "may not talk to this server" in (await r.json())["error"]
        finally:
            await c.close()

    _run(scenario())


def test_http_upload_and_download_rules(root):
    app, uploaded = _serve(root, None, limit=1000)
    h = {"Host": "127.0.0.1:8080"}

    async def scenario():
        c = await _client(app)
        try:
            r = await c.post("/api/upload?name=big.nii.gz", data=gzip.compress(b"") + b"\0" * 2000, headers=h)
            assert r.status == 413 and "over the limit" in (await r.json())["error"]
            r = await c.post("/api/upload?name=run.sh", data=b"#!/bin/sh", headers=h)
            assert r.status == 400 and "only images are accepted" in (await r.json())["error"]
            r = await c.post("/api/upload?name=fake.nii.gz", data=b"not gzip at all", headers=h)
            assert r.status == 400 and "not a .nii.gz image" in (await r.json())["error"]
            r = await c.post("/api/upload?name=ok.nii.gz", data=gzip.compress(b"y" * 100), headers=h)
            assert r.status == 200 and (await r.json())["path"] == "uploads/ok.nii.gz"
            r = await c.get("/api/download?path=../secret.nii.gz", headers=h)
            assert r.status == 403 and "'..' would leave the data folder" in (await r.json())["error"]
            r = await c.get("/api/download?path=sub/a.nii.gz", headers=h)
            assert r.status == 403 and "only saved results" in (await r.json())["error"]
            r = await c.get("/api/download?path=results/r.json", headers=h)
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
        finally:
            await c.close()

    _run(scenario())
    assert uploaded == ["uploads/ok.nii.gz"]
    leftovers = [p.name for p in (root.root / "uploads").iterdir()]
    assert leftovers == ["ok.nii.gz"], f"refused uploads must leave nothing behind: {leftovers}"


def test_dicom_seg_files_are_listed_uploaded_and_told_apart_from_series_slices(root, tmp_path):
    """A DICOM SEG (.dcm) is listed and uploaded as a segmentation; a series' slice is not an
    upload of its own (a zip of its folder is), and a renamed file is refused by its content."""
    import warnings

    import numpy as np

    from clinicalai.volume import Volume
    from clinicalai.volume.dicom_seg import write_dicom_seg
    from clinicalai.volume.dicom_writer import write_dicom_series

    ct = Volume(np.arange(3 * 6 * 5, dtype=np.int16).reshape(3, 6, 5), spacing=(1.0, 1.0, 3.0), modality="CT")
    series = write_dicom_series(ct, root.root / "sub" / "ct")
    labels = np.zeros(ct.shape, np.uint8)
    labels[1, 2:4, 1:3] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = write_dicom_seg(ct.with_array(labels), sorted(series.iterdir()), root.root / "sub" / "seg" / "s.dcm")
    # a PACS export names its files by their UIDs, no ending: listed by the DICOM preamble
    export = root.root / "sub" / "export"
    export.mkdir()
    for i, f in enumerate(sorted(series.iterdir())):
        (export / f"1.3.12.2.1107.5.2.{i}").write_bytes(f.read_bytes())
    (root.root / "sub" / "notes").mkdir()
    (root.root / "sub" / "notes" / "v1.2.txt").write_bytes(b"x" * 200)
    listed = {item["path"]: item["kind"] for item in root.list_images()}
    assert listed["sub/ct"] == "dicom" and listed["sub/seg/s.dcm"] == "dicom-seg" and listed["sub/export"] == "dicom"
    assert "sub/notes" not in listed
    assert "sub/seg" not in listed and not any(p.startswith("sub/ct/") for p in listed)

    app, uploaded = _serve(root, None, limit=10_000_000)
    h = {"Host": "127.0.0.1:8080"}

    async def scenario():
        c = await _client(app)
        try:
            r = await c.post("/api/upload?name=mask.dcm", data=seg.read_bytes(), headers=h)
            assert r.status == 200 and (await r.json())["kind"] == "dicom-seg"
            slice_file = sorted(series.iterdir())[0]
            r = await c.post("/api/upload?name=slice.dcm", data=slice_file.read_bytes(), headers=h)
            assert r.status == 400 and "when it is a DICOM SEG" in (await r.json())["error"]
            r = await c.post("/api/upload?name=fake.dcm", data=b"x" * 300, headers=h)
            assert r.status == 400 and "not a .dcm image" in (await r.json())["error"]
        finally:
            await c.close()

    _run(scenario())
    assert uploaded == ["uploads/mask.dcm"]
    assert sorted(p.name for p in (root.root / "uploads").iterdir()) == ["mask.dcm"]
