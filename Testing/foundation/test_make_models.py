"""`make models`: one documented command per bundled model, run as a parallel make graph.

The graph is read from GNU make's dry run (``make -n``), so nothing is trained here; what is
checked is that every bundled model file has a recipe that writes it, that the two
cardiac-unet stages stay in order, and that every training runs on one torch thread (two jobs
share the 2 cores of the reference machine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "Resources" / "Models"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _dry_run(*args: str) -> list:
    """The recipe lines `make -n models` would run (recursive make is dry-run too)."""
    # not the flags of a make that runs this suite (`make test`): this is a make of its own
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(["make", "-n", "--no-print-directory", "models", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _training_lines(lines: list) -> list:
    return [line for line in lines if "clinicalai train " in line or "-m clinicalai." in line]


def _writes(line: str, stem: str) -> bool:
    """Whether a recipe line writes the bundled model ``stem``.pt."""
    if f"-o Resources/Models/{stem}.pt" in line or re.search(rf"--only {re.escape(stem)}\b", line):
        return True
    return stem.startswith("pet-cnn3d-fold") and "clinicalai.pet.train_demo" in line


def test_every_bundled_model_has_one_recipe_on_one_thread():
    lines = _training_lines(_dry_run())
    stems = sorted(p.stem for p in MODELS.glob("*.pt"))
    assert len(stems) >= 10
    for stem in stems:
        writers = [line for line in lines if _writes(line, stem)]
        assert len(writers) == 1, (stem, writers)
        assert writers[0].startswith("OMP_NUM_THREADS=1 "), writers[0]
    # every training line writes some bundled model (no orphan step) and runs on one thread
    for line in lines:
        assert any(_writes(line, stem) for stem in stems) or "build/cardiac-unet-stage1.pt" in line, line
        assert "OMP_NUM_THREADS=1" in line


def test_cardiac_unet_stages_in_order_and_jobs_configurable():
    lines = _dry_run("MODEL_JOBS=1")
    stage1 = next(i for i, line in enumerate(lines) if "-o build/cardiac-unet-stage1.pt" in line)
    stage2 = next(i for i, line in enumerate(lines) if "--init build/cardiac-unet-stage1.pt" in line)
    assert stage1 < stage2
    assert any(" -j1 " in line for line in lines)
    assert any(" -j2 " in line for line in _dry_run())  # the default: two jobs on 2 cores


def test_generative_recipes_are_the_demo_table():
    """The per-model generative targets name exactly the models train_demo knows."""
    from clinicalai.generative.train_demo import DEMOS

    only = {m.group(1) for line in _dry_run() for m in [re.search(r"train_demo --only (\S+)", line)] if m}
    assert only == set(DEMOS)
    for stem in DEMOS:  # and each is bundled, with a card saying it was trained by that command
        card = json.loads((MODELS / f"{stem}.json").read_text())
        assert card["training"]["command"].startswith("clinicalai train generative ")


def test_heldout_figures_are_rewritten_after_each_training():
    """Every bundled card that carries held-out figures gets them again from `make models`, by
    the command the card records, after the training that rewrites the card (a retrained
    card would otherwise lose them)."""
    lines = _dry_run("MODEL_JOBS=1")
    stems = sorted(p.stem for p in MODELS.glob("*.pt"))
    carrying = [s for s in stems if "heldout" in json.loads((MODELS / f"{s}.json").read_text())]
    assert {"cardiac-unet", "brain-lesion-classifier", "brain-ae-anomaly", "pet-cnn3d-fold0"} <= set(carrying)
    for stem in carrying:
        command = json.loads((MODELS / f"{stem}.json").read_text())["heldout"]["command"]
        args = command.split(" ", 1)[1]  # without the program: the recipe runs the venv's
        trained = next(i for i, line in enumerate(lines) if _writes(line, stem))
        rewrites = [i for i, line in enumerate(lines) if args in line]
        assert rewrites and min(rewrites) > trained, (stem, command)


def test_cardiac_unet_recipe_is_the_cards_and_has_no_wall_clock_stop_in_stage_1():
    """The card's reproduce commands are the Makefile's two stages, and stage 1 stops by its
    epoch count, not by a time limit (a time limit made the recipe machine-dependent: on an idle
    machine it ran 80 epochs where the bundled model's stage 1 got 25)."""
    lines = _dry_run("MODEL_JOBS=1")
    reproduce = json.loads((MODELS / "cardiac-unet.json").read_text())["training"]["reproduce"]
    stage1 = next(line for line in lines if "-o build/cardiac-unet-stage1.pt" in line)
    stage2 = next(line for line in lines if "--init build/cardiac-unet-stage1.pt" in line)
    assert "--max-minutes" not in stage1 and "--epochs 25 " in stage1
    for command, line in zip(reproduce, (stage1, stage2)):
        assert line.endswith(command.split(" ", 1)[1]), (command, line)
