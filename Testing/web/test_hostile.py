"""Issue 15's attacks on the browser app, each refused with one clear message, nothing
written, the server alive after: hostile state values, non-DICOM zips, zip bombs over the
quota, a malformed ``.seg.nrrd`` that crashes Slicer's reader, oversized websocket messages,
bad upload names. The server-side functions are tested directly (fast); the HTTP routes on a
bare aiohttp app with the real middleware, routes and file probe; the websocket limit once
against a real ``clinicalai web`` server."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clinicalai.web import security
from clinicalai.web.probe import FileProber, ProbeRefused
from clinicalai.web.security import AccessError, DataRoot, OfferedChoices, TooLarge

from .test_security import _client, _run

H = {"Host": "127.0.0.1:8080"}


def _dicom_bytes(n: int = 0) -> bytes:
    """A file a DICOM reader would recognise by its preamble (128 bytes, then DICM)."""
    return b"\0" * 128 + b"DICM" + b"\0" * n


def _segmentation(path: Path) -> bytes:
    from clinicalai.volume import Volume, write_volume

    lab = np.zeros((5, 6, 7), np.uint8)
    lab[1:3, 2:4, 2:5] = 1
    write_volume(Volume(lab, spacing=(1, 1, 2), modality="SEG", units="label"), path,
                 segments=[{"name": "a", "value": 1, "color": [1, 0, 0]}])
    return path.read_bytes()


def _crashing_segmentation(path: Path) -> Path:
    """A .seg.nrrd the engine reads but Slicer's segmentation reader dies on (std::bad_alloc
    and terminate: a segment extent of 10^14 voxels)."""
    good = _segmentation(path)
    start = good.index(b"Segment0_Extent:=")
    end = good.index(b"\n", start)
    path.write_bytes(good[:start] + b"Segment0_Extent:=0 60000 0 50000 0 40000" + good[end:])
    return path


def _app(root: DataRoot, limit=10**6, quota=None, probe=None):
    from aiohttp import web

    from clinicalai.web import http as web_http

    uploaded = []
    app = web.Application()
    web_http.install(app, web_http.HttpConfig(data=root, host="127.0.0.1", port=8080, token=None, max_upload_bytes=limit,
                                               on_upload=uploaded.append, quota_bytes=quota, probe=probe))
    return app, uploaded


def _uploads(root: DataRoot) -> list:
    folder = root.root / "uploads"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def root(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    return DataRoot.create(data)


# ---------------------------------------------------------------------- state values
def test_only_offered_choices_are_accepted():
    choices = OfferedChoices()
    page = choices.offer("ca_attribution_models", [{"title": "(none)", "value": ""}, {"title": "demo", "value": "/srv/models/demo.json"}])
    assert page[1]["title"] == "demo"
    assert choices.check("ca_attribution_models", "/srv/models/demo.json", "classifier") == "/srv/models/demo.json"
    for hostile in ["uploads/evil/model.ts", "/tmp/x.pt", "../outside.pt", ["a"], {"value": "x"}]:
        with pytest.raises(AccessError, match="classifier"):
            choices.check("ca_attribution_models", hostile, "classifier")
    # the page may rewrite its own copy of the list: the server's record is what counts
    with pytest.raises(AccessError, match="is not one of the choices offered"):
        choices.check("ca_attribution_models_typo", "/srv/models/demo.json", "classifier")
    choices.offer("methods", ["gradient", "gradcam"])
    assert choices.check_many("methods", ["gradcam"], "method") == ["gradcam"]
    with pytest.raises(AccessError, match="'rm -rf' is not one of the choices offered"):
        choices.check_many("methods", ["gradcam", "rm -rf"], "method")


# ---------------------------------------------------------------------- upload names
@pytest.mark.parametrize("name", ["scan\n.nii.gz", "scan\r.nii", "evil\u202egz.nii", "a\u200b.nrrd", "x\x1b[31m.nii",
                                  "a\u2028b.nii", "n" * 300 + ".nii"])
def test_bad_upload_names_are_refused(name):
    with pytest.raises(AccessError, match="refused upload") as info:
        security.check_upload_name(name)
    assert "\n" not in str(info.value).replace("\\n", "")


def test_http_upload_with_a_bad_name_writes_nothing(root):
    app, uploaded = _app(root)

    async def scenario():
        c = await _client(app)
        try:
            r = await c.post("/api/upload?name=" + "a%E2%80%AEzg.ii%0A.nii.gz", data=gzip.compress(b"x"), headers=H)
            assert r.status == 400 and "control or text-direction characters" in (await r.json())["error"]
        finally:
            await c.close()

    _run(scenario())
    assert uploaded == [] and _uploads(root) == []


# ---------------------------------------------------------------------- zips
def test_zip_with_a_non_dicom_file_is_refused(root, tmp_path):
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("series/1.dcm", _dicom_bytes(10))
        zf.writestr("series/model/model.ts", b"PK\x03\x04 a TorchScript archive")
        zf.writestr("__MACOSX/._1.dcm", b"mac metadata: skipped, never written")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(AccessError, match=r"'series/model/model.ts' is not a DICOM file"):
        security.safe_extract_zip(archive, dest, 10**6)
    assert list(dest.rglob("*")) == [], "nothing is extracted before every member is checked"

    app, uploaded = _app(root)

    async def scenario():
        c = await _client(app)
        try:
            r = await c.post("/api/upload?name=series.zip", data=archive.read_bytes(), headers=H)
            assert r.status == 400 and "is not a DICOM file" in (await r.json())["error"]
            r = await c.get("/api/files", headers=H)  # the server still answers
            assert r.status == 200
        finally:
            await c.close()

    _run(scenario())
    assert uploaded == [] and _uploads(root) == []


def test_zip_bomb_over_the_quota_is_refused(root, tmp_path):
    (root.root / "results").mkdir()
    (root.root / "results" / "old.nii.gz").write_bytes(b"r" * 300_000)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k in range(4):
            zf.writestr(f"s/{k}.dcm", _dicom_bytes(200_000))  # 800 kB of zeros in a few kB
    assert len(bomb.getvalue()) < 20_000
    app, uploaded = _app(root, limit=10**7, quota=1_000_000)

    async def scenario():
        c = await _client(app)
        try:
            r = await c.post("/api/upload?name=s.zip", data=bomb.getvalue(), headers=H)
            assert r.status == 413 and "over the upload limit" in (await r.json())["error"]
            # a plain upload over what the quota has left: refused with the quota's message
            r = await c.post("/api/upload?name=big.nii.gz", data=gzip.compress(b"") + b"\0" * 800_000, headers=H)
            assert r.status == 413 and "quota for uploads and results" in (await r.json())["error"]
        finally:
            await c.close()

    _run(scenario())
    assert uploaded == [] and _uploads(root) == []
    # the streaming count: an archive is stopped at the limit even when it declares less
    dest = tmp_path / "x"
    dest.mkdir()
    with pytest.raises(TooLarge):
        security.safe_extract_zip(_write(tmp_path / "b.zip", bomb.getvalue()), dest, 500_000)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_quota_counts_uploads_and_results(root):
    (root.root / "uploads").mkdir()
    (root.root / "uploads" / "a.nii").write_bytes(b"u" * 1000)
    (root.root / "results").mkdir()
    (root.root / "results" / "r.json").write_bytes(b"r" * 500)
    (root.root / "elsewhere.nii").write_bytes(b"e" * 10_000)  # the department's own files are not counted
    assert security.quota_used(root) == 1500
    assert security.quota_left(root, 2000) == 500
    security.check_quota(root, 2000, 500, "saving")
    with pytest.raises(TooLarge, match="refused saving: the data folder's quota"):
        security.check_quota(root, 2000, 501, "saving")


# ---------------------------------------------------------------------- malformed files
def test_segmentation_that_crashes_slicer_is_refused_and_the_caller_lives(tmp_path):
    pytest.importorskip("slicer")
    bad = _crashing_segmentation(tmp_path / "bad.seg.nrrd")
    from clinicalai.volume import read_volume

    assert read_volume(bad).shape == (5, 6, 7), "the engine's reader alone would let it through"
    prober = FileProber(timeout_s=60)
    with pytest.raises(ProbeRefused, match=r"uploads/bad.seg.nrrd: the image reader crashed on it \(signal 6\)"):
        prober.check(bad, "segmentation", "uploads/bad.seg.nrrd")
    with pytest.raises(ProbeRefused, match="crashed"):  # refused again at once, from the record
        prober.check(bad, "segmentation")
    good = tmp_path / "good.seg.nrrd"
    _segmentation(good)
    prober.check(good, "segmentation")
    cut = tmp_path / "cut.nrrd"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ProbeRefused) as info:
        prober.check(cut, "volume", "uploads/cut.nrrd")
    assert str(info.value).startswith("uploads/cut.nrrd") and str(info.value).count("cut.nrrd") == 1, str(info.value)


def test_http_upload_of_a_crashing_segmentation_writes_nothing(root, tmp_path):
    pytest.importorskip("slicer")
    bad = _crashing_segmentation(tmp_path / "bad.seg.nrrd")
    prober = FileProber(timeout_s=60)
    app, uploaded = _app(root, probe=prober.check)

    async def scenario():
        c = await _client(app)
        try:
            r = await c.post("/api/upload?name=bad.seg.nrrd", data=bad.read_bytes(), headers=H)
            message = (await r.json())["error"]
            assert r.status == 400 and message.startswith("refused upload 'bad.seg.nrrd': the image reader crashed"), message
            good = tmp_path / "good.seg.nrrd"
            _segmentation(good)
            r = await c.post("/api/upload?name=good.seg.nrrd", data=good.read_bytes(), headers=H)
            assert r.status == 200, await r.text()
        finally:
            await c.close()

    _run(scenario())
    assert uploaded == ["uploads/good.seg.nrrd"] and _uploads(root) == ["good.seg.nrrd"]


# ---------------------------------------------------------------------- websocket messages
def test_websocket_messages_are_bounded_after_the_handshake():
    from trame.app import get_server
    from wslink.chunking import _encode_header

    from clinicalai.web.app import limit_websocket_messages

    server = get_server("clinicalai-hostile-test", client_type="vue3")
    limit_websocket_messages(server)
    assert server.options["ws_max_msg_size"] == security.WS_MAX_MESSAGE_BYTES
    import wslink.protocol

    unchunker = wslink.protocol.UnChunker()
    unchunker.set_max_message_size(4 * 1024**3)  # what wslink does after the hand-shake
    with pytest.raises(ValueError, match="exceeds the allocation limit"):
        unchunker.process_chunk(_encode_header(1, 0, 3 * 1024**3) + b"x")
    assert unchunker.pending_messages == {}, "nothing was reserved"
    for k in range(4):
        assert unchunker.process_chunk(_encode_header(10 + k, 0, 1000) + b"x") is None
    with pytest.raises(ValueError, match="unfinished messages"):
        unchunker.process_chunk(_encode_header(99, 0, 1000) + b"x")


def test_a_4d_file_is_refused_with_its_time_points_and_a_chosen_one_passes(tmp_path):
    """The probe names a 4D file's time points (the page offers them); the time point chosen
    is read by the engine's reader alone (no Slicer reader picks a frame); a frame number the
    file does not hold, or a frame of a non-volume, is refused."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((8, 8, 4, 5), np.float32), np.diag([2.0, 2.0, 6.0, 1.0])), tmp_path / "cine.nii.gz")
    prober = FileProber(timeout_s=60)
    with pytest.raises(ProbeRefused, match="4D image with 5 time points") as info:
        prober.check(tmp_path / "cine.nii.gz", "volume", "uploads/cine.nii.gz")
    assert info.value.frames == 5 and not info.value.series
    prober.check(tmp_path / "cine.nii.gz", "volume", frame=4)
    with pytest.raises(ProbeRefused, match="no frame 5") as info:
        prober.check(tmp_path / "cine.nii.gz", "volume", frame=5)
    assert info.value.frames == 0
    with pytest.raises(ValueError):
        prober.check(tmp_path / "cine.nii.gz", "segmentation", frame=0)


