"""``clinicalai synth`` and the brain-lesion data set writer."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from clinicalai.cli import main
from clinicalai.errors import ClinicalAIError, InputError
from clinicalai.phantoms import commands as synth_commands
from clinicalai.phantoms.brain import CSF, GREY, WHITE, brain_case, write_brain_dataset
from clinicalai.progress import ConsoleProgress
from clinicalai.volume import read_volume


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_brain_dataset_is_deterministic_and_consistent(tmp_path):
    a = write_brain_dataset(tmp_path / "a", 2, seed=5)
    write_brain_dataset(tmp_path / "b", 2, seed=5)
    write_brain_dataset(tmp_path / "c", 2, seed=6)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")  # same seed, same bytes
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    rows = list(csv.DictReader(a.open()))
    assert [r["label"] for r in rows] == ["healthy", "pathological"]
    for r in rows:
        image = read_volume(a.parent / r["image"])
        lesion = read_volume(a.parent / r["lesion"])
        brain = read_volume(a.parent / r["brain_mask"])
        assert image.same_grid(lesion) and image.same_grid(brain)
        assert int(r["lesion_voxels"]) == int(np.count_nonzero(lesion.array))
        assert np.all(brain.array[lesion.array > 0] > 0)  # lesions lie inside the brain
    assert int(rows[0]["lesion_voxels"]) == 0 < int(rows[1]["lesion_voxels"])
    lesion = read_volume(a.parent / rows[1]["lesion"]).array > 0
    image = read_volume(a.parent / rows[1]["image"]).array
    brain = read_volume(a.parent / rows[1]["brain_mask"]).array > 0
    assert image[lesion].mean() > 1.3 * image[brain & ~lesion].mean()  # lesions are hyperintense


def test_brats_layout(tmp_path):
    csv_path = write_brain_dataset(tmp_path / "brats", 1, seed=0, layout="brats")
    row = next(csv.DictReader(csv_path.open()))
    assert row["image"] == "BraTS-SYN-00000/BraTS-SYN-00000_flair.nii.gz"
    assert (csv_path.parent / row["lesion"]).name.endswith("_seg.nii.gz")
    assert all((csv_path.parent / row[k]).is_file() for k in ("image", "lesion", "brain_mask"))


def test_brain_tissue_fractions_are_plausible():
    for seed in range(3):
        case = brain_case(seed)
        inside = case.tissues.array[case.brain_mask.array > 0]
        white, grey, csf = ((inside == t).mean() for t in (WHITE, GREY, CSF))
        assert 0.3 < white < 0.6 and 0.35 < grey < 0.65 and 0.01 < csf < 0.08, (white, grey, csf)


def test_cli_synth_brain_writes_the_files(tmp_path, capsys):
    out = tmp_path / "brain"
    assert main(["synth", "brain-lesion", "--out", str(out), "--n", "2", "--seed", "1"]) == 0
    assert "wrote 2 brain-lesion case(s)" in capsys.readouterr().out
    assert (out / "cases.csv").is_file()
    assert len(list(out.glob("case*/image.nii.gz"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_synth_reports_progress(tmp_path):
    seen = []
    synth_commands.synth("brain-lesion", tmp_path / "p", 2, 0, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and 0.5 in seen
    stream = io.StringIO()
    bar = ConsoleProgress(stream=stream, force=True)
    bar(1.0, "done")
    assert "100.0%" in stream.getvalue() and "#" * 30 in stream.getvalue()


@pytest.mark.parametrize("kind, expected", [("cardiac", "patient001/Info.cfg"), ("pet", "pet_cases.csv")])
def test_cli_synth_cardiac_and_pet(tmp_path, capsys, kind, expected):
    # the writers belong to engineers B1 (cardiac) and C (PET); this checks the wiring
    module_name, func_name = synth_commands.GENERATORS[kind][:2]
    if not hasattr(pytest.importorskip(module_name), func_name):
        pytest.skip(f"{module_name}.{func_name} has not landed yet")
    out = tmp_path / kind
    assert main(["synth", kind, "--out", str(out), "--n", "1", "--seed", "2"]) == 0
    assert (out / expected).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_writer_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(synth_commands.GENERATORS, "cardiac", ("clinicalai.phantoms.no_such_module", "write", 3, ""))
    with pytest.raises(ClinicalAIError, match="comes with issue #3"):
        synth_commands._writer("cardiac")


@pytest.mark.parametrize(
    "args, match",
    [
        (["--n", "0"], "--n must be between 1"),
        (["--seed", "-1"], "--seed must be zero or positive"),
        (["--n", "abc"], "invalid int value"),
        (["--layout", "brats", "--kind-override", "cardiac"], None),
    ],
)
def test_cli_synth_bad_arguments(tmp_path, capsys, args, match):
    out = tmp_path / "out"
    kind = "brain-lesion"
    if "--kind-override" in args:
        kind, args, match = "cardiac", ["--layout", "brats"], "applies to brain-lesion only"
    assert main(["synth", kind, "--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and match in err and "Traceback" not in err
    assert not out.exists() and not any(tmp_path.iterdir())


def test_cli_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["synth", "brain-lesion", "--out", str(tmp_path), "--n", "1"]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError):
        write_brain_dataset(tmp_path, 0)
    with pytest.raises(InputError, match="layout"):
        write_brain_dataset(tmp_path, 1, layout="nnunet")


@pytest.mark.parametrize("kind", ["cardiac", "pet"])
def test_every_writer_reports_progress_per_case(tmp_path, kind):
    seen = []
    kwargs = {"size": (48, 48), "n_slices": 8} if kind == "cardiac" else {}
    module_name, func_name = synth_commands.GENERATORS[kind][:2]
    writer = getattr(pytest.importorskip(module_name), func_name)
    writer(tmp_path / kind, 2, 0, progress=lambda f, m: seen.append((f, m)), **kwargs)
    assert [f for f, _ in seen] == [0.5, 1.0]
    assert "1/2" in seen[0][1]


def test_cli_synth_pet_writes_a_csv_of_scans_and_labels(tmp_path, capsys):
    out = tmp_path / "pet"
    assert main(["synth", "pet", "--out", str(out), "--n", "3", "--seed", "4"]) == 0
    rows = list(csv.DictReader((out / "pet_cases.csv").open()))
    assert len(rows) == 3
    assert {"path", "label", "scanner", "brain_mask", "units", "weight_kg", "dose_bq"} <= set(rows[0])
    for r in rows:
        assert r["label"] in ("0", "1") and r["units"] == "bqml"
        image = read_volume(out / r["path"])
        mask = read_volume(out / r["brain_mask"])
        assert image.same_grid(mask) and image.array.dtype.kind == "f"
        # Bq/mL of a few-hundred-MBq injection: brain voxels in the kBq/mL range
        assert 100.0 < float(np.median(image.array[mask.array > 0])) < 1e5
        assert float(r["dose_bq"]) > 1e7 and float(r["weight_kg"]) > 20


def test_cli_synth_cardiac_writes_acdc_patient_folders(tmp_path, capsys):
    out = tmp_path / "acdc"
    assert main(["synth", "cardiac", "--out", str(out), "--n", "2", "--seed", "3"]) == 0
    patients = sorted(p.name for p in out.iterdir())
    assert patients == ["patient001", "patient002"]
    for name in patients:
        info = dict(line.split(": ", 1) for line in (out / name / "Info.cfg").read_text().splitlines())
        assert set(info) == {"ED", "ES", "Group", "Height", "NbFrame", "Weight"}
        for frame in (int(info["ED"]), int(info["ES"])):
            image = read_volume(out / name / f"{name}_frame{frame:02d}.nii.gz")
            gt = read_volume(out / name / f"{name}_frame{frame:02d}_gt.nii.gz")
            assert image.same_grid(gt)
            assert set(np.unique(gt.array)) == {0, 1, 2, 3}  # background, RV, MYO, LV as in ACDC
            sx, sy, sz = image.spacing
            assert 1.2 <= sx <= 1.8 and sx == sy and 5.0 <= sz <= 10.0
