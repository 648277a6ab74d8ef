"""Scene helpers the module logics and both GUIs share: a transaction that leaves the scene as
it was when a step fails, node look-up with one clear error, a chosen mask on a grid, and
centring the slice views on a slice, a voxel or a mask, and what a slice view's corner
annotations say (orientation, slice, value under the cursor)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..volume import Volume, resample_to_grid
from .segmentations import segmentation_to_labels
from .volumes import ijk_to_ras, node_to_volume, volume_grid_of_node

#: a point in Slicer's world frame, RAS millimetres
RASPoint = Tuple[float, float, float]


@contextlib.contextmanager
def scene_transaction(scene: Any) -> Iterator[None]:
    """Remove every node added inside the block when the block raises (cancel or failure),
    so a failed run leaves the scene as it was. Existing nodes must only be modified as the
    block's last step (after everything that can fail)."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    except BaseException:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in reversed([n for n in added if n.GetID() not in before]):
            if scene.IsNodePresent(node):
                scene.RemoveNode(node)
        raise


def nodes_of_class(scene: Any, class_name: str) -> List[Any]:
    """Every node of the scene that is a ``class_name`` (subclasses included), in scene order."""
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def node_by_id(scene: Any, node_id: Optional[str], what: str, required: bool = True) -> Any:
    """The node with ``node_id``, or a clear :class:`InputError` naming ``what``."""
    node = scene.GetNodeByID(node_id) if node_id else None
    if node is None and required:
        raise InputError(f"no {what} is selected" if not node_id else f"the {what} ({node_id}) is no longer in the scene")
    return node


def labels_from_node(scene: Any, node_id: Optional[str], grid: Any, what: str,
                     label_names: Optional[Dict[str, int]] = None) -> Optional[Volume]:
    """The labels ``(Z, Y, X)`` on ``grid`` of a segmentation node (segment values as
    :func:`~clinicalai.mrml.segmentations.segmentation_to_labels` gives them, ``label_names``
    mapping segment names to values), or the voxel values of a labelmap / scalar volume node
    (resampled, nearest neighbour, when on another grid); ``None`` when no node is chosen."""
    node = node_by_id(scene, node_id, what, required=False)
    if node is None:
        return None
    if node.IsA("vtkMRMLSegmentationNode"):
        return segmentation_to_labels(node, grid, label_names=label_names)
    labels = node_to_volume(node)
    if not labels.same_grid(grid, atol=1e-4):
        labels = resample_to_grid(labels, grid.grid if isinstance(grid, Volume) else grid, interpolator="nearest")
    return labels


def mask_from_node(scene: Any, node_id: Optional[str], grid: Any, what: str) -> Optional[Volume]:
    """A 0/1 uint8 mask ``(Z, Y, X)`` on ``grid`` from a segmentation, labelmap or scalar
    volume node (non-zero = inside; :func:`labels_from_node`); ``None`` when no node is chosen."""
    labels = labels_from_node(scene, node_id, grid, what)
    if labels is None:
        return None
    mask = (np.asarray(labels.array) > 0).astype(np.uint8)
    if not mask.any():
        raise InputError(f"the {what} ({node_by_id(scene, node_id, what).GetName()}) is empty")
    return labels.with_array(mask, modality="SEG", units="label")


def slice_center_ras(node: Any, k: int) -> RASPoint:
    """RAS position (mm) of the centre of slice ``k`` (third voxel axis) of a volume node."""
    grid = volume_grid_of_node(node)
    z, y, x = grid.shape
    if not 0 <= k < z:
        raise InputError(f"slice {k} is outside the volume (0..{z - 1})")
    ras = ijk_to_ras(grid) @ np.array([(x - 1) / 2.0, (y - 1) / 2.0, float(k), 1.0])
    return (float(ras[0]), float(ras[1]), float(ras[2]))


def _jump_all_slices(scene: Any, point: RASPoint) -> RASPoint:
    import slicer

    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *point, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return point


