"""MRML volume nodes <-> :class:`clinicalai.volume.Volume`: the one RAS <-> LPS place.

A ``Volume`` is LPS (ITK): ``lps = origin + direction @ diag(spacing) @ ijk``. A Slicer volume
node keeps the same mapping to RAS in its ``IJKToRAS`` matrix, with its ``vtkImageData`` at
origin 0 / spacing 1; RAS = diag(-1, -1, 1) @ LPS. Voxel memory order is the same in both
(x fastest), so a ``(z, y, x)`` numpy array is the image data's scalars reshaped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..volume import Volume
from ..volume.core import Grid
from ..volume.formats import image_format
from ..volume.integrity import check_image_file, nifti_version

#: diag(-1, -1, 1, 1): LPS -> RAS and back (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: node attributes that carry what a volume node cannot say about its values
MODALITY_ATTRIBUTE = "ClinicalAI.Modality"
#: the reader's warnings about the file (DICOM slice-position jitter, ...), one per line, so the
#: panels can report them with the model-fit warnings after the node is all that is left
WARNINGS_ATTRIBUTE = "ClinicalAI.ReaderWarnings"
UNITS_ATTRIBUTE = "ClinicalAI.Units"
#: the PET tags a reader found (DICOM, BIDS sidecar) as JSON: what SUV needs travels with the node
PET_TAGS_ATTRIBUTE = "ClinicalAI.PetTags"
#: JSON list of the DICOM files an image was read from (a result can be saved as a DICOM SEG of them)
DICOM_FILES_ATTRIBUTE = "ClinicalAI.DicomFiles"
#: what Slicer's MultiVolumeImporter (the DICOM module's default for a dynamic series) writes on
#: its multi-volume node, whose voxels hold every frame as one component each
MULTIVOLUME_FRAMES_ATTRIBUTE = "MultiVolume.NumberOfFrames"


# ---------------------------------------------------------------------- matrices
def vtk_matrix(array: np.ndarray):
    """A ``vtkMatrix4x4`` holding the 4x4 ``array``."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def numpy_matrix(matrix) -> np.ndarray:
    """The 4x4 numpy array of a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras(grid: "Volume | Grid") -> np.ndarray:
    """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` of ``grid`` to RAS millimetres."""
    g = grid.grid if isinstance(grid, Volume) else grid
    return LPS_TO_RAS @ g.index_to_lps()


def grid_from_ijk_to_ras(matrix: np.ndarray, shape: Tuple[int, int, int]) -> Grid:
    """The LPS :class:`Grid` of a ``(z, y, x)`` voxel array placed by an IJK-to-RAS matrix."""
    lps = LPS_TO_RAS @ np.asarray(matrix, dtype=float)
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise InputError("the volume's IJK-to-RAS matrix is singular (a zero voxel size)")
    direction = axes / spacing
    return Grid(
        tuple(int(s) for s in shape),  # type: ignore[arg-type]
        tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        tuple(float(v) for v in lps[:3, 3]),  # type: ignore[arg-type]
        tuple(float(v) for v in direction.reshape(-1)),
    )


# ---------------------------------------------------------------------- image data
_VTK_SAFE = {np.dtype(np.bool_): np.uint8, np.dtype(np.float16): np.float32}


def image_data_from_array(array: np.ndarray):
    """A ``vtkImageData`` (origin 0, spacing 1) with a deep copy of a ``(z, y, x)`` array."""
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData

    arr = np.asarray(array)
    arr = arr.astype(_VTK_SAFE.get(arr.dtype, arr.dtype), copy=False)
    z, y, x = arr.shape
    image = vtkImageData()
    image.SetDimensions(x, y, z)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(arr).reshape(-1), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def array_from_image_data(image) -> np.ndarray:
    """A ``(z, y, x)`` copy of a scalar ``vtkImageData``'s voxels."""
    from vtkmodules.util import numpy_support

    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        raise InputError("the volume has no voxel data")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(
            f"only scalar volumes are supported, this one has {scalars.GetNumberOfComponents()} components per voxel"
        )
    x, y, z = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(z, y, x).copy()


# ---------------------------------------------------------------------- nodes
def node_to_volume(node: Any) -> Volume:
    """The :class:`Volume` of a scalar volume (or labelmap) node, in LPS.

    A linear parent transform is applied to the geometry (what the user sees); a non-linear
    one must be hardened first.

    Raises:
        InputError: no node, no voxels, several components, non-linear transform.
    """
    if node is None:
        raise InputError("no input volume is selected")
    if not node.IsA("vtkMRMLVolumeNode"):
        raise InputError(f"{node.GetName()} is not a volume")
    frames = multivolume_frames(node)
    if frames > 1:
        raise InputError(f"{node.GetName()} is a multi-volume of {frames} frames (Slicer's MultiVolumeImporter), and "
                         "one image is needed: load the series as a volume sequence (DICOM settings: preferred "
                         "multi-volume import format) and browse to a frame; PetRecurrence averages a dynamic PET's "
                         "frames with a static window")
    array = array_from_image_data(node.GetImageData())
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    matrix = numpy_matrix(m)
    parent = node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise InputError(f"{node.GetName()} is under a non-linear transform; harden it first")
        to_world = vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        matrix = numpy_matrix(to_world) @ matrix
    grid = grid_from_ijk_to_ras(matrix, array.shape)
    volume = Volume.from_grid(grid, array)
    volume.modality = node.GetAttribute(MODALITY_ATTRIBUTE) or None
    volume.units = node.GetAttribute(UNITS_ATTRIBUTE) or None
    reader_warnings = node.GetAttribute(WARNINGS_ATTRIBUTE)
    if reader_warnings:
        volume.metadata["warnings"] = reader_warnings.split("\n")
    if node.GetAttribute(PET_TAGS_ATTRIBUTE):
        volume.metadata["pet"] = json.loads(node.GetAttribute(PET_TAGS_ATTRIBUTE))
    if node.GetAttribute(DICOM_FILES_ATTRIBUTE):
        volume.metadata["dicom_files"] = json.loads(node.GetAttribute(DICOM_FILES_ATTRIBUTE))
    volume.metadata["mrml_node_id"] = node.GetID()
    volume.metadata["name"] = node.GetName()
    storage = node.GetStorageNode()
    if storage is not None and storage.GetFileName():
        volume.metadata["source"] = storage.GetFileName()
    return volume


def dicom_files_of(node: Any) -> list:
    """The DICOM files an image node was read from (still on disk), [] for any other node."""
    from pathlib import Path

    files = json.loads(node.GetAttribute(DICOM_FILES_ATTRIBUTE) or "[]") if node is not None else []
    return files if files and all(Path(f).is_file() for f in files) else []


def update_node_from_volume(node: Any, volume: Volume) -> Any:
    """Put ``volume``'s voxels and geometry into an existing volume node (same node ID)."""
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras(volume)))
    node.SetAndObserveImageData(image_data_from_array(volume.array))
    if volume.modality:
        node.SetAttribute(MODALITY_ATTRIBUTE, str(volume.modality))
    if volume.units:
        node.SetAttribute(UNITS_ATTRIBUTE, str(volume.units))
    if volume.metadata.get("warnings"):
        node.SetAttribute(WARNINGS_ATTRIBUTE, "\n".join(" ".join(str(w).split()) for w in volume.metadata["warnings"]))
    if volume.metadata.get("dicom_files") and volume.modality != "SEG":
        node.SetAttribute(DICOM_FILES_ATTRIBUTE, json.dumps([str(f) for f in volume.metadata["dicom_files"]]))
    if volume.metadata.get("pet") and volume.modality == "PT" and volume.units != "SUV":
        # the tags describe the values as read (not an SUV image made from them, nor a map)
        node.SetAttribute(PET_TAGS_ATTRIBUTE, json.dumps(volume.metadata["pet"], default=str))
    return node


def unique_name(scene: Any, name: str) -> str:
    """``name`` if no node has it yet, else Slicer's next free ``name_N``."""
    return name if scene.GetFirstNodeByName(name) is None else scene.GenerateUniqueName(name)


def add_volume_node(
    scene: Any,
    volume: Volume,
    name: str,
    class_name: str = "vtkMRMLScalarVolumeNode",
    display: bool = True,
) -> Any:
    """A new volume node in ``scene`` holding ``volume`` (name made unique in the scene)."""
    node = scene.AddNewNodeByClass(class_name, unique_name(scene, name))
    update_node_from_volume(node, volume)
    if display:
        node.CreateDefaultDisplayNodes()
        display_node = node.GetDisplayNode()
        if display_node is not None and display_node.IsA("vtkMRMLScalarVolumeDisplayNode") and not node.IsA(
            "vtkMRMLLabelMapVolumeNode"
        ):
            display_node.AutoWindowLevelOn()
    return node


def volume_grid_of_node(node: Any) -> Grid:
    """The LPS grid of a volume node (no voxel copy)."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    x, y, z = node.GetImageData().GetDimensions()
    return grid_from_ijk_to_ras(numpy_matrix(m), (z, y, x))


def stored_time_points(node: Any) -> Tuple[Optional[str], int]:
    """``(file, time points)`` of the NIfTI or NRRD a node was read from (its storage node's
    file); ``(None, 1)`` for a node read from anything else, built in memory, or whose file is gone.

    Why: Slicer's volume reader keeps the first frame of a 4D NIfTI or NRRD without a word (a
    cine's first phase, a dynamic PET's first minute), so a node does not show that it is one of many."""
    from ..volume.formats import NIFTI_SUFFIXES, NRRD_SUFFIXES
    from ..volume.io import time_point_count

    storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
    source = storage.GetFileName() if storage is not None and storage.GetFileName() else None
    if source is None or not source.lower().endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES) or \
            source.lower().endswith(".seg.nrrd"):
        return None, 1
    return source, (time_point_count(source) if Path(source).is_file() else 1)


@dataclass(frozen=True)
class ShownTimePoint:
    """What a node shows when it is one time point of several (a dynamic PET, a cine).

    Attributes:
        frames: how many time points there are.
        shown: the 0-based one the node shows.
        of: what they are the frames of, for messages ("the dynamic PET x.nii.gz", "the sequence 'x'").
        source: the 4D file Slicer read the node from; ``None`` for a sequence or multi-volume.
        instance_uids: a sequence's or multi-volume's ``DICOM.instanceUIDs`` (one tuple per frame,
            or one for them all); their files are looked up only when needed (:func:`frames_on_disk`).
        browsed: the node is a sequence's proxy (the user browses the frames), not the first
            frame Slicer's reader kept of a 4D file without a word.
        whole: the node holds every frame (a multi-volume), none is shown on its own (``shown`` -1).
    """

    frames: int
    shown: int
    of: str
    source: Optional[str] = None
    instance_uids: Tuple[Tuple[str, ...], ...] = ()
    browsed: bool = False
    whole: bool = False


def shown_time_point(node: Any) -> Optional[ShownTimePoint]:
    """How ``node`` is one of several time points, ``None`` when it is not: the first frame of a
    4D NIfTI Slicer read (:func:`stored_time_points`), or the proxy node of a sequence browser
    (what Slicer's DICOM module makes of a dynamic series, and the Sequences module of a 4D
    file) whose sequence has more than one item, or a multi-volume. Reads the scene (and a 4D
    file's header) only: where a sequence's frames lie on disk is :func:`frames_on_disk`'s to find."""
    source, frames = stored_time_points(node)
    if frames > 1:
        return ShownTimePoint(frames, 0, f"the dynamic PET {Path(source).name}", source)
    frames = multivolume_frames(node)
    if frames > 1:
        return ShownTimePoint(frames, -1, f"the multi-volume {node.GetName()!r}",
                              instance_uids=(_instance_uids(node),), whole=True)
    found = browsed_sequence(node)
    if found is None:
        return None
    browser, sequence = found
    frames = sequence.GetNumberOfDataNodes()
    if frames < 2:
        return None
    master = browser.GetMasterSequenceNode()
    selected = browser.GetSelectedItemNumber()
    shown = selected if master is sequence or master is None else \
        sequence.GetItemNumberFromIndexValue(master.GetNthIndexValue(selected))
    storage = sequence.GetStorageNode()
    stored = f" (from {Path(storage.GetFileName()).name})" if storage is not None and storage.GetFileName() else ""
    # a frame's first file is enough to find the series folder
    uids = tuple(_instance_uids(sequence.GetNthDataNode(i))[:1] for i in range(frames))
    return ShownTimePoint(frames, max(0, int(shown)), f"the sequence {sequence.GetName()!r}{stored}",
                          instance_uids=uids, browsed=True)


def frames_on_disk(point: ShownTimePoint) -> Tuple[Optional[str], Optional[str]]:
    """``(path, SeriesInstanceUID)`` that :func:`clinicalai.pet.dynamic.static_from_dynamic` reads
    ``point``'s frames from, with their times: the 4D file, or the one DICOM series folder desktop
    Slicer's ``slicer.dicomDatabase`` gives for its instance UIDs; ``(None, None)`` when neither
    is known (no database here, frames built in memory, files moved, a ``.seq.nrrd``)."""
    if point.source is not None:
        return point.source, None
    return _dicom_series_folder(point.instance_uids)


def _instance_uids(node: Any) -> Tuple[str, ...]:
    return tuple((node.GetAttribute("DICOM.instanceUIDs") or "").split()) if node is not None else ()


def browsed_sequence(node: Any) -> Optional[Tuple[Any, Any]]:
    """``(browser, sequence)`` when ``node`` is the proxy node a sequence browser of its scene
    shows a sequence's items in, else ``None``."""
    scene = node.GetScene() if hasattr(node, "GetScene") else None
    if scene is None:
        return None
    for browser in scene.GetNodesByClass("vtkMRMLSequenceBrowserNode"):
        if browser.IsProxyNodeID(node.GetID()):
            sequence = browser.GetSequenceNode(node)
            if sequence is not None:
                return browser, sequence
    return None


def multivolume_frames(node: Any) -> int:
    """How many frames a multi-volume node holds (:data:`MULTIVOLUME_FRAMES_ATTRIBUTE`), 0 for any other node."""
    try:
        return int(node.GetAttribute(MULTIVOLUME_FRAMES_ATTRIBUTE) or 0)
    except (TypeError, ValueError):
        return 0


def _dicom_series_folder(uid_lists) -> Tuple[Optional[str], Optional[str]]:
    """``(folder, SeriesInstanceUID)`` of the DICOM files whose instance UIDs are ``uid_lists``
    (one list per frame, or one for them all; from ``DICOM.instanceUIDs``), looked up in desktop
    Slicer's ``slicer.dicomDatabase``, when every list has some and the files lie in one folder;
    ``(None, None)`` otherwise (no database here, a frame built in memory, files moved)."""
    if not uid_lists or not all(uid_lists):
        return None, None
    try:
        import slicer

        files = [slicer.dicomDatabase.fileForInstance(u) for uids in uid_lists for u in uids]
    except Exception:  # noqa: BLE001 - no DICOM database (browser app, tests), or it failed: unknown
        return None, None
    if not all(files) or len({str(Path(f).parent) for f in files}) != 1 or not Path(files[0]).is_file():
        return None, None
    import pydicom

    try:
        series = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # noqa: BLE001 - not readable as DICOM: the frames cannot be found
        return None, None
    return str(Path(files[0]).parent), str(getattr(series, "SeriesInstanceUID", "") or "") or None


def load_volume_file(context: Any, path: str, name: Optional[str] = None, labelmap: bool = False) -> Any:
    """Load NIfTI / NRRD, or a DICOM series folder, through Slicer's own reader (NIfTI-2, which
    it cannot read, through the engine's)
    (``vtkSlicerVolumesLogic.AddArchetypeVolume``, as Slicer's "Add data" does; a folder is
    read as one series from all its files, ordered by the reader's slice positions).

    Raises:
        InputError: Slicer could not read it.
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    stem = name or p.name.split(".")[0]
    options = 1 if labelmap else 0  # bit 0 of loadingOptions: load as labelmap
    if p.is_dir():
        from vtkmodules.vtkCommonCore import vtkStringArray

        files = sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise InputError(f"{p}: the folder holds no files")
        file_list = vtkStringArray()
        for f in files:
            file_list.InsertNextValue(f)
        node = context.volumes_logic.AddArchetypeVolume(files[0], stem, options, file_list)
    else:
        check_image_file(p)  # cut-off, oversized or pointing-elsewhere files never reach Slicer's reader
        if image_format(p) == "nifti" and nifti_version(p) == 2:
            # Slicer's NIfTI reader (ITK's) takes NIfTI-1 only; the engine's reader (nibabel) does both
            from ..volume import read_volume

            kind = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
            return add_volume_node(context.scene, read_volume(p), stem, class_name=kind)
        node = context.volumes_logic.AddArchetypeVolume(str(p), stem, options)
        if node is not None and image_format(p) == "nifti":
            from ..volume.nifti import nifti_geometry_warning

            warning = nifti_geometry_warning(p)  # the engine's reader says it too: panels show either
            if warning:
                node.SetAttribute(WARNINGS_ATTRIBUTE, warning)
    if node is None:
        raise InputError(f"{p.name}: Slicer cannot read it as a volume")
    return node
