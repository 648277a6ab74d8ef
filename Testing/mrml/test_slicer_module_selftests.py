"""Run each module's own ScriptedLoadableModuleTest (the test Slicer runs with "Reload and
Test") on slicer-core: the Qt-only parts of Slicer's scripted-module API are replaced by
minimal stand-ins, everything MRML is real; small test model packages stand in for the
bundled demo models (except the cardiac segmenter)."""

import importlib.util
import sys
import types
import unittest
from pathlib import Path

import pytest
from slicer_stand_ins import stand_in_modules

ROOT = Path(__file__).resolve().parents[2]


def _load(module):
    spec = importlib.util.spec_from_file_location(f"clinicalai_selftest_{module}", ROOT / module / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _use_small_models(module, monkeypatch, classifier, pet_models, corrector_model):
    """The self-tests use the bundled models; here the small test packages stand in for all
    but the bundled segmenter, so the run time does not depend on which demo models are
    installed (those are tested by their own areas)."""
    from clinicalai.models import BUNDLED_MODELS_DIR

    if module == "SegCorrect":
        if not (BUNDLED_MODELS_DIR / "cardiac-unet.json").is_file():
            pytest.skip("bundled cardiac-unet not installed (make models)")
        from clinicalai.mrml import segcorrect_logic

        original = segcorrect_logic.chosen_model_path
        monkeypatch.setattr(segcorrect_logic, "chosen_model_path",
                            lambda path, default: Path(corrector_model) if default == "cardiac-nvae" and not path else original(path, default))
    elif module == "PetRecurrence":
        pytest.importorskip("clinicalai.pet.workflow")
        from clinicalai.mrml import pet_logic

        monkeypatch.setattr(pet_logic, "bundled_pet_models", lambda: list(pet_models))
    else:
        from clinicalai.mrml import model_choices

        monkeypatch.setattr(model_choices, "bundled_models", lambda task=None: [{"name": "tiny", "path": classifier, "task": task, "synthetic_demo": True}])


@pytest.fixture
def stand_ins(monkeypatch, slicer_context):
    from clinicalai.mrml.headless import create_headless_context, install_slicer_stand_ins

    for name, mod in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    fresh = create_headless_context()  # the self-tests clear the scene: give them their own
    yield fresh
    install_slicer_stand_ins(slicer_context)


@pytest.mark.parametrize("module", ["SegCorrect", "PetRecurrence", "AttributionViewer"])
def test_module_imports_and_describes_itself(stand_ins, module):
    mod = _load(module)
    parent = types.SimpleNamespace()
    getattr(mod, module)(parent)
    assert parent.title == module and parent.categories == ["ClinicalAI"] and "not for clinical use" in parent.acknowledgementText
    logic = getattr(mod, f"{module}Logic")()
    assert logic.core.scene is stand_ins.scene  # the thin logic drives clinicalai.mrml on Slicer's scene


@pytest.mark.parametrize("module", ["SegCorrect", "PetRecurrence", "AttributionViewer"])
def test_module_self_test_passes(stand_ins, module, monkeypatch, classifier, pet_models, corrector_model):
    _use_small_models(module, monkeypatch, classifier, pet_models, corrector_model)
    mod = _load(module)
    result = unittest.TextTestRunner(verbosity=0).run(getattr(mod, f"{module}Test")())
    assert result.wasSuccessful(), [str(e) for _, e in result.errors + result.failures]
