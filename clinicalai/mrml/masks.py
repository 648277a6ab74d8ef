"""Masks as masks: what a file's content is (image, label map, segmentation), which open image a
mask belongs to (the one whose voxel grid it shares), and which masks the brain-mask and
reference-lesion choosers offer for an image. The browser's "Open as" and the desktop panels'
mask choosers share it.

A mask belongs to an image when its voxels are that image's voxels: the same grid within the
package's 1e-4 tolerance (:meth:`clinicalai.volume.core.Grid.allclose`). A mask drawn on another
patient (a cardiac RV / MYO / LV mask for a brain) is never offered: resampling it would give a
mask of the wrong anatomy with no error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..volume import Volume
from ..volume.core import Grid
from .display import MAP_KIND_ATTRIBUTE, same_grid
from .scene import nodes_of_class, scene_transaction
from .segmentations import add_segmentation_node, load_segmentation_file
from .volumes import add_volume_node, load_volume_file, numpy_matrix, volume_grid_of_node

OPEN_AS_IMAGE = "image"
OPEN_AS_LABELMAP = "labelmap"
OPEN_AS_SEGMENTATION = "segmentation"
#: what a file can be opened as ("" = the guess of :func:`guess_open_as`)
OPEN_AS_KINDS = (OPEN_AS_IMAGE, OPEN_AS_LABELMAP, OPEN_AS_SEGMENTATION)
OPEN_AS_TITLES = {"": "guess from the content", OPEN_AS_IMAGE: "image",
                  OPEN_AS_LABELMAP: "label map / mask", OPEN_AS_SEGMENTATION: "segmentation"}

#: more distinct whole-number values than this is an image (an integer CT / MR has hundreds or
#: thousands); a label map has a few labels (brain parcellations: some tens)
MAX_LABEL_VALUES = 64

#: node reference role from a mask (labelmap or segmentation node) to the image it belongs to
ATTACHED_IMAGE_ROLE = "ClinicalAI.AttachedImage"


@dataclass(frozen=True)
class OpenAsGuess:
    """What :func:`guess_open_as` made of a file: ``kind`` (one of :data:`OPEN_AS_KINDS`) and
    ``reason``, one phrase the message shows."""

    kind: str
    reason: str


@dataclass(frozen=True)
class ContentSummary:
    """What the guess needs of a volume's voxels: the dtype name, whether every value is a whole
    number, and how many distinct values there are (counted up to ``MAX_LABEL_VALUES + 1``)."""

    dtype: str
    integral: bool
    distinct_values: int


def content_summary(array: np.ndarray) -> ContentSummary:
    """:class:`ContentSummary` of a voxel array (any shape)."""
    a = np.asarray(array)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        integral = True
    else:
        integral = bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))
    if not integral:
        return ContentSummary(str(a.dtype), False, 0)
    # a sample of ~1e6 voxels first: an integer image (CT) shows its many values there, and
    # only a label map pays for the full count
    sample = np.unique(a.reshape(-1)[:: max(1, a.size // 1_000_000)])
    values = sample if sample.size > MAX_LABEL_VALUES else np.unique(a)
    return ContentSummary(str(a.dtype), True, int(min(values.size, MAX_LABEL_VALUES + 1)))


def guess_open_as(summary: ContentSummary, on_image_grid: Optional[bool]) -> OpenAsGuess:
    """What a file's content most likely is, from its voxels and the images already open.

    Why these rules: a label map or mask holds whole numbers (labels), and few of them; an image
    holds intensities, fractional (float) or with many distinct values. A whole-number volume
    with few values on the grid of an open image is that image's mask. On no open image's grid
    it is still a label map (a mask of an image not open), never a reason to replace the image
    on show. With no image open at all, only a binary volume is taken for a mask: a volume with
    a few whole-number values and nothing to lie on is more likely a coarse image.

    Args:
        summary: :func:`content_summary` of the file's voxels.
        on_image_grid: whether its grid is an open image's; ``None`` when no image is open.
    """
    n = summary.distinct_values
    if not summary.integral:
        return OpenAsGuess(OPEN_AS_IMAGE, f"fractional values ({summary.dtype}): an image")
    if n > MAX_LABEL_VALUES:
        return OpenAsGuess(OPEN_AS_IMAGE, f"more than {MAX_LABEL_VALUES} distinct values: an image")
    few = f"{n} whole-number value{'s' if n != 1 else ''}"
    if on_image_grid:
        return OpenAsGuess(OPEN_AS_LABELMAP, f"{few} on an open image's grid: a mask of it")
    if on_image_grid is False:
        return OpenAsGuess(OPEN_AS_LABELMAP, f"{few}: a label map")
    if n <= 2:
        return OpenAsGuess(OPEN_AS_LABELMAP, f"{few}: a binary mask")
    return OpenAsGuess(OPEN_AS_IMAGE, f"{few} and no image open: an image")


def resolve_open_as(choice: Any, guess: OpenAsGuess, segmentation_file: bool = False, series: bool = False) -> str:
    """The kind a file is opened as: the user's ``choice`` (one of :data:`OPEN_AS_KINDS`, checked
    here: it may come from a browser) over the ``guess`` ("" = the guess). A ``.seg.nrrd``
    (``segmentation_file``) is a segmentation and a DICOM series (``series``) an image, whatever
    the guess.

    Raises:
        InputError: an unknown choice, or one the file cannot be (a DICOM series as a mask,
            a ``.seg.nrrd`` as an image).
    """
    if choice not in ("", None) and choice not in OPEN_AS_KINDS:
        raise InputError(f"'open as' must be one of {', '.join(OPEN_AS_KINDS)}; got {str(choice)[:40]!r}")
    if series:
        if choice not in ("", None, OPEN_AS_IMAGE):
            raise InputError("a DICOM series opens as an image, not as a mask")
        return OPEN_AS_IMAGE
    if segmentation_file:
        if choice == OPEN_AS_IMAGE:
            raise InputError("a segmentation file (.seg.nrrd, DICOM SEG) opens as a segmentation (or label map), not as an image")
        return OPEN_AS_SEGMENTATION
    return choice or guess.kind


# ---------------------------------------------------------------------- images and masks
def image_nodes(scene: Any) -> List[Any]:
    """The scene's images: scalar volume nodes that are neither label maps nor heat maps."""
    return [node for node in nodes_of_class(scene, "vtkMRMLScalarVolumeNode")
            if not (node.IsA("vtkMRMLLabelMapVolumeNode") or node.GetAttribute(MAP_KIND_ATTRIBUTE) or node.GetImageData() is None)]


