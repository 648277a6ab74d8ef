"""The cases of a cohort: every image of a folder (recursively) or the rows of a CSV.

A folder gives one case per NIfTI / NRRD file and one per DICOM series folder. A CSV gives
one case per row: its ``path`` column (relative to the CSV) and the other columns the
workflow understands (``mask``, ``lesion``, ``units``, ``brain_mask``, ``label``, ...).
Case names come from the path relative to the folder (or as written in the CSV), so the
same cohort always gets the same names, and two ``image.nii.gz`` in different folders get
different ones.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import InputError
from ..volume.formats import FOLDER_SNIFF_FILES, looks_like_dicom_file

#: file endings that are one image each (lower case; compound ones first)
IMAGE_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: CSV columns that name a file, resolved relative to the CSV like ``path``
PATH_COLUMNS = ("path", "mask", "image", "lesion", "brain_mask", "reference")


@dataclass(frozen=True)
class Case:
    """One input of a cohort: a stable ``name`` (the output folder's), the image path, and
    the CSV row's other columns (file columns already resolved against the CSV's folder)."""

    name: str
    input: str
    columns: Dict[str, str] = field(default_factory=dict)


def discover_cases(inputs: "str | os.PathLike[str]", exclude: Sequence["str | os.PathLike[str]"] = ()) -> List[Case]:
    """The cases of ``inputs``: a folder (images and DICOM series folders, recursively, in
    sorted order) or a ``.csv`` file with a ``path`` column. ``exclude``: folders never
    searched (the run's own output folder when it lies inside the inputs).

    Raises:
        InputError: ``inputs`` does not exist, the CSV has no ``path`` column, or no case.
    """
    src = Path(inputs)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    if src.is_dir():
        cases = _folder_cases(src, [Path(e).resolve() for e in exclude])
        where = f"folder {src} (NIfTI, NRRD files or DICOM series folders)"
    elif src.suffix.lower() == ".csv":
        cases = _csv_cases(src)
        where = f"CSV {src.name}"
    else:
        raise InputError(f"{src.name}: INPUTS must be a folder of images or a .csv with a 'path' column")
    if not cases:
        raise InputError(f"no cases in {where}")
    return cases


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def _folder_cases(root: Path, exclude: List[Path]) -> List[Case]:
    found: List[str] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        # hidden folders (.git, a run's .partial) and the run's own output are never inputs
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in exclude)
        names = sorted(f for f in files if not f.startswith("."))
        # a DICOM file as the reader takes it: ``.dcm`` / ``.ima``, or any name with the DICOM
        # preamble (``IM0001``, a UID such as ``1.3.12.2.1107...``, as scanners and PACS name them)
        if any(not _is_image_file(here / f) and looks_like_dicom_file(here / f) for f in names[:FOLDER_SNIFF_FILES]):
            found.append(str(here))
        found.extend(str(here / f) for f in names if _is_image_file(here / f))
    relative = [os.path.relpath(p, root) if p != str(root) else root.name for p in found]
    names = unique_names(relative)
    return [Case(n, p) for n, p in zip(names, found)]


def _csv_cases(path: Path) -> List[Case]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path.name}: cannot read the CSV ({exc})") from None
    if rows and "path" not in header:
        raise InputError(f"{path.name}: no 'path' column (columns: {', '.join(header)})")
    base = path.parent
    cases: List[Case] = []
    given = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        raw = (row.get("path") or "").strip()
        if not raw:
            raise InputError(f"{path.name}, line {i}: empty 'path'")
        columns = {k: (v or "").strip() for k, v in row.items() if k and k != "path" and (v or "").strip()}
        for key in PATH_COLUMNS:
            if key in columns:
                columns[key] = str(base / columns[key])
        given.append(row.get("case") or row.get("id") or raw)
        cases.append(Case("", str(base / raw), columns))
    names = unique_names([str(g).strip() for g in given])
    return [Case(n, c.input, c.columns) for n, c in zip(names, cases)]


def case_stem(relative: str) -> str:
    """A folder name from a relative input path: image suffixes dropped, separators as
    ``__``, anything but letters, digits, ``.``, ``_``, ``-`` as ``_``."""
    text = relative.replace("\\", "/").strip("/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    parts = ["up" if p == ".." else p for p in parts]
    if parts:
        last = parts[-1]
        for suffix in IMAGE_SUFFIXES:
            if last.lower().endswith(suffix) and len(last) > len(suffix):
                parts[-1] = last[: -len(suffix)]
                break
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(parts)).strip("._") or "case"
    return stem[:120]


def unique_names(relative: Sequence[str]) -> List[str]:
    """:func:`case_stem` of each path; names that two paths share (``a.nii`` and ``a.nii.gz``,
    or a clash after replacing characters) each get a short hash of their own path, so the
    same cohort always gets the same names, whatever the order of its paths."""
    stems = [case_stem(r) for r in relative]
    counts: Dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1  # case-insensitive file systems
    out: List[str] = []
    for r, s in zip(relative, stems):
        if counts[s.lower()] > 1:
            s = f"{s}-{hashlib.sha1(r.encode()).hexdigest()[:8]}"
        out.append(s)
    if len(set(n.lower() for n in out)) != len(out):
        dup = sorted({n for n in out if sum(m.lower() == n.lower() for m in out) > 1})
        raise InputError(f"the cohort lists the same input more than once: {', '.join(dup[:5])}")
    return out


def column(case: Case, key: str) -> Optional[str]:
    """The case's value of CSV column ``key`` (``None`` when absent or empty)."""
    value = case.columns.get(key)
    return value if value else None
