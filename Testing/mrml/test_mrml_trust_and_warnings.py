"""Desktop panels and the files users bring (issues 13 and 15), below the widgets on a real
MRML scene:

- a TorchScript model nobody trusted yet: the panel runner asks once (name, file, sha256, "code
  that will run"), on yes records the trust by sha256 in the user model folder and runs; on no
  nothing in the scene changes and the engine's error is reported; a changed file asks again;
- the browser app never offers that (it has no trust path at all);
- the input warnings of a run (reader, model fit) in the SegCorrect and AttributionViewer
  widgets, as the PetRecurrence widget shows its own.
"""

from __future__ import annotations

import json
import threading
import types
from pathlib import Path

import pytest
from test_slicer_module_selftests import _load, stand_ins  # noqa: F401 - the Qt stand-ins fixture

from clinicalai import desktop
from clinicalai.mrml.runner import BackgroundRun
from slicer_stand_ins import PanelTimer as _Timer, panel_ui as _panel_ui
from clinicalai.mrml.volumes import add_volume_node

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_models(tmp_path, monkeypatch) -> Path:
    """A temporary user model folder (``$CLINICALAI_MODELS``): where the trust store lives."""
    from clinicalai.models.registry import USER_MODELS_ENV

    folder = tmp_path / "user-models"
    monkeypatch.setenv(USER_MODELS_ENV, str(folder))
    return folder


def _torchscript_classifier(folder: Path, seed: int, out: Path) -> Path:
    """A tiny MONAI classifier (weights from ``seed``) exported as TorchScript to ``out`` (+ its
    card): what a user who trained their own model brings."""
    import torch
    from monai.networks.nets import Classifier

    from clinicalai.models import load_model, save_model
    from clinicalai.models.export import export_model

    torch.manual_seed(seed)
    kwargs = {"in_shape": [1, 12, 16, 16], "classes": 2, "channels": [4, 8], "strides": [2, 2]}
    card = {
        "name": "my-scripted-classifier", "task": "classification", "format": "state_dict",
        "architecture": {"name": "monai.networks.nets.Classifier", "kwargs": kwargs},
        "input": {"channels": 1, "spacing_mm": [4, 4, 4], "size": [16, 16, 12], "normalization": {"kind": "minmax"}},
        "classes": ["healthy", "lesion"], "synthetic_demo": True, "intended_use": "tests",
    }
    state_dict = save_model(Classifier(**kwargs), card, folder / f"seed{seed}.pt")
    export_model(load_model(state_dict, device="cpu"), "torchscript", out)
    return out


def _run_to_end(timer, limit_s: float = 120.0):
    for _ in range(int(limit_s / 0.01)):
        if timer.tick():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the run never ended")


class _Panel:
    """The AttributionViewer panel's Apply as the desktop widget does it (runner + rerun), with
    the trust question answered by the test."""

    def __init__(self, ctx, answers):
        from clinicalai.mrml.attribution_logic import AttributionViewerLogic

        self.core = AttributionViewerLogic(ctx)  # one logic (and model cache) for every Apply, as in Slicer
        self.questions, self.errors, self.done, self.answers = [], [], [], list(answers)
        self.ui = _panel_ui()
        self.runner = desktop.PanelRunner("AttributionViewer", self.ui, confirm=self._confirm,
                                        show_error=lambda message, details: self.errors.append(message))

    def _confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answers.pop(0)

    def apply(self, params) -> None:
        make_run = lambda: BackgroundRun(self.core, params)  # noqa: E731
        timer = _Timer()
        self.runner.start(make_run(), self.done.append, timer, rerun=make_run)
        _run_to_end(timer)


@pytest.fixture
def brain_node(ctx):
    from clinicalai.phantoms.brain import brain_case

    return add_volume_node(ctx.scene, brain_case(3, shape=(24, 32, 32), pathological=True).image, "brain")


def _params(image_node, model: Path):
    from clinicalai.mrml.attribution_logic import AttributionViewerParameters

    return AttributionViewerParameters(input_volume=image_node.GetID(), model=str(model), methods=["gradient"], device="cpu")


