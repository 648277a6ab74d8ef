"""AttributionViewer: explain a classifier on a volume with several attribution methods side
by side, compare with a generative model's anomaly map, turn a map into a segmentation and
score it against a manual lesion. All MRML logic lives in
``clinicalai.mrml.attribution_logic``; this file is the panel."""

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
from clinicalai.mrml.attribution_logic import AttributionViewerLogic as AttributionViewerMRMLLogic  # noqa: E402
from clinicalai.mrml.attribution_logic import AttributionViewerParameters, prediction_text  # noqa: E402
from clinicalai.mrml.context import MRMLContext  # noqa: E402
from clinicalai.mrml.runner import BackgroundRun, BackgroundTask  # noqa: E402
#: attribution method (engine name, ``clinicalai.attribution.METHODS``) -> its check box in the .ui
METHOD_CHECKBOXES = {
    "gradient": "methodGradientCheckBox",
    "gradient-x-input": "methodGradientXInputCheckBox",
    "integrated-gradients": "methodIntegratedGradientsCheckBox",
    "expected-gradients": "methodExpectedGradientsCheckBox",
    "smoothgrad": "methodSmoothgradCheckBox",
    "guided-backprop": "methodGuidedBackpropCheckBox",
    "gradcam": "methodGradcamCheckBox",
    "gradcam++": "methodGradcamPlusplusCheckBox",
    "occlusion": "methodOcclusionCheckBox",
}
#: the check box listed with the methods for the generative model's anomaly map
ANOMALY_CHECKBOX = "methodAnomalyCheckBox"


class AttributionViewer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "AttributionViewer"
        self.parent.categories = ["ClinicalAI"]
        self.parent.dependencies = []
        self.parent.contributors = ["ClinicalAI contributors"]
        self.parent.helpText = (
            "Explain any classifier on any volume with several attribution methods side by side, "
            "compare with the anomaly map of a generative model trained on healthy anatomy, turn a "
            "map into a weak lesion segmentation and score it against a manual one. See docs/slicer.md."
        )
        self.parent.acknowledgementText = "Bundled demo models are trained on synthetic phantoms: not for clinical use."


@parameterNodeWrapper
class AttributionViewerParameterNode:
    """GUI state; the run's state (models, methods, outputs) is AttributionViewerParameters in the same node."""

    inputVolume: vtkMRMLScalarVolumeNode
    lesion: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    threshold: Annotated[float, WithinRange(0.05, 1)] = 0.5
    #: "anomaly (generative)", listed with the attribution methods
    anomalyMap: bool = False


