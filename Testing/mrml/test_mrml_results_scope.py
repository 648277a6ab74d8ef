"""Issue #16, items 4 and 5, on the MRML scene (the logic the desktop modules and the browser
share): a result leaves the screen with the volume it was made on; every attribution map
reachable from the side-by-side views; the classifier's prediction in words."""

import numpy as np

from clinicalai.mrml.attribution_logic import maps_per_view, prediction_text
from clinicalai.mrml.display import hide_results_of_other_volumes, same_grid, show_results_of_volume
from clinicalai.mrml.segmentations import add_segmentation_node
from clinicalai.mrml.volumes import add_volume_node
from clinicalai.volume import Volume


def _image(shape, spacing=(1.0, 1.0, 1.0)) -> Volume:
    return Volume(np.zeros(shape, np.float32), spacing=spacing, origin=(0.0, 0.0, 0.0), direction=np.eye(3))


def _labels(image: Volume) -> Volume:
    array = np.zeros(image.array.shape, np.uint8)
    array[1:3, 2:4, 2:4] = 1
    return image.with_array(array)


def test_segmentations_and_label_layers_of_another_volume_are_hidden(ctx):
    scene = ctx.scene
    cardiac, brain = _image((4, 8, 8)), _image((6, 10, 12), spacing=(2.0, 1.0, 1.0))
    cardiac_node = add_volume_node(scene, cardiac, "cardiac")
    brain_node = add_volume_node(scene, brain, "brain")
    seg_cardiac = add_segmentation_node(scene, _labels(cardiac), "segcorrect final", reference_node=cardiac_node)
    seg_brain = add_segmentation_node(scene, _labels(brain), "lesion", reference_node=brain_node)
    label_cardiac = add_volume_node(scene, _labels(cardiac), "cardiac labels", class_name="vtkMRMLLabelMapVolumeNode")
    label_brain = add_volume_node(scene, _labels(brain), "brain labels", class_name="vtkMRMLLabelMapVolumeNode")
    red, green = (scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(2))
    red.SetLayoutName("Red")
    green.SetLayoutName("Green")
    red.SetLabelVolumeID(label_cardiac.GetID())
    green.SetLabelVolumeID(label_brain.GetID())

    # the brain is shown: the cardiac mask and label layer go, the brain's own stay
    assert hide_results_of_other_volumes(scene, brain_node) == 2
    assert not seg_cardiac.GetDisplayNode().GetVisibility()
    assert seg_brain.GetDisplayNode().GetVisibility()
    assert red.GetLabelVolumeID() is None and green.GetLabelVolumeID() == label_brain.GetID()
    # nothing is deleted, and nothing is left to hide
    assert scene.GetNodeByID(seg_cardiac.GetID()) is not None
    assert hide_results_of_other_volumes(scene, brain_node) == 0
    assert show_results_of_volume(scene, brain_node) == 0  # the brain's own were never hidden

    # the cardiac image shown again: its mask and label map come back (in the label layer of
    # each view left without one), the brain's go; a segmentation the user hid stays hidden
    seg_hidden_by_user = add_segmentation_node(scene, _labels(cardiac), "hidden by user", reference_node=cardiac_node)
    seg_hidden_by_user.GetDisplayNode().SetVisibility(False)
    hide_results_of_other_volumes(scene, cardiac_node)
    assert not seg_brain.GetDisplayNode().GetVisibility() and green.GetLabelVolumeID() is None
    assert show_results_of_volume(scene, cardiac_node) == 3  # the segmentation, 2 label layers
    assert seg_cardiac.GetDisplayNode().GetVisibility()
    assert red.GetLabelVolumeID() == green.GetLabelVolumeID() == label_cardiac.GetID()
    assert not seg_hidden_by_user.GetDisplayNode().GetVisibility()
    assert show_results_of_volume(scene, cardiac_node) == 0
    # and back to the brain: its lesion and label map return, the cardiac ones go again
    hide_results_of_other_volumes(scene, brain_node)
    assert show_results_of_volume(scene, brain_node) == 3
    assert seg_brain.GetDisplayNode().GetVisibility() and not seg_cardiac.GetDisplayNode().GetVisibility()
    assert red.GetLabelVolumeID() == green.GetLabelVolumeID() == label_brain.GetID()


def test_same_grid_compares_dimensions_and_geometry(ctx):
    scene = ctx.scene
    image = _image((4, 8, 8))
    a = add_volume_node(scene, image, "a")
    assert same_grid(a, add_volume_node(scene, _labels(image), "mask of a", class_name="vtkMRMLLabelMapVolumeNode"))
    assert not same_grid(a, add_volume_node(scene, _image((4, 8, 8), spacing=(1.0, 1.0, 1.5)), "other spacing"))
    assert not same_grid(a, add_volume_node(scene, _image((5, 8, 8)), "other size"))
    assert not same_grid(a, None)


def test_every_map_reaches_a_view_and_the_prediction_is_said():
    # 3 methods + an anomaly map, 3 views: the first three shown, the 4th offered to each view
    assert maps_per_view(["g", "ig", "cam", "anomaly"], 3) == ["g", "ig", "cam"]
    assert maps_per_view(["g", "anomaly"], 3) == ["g", "anomaly", ""]
    summary = {"prediction": {"classes": ["healthy", "lesion"], "probabilities": [0.127, 0.873]}}
    assert prediction_text(summary) == "lesion (P = 0.873)"
    slicewise = {"prediction": {"classes": ["healthy", "lesion"], "probabilities": [0.9, 0.4], "per_slice_max": True}}
    assert prediction_text(slicewise) == "healthy (highest P over slices = 0.900)"
    assert prediction_text({"anomaly_score": 1.0}) == ""  # an anomaly map only: no classifier
