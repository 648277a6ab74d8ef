"""Issue #16, items 3 and 7, on the MRML scene (the logic the desktop modules and the browser
share): per-volume 3D state (no rendering of the previous patient, transfer functions from the
volume's own intensities, visible segment surfaces and map renderings), and what a slice view's
corner annotations and a heat map's colour bar say."""

import numpy as np
import pytest

from clinicalai.mrml.display import (
    DIVERGING_STOPS,
    HEAT_STOPS,
    add_heatmap_node,
    color_bar,
    hide_results_of_other_volumes,
    show_segments_in_3d,
    show_volume_rendering,
    volume_rendering_displays,
)
from clinicalai.mrml.scene import slice_annotation, voxel_at
from clinicalai.mrml.segmentations import add_segmentation_node
from clinicalai.mrml.volumes import add_volume_node
from clinicalai.volume import Volume


@pytest.fixture
def vr_logic(ctx):
    import slicer

    logic = slicer.vtkSlicerVolumeRenderingLogic()
    logic.SetMRMLScene(ctx.scene)
    yield logic
    logic.SetMRMLScene(None)


def _mr_like(shape=(20, 24, 28), spacing=(2.0, 1.0, 1.0)) -> Volume:
    """A head-like MR: ~0 background around a noisy soft-tissue ellipsoid with a bright core."""
    rng = np.random.default_rng(1)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(z**2 + y**2 + x**2)
    array = np.where(r < 0.8, 300.0, 0.0) + np.where(r < 0.3, 500.0, 0.0) + rng.normal(0, 5, shape)
    return Volume(array.astype(np.float32), spacing=spacing, origin=(-10.0, 5.0, 20.0), direction=np.eye(3), modality="MR")


def _opacity(display, value):
    return display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity().GetValue(float(value))


def test_rendering_of_the_previous_volume_is_hidden_when_another_is_shown(ctx, vr_logic):
    cardiac = add_volume_node(ctx.scene, _mr_like(), "cardiac")
    pet = add_volume_node(ctx.scene, _mr_like((12, 16, 16)), "pet")
    shown = show_volume_rendering(vr_logic, cardiac)
    assert shown.GetVisibility()

    hide_results_of_other_volumes(ctx.scene, pet)

    visible = [d for d in volume_rendering_displays(ctx.scene) if d.GetVisibility()]
    assert visible == []  # nothing of the cardiac volume stays in the 3D view
    # the switch turned off before any rendering was made makes none
    assert show_volume_rendering(vr_logic, pet, visible=False) is None
    assert show_volume_rendering(vr_logic, pet).GetVisibility()


def test_mr_rendering_is_transparent_at_background_and_soft_tissue(ctx, vr_logic):
    volume = _mr_like()
    node = add_volume_node(ctx.scene, volume, "mr")
    display = show_volume_rendering(vr_logic, node)
    low, median, top = np.percentile(volume.array, [5, 50, 99.9])
    # an opaque cylinder is what a CT preset made of a 0..800 MR: its background must be see-through
    assert _opacity(display, low) == pytest.approx(0.0, abs=1e-6)
    assert _opacity(display, median) == pytest.approx(0.0, abs=1e-6)
    assert _opacity(display, top) > 0.5


def test_positive_map_rendering_shows_its_hot_region_only(ctx, vr_logic):
    volume = _mr_like()
    cam = np.clip(1.0 - np.abs(np.linspace(-1, 1, volume.shape[2]))[None, None, :] * 2, 0, 1) * np.ones(volume.shape)
    node = add_heatmap_node(ctx.scene, volume.with_array(cam.astype(np.float32)), "cam")
    display = show_volume_rendering(vr_logic, node)
    assert _opacity(display, 0.1) == pytest.approx(0.0, abs=1e-6)
    assert _opacity(display, 1.0) > 0.5  # a [0, 1] Grad-CAM is no longer rendered as nothing
    rgb = display.GetVolumePropertyNode().GetVolumeProperty().GetRGBTransferFunction().GetColor(1.0)
    assert rgb == pytest.approx(HEAT_STOPS[-1][1:])  # the hot end of the slice views' heat table


