"""Which DICOM series a folder holds, and why it holds none.

GDCM's scanner (SimpleITK's ``GetGDCMSeriesIDs``, as Slicer uses) groups and sorts a folder's
files; on some files it fails for the whole folder, and it skips non-image objects without a
word. Here a failed scan is redone file by file with pydicom, and an empty result is explained
(reports, RT objects, a DICOMDIR, series in subfolders).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from .dicom_checks import dicom_object_kind, has_pixels, read_dicom_header
from .formats import looks_like_dicom_file


def dicom_series_files(folder: "str | os.PathLike[str]") -> Dict[str, List[str]]:
    """SeriesInstanceUID -> the image files of that series in ``folder``, in slice order.

    GDCM's scanner (what SimpleITK and Slicer's readers use) groups and sorts the files. It
    stops with an error at some files it cannot parse (e.g. a single-frame RT dose, on which
    GDCM's own consistency assertion fails), and then no file of the folder can be read. Such a
    folder is scanned again file by file with pydicom (headers only); each file that fails
    costs only itself. pydicom does not sort slices, so the files of a series are put in order
    along the slice normal, as GDCM does.
    """
    import SimpleITK as sitk

    folder = str(folder)
    try:
        return {
            uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ()
        }
    except RuntimeError:
        return _series_files_by_pydicom(Path(folder))


def _dicom_headers(folder: Path) -> Iterator[Tuple[Path, Any]]:
    """``(path, header)`` of every file of ``folder`` (not its subfolders) that reads as DICOM."""
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            yield path, read_dicom_header(path)
        except InputError:
            continue


def _series_files_by_pydicom(folder: Path) -> Dict[str, List[str]]:
    groups: Dict[str, List[Tuple[Tuple[float, float, str], str]]] = {}
    for path, ds in _dicom_headers(folder):
        uid = ds.get("SeriesInstanceUID")
        if not uid or not has_pixels(ds):
            continue
        groups.setdefault(str(uid), []).append((_slice_sort_key(ds, path.name), str(path)))
    return {uid: [f for _, f in sorted(members)] for uid, members in groups.items()}


def _slice_sort_key(ds: Any, name: str) -> Tuple[float, float, str]:
    """Position along the slice normal, then InstanceNumber, then the file name."""
    position = 0.0
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        position = float(np.dot(np.cross(iop[:3], iop[3:]), ipp))
    except (AttributeError, TypeError, ValueError):
        pass
    try:
        instance = float(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        instance = 0.0
    return (position, instance, name)


def list_dicom_series(folder: "str | os.PathLike[str]", series_files: Optional[Dict[str, List[str]]] = None) -> List[Dict[str, Any]]:
    """Every DICOM series under ``folder``: uid, description, modality, number of files
    (``series_files``: :func:`dicom_series_files` of the folder, when the caller has it)."""
    series = []
    for uid, files in (dicom_series_files(folder) if series_files is None else series_files).items():
        ds = read_dicom_header(files[0])
        series.append(
            {
                "uid": uid,
                "description": str(ds.get("SeriesDescription") or "").strip(),
                "modality": str(ds.get("Modality") or "").strip(),
                "files": len(files),
            }
        )
    return series


def image_series(series: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The entries of :func:`list_dicom_series` that are images (DICOM SEG masks left out)."""
    return [s for s in series if s["modality"] != "SEG"]


def why_no_series(folder: Path) -> str:
    """Why ``folder`` holds no image series, in one sentence: what the DICOM files there are
    (reports, RT objects, a DICOMDIR), or which subfolders hold the series (a disc export)."""
    kinds: Dict[str, int] = {}
    dicom_files = 0
    for path, ds in _dicom_headers(folder):
        dicom_files += 1
        if path.name.upper() == "DICOMDIR" or "DirectoryRecordSequence" in ds:
            kinds["DICOMDIR"] = kinds.get("DICOMDIR", 0) + 1
        elif not has_pixels(ds):
            what = dicom_object_kind(ds)
            kinds[what] = kinds.get(what, 0) + 1
    below = _subfolders_with_dicom(folder)
    if below:
        shown = ", ".join(below[:3]) + (f" and {len(below) - 3} more" if len(below) > 3 else "")
        return f"{folder.name}: the DICOM series are in its subfolders ({shown}); choose the folder of one series"
    if kinds:
        listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return f"{folder.name}: no DICOM image series in this folder; its DICOM files hold no image ({listing})"
    if dicom_files:
        return f"{folder.name}: no DICOM image series in this folder (GDCM could read none of its {dicom_files} DICOM files)"
    return f"{folder}: no DICOM series found in this folder"


#: how deep, and how many folders, :func:`_subfolders_with_dicom` looks (a disc export nests
#: PATIENT/STUDY/SERIES, 3-4 levels; the bound keeps a mistaken choice of "/" cheap)
_SUBFOLDER_DEPTH = 4
_SUBFOLDER_VISITS = 2000


def _subfolders_with_dicom(folder: Path) -> List[str]:
    found: List[str] = []
    visits = 0
    stack = [(folder, 0)]
    while stack and visits < _SUBFOLDER_VISITS:
        current, depth = stack.pop()
        visits += 1
        try:
            entries = sorted(current.iterdir())
        except OSError:
            continue
        if current != folder and any(looks_like_dicom_file(e) for e in entries[:50]):
            found.append(str(current.relative_to(folder)))
            continue
        if depth < _SUBFOLDER_DEPTH:
            stack.extend((e, depth + 1) for e in reversed(entries) if e.is_dir() and not e.is_symlink() and not e.name.startswith("."))
    return found
