"""Cases per minute of ``clinicalai batch segment`` with 1 and 2 Dask workers, against a plain
Python loop over the single-case API in the same run, and the engine's per-case overhead.

Cohort: ``--cases`` cardiac phantoms of 6 short-axis slices of 96 x 96 (``clinicalai.phantoms``).
The loop is what a user would write without ``batch``: load the segmenter and the corrector
once, then ``read_volume`` -> ``run_segcorrect`` -> ``write_volume`` per case, one process,
``--threads`` torch threads. The batch runs use a LocalCluster of N worker processes with
``--threads`` torch threads each; their time counts from the cluster being up (cluster start
and the workers' imports are printed apart) and includes each worker loading the models once.
Overhead per case: worker time not spent inside a case (scheduling, result transfer, idle
at the end), ``(wall x workers - sum of case seconds) / cases``.

Run:  .venv/bin/python benchmarks/bench_batch.py [--cases 16] [--threads 1]
Prints a table; ratios are to the plain loop in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_cohort(folder: Path, n: int) -> None:
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.volume import write_volume

    for i in range(n):
        write_volume(cardiac_case(100 + i, n_slices=6, size=(96, 96)).image, folder / f"case{i:03d}.nii.gz")


def plain_loop(cohort: Path, out: Path, threads: int) -> float:
    """Seconds for the single-case API over every case, models loaded once."""
    import torch

    from clinicalai.models import load_model
    from clinicalai.segcorrect import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER
    from clinicalai.segcorrect.pipeline import run_segcorrect
    from clinicalai.volume import read_volume, write_volume

    torch.set_num_threads(threads)
    start = time.perf_counter()
    segmenter, corrector = load_model(DEFAULT_SEGMENTER), load_model(DEFAULT_CORRECTOR)
    for path in sorted(cohort.glob("*.nii.gz")):
        result = run_segcorrect(read_volume(path), segmenter, corrector)
        write_volume(result.final, out / path.name)
    return time.perf_counter() - start


def batch_run(cohort: Path, out: Path, workers: int, threads: int):
    """(cluster start s, run s, sum of case seconds, cases ok) of ``batch segment``."""
    from clinicalai.batch.commands import single_case_options
    from clinicalai.batch.run import BatchOptions, dask_client, run_batch
    from clinicalai.batch.worker import warm_up
    from clinicalai.cli import build_parser

    args = build_parser().parse_args(["batch", "segment", str(cohort), "--out", str(out)])
    opts = BatchOptions("segment", str(cohort), str(out), func=args.batch_single.get_default("func"),
                        options=single_case_options(args), wanted={"raw_output": False}, threads_per_worker=threads)
    t0 = time.perf_counter()
    with dask_client(None, workers) as client:
        client.wait_for_workers(workers)
        client.run(warm_up, opts.func, threads, True)  # what run_batch does first: imports on every worker
        up = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = run_batch(opts, client=client, stream=open("/dev/null", "w"))
        run = time.perf_counter() - t1
    return up, run, sum(float(r["seconds"]) for r in result.rows), result.counts["ok"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the loop and of each worker")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch."))
    try:
        cohort = tmp / "cohort"
        cohort.mkdir()
        make_cohort(cohort, args.cases)
        (tmp / "loop").mkdir()
        loop_s = plain_loop(cohort, tmp / "loop", args.threads)
        rows = [("plain loop, single-case API, 1 process", None, loop_s, None, args.cases)]
        for workers in (1, 2):
            up, run, inside, ok = batch_run(cohort, tmp / f"batch{workers}", workers, args.threads)
            assert ok == args.cases, f"{args.cases - ok} cases failed"
            rows.append((f"batch segment, {workers} worker{'s' if workers > 1 else ''}", up, run,
                         (run * workers - inside) / args.cases, ok))
        print(f"{args.cases} cardiac phantoms (6 x 96 x 96), torch threads {args.threads} per process")
        print(f"{'run':42s} {'start s':>8s} {'run s':>7s} {'cases/min':>10s} {'x loop':>7s} {'overhead s/case':>16s}")
        for name, up, run, overhead, n in rows:
            print(f"{name:42s} {'-' if up is None else f'{up:.1f}':>8s} {run:7.1f} {60 * n / run:10.1f} "
                  f"{loop_s / run:7.2f} {'-' if overhead is None else f'{overhead:.2f}':>16s}")
        print("start: LocalCluster up and torch / clinicalai imported on every worker (not in 'run s'); "
              "run s includes each worker's model loading")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
