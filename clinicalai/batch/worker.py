"""One case on a Dask worker.

The case runs the single-case command's function with its outputs in a temporary folder
``DIR/.partial/<case>.<random>``, which is renamed to ``DIR/<case>`` only when every output and
the case record ``.case.json`` are written: a killed worker or Ctrl-C leaves at most a
``.partial`` folder (removed by the next run), never a half-written case folder. Errors become
one line in the case's summary row, so a bad case never stops the others.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from ..errors import ClinicalAIError, InputError
from ..models.package import enable_model_cache, model_cache_stats
from ..models.registry import trust_code_scope
from .inputs import Case
from .workflows import WORKFLOWS, read_report

#: the record of a complete case folder (written last, inside the temporary folder)
CASE_RECORD = ".case.json"
#: where cases are written before they are renamed into place
PARTIAL = ".partial"

# One case at a time per worker process: the cached models are shared objects (hooks for
# Grad-CAM, eval mode) and torch's thread count is process-wide. A worker started with
# several Dask threads still runs its cases one after the other; use processes to scale.
_CASE_LOCK = threading.Lock()
_SETUP_DONE = False


@dataclass(frozen=True)
class CaseTask:
    """Everything a worker needs for one case (pickled to the worker).

    ``func``: the single-case command's function; ``options``: its namespace's values but the
    case's paths; ``wanted``: optional output dest -> whether to write it.
    """

    workflow: str
    case: Case
    out_dir: str
    func: Callable[[argparse.Namespace], int]
    options: Dict[str, Any]
    wanted: Dict[str, bool] = field(default_factory=dict)
    threads: int = 1
    force: bool = False
    trust_code: bool = False
    pin_gpu: bool = False


def one_line(exc: BaseException) -> str:
    """A user error's own sentence; anything else as ``Type: first line`` (no traceback)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ClinicalAIError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def worker_name() -> str:
    """The Dask worker's name (its index in a LocalCluster, its address otherwise)."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):  # not on a worker: a plain call (benchmarks, tests)
        return socket.gethostname()


def setup_worker(threads: int, pin_gpu: bool) -> None:
    """Once per worker process: keep models between cases, and (LocalCluster on a GPU machine)
    put worker ``i`` on GPU ``i mod count``. Every case: torch threads = ``threads``."""
    global _SETUP_DONE
    import torch


    if not _SETUP_DONE:
        enable_model_cache()
        name = worker_name()
        if pin_gpu and name.isdigit() and torch.cuda.is_available():
            torch.cuda.set_device(int(name) % torch.cuda.device_count())
        _SETUP_DONE = True
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def run_case(task: CaseTask) -> Dict[str, Any]:
    """Run ``task`` and return its summary row (``status`` ok or failed, never raises for the
    case's own errors)."""
    setup_worker(task.threads, task.pin_gpu)
    with _CASE_LOCK:
        start = time.perf_counter()
        row: Dict[str, Any] = {"case": task.case.name, "input": task.case.input, "status": "ok", "error": "",
                               "seconds": 0.0, "worker": worker_name(), "warnings": ""}
        try:
            figures, warnings = _compute(task, start)
            row.update(figures)
            row["warnings"] = "; ".join(warnings)
        except Exception as exc:  # noqa: BLE001 - a failing case is a row, never the end of the run
            row.update(status="failed", error=one_line(exc))
        row["seconds"] = round(time.perf_counter() - start, 3)
        return row


def case_options(task: CaseTask, folder: Path) -> argparse.Namespace:
    """The single-case command's namespace for ``task`` with its outputs inside ``folder``."""
    wf = WORKFLOWS[task.workflow]
    values = dict(task.options)
    values.update(wf.case_args(task.case, task.options))
    for dest, name in wf.outputs.items():
        values[dest] = folder / name
    for dest, name in wf.optional_outputs.items():
        values[dest] = folder / name if task.wanted.get(dest) else None
    return argparse.Namespace(**values)


def _compute(task: CaseTask, start: float):

    wf = WORKFLOWS[task.workflow]
    out = Path(task.out_dir)
    partial = out / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    tmp = partial / f"{task.case.name}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        args = case_options(task, tmp)
        captured = io.StringIO()
        # the single-case command prints its summary and warnings; they go into the row, not
        # into the worker's log (a progress bar stays off: the stream is not a terminal)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(captured), \
                trust_code_scope(task.trust_code):
            task.func(args)
        missing = [f for f in wf.expected_files(task.wanted) if not (tmp / f).exists()]
        if missing:
            raise InputError(f"the {wf.name} command wrote no {', '.join(missing)}")
        figures = wf.figures(read_report(tmp, wf), task.case, tmp)
        warnings = [line[len("warning: "):] for line in captured.getvalue().splitlines() if line.startswith("warning: ")]
        record = {"case": task.case.name, "input": task.case.input, "workflow": wf.name,
                  "files": wf.expected_files(task.wanted), "figures": figures, "warnings": warnings,
                  "seconds": round(time.perf_counter() - start, 3), "worker": worker_name()}
        (tmp / CASE_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        publish(tmp, out / task.case.name, task.force)
        return figures, warnings
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, final: Path, force: bool) -> None:
    """Rename the finished ``tmp`` folder to ``final``. With ``force`` an existing ``final``
    is first moved aside and deleted after the rename, so ``final`` is always either the old
    complete case or the new one."""
    if final.exists() or final.is_symlink():
        if not force:
            raise InputError(f"{final} appeared while the case ran; rerun to skip it, or use --force")
        old = tmp.parent / f"{final.name}.old.{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def read_case_record(folder: Path) -> Optional[Dict[str, Any]]:
    """The record of a complete case folder: its ``.case.json`` when every file it lists is
    there; ``None`` for anything else (no folder, not ours, or files removed since)."""
    try:
        record = json.loads((folder / CASE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, list) or not all((folder / str(f)).is_file() for f in files):
        return None
    return record


def warm_up(func: Callable[..., int], threads: int, pin_gpu: bool, modules: Sequence[str] = ()) -> bool:
    """Import torch, the single-case command's module and ``modules`` (what its first call
    would import: :attr:`Workflow.imports`) on this worker, before the first case
    (``client.run`` on every worker at once), so that no case's time includes them."""
    import importlib

    importlib.import_module(func.__module__)
    for name in modules:
        importlib.import_module(name)
    setup_worker(threads, pin_gpu)
    return True


def cache_stats() -> Dict[str, int]:
    """This worker's model cache counters (``client.run(cache_stats)`` from the driver)."""

    return model_cache_stats()


def can_see(path: str) -> bool:
    """Whether this worker sees the folder ``path`` (inputs and outputs must be shared)."""
    return os.path.isdir(path)
