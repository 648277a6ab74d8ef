"""The command line's error contract: a user error exits non-zero with exactly one line on
stderr, no traceback, and writes no output file."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clinicalai.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clinicalai", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def assert_one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_python_m_clinicalai_help():
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    for command in ("synth", "models", "export", "segment", "pet", "explain", "anomaly", "demo", "web"):
        assert command in done.stdout


def test_user_error_in_a_real_process(tmp_path):
    out = tmp_path / "data"
    done = run_cli("synth", "brain-lesion", "--out", str(out), "--n", "0")
    assert done.returncode == 1
    assert assert_one_line_error(done.stderr).startswith("clinicalai: error: ")
    assert done.stdout == "" and not out.exists()


def test_unexpected_exception_is_one_line(capsys, monkeypatch):
    import clinicalai.models.commands as mc

    def boom(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(mc, "cmd_list", boom)
    assert main(["models", "list"]) == 3
    line = assert_one_line_error(capsys.readouterr().err)
    assert "internal error: ZeroDivisionError: division by zero" in line and "--debug" in line


# ------------------------------------------------------------------------- image-reading commands
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bad")
    # a 4D cine series (3 time points): no command takes one. A 2D image is not "wrong" for
    # every command (a 2D slice classifier explains it, a single-slice mask can be corrected);
    # the commands that need volumes test 2D input themselves.
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 4, 16, 16), np.float32), isVector=False), str(d / "cine.nii.gz"))
    (d / "notes.nii.gz").write_text("this is not an image")
    (d / "report.txt").write_text("neither is this")
    return {
        "unknown file": str(d / "missing.nii.gz"),
        "wrong dimensionality": str(d / "cine.nii.gz"),
        "non-image file": str(d / "notes.nii.gz"),
        "unsupported type": str(d / "report.txt"),
    }


#: image-reading commands of DESIGN.md and how each names its output
COMMANDS = {
    "segment": lambda img, out: ["segment", img, "-o", out, "--device", "cpu"],
    "correct": lambda img, out: ["correct", img, "-o", out],
    "pet": lambda img, out: ["pet", img, "--units", "bqml", "--json", out],
    "explain": lambda img, out: ["explain", img, "--method", "gradient", "-o", out],
    "anomaly": lambda img, out: ["anomaly", img, "-o", out],
}


def _registered(command: str) -> bool:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    func = sub.choices[command].get_default("func")
    return func is not None and "_placeholder" not in getattr(func, "__qualname__", "")


@pytest.mark.parametrize("case", ["unknown file", "wrong dimensionality", "non-image file", "unsupported type"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_image_is_one_line_and_writes_nothing(command, case, bad_inputs, tmp_path, capsys):
    if not _registered(command):
        pytest.skip(f"'clinicalai {command}' has not landed yet")
    out = tmp_path / ("report.json" if command == "pet" else "out.nii.gz")
    code = main(COMMANDS[command](bad_inputs[case], str(out)))
    assert code not in (0, None)
    assert_one_line_error(capsys.readouterr().err)
    assert not out.exists() and not any(tmp_path.iterdir())


def test_read_errors_name_the_problem(bad_inputs):
    # the engine side of the contract, for every command that reads an image
    from clinicalai.errors import InputError
    from clinicalai.volume import read_volume

    with pytest.raises(InputError, match="no such file"):
        read_volume(bad_inputs["unknown file"])
    with pytest.raises(InputError, match="4D image with 3 time points"):
        read_volume(bad_inputs["wrong dimensionality"])
    with pytest.raises(InputError, match="cannot be read as an image"):
        read_volume(bad_inputs["non-image file"])
    with pytest.raises(InputError, match="unsupported image type"):
        read_volume(bad_inputs["unsupported type"])


def test_an_error_after_a_half_drawn_progress_bar_starts_on_its_own_line(capsys, monkeypatch):
    """On a terminal the bar is drawn with carriage returns and no newline; a failing step
    must not leave the error message glued to the end of the bar's line."""
    import io

    import clinicalai.models.commands as mc
    from clinicalai.errors import InputError
    from clinicalai.progress import ConsoleProgress

    terminal = io.StringIO()

    def fails_half_way(args):
        bar = ConsoleProgress(stream=terminal, force=True)
        bar(0.4, "step 2/5")
        raise InputError("case 3 cannot be written")

    monkeypatch.setattr(mc, "cmd_list", fails_half_way)
    assert main(["models", "list"]) == 1
    assert terminal.getvalue().startswith("\r[") and terminal.getvalue().endswith("\n")
    assert assert_one_line_error(capsys.readouterr().err) == "clinicalai: error: case 3 cannot be written"
    # a finished bar ends its own line; nothing more is written after it
    done = io.StringIO()
    bar = ConsoleProgress(stream=done, force=True)
    bar(1.0, "done")
    monkeypatch.setattr(mc, "cmd_list", lambda args: 0)
    assert main(["models", "list"]) == 0
    assert done.getvalue().count("\n") == 1


def test_progress_off_a_terminal_is_a_plain_line_now_and_then(monkeypatch):
    """A long command whose stderr goes to a log file (``make models``) says where it is once a
    minute; a short one writes nothing, and no carriage return reaches the file."""
    import io

    import clinicalai.progress as progress_module
    from clinicalai.progress import ConsoleProgress

    clock = {"now": 1000.0}
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock["now"])
    log = io.StringIO()
    bar = ConsoleProgress(stream=log)
    assert not bar.enabled
    bar(0.0, "preparing")
    clock["now"] += 59.0
    bar(0.1, "epoch 8/80")
    assert log.getvalue() == ""  # under a minute: silent
    clock["now"] += 2.0
    bar(0.125, "epoch 10/80: loss 0.210")
    clock["now"] += 30.0
    bar(0.2, "epoch 16/80")  # within a minute of the last line
    clock["now"] += 60.0
    bar(0.25, "epoch 20/80")
    bar(1.0, "done")  # the command prints its own result
    assert log.getvalue() == "[ 12.5%] epoch 10/80: loss 0.210\n[ 25.0%] epoch 20/80\n"
    quiet = io.StringIO()
    silent = ConsoleProgress(stream=quiet, log_every=None)
    clock["now"] += 600.0
    silent(0.5, "half")
    assert quiet.getvalue() == ""
