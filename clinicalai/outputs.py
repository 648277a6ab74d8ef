"""Writing outputs so that a failure or a cancel never leaves a partial file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _suffixes(path: Path) -> str:
    # keep compound suffixes (.nii.gz, .seg.nrrd): writers pick their format from them
    name = path.name
    for compound in (".nii.gz", ".seg.nrrd"):
        if name.lower().endswith(compound):
            return name[-len(compound):]
    return path.suffix


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike[str]", directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffix so format-by-extension writers work. On any
    exception (including :class:`~clinicalai.errors.Cancelled`) the temporary is removed and
    ``path`` is untouched.
    """
    final = Path(path)
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
        if directory:
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
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
    import csv

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
