"""The batch driver: cases -> Dask futures -> ``DIR/<case>/`` and ``DIR/summary.{csv,json}``.

Without a scheduler address the driver starts a ``distributed.LocalCluster`` of worker
processes (one case at a time each, ``threads_per_worker`` torch threads); with one it submits
to that cluster, whose workers must see the inputs and ``DIR`` at the same paths. Cases whose
folder is complete are ``skipped`` (unless ``force``), so a rerun after a crash resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO

from ..errors import Cancelled, InputError
from ..outputs import _json_default, write_csv, write_json
from ..progress import ConsoleProgress
from .inputs import Case, discover_cases
from .worker import CASE_RECORD, PARTIAL, CaseTask, can_see, one_line, read_case_record, run_case, warm_up
from .workflows import WORKFLOWS

#: seconds to reach a scheduler, and to wait for its first worker
CONNECT_TIMEOUT_S = 30
WORKER_WAIT_S = 120
#: the run's record in DIR: the workflow and options its case folders were made with
RUN_RECORD = "batch.json"
BASE_COLUMNS = ("case", "input", "status", "error", "seconds", "worker")


@dataclass
class BatchOptions:
    """A batch run: ``options`` are the single-case command's namespace values (defaults and
    the user's workflow options, no per-case paths); ``func`` is that command's function."""

    workflow: str
    inputs: str
    out: str
    func: Callable[..., int]
    options: Dict[str, Any] = field(default_factory=dict)
    wanted: Dict[str, bool] = field(default_factory=dict)
    workers: Optional[int] = None
    threads_per_worker: int = 1
    scheduler: Optional[str] = None
    force: bool = False
    trust_code: bool = False
    command: str = ""


@dataclass
class BatchResult:
    """The summary rows (in case order) and the counts of each status."""

    rows: List[Dict[str, Any]]
    counts: Dict[str, int]
    summary_csv: Path

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def default_workers(threads_per_worker: int, device: str = "auto") -> int:
    """One worker per GPU when there are GPUs (and the device is not ``cpu``), else
    usable cores // threads per worker (at least 1)."""
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads_per_worker))


def local_worker_config(threads_per_worker: int) -> Dict[str, Any]:
    """Dask settings for the worker processes of our LocalCluster, so that a worker computes a
    case as fast as a plain Python process does (measured: docs/batch.md, "Throughput"):

    - no stack sampler: Dask's profiler walks every thread's stack each 10 ms under the GIL,
      which costs ~10 % on Python-heavy cases (per-slice validity checks, scipy.ndimage);
    - glibc's own malloc tuning: Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` also switches off
      glibc's dynamic mmap threshold (mallopt(3)), so every array over 128 KiB is mapped and
      unmapped anew (page faults; ~10 % of a cardiac case);
    - OpenMP / MKL / OpenBLAS threads = ``threads_per_worker`` (Dask's default is 1), so
      libraries other than torch follow ``--threads-per-worker`` too;
    - a case goes to a worker only when it is free (saturation 1.0; Dask's 1.1 queues a second
      case on a busy worker, which can leave another worker idle at the end of a run).
    """
    threads = str(max(1, threads_per_worker))
    env = "distributed.nanny.pre-spawn-environ"
    return {"distributed.worker.profile.enabled": False, "distributed.scheduler.worker-saturation": 1.0,
            f"{env}.MALLOC_TRIM_THRESHOLD_": None,
            f"{env}.OMP_NUM_THREADS": threads, f"{env}.MKL_NUM_THREADS": threads,
            f"{env}.OPENBLAS_NUM_THREADS": threads}


#: what Dask's nannies write into *this* process's environment before spawning a worker (and
#: leave there: a later cluster's workers inherit it, and a variable already set wins over the
#: config); :func:`_spawn_environment` puts them back
_SPAWN_VARS = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")
#: the user's own MALLOC_TRIM_THRESHOLD_, read before any Dask cluster of this process set one
_USER_MALLOC_TRIM = os.environ.get("MALLOC_TRIM_THRESHOLD_")


