"""Try a file in a throw-away process before the server loads it.

Slicer's native readers do not always fail politely: a ``.seg.nrrd`` whose ``Segment0_Extent``
is huge, or whose header is cut short, ends in ``std::bad_alloc`` / an uncaught ITK exception
and ``terminate`` -- the whole server process with it, and again each time the file is clicked.
So every file the browser app opens is first read, in a child process with a memory limit and
a timeout, by the engine's reader (:func:`clinicalai.volume.read_volume`) and then by the very
Slicer loader the server will use. Only a file that passed both is loaded in the server; one
that failed stays refused with its message (results are kept by file identity, so a refused
file is not retried on every click).

Run as ``python -m clinicalai.web.probe KIND PATH [SERIES_UID | --frame K | --static-window A B]`` (KIND: volume,
segmentation, dicom, dicom-seg), it prints one JSON line: ``{"ok": true}`` or ``{"error": "one
sentence"}`` (for a DICOM folder of several series and none chosen, with ``"series"``: the ones to
offer; for a 4D NIfTI or a dynamic PET DICOM series and no frame chosen, with ``"frames"``: how
many time points it holds). ``--static-window A B``: the static PET of a dynamic PET (BIDS-PET
NIfTI or DICOM series), its whole frames from A to B minutes after the injection
(:func:`clinicalai.pet.dynamic.static_from_dynamic`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..errors import ClinicalAIError, InputError, TimeSeriesError

KINDS = ("volume", "segmentation", "dicom", "dicom-seg")
#: the kinds that can hold time points (a 4D NIfTI, a dynamic PET DICOM series)
TIMED_KINDS = ("volume", "dicom")
#: seconds a probe may take (a large DICOM series is read in a few seconds)
DEFAULT_TIMEOUT_S = 120.0
#: address space of the probe process (GiB): a header declaring terabytes fails there
DEFAULT_MEMORY_GB = 16.0
#: at most this many series of one folder are offered (a PACS study export holds a few tens)
MAX_SERIES = 200
#: at most this many time points of a 4D file are offered (a cine holds 20-50, an fMRI hundreds)
MAX_FRAMES = 2000


class ProbeRefused(InputError):
    """The file failed the probe: the engine's reader or Slicer's refused it, or crashed.
    ``series``: for a DICOM folder that holds several series (none chosen), each one's
    ``uid``, ``description``, ``modality`` and ``files``, so the page can offer a choice;
    ``frames``: for a 4D NIfTI or NRRD, a Slicer ``.seq.nrrd`` or a dynamic PET DICOM series (no
    time point chosen), how many it holds (else 0)."""

    def __init__(self, message: str, series: Optional[list] = None, frames: int = 0) -> None:
        super().__init__(message)
        self.series = list(series or [])
        self.frames = int(frames)


def _signature(path: Path) -> Tuple:
    """Identity of a file (or a DICOM folder's files) that survives a rename: inode, size and
    modification time. Any change to the content makes a new signature."""
    st = path.stat()
    sig: Tuple = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if path.is_dir():
        sig += tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))
    return sig


class FileProber:
    """Probes files in child processes; remembers each file's verdict."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, memory_gb: float = DEFAULT_MEMORY_GB) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = int(memory_gb * 1024**3)
        self._verdicts: Dict[Tuple, Optional[str]] = {}
        self._lock = threading.Lock()

    def check(self, path: Path, kind: str, shown_name: str = "", series_uid: Optional[str] = None,
              frame: Optional[int] = None, static_window: Optional[Tuple[float, float]] = None) -> None:
        """Raise :class:`ProbeRefused` (one sentence) unless ``path`` loads cleanly as ``kind``
        (a DICOM folder: its series ``series_uid``, or its only one; a 4D NIfTI or a dynamic PET
        series: its time point ``frame``, or the static PET of its frames in ``static_window``,
        minutes after the injection). Blocking (seconds): call it from a worker thread."""
        if kind not in KINDS:
            raise ValueError(f"unknown probe kind {kind!r}")
        if frame is not None and (kind not in TIMED_KINDS or int(frame) < 0):
            raise ValueError(f"a time point is chosen in a volume file or a DICOM series only, from 0 (got {kind!r}, {frame!r})")
        if static_window is not None and (kind not in TIMED_KINDS or frame is not None):
            raise ValueError("a static window is chosen in a volume file or a DICOM series only, instead of a time point")
        window = None if static_window is None else (float(static_window[0]), float(static_window[1]))
        key = (kind, series_uid, frame, window) + _signature(path)
        with self._lock:
            known = key in self._verdicts
            verdict, series, frames = self._verdicts.get(key, (None, [], 0))
        if not known:
            verdict, series, frames = self._run(path, kind, series_uid, frame, window)
            with self._lock:
                self._verdicts[key] = (verdict, series, frames)
        if verdict is not None:
            shown = shown_name or path.name
            if verdict.startswith(f"{path.name}: "):  # the engine's messages name the file already
                raise ProbeRefused(f"{shown}: {verdict[len(path.name) + 2:]}", series, frames)
            if verdict.startswith(f"{path.name} "):
                raise ProbeRefused(f"{shown}{verdict[len(path.name):]}", series, frames)
            raise ProbeRefused(f"{shown}: {verdict}", series, frames)

    def _run(self, path: Path, kind: str, series_uid: Optional[str] = None, frame: Optional[int] = None,
             window: Optional[Tuple[float, float]] = None) -> Tuple[Optional[str], list, int]:
        """``(None, [], 0)`` when the child loaded the file, else ``(why not, the folder's series
        when it holds several, the file's time points when it is 4D and none was chosen)``."""
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        limit = self.memory_bytes

        def limit_memory() -> None:  # in the child, before it execs Python
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        try:
            done = subprocess.run(
                [sys.executable, "-m", "clinicalai.web.probe", kind, str(path)] + ([series_uid] if series_uid else [])
                + (["--frame", str(int(frame))] if frame is not None else [])
                + (["--static-window", repr(window[0]), repr(window[1])] if window is not None else []),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                timeout=self.timeout_s, env=env, preexec_fn=limit_memory if os.name == "posix" else None,
            )
        except subprocess.TimeoutExpired:
            return f"reading it took longer than {self.timeout_s:g} s; it was not opened", [], 0
        lines = [ln for ln in done.stdout.decode("utf-8", "replace").splitlines() if ln.startswith("{")]
        if done.returncode == 0 and lines:
            answer = json.loads(lines[-1])
            return (None, [], 0) if answer.get("ok") else (str(answer.get("error") or "cannot be read"), [], 0)
        if lines:
            answer = json.loads(lines[-1])
            if answer.get("error"):
                return str(answer["error"]), _checked_series(answer.get("series")), _checked_frames(answer.get("frames"))
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
        return f"the image reader crashed on it ({how}): the file is malformed and was not opened", [], 0


def _checked_series(series: object) -> list:
    """The series list a child printed, as plain dicts of strings and a file count."""
    if not isinstance(series, list):
        return []
    out = []
    for item in series[:MAX_SERIES]:
        if isinstance(item, dict) and isinstance(item.get("uid"), str):
            out.append({"uid": item["uid"][:64], "description": str(item.get("description") or "")[:80],
                        "modality": str(item.get("modality") or "")[:16], "files": int(item.get("files") or 0)})
    return out


def _checked_frames(frames: object) -> int:
    """The time-point count a child printed (0 when absent or not a plausible count)."""
    return frames if isinstance(frames, int) and not isinstance(frames, bool) and 1 < frames <= MAX_FRAMES else 0


def _probe(kind: str, path: Path, series_uid: Optional[str] = None, frame: Optional[int] = None,
           window: Optional[Tuple[float, float]] = None) -> None:
    """What the server will do with the file, here where a crash harms nobody.

    Imports inside: this runs in the probe process only; the server that imports this module
    for :class:`FileProber` needs neither the readers nor a headless scene."""
    from ..volume import read_volume

    if window is not None:
        from ..pet.dynamic import static_from_dynamic

        static_from_dynamic(path, window, series_uid)
        return  # the app builds this node from the engine's volume
    # the engine's reader first: its messages are the clearest
    read_volume(path, series_uid=series_uid, frame=frame)
    if kind in ("dicom", "dicom-seg") or frame is not None:
        return  # the app builds these nodes from the engine's volume, not with a Slicer reader
    from ..mrml.headless import create_headless_context

    context = create_headless_context()
    if kind == "segmentation":
        from ..mrml.segmentations import load_segmentation_file

        load_segmentation_file(context, str(path), name="probe")
    else:
        from ..mrml.volumes import load_volume_file

        load_volume_file(context, str(path), name="probe")


def main(argv: Optional[list] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    frame, window = None, None
    if len(args) == 4 and args[2] == "--frame" and args[3].isdigit():
        frame, args = int(args[3]), args[:2]
    elif len(args) == 5 and args[2] == "--static-window":
        try:
            window, args = (float(args[3]), float(args[4])), args[:2]
        except ValueError:
            args = []
    if len(args) not in (2, 3) or args[0] not in KINDS:
        print(json.dumps({"error": "usage: python -m clinicalai.web.probe {volume,segmentation,dicom,dicom-seg} PATH "
                                   "[SERIES_UID | --frame K | --static-window A B]"}))
        return 2
    kind, path = args[0], Path(args[1])
    series_uid = args[2] if len(args) == 3 else None
    try:
        _probe(kind, path, series_uid, frame, window)
    except ClinicalAIError as exc:
        message = str(exc).replace(str(path.parent) + os.sep, "")  # no server paths in the page
        answer = {"error": message}
        if kind == "dicom" and series_uid is None and path.is_dir():
            answer["series"] = _several_series(path)
        if isinstance(exc, TimeSeriesError) and kind in TIMED_KINDS and frame is None and window is None:
            answer["frames"] = exc.time_points
        print(json.dumps(answer), flush=True)
        return 1
    except MemoryError:
        print(json.dumps({"error": "it declares more voxels than the server can hold; it was not opened"}), flush=True)
        return 1
    except Exception as exc:  # any other failure of a reader on a user's file: one line
        print(json.dumps({"error": f"cannot be read ({type(exc).__name__}: {exc})"}), flush=True)
        return 1
    print(json.dumps({"ok": True}), flush=True)
    return 0


def _several_series(folder: Path) -> list:
    """The image series of a folder that holds more than one (else []): the page offers them."""
    from ..volume.dicom_folders import image_series, list_dicom_series

    try:
        series = image_series(list_dicom_series(folder))
    except ClinicalAIError:
        return []
    return series if len(series) > 1 else []


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main())
