"""What the browser app may touch, and who may talk to it.

Three rules, each enforced in one place here:

* **Files**: the server reads and writes only inside the ``--data`` folder. Every name a
  browser sends is resolved (``..`` and symbolic links followed) and must stay inside it
  (:class:`DataRoot`).
* **Uploads**: only image types (NIfTI, NRRD, ``.seg.nrrd``, a zipped DICOM folder), checked
  by name *and* by their first bytes, up to a size limit (:func:`check_upload_name`,
  :func:`sniff_upload`, :func:`safe_extract_zip`).
* **Network**: the server listens on the loopback interface unless an access token is given
  (:func:`check_bind`); with a token every HTTP request and the websocket hand-shake must
  carry it (``aiohttp`` middleware in :mod:`clinicalai.web.http`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, List, Optional

from ..errors import ClinicalAIError, InputError

#: Environment variable read when ``--token`` is not given.
TOKEN_ENV = "CLINICALAI_WEB_TOKEN"
#: Shortest accepted token: long enough that guessing it over the network is hopeless.
MIN_TOKEN_LENGTH = 16
#: Default upload limit (MiB); a brain PET or cardiac MRI is a few tens of MiB.
DEFAULT_MAX_UPLOAD_MB = 512
#: Volume files the app opens; ``.zip`` is a zipped DICOM folder.
IMAGE_SUFFIXES = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".zip")
#: Folder inside ``--data`` for uploads and for saved results.
UPLOAD_DIR = "uploads"
RESULTS_DIR = "results"


class AccessError(ClinicalAIError):
    """A request for a file or a network binding the server does not allow."""


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

    def list_images(self, max_items: int = 2000) -> List[dict]:
        """Images and DICOM folders under the root, as ``{"path", "kind"}`` (kind: file, dicom,
        segmentation); links leading outside the root are skipped."""
        items: List[dict] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            dicoms = [f for f in filenames if f.lower().endswith(".dcm")]
            if dicoms and _inside(self.root, here) and here != self.root:
                items.append({"path": self.relative(here), "kind": "dicom"})
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                low = name.lower()
                if not low.endswith(IMAGE_SUFFIXES) or low.endswith(".zip"):
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


def check_upload_name(name: str) -> str:
    """A safe file name (no folders) for an upload, or :class:`AccessError`."""
    base = str(name)
    if not base or "/" in base or "\\" in base or "\x00" in base or base.startswith(".") or base != base.strip():
        raise AccessError(f"refused upload {name!r}: not a plain file name")
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
    if not ok:
        raise AccessError(f"refused upload {name!r}: its content is not a {suffix} image")


def max_upload_bytes(megabytes: float) -> int:
    return int(megabytes * 1024 * 1024)


def safe_extract_zip(archive: Path, dest: Path, max_total_bytes: int, max_files: int = 5000) -> Path:
    """Extract a zipped DICOM folder into ``dest`` refusing absolute names, ``..``, links and
    archives that expand beyond ``max_total_bytes`` (zip bombs)."""
    root = DataRoot(dest.resolve())
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > max_files:
            raise AccessError(f"refused {archive.name}: more than {max_files} files")
        total = sum(i.file_size for i in infos)
        if total > max_total_bytes:
            raise AccessError(f"refused {archive.name}: it expands to {total / 2**20:.0f} MiB, over the upload limit")
        for info in infos:
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise AccessError(f"refused {archive.name}: it contains a symbolic link ({info.filename})")
            target = root.resolve(info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                out.write(src.read())
    return dest


def series_folder(folder: Path) -> Path:
    """The folder that holds the files of an extracted DICOM zip (zips often wrap the series
    in one or more folders): the first folder, depth first, that contains files."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        if any(not f.startswith(".") for f in filenames):
            return Path(dirpath)
    raise AccessError(f"{folder.name}: the archive holds no files")


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
