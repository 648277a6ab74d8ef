"""What the three panels call below their widgets: model chooser and card, device selector,
first-use installation (never on import), error messages, table rows behind a table view,
the side-by-side map layout and the background randomised-model check."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from clinicalai.errors import Cancelled, InputError
from clinicalai import desktop
from clinicalai.mrml import model_choices, runner
from clinicalai.mrml.tables import add_table_node, table_row_of_view_row, table_rows
from clinicalai.mrml.volumes import add_volume_node
from clinicalai.progress import check_cancel
from slicer_stand_ins import PanelTimer as _Timer, panel_ui as _panel_ui

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SegCorrect", "PetRecurrence", "AttributionViewer")


# ----------------------------------------------------------------------------- model chooser
def test_bundled_models_of_a_task_start_on_the_default_and_show_the_demo_warning():
    from clinicalai.models import BUNDLED_MODELS_DIR

    if not (BUNDLED_MODELS_DIR / "cardiac-nvae.json").is_file():
        pytest.skip("bundled models not installed (make models)")
    correctors = model_choices.bundled_models("mask-correction", "cardiac-nvae")
    assert correctors and all(m["task"] == "mask-correction" for m in correctors)
    assert correctors[0]["name"] == "cardiac-nvae"
    summary = model_choices.describe_model(correctors[0]["path"])
    assert summary["task"] == "mask-correction" and summary["labels"] == ["RV", "MYO", "LV"]
    assert summary["synthetic_demo"] and "not for clinical use" in summary["warning"]
    text = desktop.card_html(summary)
    assert text.startswith("<b style='color:#c00'>Synthetic demo model")  # the warning first, in red
    assert "Labels: RV, MYO, LV" in text and "mask-correction" in text


def test_card_html_escapes_and_omits_the_warning_for_real_models():
    summary = {"name": "net <v2>", "version": "1.0", "task": "classification", "labels": [], "classes": ["a&b", "c"],
               "intended_use": "research", "synthetic_demo": False, "warning": ""}
    text = desktop.card_html(summary)
    assert "color:#c00" not in text and "net &lt;v2&gt;" in text and "Classes: a&amp;b, c" in text


def _tiny_bundle(root: Path) -> Path:
    """A MONAI bundle folder: configs/metadata.json + inference.json, models/model.pt."""
    import torch
    from monai.networks.nets import UNet

    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0}
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    meta = {
        "name": "Tiny heart bundle", "version": "0.1.0", "task": "Cardiac MRI segmentation", "description": "test",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": 1,
                                 "spatial_shape": [32, 32], "dtype": "float32"}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3, "spatial_shape": [32, 32],
                                 "channel_def": {"0": "background", "1": "RV", "2": "LV"}}},
        },
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "UNet", **kwargs}}))
    torch.manual_seed(0)
    torch.save(UNet(**kwargs).state_dict(), root / "models" / "model.pt")
    return root


def test_file_dialog_choice_of_a_monai_bundle_shows_its_card(tmp_path):
    folder = _tiny_bundle(tmp_path / "heart")
    # the file dialog returns the bundle's metadata.json: the chooser uses the folder
    assert model_choices.model_path_from_choice(str(folder / "configs" / "metadata.json")) == str(folder)
    assert model_choices.model_path_from_choice(str(tmp_path / "net.pt")) == str(tmp_path / "net.pt")
    summary = model_choices.describe_model(model_choices.model_path_from_choice(str(folder / "configs" / "metadata.json")))
    assert summary["name"] == "Tiny heart bundle" and summary["task"] == "segmentation"
    assert summary["labels"] == ["RV", "LV"] and not summary["synthetic_demo"]


# ----------------------------------------------------------------------------- device selector
def test_device_choices_match_this_machine():
    import torch

    values = [d["value"] for d in model_choices.device_choices()]
    assert values[0] == "auto" and values[-1] == "cpu"
    assert ("cuda" in values) == torch.cuda.is_available()


def test_device_choices_show_the_gpu_name_and_free_memory(monkeypatch):
    """No GPU on the test machine: the hardware query gives what torch reports on one."""
    import clinicalai.models

    monkeypatch.setattr(clinicalai.models, "device_summary",
                        lambda: {"cuda": True, "name": "NVIDIA H200", "free_bytes": 130 * 2**30 + 2**29, "total_bytes": 141 * 2**30})
    choices = {d["value"]: d["label"] for d in model_choices.device_choices()}
    assert list(choices) == ["auto", "cuda", "cpu"]
    assert choices["cuda"] == "CUDA: NVIDIA H200, 130.5 GiB free"
    assert "NVIDIA H200" in choices["auto"]


# ----------------------------------------------------------------------------- first use
class _Dialogs:
    """Records what the first-use check asks and installs (stands in for the Qt dialogs)."""

    def __init__(self, answer):
        self.answer = answer
        self.asked, self.installed, self.errors = [], [], []

    def install(self, monkeypatch):
        import slicer.util

        monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: self.asked.append(text) or self.answer)
        monkeypatch.setattr(slicer.util, "pip_install", lambda requirements, *a, **k: self.installed.append(requirements))
        monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: self.errors.append(text))
        return self


def test_missing_packages_are_installed_only_after_confirmation(monkeypatch):
    from clinicalai.mrml import dependencies

    monkeypatch.setattr(dependencies, "PIP_PACKAGES", (("json", "json"), ("clinicalai_no_such_module", "no-such-package>=1")))
    declined = _Dialogs(False).install(monkeypatch)
    assert dependencies.ensure_dependencies() is False
    assert len(declined.asked) == 1 and "no-such-package>=1" in declined.asked[0] and declined.installed == []

    accepted = _Dialogs(True).install(monkeypatch)
    assert dependencies.ensure_dependencies() is True
    assert accepted.installed == [["no-such-package>=1"]]  # one list: each requirement one pip argument


def test_torch_comes_from_the_pytorch_extension(monkeypatch):
    from clinicalai.mrml import dependencies

    monkeypatch.setattr(dependencies, "PIP_PACKAGES", ())
    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed: import fails
    dialogs = _Dialogs(True).install(monkeypatch)
    assert dependencies.ensure_dependencies() is False
    assert dialogs.errors and "'PyTorch' extension" in dialogs.errors[0] and dialogs.installed == []

    calls = []

    class PyTorchUtilsLogic:
        @staticmethod
        def torchInstalled():  # noqa: N802 - the extension's names
            return False

        def installTorch(self, askConfirmation=False, torchVersionRequirement=None):  # noqa: N802, N803
            calls.append((askConfirmation, torchVersionRequirement))
            return types.ModuleType("torch")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    declined = _Dialogs(False).install(monkeypatch)
    assert dependencies.ensure_dependencies() is False and calls == [] and len(declined.asked) == 1
    _Dialogs(True).install(monkeypatch)
    assert dependencies.ensure_dependencies() is True
    assert calls == [(False, ">=2.0")]  # our dialog asked; PyTorchUtils picks the CUDA build


_FRESH_SLICER = textwrap.dedent(
    """
    import importlib.abc, importlib.util, sys
    ENGINE = {"torch", "monai", "pydantic", "scipy", "skimage", "sklearn", "captum", "onnxruntime", "pydicom"}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ENGINE:
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NotInstalled())
    sys.path.insert(0, ROOT)
    from clinicalai.mrml.headless import create_headless_context
    import slicer, slicer.util

    create_headless_context()
    asked = []
    slicer.util.pip_install = lambda *a, **k: asked.append("pip")
    slicer.util.confirmOkCancelDisplay = lambda *a, **k: asked.append("confirm")
    sys.path.insert(0, HERE)
    from slicer_stand_ins import stand_in_modules
    sys.modules.update(stand_in_modules())
    from clinicalai.mrml import model_choices as logic
    for name in MODULES:
        spec = importlib.util.spec_from_file_location(name, f"{ROOT}/{name}/{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        getattr(module, name + "Logic")()
    assert [d["value"] for d in logic.device_choices()] == ["auto", "cpu"], logic.device_choices()
    assert logic.bundled_models() == []
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ENGINE)
    print("OK", asked, loaded)
    """
)


def test_modules_load_in_a_fresh_slicer_and_install_nothing_on_import():
    """Without torch, monai, pydantic, scipy, ... (a fresh Slicer) the three module files
    import and their logics start; nothing is asked or installed on import."""
    pytest.importorskip("slicer")
    code = f"ROOT = {str(ROOT)!r}\nHERE = {str(Path(__file__).parent)!r}\nMODULES = {MODULES!r}\n" + _FRESH_SLICER
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "OK [] []"


# ----------------------------------------------------------------------------- errors
def test_error_report_keeps_engine_messages_and_gives_the_traceback():
    try:
        raise InputError("the PET volume is not 3D")
    except InputError as exc:
        message, details = desktop.error_report(exc)
    assert message == "the PET volume is not 3D"
    assert "Traceback" in details and "InputError: the PET volume is not 3D" in details
    try:
        {}["missing"]
    except KeyError as exc:
        message, details = desktop.error_report(exc)
    assert message == "Unexpected error: KeyError: 'missing'" and "KeyError" in details


# ----------------------------------------------------------------------------- table views
def test_table_view_rows_map_to_table_rows(ctx):
    rows = [{"slice": k, "decision": "kept raw"} for k in range(4)]
    node = add_table_node(ctx.scene, rows, "slices")
    assert node.GetUseColumnTitleAsColumnHeader() and node.GetLocked()  # names are the headers; read-only
    assert [table_row_of_view_row(node, r) for r in range(5)] == [0, 1, 2, 3, None]
    # a table made elsewhere shows its column names as an extra first row
    other = ctx.scene.AddNewNodeByClass("vtkMRMLTableNode", "from a file")
    other.SetUseColumnTitleAsColumnHeader(False)
    other.GetTable().DeepCopy(node.GetTable())
    assert [table_row_of_view_row(other, r) for r in range(5)] == [None, 0, 1, 2, 3]


def test_segcorrect_slice_table_is_a_header_table(ctx):
    from clinicalai.mrml.segcorrect_logic import SegCorrectInputs, SegCorrectLogic, SegCorrectOutcome, SegCorrectParameters
    from clinicalai.phantoms.cardiac import cardiac_case, cardiac_segments
    from clinicalai.segcorrect.pipeline import SliceDecision

    case = cardiac_case(1, size=(32, 32), n_slices=3)
    image = add_volume_node(ctx.scene, case.image, "heart")
    slices = [SliceDecision(index=k, valid_before=True, valid_after=True, criteria_before={}, criteria_after={},
                            dice_raw_vs_corrected=1.0, decision="kept raw", reason="test") for k in range(3)]
    outcome = SegCorrectOutcome(case.labels, case.labels, case.labels, slices, cardiac_segments())
    params = SegCorrectLogic(ctx).finish(SegCorrectParameters(input_volume=image.GetID()), SegCorrectInputs(image_node=image, image=case.image), outcome)
    table = ctx.scene.GetNodeByID(params.slice_table)
    # clicking view row 2 is slice 2 (no column-name row in front)
    assert table_rows(table)[table_row_of_view_row(table, 2)]["slice"] == 2


# ----------------------------------------------------------------------------- side by side
def test_maps_go_side_by_side_into_linked_views(ctx, oblique_volume):
    from clinicalai.mrml.attribution_logic import show_side_by_side
    from clinicalai.mrml.display import SIDE_BY_SIDE_LAYOUT_ID, add_heatmap_node

    layout = ctx.scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    red = ctx.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    red.SetLayoutName("Red")
    views = []
    for i in (1, 2):  # what Slicer's layout manager makes for the new layout's views
        c = ctx.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        c.SetLayoutName(f"ClinicalAIMap{i}")
        views.append(c)
    image = add_volume_node(ctx.scene, oblique_volume, "image")
    maps = [add_heatmap_node(ctx.scene, oblique_volume, f"map {i}", signed=True) for i in (1, 2)]
    assert show_side_by_side(ctx.scene, image, maps) == 2
    assert layout.GetViewArrangement() == SIDE_BY_SIDE_LAYOUT_ID + 2
    description = ET.fromstring(layout.GetCurrentLayoutDescription())
    tags = [v.get("singletontag") for v in description.iter("view")]
    assert tags == ["ClinicalAIMap1", "ClinicalAIMap2"]
    assert {p.text for p in description.iter("property") if p.get("name") == "viewgroup"} == {"1"}  # linked
    for view, node in zip(views, maps):
        assert (view.GetBackgroundVolumeID(), view.GetForegroundVolumeID()) == (image.GetID(), node.GetID())
        assert view.GetLinkedControl()
    assert red.GetForegroundVolumeID() is None  # the user's views are left alone
    ctx.scene.RemoveNode(layout)


# ----------------------------------------------------------------------------- background work
def test_randomization_check_runs_in_the_background_and_cancel_adds_no_node(ctx, classifier, node_ids):
    from clinicalai.mrml.attribution_logic import AttributionViewerLogic, AttributionViewerParameters
    from clinicalai.phantoms.brain import brain_case

    brain = brain_case(3, shape=(24, 32, 32), pathological=True)
    image = add_volume_node(ctx.scene, brain.image, "brain")
    core = AttributionViewerLogic(ctx)
    inputs = core.prepare(AttributionViewerParameters(input_volume=image.GetID(), model=classifier, methods=["gradient"], device="cpu"))

    def task():
        return runner.BackgroundTask(
            lambda progress, cancel: core.randomization_rows(inputs, progress=progress, cancel=cancel),
            lambda rows: core.add_randomization_table(inputs.image_node, rows),
            scene=ctx.scene,
        )

    core.parameter_node()  # the module's own state node exists from the panel's start
    before = node_ids(ctx.scene)
    cancelled = task()
    cancelled.cancel()
    while not cancelled.poll(wait=0.05):
        pass
    assert isinstance(cancelled.error, Cancelled) and cancelled.result is None
    assert node_ids(ctx.scene) == before

    done = task()
    while not done.poll(wait=0.05):
        pass
    assert done.error is None and done.fraction == pytest.approx(1.0)
    assert done.result.GetName() == "brain gradient randomisation check"
    assert table_rows(done.result)[0]["method"] == "gradient"
    assert [i for i in node_ids(ctx.scene) if i not in before] == [done.result.GetID()]


def test_a_failing_apply_step_removes_what_it_added(ctx, node_ids):
    before = node_ids(ctx.scene)

    def apply(value):
        ctx.scene.AddNewNodeByClass("vtkMRMLTableNode", "half made")
        raise InputError("bad result")

    task = runner.BackgroundTask(lambda progress, cancel: 1, apply, scene=ctx.scene)
    while not task.poll(wait=0.05):
        pass
    assert isinstance(task.error, InputError) and node_ids(ctx.scene) == before


def _run_to_end(timer):
    for _ in range(400):
        if timer.tick():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the task never ended")


def test_panel_runner_follows_a_task_to_its_result_and_re_enables_the_panel():
    ui, timer, done, finished = _panel_ui(), _Timer(), [], []
    panel_runner = desktop.PanelRunner("Demo", ui, busy_widgets=("randomizationButton",), on_finished=lambda: finished.append(1))
    release = threading.Event()

    def work(progress, cancel):
        progress(0.4, "segmenting")
        release.wait(10)
        return 7

    task = runner.BackgroundTask(work, lambda value: value * 6)
    panel_runner.start(task, done.append, timer)
    assert timer.calls[:3] == [("interval", 100), ("connect", "timeout()"), ("start",)]
    assert panel_runner.running and not ui.applyButton.enabled and not ui.randomizationButton.enabled
    assert ui.cancelButton.enabled and ui.progressBar.visible
    while task.fraction < 0.4:
        threading.Event().wait(0.01)
    assert timer.tick() is False  # still working: the bar and the status line follow it
    assert (ui.progressBar.value, ui.statusLabel.text) == (40, "segmenting")
    second = runner.BackgroundTask(lambda progress, cancel: cancel.wait(10) or check_cancel(cancel), lambda value: value)
    with pytest.raises(InputError, match="already running"):
        panel_runner.start(second, done.append, _Timer())
    assert second.poll(wait=5) and isinstance(second.error, Cancelled)  # the refused task does not run on
    release.set()
    _run_to_end(timer)
    assert done == [task] and task.result == 42 and finished == [1]
    assert timer.calls[-1] == ("stop",) and not panel_runner.running
    assert ui.applyButton.enabled and ui.randomizationButton.enabled and not ui.cancelButton.enabled and not ui.progressBar.visible
    assert ui.statusLabel.text == "Done."


@pytest.mark.parametrize("outcome", ["cancel", "engine error", "unexpected error"])
def test_panel_runner_reports_cancel_and_failures_and_applies_nothing(outcome, ctx, node_ids):
    ui, timer, done, errors = _panel_ui(), _Timer(), [], []
    panel_runner = desktop.PanelRunner("Demo", ui, show_error=lambda message, details: errors.append((message, details)))
    before = node_ids(ctx.scene)

    def work(progress, cancel):
        if outcome == "engine error":
            raise InputError("the volume has no spacing")
        if outcome == "unexpected error":
            raise ZeroDivisionError("division by zero")
        cancel.wait(10)
        check_cancel(cancel)

    def apply(value):
        return ctx.scene.AddNewNodeByClass("vtkMRMLTableNode", "result")

    panel_runner.start(runner.BackgroundTask(work, apply, scene=ctx.scene), done.append, timer)
    if outcome == "cancel":
        panel_runner.cancel()
        assert ui.statusLabel.text == "Cancelling..."
    _run_to_end(timer)
    assert done == [] and node_ids(ctx.scene) == before and ui.applyButton.enabled and not ui.cancelButton.enabled
    if outcome == "cancel":
        assert ui.statusLabel.text == "Cancelled; nothing was changed." and errors == []
    else:
        assert ui.statusLabel.text == "Failed; nothing was changed."
        (message, details), = errors
        expected = "the volume has no spacing" if outcome == "engine error" else "Unexpected error: ZeroDivisionError: division by zero"
        assert message == expected and "Traceback" in details


class _ParameterNodeWrapper:
    """As much of a ``parameterNodeWrapper`` object as the panel mixin uses (slicer-core lacks
    Qt and the wrapper), over a real scripted-module node: its ``inputVolume`` is a node
    reference and its events are the node's."""

    def __init__(self, node):
        self.parameterNode, self.gui = node, []

    @property
    def inputVolume(self):  # noqa: N802 - Slicer's names
        return self.parameterNode.GetNodeReference("inputVolume")

    @inputVolume.setter
    def inputVolume(self, volume):  # noqa: N802
        self.parameterNode.SetNodeReferenceID("inputVolume", volume.GetID() if volume else None)

    def connectGui(self, ui):  # noqa: N802
        self.gui.append(ui)
        return len(self.gui)

    def disconnectGui(self, tag):  # noqa: N802
        self.gui[tag - 1] = None

    def AddObserver(self, event, method, priority=0.0):  # noqa: N802
        return self.parameterNode.AddObserver(event, method, priority)

    def RemoveObserver(self, tag):  # noqa: N802
        self.parameterNode.RemoveObserver(tag)