def images_on_grid(scene: Any, grid: Grid, prefer: Any = None) -> List[Any]:
    """The open images whose grid is ``grid`` (within 1e-4), ``prefer`` (the image on show) first,
    then the most recently added."""
    found = [n for n in reversed(image_nodes(scene)) if volume_grid_of_node(n).allclose(grid, atol=1e-4)]
    return sorted(found, key=lambda n: n is not prefer)


def attach_mask(mask_node: Any, image_node: Any) -> None:
    """Record that ``mask_node`` (labelmap or segmentation) is a mask of ``image_node``; a
    segmentation takes the image's geometry as its reference (the segment editor's, too)."""
    mask_node.SetNodeReferenceID(ATTACHED_IMAGE_ROLE, image_node.GetID())
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        mask_node.SetReferenceImageGeometryParameterFromVolumeNode(image_node)


def attached_image(mask_node: Any) -> Any:
    """The image ``mask_node`` was attached to (:func:`attach_mask`), or ``None``."""
    return mask_node.GetNodeReference(ATTACHED_IMAGE_ROLE)


def set_segmentation_grid(node: Any, grid: Grid) -> None:
    """Record ``grid`` as a segmentation's reference geometry (a mask on no open image's grid
    keeps its own, so a later image on that grid finds it)."""
    import slicer

    from .segmentations import _oriented_image

    reference = _oriented_image(Volume.from_grid(grid, np.zeros(grid.shape, np.uint8)))
    node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(reference),
    )


