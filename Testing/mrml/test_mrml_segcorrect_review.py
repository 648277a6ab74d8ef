"""SegCorrect's review on a real MRML scene (issue #16 item 8): raw, corrected and final
segmentations kept and shown one at a time, the segment legend, the slice a view shows, and
accept / reject per slice still working after the layers were toggled."""

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.mrml.scene import jump_to_slice, slice_index_shown
from clinicalai.mrml.segcorrect_logic import REVIEW_LAYERS, SegCorrectInputs, SegCorrectLogic, SegCorrectOutcome, SegCorrectParameters
from clinicalai.mrml.segmentations import segment_legend, segmentation_to_labels
from clinicalai.mrml.volumes import add_volume_node
from clinicalai.phantoms.cardiac import cardiac_case, cardiac_segments


@pytest.fixture(scope="module")
def case():
    from scipy.spatial.transform import Rotation

    oblique = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    return cardiac_case(5, size=(40, 40), n_slices=7, direction=oblique, origin=(3.0, -6.0, 9.0))


def _run(ctx, case):
    """A finished run: raw = truth with slice 2 emptied, corrected = truth, final = raw."""
    from clinicalai.segcorrect.pipeline import SliceDecision

    truth = case.labels
    raw = truth.array.copy()
    raw[2] = 0
    slices = [SliceDecision(index=k, valid_before=k != 2, valid_after=True, criteria_before={"present": k != 2},
                            criteria_after={"present": True}, dice_raw_vs_corrected=0.0 if k == 2 else 1.0,
                            decision="kept raw", reason="test") for k in range(truth.shape[0])]
    outcome = SegCorrectOutcome(truth.with_array(raw), truth, truth.with_array(raw.copy()), slices, cardiac_segments())
    image = add_volume_node(ctx.scene, case.image, "heart")
    logic = SegCorrectLogic(ctx)
    params = logic.finish(SegCorrectParameters(input_volume=image.GetID()), SegCorrectInputs(image_node=image, image=case.image), outcome)
    return logic, image, params, raw


def _visible(logic, params):
    return {layer for layer, node in logic.review_nodes(params).items() if node.GetDisplayNode().GetVisibility()}


def test_raw_corrected_final_are_kept_and_shown_one_at_a_time(ctx, case):
    logic, image, params, raw = _run(ctx, case)
    nodes = logic.review_nodes(params)
    assert set(nodes) == set(REVIEW_LAYERS)
    assert _visible(logic, params) == {"final"}  # after a run: the result only
    for layer in ("raw", "corrected", "final", "raw"):
        shown = logic.show_layer(layer, params)
        assert shown is nodes[layer] and _visible(logic, params) == {layer}
    # the masks themselves are untouched by showing and hiding them
    np.testing.assert_array_equal(segmentation_to_labels(nodes["raw"], case.image).array, raw)
    np.testing.assert_array_equal(segmentation_to_labels(nodes["corrected"], case.image).array, case.labels.array)

    # accept / reject per slice still fills the final node while another layer is on screen
    params = logic.set_correction(True, [2], params)
    final = segmentation_to_labels(nodes["final"], case.image).array
    np.testing.assert_array_equal(final[2], case.labels.array[2])
    np.testing.assert_array_equal(final[3], raw[3])
    assert _visible(logic, params) == {"raw"}, "a decision does not change which layer is shown"
    params = logic.set_correction(False, [2], params)
    assert not segmentation_to_labels(nodes["final"], case.image).array[2].any()


def test_show_layer_refuses_unknown_or_missing_layers(ctx, case):
    logic, image, params, _ = _run(ctx, case)
    with pytest.raises(InputError, match="one of final, raw, corrected"):
        logic.show_layer("<script>", params)
    assert _visible(logic, params) == {"final"}, "a refused layer changes nothing"
    ctx.scene.RemoveNode(ctx.scene.GetNodeByID(params.corrected_segmentation))
    with pytest.raises(InputError, match="no corrected segmentation"):
        logic.show_layer("corrected", params)
    with pytest.raises(InputError, match="run SegCorrect first"):
        logic.show_layer("raw", SegCorrectParameters(input_volume=image.GetID()))


