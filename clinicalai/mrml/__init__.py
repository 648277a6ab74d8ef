"""MRML logic of both GUIs (desktop Slicer modules and the browser app): MRML nodes to and
from :class:`clinicalai.volume.Volume` (the one RAS <-> LPS place), results into segmentation
nodes / heat-map volumes with their display, tables, parameter dataclasses, scene helpers
(:mod:`.scene`), what the model choosers offer (:mod:`.model_choices`), the one background
runner (:mod:`.runner`) and the three module logics on their typed base (:mod:`.workflow`).
Imports ``slicer`` / ``vtk`` (never ``qt``: the desktop panels' Qt-side helpers are in
:mod:`clinicalai.desktop`); runs in desktop Slicer and on ``slicer-core``.

Import the submodules (``clinicalai.mrml.volumes``, ``.segcorrect_logic``, ...); the names
below are re-exported lazily so ``import clinicalai.mrml`` does not load VTK.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MRMLContext": "context",
    "create_headless_context": "headless",
    "install_slicer_stand_ins": "headless",
    "node_to_volume": "volumes",
    "add_volume_node": "volumes",
    "update_node_from_volume": "volumes",
    "load_volume_file": "volumes",
    "ijk_to_ras": "volumes",
    "add_segmentation_node": "segmentations",
    "fill_segmentation_node": "segmentations",
    "segmentation_to_labels": "segmentations",
    "load_segmentation_file": "segmentations",
    "add_heatmap_node": "display",
    "style_heatmap": "display",
    "show_in_slice_views": "display",
    "show_volume_rendering": "display",
    "add_table_node": "tables",
    "table_rows": "tables",
    "get_parameter_node": "parameters",
    "read_parameters": "parameters",
    "write_parameters": "parameters",
    "scene_transaction": "scene",
    "jump_to_slice": "scene",
    "bundled_models": "model_choices",
    "describe_model": "model_choices",
    "device_choices": "model_choices",
    "SegCorrectLogic": "segcorrect_logic",
    "SegCorrectParameters": "segcorrect_logic",
    "PetRecurrenceLogic": "pet_logic",
    "PetRecurrenceParameters": "pet_logic",
    "AttributionViewerLogic": "attribution_logic",
    "AttributionViewerParameters": "attribution_logic",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
