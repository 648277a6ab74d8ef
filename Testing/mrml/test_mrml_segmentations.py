"""Labels <-> segmentation nodes: segments, names, colours, terminology, voxels; .seg.nrrd files."""

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.mrml.segmentations import (
    LABEL_VALUE_TAG,
    add_segmentation_node,
    segment_tag,
    load_segmentation_file,
    segmentation_to_labels,
    segments_from_card,
)
from clinicalai.volume import Volume, write_volume

CARDIAC = [
    {"name": "RV", "value": 1, "color": (0.1, 0.2, 0.9)},
    {"name": "MYO", "value": 2, "color": (0.9, 0.2, 0.1)},
    {"name": "LV", "value": 3, "color": (0.2, 0.8, 0.3)},
    {"name": "Scar", "value": 4, "color": (0.5, 0.5, 0.0)},  # absent from the mask
]


def _segments(node):
    seg = node.GetSegmentation()
    return [seg.GetNthSegment(i) for i in range(seg.GetNumberOfSegments())]


def test_labels_become_named_coloured_segments(ctx, oblique_labels):
    node = add_segmentation_node(ctx.scene, oblique_labels, "heart", CARDIAC)
    segments = _segments(node)
    assert [s.GetName() for s in segments] == ["RV", "MYO", "LV", "Scar"]
    for seg, spec in zip(segments, CARDIAC):
        np.testing.assert_allclose(seg.GetColor(), spec["color"], atol=1e-6)
        assert segment_tag(seg, LABEL_VALUE_TAG) == str(spec["value"])
    terms = [segment_tag(s, "TerminologyEntry") for s in segments]
    assert "^53085002^Right ventricle" in terms[0] and "^74281007^Myocardium" in terms[1]
    assert "^87878005^Left ventricle" in terms[2] and "Tissue" in terms[3]  # Slicer's default for unknown names
    back = segmentation_to_labels(node, oblique_labels)
    assert back.same_grid(oblique_labels)
    np.testing.assert_array_equal(back.array, oblique_labels.array)
    assert [s["name"] for s in back.metadata["segments"]] == ["RV", "MYO", "LV", "Scar"]


def test_label_values_survive_a_reordered_card(ctx, oblique_labels):
    # values that are not 1..n in segment order must come back as themselves
    arr = np.where(oblique_labels.array > 0, oblique_labels.array * 10, 0).astype(np.uint8)
    labels = oblique_labels.with_array(arr)
    node = add_segmentation_node(ctx.scene, labels, "tens", [{"name": "c", "value": 30}, {"name": "a", "value": 10}, {"name": "b", "value": 20}])
    np.testing.assert_array_equal(segmentation_to_labels(node, labels).array, arr)


def test_seg_nrrd_from_write_volume_loads_in_slicer(ctx, oblique_labels, tmp_path):
    path = write_volume(oblique_labels, tmp_path / "mask.seg.nrrd", segments=CARDIAC[:3])
    node = load_segmentation_file(ctx, str(path))
    segments = _segments(node)
    assert [s.GetName() for s in segments] == ["RV", "MYO", "LV"]
    for seg, spec in zip(segments, CARDIAC):
        np.testing.assert_allclose(seg.GetColor(), spec["color"], atol=1e-5)
    back = segmentation_to_labels(node, oblique_labels)
    np.testing.assert_array_equal(back.array, oblique_labels.array)


def test_segments_from_a_model_card():
    from clinicalai.models import parse_card

    card = parse_card(
        {"name": "m", "task": "segmentation", "format": "torchscript",
         "labels": [{"name": "LV", "value": 3, "color": [1, 0, 0]}, {"name": "RV", "value": 1}]}
    )
    segs = segments_from_card(card)
    assert [(s["name"], s["value"]) for s in segs] == [("LV", 3), ("RV", 1)]
    assert segs[0]["color"] == (1.0, 0.0, 0.0) and segs[1]["color"] is None


def test_fractional_labels_and_missing_nodes_are_refused(ctx, oblique_volume):
    with pytest.raises(InputError, match="integer labels"):
        add_segmentation_node(ctx.scene, oblique_volume, "float")
    with pytest.raises(InputError, match="no segmentation"):
        segmentation_to_labels(None, oblique_volume)


def test_surface_segmentation_is_converted_to_labels(ctx, oblique_labels):
    import slicer

    arr = np.zeros((16, 24, 28), np.uint8)
    arr[4:12, 5:19, 6:22] = 1
    labels = Volume(arr, spacing=(1.0, 1.2, 2.0), origin=oblique_labels.origin, direction=oblique_labels.direction)
    node = add_segmentation_node(ctx.scene, labels, "box", [{"name": "box", "value": 1}])
    closed = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    segmentation = node.GetSegmentation()
    assert segmentation.CreateRepresentation(closed)
    segmentation.SetSourceRepresentationName(closed)  # as if imported from an STL model
    segmentation.RemoveRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    back = segmentation_to_labels(node, labels).array
    truth = arr == 1
    dice = 2 * np.sum((back == 1) & truth) / (np.sum(back == 1) + np.sum(truth))
    assert dice > 0.8  # surface -> labelmap rounds the box's corners
