"""Label volumes <-> ``vtkMRMLSegmentationNode``: one segment per label, named and coloured
from the model card, with standard (SNOMED CT) terminology where it exists."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..volume import Volume
from ..volume.core import Grid
from ..volume.formats import SEGMENT_COLORS
from ..volume.integrity import check_image_file
from .volumes import array_from_image_data, image_data_from_array, ijk_to_ras, unique_name, vtk_matrix

#: segment tag holding the label value, so a segmentation goes back to the card's labels
LABEL_VALUE_TAG = "ClinicalAI.LabelValue"

_ANATOMY = ("SCT", "123037004", "Anatomical Structure")
_MORPH = ("SCT", "49755003", "Morphologically Altered Structure")
#: SNOMED CT codes of the structures the bundled models segment (Slicer's DICOM master list)
STANDARD_TERMS: Dict[str, tuple] = {
    "lv": (_ANATOMY, ("SCT", "87878005", "Left ventricle")),
    "left ventricle": (_ANATOMY, ("SCT", "87878005", "Left ventricle")),
    "rv": (_ANATOMY, ("SCT", "53085002", "Right ventricle")),
    "right ventricle": (_ANATOMY, ("SCT", "53085002", "Right ventricle")),
    "myo": (_ANATOMY, ("SCT", "74281007", "Myocardium")),
    "myocardium": (_ANATOMY, ("SCT", "74281007", "Myocardium")),
    "bile duct": (_ANATOMY, ("SCT", "28273000", "Bile duct")),
    "biliary ducts": (_ANATOMY, ("SCT", "28273000", "Bile duct")),
    "brain": (_ANATOMY, ("SCT", "12738006", "Brain")),
    "lesion": (_MORPH, ("SCT", "52988006", "Lesion")),
    "tumor": (_MORPH, ("SCT", "108369006", "Neoplasm")),
}


def terminology_entry(name: str, terminology: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """Slicer's terminology tag string for a structure name, or ``None`` if none is known.

    ``terminology`` (from a card label) may give ``{"category": [scheme, value, meaning],
    "type": [scheme, value, meaning]}`` for structures not in :data:`STANDARD_TERMS`.
    """
    if terminology and "type" in terminology:
        category = tuple(terminology.get("category", _ANATOMY))
        type_ = tuple(terminology["type"])
    elif name.strip().lower() in STANDARD_TERMS:
        category, type_ = STANDARD_TERMS[name.strip().lower()]
    else:
        return None
    code = lambda c: "^".join(str(v) for v in c)  # noqa: E731
    return (
        "Segmentation category and type - DICOM master list"
        f"~{code(category)}~{code(type_)}~^^"
        "~Anatomic codes - DICOM master list~^^~^^"
    )


def segments_from_card(card: Any) -> List[Dict[str, Any]]:
    """``[{"name", "value", "color", "terminology"}]`` of a model card's labels
    (:func:`clinicalai.models.card.segments_from_card`)."""
    # imported on use: the Slicer module files load this module in a fresh Slicer, where
    # pydantic (which clinicalai.models.card needs) may not be installed yet
    from ..models.card import segments_from_card as card_segments

    return card_segments(card)


def _oriented_image(labels: Volume):
    import slicer

    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(image_data_from_array(labels.array))
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras(labels)))
    return image


def _default_segments(labels: np.ndarray) -> List[Dict[str, Any]]:
    return [{"name": f"Segment_{int(v)}", "value": int(v)} for v in np.unique(labels) if v != 0]


def fill_segmentation_node(
    node: Any,
    labels: Volume,
    segments: Optional[Sequence[Mapping[str, Any]]] = None,
) -> Any:
    """Replace the segments of ``node`` with one segment per entry of ``segments`` (every
    card label gets a segment, empty or not), on the grid of ``labels``."""
    import slicer

    arr = np.asarray(labels.array)
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
        if not np.all(arr == np.round(arr)):
            raise InputError("a segmentation needs integer labels; this volume has fractional values")
    arr = arr.astype(np.int32)
    segs = list(segments) if segments else _default_segments(arr)
    reference = _oriented_image(labels.with_array(np.zeros(arr.shape, np.uint8)))
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    segmentation.SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(reference),
    )
    segmentation.SetSourceRepresentationName(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    default_colors = SEGMENT_COLORS  # one palette for files and nodes
    for i, seg in enumerate(segs):
        value = int(seg["value"])
        segment_id = f"Segment_{value}"
        color = seg.get("color") or default_colors[i % len(default_colors)]
        segment_id = segmentation.AddEmptySegment(segment_id, str(seg.get("name") or segment_id), [float(c) for c in color[:3]])
        segment = segmentation.GetSegment(segment_id)
        segment.SetTag(LABEL_VALUE_TAG, str(value))
        term = terminology_entry(str(seg.get("name") or ""), seg.get("terminology"))
        if term:
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), term)
        mask = labels.with_array((arr == value).astype(np.uint8))
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            _oriented_image(mask), node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
        )
    return node


def add_segmentation_node(
    scene: Any,
    labels: Volume,
    name: str,
    segments: Optional[Sequence[Mapping[str, Any]]] = None,
    reference_node: Any = None,
) -> Any:
    """A new segmentation node (unique ``name``) holding ``labels``; see :func:`fill_segmentation_node`."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", unique_name(scene, name))
    node.CreateDefaultDisplayNodes()
    fill_segmentation_node(node, labels, segments)
    if reference_node is not None:
        node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), reference_node.GetID())
    return node