def jump_to_slice(scene: Any, node: Any, k: int) -> RASPoint:
    """Centre every slice view on slice ``k`` of ``node`` (a table row click); returns the RAS point."""
    return _jump_all_slices(scene, slice_center_ras(node, k))


@dataclass(frozen=True)
class SliceViewState:
    """Where a slice view looks: its plane (``slice_to_ras`` 4x4, RAS mm, the offset included),
    its zoom (``fov``, mm) and its pan (``xyz_origin``)."""

    slice_to_ras: np.ndarray
    fov: Tuple[float, float, float]
    xyz_origin: Tuple[float, float, float]


def _matrix(vtk_matrix: Any) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def slice_view_states(scene: Any) -> Dict[str, SliceViewState]:
    """``{view name: state}`` of every slice view (see :func:`restore_slice_views`)."""
    return {node.GetLayoutName(): SliceViewState(_matrix(node.GetSliceToRAS()), tuple(node.GetFieldOfView()),
                                                 tuple(node.GetXYZOrigin()))
            for node in nodes_of_class(scene, "vtkMRMLSliceNode")}


def _set_view(node: Any, state: SliceViewState) -> None:
    to_ras = node.GetSliceToRAS()
    for r in range(4):
        for c in range(4):
            to_ras.SetElement(r, c, float(state.slice_to_ras[r, c]))
    node.SetFieldOfView(*state.fov)
    node.SetXYZOrigin(*state.xyz_origin)
    node.UpdateMatrices()


def restore_slice_views(scene: Any, states: Dict[str, SliceViewState], like: str = "Red",
                        follow: Sequence[str] = ()) -> int:
    """Put every slice view back where ``states`` says (taken before a run: a run's new nodes
    and layout must not send the user's views back to the middle slice), and give the views
    not in ``states`` or named in ``follow`` (a layout the run switched to, e.g. side-by-side
    maps, whose views were never fitted to the image) the state of the view ``like``, so
    linked views start on the same slice at the same zoom. Returns the number of views set."""
    count = 0
    for node in nodes_of_class(scene, "vtkMRMLSliceNode"):
        name = node.GetLayoutName()
        state = states.get(like) if name in follow else states.get(name, states.get(like))
        if state is not None:
            _set_view(node, state)
            count += 1
    return count


def jump_to_voxel(scene: Any, grid: Any, kji: Tuple[int, int, int]) -> RASPoint:
    """Centre every slice view on voxel ``(k, j, i)`` of ``grid`` (a node's volume grid); the RAS point (mm)."""
    k, j, i = (int(v) for v in kji)
    r, a, s = (ijk_to_ras(grid) @ np.array([i, j, k, 1.0]))[:3]
    return _jump_all_slices(scene, (float(r), float(a), float(s)))


def jump_to_mask(scene: Any, grid: Any, mask_zyx: np.ndarray) -> Optional[RASPoint]:
    """Centre every slice view on a mask ``(Z, Y, X)`` (a lesion VOI, a reference lesion) on
    ``grid``: on its voxel nearest to its centre of mass (a curved mask's centre can lie
    outside it). The RAS point (mm), or ``None`` (nothing moved) when the mask is empty."""
    voxels = np.argwhere(np.asarray(mask_zyx) > 0)  # (n, 3) as (k, j, i)
    if voxels.size == 0:
        return None
    centre = voxels.mean(axis=0)
    return jump_to_voxel(scene, grid, tuple(voxels[int(np.argmin(((voxels - centre) ** 2).sum(axis=1)))]))


#: RAS axis letters of the positive and the negative direction (the orientation labels)
_POSITIVE = ("R", "A", "S")
_NEGATIVE = ("L", "P", "I")


def direction_letter(vector: Any) -> str:
    """Anatomical direction (R/L, A/P, S/I) of a RAS vector: of its largest component."""
    v = np.asarray(vector, dtype=float)[:3]
    axis = int(np.argmax(np.abs(v)))
    return _POSITIVE[axis] if v[axis] >= 0 else _NEGATIVE[axis]


