"""Display panel: window / level of the open volume, layout, volume rendering in 3D."""

from __future__ import annotations

from typing import Any

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from . import common
from .base import Panel


class DisplayPanel(Panel):
    key = "display"
    title = "Window/level and 3D"

    def __init__(self, app) -> None:
        super().__init__(app)
        self.set(wl=[0.0, 1.0], wl_min=0.0, wl_max=1.0, wl_step=0.01, vr=False,
                 layouts=self.app.layout_logic.layout_manager.get_layout_ids())
        self.state.change(self.k("wl"))(self._on_wl)
        self.state.change(self.k("vr"))(self._on_vr)

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

    def on_volume_changed(self, node: Any) -> None:
        from trame_slicer.core import VolumeWindowLevel

        lo, hi = VolumeWindowLevel.get_volume_scalar_range(node)
        auto = list(VolumeWindowLevel.get_volume_auto_min_max_range(node))
        step = max((hi - lo) / 500.0, 1e-6)
        self.set(wl_min=float(lo), wl_max=float(hi), wl_step=float(step), wl=[float(auto[0]), float(auto[1])], vr=False)

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
