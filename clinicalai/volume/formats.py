"""Image file formats by name, and the segment palette of ``.seg.nrrd`` files.

The lowest layer of :mod:`clinicalai.volume`'s file handling: :mod:`~clinicalai.volume.integrity`
(checks before a reader), :mod:`~clinicalai.volume.io` (readers and writers) and
:mod:`clinicalai.models.bundle` (label colours of a bundle) all read these facts from here.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
SEG_NRRD_SUFFIX = ".seg.nrrd"
#: file endings of single DICOM files (Siemens writes ``.ima``); any other name is DICOM when it
#: starts like DICOM (:func:`has_dicom_magic`)
DICOM_SUFFIXES = (".dcm", ".ima")

#: Slicer's default segment palette (RGB in 0..1): a segment or label without a colour gets
#: entry ``i % 8`` (``.seg.nrrd`` headers, segmentation nodes, labels derived from a bundle).
SEGMENT_COLORS = (
    (0.5, 0.68, 0.5), (0.94, 0.84, 0.57), (0.69, 0.48, 0.4), (0.44, 0.72, 0.82),
    (0.85, 0.4, 0.36), (0.87, 0.51, 0.75), (0.56, 0.82, 0.44), (0.86, 0.79, 0.3),
)


def is_seg_nrrd(path: "str | os.PathLike[str]") -> bool:
    """True for a Slicer segmentation file name (``*.seg.nrrd``, any case)."""
    return Path(path).name.lower().endswith(SEG_NRRD_SUFFIX)


#: A DICOM Part 10 file has a 128-byte preamble and then these four bytes, whatever its name
DICOM_MAGIC = b"DICM"
DICOM_PREAMBLE_BYTES = 128


def is_dicom_head(head: bytes) -> bool:
    """True for the first bytes of a DICOM Part 10 file: 128-byte preamble, then ``DICM``."""
    end = DICOM_PREAMBLE_BYTES + len(DICOM_MAGIC)
    return len(head) >= end and head[DICOM_PREAMBLE_BYTES:end] == DICOM_MAGIC


def has_dicom_magic(path: "str | os.PathLike[str]") -> bool:
    """True for a file that starts like a DICOM Part 10 file (preamble, then ``DICM``)."""
    try:
        with open(path, "rb") as fh:
            return is_dicom_head(fh.read(DICOM_PREAMBLE_BYTES + len(DICOM_MAGIC)))
    except OSError:
        return False


#: a folder is taken for a DICOM folder when one of its first this many files (by name) is
#: DICOM: a series folder holds hundreds of slices, and sniffing each costs a read
FOLDER_SNIFF_FILES = 8


def looks_like_dicom_file(path: "str | os.PathLike[str]") -> bool:
    """A file :func:`image_format` reads as DICOM: a ``.dcm`` / ``.ima`` file, or one of any
    name that starts like DICOM (``IM0001``, ``1.3.12.2...``)."""
    p = Path(path)
    return p.is_file() and (p.name.lower().endswith(DICOM_SUFFIXES) or has_dicom_magic(p))


def image_format(path: "str | os.PathLike[str]") -> str:
    """``"nifti"``, ``"seg-nrrd"``, ``"nrrd"`` or ``"dicom"`` (a folder, a ``.dcm`` file, or a
    file of any name that starts like DICOM: scanners and PACS exports name files ``IM0001``,
    ``1.3.12.2...`` or nothing at all), else an error."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    if is_seg_nrrd(p):
        return "seg-nrrd"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    if name.endswith(DICOM_SUFFIXES) or looks_like_dicom_file(p):
        return "dicom"
    raise InputError(
        f"{p.name}: unsupported image type; use NIfTI (.nii, .nii.gz), NRRD (.nrrd, .seg.nrrd) "
        "or a DICOM series folder"
    )