def _plane_in_voxels(slice_to_ras: np.ndarray, volume_node: Any) -> Tuple[Any, np.ndarray, np.ndarray]:
    """``(grid, axes, ijk)`` of a slice view's plane on ``volume_node``: its voxel grid, the
    unit RAS directions of the voxel axes i / j / k as columns ``(3, 3)``, and the plane's
    centre (the slice-to-RAS origin) in continuous voxel coordinates ``(i, j, k)``."""
    grid = volume_grid_of_node(volume_node)
    to_ras = ijk_to_ras(grid)
    axes = to_ras[:3, :3] / np.linalg.norm(to_ras[:3, :3], axis=0)
    ijk = np.linalg.solve(to_ras, np.append(slice_to_ras[:3, 3], 1.0))[:3]
    return grid, axes, ijk


def slice_annotation(slice_node: Any, volume_node: Any) -> dict:
    """What a slice view's corner annotations say, as Slicer's do: the patient direction at
    each edge (``{"left", "right", "top", "bottom"}`` from the view's slice-to-RAS axes),
    the slice offset along the view normal (``"offset_mm"``, Slicer's slider value) and the
    slice of ``volume_node`` shown (``"index"`` 0-based, of ``"count"``: along the voxel axis
    nearest to the view normal; ``None`` without a volume or outside it)."""
    m = _matrix(slice_node.GetSliceToRAS())
    out = {"left": direction_letter(-m[:3, 0]), "right": direction_letter(m[:3, 0]),
           "top": direction_letter(m[:3, 1]), "bottom": direction_letter(-m[:3, 1]),
           "offset_mm": float(m[:3, 2] @ m[:3, 3]), "index": None, "count": None}
    if volume_node is None or volume_node.GetImageData() is None:
        return out
    grid, axes, ijk = _plane_in_voxels(m, volume_node)
    axis = int(np.argmax(np.abs(axes.T @ m[:3, 2])))  # voxel axis i/j/k nearest to the normal
    count = grid.shape[2 - axis]  # shape is (z, y, x) = (k, j, i)
    index = int(np.round(ijk[axis]))
    out["count"] = int(count)
    out["index"] = index if 0 <= index < count else None
    return out


def voxel_at(volume_node: Any, ras: RASPoint) -> Optional[dict]:
    """The voxel of ``volume_node`` at the RAS point ``ras`` (mm): ``{"ijk": (i, j, k),
    "value": float}`` (nearest voxel centre, first component), or ``None`` outside the volume."""
    if volume_node is None or volume_node.GetImageData() is None:
        return None
    grid = volume_grid_of_node(volume_node)
    ijk = np.linalg.solve(ijk_to_ras(grid), np.append(np.asarray(ras, dtype=float), 1.0))[:3]
    i, j, k = (int(v) for v in np.round(ijk))
    z, y, x = grid.shape
    if not (0 <= i < x and 0 <= j < y and 0 <= k < z):
        return None
    # one voxel read, not an array copy: this runs on every mouse move over a view
    return {"ijk": (i, j, k), "value": float(volume_node.GetImageData().GetScalarComponentAsDouble(i, j, k, 0))}


def slice_index_shown(slice_node: Any, volume_node: Any) -> Optional[int]:
    """The slice ``k`` (third voxel axis, 0-based) of ``volume_node`` a slice view shows, so a
    per-slice table can mark the row on screen; ``None`` when the view's plane is not a slice
    of that axis (its normal more than ~8 degrees off the ``k`` axis) or lies outside the volume."""
    m = _matrix(slice_node.GetSliceToRAS())
    grid, axes, ijk = _plane_in_voxels(m, volume_node)
    normal = m[:3, 2] / np.linalg.norm(m[:3, 2])
    if abs(float(axes[:, 2] @ normal)) < 0.99:
        return None
    k = int(np.round(ijk[2]))
    return k if 0 <= k < grid.shape[0] else None