def _trusted(folder: Path) -> dict:
    from clinicalai.models.registry import TRUST_FILE

    path = folder / TRUST_FILE
    return json.loads(path.read_text())["trusted"] if path.exists() else {}


def test_untrusted_torchscript_asks_once_then_runs_and_a_changed_file_asks_again(ctx, brain_node, user_models, tmp_path, node_ids):
    from clinicalai.models import sha256_of

    model = _torchscript_classifier(tmp_path, 0, tmp_path / "mine.pt")
    digest = sha256_of(model)
    panel = _Panel(ctx, answers=[True])
    before = node_ids(ctx.scene)

    panel.apply(_params(brain_node, model))
    (question,) = panel.questions
    assert "my-scripted-classifier" in question and digest in question and str(model) in question
    assert "contains code that will run when it is loaded" in question
    assert panel.errors == [] and len(panel.done) == 1 and panel.ui.statusLabel.text == "Done."
    assert _trusted(user_models)[digest]["name"] == "my-scripted-classifier"
    maps = panel.done[0].params.maps
    assert len(maps) == 1 and ctx.scene.GetNodeByID(maps[0]).GetName() == "brain - Gradient"
    assert panel.ui.applyButton.enabled and not panel.ui.cancelButton.enabled

    # one click away from now on: the same file runs without a question
    panel.apply(_params(brain_node, model))
    assert len(panel.questions) == 1 and len(panel.done) == 2 and panel.errors == []

    # the file is replaced (re-trained, or tampered with): asked again, and "no" changes nothing
    _torchscript_classifier(tmp_path, 1, model)
    assert sha256_of(model) != digest
    panel.answers = [False]
    after_runs = node_ids(ctx.scene)
    panel.apply(_params(brain_node, model))
    assert len(panel.questions) == 2 and sha256_of(model) in panel.questions[1]
    assert node_ids(ctx.scene) == after_runs and len(panel.done) == 2
    assert panel.ui.statusLabel.text == "Failed; nothing was changed." and "is not trusted" in panel.errors[0]
    assert list(_trusted(user_models)) == [digest]
    assert [i for i in node_ids(ctx.scene) if i not in before]  # the two runs' maps are still there


def test_declining_trust_changes_nothing_and_reports_the_error(ctx, brain_node, user_models, tmp_path, node_ids):
    model = _torchscript_classifier(tmp_path, 0, tmp_path / "mine.pt")
    panel = _Panel(ctx, answers=[False])
    panel.core.parameter_node()  # the module's state node exists from the panel's start
    before = node_ids(ctx.scene)
    params_before = panel.core.get_parameters()

    panel.apply(_params(brain_node, model))
    assert len(panel.questions) == 1 and panel.done == []
    (message,) = panel.errors
    assert "TorchScript, which is code" in message and "\n" not in message
    assert node_ids(ctx.scene) == before and panel.core.get_parameters() == params_before
    assert _trusted(user_models) == {} and not user_models.exists(), "nothing recorded, not even the folder"
    assert panel.ui.statusLabel.text == "Failed; nothing was changed." and panel.ui.applyButton.enabled


def test_trusted_models_and_state_dicts_are_never_asked_about(ctx, brain_node, user_models, classifier):
    panel = _Panel(ctx, answers=[])
    panel.apply(_params(brain_node, Path(classifier)))  # a state dict holds no code
    assert panel.questions == [] and panel.errors == [] and len(panel.done) == 1


def test_a_runner_without_rerun_reports_untrusted_models_without_asking(ctx, brain_node, user_models, tmp_path):
    """Only a panel that can run again asks (the randomised-model check and Apply pass ``rerun``)."""
    model = _torchscript_classifier(tmp_path, 0, tmp_path / "mine.pt")
    panel = _Panel(ctx, answers=[True])
    timer = _Timer()
    panel.runner.start(BackgroundRun(panel.core, _params(brain_node, model)), panel.done.append, timer)
    _run_to_end(timer)
    assert panel.questions == [] and "is not trusted" in panel.errors[0] and _trusted(user_models) == {}


