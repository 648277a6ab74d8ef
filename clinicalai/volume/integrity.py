"""Checks on a user's volume file *before* a native reader touches it.

ITK's readers trust the header: SimpleITK zero-fills the missing part of a cut-off ``.nii`` /
``.nii.gz`` and returns a "whole" image; NrrdIO opens whatever ``data file:`` a header names
(any absolute path); a header declaring 10^12 voxels makes ITK try to allocate them (or
abort the process with ``bad_alloc``). Neither SimpleITK, nibabel nor pydicom offers "read
the header, check the bytes are there, refuse what is out of bounds" without reading the
voxels, so it is done here, by hand, with bounded memory:

- the declared voxel size (dims x type size) is checked against a budget
  (:data:`DEFAULT_MAX_VOXEL_BYTES`, or ``$CLINICALAI_MAX_VOXEL_BYTES``) before anything is
  allocated;
- compressed data is decompressed as a stream (1 MiB at a time, nothing kept) to count its
  bytes; a stream that goes on past what the header declares is refused as soon as it does,
  so a gzip bomb is never expanded in memory or on disk;
- NRRD headers are parsed here; a detached ``data file:`` must stay inside the header's own
  folder (no absolute path, no ``..``, no symbolic link leading out).

Every refusal is an :class:`~clinicalai.errors.InputError` of one sentence naming the file.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple

from ..errors import InputError
from .formats import image_format

#: Largest voxel payload (bytes, as the header declares it) one image may have. 4 GiB holds a
#: 1024 x 1024 x 1024 float32 volume: above any CT / MR / PET series this engine is made for,
#: below what crashes a workstation or a shared server.
DEFAULT_MAX_VOXEL_BYTES = 4 * 2**30
#: Environment variable that overrides :data:`DEFAULT_MAX_VOXEL_BYTES` (a whole number of bytes).
MAX_VOXEL_BYTES_ENV = "CLINICALAI_MAX_VOXEL_BYTES"
#: A compressed stream may hold this many bytes beyond the header's size (padding some
#: writers add) before it is refused as expanding beyond its header (a decompression bomb).
COMPRESSED_SLACK_BYTES = 2**20
#: Largest NRRD header (text before the voxels) read: Slicer's .seg.nrrd headers with
#: hundreds of segments are ~100 kB.
NRRD_MAX_HEADER_BYTES = 8 * 2**20
#: Most files a NRRD ``data file:`` list or format string may name.
NRRD_MAX_DATA_FILES = 100_000

_CHUNK = 2**20
_NIFTI_SIZES = {348: 1, 540: 2}  # sizeof_hdr -> NIfTI version


# ---------------------------------------------------------------------------------- budget
def max_voxel_bytes() -> int:
    """The voxel budget in bytes: ``$CLINICALAI_MAX_VOXEL_BYTES`` or :data:`DEFAULT_MAX_VOXEL_BYTES`."""
    raw = os.environ.get(MAX_VOXEL_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXEL_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_VOXEL_BYTES_ENV} must be a positive whole number of bytes, got {raw!r}")
    return value


def _size_text(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def check_voxel_budget(name: str, shape: Sequence[int], bytes_per_voxel: float, what: str = "voxels") -> int:
    """Refuse an image whose declared size is over :func:`max_voxel_bytes`.

    Args:
        name: file or folder name used in the message.
        shape: declared dimensions (any order), each >= 1.
        bytes_per_voxel: bytes of one voxel as stored (may be fractional for 1-bit data).

    Returns the declared number of bytes.
    """
    nbytes = int(math.ceil(math.prod(int(s) for s in shape) * bytes_per_voxel))
    budget = max_voxel_bytes()
    if nbytes > budget:
        dims = " x ".join(str(int(s)) for s in shape)
        raise InputError(
            f"{name} declares {dims} {what} ({_size_text(nbytes)}), over the {_size_text(budget)} one image may "
            f"use; if it is genuine, raise {MAX_VOXEL_BYTES_ENV}"
        )
    return nbytes


def cut_off_error(name: str, declared: int, available: int) -> InputError:
    """The one-line error for a file holding fewer voxel bytes than its header declares."""
    return InputError(
        f"{name} is cut off: the header says {declared:,} bytes of voxels, the file holds {available:,}; "
        "copy or export the file again"
    )


# ---------------------------------------------------------------------------------- streams
class _Corrupt(Exception):
    """Compressed data that cannot be decompressed (the message says why)."""


def _corrupt_error(name: str, exc: Exception) -> InputError:
    return InputError(f"{name} is corrupt: its compressed data cannot be decompressed ({exc}); "
                      "copy or export the file again")


def _inflate(fh: BinaryIO) -> Iterator[bytes]:
    """Decompressed chunks (<= 1 MiB each) of the gzip stream read from ``fh``.

    Ends early (without error) when the input is cut off; the caller compares the count with
    the header. Multi-member gzip (concatenated streams) is followed as zlib/ITK do; bytes
    after the last member that do not start another member are ignored, as ``gzip -d`` does.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    while True:
        if not pending:
            pending = fh.read(_CHUNK)
            if not pending:
                return  # input ended: complete if the last member ended, else cut off
        try:
            out = inflater.decompress(pending, _CHUNK)
        except zlib.error as exc:
            raise _Corrupt(str(exc)) from None
        pending = inflater.unconsumed_tail
        if out:
            yield out
        if inflater.eof:
            rest = inflater.unused_data + pending
            if not rest:
                rest = fh.read(_CHUNK)  # the member ended with this read: is another one next?
            if not rest.startswith(b"\x1f\x8b"):
                return
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = rest


