"""Heat-map volumes (Grad-CAM, attribution, anomaly maps) and how they are shown: colour
tables (heat for positive maps, diverging cyan-blue-black-red-yellow for signed ones), window / level,
threshold, and foreground over the image in every slice view of the layout."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..volume import Volume
from .volumes import add_volume_node, array_from_image_data, update_node_from_volume, volume_grid_of_node

HEAT_TABLE = "ClinicalAI Heat"
DIVERGING_TABLE = "ClinicalAI Diverging"

#: attribute on a heat-map node: "signed" or "positive"
MAP_KIND_ATTRIBUTE = "ClinicalAI.MapKind"


def _heat(t: float) -> Tuple[float, float, float]:
    # black -> red -> yellow -> white (the "hot" map of PET / Grad-CAM overlays)
    return (min(1.0, 3 * t), min(1.0, max(0.0, 3 * t - 1)), min(1.0, max(0.0, 3 * t - 2)))


def _diverging(t: float) -> Tuple[float, float, float]:
    # cyan <- blue <- black (0) -> red -> yellow, symmetric around the middle entry ("cold-hot").
    # Black, not white, at 0: a map is ~0 almost everywhere, and a foreground overlay blends
    # its colour in everywhere (Slicer's slice views ignore a colour table's alpha), so a white
    # 0 washed the whole image out under every signed map; black only dims it, as the heat map does
    s = 2 * t - 1
    if s >= 0:
        return (min(1.0, 2 * s), max(0.0, 2 * s - 1), 0.0)
    return (0.0, max(0.0, -2 * s - 1), min(1.0, -2 * s))


def color_table_node(scene: Any, signed: bool) -> Any:
    """The scene's heat (``signed=False``) or diverging colour table, made once per scene.

    Made here rather than taken from Slicer's colour files because ``slicer-core`` ships
    without them; the same table then serves desktop and browser.
    """
    name = DIVERGING_TABLE if signed else HEAT_TABLE
    node = scene.GetFirstNodeByName(name)
    if node is not None and node.IsA("vtkMRMLColorTableNode"):
        return node
    node = scene.CreateNodeByClass("vtkMRMLColorTableNode")
    node.UnRegister(None)  # CreateNodeByClass returns a new reference
    node.SetName(name)
    node.SetTypeToUser()
    node.SetSingletonTag(name)
    node.HideFromEditorsOn()
    n = 256
    node.SetNumberOfColors(n)
    node.GetLookupTable().SetTableRange(0, n - 1)
    ramp = _diverging if signed else _heat
    for i in range(n):
        r, g, b = ramp(i / (n - 1))
        node.SetColor(i, f"{i}", r, g, b, 1.0)
    scene.AddNode(node)
    return node


def map_window(array: np.ndarray, signed: bool) -> Tuple[float, float]:
    """Display range of a map: ``[-m, m]`` around 0 for signed maps (so black is 0),
    ``[min, max]`` otherwise (``m`` = largest absolute finite value)."""
    finite = np.asarray(array, dtype=float)[np.isfinite(array)]
    if finite.size == 0:
        return (0.0, 1.0)
    if signed:
        m = float(np.max(np.abs(finite))) or 1.0
        return (-m, m)
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi if hi > lo else lo + 1.0)


def style_heatmap(node: Any, signed: bool, threshold: Optional[float] = None, window: Optional[Tuple[float, float]] = None) -> Any:
    """Colour table, window / level and threshold of a heat-map node's display node.

    Args:
        signed: diverging table and a window symmetric around 0.
        threshold: values below it are transparent (positive maps only; ``None`` = none).
        window: display range; default :func:`map_window` of the node's voxels.
    """
    scene = node.GetScene()
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_table_node(scene, signed).GetID())
    lo, hi = window or map_window(array_from_image_data(node.GetImageData()), signed)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)
    set_heatmap_threshold(node, threshold)
    node.SetAttribute(MAP_KIND_ATTRIBUTE, "signed" if signed else "positive")
    return node


def set_heatmap_threshold(node: Any, threshold: Optional[float]) -> None:
    """Hide voxels below ``threshold`` (``None`` shows all)."""
    display = node.GetDisplayNode()
    if threshold is None:
        display.ApplyThresholdOff()
        return
    display.AutoThresholdOff()
    display.SetThreshold(float(threshold), float(np.finfo(np.float32).max))
    display.ApplyThresholdOn()


def add_heatmap_node(
    scene: Any,
    heatmap: Volume,
    name: str,
    signed: bool = False,
    threshold: Optional[float] = None,
    window: Optional[Tuple[float, float]] = None,
) -> Any:
    """A new scalar volume node (unique ``name``) holding ``heatmap`` as float32 with its heat
    or diverging display; see :func:`style_heatmap`."""
    volume = heatmap.with_array(np.asarray(heatmap.array, dtype=np.float32))
    node = add_volume_node(scene, volume, name, display=True)
    return style_heatmap(node, signed, threshold, window)


def update_heatmap_node(node: Any, heatmap: Volume, signed: bool = False, threshold: Optional[float] = None) -> Any:
    """Replace the voxels of an existing heat-map node (a node the user picked as output)."""
    update_node_from_volume(node, heatmap.with_array(np.asarray(heatmap.array, dtype=np.float32)))
    return style_heatmap(node, signed, threshold)


def slice_composite_nodes(scene: Any) -> Sequence[Any]:
    """The scene's slice composite nodes (one per slice view; none headless without views)."""
    return [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]


