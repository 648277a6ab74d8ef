"""The parameter-node half of Slicer's scripted-module widget template, once for the three
panels (SegCorrect, PetRecurrence, AttributionViewer), which differ only in their controls.

Imports nothing at module level: the class is mixed into a Widget in Slicer's Python, where
``slicer`` and ``vtk`` exist; everything it touches is MRML (tested on slicer-core's scene)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple


class PanelWidgetMixin:
    """Parameter node, Apply enabling and Cancel of a module Widget.

    Mix in first: ``class SegCorrectWidget(PanelWidgetMixin, ScriptedLoadableModuleWidget,
    VTKObservationMixin)``. The Widget sets ``self.logic`` (its ``getParameterNode()`` returns
    the parameter node wrapper, which has ``inputVolume``), ``self.ui`` (with ``applyButton``)
    and ``self._runner`` (a :class:`~clinicalai.desktop.panel_runner.PanelRunner`), and defines
    ``_showLastResult()``: what the panel shows of the run saved with the scene.
    """

    #: the Apply button's tool tip when it can run and when it cannot (``None``: left alone)
    applyToolTips: Optional[Tuple[str, str]] = None
    #: the ``self.ui`` names of the panel's mask choosers (brain mask, reference lesion): they
    #: offer the label maps and segmentations of the input volume only
    maskSelectors: Tuple[str, ...] = ()
    _parameterNode: Any = None
    _parameterNodeGuiTag: Any = None
    _runner: Any = None

    def cleanup(self) -> None:
        self.onCancelButton()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._releaseParameterNode()

    def observeSceneClose(self) -> None:
        """Let go of the parameter node when the scene closes, take the new one after."""
        import slicer

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def observeMasks(self, defer: Callable[[Callable[[], None]], None]) -> None:
        """Filter the mask choosers again when a node is added to or removed from the scene;
        ``defer(f)`` calls ``f`` once the loading is over (the widget's
        ``lambda f: qt.QTimer.singleShot(0, f)``): a volume is added before its voxels are set."""
        import slicer

        for event in (slicer.mrmlScene.NodeAddedEvent, slicer.mrmlScene.NodeRemovedEvent):
            self.addObserver(slicer.mrmlScene, event, lambda *_: defer(self.restrictMaskSelectors))

    def restrictMaskSelectors(self) -> None:
        """The mask choosers offer the masks on the input volume's grid, and say why no more."""
        import slicer

        from .choosers import restrict_mask_selector

        image = self._parameterNode.inputVolume if self._parameterNode else None
        for name in self.maskSelectors:
            restrict_mask_selector(getattr(self.ui, name), slicer.mrmlScene, image)

    def initializeParameterNode(self) -> None:
        """The module's parameter node, with the first scalar volume as input when none is set."""
        import slicer

        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first
        self._showLastResult()

    def setParameterNode(self, inputParameterNode: Any) -> None:
        self._releaseParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, _modified_event(), self._checkCanApply)
            self._checkCanApply()

    def _releaseParameterNode(self) -> None:
        """Stop following the parameter node (GUI connection, events), once: leaving the module
        and then closing the scene must not disconnect twice (Slicer's template does)."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, _modified_event(), self._checkCanApply)

    def _checkCanApply(self, caller: Any = None, event: Any = None) -> None:
        """Apply is enabled with an input volume and no run going on."""
        ready = bool(self._parameterNode and self._parameterNode.inputVolume) and not (self._runner and self._runner.running)
        self.ui.applyButton.enabled = ready
        self.restrictMaskSelectors()  # the input volume may have changed
        if self.applyToolTips:
            self.ui.applyButton.toolTip = self.applyToolTips[0] if ready else self.applyToolTips[1]

    def onCancelButton(self) -> None:
        if self._runner is not None:
            self._runner.cancel()


def _modified_event() -> int:
    import vtk

    return vtk.vtkCommand.ModifiedEvent
