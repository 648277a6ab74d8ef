"""Writing outputs so that a failure or a cancel never leaves a partial file behind."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


def _suffixes(path: Path) -> str:
    # keep compound suffixes (.nii.gz, .seg.nrrd): writers pick their format from them
    name = path.name
    for compound in (".nii.gz", ".seg.nrrd"):
        if name.lower().endswith(compound):
            return name[-len(compound):]
    return path.suffix


#: help of ``--overwrite`` (every command with a folder output spells it the same way)
OVERWRITE_HELP = ("write into an existing non-empty output folder: only the files this command writes are "
                  "replaced, nothing else in the folder is touched or deleted")


def add_overwrite_arg(parser: Any) -> None:
    """``--overwrite`` on a command whose output is a folder (see :func:`check_output_folder`)."""
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def check_output_folder(path: "str | os.PathLike[str]", overwrite: bool = False) -> Path:
    """``path`` as an output folder a command may write: new, empty, or (``overwrite``) an
    existing folder whose same-named files will be replaced.

    Called by commands before any work (an hour of training must not end in this error) and
    again by :func:`atomic_output`. Raises :class:`~clinicalai.errors.InputError` for an
    existing file, and for a non-empty folder without ``overwrite``: a user's folder is never
    deleted or emptied by a command.
    """
    folder = Path(path)
    if folder.is_symlink() and not folder.exists():
        raise InputError(f"{folder} is a broken link; choose a new output folder")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder; choose a new output folder")
    if folder.is_dir() and not overwrite and any(folder.iterdir()):
        raise InputError(f"output folder {folder} already exists and is not empty; choose a new folder, or pass "
                         "--overwrite to replace only the files this command writes")
    return folder


def _merge_folder(src: Path, dst: Path) -> None:
    """Move every file of ``src`` onto the same relative path under ``dst`` (replacing only
    those files), then remove the emptied ``src``. A name that is a file on one side and a
    folder on the other is refused before anything moves."""
    files = [p for p in src.rglob("*") if not p.is_dir()]
    for f in files:
        target = dst / f.relative_to(src)
        if target.is_dir() and not target.is_symlink():
            raise InputError(f"cannot write {target}: a folder of that name is in the way; choose a new output folder")
        for parent in target.relative_to(dst).parents:
            if (dst / parent).exists() and not (dst / parent).is_dir():
                raise InputError(f"cannot write {target}: {dst / parent} is a file; choose a new output folder")
    for f in sorted(files):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, target)
    shutil.rmtree(src, ignore_errors=True)  # only the command's own temporary folder, now empty of files


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike[str]", directory: bool = False, overwrite: bool = False,
                  replace_checked: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffix so format-by-extension writers work. On any
    exception (including :class:`~clinicalai.errors.Cancelled`) the temporary is removed and
    ``path`` is untouched.

    A ``directory`` output never deletes what is already there: an existing non-empty folder
    is refused (:func:`check_output_folder`) unless ``overwrite``, and then only the files the
    block wrote replace their namesakes; the folder's other files stay.
    ``replace_checked``: the caller has checked that the existing folder holds nothing but an
    earlier output of its own kind (a DICOM series folder of ``.dcm`` files only, which must not
    mix with the new series), so it is replaced as a whole.
    """
    final = Path(path)
    if directory and not replace_checked:
        check_output_folder(final, overwrite)
    parent = final.parent if str(final.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial" + _suffixes(final), dir=parent)
        os.close(fd)
        tmp = Path(name)
    # mkstemp/mkdtemp create owner-only files; give the result the permissions an ordinary
    # open() would (umask applied), so outputs are readable as users expect
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    try:
        yield tmp
        if directory and replace_checked:
            if final.is_dir():
                shutil.rmtree(final)  # an earlier output the caller checked (see above), not a user's folder
            os.replace(tmp, final)
        elif directory:
            check_output_folder(final, overwrite)  # again: the folder may have been filled meanwhile
            if final.is_dir() and any(final.iterdir()):
                _merge_folder(tmp, final)
            else:
                if final.is_dir():
                    final.rmdir()  # empty (just checked): rename cannot replace it everywhere
                os.replace(tmp, final)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def write_json(data: Any, path: "str | os.PathLike[str]") -> None:
    """Write ``data`` as indented JSON, atomically (numpy scalars/arrays converted)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def write_csv(rows: "list[dict[str, Any]]", path: "str | os.PathLike[str]") -> Path:
    """Write ``rows`` (dicts with the same keys, the first row's order) as a CSV table with a
    header line, atomically; returns the path."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