def show_in_slice_views(
    scene: Any,
    background: Any = None,
    foreground: Any = None,
    opacity: Optional[float] = None,
    label: Any = None,
    views: Optional[Sequence[str]] = None,
) -> int:
    """Show ``background`` / ``foreground`` volume nodes (and ``opacity`` of the foreground)
    in the slice views named in ``views`` (all when ``None``); returns how many were set."""
    count = 0
    for composite in slice_composite_nodes(scene):
        if views is not None and composite.GetLayoutName() not in views:
            continue
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if opacity is not None:
            composite.SetForegroundOpacity(float(opacity))
        if label is not None:
            composite.SetLabelVolumeID(label.GetID())
        count += 1
    return count


def set_foreground_opacity(scene: Any, opacity: float) -> int:
    """Foreground opacity of every slice view (the Grad-CAM opacity slider)."""
    return show_in_slice_views(scene, opacity=opacity)


def show_volume_rendering(volume_rendering_logic: Any, node: Any) -> Any:
    """"Show in 3D": volume rendering of ``node`` with a default transfer function (desktop:
    ``slicer.modules.volumerendering.logic()``; headless: a ``vtkSlicerVolumeRenderingLogic``
    registered with the scene). Returns the volume rendering display node."""
    display = volume_rendering_logic.GetFirstVolumeRenderingDisplayNode(node)
    if display is None:
        display = volume_rendering_logic.CreateDefaultVolumeRenderingNodes(node)
    volume_rendering_logic.UpdateDisplayNodeFromVolumeNode(display, node)
    display.SetVisibility(True)
    return display


#: layout id of the side-by-side map views (outside Slicer's built-in ids)
SIDE_BY_SIDE_LAYOUT_ID = 6501
SIDE_BY_SIDE_VIEW = "ClinicalAIMap{}"


def side_by_side_layout_xml(n: int, orientation: str = "Axial") -> str:
    """Slicer layout description of ``n`` slice views in a row (the maps) over a 3D view."""
    views = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{SIDE_BY_SIDE_VIEW.format(i + 1)}">'
        f'<property name="orientation" action="default">{orientation}</property>'
        f'<property name="viewlabel" action="default">{i + 1}</property>'
        f'<property name="viewcolor" action="default">#E17012</property>'
        f'<property name="viewgroup" action="default">1</property></view></item>'
        for i in range(n)
    )
    return f'<layout type="horizontal">{views}</layout>'


def set_side_by_side_layout(scene: Any, n: int) -> list:
    """Switch the layout (when the scene has a layout node, i.e. in a GUI) to ``n`` linked map
    views; returns their view names (empty headless)."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is None or n < 1:
        return []
    layout_id = SIDE_BY_SIDE_LAYOUT_ID + n
    if not layout.IsLayoutDescription(layout_id):
        layout.AddLayoutDescription(layout_id, side_by_side_layout_xml(n))
    layout.SetViewArrangement(layout_id)
    return [SIDE_BY_SIDE_VIEW.format(i + 1) for i in range(n)]


def hide_results_of_other_volumes(scene: Any, volume_node: Any) -> int:
    """Hide what was drawn for another image when ``volume_node`` is shown: every segmentation
    whose reference geometry is not ``volume_node`` (a SegCorrect mask of a cardiac MRI must not
    float over a brain), and every slice view's label layer of another grid. A result belongs to
    the volume it was made on and leaves the screen with it; nothing is deleted. Returns the
    number of overlays hidden."""
    hidden = 0
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        seg = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        display = seg.GetDisplayNode()
        reference = seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole())
        if display is not None and reference is not volume_node and display.GetVisibility():
            display.SetVisibility(False)
            hidden += 1
    for composite in slice_composite_nodes(scene):
        label = scene.GetNodeByID(composite.GetLabelVolumeID()) if composite.GetLabelVolumeID() else None
        if label is not None and not same_grid(label, volume_node):
            composite.SetLabelVolumeID(None)
            hidden += 1
    return hidden


def same_grid(a: Any, b: Any) -> bool:
    """Whether the volume nodes ``a`` and ``b`` have the same voxel grid (shape, spacing,
    origin, direction within 1e-4, the tolerance of every other grid check in this package):
    a mask of one image drawn on another."""
    if a is None or b is None or a.GetImageData() is None or b.GetImageData() is None:
        return False
    return volume_grid_of_node(a).allclose(volume_grid_of_node(b), atol=1e-4)
