"""Display panel: window / level of the open volume (the slider follows a drag in a slice
view), layout, volume rendering and segment surfaces in 3D (cleared with the volume)."""

from __future__ import annotations

from typing import Any

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ...mrml.display import show_segments_in_3d
from ...mrml.scene import nodes_of_class
from . import common
from .base import Panel


class DisplayPanel(Panel):
    key = "display"
    title = "Window/level and 3D"

    def __init__(self, app) -> None:
        super().__init__(app)
        self.set(wl=[0.0, 1.0], wl_min=0.0, wl_max=1.0, wl_step=0.01, vr=False, surfaces=False, surface_count=-1,
                 layouts=self.app.layout_logic.layout_manager.get_layout_ids())
        self.state.change(self.k("wl"))(self._on_wl)
        self.state.change(self.k("vr"))(self._on_vr)
        self.state.change(self.k("surfaces"))(self._on_surfaces)
        #: (display node, observer tag) of the volume on show: a W/L drag moves the slider
        self._display_observer = None

    def build_ui(self) -> None:
        with v3.VCard(variant="flat"):
            v3.VCardTitle("Window / level")
            with v3.VCardText():
                v3.VRangeSlider(
                    v_model=(self.k("wl"),),
                    min=(self.k("wl_min"),),
                    max=(self.k("wl_max"),),
                    step=(self.k("wl_step"),),
                    thumb_label=True,
                    hide_details=True,
                    id="display-wl",
                    disabled=("!ca_volume_loaded",),
                )
                v3.VBtn("Auto", click=self.auto, size="small", variant="tonal", id="display-auto")
                html.Div(
                    f"{{{{ {self.k('wl')}[0].toFixed(1) }}}} .. {{{{ {self.k('wl')}[1].toFixed(1) }}}}",
                    classes="text-caption",
                    id="display-wl-text",
                )
            v3.VCardTitle("Layout")
            with v3.VCardText():
                v3.VSelect(
                    v_model=("LayoutButtonState__current_layout_id",),
                    items=(self.k("layouts"),),
                    density="compact",
                    hide_details=True,
                    id="display-layout",
                )
            v3.VCardTitle("3D")
            with v3.VCardText():
                v3.VSwitch(
                    v_model=(self.k("vr"),),
                    label="volume rendering (first frame can take seconds on a CPU)",
                    hide_details=True,
                    disabled=("!ca_volume_loaded",),
                    id="display-vr",
                )
                v3.VSwitch(
                    v_model=(self.k("surfaces"),),
                    label="segment surfaces of this volume",
                    hide_details=True,
                    disabled=("!ca_volume_loaded",),
                    id="display-surfaces",
                )
                html.Div(
                    f"{{{{ {self.k('surface_count')} }}}} segment surface(s) shown",
                    v_if=(f"{self.k('surfaces')} && {self.k('surface_count')} >= 0",),
                    classes="text-caption",
                    id="display-surface-count",
                )

    def on_volume_changed(self, node: Any) -> None:
        from trame_slicer.core import VolumeWindowLevel

        lo, hi = VolumeWindowLevel.get_volume_scalar_range(node)
        auto = list(VolumeWindowLevel.get_volume_auto_min_max_range(node))
        step = max((hi - lo) / 500.0, 1e-6)
        self.set(wl_min=float(lo), wl_max=float(hi), wl_step=float(step), wl=[float(auto[0]), float(auto[1])], vr=False,
                 surfaces=False, surface_count=-1)
        # the switch may already read "off" (no change event): this volume's own rendering of
        # an earlier visit goes too (other volumes' went in the app's show_volume)
        common.show_in_3d(self.app, node, False)
        self._follow_window_level(node)

    def _follow_window_level(self, node: Any) -> None:
        """Observe the display node of ``node``: a window / level drag in a slice view (Slicer's
        window-level widget, left button) changes it, and the slider shows the new range."""
        if self._display_observer is not None:
            display, tag = self._display_observer
            display.RemoveObserver(tag)
            self._display_observer = None
        display = node.GetDisplayNode() if node is not None else None
        if display is not None:
            self._display_observer = (display, display.AddObserver("ModifiedEvent", self._on_display_modified))

    def _on_display_modified(self, display: Any, _event: str) -> None:
        lo, hi = display.GetWindowLevelMin(), display.GetWindowLevelMax()
        current = self.get("wl") or [lo, hi]
        tolerance = float(self.get("wl_step") or 1e-6) / 2
        if abs(current[0] - lo) > tolerance or abs(current[1] - hi) > tolerance:
            self.set(wl=[float(lo), float(hi)])

    def auto(self) -> None:
        from trame_slicer.core import VolumeWindowLevel

        if self.app.volume_node is not None:
            self.set(wl=[float(v) for v in VolumeWindowLevel.get_volume_auto_min_max_range(self.app.volume_node)])

    def _on_wl(self, **_: Any) -> None:
        from trame_slicer.core import VolumeWindowLevel

        node = self.app.volume_node
        if node is None:
            return
        lo, hi = self.get("wl")
        VolumeWindowLevel.set_volume_node_display_min_max_range(node, float(lo), float(hi))

    def _on_vr(self, **_: Any) -> None:
        node = self.app.volume_node
        if node is None:
            return
        common.show_in_3d(self.app, node, bool(self.get("vr")))

    def _on_surfaces(self, **_: Any) -> None:
        """Surfaces of the segmentations made on the volume on show (its reference geometry)."""
        node = self.app.volume_node
        if node is None:
            return
        visible = bool(self.get("surfaces"))
        scene = self.app.context.scene
        count = 0
        for seg in nodes_of_class(scene, "vtkMRMLSegmentationNode"):
            if seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is node:
                count += show_segments_in_3d(seg, visible)
        self.set(surface_count=count)
        if visible:
            for view in self.app.slicer_app.view_manager.get_threed_views():
                view.fit_view_to_content()
        self.app.render_views()