class AttributionViewerWidget(PanelWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    #: mask choosers: the masks on the input volume's grid only (PanelWidgetMixin.restrictMaskSelectors)
    maskSelectors = ("lesionSelector",)

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AttributionViewer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._runner = desktop.PanelRunner(
            "AttributionViewer", self.ui, busy_widgets=("randomizationButton",), on_finished=self._checkCanApply
        )
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AttributionViewerLogic()
        self.methodCheckBoxes = {method: getattr(self.ui, name) for method, name in METHOD_CHECKBOXES.items()}
        self._showMethods(AttributionViewerParameters().methods)

        desktop.fill_model_combo(self.ui.modelComboBox, "classification")
        desktop.fill_model_combo(self.ui.anomalyModelComboBox, "anomaly-detection")
        desktop.fill_device_combo(self.ui.deviceComboBox)
        for entry in model_choices.baseline_choices():
            self.ui.baselineComboBox.addItem(entry["label"], entry["value"])
        for entry in model_choices.polarity_choices():
            self.ui.anomalyPolarityComboBox.addItem(entry["label"], entry["value"])

        self.observeSceneClose()
        self.observeMasks(lambda f: qt.QTimer.singleShot(0, f))
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelChanged)
        self.ui.anomalyModelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.anomalyModelPathLineEdit.connect("currentPathChanged(QString)", self.onModelChanged)
        self.ui.methodAnomalyCheckBox.connect("toggled(bool)", self.onModelChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.thresholdButton.connect("clicked(bool)", self.onThresholdButton)
        self.ui.randomizationButton.connect("clicked(bool)", self.onRandomizationButton)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False
        self.initializeParameterNode()
        self._restoreRunChoices()
        self.onModelChanged()

    # ------------------------------------------------------------------ models
    def _anomalyPath(self):
        """The generative model's path, "" unless "anomaly (generative)" is checked."""
        if not self.ui.methodAnomalyCheckBox.checked:
            return ""
        return desktop.combo_model_path(self.ui.anomalyModelComboBox, self.ui.anomalyModelPathLineEdit)

    def _showMethods(self, methods):
        for method, box in self.methodCheckBoxes.items():
            box.checked = method in methods

    def onModelChanged(self, *_):
        anomaly = self.ui.methodAnomalyCheckBox.checked
        self.ui.modelPathLineEdit.enabled = self.ui.modelComboBox.currentText == desktop.MODEL_FILE_ITEM
        self.ui.anomalyModelComboBox.enabled = anomaly
        self.ui.anomalyModelPathLineEdit.enabled = anomaly and self.ui.anomalyModelComboBox.currentText == desktop.MODEL_FILE_ITEM
        target = self.ui.targetComboBox.currentData
        self.ui.targetComboBox.clear()
        self.ui.targetComboBox.addItem("Predicted class", -1)
        texts = []
        for path, isClassifier in ((desktop.combo_model_path(self.ui.modelComboBox, self.ui.modelPathLineEdit), True),
                                   (self._anomalyPath(), False)):
            if not path:
                continue
            try:
                summary = model_choices.describe_model(path)
            except Exception as exc:  # shown, not raised, while browsing
                texts.append(desktop.error_html(exc))
                continue
            texts.append(desktop.card_html(summary))
            if isClassifier:
                for index, name in enumerate(summary["classes"]):
                    self.ui.targetComboBox.addItem(f"{index}: {name}", index)
        self.ui.cardLabel.text = "<hr>".join(texts) or "No model chosen."
        index = self.ui.targetComboBox.findData(target) if target is not None else -1
        if index >= 0:  # the same class index stays chosen (e.g. after toggling the anomaly map)
            self.ui.targetComboBox.currentIndex = index

    # ------------------------------------------------------------------ parameter node
    def _restoreRunChoices(self):
        """Methods, models and device of the last run, saved with the scene (the engine's parameters)."""
        stored = self.logic.core.get_parameters()
        self._showMethods(stored.methods)
        desktop.select_model_choice(self.ui.modelComboBox, self.ui.modelPathLineEdit, stored.model)
        desktop.select_model_choice(self.ui.anomalyModelComboBox, self.ui.anomalyModelPathLineEdit, stored.anomaly_model)
        desktop.select_data(self.ui.deviceComboBox, stored.device)
        desktop.select_data(self.ui.baselineComboBox, stored.baseline)
        desktop.select_data(self.ui.anomalyPolarityComboBox, stored.anomaly_polarity)

    # ------------------------------------------------------------------ run
    def _engineParameters(self):
        from clinicalai.errors import InputError

        p = self._parameterNode
        anomalyModel = self._anomalyPath()
        if p.anomalyMap and not anomalyModel:
            raise InputError("'anomaly (generative)' is checked: choose its generative model")
        return AttributionViewerParameters(
            input_volume=p.inputVolume.GetID() if p.inputVolume else None,
            model=desktop.combo_model_path(self.ui.modelComboBox, self.ui.modelPathLineEdit),
            anomaly_model=anomalyModel,
            anomaly_polarity=self.ui.anomalyPolarityComboBox.currentData or "",
            target=int(self.ui.targetComboBox.currentData if self.ui.targetComboBox.currentData is not None else -1),
            methods=[m for m, box in self.methodCheckBoxes.items() if box.checked],
            baseline=self.ui.baselineComboBox.currentData or "",
            lesion=p.lesion.GetID() if p.lesion else None,
            threshold=float(p.threshold),
            device=self.ui.deviceComboBox.currentData or "auto",
        )

    def onApplyButton(self):
        if not ensureDependencies():
            return
        self.ui.warningsLabel.text = ""  # the last run's warnings are not this run's
        with slicer.util.tryWithErrorDisplay("AttributionViewer could not start.", waitCursor=True):
            # asks first when the input does not fit the model (OK: the run with confirmed_fit);
            # rerun after the user trusts a TorchScript model file, with the same answer
            makeRun = lambda confirmed: BackgroundRun(  # noqa: E731
                self.logic.core, dataclasses.replace(self._engineParameters(), confirmed_fit=confirmed))
            self._runner.start_checked(makeRun, self._onMapsMade, qt.QTimer())

    def _onMapsMade(self, run):
        self.ui.statusLabel.text = f"{len(run.params.maps)} map(s) made."
        if run.params.maps:
            self.ui.mapSelector.setCurrentNodeID(run.params.maps[0])
        self._showLastResult()

    # ------------------------------------------------------------------ maps
    def _showLastResult(self):
        params = self.logic.core.get_parameters()
        node = lambda node_id: slicer.mrmlScene.GetNodeByID(node_id) if node_id else None  # noqa: E731
        self.ui.metricsTableView.setMRMLTableNode(node(params.metrics_table))
        self.ui.correlationTableView.setMRMLTableNode(node(params.correlation_table))
        prediction = prediction_text(params.summary or {})
        self.ui.predictionLabel.text = f"Prediction: {prediction}" if prediction else ""
        # input warnings (reader, an image the classifier was not made for)
        self.ui.warningsLabel.text = "<br>".join(desktop.warning_lines((params.summary or {}).get("warnings")))

    def onThresholdButton(self):
        mapNode = self.ui.mapSelector.currentNode()
        if mapNode is None:
            slicer.util.warningDisplay("Choose a map first.")
            return
        with slicer.util.tryWithErrorDisplay("Could not threshold the map.", waitCursor=True):
            self.logic.core.threshold_to_segmentation(mapNode.GetID(), self.ui.thresholdSlider.value)

    def onRandomizationButton(self):
        """The randomised-model sanity check in the background (progress, Cancel), its table
        added on the main thread."""
        if self._runner.running or not ensureDependencies():
            return
        core = self.logic.core

        def makeTask(confirmed):
            inputs = core.prepare(dataclasses.replace(self._engineParameters(), confirmed_fit=confirmed))
            return BackgroundTask(
                lambda progress, cancel: core.randomization_rows(inputs, progress=progress, cancel=cancel),
                lambda rows: core.add_randomization_table(inputs.image_node, rows),
                name="ClinicalAI randomised-model check",
            )

        with slicer.util.tryWithErrorDisplay("The randomised-model check could not start.", waitCursor=True):
            # asks first when the input does not fit the model; reruns after a trust question
            self._runner.start_checked(makeTask, self._onRandomizationDone, qt.QTimer())

    def _onRandomizationDone(self, task):
        self.ui.statusLabel.text = "Randomised-model check done."
        self.ui.metricsTableView.setMRMLTableNode(task.result)


def ensureDependencies():
    """First-use offer to install torch (PyTorch extension) and the other packages."""
    from clinicalai.mrml.dependencies import ensure_dependencies

    return ensure_dependencies()


class AttributionViewerLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer logic over ``clinicalai.mrml.attribution_logic.AttributionViewerLogic`` (``self.core``)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = AttributionViewerMRMLLogic(MRMLContext.from_slicer())

    def getParameterNode(self):
        return AttributionViewerParameterNode(super().getParameterNode())

    def run(self, parameters, progress=None, cancel=None):
        """Make the maps; ``parameters`` is an ``AttributionViewerParameters``."""
        return self.core.run(parameters, progress=progress, cancel=cancel)


class AttributionViewerTest(ScriptedLoadableModuleTest):
    """The whole workflow on a brain-lesion phantom (run from the Reload & Test button or ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AttributionViewerWorkflow()

    def test_AttributionViewerWorkflow(self):
        import numpy as np

        from clinicalai.mrml.segmentations import add_segmentation_node
        from clinicalai.mrml.volumes import add_volume_node, node_to_volume
        from clinicalai.phantoms.brain import brain_case

        self.delayDisplay("AttributionViewer on a brain phantom")
        case = brain_case(1, pathological=True)
        image = add_volume_node(slicer.mrmlScene, case.image, "brain")
        lesion = add_segmentation_node(slicer.mrmlScene, case.lesion, "lesion", [{"name": "lesion", "value": 1}])
        models = model_choices.bundled_models("classification")
        self.assertTrue(models, "no bundled classifier")
        logic = AttributionViewerLogic()
        params = logic.run(
            AttributionViewerParameters(
                input_volume=image.GetID(), model=models[0]["path"], methods=["gradient", "gradcam"],
                lesion=lesion.GetID(), device="cpu",
            )
        )
        self.assertEqual(len(params.maps), 2)
        for node_id in params.maps:
            self.assertTrue(node_to_volume(slicer.mrmlScene.GetNodeByID(node_id)).same_grid(case.image, atol=1e-4))
        self.assertIsNotNone(params.metrics_table)
        segmentation = logic.core.threshold_to_segmentation(params.maps[0], 0.5)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertTrue(np.isfinite(node_to_volume(slicer.mrmlScene.GetNodeByID(params.maps[1])).array).all())
        self.delayDisplay("Test passed")