def test_legend_lists_segments_with_the_colours_drawn(ctx, case):
    logic, _, params, _ = _run(ctx, case)
    legend = segment_legend(logic.review_nodes(params)["final"])
    assert [s["name"] for s in legend] == ["RV", "MYO", "LV"]
    expected = ["#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in s["color"][:3])) for s in cardiac_segments()]
    assert [s["color"] for s in legend] == expected
    assert len(set(expected)) == 3


def test_slice_index_shown_follows_the_view(ctx, case):
    _, image, _, _ = _run(ctx, case)
    red = ctx.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    # a view along the volume's slices (the oblique volume's own k axis) at each slice
    from clinicalai.mrml.volumes import ijk_to_ras, volume_grid_of_node

    to_ras = ijk_to_ras(volume_grid_of_node(image))
    axes = to_ras[:3, :3] / np.linalg.norm(to_ras[:3, :3], axis=0)
    red.SetSliceToRASByNTP(*axes[:, 2], *axes[:, 0], 0, 0, 0, 0)
    for k in (0, 3, case.image.shape[0] - 1):
        jump_to_slice(ctx.scene, image, k)
        assert slice_index_shown(red, image) == k
    # a view across the slices shows no single slice
    green = ctx.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    green.SetLayoutName("Green")
    green.SetSliceToRASByNTP(*axes[:, 0], *axes[:, 1], 0, 0, 0, 0)
    assert slice_index_shown(green, image) is None


def test_slice_views_kept_across_a_run_and_new_views_start_like_red(ctx, case):
    """A run's apply (new nodes, a layout switch) must not move the user's views: their plane,
    zoom and pan are put back; a view the run brought (side-by-side maps) starts like Red."""
    from clinicalai.mrml.scene import restore_slice_views, slice_view_states

    image = add_volume_node(ctx.scene, case.image, "heart")
    red = ctx.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    jump_to_slice(ctx.scene, image, 1)
    red.SetFieldOfView(123.0, 98.0, 1.0)
    red.SetXYZOrigin(4.0, -3.0, 0.0)
    red.UpdateMatrices()
    before = slice_view_states(ctx.scene)
    offset = red.GetSliceOffset()

    # what a run may do: move the views back to the middle, zoom to fit, add a new view
    jump_to_slice(ctx.scene, image, case.image.shape[0] // 2)
    red.SetFieldOfView(300.0, 240.0, 1.0)
    red.UpdateMatrices()
    assert red.GetSliceOffset() != pytest.approx(offset)
    new = ctx.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    new.SetLayoutName("Map2")
    new.SetOrientationToSagittal()

    assert restore_slice_views(ctx.scene, before) >= 2
    assert red.GetSliceOffset() == pytest.approx(offset)
    assert tuple(red.GetFieldOfView()) == pytest.approx((123.0, 98.0, 1.0))
    assert tuple(red.GetXYZOrigin()) == pytest.approx((4.0, -3.0, 0.0))
    # the new view: Red's plane and zoom (linked views at one zoom, on the user's slice)
    states = slice_view_states(ctx.scene)
    np.testing.assert_allclose(states["Map2"].slice_to_ras, states["Red"].slice_to_ras)
    assert states["Map2"].fov == pytest.approx(states["Red"].fov)

    # a view that existed before but was never fitted (a hidden side-by-side view) follows Red
    new.SetFieldOfView(500.0, 500.0, 1.0)
    new.UpdateMatrices()
    before = slice_view_states(ctx.scene)
    restore_slice_views(ctx.scene, before)
    assert tuple(new.GetFieldOfView()) == pytest.approx((500.0, 500.0, 1.0)), "kept as it was without follow"
    restore_slice_views(ctx.scene, before, follow=("Map2",))
    assert tuple(new.GetFieldOfView()) == pytest.approx(tuple(red.GetFieldOfView()))