def test_panel_widget_mixin_keeps_apply_in_step_with_the_parameter_node_and_the_scene(ctx):
    import slicer
    from slicer.util import VTKObservationMixin

    from clinicalai.mrml.headless import install_slicer_stand_ins
    from clinicalai.desktop import PanelWidgetMixin
    from clinicalai.mrml.parameters import get_parameter_node
    from clinicalai.phantoms.brain import brain_case

    install_slicer_stand_ins(ctx)  # slicer.mrmlScene is this scene
    node = get_parameter_node(ctx.scene, "MixinDemo")
    node.RemoveNodeReferenceIDs("inputVolume")

    class Widget(PanelWidgetMixin, VTKObservationMixin):
        applyToolTips = ("Run it", "Select an input volume")

        def __init__(self):
            VTKObservationMixin.__init__(self)
            self.parent = types.SimpleNamespace(isEntered=True)
            self.ui = _panel_ui()
            self.logic = types.SimpleNamespace(getParameterNode=lambda: _ParameterNodeWrapper(node))
            self._runner = desktop.PanelRunner("MixinDemo", self.ui, on_finished=self._checkCanApply)
            self.shown = 0
            self.observeSceneClose()

        def _showLastResult(self):
            self.shown += 1

    widget = Widget()
    widget.initializeParameterNode()  # an empty scene: nothing to run on
    assert widget.shown == 1 and not widget.ui.applyButton.enabled and widget.ui.applyButton.toolTip == "Select an input volume"
    volume = add_volume_node(ctx.scene, brain_case(0, shape=(8, 16, 16)).image, "brain")
    widget._parameterNode.inputVolume = volume  # the volume selector: a node event re-checks Apply
    assert widget.ui.applyButton.enabled and widget.ui.applyButton.toolTip == "Run it"
    widget.exit()
    widget._parameterNode.inputVolume = None
    assert widget.ui.applyButton.enabled, "left the module: its parameter node is no longer followed"
    widget.enter()  # entering again: the first volume of the scene becomes the input
    assert widget._parameterNode.inputVolume.GetID() == volume.GetID() and widget.ui.applyButton.enabled and widget.shown == 2
    # a run keeps Apply off until it is over; Cancel stops it
    timer = _Timer()
    widget._runner.start(runner.BackgroundTask(lambda progress, cancel: cancel.wait(10) or check_cancel(cancel), lambda v: v), list.append, timer)
    node.Modified()
    assert not widget.ui.applyButton.enabled
    widget.onCancelButton()
    _run_to_end(timer)
    assert widget.ui.applyButton.enabled and widget.ui.statusLabel.text == "Cancelled; nothing was changed."
    # closing the scene lets go of the parameter node (and its GUI connection)
    wrapper = widget._parameterNode
    slicer.mrmlScene.InvokeEvent(slicer.mrmlScene.StartCloseEvent)
    assert widget._parameterNode is None and wrapper.gui == [None]
    widget.cleanup()
    assert not widget.ui.cancelButton.enabled


