"""A Slicer application without Qt, on ``slicer-core`` (tests, scripts, the browser app).

It is what ``qSlicerCoreApplication`` does at start-up, reduced to what ClinicalAI uses and
done the way ``trame_slicer.core.SlicerApp`` does it (application logic, default colour nodes
registered as ``"Colors"``, module logics registered with the scene and the application
logic), so the same :class:`~clinicalai.mrml.context.MRMLContext` works in both.

``install_slicer_stand_ins`` adds ``slicer.mrmlScene``, ``slicer.app`` and ``slicer.modules``
(only where desktop Slicer has not already set them) so ``slicer.util`` helpers that read
those globals run headless too.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from .context import MRMLContext


def create_headless_context(install_stand_ins: bool = True) -> MRMLContext:
    """A new scene with the application, colour, volumes, segmentations and subject-hierarchy
    logics set up; optionally installs the ``slicer.*`` stand-ins (see module docstring)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", color_logic)

    def register(logic: Any, name: str) -> Any:
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        return logic

    context = MRMLContext(
        scene=scene,
        app_logic=app_logic,
        volumes_logic=register(slicer.vtkSlicerVolumesLogic(), "Volumes"),
        segmentations_logic=register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations"),
        color_logic=color_logic,
        subject_hierarchy_logic=register(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy"),
    )
    if install_stand_ins:
        install_slicer_stand_ins(context)
    return context


class _ModuleStandIn:
    """What ``slicer.modules.<name>`` offers that ``slicer.util`` uses: ``logic()``."""

    def __init__(self, logic: Any) -> None:
        self._logic = logic

    def logic(self) -> Any:
        return self._logic


class _AppStandIn:
    """The few ``slicer.app`` calls ``slicer.util`` makes outside the GUI."""

    applicationName = "ClinicalAI (headless Slicer)"

    def __init__(self, app_logic: Any) -> None:
        self._app_logic = app_logic

    def applicationLogic(self) -> Any:  # noqa: N802 - Slicer's name
        return self._app_logic

    def testingEnabled(self) -> bool:  # noqa: N802 - message boxes must never block headless
        return True

    def layoutManager(self) -> None:  # noqa: N802 - there are no Qt views headless
        return None

    def processEvents(self) -> None:  # noqa: N802
        return None


def install_slicer_stand_ins(context: MRMLContext) -> None:
    """Point ``slicer.mrmlScene`` / ``slicer.app`` / ``slicer.modules`` at ``context``.

    In desktop Slicer these globals are the real ones and are left alone; headless, the
    latest context wins (e.g. one scene per test session).
    """
    import slicer

    if getattr(slicer, "app", None) is not None and not isinstance(slicer.app, _AppStandIn):
        return  # real Slicer: never shadow its globals
    slicer.mrmlScene = context.scene
    slicer.app = _AppStandIn(context.app_logic)
    slicer.modules = SimpleNamespace(
        volumes=_ModuleStandIn(context.volumes_logic),
        segmentations=_ModuleStandIn(context.segmentations_logic),
        colors=_ModuleStandIn(context.color_logic),
        subjecthierarchy=_ModuleStandIn(context.subject_hierarchy_logic),
    )