def test_the_probe_offers_the_frames_of_a_volume_sequence_slicer_saved(tmp_path):
    """A ``.seq.nrrd`` (frames on a ``list`` axis, as Slicer's Sequences module saves them): the
    probe refuses it whole with its frame count, so the page offers the time-point chooser,
    and passes a chosen frame; a frame it does not have is refused."""
    import numpy as np

    path = tmp_path / "cine.seq.nrrd"
    frames = np.arange(3 * 4 * 5 * 6, dtype=np.float32).reshape(6, 5, 4, 3)  # (z, y, x, frame)
    header = ("NRRD0004\ntype: float\ndimension: 4\nspace: left-posterior-superior\nsizes: 3 4 5 6\n"
              "space directions: none (2,0,0) (0,2,0) (0,0,8)\nkinds: list domain domain domain\nendian: little\n"
              "encoding: raw\nspace origin: (0,0,0)\naxis 0 index type:=numeric\naxis 0 index values:=0 1 2\n\n")
    path.write_bytes(header.encode() + frames.tobytes())
    prober = FileProber(timeout_s=60)
    with pytest.raises(ProbeRefused) as info:
        prober.check(path, "volume", "uploads/cine.seq.nrrd")
    assert info.value.frames == 3 and "volume sequence (Slicer's .seq.nrrd) with 3 time points" in str(info.value)
    prober.check(path, "volume", frame=2)
    with pytest.raises(ProbeRefused, match="has no frame 3"):
        prober.check(path, "volume", frame=3)