@contextlib.contextmanager
def _spawn_environment() -> Iterator[None]:
    """While a LocalCluster starts: no thread counts and no malloc setting left in this
    process's environment by an earlier cluster (so :func:`local_worker_config` applies), and
    the previous values back afterwards (the driver's environment stays as it was)."""
    before = {k: os.environ.get(k) for k in _SPAWN_VARS}
    for k in _SPAWN_VARS:
        if k != "MALLOC_TRIM_THRESHOLD_" or _USER_MALLOC_TRIM is None:
            os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def dask_client(scheduler: Optional[str], workers: int, threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler`` (waiting a bounded time for a worker), or on
    a new LocalCluster of ``workers`` processes (:func:`local_worker_config`), closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # the scheduler's and nannies' INFO lines would bury the progress; --debug shows them
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {one_line(exc)}") from None
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            client.close()
            raise InputError(f"no worker joined the Dask scheduler at {scheduler} within {WORKER_WAIT_S} s") from None
        try:
            yield client
        finally:
            client.close()
        return
    # one Dask thread per worker process: a worker runs one case at a time and gives its
    # cores to torch (--threads-per-worker); processes, not threads, scale across cases.
    # Each nanny takes its worker's config and environment when it is made (also for a
    # worker it restarts), so the settings need to hold only while the cluster starts.
    with _spawn_environment(), dask.config.set(local_worker_config(threads_per_worker)):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class CohortProgress:
    """Cases done / failed with an ETA: a bar on a terminal, else one line per case (logs of
    cluster jobs)."""

    def __init__(self, total: int, stream: Optional[TextIO] = None) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        self.bar = ConsoleProgress(self.stream)
        self.start = time.monotonic()

    def eta(self) -> str:
        if not self.done or self.done >= self.total:
            return "-"
        seconds = (time.monotonic() - self.start) / self.done * (self.total - self.done)
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"

    def update(self, row: Dict[str, Any]) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        message = f"{self.done}/{self.total} done, {self.failed} failed, ETA {self.eta()}"
        if self.bar.enabled:
            self.bar(self.done / self.total, message)
        else:
            what = row["status"] + (f" ({row['error']})" if row["error"] else "")
            print(f"batch: {message}: {row['case']} {what}", file=self.stream, flush=True)


def run_batch(opts: BatchOptions, client: Any = None, stream: Optional[TextIO] = None) -> BatchResult:
    """Run ``opts`` on ``client`` (a ``distributed.Client``), else on the cluster the options
    name; write the case folders and the summary. Cancelled (exit 130) on Ctrl-C, after
    writing the summary of what finished."""
    wf = WORKFLOWS[opts.workflow]
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    cases = discover_cases(opts.inputs, exclude=[out])
    out.mkdir(parents=True, exist_ok=True)
    _check_run_record(out, opts)
    # a .partial folder is what a killed run was writing: never a finished case
    shutil.rmtree(out / PARTIAL, ignore_errors=True)

    rows: Dict[str, Dict[str, Any]] = {}
    todo: List[Case] = []
    for case in cases:
        row = _existing(case, out / case.name, wf.expected_files(opts.wanted), opts.force)
        if row is None:
            todo.append(case)
        else:
            rows[case.name] = row
    progress = CohortProgress(len(todo), stream)
    try:
        if todo:
            if client is not None:
                _run_cases(client, todo, opts, rows, progress)
            else:
                workers = opts.workers or default_workers(opts.threads_per_worker, str(opts.options.get("device")))
                with dask_client(opts.scheduler, min(workers, len(todo)), opts.threads_per_worker) as own:
                    _run_cases(own, todo, opts, rows, progress)
    except KeyboardInterrupt:
        _write_summary(out, opts, cases, rows, interrupted=True)
        raise Cancelled(f"interrupted: {sum(r['status'] == 'ok' for r in rows.values())} cases finished and are kept; "
                        "rerun the same command to resume") from None
    with contextlib.suppress(OSError):
        (out / PARTIAL).rmdir()  # empty after a finished run; kept (with what is in it) otherwise
    return _write_summary(out, opts, cases, rows)


def _check_run_record(out: Path, opts: BatchOptions) -> None:
    """Refuse to mix case folders made with other options (unless ``force``); record ours."""
    options = {k: v for k, v in opts.options.items() if k != "command_line"}  # how it was typed does not matter
    record = {"workflow": opts.workflow,
              "options": json.loads(json.dumps(options, default=_json_default, sort_keys=True)),
              "outputs": sorted(d for d, on in opts.wanted.items() if on)}
    path = out / RUN_RECORD
    if path.is_file() and not opts.force:
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if isinstance(old, dict) and {k: old.get(k) for k in record} != record:
            changed = sorted(k for k in set(record["options"]) | set((old.get("options") or {}))
                             if record["options"].get(k) != (old.get("options") or {}).get(k))
            what = f"options {', '.join(changed)}" if changed else "workflow or outputs"
            raise InputError(f"{out} holds a batch run with other {what}; use --force to recompute every case, "
                             "or choose a new --out")
    write_json({**record, "command": opts.command}, path)


def _existing(case: Case, folder: Path, files: List[str], force: bool) -> Optional[Dict[str, Any]]:
    """The row of a case that needs no work: ``skipped`` (complete folder), ``failed`` (a
    folder of that name that this command did not write); ``None`` to run it."""
    if force or not (folder.exists() or folder.is_symlink()):
        return None
    record = read_case_record(folder)
    if record is not None and all((folder / f).is_file() for f in files):
        return {"case": case.name, "input": case.input, "status": "skipped", "error": "", "seconds": 0.0,
                "worker": "", **(record.get("figures") or {}), "warnings": "; ".join(record.get("warnings") or [])}
    return {"case": case.name, "input": case.input, "status": "failed", "seconds": 0.0, "worker": "",
            "error": f"{folder} exists but is not a complete output of this command ({CASE_RECORD} or an output "
                     "missing); remove it or use --force", "warnings": ""}


def _run_cases(client: Any, cases: List[Case], opts: BatchOptions, rows: Dict[str, Dict[str, Any]],
               progress: CohortProgress) -> None:
    from distributed import as_completed

    out = str(Path(opts.out).resolve())
    _check_workers_see(client, out, opts)
    tasks: Dict[str, Case] = {}
    pending = []
    for case in cases:
        task = CaseTask(opts.workflow, case, out, opts.func, opts.options, opts.wanted, opts.threads_per_worker,
                        opts.force, opts.trust_code, pin_gpu=opts.scheduler is None)
        future = client.submit(run_case, task, pure=False, key=f"clinicalai-batch-{case.name}-{os.urandom(4).hex()}")
        tasks[future.key] = case
        pending.append(future)
    try:
        for future in as_completed(pending):
            case = tasks[future.key]
            try:
                row = future.result()
            except Exception as exc:  # noqa: BLE001 - the worker died (KilledWorker) or the cluster failed
                row = {"case": case.name, "input": case.input, "status": "failed", "error": one_line(exc),
                       "seconds": 0.0, "worker": "", "warnings": ""}
            rows[case.name] = row
            progress.update(row)
    except BaseException:
        client.cancel(pending)
        raise


def _check_workers_see(client: Any, out: str, opts: BatchOptions) -> None:
    """Every worker must see ``out`` (and so, in practice, the shared storage of the inputs)
    and import clinicalai; each imports the workflow now, all at once (:func:`warm_up`)."""
    try:
        seen = client.run(can_see, out)
        client.run(warm_up, opts.func, opts.threads_per_worker, opts.scheduler is None,
                   WORKFLOWS[opts.workflow].imports)
    except Exception as exc:  # noqa: BLE001 - e.g. a worker without clinicalai installed
        raise InputError(f"the Dask workers cannot run clinicalai ({one_line(exc)}); install it in their environment") from None
    blind = sorted(w for w, ok in seen.items() if not ok)
    if blind:
        raise InputError(f"Dask worker(s) {', '.join(blind[:3])} cannot see {out}: inputs and --out must be on "
                         "storage every worker mounts at the same path")


def _write_summary(out: Path, opts: BatchOptions, cases: List[Case], rows: Dict[str, Dict[str, Any]],
                   interrupted: bool = False) -> BatchResult:
    """``summary.csv`` and ``summary.json``, one row per case in input order."""
    wf = WORKFLOWS[opts.workflow]
    columns = (*BASE_COLUMNS, *wf.columns, "warnings")
    ordered = []
    for case in cases:
        row = rows.get(case.name) or {"case": case.name, "input": case.input, "status": "failed",
                                      "error": "not run: the batch was interrupted" if interrupted else "not run",
                                      "seconds": 0.0, "worker": ""}
        ordered.append({c: row.get(c) for c in columns})
    counts = {s: sum(r["status"] == s for r in ordered) for s in ("ok", "failed", "skipped")}
    write_csv([{k: "" if v is None else v for k, v in r.items()} for r in ordered], out / "summary.csv")
    write_json({"workflow": opts.workflow, "inputs": str(opts.inputs), "out": str(out), "counts": counts,
                "command": opts.command, "cases": ordered}, out / "summary.json")
    return BatchResult(ordered, counts, out / "summary.csv")
