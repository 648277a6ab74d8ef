"""``clinicalai evaluate ... --workers N``: the per-case work on a real Dask LocalCluster gives
the same report as the loop in one process; a case's error is the loop's error; the batch
engine's worker settings and warm-up imports."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from clinicalai.batch.parallel import ClusterOptions, add_cluster_args, case_mapper, dask_mapper
from clinicalai.casemap import serial_map
from clinicalai.cli import main
from clinicalai.errors import InputError


def _report(path: Path, drop=("seconds", "command", "seconds_per_volume")) -> Dict[str, Any]:
    """A JSON report without its wall-clock times (the only figures that differ run to run)."""
    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in drop}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(json.loads(path.read_text()))


def _parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_cluster_args(p, threads=None)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- options
def test_evaluate_defaults_to_the_loop_in_this_process_and_checks_the_counts():
    assert case_mapper(_parse([])) is serial_map
    assert ClusterOptions.from_args(_parse([]), workers=1).in_process
    assert not ClusterOptions.from_args(_parse(["--workers", "2"]), workers=1).in_process
    remote = ClusterOptions.from_args(_parse(["--scheduler", "tcp://127.0.0.1:1"]), workers=1)
    assert remote.workers is None and not remote.in_process and dask_mapper(remote) is not serial_map
    for argv, message in ((["--workers", "0"], "--workers must be at least 1"),
                          (["--threads-per-worker", "0"], "--threads-per-worker must be at least 1"),
                          (["--workers", "1", "--scheduler", "tcp://127.0.0.1:1"], "with --scheduler")):
        with pytest.raises(InputError, match=message):
            ClusterOptions.from_args(_parse(argv), workers=1)


def test_every_evaluate_command_takes_the_cluster_options(capsys):
    for what in ("segcorrect", "segmenter", "pet", "attribution"):
        with pytest.raises(SystemExit):
            main(["evaluate", what, "--help"])
        text = capsys.readouterr().out
        assert "--workers" in text and "--threads-per-worker" in text and "--scheduler" in text, what


def test_every_workflow_names_modules_that_exist():
    """The warm-up imports of each batch workflow (a stale name would fail every run)."""
    import importlib

    from clinicalai.batch.workflows import WORKFLOWS

    for wf in WORKFLOWS.values():
        assert wf.imports, wf.name
        for name in wf.imports:
            importlib.import_module(name)


def test_local_workers_run_without_the_profiler_and_with_glibc_malloc_defaults():
    """What makes a worker as fast as a plain process (benchmarks/bench_batch.py)."""
    import os

    from clinicalai.batch.run import dask_client

    def settings():
        import dask

        return (dask.config.get("distributed.worker.profile.enabled"), os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                os.environ.get("OMP_NUM_THREADS"))

    # what a LocalCluster with Dask's defaults (another test, another library) left in this
    # process's environment must not reach our workers, and ours must not stay here
    before = dict(os.environ)
    os.environ.update(MALLOC_TRIM_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    try:
        with dask_client(None, 1, threads_per_worker=2) as client:
            assert list(client.run(settings).values()) == [(False, None, "2")]
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536" and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        os.environ.clear()
        os.environ.update(before)


# ---------------------------------------------------------------------------- the same reports on 2 workers
@pytest.fixture(scope="module")
def two_workers(warming_up) -> Iterator[List[str]]:
    """``["--scheduler", ADDRESS]`` of the LocalCluster that ``--workers 2`` starts (the batch
    engine's own :func:`~clinicalai.batch.run.dask_client`: 2 processes, its worker settings),
    started once for the module. Each worker process imports torch and monai before its first
    case (~9 s on 2 cores), so a new cluster per command would be most of these tests' time;
    one test (the segmenter's) still lets ``--workers 2`` start its own cluster."""
    from clinicalai.batch.run import dask_client

    with dask_client(None, 2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        # the workers' imports overlap with the first test's loop in this process
        with warming_up(client, pin_gpu=False):
            yield ["--scheduler", client.scheduler.address]


def test_evaluate_segmenter_on_two_workers_matches_the_loop(tmp_path):
    args = ["evaluate", "segmenter", "--phantoms", "2", "--family", "training"]
    assert main([*args, "--json", str(tmp_path / "loop.json")]) == 0
    # --workers 2: the command starts (and closes) its own LocalCluster of 2 processes
    assert main([*args, "--workers", "2", "--json", str(tmp_path / "dask.json")]) == 0
    loop, dask = _report(tmp_path / "loop.json"), _report(tmp_path / "dask.json")
    assert [c["seed"] for c in dask["per_case"]] == [0, 1]
    assert dask == loop


def test_evaluate_segcorrect_on_two_workers_matches_the_loop(two_workers, tmp_path):
    args = ["evaluate", "segcorrect", "--phantoms", "2", "--no-context"]
    assert main([*args, "--json", str(tmp_path / "loop.json")]) == 0
    assert main([*args, *two_workers, "--json", str(tmp_path / "dask.json")]) == 0
    assert _report(tmp_path / "dask.json") == _report(tmp_path / "loop.json")


@pytest.fixture(scope="module")
def pet_csv(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("pets")
    assert main(["synth", "pet", "--n", "4", "--seed", "1", "--out", str(data)]) == 0
    return data / "pet_cases.csv"


def test_evaluate_pet_on_two_workers_matches_the_loop(pet_csv, two_workers, tmp_path):
    args = ["evaluate", "pet", "--csv", str(pet_csv), "--split", "all", "--bootstrap", "20"]
    assert main([*args, "--out", str(tmp_path / "loop")]) == 0
    assert main([*args, *two_workers, "--out", str(tmp_path / "dask")]) == 0
    for name in ("predictions.csv", "metrics.json"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "loop" / name).read_bytes(), name


def test_a_failing_case_on_a_worker_is_the_loops_error(pet_csv, two_workers, tmp_path, capsys):
    """A truncated PET among the rows: the command fails with the loop's one-line message."""
    with open(pet_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["path"] = str(tmp_path / "cut.nii.gz")
    data = (pet_csv.parent / rows[0]["path"]).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 3])
    for r in rows:
        for key in ("path", "brain_mask"):
            if r.get(key) and not Path(r[key]).is_absolute():
                r[key] = str(pet_csv.parent / r[key])
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    args = ["evaluate", "pet", "--csv", str(bad), "--split", "all", "--bootstrap", "10"]
    errors = []
    for extra in ([], two_workers):
        assert main([*args, *extra]) != 0
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert errors[0] == errors[1] and "cut.nii.gz" in errors[0]


def test_evaluate_attribution_on_a_worker_matches_the_loop(two_workers, tmp_path):
    args = ["evaluate", "attribution", "--model", "brain-lesion-classifier", "--n-val", "2", "--n-test", "2",
            "--method", "gradient"]
    assert main([*args, "--json", str(tmp_path / "loop.json")]) == 0
    assert main([*args, *two_workers, "--json", str(tmp_path / "dask.json")]) == 0
    assert _report(tmp_path / "dask.json") == _report(tmp_path / "loop.json")