def _segmentation_grid(node: Any) -> Optional[Grid]:
    """A segmentation's reference geometry as a :class:`Grid`, ``None`` when it has none."""
    import slicer

    text = node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    if not text:
        return None
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    image = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, image)
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    if x1 < x0 or y1 < y0 or z1 < z0:
        return None
    m = vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    matrix = numpy_matrix(m)
    matrix[:3, 3] = (matrix @ np.array([x0, y0, z0, 1.0]))[:3]  # the extent's first voxel
    from .volumes import grid_from_ijk_to_ras

    return grid_from_ijk_to_ras(matrix, (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1))


def mask_on_image(mask_node: Any, image_node: Any) -> bool:
    """Whether ``mask_node`` (labelmap volume or segmentation) is a mask of ``image_node``:
    attached to it, a segmentation referencing it, or on its grid (within 1e-4)."""
    if mask_node is None or image_node is None or image_node.GetImageData() is None:
        return False
    if attached_image(mask_node) is image_node:
        return True
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        if mask_node.GetNodeReference(mask_node.GetReferenceImageGeometryReferenceRole()) is image_node:
            return True
        grid = _segmentation_grid(mask_node)
        if grid is not None:
            return grid.allclose(volume_grid_of_node(image_node), atol=1e-4)
        return _segments_on_lattice(mask_node, volume_grid_of_node(image_node))
    return same_grid(mask_node, image_node)


def _segments_on_lattice(node: Any, grid: Grid) -> bool:
    """Whether a segmentation with no reference geometry (a ``.seg.nrrd`` from Slicer's "Add
    data") holds its labelmaps on the voxels of ``grid``: same axes and voxel size, a whole
    number of voxels apart, inside the grid. Its labelmaps may be cropped to the segments, so
    the grids themselves differ."""
    import slicer

    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    from .volumes import ijk_to_ras

    segmentation = node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        return False
    to_index = np.linalg.inv(ijk_to_ras(grid))
    for i in range(segmentation.GetNumberOfSegments()):
        labelmap = slicer.vtkOrientedImageData()
        if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
                node, segmentation.GetNthSegmentID(i), labelmap, False):
            return False
        x0, x1, y0, y1, z0, z1 = labelmap.GetExtent()
        if x1 < x0 or y1 < y0 or z1 < z0:
            continue  # an empty segment lies on every grid
        m = vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(m)
        index = to_index @ numpy_matrix(m)  # the segment's voxel (i, j, k) -> the grid's
        corners = index @ np.array([[x0, y0, z0, 1.0], [x1, y1, z1, 1.0]]).T
        if not (np.allclose(index[:3, :3], np.eye(3), atol=1e-4) and np.allclose(index[:3, 3], np.round(index[:3, 3]), atol=1e-3)):
            return False
        if np.any(corners[:3].min(axis=1) < -1e-3) or np.any(corners[:3].max(axis=1) > np.array(grid.shape[::-1]) - 1 + 1e-3):
            return False
    return True


def mask_nodes(scene: Any) -> List[Any]:
    """The scene's masks as a user sees them: labelmap volumes, then segmentations (nodes
    hidden from editors left out)."""
    return [node for cls in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode")
            for node in nodes_of_class(scene, cls) if not node.GetHideFromEditors()]


def masks_for_image(scene: Any, image_node: Any) -> Tuple[List[Any], List[Any]]:
    """``(offered, not_offered)``: the scene's masks (:func:`mask_nodes`) of ``image_node``
    (:func:`mask_on_image`), and those of other grids; with no image, none is offered."""
    offered, others = [], []
    for node in mask_nodes(scene):
        (offered if mask_on_image(node, image_node) else others).append(node)
    return offered, others


