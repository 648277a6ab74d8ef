"""Corner annotations and colour bars of the browser's slice views, as Slicer draws them on the
desktop: patient direction at each edge, slice number and offset (mm), the voxel value under the
mouse, and a colour bar (range, sign) for the heat map a view shows.

Computed on the server (:func:`clinicalai.mrml.scene.slice_annotation`, ``voxel_at``,
:func:`clinicalai.mrml.display.color_bar`) from the scene's slice, composite and crosshair nodes
(the mouse position reaches the server's VTK interactor, which moves the crosshair node's
cursor) and sent to the page as the state ``ca_annotations`` / ``ca_colorbars`` (view name ->
texts), which the view overlays show as text."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..mrml.display import color_bar
from ..mrml.scene import direction_letter, slice_annotation, voxel_at

#: seconds the annotations wait for more scene events before they are recomputed (a mouse
#: move over a view sends ~40 events a second; one state update per burst is enough)
REFRESH_DELAY_S = 0.05


def _number(value: float) -> str:
    """A voxel value as Slicer's data probe writes it: integers whole, others to 4 digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def view_texts(slice_node: Any, volume_node: Any, probe: Optional[dict]) -> Dict[str, str]:
    """The texts of one slice view's corners: ``left`` / ``right`` / ``top`` / ``bottom``
    (R/L, A/P, S/I), ``slice`` ("slice 8/20  S 12.0 mm": 1-based, as the SegCorrect table
    numbers slices) and ``value`` (the voxel under the mouse, "" when not over this view)."""
    ann = slice_annotation(slice_node, volume_node)
    normal = [slice_node.GetSliceToRAS().GetElement(r, 2) for r in range(3)]
    where = f"{direction_letter([abs(v) for v in normal])} {ann['offset_mm']:.1f} mm"
    if ann["count"] is not None:
        index = "-" if ann["index"] is None else str(ann["index"] + 1)
        where = f"slice {index}/{ann['count']}  {where}"
    value = ""
    if probe is not None:
        i, j, k = probe["ijk"]
        value = f"({i}, {j}, {k})  {_number(probe['value'])}"
    return {key: ann[key] for key in ("left", "right", "top", "bottom")} | {"slice": where, "value": value}


class ViewAnnotations:
    """Keeps ``ca_annotations`` and ``ca_colorbars`` up to date with the scene of ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._pending = False
        self._observed: Dict[str, Any] = {}
        scene = app.context.scene
        scene.AddObserver(scene.NodeAddedEvent, self._on_node_added)
        for cls in ("vtkMRMLSliceNode", "vtkMRMLSliceCompositeNode", "vtkMRMLCrosshairNode"):
            for i in range(scene.GetNumberOfNodesByClass(cls)):
                self._observe(scene.GetNthNodeByClass(i, cls))
        with app.state:
            app.state.ca_annotations = {}
            app.state.ca_colorbars = {}

    def _on_node_added(self, _scene: Any, _event: str, node: Any = None) -> None:
        # the scene's NodeAddedEvent carries no node in Python: observe what is new
        scene = self.app.context.scene
        for cls in ("vtkMRMLSliceNode", "vtkMRMLSliceCompositeNode", "vtkMRMLCrosshairNode"):
            for i in range(scene.GetNumberOfNodesByClass(cls)):
                self._observe(scene.GetNthNodeByClass(i, cls))

    def _observe(self, node: Any) -> None:
        if node is None or node.GetID() in self._observed:
            return
        events = ["ModifiedEvent"]
        if node.IsA("vtkMRMLCrosshairNode"):
            events.append(node.CursorPositionModifiedEvent)
        self._observed[node.GetID()] = [node.AddObserver(e, self.schedule) for e in events]

    def schedule(self, *_: Any) -> None:
        """Recompute soon (once per burst of events)."""
        if self._pending:
            return
        self._pending = True
        self.app.event_loop().call_later(REFRESH_DELAY_S, self.refresh)

    def _probe(self) -> tuple:
        """``(slice node under the mouse, voxel there)`` from the crosshair node's cursor."""
        scene = self.app.context.scene
        crosshair = scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is None or self.app.volume_node is None:
            return None, None
        ras = [0.0, 0.0, 0.0]
        if not crosshair.GetCursorPositionRAS(ras):
            return None, None
        xyz = [0.0, 0.0, 0.0]
        return crosshair.GetCursorPositionXYZ(xyz), voxel_at(self.app.volume_node, tuple(ras))

    def _map_value(self, layout_name: str) -> str:
        """"  map <value>": the heat map over the view ``layout_name`` under the mouse ("" without one)."""
        scene = self.app.context.scene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            if composite.GetLayoutName() != layout_name or not composite.GetForegroundVolumeID():
                continue
            foreground = scene.GetNodeByID(composite.GetForegroundVolumeID())
            ras = [0.0, 0.0, 0.0]
            scene.GetFirstNodeByClass("vtkMRMLCrosshairNode").GetCursorPositionRAS(ras)
            there = voxel_at(foreground, tuple(ras))
            if there is not None:
                return f"  map {_number(there['value'])}"
        return ""

    def refresh(self) -> None:
        """Recompute every slice view's corner texts and colour bar now."""
        self._pending = False
        scene = self.app.context.scene
        cursor_slice, probe = self._probe()
        annotations: Dict[str, Dict[str, str]] = {}
        bars: Dict[str, dict] = {}
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            name = node.GetLayoutName()
            if self.app.volume_node is not None:
                here = probe if cursor_slice is not None and cursor_slice.GetID() == node.GetID() else None
                annotations[name] = view_texts(node, self.app.volume_node, here)
                if here is not None:
                    annotations[name]["value"] += self._map_value(name)
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
            bar = color_bar(foreground) if foreground is not None and composite.GetForegroundOpacity() > 0 else {}
            if bar:
                bars[composite.GetLayoutName()] = bar | {"name": foreground.GetName()}
        state = self.app.state
        if state.ca_annotations != annotations or state.ca_colorbars != bars:
            with state:
                state.ca_annotations = annotations
                state.ca_colorbars = bars
