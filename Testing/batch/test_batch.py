"""``clinicalai batch``: cohorts on a real Dask LocalCluster and on a ``dask scheduler`` +
``dask worker`` pair, outputs identical to the single-case commands, summary rows and exit
status, rerun / --force, and a worker killed mid-run."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest

from clinicalai.batch.inputs import case_stem, discover_cases, unique_names
from clinicalai.cli import main
from clinicalai.errors import InputError

# ---------------------------------------------------------------------------- cohorts and clusters
BIN = Path(sys.executable).parent
#: the cohort's good cases: case name -> input relative to the cohort folder
CARDIAC = {"p1__image": "p1/image.nii.gz", "p2__image": "p2/image.nii.gz", "p3__scan": "p3/scan.nii.gz"}


def _env() -> Dict[str, str]:
    # one torch thread per process: the tests share 2 cores with the workers they start
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def make_cardiac_cohort(folder: Path, extra_good: int = 0) -> Path:
    """Three 4-slice 64x64 cardiac phantoms (two named image.nii.gz in different folders),
    ``extra_good`` more, a truncated .nii.gz and a text file named .nii."""
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.volume import write_volume

    rels = list(CARDIAC.values()) + [f"more/m{i}.nii.gz" for i in range(extra_good)]
    for seed, rel in enumerate(rels, start=1):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        write_volume(cardiac_case(seed, n_slices=4, size=(64, 64)).image, folder / rel)
    data = (folder / CARDIAC["p1__image"]).read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (folder / "notes.nii").write_text("not an image\n")
    return folder


def make_pet_cohort(folder: Path) -> Path:
    """A CSV of two 24x40x40 PET phantoms in Bq/mL (brain mask, units, dose and times per
    row, as 'clinicalai synth pet' writes them), a truncated one and a text file."""
    from clinicalai.phantoms.pet import pet_case
    from clinicalai.volume import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(2):
        c = pet_case(20 + i, shape=(24, 40, 40), spacing=(4.0, 4.0, 4.0))
        write_volume(c.image, folder / f"pet{i}.nii.gz")
        write_volume(c.brain_mask, folder / f"pet{i}_brain.nii.gz")
        rows.append({"path": f"pet{i}.nii.gz", "brain_mask": f"pet{i}_brain.nii.gz", "units": "bqml",
                     "weight_kg": c.info["weight_kg"], "dose_bq": c.info["dose_bq"],
                     "injection_time": c.info["injection"], "scan_time": c.info["scan_start"], "label": c.label})
    data = (folder / "pet0.nii.gz").read_bytes()
    (folder / "cut.nii.gz").write_bytes(data[: len(data) // 3])
    (folder / "readme.txt").write_text("hello\n")
    rows += [{**rows[0], "path": "cut.nii.gz", "label": ""}, {**rows[0], "path": "readme.txt", "label": ""}]
    with open(folder / "cases.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "cases.csv"


def read_rows(out: Path) -> Dict[str, Dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def cardiac_cohort(tmp_path_factory) -> Path:
    return make_cardiac_cohort(tmp_path_factory.mktemp("cardiac"))


@pytest.fixture(scope="module")
def cardiac_reference(cardiac_cohort, tmp_path_factory) -> Path:
    """``clinicalai segment`` (the single-case command) on each good case: REF/<case>/mask.nii.gz, report.json."""
    from clinicalai.cli import main

    ref = tmp_path_factory.mktemp("cardiac_ref")
    for name, rel in CARDIAC.items():
        (ref / name).mkdir()
        assert main(["segment", str(cardiac_cohort / rel), "-o", str(ref / name / "mask.nii.gz"),
                     "--report", str(ref / name / "report.json")]) == 0
    return ref


@pytest.fixture(scope="module")
def pet_cohort(tmp_path_factory) -> Path:
    return make_pet_cohort(tmp_path_factory.mktemp("pet"))


@pytest.fixture(scope="module")
def pet_reference(pet_cohort, tmp_path_factory) -> Path:
    """``clinicalai pet`` on each good row with the row's options: REF/<case>/cam.nii.gz, pet.json."""
    from clinicalai.cli import main

    ref = tmp_path_factory.mktemp("pet_ref")
    with open(pet_cohort, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"]]
    for r in rows:
        name = r["path"].replace(".nii.gz", "")
        (ref / name).mkdir()
        base = pet_cohort.parent
        assert main(["pet", str(base / r["path"]), "--units", r["units"], "--brain-mask", str(base / r["brain_mask"]),
                     "--weight", r["weight_kg"], "--dose", str(float(r["dose_bq"]) / 1e6),
                     "--injection-time", r["injection_time"], "--scan-time", r["scan_time"],
                     "--cam", str(ref / name / "cam.nii.gz"), "--json", str(ref / name / "pet.json")]) == 0
    return ref


@contextlib.contextmanager
def dask_processes(folder: Path, n_workers: int = 1, nanny: bool = True) -> Iterator[tuple]:
    """``dask scheduler`` and ``n_workers`` ``dask worker`` subprocesses on 127.0.0.1 (free
    ports via a scheduler file); yields ``(address, [worker Popen])``; all killed on exit."""
    sched_file = folder / "scheduler.json"
    log = open(folder / "dask.log", "ab")
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(sched_file)], stdout=log, stderr=log, env=_env(), start_new_session=True)
    try:
        address = _wait_for_address(sched_file, scheduler)
        with dask_workers(folder, address, [f"w{i}" for i in range(n_workers)], nanny) as workers:
            yield address, workers
    finally:
        _stop([scheduler])
        log.close()