def test_the_three_widgets_share_the_panel_mixin_and_runner():
    """One Apply / Cancel / progress cycle and one parameter-node lifecycle for all panels."""
    for module in MODULES:
        source = (ROOT / module / f"{module}.py").read_text()
        assert f"class {module}Widget(PanelWidgetMixin, " in source and "desktop.PanelRunner(" in source, module
        assert "qt.QTimer()" in source and "_onTimer" not in source and "def setParameterNode" not in source, module


# ----------------------------------------------------------------------------- the panel's check boxes
def test_attribution_panel_lists_every_engine_method_and_the_anomaly_map():
    import ast

    from clinicalai.attribution import METHOD_NAMES

    tree = ast.parse((ROOT / "AttributionViewer" / "AttributionViewer.py").read_text())
    consts = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body if isinstance(node, ast.Assign)
        for t in node.targets if isinstance(t, ast.Name) and t.id in ("METHOD_CHECKBOXES", "ANOMALY_CHECKBOX")
    }
    assert list(consts["METHOD_CHECKBOXES"]) == list(METHOD_NAMES)
    root = ET.parse(ROOT / "AttributionViewer" / "Resources" / "UI" / "AttributionViewer.ui").getroot()
    (grid,) = [layout for layout in root.iter("layout") if layout.get("name") == "methodsLayout"]
    boxes = {w.get("name"): w for w in grid.iter("widget") if w.get("class") == "QCheckBox"}
    text = lambda w: w.find("property[@name='text']/string").text  # noqa: E731
    for method, name in consts["METHOD_CHECKBOXES"].items():
        assert text(boxes[name]) == method
    anomaly = boxes[consts["ANOMALY_CHECKBOX"]]  # in the same grid as the methods
    assert text(anomaly) == "anomaly (generative)"
    assert anomaly.find("property[@name='SlicerParameterName']/string").text == "anomalyMap"
    assert set(boxes) == set(consts["METHOD_CHECKBOXES"].values()) | {consts["ANOMALY_CHECKBOX"]}


