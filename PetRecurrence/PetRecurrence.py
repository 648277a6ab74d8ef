"""PetRecurrence: P(recurrence) vs treatment-related change from an 18F-FDOPA brain PET with an
ensemble of fold models, static uptake figures, and a Grad-CAM map over the PET. All MRML
logic lives in ``clinicalai.mrml.pet_logic``; this file is the panel."""

import dataclasses
import os
import sys
from typing import Annotated, Union

import qt
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_ROOT, "clinicalai")) and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from clinicalai import desktop  # noqa: E402
from clinicalai.desktop import PanelWidgetMixin  # noqa: E402
from clinicalai.mrml import model_choices  # noqa: E402
from clinicalai.mrml.context import MRMLContext  # noqa: E402
from clinicalai.mrml.runner import BackgroundRun  # noqa: E402
from clinicalai.mrml.pet_logic import PetRecurrenceLogic as PetRecurrenceMRMLLogic  # noqa: E402
from clinicalai.mrml.pet_logic import PetRecurrenceParameters, typed_decay_fields  # noqa: E402

# no default: "" is what the file says (DICOM, BIDS sidecar); a NIfTI without one needs a choice
UNITS = [("From the file (DICOM / BIDS sidecar)", ""), ("Bq/mL", "bqml"), ("SUV (values already SUVbw)", "suv")]
#: the typed SUV inputs: (line edit, PetRecurrenceParameters field, key of known_from_file)
DECAY_FIELDS = (("weightLineEdit", "weight_kg"), ("doseLineEdit", "injected_mbq"),
                ("injectionTimeLineEdit", "injection_time"), ("scanTimeLineEdit", "scan_time"))