def mask_chooser_note(image_node: Any, offered: Sequence[Any], others: Sequence[Any]) -> str:
    """One line for a mask chooser saying what it offers and why not more (the "none" entry's
    text when it offers nothing)."""
    if image_node is None:
        return "no image open: masks are offered for the image on show"
    hidden = f"; {len(others)} on another image's grid not offered" if others else ""
    if not offered:
        return f"no mask on the grid of {image_node.GetName()}{hidden}"
    return f"masks on the grid of {image_node.GetName()}{hidden}"


def grid_text(grid: Grid) -> str:
    """A grid in words for a message: ``"64 x 64 x 48 voxels of 2 x 2 x 2 mm"`` (x, y, z)."""
    z, y, x = grid.shape
    sx, sy, sz = grid.spacing
    return f"{x} x {y} x {z} voxels of {sx:g} x {sy:g} x {sz:g} mm"


# ---------------------------------------------------------------------- opening a mask
def _dicom_seg_on_an_image(scene: Any, labels: Volume, current: Any = None) -> Tuple[List[Any], Volume]:
    """``([image], labels placed on its grid)`` for the first open image (``current`` first)
    whose voxels a DICOM SEG's frames lie on, else ``([], labels)`` as they are."""
    from ..volume.spatial import place_on_grid

    candidates = sorted(reversed(image_nodes(scene)), key=lambda n: n is not current)
    for image in candidates:
        try:
            return [image], place_on_grid(labels, volume_grid_of_node(image))
        except InputError:
            continue
    return [], labels


def add_mask_node(scene: Any, labels: Volume, name: str, kind: str, image_node: Any = None) -> Any:
    """A new labelmap volume node (``kind`` :data:`OPEN_AS_LABELMAP`) or segmentation node
    (:data:`OPEN_AS_SEGMENTATION`, one segment per label) holding ``labels`` (whole numbers, any
    dtype), attached to ``image_node`` when given (it must share the grid).

    Raises:
        InputError: fractional values, or ``image_node`` on another grid.
    """
    arr = np.asarray(labels.array)
    if not content_summary(arr).integral:
        raise InputError(f"{name}: a mask needs whole-number labels; this volume has fractional values: open it as an image")
    if image_node is not None and not volume_grid_of_node(image_node).allclose(labels.grid, atol=1e-4):
        raise InputError(f"{name} is not on the grid of {image_node.GetName()}")
    dtype = np.uint8 if arr.min(initial=0) >= 0 and arr.max(initial=0) < 256 else np.int32
    labels = labels.with_array(arr.astype(dtype), modality="SEG", units="label")
    if kind == OPEN_AS_SEGMENTATION:  # a file's own segment names and colours (DICOM SEG) are kept
        node = add_segmentation_node(scene, labels, name, segments=labels.metadata.get("segments"))
    elif kind == OPEN_AS_LABELMAP:
        node = add_volume_node(scene, labels, name, class_name="vtkMRMLLabelMapVolumeNode")
    else:
        raise InputError(f"a mask opens as a label map or a segmentation, not as {kind!r}")
    if image_node is not None:
        attach_mask(node, image_node)
    return node


def show_label_outline(scene: Any, labelmap_node: Any) -> int:
    """Draw ``labelmap_node`` as an outline in the label layer of every slice view (over the
    image on show, which stays the background); returns how many views were set."""
    from .display import show_in_slice_views

    for node in nodes_of_class(scene, "vtkMRMLSliceNode"):
        node.SetUseLabelOutline(True)
    return show_in_slice_views(scene, label=labelmap_node)


@dataclass
class OpenedFile:
    """What :func:`open_file_as` made of a file: the new ``node``, the ``kind`` it was opened as,
    the ``image`` a mask was attached to (``None`` for an image, and for a mask on no open
    image's grid) and the one-line ``message`` for the user."""

    node: Any
    kind: str
    image: Any
    message: str