def test_signed_map_rendering_shows_both_signs(ctx, vr_logic):
    volume = _mr_like()
    signed = np.linspace(-2.0, 2.0, volume.array.size).reshape(volume.shape).astype(np.float32)
    node = add_heatmap_node(ctx.scene, volume.with_array(signed), "ig", signed=True)
    display = show_volume_rendering(vr_logic, node)
    assert _opacity(display, -2.0) > 0.5 and _opacity(display, 2.0) > 0.5
    assert _opacity(display, 0.0) == pytest.approx(0.0, abs=1e-6)


def test_segment_surfaces_are_made_and_visible(ctx):
    volume = _mr_like()
    labels = np.zeros(volume.shape, np.uint8)
    labels[5:12, 6:14, 6:14] = 1
    labels[12:16, 8:12, 14:20] = 2
    node = add_segmentation_node(ctx.scene, volume.with_array(labels), "seg")
    assert show_segments_in_3d(node) == 2
    display = node.GetDisplayNode()
    assert display.GetVisibility() and display.GetVisibility3D()
    assert show_segments_in_3d(node, visible=False) == 2 and not display.GetVisibility3D()


def _hex(stop) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in stop[1:])


def test_colour_bar_of_a_signed_map_is_symmetric_and_diverging(ctx):
    volume = _mr_like()
    signed = np.linspace(-3.0, 1.0, volume.array.size).reshape(volume.shape).astype(np.float32)
    bar = color_bar(add_heatmap_node(ctx.scene, volume.with_array(signed), "ig", signed=True))
    assert bar["signed"] and bar["min"] == pytest.approx(-3.0) and bar["max"] == pytest.approx(3.0)
    middle = bar["colors"][len(bar["colors"]) // 2]
    assert bar["colors"][0] == _hex(DIVERGING_STOPS[0]) and bar["colors"][-1] == _hex(DIVERGING_STOPS[-1])  # ends
    assert sum(int(middle[i:i + 2], 16) for i in (1, 3, 5)) < 8  # ~black at 0 (256-entry table)
    positive = color_bar(add_heatmap_node(ctx.scene, volume.with_array(np.abs(signed)), "cam"))
    assert not positive["signed"] and positive["colors"][0] == "#000000" and positive["colors"][-1] == _hex(HEAT_STOPS[-1])
    assert color_bar(add_volume_node(ctx.scene, volume, "image")) == {}  # not a map: no bar


def test_axial_slice_annotation_orientation_index_and_offset(ctx):
    volume = _mr_like()  # identity LPS direction: k runs S, j runs P, i runs L
    node = add_volume_node(ctx.scene, volume, "mr")
    slice_node = ctx.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetOrientation("Axial")
    k = 7
    ras = (node.GetOrigin()[0], node.GetOrigin()[1], node.GetOrigin()[2] + k * volume.spacing[2])
    slice_node.JumpSliceByCentering(*ras)
    ann = slice_annotation(slice_node, node)
    # radiological convention, as Slicer: patient right on the screen's left
    assert (ann["left"], ann["right"], ann["top"], ann["bottom"]) == ("R", "L", "A", "P")
    assert ann["index"] == k and ann["count"] == volume.shape[0]
    assert ann["offset_mm"] == pytest.approx(ras[2])
    slice_node.JumpSliceByCentering(ras[0], ras[1], ras[2] + 1000.0)
    assert slice_annotation(slice_node, node)["index"] is None  # off the volume


def test_value_under_the_cursor_is_the_voxel_value(ctx):
    volume = _mr_like()
    node = add_volume_node(ctx.scene, volume, "mr")
    import vtk

    i, j, k = 5, 9, 3
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ras = m.MultiplyPoint((i, j, k, 1.0))[:3]
    probe = voxel_at(node, ras)
    assert probe["ijk"] == (i, j, k) and probe["value"] == pytest.approx(float(volume.array[k, j, i]))
    assert voxel_at(node, (1e4, 0.0, 0.0)) is None