def test_attribution_panels_offer_the_engine_baselines():
    """Desktop and browser offer the same integrated-gradients baselines (and anomaly-map
    polarities), from one list: the
    card's default ("") and the engine's names; the desktop combo is in the .ui with its label."""
    import ast

    from clinicalai.attribution.methods import BASELINES

    entries = model_choices.baseline_choices()
    assert [e["value"] for e in entries] == ["", *BASELINES] and "card" in entries[0]["label"]
    root = ET.parse(ROOT / "AttributionViewer" / "Resources" / "UI" / "AttributionViewer.ui").getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    assert widgets["baselineComboBox"] == "QComboBox" and widgets["baselineLabel"] == "QLabel"
    widget_source = (ROOT / "AttributionViewer" / "AttributionViewer.py").read_text()
    calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(widget_source)) if isinstance(n, ast.Call)}
    assert "model_choices.baseline_choices" in calls  # the combo is filled from the shared list
    web_source = (ROOT / "clinicalai" / "web" / "panels" / "attribution.py").read_text()
    assert "baseline_choices()" in web_source and 'self.choice("baseline", "baselines"' in web_source
    # the anomaly map's polarity, the same way: the card's default ("") and the engine's names
    from clinicalai.generative.nets import POLARITIES

    assert [e["value"] for e in model_choices.polarity_choices()] == ["", *POLARITIES]
    assert widgets["anomalyPolarityComboBox"] == "QComboBox" and widgets["anomalyPolarityLabel"] == "QLabel"
    assert "model_choices.polarity_choices" in calls
    assert "polarity_choices()" in web_source and 'self.choice("anomaly_polarity", "polarities"' in web_source


