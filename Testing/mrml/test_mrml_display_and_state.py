"""Heat-map display, slice-view composition, tables and parameter nodes (also through a
saved and reloaded .mrml scene)."""

import dataclasses
from typing import List, Optional

import numpy as np
import pytest

from clinicalai.mrml.display import (
    DIVERGING_TABLE,
    HEAT_TABLE,
    add_heatmap_node,
    set_foreground_opacity,
    show_in_slice_views,
    show_volume_rendering,
)
from clinicalai.mrml.pet_logic import LESION_VOI_COLOR
from clinicalai.mrml.parameters import get_parameter_node, node_field, nodes_field, read_parameters, write_parameters
from clinicalai.mrml.tables import add_table_node, table_rows
from clinicalai.mrml.volumes import add_volume_node, node_to_volume


def _slice_views(scene, names=("Red", "Yellow", "Green")):
    out = []
    for name in names:
        c = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        c.SetLayoutName(name)
        out.append(c)
    return out


def test_positive_heatmap_gets_heat_table_window_and_threshold(ctx, oblique_volume):
    cam = oblique_volume.with_array(np.abs(oblique_volume.array) * 3.0)
    node = add_heatmap_node(ctx.scene, cam, "cam", signed=False, threshold=1.5)
    display = node.GetDisplayNode()
    assert display is not None and display.IsA("vtkMRMLScalarVolumeDisplayNode")
    assert display.GetColorNode().GetName() == HEAT_TABLE
    assert not display.GetAutoWindowLevel()
    assert display.GetWindowLevelMin() == pytest.approx(cam.array.min(), rel=1e-5)
    assert display.GetWindowLevelMax() == pytest.approx(cam.array.max(), rel=1e-5)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(1.5)
    assert node_to_volume(node).same_grid(oblique_volume)
    # the heat table starts black (0 only dims the image under the overlay) and ends a
    # saturated red, which stays visible over a white image (issue 16: a white / yellow top
    # vanished over the bright voxels a Grad-CAM peaks on)
    table = display.GetColorNode()
    rgba_lo, rgba_hi = [0.0] * 4, [0.0] * 4
    table.GetColor(0, rgba_lo)
    table.GetColor(table.GetNumberOfColors() - 1, rgba_hi)
    assert rgba_lo[:3] == [0.0, 0.0, 0.0]
    assert rgba_hi[0] > 0.8 and max(rgba_hi[1:3]) < 0.1
    assert _visible_over_white_and_black(table)
    # and never near the cyan of PetRecurrence's lesion VOI outline drawn over it
    for i in range(table.GetNumberOfColors()):
        table.GetColor(i, rgba_hi)
        assert np.linalg.norm(np.subtract(rgba_hi[:3], LESION_VOI_COLOR)) > 0.5, (i, rgba_hi)


def _visible_over_white_and_black(table, top_fraction: float = 0.1, opacity: float = 0.5) -> bool:
    """Every entry of the table's top ``top_fraction`` (the map's peak), blended at ``opacity``
    over a white and over a black image, differs from that image by >= 0.2 in some channel."""
    n = table.GetNumberOfColors()
    for i in range(int(n * (1 - top_fraction)), n):
        rgba = [0.0] * 4
        table.GetColor(i, rgba)
        for background in (1.0, 0.0):
            blended = [opacity * c + (1 - opacity) * background for c in rgba[:3]]
            if max(abs(b - background) for b in blended) < 0.2:
                return False
    return True


