"""What the browser app may touch, and who may talk to it.

Three rules, each enforced in one place here:

* **Files**: the server reads and writes only inside the ``--data`` folder. Every name a
  browser sends is resolved (``..`` and symbolic links followed) and must stay inside it
  (:class:`DataRoot`).
* **Uploads**: only image types (NIfTI, NRRD, ``.seg.nrrd``, a DICOM SEG ``.dcm``, a zipped DICOM folder), checked
  by name *and* by their first bytes, up to a size limit and within the data folder's quota
  (:func:`check_upload_name`, :func:`sniff_upload`, :func:`safe_extract_zip`,
  :func:`check_quota`); a zip may hold DICOM files only.
* **Network**: the server listens on the loopback interface unless an access token is given
  (:func:`check_bind`); with a token every HTTP request and the websocket hand-shake must
  carry it (``aiohttp`` middleware in :mod:`clinicalai.web.http`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, List, Optional

from ..errors import ClinicalAIError, InputError
from ..volume.dicom_seg import is_dicom_seg_file
from ..volume.formats import FOLDER_SNIFF_FILES, is_dicom_head, looks_like_dicom_file

#: Environment variable read when ``--token`` is not given.
TOKEN_ENV = "CLINICALAI_WEB_TOKEN"
#: Shortest accepted token: long enough that guessing it over the network is hopeless.
MIN_TOKEN_LENGTH = 16
#: Default upload limit (MiB); a brain PET or cardiac MRI is a few tens of MiB.
DEFAULT_MAX_UPLOAD_MB = 512
#: Volume files the app opens; ``.zip`` is a zipped DICOM folder, ``.dcm`` a DICOM SEG file
#: (the slices of a series are listed as their folder).
IMAGE_SUFFIXES = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".zip", ".dcm")
#: A folder with at most this many ``.dcm`` files has each one's SOP class read when listed, so
#: that its DICOM SEG files are listed as such; a larger one is a series (its SEG files, if
#: any, are opened by typing their path)
SNIFFED_DICOM_FILES = 8
#: Folder inside ``--data`` for uploads and for saved results.
UPLOAD_DIR = "uploads"
RESULTS_DIR = "results"
#: Default quota (GiB) of everything under ``uploads/`` and ``results/`` together.
DEFAULT_QUOTA_GB = 20.0
#: Longest accepted upload name (characters); file systems stop at 255 bytes.
MAX_NAME_LENGTH = 200
#: Largest websocket message the server accepts from a page. The page only sends state
#: changes and clicks (kilobytes; files go over HTTP), so 4 MiB is ample; wslink would
#: otherwise let an authenticated client make it reserve up to 4 GiB per message.
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Files a zipped DICOM folder may carry besides DICOM files: metadata that archivers add,
#: skipped (never written).
_ZIP_JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db")


class AccessError(ClinicalAIError):
    """A request for a file or a network binding the server does not allow."""


class TooLarge(AccessError):
    """An upload or archive over the size limit or the data folder's quota (HTTP 413)."""


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataRoot:
    """The one folder the server may read and write (``--data``)."""

    root: Path

    @classmethod
    def create(cls, folder: "str | os.PathLike[str]") -> "DataRoot":
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise InputError(f"--data {folder}: no such folder")
        return cls(path.resolve(strict=True))

    def resolve(self, relative: str) -> Path:
        """The absolute path of ``relative`` (a name the browser sent) inside the root.

        Refuses absolute paths, ``..`` components and symbolic links that lead outside, each
        with a message naming the offending path. The file need not exist yet.
        """
        if not isinstance(relative, str) or relative.strip() == "":
            raise AccessError("no file name given")
        if "\x00" in relative:
            raise AccessError(f"refused {relative!r}: the name contains a NUL byte")
        posix = PurePosixPath(relative.replace("\\", "/"))
        if posix.is_absolute() or (len(relative) > 1 and relative[1] == ":"):
            raise AccessError(f"refused {relative!r}: absolute paths are not allowed; give a path inside the data folder")
        if ".." in posix.parts:
            raise AccessError(f"refused {relative!r}: '..' would leave the data folder")
        candidate = (self.root / Path(*posix.parts)).resolve(strict=False)
        if candidate != self.root and self.root not in candidate.parents:
            # only a symbolic link can get here: the name itself had no '..'
            raise AccessError(f"refused {relative!r}: it is a link that points outside the data folder")
        return candidate

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def existing(self, relative: str) -> Path:
        path = self.resolve(relative)
        if not path.exists():
            raise AccessError(f"{relative}: no such file in the data folder")
        return path

    def folder(self, name: str) -> Path:
        path = self.resolve(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _unnamed_dicom(self, here: Path, filenames: Iterable[str]) -> bool:
        """A folder of DICOM files named without ``.dcm`` (``IM0001``, their UIDs: as scanners and
        PACS exports name them): the first few files that are no other image are sniffed for
        the DICOM preamble, as the reader and the batch discovery take them."""
        names = sorted(f for f in filenames if not f.startswith(".") and not f.lower().endswith(IMAGE_SUFFIXES))
        return any(_inside(self.root, here / f) and looks_like_dicom_file(here / f) for f in names[:FOLDER_SNIFF_FILES])

    def list_images(self, max_items: int = 2000) -> List[dict]:
        """Images and DICOM folders under the root, as ``{"path", "kind"}`` (kind: file, dicom,
        segmentation, dicom-seg); links leading outside the root are skipped."""
        items: List[dict] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            dicoms = sorted(f for f in filenames if f.lower().endswith(".dcm") and not f.startswith("."))
            if dicoms and _inside(self.root, here):
                segs = [f for f in dicoms if _inside(self.root, here / f) and is_dicom_seg_file(here / f)] \
                    if len(dicoms) <= SNIFFED_DICOM_FILES else []
                items.extend({"path": self.relative(here / f), "kind": "dicom-seg"} for f in segs)
                if len(dicoms) > len(segs) and here != self.root:
                    items.append({"path": self.relative(here), "kind": "dicom"})
            elif here != self.root and _inside(self.root, here) and self._unnamed_dicom(here, filenames):
                items.append({"path": self.relative(here), "kind": "dicom"})
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                low = name.lower()
                if not low.endswith(IMAGE_SUFFIXES) or low.endswith((".zip", ".dcm")):
                    continue
                full = here / name
                if not _inside(self.root, full):
                    continue
                kind = "segmentation" if low.endswith(".seg.nrrd") else "file"
                items.append({"path": self.relative(full), "kind": kind})
            if len(items) >= max_items:
                break
        return items


def _inside(root: Path, path: Path) -> bool:
    try:
        resolved = path.resolve(strict=False)
    except OSError:
        return False
    return resolved == root or root in resolved.parents


# ---------------------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------------------


def image_suffix(name: str) -> Optional[str]:
    low = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return suffix
    return None


def _invisible_characters(name: str) -> List[str]:
    """Characters that make a name print as something else: controls (newlines, escapes),
    format characters (bidi overrides, zero-width) and line / paragraph separators."""
    return [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


def check_upload_name(name: str) -> str:
    """A safe file name (no folders) for an upload, or :class:`AccessError`."""
    base = str(name)
    if not base or "/" in base or "\\" in base or "\x00" in base or base.startswith(".") or base != base.strip():
        raise AccessError(f"refused upload {name!r}: not a plain file name")
    hidden = _invisible_characters(base)
    if hidden:
        codes = ", ".join(sorted({f"U+{ord(c):04X}" for c in hidden}))
        raise AccessError(f"refused upload {name!r}: the name contains control or text-direction characters ({codes}); rename the file")
    if len(base) > MAX_NAME_LENGTH:
        raise AccessError(f"refused upload {base[:40]!r}...: the name is longer than {MAX_NAME_LENGTH} characters; rename the file")
    if image_suffix(base) is None:
        raise AccessError(
            f"refused upload {base!r}: only images are accepted ({', '.join(IMAGE_SUFFIXES)}; .zip = a zipped DICOM folder)"
        )
    return base


def sniff_upload(name: str, head: bytes) -> None:
    """Check the first bytes match the type the name claims (an image, not a renamed file)."""
    suffix = image_suffix(name)
    ok = False
    if suffix in (".nii.gz",):
        ok = head[:2] == b"\x1f\x8b"
    elif suffix == ".nii":
        ok = len(head) >= 348 and (
            int.from_bytes(head[:4], "little") == 348 or int.from_bytes(head[:4], "big") == 348
            or int.from_bytes(head[:4], "little") == 540 or int.from_bytes(head[:4], "big") == 540
        )
    elif suffix in (".nrrd", ".seg.nrrd"):
        ok = head[:4] == b"NRRD"
    elif suffix == ".zip":
        ok = head[:4] == b"PK\x03\x04"
    elif suffix == ".dcm":
        ok = is_dicom_head(head)
    if not ok:
        raise AccessError(f"refused upload {name!r}: its content is not a {suffix} image")


def max_upload_bytes(megabytes: float) -> int:
    return int(megabytes * 1024 * 1024)


def safe_extract_zip(archive: Path, dest: Path, max_total_bytes: int, max_files: int = 5000) -> Path:
    """Extract a zipped DICOM folder into ``dest`` refusing absolute names, ``..``, links,
    members that are not DICOM files, and archives that expand beyond ``max_total_bytes`` (zip
    bombs: the sizes the archive declares are checked first, then the bytes actually written,
    since a crafted archive can declare less than it holds).

    Every member is checked before anything is written; on refusal ``dest`` may hold a part
    of the archive, and the caller removes it (it is a staging folder)."""
    root = DataRoot(dest.resolve())
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and not _is_zip_junk(i.filename)]
        if len(infos) > max_files:
            raise AccessError(f"refused {archive.name}: more than {max_files} files")
        total = sum(i.file_size for i in infos)
        if total > max_total_bytes:
            raise TooLarge(f"refused {archive.name}: it expands to {total / 2**20:.0f} MiB, over the upload limit")
        for info in infos:
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise AccessError(f"refused {archive.name}: it contains a symbolic link ({info.filename})")
            root.resolve(info.filename)  # absolute names and '..' refused before anything is written
        for info in infos:
            with zf.open(info) as src:
                head = src.read(132)
            if not is_dicom_head(head):
                raise AccessError(
                    f"refused {archive.name}: {info.filename!r} is not a DICOM file (a zip upload may hold DICOM files only)"
                )
        written = 0
        for info in infos:
            target = root.resolve(info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > max_total_bytes:
                        raise TooLarge(f"refused {archive.name}: it expands beyond {max_total_bytes / 2**20:.0f} MiB, over the upload limit")
                    out.write(chunk)
    return dest


def _is_zip_junk(name: str) -> bool:
    return name.startswith(_ZIP_JUNK[0]) or PurePosixPath(name).name in _ZIP_JUNK[1:]


# ---------------------------------------------------------------------------------------
# Quota
# ---------------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links not followed; 0 when it does not exist)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def quota_bytes(gigabytes: float) -> int:
    return int(gigabytes * 1024**3)


def quota_used(root: DataRoot) -> int:
    """Bytes under ``uploads/`` and ``results/`` (what browser users add to the data folder)."""
    return folder_bytes(root.root / UPLOAD_DIR) + folder_bytes(root.root / RESULTS_DIR)


def quota_left(root: DataRoot, quota: Optional[int]) -> Optional[int]:
    """Bytes that may still be written (``None``: no quota)."""
    if quota is None:
        return None
    return max(0, quota - quota_used(root))


def check_quota(root: DataRoot, quota: Optional[int], incoming: int, what: str) -> None:
    """Refuse writing ``incoming`` more bytes when the quota of uploads + results would be
    exceeded; ``what`` names the refused thing in the message."""
    left = quota_left(root, quota)
    if left is not None and incoming > left:
        raise TooLarge(
            f"refused {what}: the data folder's quota for uploads and results ({quota / 2**30:g} GiB) is full "
            f"({left / 2**20:.1f} MiB left); remove old uploads or results, or ask for a larger --quota-gb"
        )


def series_folder(folder: Path) -> Path:
    """The folder that holds the files of an extracted DICOM zip (zips often wrap the series
    in one or more folders): the first folder, depth first, that contains files."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        if any(not f.startswith(".") for f in filenames):
            return Path(dirpath)
    raise AccessError(f"{folder.name}: the archive holds no files")


# ---------------------------------------------------------------------------------------
# Choices
# ---------------------------------------------------------------------------------------


class OfferedChoices:
    """The lists of choices the server put in the page, kept on the server.

    Every state value that names a model, a device, a node, a method ... arrives from the page,
    and any client can set any state key -- the *list* of choices included. So the lists are
    recorded here when the server offers them, and a chosen value is accepted only if it is
    in the server's own record (:meth:`check`). Paths are checked by :class:`DataRoot`. The
    panels go through :meth:`clinicalai.web.panels.base.Panel.offer` / ``choice``.
    """

    def __init__(self) -> None:
        self._values: dict = {}

    def offer(self, key: str, items: Iterable) -> List:
        """Record ``items`` (dicts with a ``value``, or plain values) as the choices of ``key``;
        returns them as given (for the page)."""
        items = list(items)
        self._values[key] = [item.get("value") if isinstance(item, dict) else item for item in items]
        return items

    def offered(self, key: str) -> List:
        return list(self._values.get(key, []))

    def check(self, key: str, value, what: str):
        """``value`` if it is one of the choices offered under ``key``, else :class:`AccessError`."""
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise AccessError(f"{what}: refused a value of type {type(value).__name__}; choose one of the choices offered")
        if value in self._values.get(key, []):
            return value
        shown = str(value) if len(str(value)) <= 80 else str(value)[:77] + "..."
        raise AccessError(f"{what} {shown!r} is not one of the choices offered; choose one from the list")

    def check_many(self, key: str, values, what: str) -> List:
        """Each of ``values`` (a list) checked with :meth:`check`."""
        if not isinstance(values, (list, tuple)):
            raise AccessError(f"{what}: expected a list of choices")
        return [self.check(key, v, what) for v in values]


# ---------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(token: Optional[str], environ: Optional[dict] = None) -> Optional[str]:
    env = os.environ if environ is None else environ
    value = token if token else env.get(TOKEN_ENV) or None
    if value is not None and len(value) < MIN_TOKEN_LENGTH:
        raise AccessError(f"the access token is too short: use at least {MIN_TOKEN_LENGTH} characters")
    return value


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse to listen beyond this machine without an access token."""
    if not is_loopback(host) and not token:
        raise AccessError(
            f"refusing to listen on {host} without an access token: patient images would be open to the network. "
            f"Pass --token T (at least {MIN_TOKEN_LENGTH} characters) or set {TOKEN_ENV}, or keep --host 127.0.0.1"
        )


def token_matches(expected: str, given: Optional[str]) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def allowed_hosts(host: str, port: int) -> Iterable[str]:
    """Host header values a loopback server answers to (defeats DNS rebinding)."""
    names = {"localhost", "127.0.0.1", "[::1]", host}
    for name in names:
        yield name
        yield f"{name}:{port}"
