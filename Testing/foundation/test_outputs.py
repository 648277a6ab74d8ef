"""No command deletes or overwrites a user's folder (issue 15, item 6).

An existing non-empty output folder is refused unless ``--overwrite``; with it, only the files
the command writes are replaced and everything else in the folder stays. The helper is tested
directly, then every command whose output is a folder, through ``clinicalai.cli.main``."""

from __future__ import annotations

import json

import pytest

from clinicalai.cli import main
from clinicalai.errors import Cancelled, InputError
from clinicalai.outputs import atomic_output, check_output_folder


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("the user's own notes")
    (path / "sub").mkdir()
    (path / "sub" / "keep.nii.gz").write_bytes(b"user data")
    (path / "report.json").write_text('{"old": true}')
    return path


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_existing_folder_is_refused_and_untouched(tmp_path):
    folder = _user_folder(tmp_path / "out")
    before = _snapshot(folder)
    with pytest.raises(InputError, match="already exists and is not empty.*--overwrite"):
        with atomic_output(folder, directory=True) as tmp:
            (tmp / "report.json").write_text("{}")
    assert _snapshot(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no temporary folder left behind"
    # a file where a folder should go is refused even with overwrite
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "a-file", overwrite=True)


def test_overwrite_replaces_only_the_commands_files(tmp_path):
    folder = _user_folder(tmp_path / "out")
    with atomic_output(folder, directory=True, overwrite=True) as tmp:
        (tmp / "report.json").write_text('{"new": true}')
        (tmp / "sub").mkdir()
        (tmp / "sub" / "map.nii.gz").write_bytes(b"map")
    assert json.loads((folder / "report.json").read_text()) == {"new": True}
    assert (folder / "notes.txt").read_text() == "the user's own notes"
    assert (folder / "sub" / "keep.nii.gz").read_bytes() == b"user data"
    assert (folder / "sub" / "map.nii.gz").read_bytes() == b"map"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_or_cancel_with_overwrite_changes_nothing(tmp_path):
    folder = _user_folder(tmp_path / "out")
    before = _snapshot(folder)
    with pytest.raises(Cancelled):
        with atomic_output(folder, directory=True, overwrite=True) as tmp:
            (tmp / "report.json").write_text("{}")
            raise Cancelled("stopped")
    assert _snapshot(folder) == before
    # a name that is a folder in the user's folder and a file in the output: refused, nothing moved
    with pytest.raises(InputError, match="a folder of that name is in the way"):
        with atomic_output(folder, directory=True, overwrite=True) as tmp:
            (tmp / "notes.txt").write_text("new")
            (tmp / "sub").write_text("a file named like the user's folder")
    assert _snapshot(folder) == before


def test_new_and_empty_folders_are_written(tmp_path):
    for folder in (tmp_path / "new", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        with atomic_output(folder, directory=True) as tmp:
            (tmp / "a.txt").write_text("a")
        assert _snapshot(folder) == {"a.txt": b"a"}


# every command whose output is a folder: refused before any work, the folder untouched
REFUSED = [
    ["evaluate", "generative", "--phantoms", "2", "--no-latent", "-o", "{out}"],
    ["evaluate", "pet", "--csv", "{tmp}/missing.csv", "--out", "{out}"],
    ["train", "pet", "--csv", "{tmp}/missing.csv", "--out", "{out}"],
    ["demo", "--out", "{out}"],
    ["synth", "cardiac", "--n", "1", "--out", "{out}"],
]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: " ".join(a[:2]))
def test_folder_commands_refuse_an_existing_folder(tmp_path, capsys, argv):
    folder = _user_folder(tmp_path / "out")
    before = _snapshot(folder)
    rc = main([a.format(out=folder, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0
    assert "already exists" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(folder) == before


def test_evaluate_generative_overwrite_keeps_other_files(tmp_path, capsys):
    folder = _user_folder(tmp_path / "out")
    rc = main(["evaluate", "generative", "--phantoms", "2", "--sizes", "100", "--no-latent", "-o", str(folder),
               "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert "synthetic_anomalies" in json.loads((folder / "report.json").read_text())
    assert (folder / "notes.txt").read_text() == "the user's own notes"
    assert (folder / "sub" / "keep.nii.gz").read_bytes() == b"user data"


def test_pet_evaluate_and_train_overwrite_keep_other_files(tmp_path, capsys):
    data = tmp_path / "pets"
    assert main(["synth", "pet", "--n", "6", "--seed", "1", "--out", str(data)]) == 0
    folder = _user_folder(tmp_path / "out")
    assert main(["evaluate", "pet", "--csv", str(data / "pet_cases.csv"), "--split", "all", "--bootstrap", "10",
                 "--out", str(folder), "--overwrite"]) == 0, capsys.readouterr().err
    assert (folder / "predictions.csv").is_file() and (folder / "metrics.json").is_file()
    assert (folder / "notes.txt").read_text() == "the user's own notes"
    assert main(["train", "pet", "--csv", str(data / "pet_cases.csv"), "--arch", "cnn3d", "--arch-kwargs",
                 '{"channels": [2, 4]}', "--folds", "2", "--epochs", "1", "--batch-size", "2", "--spacing", "12", "12",
                 "12", "--size", "22", "22", "14", "--no-augment", "--device", "cpu", "--out", str(folder),
                 "--overwrite"]) == 0, capsys.readouterr().err
    assert len(list(folder.glob("*-fold*.pt"))) == 2 and (folder / "metrics.json").is_file()
    assert (folder / "notes.txt").read_text() == "the user's own notes"
    assert (folder / "sub" / "keep.nii.gz").read_bytes() == b"user data"


@pytest.mark.slow
def test_demo_reruns_into_its_own_folder(tmp_path, capsys):
    """`make demo` twice: the second run replaces the demo's files (its DICOM series folder
    included) and keeps what the user put there; nothing half-written is left beside it."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0, capsys.readouterr().err
    (out / "notes.txt").write_text("the user's own notes")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert any(p.parts[-2:-1] == ("pet_dicom",) for p in files)
    assert main(["demo", "--out", str(out), "--overwrite"]) == 0, capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    assert (out / "notes.txt").read_text() == "the user's own notes"
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]