class PetRecurrence(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "PetRecurrence"
        self.parent.categories = ["ClinicalAI"]
        self.parent.dependencies = []
        self.parent.contributors = ["ClinicalAI contributors"]
        self.parent.helpText = (
            "Probability of glioma recurrence vs treatment-related change from an 18F-FDOPA brain PET "
            "(DICOM or NIfTI) with an ensemble of fold models, SUVmax / TBRmax / TBRmean, and a "
            "Grad-CAM heat map over the PET. See docs/slicer.md."
        )
        self.parent.acknowledgementText = "Bundled demo models are trained on synthetic phantoms: not for clinical use."


@parameterNodeWrapper
class PetRecurrenceParameterNode:
    """GUI state; the run's state (models, outputs, result) is PetRecurrenceParameters in the same node."""

    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    lesion: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    computeCam: bool = True
    camOpacity: Annotated[float, WithinRange(0, 1)] = 0.5
    camThreshold: Annotated[float, WithinRange(0, 1)] = PetRecurrenceParameters.cam_threshold  # Grad-CAM x P(recurrence)


class PetRecurrenceWidget(PanelWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    #: mask choosers: the masks on the input volume's grid only (PanelWidgetMixin.restrictMaskSelectors)
    maskSelectors = ("brainMaskSelector", "lesionSelector")

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PetRecurrence.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._runner = desktop.PanelRunner("PetRecurrence", self.ui, on_finished=self._checkCanApply)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PetRecurrenceLogic()

        for label, value in UNITS:
            self.ui.unitsComboBox.addItem(label, value)
        self.ui.modelsComboBox.addItem("Bundled fold models (synthetic demo)", "")
        self.ui.modelsComboBox.addItem("Model files below...", "files")
        desktop.fill_device_combo(self.ui.deviceComboBox)

        self.observeSceneClose()
        self.observeMasks(lambda f: qt.QTimer.singleShot(0, f))
        self.ui.modelsComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.modelsPathLineEdit.connect("currentPathChanged(QString)", self.onModelChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.camOpacitySlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.camThresholdSlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.show3DButton.connect("clicked(bool)", self.onShow3D)
        self.ui.goToLesionButton.connect("clicked(bool)", self.onGoToLesion)
        self.ui.unitsComboBox.connect("currentIndexChanged(int)", self.onUptakeInputsChanged)
        for edit, _ in DECAY_FIELDS:
            getattr(self.ui, edit).connect("textChanged(QString)", self.onUptakeInputsChanged)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False
        self.initializeParameterNode()
        self._restoreRunChoices()
        self.onModelChanged()
        self.onUptakeInputsChanged()

    def _restoreRunChoices(self):
        """Units, fold models and device of the last run, saved with the scene (the engine's parameters)."""
        stored = self.logic.core.get_parameters()
        desktop.select_data(self.ui.unitsComboBox, stored.units)
        desktop.select_data(self.ui.deviceComboBox, stored.device)
        for edit, name in DECAY_FIELDS:
            value = getattr(stored, name)
            getattr(self.ui, edit).text = "" if value in (None, "") else f"{value:g}" if isinstance(value, float) else str(value)
        if stored.models:
            self.ui.modelsComboBox.currentIndex = self.ui.modelsComboBox.findData("files")
            self.ui.modelsPathLineEdit.currentPath = stored.models[0]

    def _modelPaths(self):
        if self.ui.modelsComboBox.currentData != "files":
            return []
        # several fold models: the folder of the chosen file, every *fold*.json / .pt / .onnx beside it
        chosen = self.ui.modelsPathLineEdit.currentPath
        if not chosen:
            return []
        folder = os.path.dirname(chosen)
        stem = os.path.basename(chosen).split("fold")[0]
        cards = sorted(f for f in os.listdir(folder) if f.startswith(stem) and "fold" in f and f.endswith(".json"))
        return [os.path.join(folder, f) for f in cards] or [model_choices.model_path_from_choice(chosen)]

    def onModelChanged(self, *_):
        self.ui.modelsPathLineEdit.enabled = self.ui.modelsComboBox.currentData == "files"
        paths = self._modelPaths()
        if not paths:
            try:
                from clinicalai.mrml.pet_logic import bundled_pet_models

                paths = bundled_pet_models()
            except Exception as exc:
                self.ui.cardLabel.text = desktop.error_html(exc)
                return
        try:
            text = desktop.card_html(model_choices.describe_model(paths[0]))
            self.ui.cardLabel.text = f"{len(paths)} fold model(s)<br>{text}"
        except Exception as exc:
            self.ui.cardLabel.text = desktop.error_html(exc)

    # ------------------------------------------------------------------ units and SUV inputs
    def _typedFields(self):
        """The typed weight, dose and times as parameters (checked: raises InputError)."""
        return typed_decay_fields(*(getattr(self.ui, edit).text for edit, _ in DECAY_FIELDS))

    def onInputVolumeChanged(self, node=None):
        """Another PET: the typed values were the previous patient's; show what its file says."""
        known = {}
        if node is not None:
            try:
                known = self.logic.core.known_from_file(node.GetID())
            except Exception as exc:  # an unreadable sidecar: said in the uptake line
                known = {"error": str(exc)}
        for edit, name in DECAY_FIELDS:
            getattr(self.ui, edit).text = ""
            # what the file says shows greyed in the empty field
            getattr(self.ui, edit).placeholderText = known.get(name) or ("hh:mm" if name.endswith("time") else "")
        self.ui.resultLabel.text = "No result yet."
        self.onUptakeInputsChanged()

    def onUptakeInputsChanged(self, *_):
        """The line above Apply: SUVbw (formula and values), Bq/mL and why, or what is wrong."""
        node = self._parameterNode.inputVolume if self._parameterNode else None
        if node is None:
            self.ui.uptakeLabel.text = ""
            return
        try:
            typed = self._typedFields()
            conversion = self.logic.core.uptake(PetRecurrenceParameters(
                input_volume=node.GetID(), units=self.ui.unitsComboBox.currentData or "",
                weight_kg=typed["weight_kg"], injected_mbq=typed["injected_mbq"],
                injection_time=typed["injection_time"], scan_time=typed["scan_time"]))
            self.ui.uptakeLabel.text = f"Uptake shown as: {conversion.description}"
        except Exception as exc:
            self.ui.uptakeLabel.text = desktop.error_html(exc)

    # ------------------------------------------------------------------ run
    def _engineParameters(self):
        p = self._parameterNode
        typed = self._typedFields()
        return PetRecurrenceParameters(
            input_volume=p.inputVolume.GetID() if p.inputVolume else None,
            brain_mask=p.brainMask.GetID() if p.brainMask else None,
            lesion=p.lesion.GetID() if p.lesion else None,
            units=self.ui.unitsComboBox.currentData or "",
            weight_kg=typed["weight_kg"],
            injected_mbq=typed["injected_mbq"],
            injection_time=typed["injection_time"],
            scan_time=typed["scan_time"],
            static_window=self.ui.staticWindowLineEdit.text.strip(),
            models=self._modelPaths(),
            device=self.ui.deviceComboBox.currentData or "auto",
            compute_cam=bool(p.computeCam),
            cam_opacity=float(p.camOpacity),
            cam_threshold=float(p.camThreshold),
        )

    def onApplyButton(self):
        if not ensureDependencies():
            return
        self.ui.resultLabel.text = "No result yet."  # a failed run leaves no earlier result on screen
        with slicer.util.tryWithErrorDisplay("PetRecurrence could not start.", waitCursor=True):
            # asks first when the input does not fit the model (OK: the run with confirmed_fit);
            # rerun after the user trusts a TorchScript model file, with the same answer
            makeRun = lambda confirmed: BackgroundRun(  # noqa: E731
                self.logic.core, dataclasses.replace(self._engineParameters(), confirmed_fit=confirmed))
            self._runner.start_checked(makeRun, self._onRunDone, qt.QTimer())

    def _onRunDone(self, run):
        self._showLastResult()

    # ------------------------------------------------------------------ result and display
    def _showLastResult(self):
        params = self.logic.core.get_parameters()
        s = params.summary or {}
        if not s:
            self.ui.resultLabel.text = "No result yet."
            self.ui.show3DButton.enabled = False
            self.ui.goToLesionButton.enabled = False
            return
        lines = [f"<b>P(recurrence) = {s['probability']:.2f}</b> &mdash; {s['label']}"]
        if s.get("uptake"):
            lines.append(f"Uptake: {s['uptake']}")
        if s.get("spread") is not None:
            lines.append(f"Spread across folds: {s['spread']}")
        static = s.get("static") or {}
        if static:
            lines.append(", ".join(f"{k} {v:.2f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in static.items()))
        voi = slicer.mrmlScene.GetNodeByID(params.lesion_voi) if params.lesion_voi else None
        if voi is not None:
            lines.append(f"Lesion VOI found (1.6 x background): {voi.GetName()}")
        lines += desktop.warning_lines(s.get("warnings"))
        self.ui.resultLabel.text = "<br>".join(lines)
        self.ui.show3DButton.enabled = bool(params.cam_volume)
        self.ui.goToLesionButton.enabled = bool(self.logic.core.lesion_node_id(params))

    def onDisplayChanged(self, *_):
        if not self.logic.core.get_parameters().cam_volume:
            return
        with slicer.util.tryWithErrorDisplay("Could not change the Grad-CAM display."):
            self.logic.core.set_cam_display(opacity=self.ui.camOpacitySlider.value, threshold=self.ui.camThresholdSlider.value)

    def onGoToLesion(self):
        """Centre the slice views on the chosen lesion VOI, else on the one the run found."""
        chosen = self._parameterNode.lesion if self._parameterNode else None
        with slicer.util.tryWithErrorDisplay("Could not go to the lesion VOI."):
            self.logic.core.jump_to_lesion(chosen.GetID() if chosen else None)

    def onShow3D(self):
        from clinicalai.mrml.display import show_volume_rendering

        params = self.logic.core.get_parameters()
        node = slicer.mrmlScene.GetNodeByID(params.cam_volume) if params.cam_volume else None
        if node is not None:
            with slicer.util.tryWithErrorDisplay("Could not show the map in 3D."):
                show_volume_rendering(slicer.modules.volumerendering.logic(), node)


def ensureDependencies():
    """First-use offer to install torch (PyTorch extension) and the other packages."""
    from clinicalai.mrml.dependencies import ensure_dependencies

    return ensure_dependencies()


class PetRecurrenceLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer logic over ``clinicalai.mrml.pet_logic.PetRecurrenceLogic`` (``self.core``)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = PetRecurrenceMRMLLogic(MRMLContext.from_slicer())

    def getParameterNode(self):
        return PetRecurrenceParameterNode(super().getParameterNode())

    def run(self, parameters, progress=None, cancel=None):
        """Predict; ``parameters`` is a ``PetRecurrenceParameters``."""
        return self.core.run(parameters, progress=progress, cancel=cancel)


class PetRecurrenceTest(ScriptedLoadableModuleTest):
    """The whole workflow on a PET phantom (run from the Reload & Test button or ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PetRecurrenceWorkflow()

    def test_PetRecurrenceWorkflow(self):
        import numpy as np

        from clinicalai.mrml.segmentations import add_segmentation_node
        from clinicalai.mrml.volumes import add_volume_node, node_to_volume
        from clinicalai.phantoms.pet import pet_case

        self.delayDisplay("PetRecurrence on a PET phantom")
        case = pet_case(0, recurrence=True)  # a lesion the 1.6 x background threshold finds
        pet = add_volume_node(slicer.mrmlScene, case.suv, "pet")  # a node keeps no DICOM tags: give SUV
        brain = add_segmentation_node(slicer.mrmlScene, case.brain_mask, "brain", [{"name": "brain", "value": 1}])
        params = PetRecurrenceLogic().run(
            PetRecurrenceParameters(input_volume=pet.GetID(), brain_mask=brain.GetID(), units="suv", device="cpu")
        )
        self.assertTrue(0.0 <= params.summary["probability"] <= 1.0)
        cam = slicer.mrmlScene.GetNodeByID(params.cam_volume)
        self.assertTrue(node_to_volume(cam).same_grid(case.image, atol=1e-4))
        self.assertTrue(np.isfinite(node_to_volume(cam).array).all())
        self.assertEqual(cam.GetDisplayNode().GetColorNode().GetName(), "ClinicalAI Heat")
        # no VOI given: the one found by the 1.6 x background threshold is a new segmentation
        voi = slicer.mrmlScene.GetNodeByID(params.lesion_voi)
        self.assertEqual(voi.GetName(), "pet lesion VOI")
        self.assertEqual(voi.GetSegmentation().GetNthSegment(0).GetName(), "lesion")
        PetRecurrenceLogic().core.jump_to_lesion()
        self.delayDisplay("Test passed")
