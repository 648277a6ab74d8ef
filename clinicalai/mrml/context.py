"""Where the MRML functions find the scene and the module logics they need.

Desktop Slicer keeps them in globals (``slicer.mrmlScene``, ``slicer.modules.*.logic()``);
``trame_slicer.core.SlicerApp`` keeps them as attributes; the tests build them headless
(:mod:`clinicalai.mrml.headless`). Every function in :mod:`clinicalai.mrml` takes an
:class:`MRMLContext` (or just the scene), so one code path serves all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class MRMLContext:
    """The scene plus the module logics the ClinicalAI MRML code calls.

    Attributes:
        scene: the ``vtkMRMLScene``.
        app_logic: the ``vtkSlicerApplicationLogic`` (``None`` when there is none).
        volumes_logic: a ``vtkSlicerVolumesLogic`` registered with the scene.
        segmentations_logic: a ``vtkSlicerSegmentationsModuleLogic`` registered with the scene
            (its ``SetMRMLScene`` registers the labelmap / surface converter rules).
    """

    scene: Any
    app_logic: Any = None
    volumes_logic: Any = None
    segmentations_logic: Any = None
    color_logic: Any = None
    subject_hierarchy_logic: Any = None

    @classmethod
    def from_slicer(cls) -> "MRMLContext":
        """The context of a running desktop Slicer (or of the headless stand-ins)."""
        import slicer

        modules = slicer.modules
        app_logic = slicer.app.applicationLogic() if hasattr(slicer.app, "applicationLogic") else None
        return cls(
            scene=slicer.mrmlScene,
            app_logic=app_logic,
            volumes_logic=modules.volumes.logic(),
            segmentations_logic=modules.segmentations.logic(),
            color_logic=_optional_logic(modules, "colors"),
            subject_hierarchy_logic=_optional_logic(modules, "subjecthierarchy"),
        )

    @classmethod
    def from_slicer_app(cls, app: Any) -> "MRMLContext":
        """The context of a ``trame_slicer.core.SlicerApp`` (the browser app)."""
        return cls(
            scene=app.scene,
            app_logic=app.app_logic,
            volumes_logic=app.volumes_logic,
            segmentations_logic=app.segmentations_logic,
            color_logic=getattr(app, "color_logic", None),
            subject_hierarchy_logic=getattr(app, "subject_hierarchy_logic", None),
        )


def _optional_logic(modules: Any, name: str) -> Optional[Any]:
    module = getattr(modules, name, None)
    return module.logic() if module is not None else None