def test_signed_map_gets_diverging_table_symmetric_window(ctx, oblique_volume):
    node = add_heatmap_node(ctx.scene, oblique_volume, "signed", signed=True)
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == DIVERGING_TABLE
    m = float(np.abs(oblique_volume.array).max())
    assert display.GetWindowLevelMin() == pytest.approx(-m, rel=1e-5)
    assert display.GetWindowLevelMax() == pytest.approx(m, rel=1e-5)
    assert not display.GetApplyThreshold()
    # deep blue <- light blue <- black (0) -> orange -> red: a dark 0 dims the image under the
    # map instead of washing it out, the two signs stay apart, both extremes saturated
    table = display.GetColorNode()
    n = table.GetNumberOfColors()
    rgba = {i: [0.0] * 4 for i in (0, n // 4, n // 2, 3 * n // 4, n - 1)}
    for i, c in rgba.items():
        table.GetColor(i, c)
    assert rgba[0][2] > 0.8 and max(rgba[0][:2]) < 0.1  # most negative: deep blue
    assert rgba[n - 1][0] > 0.8 and max(rgba[n - 1][1:3]) < 0.1  # most positive: red
    assert max(rgba[n // 2][:3]) < 0.01
    assert rgba[n // 4][2] > 0.9 and rgba[n // 4][0] == 0.0  # negative: blue
    assert rgba[3 * n // 4][0] > 0.9 and rgba[3 * n // 4][2] == 0.0  # positive: orange-red
    assert _visible_over_white_and_black(table)
    # one table per scene, shared by every signed map
    again = add_heatmap_node(ctx.scene, oblique_volume, "signed")
    assert again.GetDisplayNode().GetColorNodeID() != display.GetColorNodeID()  # positive map: heat table
    third = add_heatmap_node(ctx.scene, oblique_volume, "signed 2", signed=True)
    assert third.GetDisplayNode().GetColorNodeID() == display.GetColorNodeID()


def test_map_shown_as_foreground_over_the_image(ctx, oblique_volume):
    views = _slice_views(ctx.scene)
    image = add_volume_node(ctx.scene, oblique_volume, "image")
    cam = add_heatmap_node(ctx.scene, oblique_volume.with_array(np.abs(oblique_volume.array)), "cam")
    assert show_in_slice_views(ctx.scene, background=image, foreground=cam, opacity=0.4) == 3
    for c in views:
        assert c.GetBackgroundVolumeID() == image.GetID() and c.GetForegroundVolumeID() == cam.GetID()
        assert c.GetForegroundOpacity() == pytest.approx(0.4)
    set_foreground_opacity(ctx.scene, 0.8)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for c in views)


def test_show_in_3d_creates_volume_rendering(ctx, oblique_volume):
    import slicer

    logic = slicer.vtkSlicerVolumeRenderingLogic()
    logic.SetMRMLScene(ctx.scene)
    node = add_heatmap_node(ctx.scene, oblique_volume.with_array(np.abs(oblique_volume.array)), "cam")
    display = show_volume_rendering(logic, node)
    assert display.IsA("vtkMRMLVolumeRenderingDisplayNode") and display.GetVisibility()
    assert display.GetVolumeNodeID() == node.GetID()
    logic.SetMRMLScene(None)


def test_table_rows_round_trip(ctx):
    rows = [
        {"slice": 0, "valid_before": True, "dice": 0.5, "decision": "raw"},
        {"slice": 1, "valid_before": False, "dice": None, "decision": "corrected"},
    ]
    node = add_table_node(ctx.scene, rows, "slices")
    back = table_rows(node)
    assert [r["slice"] for r in back] == [0, 1]
    assert [r["valid_before"] for r in back] == [1, 0]
    assert back[0]["dice"] == 0.5 and np.isnan(back[1]["dice"])
    assert [r["decision"] for r in back] == ["raw", "corrected"]


@dataclasses.dataclass
class _Params:
    input_volume: Optional[str] = node_field()
    maps: List[str] = nodes_field()
    threshold: float = 0.5
    methods: List[str] = dataclasses.field(default_factory=lambda: ["gradient"])
    device: str = "auto"


def test_parameter_node_holds_and_restores_state(ctx, oblique_volume, tmp_path):
    a = add_volume_node(ctx.scene, oblique_volume, "a")
    b = add_volume_node(ctx.scene, oblique_volume, "b")
    node = get_parameter_node(ctx.scene, "ClinicalAITest")
    assert get_parameter_node(ctx.scene, "ClinicalAITest") is node  # singleton
    assert read_parameters(node, _Params) == _Params()  # defaults when empty
    state = _Params(a.GetID(), [b.GetID(), a.GetID()], 0.25, ["gradcam", "occlusion"], "cpu")
    write_parameters(node, state)
    assert read_parameters(node, _Params) == state

    # through a saved scene, loaded into a scene whose node IDs are already taken
    from clinicalai.mrml.headless import create_headless_context

    ctx.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert ctx.scene.Commit()
    other = create_headless_context(install_stand_ins=False)
    other.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "already here")
    other.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert other.scene.Import()
    restored = read_parameters(get_parameter_node(other.scene, "ClinicalAITest"), _Params)
    assert restored.threshold == 0.25 and restored.methods == ["gradcam", "occlusion"] and restored.device == "cpu"
    names = lambda ids: [other.scene.GetNodeByID(i).GetName() for i in ids]  # noqa: E731
    assert names([restored.input_volume]) == ["a"] and names(restored.maps) == ["b", "a"]
