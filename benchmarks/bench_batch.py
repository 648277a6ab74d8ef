"""Cases per minute of ``clinicalai batch segment`` with 1 and 2 Dask workers, against a plain
Python loop over the single-case API in the same run, with the engine's costs per phase.

Cohort: ``--cases`` cardiac phantoms of 6 short-axis slices of 96 x 96 (``clinicalai.phantoms``).

The reference is what a user would write without ``batch``: one process, torch's default
threads (one per core), load the segmenter and the corrector once, then ``read_volume`` ->
``run_segcorrect`` -> ``write_volume`` per case. The ratio ``x loop`` of every row is to that
loop. A second loop row with 1 torch thread shows how much of a case torch's threads speed up
(little: most of a case is single-threaded numpy / scipy validity checks). The third row is two
such loops at once in two processes (1 torch thread each, the cases dealt out): what the machine
gives two processes without Dask, the ceiling of the 2-worker row (under 2x on a shared machine).

Every loop runs in a fresh process, timed from after its imports, as a batch worker's cases
are: it pays its model loading and the first calls of torch's kernels, as each worker does.

The batch rows run ``run_batch`` (the code of ``clinicalai batch segment``, which also writes a
report, a case record and the summary per case) on a LocalCluster of N worker processes with
``--threads`` torch threads each. Their ``run s`` counts from the cluster being up: it includes
the driver's checks, each worker loading the models once (in parallel), every case and the
results' way back; what a cohort run pays once per run is printed apart:

- ``start s``: LocalCluster up, torch and clinicalai imported on every worker;
- ``load s``: loading the two models (each worker pays it once, inside run s);
- ``case s``: mean seconds of a case (on a worker: inside ``run_case``, its first case with the
  model loading);
- ``overhead s/case``: worker time not spent inside a case, ``(run s x workers - sum of case
  seconds) / cases``: scheduling, the driver's checks, idle workers at the end;
- ``x loop +start``: the ratio when the cluster start counts too (a short cohort's worst case).

Every row runs ``--repeat`` times, the rows in turn; each row shows its fastest run (a loop with
torch's default threads is very sensitive to another process on the machine: its threads wait
for each other).

Run:  .venv/bin/python benchmarks/bench_batch.py [--cases 16] [--threads 1] [--repeat 2]
Target (issue 18): 2 workers >= 1.6x the loop on 2 cores, on an idle machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_cohort(folder: Path, n: int) -> None:
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.volume import write_volume

    for i in range(n):
        write_volume(cardiac_case(100 + i, n_slices=6, size=(96, 96)).image, folder / f"case{i:03d}.nii.gz")


def plain_loop(cohort: "Path | List[Path]", out: Path, threads: Optional[int] = None) -> Dict[str, float]:
    """The single-case API over every case of ``cohort`` (a folder, or a list of files), models
    loaded once; ``threads`` torch threads (``None``: torch's default). Returns ``{"run",
    "load", "case"}`` seconds."""
    import torch

    from clinicalai.models import load_model
    from clinicalai.segcorrect import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER
    from clinicalai.segcorrect.pipeline import run_segcorrect
    from clinicalai.volume import read_volume, write_volume

    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    try:
        paths = sorted(cohort.glob("*.nii.gz")) if isinstance(cohort, Path) else list(cohort)
        start = time.perf_counter()
        segmenter, corrector = load_model(DEFAULT_SEGMENTER), load_model(DEFAULT_CORRECTOR)
        loaded = time.perf_counter()
        for path in paths:
            result = run_segcorrect(read_volume(path), segmenter, corrector)
            write_volume(result.final, out / path.name)
        end = time.perf_counter()
    finally:
        torch.set_num_threads(default)
    return {"run": end - start, "load": loaded - start, "case": (end - loaded) / len(paths)}


def _loop_process(paths: List[Path], out: Path, threads: Optional[int], barrier, results) -> None:
    """A spawned process: imports first (as a batch worker's warm-up), then at the barrier the loop."""
    import importlib

    from clinicalai.batch.workflows import WORKFLOWS

    for name in WORKFLOWS["segment"].imports:  # what a batch worker imports before its first case
        importlib.import_module(name)
    barrier.wait()
    results.put(plain_loop(paths, out, threads))


def plain_loops(cohort: Path, out: Path, processes: int = 1, threads: Optional[int] = None) -> Dict[str, float]:
    """:func:`plain_loop` in ``processes`` fresh processes at once (the cases dealt out in turn),
    started together after their imports, as the batch workers start; ``threads`` torch threads
    each (``None``: torch's default). ``run``: the slowest process's seconds; ``case``: mean
    seconds per case. A fresh process pays what a cohort run pays once (first calls of torch's
    kernels, lazy imports), as a batch worker does."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    paths = sorted(cohort.glob("*.nii.gz"))
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [ctx.Process(target=_loop_process, args=(paths[i::processes], out, threads, barrier, results))
             for i in range(processes)]
    for p in procs:
        p.start()
    barrier.wait()
    runs = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return {"run": max(r["run"] for r in runs), "load": max(r["load"] for r in runs),
            "case": statistics.mean(r["case"] for r in runs)}


def batch_run(cohort: Path, out: Path, workers: int, threads: int) -> Dict[str, float]:
    """``batch segment`` on a fresh LocalCluster: ``{"start", "run", "inside", "case", "ok",
    "loads"}`` (``inside``: sum of case seconds; ``case``: their mean; ``loads``: models loaded
    per worker)."""
    from clinicalai.batch.commands import single_case_options
    from clinicalai.batch.run import BatchOptions, dask_client, run_batch
    from clinicalai.batch.worker import cache_stats, warm_up
    from clinicalai.batch.workflows import WORKFLOWS
    from clinicalai.cli import build_parser

    args = build_parser().parse_args(["batch", "segment", str(cohort), "--out", str(out)])
    opts = BatchOptions("segment", str(cohort), str(out), func=args.batch_single.get_default("func"),
                        options=single_case_options(args), wanted={"raw_output": False}, threads_per_worker=threads)
    t0 = time.perf_counter()
    with dask_client(None, workers, threads) as client:
        client.wait_for_workers(workers)
        # what run_batch does first (again there: a no-op): the workflow's imports on every worker
        client.run(warm_up, opts.func, threads, True, WORKFLOWS["segment"].imports)
        up = time.perf_counter() - t0
        t1 = time.perf_counter()
        with open("/dev/null", "w") as devnull:
            result = run_batch(opts, client=client, stream=devnull)
        run = time.perf_counter() - t1
        loads = [s["loads"] for s in client.run(cache_stats).values()]
    seconds = [float(r["seconds"]) for r in result.rows]
    return {"start": up, "run": run, "inside": sum(seconds), "case": statistics.mean(seconds),
            "ok": result.counts["ok"], "loads": max(loads)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each worker (default 1)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of every row, the fastest kept (default 2)")
    args = parser.parse_args()
    n = args.cases
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch."))
    best: Dict[str, Dict[str, object]] = {}  # row name -> its fastest repeat

    def keep(row: Dict[str, object]) -> None:
        name = str(row["name"])
        if name not in best or float(row["run"]) < float(best[name]["run"]):
            best[name] = row

    try:
        cohort = tmp / "cohort"
        cohort.mkdir()
        make_cohort(cohort, n)
        import torch

        loops = ((f"plain loop, torch default ({torch.get_num_threads()} threads)", 1, None),
                 ("plain loop, 1 torch thread", 1, 1), ("2 plain loops at once, 1 thread (ceiling)", 2, 1))
        (tmp / "loop").mkdir()
        # the rows in turn, --repeat times: a busy spell of the machine hits every row alike,
        # and the fastest repeat of each row is the one least disturbed
        for rep in range(args.repeat):
            for name, processes, threads in loops:
                keep({"name": name, **plain_loops(cohort, tmp / "loop", processes, threads)})
            for workers in (1, 2):
                r = batch_run(cohort, tmp / f"batch{workers}.{rep}", workers, args.threads)
                assert r["ok"] == n, f"{n - r['ok']} cases failed"
                keep({"name": f"batch segment, {workers} worker{'s' if workers > 1 else ''}", **r,
                      "overhead": (r["run"] * workers - r["inside"]) / n, "load": best[loops[0][0]]["load"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = list(best.values())
    loop_s = float(rows[0]["run"])

    def col(value: object, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print(f"{n} cardiac phantoms (6 x 96 x 96); batch workers: {args.threads} torch thread(s) each; "
          f"fastest of {args.repeat} runs per row; x loop: to the first row")
    print(f"{'run':42s} {'start s':>7s} {'run s':>6s} {'cases/min':>9s} {'x loop':>6s} {'x loop +start':>13s} "
          f"{'load s':>6s} {'case s':>6s} {'overhead s/case':>15s}")
    for r in rows:
        run, start = float(r["run"]), r.get("start")
        with_start = loop_s / (run + float(start)) if start is not None else None
        print(f"{r['name']:42s} {col(start, '.1f'):>7s} {run:6.1f} {60 * n / run:9.1f} {loop_s / run:6.2f} "
              f"{col(with_start, '.2f'):>13s} {float(r['load']):6.2f} {float(r['case']):6.3f} "
              f"{col(r.get('overhead'), '.3f'):>15s}")
    loads = {int(r["loads"]) for r in rows if "loads" in r}
    print(f"models loaded per worker: {sorted(loads)} (2 = the segmenter and the corrector once each: reused across cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