def show_outline_only(node: Any) -> Any:
    """Draw a segmentation as its outline in the slice views, no fill: a lesion VOI over a
    heat map must not hide the map's peak inside it (the fill covered the Grad-CAM maximum)."""
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    return node


def segment_legend(node: Any) -> List[Dict[str, Any]]:
    """``[{"name", "color"}]`` of a segmentation's segments in order, ``color`` as ``#rrggbb``
    (the colour the slice views draw it in): a legend the panels show beside the views."""
    segmentation = node.GetSegmentation()
    out = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        rgb = [min(255, max(0, int(round(255 * c)))) for c in segment.GetColor()[:3]]
        out.append({"name": segment.GetName(), "color": "#{:02x}{:02x}{:02x}".format(*rgb)})
    return out


def segment_tag(segment: Any, name: str) -> str:
    """A segment's tag value ("" when it has none)."""
    from vtkmodules.vtkCommonCore import reference

    value = reference("")
    return str(value) if segment.GetTag(name, value) else ""


def segment_label_values(node: Any, label_names: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
    """``{segment_id: label value}``: the segment's tag, else its name in ``label_names``
    (card names, case-insensitive), else its label value in a shared labelmap (``.seg.nrrd``),
    else its position (1, 2, ...)."""
    segmentation = node.GetSegmentation()
    names = {k.lower(): int(v) for k, v in (label_names or {}).items()}
    out: Dict[str, int] = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        tag = segment_tag(segment, LABEL_VALUE_TAG).strip()
        if tag.lstrip("-").isdigit():
            out[segment_id] = int(tag)
        elif segment.GetName().lower() in names:
            out[segment_id] = names[segment.GetName().lower()]
        elif segment.GetLabelValue() > 0:
            out[segment_id] = int(segment.GetLabelValue())
        else:
            out[segment_id] = i + 1
    return out


def segmentation_to_labels(
    node: Any,
    grid: "Grid | Volume",
    label_names: Optional[Mapping[str, int]] = None,
) -> Volume:
    """The labels of a segmentation node resampled (nearest) onto ``grid``; segment values as
    in :func:`segment_label_values`; later segments win where segments overlap. Metadata
    ``segments`` lists name / value / colour of each segment. A segmentation kept as closed
    surfaces (imported from a model) is converted by Slicer's own converter."""
    import slicer

    g = grid.grid if isinstance(grid, Volume) else grid
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        raise InputError("no segmentation is selected")
    reference = _oriented_image(Volume.from_grid(g, np.zeros(g.shape, np.uint8)))
    out = np.zeros(g.shape, np.int32)
    segments = []
    segmentation = node.GetSegmentation()
    for segment_id, value in segment_label_values(node, label_names).items():
        binary = slicer.vtkOrientedImageData()
        segments.append(
            {
                "id": segment_id,
                "name": segmentation.GetSegment(segment_id).GetName(),
                "value": value,
                "color": tuple(segmentation.GetSegment(segment_id).GetColor()),
            }
        )
        if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(node, segment_id, binary):
            continue  # an empty segment has no labelmap
        x0, x1, y0, y1, z0, z1 = binary.GetExtent()
        if x1 < x0 or y1 < y0 or z1 < z0:
            continue
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(binary, reference, resampled)
        # the labelmap may be a layer shared by several segments: keep this segment's value only
        mask = array_from_image_data(resampled) == max(1, segmentation.GetSegment(segment_id).GetLabelValue())
        out[mask] = value
    dtype = np.uint8 if out.max(initial=0) < 256 else np.uint16
    volume = Volume.from_grid(g, out.astype(dtype), modality="SEG", units="label")
    volume.metadata["segments"] = segments
    volume.metadata["mrml_node_id"] = node.GetID()
    return volume


def load_segmentation_file(context: Any, path: str, name: Optional[str] = None) -> Any:
    """Load a ``.seg.nrrd`` (or labelmap) through Slicer's segmentations logic."""

    check_image_file(path)  # a malformed, cut-off or oversized file never reaches the native reader
    node = context.segmentations_logic.LoadSegmentationFromFile(str(path), True, name or "")
    if node is None:
        raise InputError(f"{path}: Slicer cannot read it as a segmentation")
    return node