@contextlib.contextmanager
def dask_workers(folder: Path, address: str, names: List[str], nanny: bool = True) -> Iterator[List[subprocess.Popen]]:
    """``dask worker`` subprocesses (1 thread each) named ``names`` on the scheduler at
    ``address``, which may have other workers; yields them once all joined; killed on exit."""
    procs: List[subprocess.Popen] = []
    log = open(folder / "dask-workers.log", "ab")
    try:
        for name in names:
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name", name, "--host", "127.0.0.1",
                 "--no-dashboard", "--death-timeout", "60", "--nanny" if nanny else "--no-nanny"],
                stdout=log, stderr=log, env=_env(), start_new_session=True))
        _wait_for_workers(address, names, procs)
        yield procs
    finally:
        _stop(procs)
        log.close()


def _stop(procs: List[subprocess.Popen]) -> None:
    for p in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=15)


def _wait_for_address(sched_file: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        with contextlib.suppress(OSError, ValueError):
            return json.loads(sched_file.read_text())["address"]
        time.sleep(0.2)
    raise TimeoutError("dask scheduler did not start within 60 s")


def _wait_for_workers(address: str, names: List[str], procs: List[subprocess.Popen], timeout: float = 120) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        end = time.monotonic() + timeout
        while not set(names) <= {w["name"] for w in client.scheduler_info()["workers"].values()}:
            exited = [n for n, p in zip(names, procs) if p.poll() is not None]
            if exited:
                raise RuntimeError(f"dask worker(s) {exited} exited")
            if time.monotonic() > end:
                raise TimeoutError(f"dask workers {names} did not join within {timeout} s")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def scheduler_pair(tmp_path_factory) -> Iterator[str]:
    """A ``dask scheduler`` and one ``dask worker`` (nanny, 1 thread) as subprocesses: the address."""
    with dask_processes(tmp_path_factory.mktemp("dask"), n_workers=1) as (address, _):
        yield address


@pytest.fixture(scope="module")
def local_cluster(warming_up) -> Iterator[object]:
    """A real ``distributed.LocalCluster`` of 2 worker processes and its client, shared by
    the module's tests: each worker process imports torch and monai on its first case (~9 s on
    2 cores), so the runs that do not test starting a cluster reuse these warm workers (by
    ``--scheduler`` address or ``client=``) instead of paying for a new cluster each."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    # the workers' imports overlap with this process's single-case reference runs (the
    # fixtures set up after this one) instead of following them
    with warming_up(client, pin_gpu=True):
        yield client
    client.close()
    cluster.close()


BAD_CARDIAC = {"truncated": "cut off", "notes": "cannot be read"}


def _same_volume(a: Path, b: Path) -> None:
    from clinicalai.volume import read_volume

    va, vb = read_volume(a), read_volume(b)
    assert va.array.shape == vb.array.shape
    assert np.array_equal(va.array, vb.array), f"{a} differs from {b}"
    assert np.allclose(va.spacing, vb.spacing) and np.allclose(va.origin, vb.origin)


def _check_segment_outputs(out: Path, ref: Path, names=CARDIAC) -> None:
    for name in names:
        _same_volume(out / name / "mask.nii.gz", ref / name / "mask.nii.gz")
        got = json.loads((out / name / "report.json").read_text())
        want = json.loads((ref / name / "report.json").read_text())
        assert got["correction"]["summary"] == want["correction"]["summary"]
        assert [s["decision"] for s in got["correction"]["slices"]] == [s["decision"] for s in want["correction"]["slices"]]


# ---------------------------------------------------------------------------- inputs (fast)
def test_case_names_are_stable_and_unique(tmp_path):
    assert case_stem("p1/image.nii.gz") == "p1__image"
    assert case_stem("../x y/scan.seg.nrrd") == "up__x_y__scan"
    names = unique_names(["a/image.nii.gz", "b/image.nii.gz", "x.nii", "x.nii.gz"])
    assert names[:2] == ["a__image", "b__image"]
    assert names[2] != names[3] and all(n.startswith("x-") for n in names[2:])
    assert unique_names(["x.nii", "x.nii.gz"]) == names[2:]  # the same paths, the same names
    with pytest.raises(InputError, match="more than once"):
        unique_names(["a.nii.gz", "a.nii.gz"])


def test_discovery_finds_images_and_dicom_series(tmp_path):
    (tmp_path / "s1" / "dicom").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "s1" / "dicom" / f"IM{i}.dcm").write_bytes(b"x")
    # a PACS export names its files by their SOP instance UID, dots and all, with no ending
    (tmp_path / "s0").mkdir()
    for i in range(3):
        (tmp_path / "s0" / f"1.3.12.2.1107.5.2.{i}").write_bytes(bytes(128) + b"DICM" + bytes(16))
    (tmp_path / "s0" / "1.3.12.2.1107.5.2.readme").write_text("not DICOM")
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "image.nrrd").write_bytes(b"x")
    (tmp_path / "s2" / "v1.2.notes").write_bytes(b"x" * 200)  # dots, no preamble: not DICOM
    (tmp_path / "s2" / "notes.txt").write_text("no")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "h.nii.gz").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.nii.gz").write_bytes(b"x")
    cases = discover_cases(tmp_path, exclude=[tmp_path / "out"])
    assert [(c.name, Path(c.input).relative_to(tmp_path).as_posix()) for c in cases] == [
        ("s0", "s0"), ("s1__dicom", "s1/dicom"), ("s2__image", "s2/image.nrrd")]
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("path,lesion,label\ns2/image.nrrd,les.nii.gz,1\n")
    (case,) = discover_cases(csv_path)
    assert case.input == str(tmp_path / "s2/image.nrrd") and case.columns == {"lesion": str(tmp_path / "les.nii.gz"), "label": "1"}
    csv_path.write_text("file\nx.nii\n")
    with pytest.raises(InputError, match="no 'path' column"):
        discover_cases(csv_path)


def test_batch_command_errors_are_one_line(tmp_path, capsys):
    assert main(["batch", "segment", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["batch", "segment", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no cases" in capsys.readouterr().err
    assert main(["batch", "segment", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- LocalCluster
@pytest.mark.slow
def test_segment_on_local_cluster_matches_single_case(local_cluster, cardiac_cohort, cardiac_reference, tmp_path,
                                                     capsys):
    out = tmp_path / "out"
    base = ["batch", "segment", str(cardiac_cohort), "--out", str(out)]
    # the first run starts its own LocalCluster of 2 workers (--workers), as a user's would
    assert main(base + ["--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert "2 of 5 cases failed" in captured.err
    assert "5/5 done, 2 failed" in captured.err  # the progress line
    rows = read_rows(out)
    assert set(rows) == set(CARDIAC) | set(BAD_CARDIAC)
    for name in CARDIAC:
        assert rows[name]["status"] == "ok" and rows[name]["error"] == ""
        assert rows[name]["worker"] in ("0", "1") and float(rows[name]["seconds"]) > 0
        report = json.loads((cardiac_reference / name / "report.json").read_text())
        assert int(rows[name]["valid_final"]) == report["correction"]["summary"]["valid_final"]
    for name, words in BAD_CARDIAC.items():
        assert rows[name]["status"] == "failed" and words in rows[name]["error"]
        assert "\n" not in rows[name]["error"] and "Traceback" not in rows[name]["error"]
        assert not (out / name).exists()
    _check_segment_outputs(out, cardiac_reference)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 3, "failed": 2, "skipped": 0}
    assert not (out / ".partial").exists()

    # the reruns go to the module's warm 2-worker LocalCluster by --scheduler: a new cluster
    # per rerun would cost two more worker start-ups (torch + monai imports) and test nothing
    # the first run did not. The cluster options are not part of the run's record, so
    # switching from --workers to --scheduler between runs of one DIR must work as well.
    args = base + ["--scheduler", local_cluster.scheduler.address]

    # rerun: finished cases are skipped (their figures kept), the failed ones fail again
    before = {n: (out / n / "mask.nii.gz").stat().st_mtime_ns for n in CARDIAC}
    assert main(args) == 1
    rows2 = read_rows(out)
    assert all(rows2[n]["status"] == "skipped" and rows2[n]["valid_final"] == rows[n]["valid_final"] for n in CARDIAC)
    assert all(rows2[n]["status"] == "failed" for n in BAD_CARDIAC)
    assert before == {n: (out / n / "mask.nii.gz").stat().st_mtime_ns for n in CARDIAC}

    # other options without --force: refused before any work; --force recomputes every case
    assert main(args + ["--no-gate"]) == 1
    assert "other options no_gate" in capsys.readouterr().err
    assert main(args + ["--force"]) == 1
    rows3 = read_rows(out)
    assert all(rows3[n]["status"] == "ok" for n in CARDIAC)
    assert all((out / n / "mask.nii.gz").stat().st_mtime_ns != before[n] for n in CARDIAC)
    _check_segment_outputs(out, cardiac_reference)


@pytest.mark.slow
def test_pet_on_local_cluster_reuses_models(local_cluster, pet_cohort, pet_reference, tmp_path):
    from clinicalai.batch import BatchOptions, run_batch
    from clinicalai.batch.commands import single_case_options
    from clinicalai.batch.worker import cache_stats
    from clinicalai.cli import build_parser

    args = build_parser().parse_args(["batch", "pet", str(pet_cohort), "--out", str(tmp_path / "o"), "--cam"])
    opts = BatchOptions("pet", str(pet_cohort), str(tmp_path / "o"), func=args.batch_single.get_default("func"),
                        options=single_case_options(args), wanted={"cam": True, "voi_out": False})
    # the module's cluster may have run other workflows' cases (segment) first: count this
    # test's model loads and cache hits from what its workers report now
    start = local_cluster.run(cache_stats)

    def since_start(key: str) -> Dict[str, int]:
        return {w: s[key] - start[w][key] for w, s in local_cluster.run(cache_stats).items()}

    result = run_batch(opts, client=local_cluster)
    statuses = {r["case"]: r["status"] for r in result.rows}
    assert statuses == {"pet0": "ok", "pet1": "ok", "cut": "failed", "readme.txt": "failed"}
    for name in ("pet0", "pet1"):
        _same_volume(tmp_path / "o" / name / "cam.nii.gz", pet_reference / name / "cam.nii.gz")
        want = json.loads((pet_reference / name / "pet.json").read_text())
        row = next(r for r in result.rows if r["case"] == name)
        assert row["probability"] == want["probability_recurrence"] and row["TBRmax"] == want["static"]["TBRmax"]
    # 3 fold models: each worker that ran a case loaded each once; a second run (--force) on
    # the same workers loads nothing and takes all 3 from the cache for each of the 2 cases
    loads = since_start("loads")
    assert set(loads.values()) <= {0, 3} and sum(loads.values()) >= 3
    opts.force = True
    assert [r["status"] for r in run_batch(opts, client=local_cluster).rows] == ["ok", "ok", "failed", "failed"]
    assert since_start("loads") == loads
    assert sum(since_start("hits").values()) == 3 * 2


@pytest.mark.slow
def test_pet_on_dynamic_pets_takes_each_row_s_window(local_cluster, tmp_path):
    # a cohort of dynamic BIDS-PETs (4 frames: 0-5, 5-10, 10-20, 20-30 min): each row's
    # static_window column gives its static scan; a row whose window holds no whole frame fails
    # alone, with the reason; the rest equal 'clinicalai pet --static-window' case by case
    import nibabel as nib

    from clinicalai.batch import BatchOptions, run_batch
    from clinicalai.batch.commands import single_case_options
    from clinicalai.cli import build_parser
    from clinicalai.phantoms.pet import pet_case

    folder = tmp_path / "dynamic"
    folder.mkdir()
    c = pet_case(20, shape=(24, 40, 40), spacing=(4.0, 4.0, 4.0))
    frames = np.stack([c.image.array * level for level in (0.3, 0.7, 0.9, 1.1)], axis=-1)
    for subject in (1, 2, 3):  # one scan, three subjects (a cohort lists each input once)
        nib.save(nib.Nifti1Image(np.transpose(frames, (2, 1, 0, 3)).astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0])),
                 folder / f"sub-0{subject}_pet.nii.gz")
        (folder / f"sub-0{subject}_pet.json").write_text(json.dumps({
            "Units": "Bq/mL", "BodyWeight": 70, "InjectedRadioactivity": 185, "InjectedRadioactivityUnits": "MBq",
            "TracerRadionuclide": "F18", "TimeZero": "09:00:00", "InjectionStart": 0, "ScanStart": 0,
            "FrameTimesStart": [0, 300, 600, 1200], "FrameDuration": [300, 300, 600, 600], "ImageDecayCorrected": True,
            "ImageDecayCorrectionTime": 0, "AttenuationCorrection": "CT-based"}))
    cohort = folder / "cases.csv"
    cohort.write_text("path,static_window\nsub-01_pet.nii.gz,10-30\nsub-02_pet.nii.gz,0-10\nsub-03_pet.nii.gz,11-14\n")
    args = build_parser().parse_args(["batch", "pet", str(cohort), "--out", str(tmp_path / "o")])
    opts = BatchOptions("pet", str(cohort), str(tmp_path / "o"), func=args.batch_single.get_default("func"),
                        options=single_case_options(args), wanted={"cam": False, "voi_out": False})
    rows = run_batch(opts, client=local_cluster).rows
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert "no whole frame lies in 11-14 min" in rows[2]["error"]
    for row, window in zip(rows[:2], (("10", "30"), ("0", "10"))):
        ref = tmp_path / f"ref{window[0]}.json"
        assert main(["pet", str(folder / "sub-01_pet.nii.gz"), "--static-window", *window, "--json", str(ref)]) == 0
        want = json.loads(ref.read_text())
        assert row["probability"] == want["probability_recurrence"] and row["TBRmax"] == want["static"]["TBRmax"]
    # the early window (0.3 and 0.7 of the late uptake) is a different scan: not the same SUVmax
    assert rows[0]["SUVmax"] != rows[1]["SUVmax"]


# ---------------------------------------------------------------------------- dask scheduler + worker
@pytest.mark.slow
def test_pet_and_segment_on_a_scheduler(scheduler_pair, pet_cohort, pet_reference, cardiac_cohort,
                                        cardiac_reference, tmp_path, capsys):
    out = tmp_path / "pet"
    assert main(["batch", "pet", str(pet_cohort), "--out", str(out), "--scheduler", scheduler_pair, "--cam"]) == 1
    assert "2 of 4 cases failed" in capsys.readouterr().err
    rows = read_rows(out)
    assert {n: r["status"] for n, r in rows.items()} == {"pet0": "ok", "pet1": "ok", "cut": "failed", "readme.txt": "failed"}
    assert "unsupported image type" in rows["readme.txt"]["error"]
    assert rows["pet0"]["worker"] == "w0" and rows["pet0"]["label"] in ("0", "1")
    for name in ("pet0", "pet1"):
        _same_volume(out / name / "cam.nii.gz", pet_reference / name / "cam.nii.gz")
        want = json.loads((pet_reference / name / "pet.json").read_text())
        got = json.loads((out / name / "pet.json").read_text())
        assert got["probability_recurrence"] == want["probability_recurrence"] and got["static"] == want["static"]

    seg = tmp_path / "seg"
    assert main(["batch", "segment", str(cardiac_cohort), "--out", str(seg), "--scheduler", scheduler_pair]) == 1
    _check_segment_outputs(seg, cardiac_reference)
    assert {n: r["status"] for n, r in read_rows(seg).items() if n in CARDIAC} == dict.fromkeys(CARDIAC, "ok")


@pytest.mark.slow
def test_killed_worker_leaves_a_resumable_run(scheduler_pair, warming_up, tmp_path, cardiac_reference):
    from distributed import Client

    cohort = make_cardiac_cohort(tmp_path / "cohort", extra_good=3)
    out = tmp_path / "out"
    command = ["batch", "segment", str(cohort), "--out", str(out), "--scheduler", scheduler_pair]
    # the module's scheduler and its (warm) worker w0, plus a worker of this test's own without
    # a nanny (so that nothing restarts it) to kill mid-run: every new worker process costs a
    # torch + monai import (~9 s on 2 cores), so only the one to be killed is new, and its
    # imports start at once, overlapping with the start of the batch process (whose own
    # warm-up then waits for them on that worker)
    with dask_workers(tmp_path, scheduler_pair, ["doomed"], nanny=False) as (doomed,), \
            Client(scheduler_pair, timeout=30) as client, warming_up(client, pin_gpu=False):
        run = subprocess.Popen([sys.executable, "-m", "clinicalai", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=_env(), text=True)
        try:
            end = time.monotonic() + 120
            while time.monotonic() < end and not any((out / n).is_dir() for n in CARDIAC):
                time.sleep(0.1)
            assert run.poll() is None, "the run ended before a worker could be killed"
            os.killpg(doomed.pid, signal.SIGKILL)  # mid-run: its case is lost with it
            _, err = run.communicate(timeout=180)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
    assert run.returncode == 1 and "cases failed" in err  # the two bad files; lost cases were rerun or failed
    # no half-written case folder: every folder there is complete and equals the single-case output
    done = [p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert done, "no case finished"
    for name in done:
        assert (out / name / ".case.json").is_file() and (out / name / "mask.nii.gz").is_file()
    _check_segment_outputs(out, cardiac_reference, [n for n in done if n in CARDIAC])
    first = read_rows(out)

    # resume: the same command again (what an interrupted run tells the user to do), on what
    # is left of the cluster (w0; a new LocalCluster here would cost two more worker start-ups,
    # and resuming a DIR with other cluster options is what the reruns of
    # test_segment_on_local_cluster_matches_single_case check): what finished is skipped, the
    # rest computed; no leftovers
    assert main(command) == 1
    rows = read_rows(out)
    for name, row in rows.items():
        if name in BAD_CARDIAC:
            assert row["status"] == "failed"
        elif first[name]["status"] == "ok" or name in done:
            # a case the killed worker finished (folder renamed into place) just before its
            # result reached the client is complete on disk although its row says failed
            assert row["status"] == "skipped"
        else:
            assert row["status"] == "ok"
    _check_segment_outputs(out, cardiac_reference)
    assert not (out / ".partial").exists()