# ----------------------------------------------------------------------------- layering
def _top_level_imports(path: Path):
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_only_the_mrml_layer_and_the_guis_import_slicer_vtk_or_qt():
    """The engine never imports Slicer, VTK or Qt; clinicalai.mrml imports Slicer / VTK but
    never Qt (it runs on slicer-core and in the browser app too)."""
    slicer_side = {"slicer", "vtk", "vtkmodules", "qt", "ctk", "trame_slicer", "MRMLCorePython"}
    qt_side = {"qt", "ctk", "PythonQt"}
    package = ROOT / "clinicalai"
    checked = 0
    for path in sorted(package.rglob("*.py")):
        area = path.relative_to(package).parts[0]
        imported = _top_level_imports(path)
        if area in ("web", "desktop"):  # the browser GUI; the desktop panels' helpers (module folders only)
            continue
        forbidden = qt_side if area == "mrml" else slicer_side
        assert not imported & forbidden, f"{path.relative_to(ROOT)} imports {sorted(imported & forbidden)}"
        checked += 1
    assert checked > 20


def test_model_chooser_is_put_back_on_the_saved_model(tmp_path):
    """The panels restore the model of the last run: its bundled entry, or the file entry with
    the path in the file chooser (a plain combo-like object stands in for QComboBox here)."""
    from clinicalai.desktop import MODEL_FILE_ITEM, select_model_choice
    from clinicalai.mrml.model_choices import bundled_models

    class Combo:
        def __init__(self, items):
            self.items, self.currentIndex = items, 0

        def findData(self, data):
            return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

        def findText(self, text):
            return next((i for i, (t, _) in enumerate(self.items) if t == text), -1)

    class PathEdit:
        currentPath = ""

    entries = bundled_models("segmentation")
    combo = Combo([(e["name"], e["path"]) for e in entries] + [(MODEL_FILE_ITEM, "")])
    edit = PathEdit()
    select_model_choice(combo, edit, entries[-1]["path"])
    assert combo.currentIndex == len(entries) - 1 and edit.currentPath == ""
    select_model_choice(combo, edit, str(tmp_path / "mine.pt"))
    assert combo.currentIndex == len(entries) and edit.currentPath == str(tmp_path / "mine.pt")
    select_model_choice(combo, edit, "")  # the default: left as it is
    assert combo.currentIndex == len(entries)


def test_classifier_chooser_puts_models_of_the_image_modality_first_and_marks_the_others():
    """Issue 16 item 6: the classifier list offered PET fold models for a brain MR."""
    from clinicalai.mrml.model_choices import bundled_models, model_title

    entries = bundled_models("classification", modality="MR")
    fits = [e["fits"] for e in entries]
    assert fits == sorted(fits, reverse=True)  # every fitting model before every other
    pet = [e for e in entries if e["modality"] == "PT"]
    assert pet and all(not e["fits"] and model_title(e).endswith("(PT model)") for e in pet)
    assert all(e["fits"] for e in bundled_models("classification"))  # no image modality: no marks