def open_file_as(context: Any, path: "str | Path", choice: str = "", current: Any = None, name: Optional[str] = None,
                 shown: Optional[str] = None, series_uid: Optional[str] = None, frame: Optional[int] = None,
                 static_window: Optional[Tuple[float, float]] = None) -> OpenedFile:
    """Open a NIfTI / NRRD / ``.seg.nrrd`` / DICOM SEG file or a DICOM series folder as the user's ``choice``
    (one of :data:`OPEN_AS_KINDS`, "" = :func:`guess_open_as`). A mask is attached to the open
    image whose grid it shares (``current``, the image on show, first) and never becomes an
    image; one on no open image's grid is opened anyway and the message says so. Nothing is
    added to the scene when it fails. ``name``: the new node's (default the file's stem);
    ``shown``: the file as the message names it (default its name; a browser's relative path);
    ``series_uid``: which series of a DICOM folder that holds several; ``frame``: which time
    point (from 0) of a 4D NIfTI (its node is named ``<stem>_frame<K>``); ``static_window``: instead,
    the static PET of a dynamic BIDS-PET's whole frames in that window (minutes after the injection,
    :func:`clinicalai.pet.dynamic.static_from_dynamic`; named ``<stem>_static<A>-<B>min``).

    Raises:
        InputError: unreadable file, a choice the file cannot be (fractional values as a mask).
    """
    from ..volume.dicom_seg import is_dicom_seg_file
    from ..volume.io import read_volume

    p = Path(path)
    series, seg_file = p.is_dir(), p.name.lower().endswith(".seg.nrrd")
    dicom_seg = not series and is_dicom_seg_file(p)
    stem = name or (p.name if series else p.name[: -len(".seg.nrrd")] if seg_file else p.name.split(".")[0])
    # dtype, values and grid: what the guess needs
    if static_window is not None:
        from ..pet.dynamic import static_from_dynamic

        volume = static_from_dynamic(p, static_window, series_uid if series else None)
        if not name:
            stem = f"{stem}_static{static_window[0]:g}-{static_window[1]:g}min"
    else:
        volume = read_volume(p, series_uid=series_uid if series else None, frame=frame)
    if frame is not None and not name:
        stem = f"{stem}_frame{int(frame)}"
    description = str((volume.metadata.get("dicom") or {}).get("SeriesDescription") or "").strip()
    if series and series_uid and description and not name:  # one of a folder's series: say which
        stem = f"{p.name}_{'_'.join(description.split())}"
    if dicom_seg:  # only its segmented slices: placed on the voxels of the open image it lies on
        matches, volume = _dicom_seg_on_an_image(context.scene, volume, current)
    else:
        matches = [] if series else images_on_grid(context.scene, volume.grid, prefer=current)
    guess = guess_open_as(content_summary(volume.array), bool(matches) if image_nodes(context.scene) else None)
    kind = resolve_open_as(choice, guess, seg_file or dicom_seg, series)
    how = "as chosen" if choice else f"guessed: {guess.reason}"
    shown = shown or p.name
    with scene_transaction(context.scene):
        if kind == OPEN_AS_IMAGE:
            # a series and a time point are nodes of the engine's volume: no Slicer reader picks either
            built = series or frame is not None or static_window is not None
            node = add_volume_node(context.scene, volume, stem) if built else load_volume_file(context, str(p), name=stem)
            made = volume.metadata.get("static_from_frames")
            if made:
                lo, hi = made["averaged_min"]
                how = f"static PET: mean of frames {made['frames'][0]}-{made['frames'][-1]}, {lo:.1f}-{hi:.1f} min after injection"
            return OpenedFile(node, kind, None, f"opened {shown} as an image ({how})")
        image = matches[0] if matches else None
        if seg_file:
            node = load_segmentation_file(context, str(p), name=stem)
            if image is not None:
                attach_mask(node, image)
            else:
                set_segmentation_grid(node, volume.grid)
        else:
            node = add_mask_node(context.scene, volume, stem, kind, image)
    what = OPEN_AS_TITLES[kind]
    if image is None:
        return OpenedFile(node, kind, None, f"opened {shown} as a {what} ({how}), but it is on no open image's grid "
                          f"({grid_text(volume.grid)}): it is not shown, and no mask chooser offers it")
    return OpenedFile(node, kind, image, f"opened {shown} as a {what} of {image.GetName()} ({how})")