def _count_stream(chunks: Iterator[bytes], stop_after: int) -> int:
    """Bytes in ``chunks``, counting stops (and the stream is dropped) past ``stop_after``."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > stop_after:
            break
    return total


def _decompressed_size(name: str, chunks: Iterator[bytes], declared: int, limit: int) -> int:
    """Bytes in the decompressed ``chunks``; refuses corrupt data and streams longer than ``limit``.

    ``declared``: the header's voxel bytes (for the message). Counting stops as soon as
    ``limit`` is passed, so a decompression bomb costs at most ``limit`` bytes of work.
    """
    try:
        total = _count_stream(chunks, limit)
    except _Corrupt as exc:
        raise _corrupt_error(name, exc) from None
    if total > limit:
        raise InputError(
            f"{name} holds more compressed data than its header declares ({declared:,} bytes of voxels); "
            "it is refused as a possible decompression bomb"
        )
    return total


# ---------------------------------------------------------------------------------- NIfTI
def _version_and_order(head: bytes) -> Tuple[Optional[int], str]:
    """``(NIfTI version or None, byte order)`` from the ``sizeof_hdr`` that opens a header."""
    for order in ("little", "big"):
        version = _NIFTI_SIZES.get(int.from_bytes(head[:4], order)) if len(head) >= 4 else None
        if version is not None:
            return version, order
    return None, "little"


def _nifti_header(name: str, head: bytes):
    """A nibabel header from the first bytes of a NIfTI-1 / NIfTI-2 single file (no extensions read)."""
    import nibabel as nib

    version, order = _version_and_order(head)
    size = 348 if version == 1 else 540
    if version is None or len(head) < size:
        raise InputError(f"{name}: cannot be read as an image (no NIfTI header)")
    endian = "<" if order == "little" else ">"
    cls = nib.Nifti1Header if version == 1 else nib.Nifti2Header
    header = cls(binaryblock=head[:size], endianness=endian, check=False)
    magic = bytes(header["magic"]).rstrip(b"\x00")
    if magic not in (b"n+1", b"n+2"):
        raise InputError(f"{name}: cannot be read as an image (not a single-file NIfTI: magic {magic!r})")
    return header


def nifti_version(path: "str | os.PathLike[str]") -> int:
    """1 or 2: the NIfTI version of a ``.nii`` / ``.nii.gz`` file, from ``sizeof_hdr`` (either
    byte order); 1 when the first bytes cannot tell (the NIfTI-1 reader then says why)."""
    import gzip

    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        with opener(path, "rb") as fh:
            head = fh.read(4)
    except (OSError, EOFError, zlib.error):
        return 1
    return _version_and_order(head)[0] or 1


def check_nifti(path: "str | os.PathLike[str]", per_frame: bool = False) -> None:
    """Refuse a ``.nii`` / ``.nii.gz`` that is cut off, corrupt or over the voxel budget.

    The header's ``dim`` x ``bitpix`` is compared with the bytes after ``vox_offset``; a
    gzip file is decompressed as a stream to count them (SimpleITK zero-fills a cut-off
    stream silently). ``per_frame``: the budget holds for one 3D time point, not the whole
    4D file (a reader that keeps only the time points it needs, e.g. the frames of a dynamic
    PET's static window: 40 frames of a modern scanner declare more than one image may use).
    """
    p = Path(path)
    with open(p, "rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"  # ITK's znzlib also reads an uncompressed ".nii.gz"
        fh.seek(0)
        if not compressed:
            header = _nifti_header(p.name, fh.read(540))
            declared, offset = _nifti_declared(p.name, header, per_frame)
            available = os.fstat(fh.fileno()).st_size - offset
            if available < declared:
                raise cut_off_error(p.name, declared, max(available, 0))
            return
        chunks = _inflate(fh)
        head = b""
        try:
            for chunk in chunks:
                head += chunk
                if len(head) >= 540:
                    break
        except _Corrupt as exc:
            raise _corrupt_error(p.name, exc) from None
        header = _nifti_header(p.name, head)
        declared, offset = _nifti_declared(p.name, header, per_frame)
        limit = offset + declared + COMPRESSED_SLACK_BYTES
        total = len(head) + _decompressed_size(p.name, chunks, declared, limit - len(head))
        if total - offset < declared:
            raise cut_off_error(p.name, declared, max(total - offset, 0))


def _nifti_declared(name: str, header, per_frame: bool = False) -> Tuple[int, int]:
    """(declared voxel bytes, vox_offset) of a NIfTI header, after the budget check (of one 3D
    time point when ``per_frame``)."""
    dims = [int(d) for d in header["dim"]]
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]):
        raise InputError(f"{name}: cannot be read as an image (its header gives invalid dimensions {dims[1:ndim + 1]})")
    bitpix = int(header["bitpix"])
    if bitpix <= 0 or bitpix % 8:
        raise InputError(f"{name}: cannot be read as an image (its header gives {bitpix} bits per voxel)")
    offset = int(header["vox_offset"])
    budgeted = dims[1 : min(ndim, 3) + 1] if per_frame else dims[1 : ndim + 1]
    check_voxel_budget(name, budgeted, bitpix / 8, "voxels per time point" if per_frame and ndim > 3 else "voxels")
    declared = int(math.ceil(math.prod(dims[1 : ndim + 1]) * bitpix / 8))
    return declared, max(offset, 352 if header["sizeof_hdr"] == 348 else 544)


# ---------------------------------------------------------------------------------- NRRD
#: bytes per value of every NRRD type name (the NRRD0005 specification's list)
_NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t",
                     "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int",
                     "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int",
                     "uint64", "uint64_t", "double"), 8),
}
_NRRD_ENCODINGS = {"raw": "raw", "gz": "gzip", "gzip": "gzip", "txt": "text", "text": "text", "ascii": "text",
                   "hex": "hex"}
_NRRD_ALIASES = {"datafile": "data file", "lineskip": "line skip", "byteskip": "byte skip",
                 "blocksize": "block size"}


@dataclass
class NrrdHeader:
    """The fields of a NRRD header this module needs.

    ``data_offset`` is where attached voxels start (bytes from the file start; -1: the file
    ends with its header, no voxels); ``data_files`` are the detached data files, resolved
    inside the header's folder (empty: attached).
    """

    fields: dict
    data_offset: int
    data_files: List[Path] = field(default_factory=list)

    @property
    def sizes(self) -> List[int]:
        """``sizes:`` as integers (fastest axis first); empty when missing or not integers."""
        values = self.fields.get("sizes", "").split()
        return [int(v) for v in values] if all(_is_int(v) for v in values) else []


def read_nrrd_header(path: "str | os.PathLike[str]") -> NrrdHeader:
    """Parse a NRRD header (``.nrrd``, ``.nhdr``, ``.seg.nrrd``) without reading its voxels.

    Raises :class:`InputError` for a header that is not NRRD, too large, or names a data
    file outside its own folder.
    """
    p = Path(path)
    fields: dict = {}
    list_files: List[str] = []
    with open(p, "rb") as fh:
        magic = fh.readline(64)
        if not magic.startswith(b"NRRD000"):
            raise InputError(f"{p.name}: cannot be read as an image (not a NRRD file)")
        in_list = attached = cut = False
        while True:
            line = fh.readline(NRRD_MAX_HEADER_BYTES)
            if fh.tell() > NRRD_MAX_HEADER_BYTES:
                raise InputError(f"{p.name}: cannot be read as an image (its NRRD header is over "
                                 f"{_size_text(NRRD_MAX_HEADER_BYTES)})")
            if not line:
                break  # end of file: a detached header (.nhdr) ends here
            if not line.endswith(b"\n"):
                cut = not in_list  # a last line without its end: the file stops inside the header
                break
            text = line.decode("latin-1").rstrip("\r\n")
            if in_list:
                if text.strip():
                    list_files.append(text.strip())
                    if len(list_files) > NRRD_MAX_DATA_FILES:
                        raise InputError(f"{p.name}: its NRRD header lists more than {NRRD_MAX_DATA_FILES} data files")
                continue
            if not text.strip():
                attached = True
                break  # blank line: attached voxels follow
            if text.startswith("#"):
                continue
            kv, colon = text.find(":="), text.find(": ")
            if kv >= 0 and (colon < 0 or kv < colon):
                continue  # key/value pair (Slicer's Segment0_Name:=...), not a field
            if colon < 0:
                raise InputError(f"{p.name}: cannot be read as an image (malformed NRRD header line {text[:60]!r})")
            key = text[:colon].strip().lower()
            key = _NRRD_ALIASES.get(key, key)
            fields[key] = text[colon + 2 :].strip()
            if key == "data file" and fields[key].split()[:1] == ["LIST"]:
                in_list = True  # the file names follow, one a line, to the end of the file
        data_offset = fh.tell()
    if (cut or not attached) and "data file" not in fields:
        if not {"type", "sizes", "encoding"} <= set(fields):
            raise InputError(f"{p.name} is cut off inside its NRRD header; copy or export the file again")
        data_offset = -1  # header whole, voxels missing: check_nrrd says how many bytes
    header = NrrdHeader(fields, data_offset)
    if "data file" in fields:
        header.data_files = _nrrd_data_files(p, fields["data file"], list_files, header.sizes)
    return header


def _nrrd_data_files(header_path: Path, spec: str, listed: List[str], sizes: List[int]) -> List[Path]:
    """The detached data files a header names, each checked to lie inside the header's folder."""
    parts = spec.split()
    if parts[:1] == ["LIST"]:
        names = listed
    elif len(parts) >= 4 and "%" in parts[0] and all(_is_int(v) for v in parts[1:4]):
        first, last, step = (int(v) for v in parts[1:4])
        count = (last - first) // step + 1 if step and (last - first) * step >= 0 else 0
        if not 1 <= count <= min(NRRD_MAX_DATA_FILES, math.prod(sizes) if sizes else 1):
            raise InputError(f"{header_path.name}: its NRRD data file pattern {spec!r} names {max(count, 0)} files")
        try:
            names = [parts[0] % i for i in range(first, last + (1 if step > 0 else -1), step)]
        except (TypeError, ValueError):
            raise InputError(f"{header_path.name}: its NRRD data file pattern {parts[0]!r} is not a number format") from None
    else:
        names = [spec]
    if not names:
        raise InputError(f"{header_path.name}: its NRRD header names no data file")
    folder = header_path.absolute().parent
    real_folder = folder.resolve()
    files = []
    for name in names:
        rel = Path(name)
        inside = not rel.is_absolute() and ".." not in rel.parts and not name.startswith("~")
        target = (folder / rel).resolve() if inside else None
        if target is None or not target.is_relative_to(real_folder):
            raise InputError(
                f"{header_path.name}: its header reads voxels from {name!r}, outside its own folder; "
                "a detached NRRD data file must sit beside its header (a relative name, no '..', no link out)"
            )
        if not target.is_file():
            raise InputError(f"{header_path.name}: the data file {name!r} its header names does not exist")
        files.append(target)
    return files


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def check_nrrd(path: "str | os.PathLike[str]") -> NrrdHeader:
    """Refuse a NRRD whose data file leaves its folder, or that is cut off, corrupt or over budget.

    Returns the parsed header.
    """
    p = Path(path)
    header = read_nrrd_header(p)
    f = header.fields
    type_name = f.get("type", "").lower()
    if type_name == "block":
        if not _is_int(f.get("block size", "")) or int(f["block size"]) < 1:
            raise InputError(f"{p.name}: cannot be read as an image (NRRD block type without a block size)")
        type_bytes = int(f["block size"])
    elif type_name in _NRRD_TYPE_BYTES:
        type_bytes = _NRRD_TYPE_BYTES[type_name]
    else:
        raise InputError(f"{p.name}: cannot be read as an image (unknown NRRD type {f.get('type')!r})")
    sizes = header.sizes
    if not sizes or any(s < 1 for s in sizes) or (_is_int(f.get("dimension", "")) and int(f["dimension"]) != len(sizes)):
        raise InputError(f"{p.name}: cannot be read as an image (its NRRD header gives invalid sizes {f.get('sizes')!r})")
    encoding = _NRRD_ENCODINGS.get(f.get("encoding", "").lower())
    if encoding is None:
        raise InputError(
            f"{p.name}: its NRRD encoding {f.get('encoding')!r} is not supported; save it again as raw or gzip"
        )
    declared = check_voxel_budget(p.name, sizes, type_bytes)
    if encoding in ("text", "hex"):
        return header  # ITK counts the values itself and fails clearly when some are missing
    line_skip, byte_skip = f.get("line skip", "0"), f.get("byte skip", "0")
    line_skip = int(line_skip) if _is_int(line_skip) else -1
    byte_skip = int(byte_skip) if _is_int(byte_skip) else -2
    if line_skip < 0 or byte_skip < -1 or (byte_skip == -1 and encoding != "raw"):  # -1: voxels end the file
        raise InputError(f"{p.name}: cannot be read as an image (invalid NRRD line skip / byte skip)")
    if header.data_offset < 0:
        raise cut_off_error(p.name, declared, 0)
    sources = [(path_, 0) for path_ in header.data_files] or [(p, header.data_offset)]
    available = 0
    for source, offset in sources:
        with open(source, "rb") as fh:
            fh.seek(offset)
            for _ in range(line_skip):
                if not fh.readline(NRRD_MAX_HEADER_BYTES) or fh.tell() - offset > NRRD_MAX_HEADER_BYTES:
                    break  # skipped lines are header-like text: bounded as a header is
            if encoding == "raw":
                size = os.fstat(fh.fileno()).st_size - fh.tell()
                available += size if byte_skip == -1 else max(size - byte_skip, 0)
            else:
                # one gzip stream per data file; byte skip applies to the decompressed bytes (teem)
                limit = byte_skip + (declared - available) + COMPRESSED_SLACK_BYTES
                got = _decompressed_size(p.name, _inflate(fh), declared, limit)
                available += max(got - byte_skip, 0)
    if available < declared:
        raise cut_off_error(p.name, declared, available)
    return header


# ---------------------------------------------------------------------------------- files
def check_image_file(path: "str | os.PathLike[str]", kind: Optional[str] = None, per_frame: bool = False) -> None:
    """Check a NIfTI / NRRD / ``.seg.nrrd`` file before any reader (SimpleITK, Slicer) opens it.

    Args:
        kind: ``"nifti"``, ``"nrrd"`` or ``"seg-nrrd"`` (default: from the name, as
            :func:`clinicalai.volume.formats.image_format`; other formats pass unchecked). DICOM
            series are checked slice by slice by :mod:`clinicalai.volume.dicom_checks`
            when they are read.
        per_frame: a NIfTI's budget holds for one time point (:func:`check_nifti`).

    Raises:
        InputError: the file is cut off, corrupt, over the voxel budget, or (NRRD) reads
            its voxels from outside its own folder.
    """
    p = Path(path)
    if kind is None:
        try:
            kind = image_format(p)
        except InputError:
            return  # a format only Slicer reads (.mha, .vtk, ...): nothing of ours to check

    try:
        if kind == "nifti":
            check_nifti(p, per_frame)
        elif kind in ("nrrd", "seg-nrrd"):
            check_nrrd(p)
    except OSError as exc:
        raise InputError(f"{p.name}: cannot be read ({exc.strerror or exc})") from None