def test_the_browser_app_has_no_way_to_trust_code():
    """Trusting a code-bearing file is a desktop (and CLI) decision: the web app loads only the
    server's models, so nothing in it records trust, allows code or asks."""
    for path in sorted((ROOT / "clinicalai" / "web").rglob("*.py")):
        source = path.read_text()
        for word in ("record_trust", "trust_model", "trust_code", "PanelRunner", "trust_question"):
            assert word not in source, f"{path.relative_to(ROOT)} uses {word}"


def test_three_widgets_pass_rerun_so_a_trusted_file_is_one_click_away():
    """Every run starts through PanelRunner.start_checked, which passes ``rerun`` (and asks
    about an input that does not fit the model)."""
    for module in ("SegCorrect", "PetRecurrence", "AttributionViewer"):
        source = (ROOT / module / f"{module}.py").read_text()
        assert "start_checked(makeRun" in source and "confirmed_fit=confirmed" in source and "import qt" in source, module
        assert "_runner.start(" not in source, module
    assert "start_checked(makeTask" in (ROOT / "AttributionViewer" / "AttributionViewer.py").read_text()


# ----------------------------------------------------------------------------- warnings in the desktop panels
def test_warning_lines_are_red_and_escaped():
    (line,) = desktop.warning_lines(["the image is CT but model <b>x</b> was made for MR"])
    assert "color:#c00" in line and "&lt;b&gt;x&lt;/b&gt;" in line and "<b>" not in line
    assert desktop.warning_lines(None) == [] and desktop.warning_lines([]) == []


def _widget(module: str):
    """The module's Widget without Qt (its constructor and setup need Qt): a logic of the
    module and a ``ui`` of plain objects, enough for ``_showLastResult``."""
    mod = _load(module)
    widget = object.__new__(getattr(mod, f"{module}Widget"))
    widget.logic = getattr(mod, f"{module}Logic")()
    plain = lambda **kw: types.SimpleNamespace(**{"enabled": True, "text": "", **kw})  # noqa: E731
    view = lambda: types.SimpleNamespace(table=None, setMRMLTableNode=lambda node: None)  # noqa: E731
    items = []  # the review combo box's entries (SegCorrect: raw / corrected / final)
    combo = plain(items=items, blockSignals=lambda block: False, clear=items.clear,
                  addItem=lambda text, data: items.append(data))
    widget.ui = types.SimpleNamespace(
        warningsLabel=plain(), legendLabel=plain(), predictionLabel=plain(), sliceTableView=view(), metricsTableView=view(), correlationTableView=view(),
        layerComboBox=combo,
        **{name: plain() for name in ("acceptSliceButton", "rejectSliceButton", "acceptAllButton", "rejectAllButton", "editButton", "nextBestButton")},
    )
    return widget


@pytest.mark.parametrize("module", ["SegCorrect", "AttributionViewer"])
def test_desktop_widgets_show_the_last_runs_input_warnings(module, stand_ins):
    widget = _widget(module)
    core = widget.logic.core
    warning = "the image is CT but model cardiac-unet was made for MR"
    params = core.get_parameters()
    if module == "SegCorrect":
        params.warnings = [warning, "slice positions vary by up to 1.4 % of the spacing"]
    else:
        params.summary = {"warnings": [warning], "prediction": {"classes": ["healthy", "lesion"], "probabilities": [0.2, 0.8]}}
    core.set_parameters(params)
    widget._showLastResult()
    assert warning in widget.ui.warningsLabel.text and "color:#c00" in widget.ui.warningsLabel.text
    if module == "SegCorrect":
        assert widget.ui.warningsLabel.text.count("<br>") == 1
    else:  # the classifier's prediction, in words (issue 16 item 4, desktop)
        assert widget.ui.predictionLabel.text == "Prediction: lesion (P = 0.800)"
    # a run without warnings (or none yet) shows none
    params.warnings, params.summary = [], {}
    core.set_parameters(params)
    widget._showLastResult()
    assert widget.ui.warningsLabel.text == "" and widget.ui.predictionLabel.text == ""
