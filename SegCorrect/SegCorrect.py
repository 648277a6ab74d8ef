"""SegCorrect: segment a cardiac MRI (RV / MYO / LV), correct the mask with an NVAE, review
the correction slice by slice. All MRML logic lives in ``clinicalai.mrml.segcorrect_logic``;
this file is the panel."""

import dataclasses
import os
import sys
from typing import Union

import qt
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# the clinicalai package sits beside the module folders (source tree) or in the scripted
# modules' lib folder (built extension)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_ROOT, "clinicalai")) and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from clinicalai import desktop  # noqa: E402
from clinicalai.desktop import PanelWidgetMixin  # noqa: E402
from clinicalai.mrml import model_choices  # noqa: E402
from clinicalai.mrml.context import MRMLContext  # noqa: E402
from clinicalai.mrml.runner import BackgroundRun  # noqa: E402
from clinicalai.mrml.segcorrect_logic import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER, REVIEW_LAYERS, STRATEGY_TITLES  # noqa: E402
from clinicalai.mrml.segcorrect_logic import SegCorrectLogic as SegCorrectMRMLLogic  # noqa: E402
from clinicalai.mrml.segcorrect_logic import SegCorrectParameters  # noqa: E402

class SegCorrect(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegCorrect"
        self.parent.categories = ["ClinicalAI"]
        self.parent.dependencies = []
        self.parent.contributors = ["ClinicalAI contributors"]
        self.parent.helpText = (
            "Segment a short-axis cardiac MRI (RV, MYO, LV) with a MONAI U-Net, correct the mask "
            "with an NVAE, and accept or reject the correction slice by slice. A mask made by any "
            "tool can be corrected too (Input segmentation). See docs/slicer.md."
        )
        self.parent.acknowledgementText = "Bundled demo models are trained on synthetic phantoms: not for clinical use."


@parameterNodeWrapper
class SegCorrectParameterNode:
    """The GUI's view of the module's parameter node. Its node references are the very ones
    of SegCorrectParameters (the logic's state: models, outputs, decisions), stored once."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    outputSegmentation: vtkMRMLSegmentationNode
    correct: bool = True


class SegCorrectWidget(PanelWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    applyToolTips = ("Segment and correct", "Select an input volume")
    #: the mask to correct: label maps and segmentations on the input volume's grid only
    #: (PanelWidgetMixin.restrictMaskSelectors)
    maskSelectors = ("inputSegmentationSelector",)

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegCorrect.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._runner = desktop.PanelRunner("SegCorrect", self.ui, on_finished=self._checkCanApply)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegCorrectLogic()

        desktop.fill_model_combo(self.ui.segmenterComboBox, "segmentation", DEFAULT_SEGMENTER)
        desktop.fill_model_combo(self.ui.correctorComboBox, "mask-correction", DEFAULT_CORRECTOR)
        desktop.fill_device_combo(self.ui.deviceComboBox)
        for strategy, title in STRATEGY_TITLES.items():
            self.ui.strategyComboBox.addItem(title, strategy)

        self.observeSceneClose()
        self.observeMasks(lambda f: qt.QTimer.singleShot(0, f))
        self.ui.segmenterComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.segmenterPathLineEdit.connect("currentPathChanged(QString)", self.onModelChanged)
        self.ui.correctorComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.correctorPathLineEdit.connect("currentPathChanged(QString)", self.onModelChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.acceptSliceButton.connect("clicked(bool)", lambda: self.onDecision(True, selected=True))
        self.ui.rejectSliceButton.connect("clicked(bool)", lambda: self.onDecision(False, selected=True))
        self.ui.acceptAllButton.connect("clicked(bool)", lambda: self.onDecision(True, selected=False))
        self.ui.rejectAllButton.connect("clicked(bool)", lambda: self.onDecision(False, selected=False))
        self.ui.editButton.connect("clicked(bool)", self.onEditButton)
        self.ui.nextBestButton.connect("clicked(bool)", self.onNextBest)
        self.ui.sliceTableView.connect("clicked(QModelIndex)", self.onTableClicked)
        self.ui.layerComboBox.connect("currentIndexChanged(int)", self.onLayerChanged)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False
        self.initializeParameterNode()
        self._restoreRunChoices()
        self.onModelChanged()

    def _restoreRunChoices(self):
        """Show the models and device of the last run, saved with the scene (the logic's parameters)."""
        stored = self.logic.core.get_parameters()
        desktop.select_model_choice(self.ui.segmenterComboBox, self.ui.segmenterPathLineEdit, stored.segmenter_model)
        desktop.select_model_choice(self.ui.correctorComboBox, self.ui.correctorPathLineEdit, stored.corrector_model)
        desktop.select_data(self.ui.deviceComboBox, stored.device)
        desktop.select_data(self.ui.strategyComboBox, stored.strategy)

    # ------------------------------------------------------------------ model chooser
    def _segmenterPath(self):
        return desktop.combo_model_path(self.ui.segmenterComboBox, self.ui.segmenterPathLineEdit)

    def _correctorPath(self):
        return desktop.combo_model_path(self.ui.correctorComboBox, self.ui.correctorPathLineEdit)

    def onModelChanged(self, *_):
        self.ui.segmenterPathLineEdit.enabled = self.ui.segmenterComboBox.currentText == desktop.MODEL_FILE_ITEM
        self.ui.correctorPathLineEdit.enabled = self.ui.correctorComboBox.currentText == desktop.MODEL_FILE_ITEM
        texts = []
        for path in (self._segmenterPath(), self._correctorPath()):
            if not path:
                continue
            try:
                texts.append(desktop.card_html(model_choices.describe_model(path)))
            except Exception as exc:  # a bad card is shown, not raised, while browsing
                texts.append(desktop.error_html(exc))
        self.ui.cardLabel.text = "<hr>".join(texts) or "No model chosen."

    # ------------------------------------------------------------------ run
    def _engineParameters(self):
        """The logic's parameters as stored (the nodes and the "correct" switch the GUI edits
        are the same values) with the choosers' models and device."""
        return dataclasses.replace(
            self.logic.core.get_parameters(),
            segmenter_model=self._segmenterPath(),
            corrector_model=self._correctorPath(),
            device=self.ui.deviceComboBox.currentData or "auto",
            strategy=self.ui.strategyComboBox.currentData or "gate",
        )

    def onApplyButton(self):
        if not ensureDependencies():
            return
        self.ui.warningsLabel.text = ""  # the last run's warnings are not this run's
        with slicer.util.tryWithErrorDisplay("SegCorrect could not start.", waitCursor=True):
            # asks first when the input does not fit the model (OK: the run with confirmed_fit);
            # rerun after the user trusts a TorchScript model file, with the same answer
            makeRun = lambda confirmed: BackgroundRun(  # noqa: E731
                self.logic.core, dataclasses.replace(self._engineParameters(), confirmed_fit=confirmed))
            self._runner.start_checked(makeRun, self._onRunDone, qt.QTimer())

    def _onRunDone(self, run):
        # the output segmentation the run made is already the GUI's (the same node reference)
        slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, fit=True)
        self._showLastResult()

    # ------------------------------------------------------------------ review
    def _showLastResult(self):
        params = self.logic.core.get_parameters()
        # input warnings (DICOM slice-position jitter, an image the model was not made for)
        self.ui.warningsLabel.text = "<br>".join(desktop.warning_lines(params.warnings))
        table = slicer.mrmlScene.GetNodeByID(params.slice_table) if params.slice_table else None
        self.ui.sliceTableView.setMRMLTableNode(table)
        has = table is not None
        for button in (self.ui.acceptSliceButton, self.ui.rejectSliceButton, self.ui.acceptAllButton,
                       self.ui.rejectAllButton, self.ui.editButton, self.ui.layerComboBox, self.ui.nextBestButton):
            button.enabled = has
        # the run's raw / corrected / final segmentations, one shown at a time (the final first)
        nodes = self.logic.core.review_nodes(params) if has else {}
        wasBlocked = self.ui.layerComboBox.blockSignals(True)
        self.ui.layerComboBox.clear()
        for layer in REVIEW_LAYERS:
            if layer in nodes:
                self.ui.layerComboBox.addItem(layer, layer)
        self.ui.layerComboBox.blockSignals(wasBlocked)
        if "final" in nodes:
            self.logic.core.show_layer("final", params)
            self._showLegend(nodes["final"])

    def onLayerChanged(self, _index):
        layer = self.ui.layerComboBox.currentData
        if not layer:
            return
        with slicer.util.tryWithErrorDisplay("Could not show that segmentation."):
            self._showLegend(self.logic.core.show_layer(layer))

    def _showLegend(self, node):
        """The segments' names on their colours (the colours the slice views draw)."""
        from clinicalai.mrml.segmentations import segment_legend

        self.ui.legendLabel.text = " ".join(
            f'<span style="background-color:{s["color"]}">&nbsp;&nbsp;&nbsp;</span>&nbsp;{s["name"]}' for s in segment_legend(node)
        )

    def _tableRows(self, indexes):
        """Rows of the table node behind view indexes (through the view's sort proxy, and
        skipping a column-name row), sorted, without duplicates."""
        from clinicalai.mrml.tables import table_row_of_view_row

        view = self.ui.sliceTableView
        table = view.mrmlTableNode()
        if table is None:
            return []
        rows = set()
        for index in indexes:
            try:
                row = view.tableModel().mrmlTableRowIndex(view.sortFilterProxyModel().mapToSource(index))
            except AttributeError:  # a Slicer without these wrapped: unsorted view
                row = table_row_of_view_row(table, index.row())
            if row is not None and 0 <= row < table.GetNumberOfRows():
                rows.add(int(row))
        return sorted(rows)

    def _selectedSlices(self):
        table = self.ui.sliceTableView.mrmlTableNode()
        if table is None:
            return []
        column = table.GetTable().GetColumnByName("slice")
        return [int(column.GetValue(r)) for r in self._tableRows(self.ui.sliceTableView.selectionModel().selectedIndexes())]

    def onDecision(self, accept, selected):
        with slicer.util.tryWithErrorDisplay("Could not change the final segmentation.", waitCursor=True):
            slices = self._selectedSlices() if selected else None
            if selected and not slices:
                slicer.util.warningDisplay("Select one or more rows of the slice table first.")
                return
            self.logic.core.set_correction(accept, slices)

    def onNextBest(self):
        with slicer.util.tryWithErrorDisplay("Could not show the next-best candidate.", waitCursor=True):
            slices = self._selectedSlices()
            if len(slices) != 1:
                slicer.util.warningDisplay("Select one row of the slice table first.")
                return
            self.logic.core.next_best(slices[0])

    def onTableClicked(self, index):
        rows = self._tableRows([index])
        if not rows:  # the column-name row
            return
        with slicer.util.tryWithErrorDisplay("Could not jump to the slice."):
            self.logic.core.jump_to_row(rows[0])

    def onEditButton(self):
        params = self.logic.core.get_parameters()
        final = slicer.mrmlScene.GetNodeByID(params.output_segmentation) if params.output_segmentation else None
        if final is None:
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(final)
        editor.setSourceVolumeNode(slicer.mrmlScene.GetNodeByID(params.input_volume))


def ensureDependencies():
    """First-use offer to install torch (PyTorch extension) and the other packages."""
    from clinicalai.mrml.dependencies import ensure_dependencies

    return ensure_dependencies()


class SegCorrectLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer logic over ``clinicalai.mrml.segcorrect_logic.SegCorrectLogic`` (``self.core``)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = SegCorrectMRMLLogic(MRMLContext.from_slicer())

    def getParameterNode(self):
        return SegCorrectParameterNode(super().getParameterNode())

    def run(self, parameters, progress=None, cancel=None):
        """Run segmentation + correction; ``parameters`` is a ``SegCorrectParameters``."""
        return self.core.run(parameters, progress=progress, cancel=cancel)


class SegCorrectTest(ScriptedLoadableModuleTest):
    """The whole workflow on a cardiac phantom (run from the Reload & Test button or ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegCorrectWorkflow()
        self.setUp()
        self.test_SegCorrectCancel()

    def _phantomNode(self):
        from clinicalai.mrml.volumes import add_volume_node
        from clinicalai.phantoms.cardiac import cardiac_case

        case = cardiac_case(0, size=(96, 96), n_slices=8)
        return case, add_volume_node(slicer.mrmlScene, case.image, "phantom")

    def test_SegCorrectWorkflow(self):
        import numpy as np

        from clinicalai.mrml.segmentations import segmentation_to_labels

        self.delayDisplay("SegCorrect on a cardiac phantom")
        case, image = self._phantomNode()
        logic = SegCorrectLogic()
        params = logic.run(SegCorrectParameters(input_volume=image.GetID(), device="cpu"))
        final = slicer.mrmlScene.GetNodeByID(params.output_segmentation)
        segmentation = final.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, ["RV", "MYO", "LV"])
        labels = segmentation_to_labels(final, case.image).array
        truth = case.labels.array
        dice = 2 * np.sum((labels > 0) & (truth > 0)) / max(1, np.sum(labels > 0) + np.sum(truth > 0))
        self.assertGreater(dice, 0.7)
        self.assertEqual(len(params.decisions), case.image.shape[0])
        logic.core.set_correction(False)  # reject all: final = raw
        raw = segmentation_to_labels(slicer.mrmlScene.GetNodeByID(params.raw_segmentation), case.image).array
        np.testing.assert_array_equal(segmentation_to_labels(final, case.image).array, raw)
        self.delayDisplay("Test passed")

    def test_SegCorrectCancel(self):
        from clinicalai.errors import Cancelled
        from clinicalai.progress import CancelToken

        case, image = self._phantomNode()
        before = slicer.mrmlScene.GetNumberOfNodes()
        token = CancelToken()
        token.cancel()
        with self.assertRaises(Cancelled):
            SegCorrectLogic().run(SegCorrectParameters(input_volume=image.GetID(), device="cpu"), cancel=token)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Test passed")
