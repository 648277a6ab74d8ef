"""Heat-map volumes (Grad-CAM, attribution, anomaly maps) and how they are shown: colour
tables (:data:`HEAT_STOPS` for positive maps, :data:`DIVERGING_STOPS` for signed ones), window / level,
threshold, and foreground over the image in every slice view of the layout."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..volume import Volume
from .scene import nodes_of_class
from .volumes import add_volume_node, array_from_image_data, update_node_from_volume, volume_grid_of_node

HEAT_TABLE = "ClinicalAI Heat"
DIVERGING_TABLE = "ClinicalAI Diverging"

#: attribute on a heat-map node: "signed" or "positive"
MAP_KIND_ATTRIBUTE = "ClinicalAI.MapKind"


#: stops (t, r, g, b) of the positive map: black at 0 (a foreground overlay blends its colour
#: in everywhere, Slicer's slice views ignore a colour table's alpha, so 0 must only dim the
#: image; low values a dim blue, so a map above 0 everywhere, as a Grad-CAM is, does not wash
#: the anatomy out), then green, yellow, and a saturated red at the top. The top is red, not the
#: white or pale yellow of a "hot" map, because a Grad-CAM peaks on the brightest voxels (a PET
#: lesion, the striatum), where white or yellow blended over white vanished. No cyan: it is the
#: colour of PetRecurrence's lesion VOI outline.
HEAT_STOPS = ((0.0, 0.0, 0.0, 0.0), (0.3, 0.0, 0.0, 0.6), (0.55, 0.0, 0.75, 0.0),
              (0.78, 1.0, 0.85, 0.0), (1.0, 0.9, 0.0, 0.0))
#: stops of the signed map over s = 2t - 1 in [-1, 1]: black at 0 (as above), orange then a
#: saturated red for positive values, light then deep blue for negative ones, so both
#: extremes stay visible over white as well as over black
DIVERGING_STOPS = ((-1.0, 0.0, 0.0, 0.9), (-0.5, 0.0, 0.7, 1.0), (0.0, 0.0, 0.0, 0.0),
                   (0.5, 1.0, 0.6, 0.0), (1.0, 0.85, 0.0, 0.0))


def _ramp(stops: Sequence[Tuple[float, float, float, float]], x: float) -> Tuple[float, float, float]:
    # piecewise-linear colour between the stops (x clamped to the stops' range)
    at = [s[0] for s in stops]
    return tuple(float(np.interp(x, at, [s[c] for s in stops])) for c in (1, 2, 3))  # type: ignore[return-value]


def _heat(t: float) -> Tuple[float, float, float]:
    return _ramp(HEAT_STOPS, t)


def _diverging(t: float) -> Tuple[float, float, float]:
    # t in [0, 1] over the table; 0 of the map is the middle entry
    return _ramp(DIVERGING_STOPS, 2 * t - 1)


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
    return nodes_of_class(scene, "vtkMRMLSliceCompositeNode")


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


#: percentiles of an image's voxels between which its volume rendering goes from transparent
#: to its highest opacity: the background and soft tissue that fill most of a volume (MR, PET)
#: stay transparent, so the rendering is never the opaque box / cylinder of the field of view
IMAGE_RENDERING_PERCENTILES = (70.0, 99.5)
#: fraction of a heat map's largest |value| below which its rendering is transparent (the
#: "iso-surface" of the map's hot region; 0.5 = half maximum, as a Grad-CAM region is read)
MAP_RENDERING_LEVEL = 0.5
RENDERING_MAX_OPACITY = 0.8


def rendering_points(node: Any) -> Tuple[list, list]:
    """Scalar-opacity and colour points ``([(value, opacity)], [(value, r, g, b)])`` of the
    volume rendering of ``node``, chosen from its own intensities: images (grey) transparent up
    to :data:`IMAGE_RENDERING_PERCENTILES` [0], opaque at [1]; heat maps (their slice colour
    table and window) transparent below :data:`MAP_RENDERING_LEVEL` of their largest value,
    both signs for signed maps."""
    array = array_from_image_data(node.GetImageData())
    finite = np.asarray(array, dtype=float)[np.isfinite(array)]
    if finite.size == 0:
        finite = np.zeros(1)
    kind = node.GetAttribute(MAP_KIND_ATTRIBUTE)
    top = RENDERING_MAX_OPACITY
    if kind is None:
        lo, hi = (float(v) for v in np.percentile(finite, IMAGE_RENDERING_PERCENTILES))
        vmin, vmax = float(finite.min()), float(finite.max())
        hi = hi if hi > lo else lo + 1e-6
        opacity = [(min(vmin, lo - 1e-6), 0.0), (lo, 0.0), (hi, top), (max(vmax, hi + 1e-6), top)]
        return opacity, [(lo, 0.0, 0.0, 0.0), (hi, 1.0, 1.0, 1.0)]
    display = node.GetDisplayNode()
    wlo, whi = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    m = float(np.max(np.abs(finite))) or 1.0
    level = MAP_RENDERING_LEVEL * m
    if kind == "signed":
        opacity = [(-m, top), (-level, top), (-level + 1e-6 * m, 0.0), (level - 1e-6 * m, 0.0), (level, top), (m, top)]
    else:
        opacity = [(min(wlo, level) - 1e-6 * m, 0.0), (level - 1e-6 * m, 0.0), (level, top), (max(m, whi), top)]
    ramp = _diverging if kind == "signed" else _heat
    colours = [(wlo + (whi - wlo) * t, *ramp(t)) for t in np.linspace(0.0, 1.0, 9)]
    return opacity, colours


def apply_rendering_points(display: Any, node: Any) -> None:
    """Set the volume property of a volume rendering display node to :func:`rendering_points`."""
    opacity, colours = rendering_points(node)
    prop = display.GetVolumePropertyNode().GetVolumeProperty()
    scalar = prop.GetScalarOpacity()
    scalar.RemoveAllPoints()
    for value, a in opacity:
        scalar.AddPoint(float(value), float(a))
    colour = prop.GetRGBTransferFunction()
    colour.RemoveAllPoints()
    for value, r, g, b in colours:
        colour.AddRGBPoint(float(value), r, g, b)
    prop.ShadeOn()


def volume_rendering_displays(scene: Any) -> list:
    """Every volume rendering display node of the scene."""
    return nodes_of_class(scene, "vtkMRMLVolumeRenderingDisplayNode")


def show_volume_rendering(volume_rendering_logic: Any, node: Any, visible: bool = True) -> Any:
    """"Show in 3D": volume rendering of ``node`` on or off (desktop:
    ``slicer.modules.volumerendering.logic()``; headless / browser: a
    ``vtkSlicerVolumeRenderingLogic`` registered with the scene). Made on first use, with
    transfer functions from the node's own intensities (:func:`rendering_points`): a preset
    made for CT rendered MR as an opaque cylinder and a [0, 1] Grad-CAM as nothing. Returns the
    volume rendering display node (``None`` when turned off before any was made)."""
    display = volume_rendering_logic.GetFirstVolumeRenderingDisplayNode(node)
    if display is None:
        if not visible:
            return None
        display = volume_rendering_logic.CreateDefaultVolumeRenderingNodes(node)
        volume_rendering_logic.UpdateDisplayNodeFromVolumeNode(display, node)
        apply_rendering_points(display, node)
    display.SetVisibility(bool(visible))
    return display


def show_segments_in_3d(segmentation_node: Any, visible: bool = True) -> int:
    """Segment surfaces of ``segmentation_node`` in the 3D view on or off: the closed-surface
    representation is made from the labelmap (Slicer's converter) when missing, the display's
    3D visibility set. Returns the number of segments with a non-empty surface."""
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    display = segmentation_node.GetDisplayNode()
    if visible:
        segmentation_node.CreateClosedSurfaceRepresentation()
        display.SetVisibility(True)
    display.SetVisibility3D(bool(visible))
    segmentation = segmentation_node.GetSegmentation()
    name = "Closed surface"
    count = 0
    for i in range(segmentation.GetNumberOfSegments()):
        surface = segmentation.GetNthSegment(i).GetRepresentation(name)
        count += int(surface is not None and surface.GetNumberOfPoints() > 0)
    return count


def color_bar(node: Any, stops: int = 9) -> dict:
    """What a colour bar of the heat map ``node`` shows: ``{"min", "max", "signed",
    "colors": [css "#rrggbb" from min to max], "unit"}`` from its display node's window and
    colour table (the same the slice views use); ``{}`` for a node without heat-map display."""
    display = node.GetDisplayNode() if node is not None else None
    kind = node.GetAttribute(MAP_KIND_ATTRIBUTE) if node is not None else None
    if display is None or kind is None or display.GetColorNode() is None:
        return {}
    table = display.GetColorNode()
    n = table.GetNumberOfColors()
    colors = []
    for t in np.linspace(0.0, 1.0, stops):
        rgba = [0.0, 0.0, 0.0, 0.0]
        table.GetColor(int(round(t * (n - 1))), rgba)
        colors.append("#" + "".join(f"{int(round(255 * c)):02x}" for c in rgba[:3]))
    unit = node.GetVoxelValueUnits().GetCodeValue() if node.GetVoxelValueUnits() is not None else ""
    return {"min": float(display.GetWindowLevelMin()), "max": float(display.GetWindowLevelMax()),
            "signed": kind == "signed", "colors": colors, "unit": unit or ""}


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


#: attribute on a segmentation or label map node that :func:`hide_results_of_other_volumes`
#: took off the screen (so :func:`show_results_of_volume` brings back those, not the ones the
#: user hid)
HIDDEN_WITH_VOLUME_ATTRIBUTE = "ClinicalAI.HiddenWithVolume"


def hide_results_of_other_volumes(scene: Any, volume_node: Any) -> int:
    """Hide what was drawn for another image when ``volume_node`` is shown: every segmentation
    whose reference geometry is not ``volume_node`` (a SegCorrect mask of a cardiac MRI must not
    float over a brain), every slice view's label layer of another grid and every volume rendering
    of another volume (the 3D view must not go on showing the previous patient). A result belongs to
    the volume it was made on and leaves the screen with it; nothing is deleted, and the masks
    come back with their image (:func:`show_results_of_volume`). Returns the number of overlays hidden."""
    hidden = 0
    for display in volume_rendering_displays(scene):
        if display.GetVolumeNodeID() != volume_node.GetID() and display.GetVisibility():
            display.SetVisibility(False)  # a previous patient's rendering (or its maps')
            hidden += 1
    for seg in nodes_of_class(scene, "vtkMRMLSegmentationNode"):
        display = seg.GetDisplayNode()
        reference = seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole())
        if display is not None and reference is not volume_node and display.GetVisibility():
            display.SetVisibility(False)
            seg.SetAttribute(HIDDEN_WITH_VOLUME_ATTRIBUTE, "1")
            hidden += 1
    for composite in slice_composite_nodes(scene):
        label = scene.GetNodeByID(composite.GetLabelVolumeID()) if composite.GetLabelVolumeID() else None
        if label is not None and not same_grid(label, volume_node):
            composite.SetLabelVolumeID(None)
            label.SetAttribute(HIDDEN_WITH_VOLUME_ATTRIBUTE, "1")
            hidden += 1
    return hidden


def show_results_of_volume(scene: Any, volume_node: Any) -> int:
    """The other half of :func:`hide_results_of_other_volumes`, when ``volume_node`` is shown
    again: the segmentations it hid whose reference geometry is ``volume_node`` are visible
    again, and a label map it hid on ``volume_node``'s grid is back in the label layer of every
    slice view that has none (one label layer per view: the most recently added map wins).
    Overlays the user hid stay hidden. Returns the number of overlays shown again."""
    shown = 0
    for seg in nodes_of_class(scene, "vtkMRMLSegmentationNode"):
        reference = seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole())
        if seg.GetAttribute(HIDDEN_WITH_VOLUME_ATTRIBUTE) and reference is volume_node and seg.GetDisplayNode() is not None:
            seg.GetDisplayNode().SetVisibility(True)
            seg.RemoveAttribute(HIDDEN_WITH_VOLUME_ATTRIBUTE)
            shown += 1
    back = [n for n in nodes_of_class(scene, "vtkMRMLLabelMapVolumeNode") if n.GetAttribute(HIDDEN_WITH_VOLUME_ATTRIBUTE) and same_grid(n, volume_node)]
    if back:
        for composite in slice_composite_nodes(scene):
            if not composite.GetLabelVolumeID():
                composite.SetLabelVolumeID(back[-1].GetID())
                shown += 1
        for node in back:
            node.RemoveAttribute(HIDDEN_WITH_VOLUME_ATTRIBUTE)
    return shown


def same_grid(a: Any, b: Any) -> bool:
    """Whether the volume nodes ``a`` and ``b`` have the same voxel grid (shape, spacing,
    origin, direction within 1e-4, the tolerance of every other grid check in this package):
    a mask of one image drawn on another."""
    if a is None or b is None or a.GetImageData() is None or b.GetImageData() is None:
        return False
    return volume_grid_of_node(a).allclose(volume_grid_of_node(b), atol=1e-4)
