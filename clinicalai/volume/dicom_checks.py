"""Checks on a DICOM series before SimpleITK reads it: geometry, time, size, cut-off pixels.

SimpleITK's series reader builds a regular grid from whatever it is given (origin of the
first slice, spacing = distance first-to-last / (n - 1)) and at most prints a warning: a
missing slice stretches the volume, a cine file becomes "slices" ``FrameTime`` mm apart, a
cut-off file fails deep in GDCM. pydicom reads the headers (pixel data deferred, never
decoded) so each of these is caught first and explained in one sentence.

Slice-position jitter: scanners round ImagePositionPatient (e.g. to 0.1 mm per coordinate
along an oblique normal), so the gaps of a complete series vary by a few tenths of a mm.
ITK loads any spacing and only warns (``SpacingWarningRelThreshold``, 1e-4 of the spacing);
Slicer's DICOMScalarVolumePlugin warns when a gap differs by more than
``spacingEpsilon = 0.01`` mm and loads as well. Here a gap may differ from the median gap by
:data:`SLICE_GAP_TOLERANCE` (5 %) of it or :data:`SLICE_GAP_MIN_TOLERANCE_MM` (0.2 mm: twice
a 0.1 mm rounding), whichever is larger, but never more than a quarter of a slice (so a
missing or duplicated slice is always caught). Within that, the series is read on ITK's grid
with a warning in ``Volume.metadata["warnings"]`` once the jitter passes Slicer's 0.01 mm.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .integrity import check_voxel_budget, cut_off_error

#: A gap may differ from the median gap by this fraction of it (rounded positions) ...
SLICE_GAP_TOLERANCE = 0.05
#: ... or by this many millimetres, whichever is larger ...
SLICE_GAP_MIN_TOLERANCE_MM = 0.2
#: ... but never by more than this fraction of a slice (a missing slice is a gap of 2x).
SLICE_GAP_MAX_TOLERANCE = 0.25
#: Jitter (mm) below which no warning is recorded: Slicer's ``spacingEpsilon``.
SLICE_JITTER_WARN_MM = 0.01
#: Two slices closer than this (mm) are at the same position.
SAME_POSITION_MM = 1e-3
#: Largest difference of direction cosines (ImageOrientationPatient) within one series.
ORIENTATION_TOLERANCE = 1e-3

#: FrameIncrementPointer targets that make the frames of a multi-frame file time points:
#: FrameTime, FrameTimeVector, TimeSlotVector, TimeSliceVector.
TIME_POINTERS = frozenset({0x00181063, 0x00181065, 0x00540070, 0x00540100})

_HEADER_TAGS = [
    "ImagePositionPatient", "ImageOrientationPatient", "NumberOfFrames", "FrameTime", "FrameTimeVector",
    "FrameIncrementPointer", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PixelData", "FloatPixelData",
    "DoubleFloatPixelData", "ImageType", (0x0019, 0x100A), "RescaleSlope", "RescaleIntercept",
]


#: SOP class of a DICOM Segmentation (read as a label map: :mod:`clinicalai.volume.dicom_seg`)
SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: SOP class of a DICOMDIR, the index file of a DICOM CD / DVD / USB export
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_dicom_header(path: "str | Path") -> Any:
    """The header of one DICOM file (pixel data deferred), also of a file written without the
    Part 10 preamble and file meta (older scanners and some exports; pydicom then needs
    ``force``). A file that does not parse, or parses into no DICOM attribute a file of any
    kind carries, is refused."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = Path(path).name
    try:
        return pydicom.dcmread(str(path), defer_size="64 KB")
    except InvalidDicomError:
        pass  # no preamble / file meta: read the bare data set
    except Exception:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise InputError(f"{name}: not a readable DICOM file (damaged or cut off in its header)") from None
    try:
        ds = pydicom.dcmread(str(path), defer_size="64 KB", force=True)
        ok = any(k in ds for k in ("SOPClassUID", "Modality", "SeriesInstanceUID", "StudyInstanceUID") + _PIXEL_KEYWORDS)
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise InputError(f"{name}: not a readable DICOM file")
    return ds


def sop_class(ds: Any) -> str:
    """A data set's SOP class UID ("" when it has none): its own SOPClassUID, else its file
    meta's MediaStorageSOPClassUID (a DICOMDIR has only the latter)."""
    sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return str(sop or "")


def is_segmentation(ds: Any) -> bool:
    """True for a DICOM Segmentation data set (read as a label map, :mod:`.dicom_seg`)."""
    return sop_class(ds) == SEGMENTATION_SOP_CLASS


def dicom_object_kind(ds: Any) -> str:
    """What a DICOM data set is, in words, from its SOP class (e.g. "RT Structure Set")."""
    from pydicom.uid import UID

    sop = sop_class(ds)
    if not sop:
        return "data set without a SOP class"
    name = UID(str(sop)).name
    if name == str(sop):
        return f"object of SOP class {sop}"
    return name.removesuffix(" Storage")


def has_pixels(ds: Any) -> bool:
    """True for a data set that holds an image: pixel data with rows and columns."""
    return any(k in ds for k in _PIXEL_KEYWORDS) and "Rows" in ds and "Columns" in ds


def check_is_image(ds: Any, name: str) -> None:
    """Refuse a DICOM file that holds no image (a report, an RT plan or structure set, a
    waveform, a DICOMDIR, a fragment), naming what it is: GDCM's scanner skips such files
    without a word, and the user would only hear "no series found"."""
    if sop_class(ds) == MEDIA_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise InputError(
            f"{name} is a DICOMDIR, the index of a DICOM disc or export, not an image; "
            "choose the folder of one series below it"
        )
    if not has_pixels(ds):
        what = dicom_object_kind(ds)
        if "Image" in what:
            raise InputError(f"{name} has no pixel data ({what} header only: a fragment or a damaged file)")
        raise InputError(f"{name} is a DICOM {what}, which holds no image; open the image series it refers to")
    check_not_mosaic(ds, name)


def check_not_mosaic(ds: Any, name: str) -> None:
    """Refuse a Siemens mosaic: fMRI and diffusion scans store every slice of a time point as a
    tile of one large image (ImageType MOSAIC). Read as it is, the tiles would become one
    slice of a volume with the wrong size and geometry; cutting them apart needs Siemens'
    private CSA header, which is what dcm2niix (and nibabel's nicom) read."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "MOSAIC" in image_type:
        tiles = ds.get((0x0019, 0x100A))
        count = f"{int(tiles.value)} slices tiled into each" if tiles is not None and str(tiles.value).strip().isdigit() else "slices tiled into each"
        raise InputError(
            f"{name} is a Siemens mosaic ({count} {ds.get('Rows', '?')} x {ds.get('Columns', '?')} image, "
            "as Siemens writes fMRI and diffusion scans); convert the series to NIfTI with dcm2niix "
            "and open one 3D volume"
        )


def read_headers(files: Sequence[str]) -> List[Any]:
    """pydicom datasets of ``files`` with the tags these checks need; pixel data is not read
    (values over 64 KiB are deferred: only their length and file offset are kept)."""
    import pydicom

    headers = []
    for f in files:
        try:
            headers.append(pydicom.dcmread(f, defer_size="64 KB", specific_tags=_HEADER_TAGS))
        except Exception:  # noqa: BLE001 - pydicom raises many types for damaged files
            raise InputError(f"{Path(f).name}: not a readable DICOM file (damaged or cut off in its header)") from None
    return headers


@dataclass
class SeriesCheck:
    """What :func:`check_series` found: ``warnings`` (one line each, for
    ``Volume.metadata["warnings"]``) and whether the files rescale their stored values each
    their own way (``varying_rescale``: the reader must then produce floats)."""

    warnings: List[str]
    varying_rescale: bool


def _rescale(ds: Any) -> Tuple[float, float]:
    try:
        return float(ds.get("RescaleSlope") or 1.0), float(ds.get("RescaleIntercept") or 0.0)
    except (TypeError, ValueError):
        return 1.0, 0.0


def varying_rescale(headers: Sequence[Any]) -> bool:
    """True when the files of a series have different RescaleSlope / RescaleIntercept, as PET
    scanners write each slice scaled to its own maximum. ITK's series reader picks the pixel
    type of the whole volume from the first file: if that one rescales to whole numbers (slope
    1), every other slice is cast to integers, and a slice whose values all lie below 1 reads
    as zeros."""
    return len({_rescale(ds) for ds in headers}) > 1


def check_series(files: Sequence[str], name: str) -> SeriesCheck:
    """Check a DICOM series (its files in reading order) before SimpleITK reads it.

    Args:
        files: the series' files as SimpleITK will read them.
        name: the folder name, for messages.

    Returns the warnings and whether the rescaling varies by file (:class:`SeriesCheck`).

    Raises:
        InputError: a time series (cine), over the voxel budget, cut-off pixel data, missing,
            duplicated or uneven slices, mixed orientations, sheared slices.
    """
    headers = read_headers(files)
    for f, ds in zip(files, headers):
        check_not_mosaic(ds, Path(f).name)
        check_not_time_series(ds, Path(f).name)
    _check_budget(headers, name)
    for f, ds in zip(files, headers):
        check_pixel_data(ds, f)
    varying = varying_rescale(headers)
    if len(headers) < 2 or any(_frames(ds) > 1 for ds in headers):
        return SeriesCheck([], varying)  # one file (possibly multi-frame, spatial): its geometry is ITK's to read
    return SeriesCheck(check_slice_geometry(headers, files, name), varying)


def check_left_out_files(folder: "str | Path", series_uid: str, files: Sequence[str]) -> None:
    """Refuse a series one of whose files GDCM left out of it as unreadable.

    GDCM's series scanner silently skips a file it cannot parse (e.g. one cut off inside its
    pixel data); the series then looks like it has a missing slice, or does not exist. Files
    of ``folder`` outside ``files`` whose header (read by pydicom) names ``series_uid`` are
    such members: their pixel data is checked (cut off: :func:`check_pixel_data` says how
    much is there), otherwise they are named as damaged.
    """
    import pydicom

    known = {os.path.abspath(f) for f in files}
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.name.startswith(".") or os.path.abspath(path) in known:
            continue
        try:
            uid = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).get("SeriesInstanceUID")
        except Exception:  # noqa: BLE001 - not DICOM (or not even a header): not a member
            continue
        if uid is None or str(uid) != str(series_uid):
            continue
        [ds] = read_headers([str(path)])
        if _pixel_bytes(ds) is None:
            continue  # not an image (e.g. a report filed in the series): GDCM rightly left it out
        check_pixel_data(ds, str(path))
        raise InputError(f"{path.name} belongs to the DICOM series but cannot be read (damaged); copy it again or remove it")


# ---------------------------------------------------------------------------------- sizes
def _frames(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _pixel_bytes(ds: Any) -> Optional[int]:
    """Bytes of uncompressed pixel data the header declares (None without image tags)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated") or 16)
        spp = int(ds.get("SamplesPerPixel") or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return int(math.ceil(rows * cols * _frames(ds) * spp * bits / 8))


def _check_budget(headers: Sequence[Any], name: str) -> None:
    sizes = [_pixel_bytes(ds) for ds in headers]
    if all(s is not None for s in sizes) and headers:
        ds = headers[0]
        per_voxel = sum(sizes) / max(sum(int(h.Rows) * int(h.Columns) * _frames(h) for h in headers), 1)
        check_voxel_budget(name, (int(ds.Columns), int(ds.Rows), sum(_frames(h) for h in headers)), per_voxel)


def check_pixel_data(ds: Any, path: str) -> None:
    """Refuse a DICOM file whose (uncompressed) pixel data is shorter than Rows x Columns x
    frames x samples x BitsAllocated declare. Compressed (encapsulated) pixel data has no
    fixed size; GDCM checks it while decoding."""
    expected = _pixel_bytes(ds)
    element = None
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            element = ds.get_item(keyword, keep_deferred=True)
            break
    if expected is None or element is None:
        if expected is not None:
            raise InputError(f"{Path(path).name} has no pixel data (the file is cut off or holds no image)")
        return
    length = getattr(element, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return  # encapsulated (compressed) frames
    if element.value is None:  # deferred: the value starts at value_tell, the file may end before
        available = min(int(length), Path(path).stat().st_size - int(element.value_tell))
    else:
        available = len(element.value)
    if available < expected:
        raise cut_off_error(Path(path).name, expected, max(available, 0))


# ---------------------------------------------------------------------------------- time
def _frame_positions(ds: Any) -> Optional[np.ndarray]:
    """ImagePositionPatient of every frame of an enhanced multi-frame file, (frames, 3), or None."""
    frames = _frames(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) == frames:
        positions = []
        for item in per_frame:
            plane = item.get("PlanePositionSequence")
            if not plane or "ImagePositionPatient" not in plane[0]:
                break
            positions.append([float(v) for v in plane[0].ImagePositionPatient])
        else:
            return np.asarray(positions)
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and shared[0].get("PlanePositionSequence"):
        plane = shared[0].PlanePositionSequence[0]
        if "ImagePositionPatient" in plane:
            return np.repeat(np.asarray([[float(v) for v in plane.ImagePositionPatient]]), frames, axis=0)
    return None


def is_enhanced_multiframe(ds: Any) -> bool:
    """A multi-frame file that gives each frame its own position (enhanced MR / CT / PET,
    legacy converted): its frames are slices only once sorted by position (:mod:`.dicom_multiframe`)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if _frames(ds) < 2 or not per_frame or len(per_frame) != _frames(ds):
        return False
    return all(item.get("PlanePositionSequence") for item in per_frame)


def _increment_pointers(ds: Any) -> set:
    value = ds.get("FrameIncrementPointer")
    if value is None:
        return set()
    values = [value] if isinstance(value, int) else list(value)  # one Tag (an int) or several
    return {int(v) for v in values}


def _distinct_positions(positions: np.ndarray) -> int:
    return len(np.unique(np.round(np.asarray(positions) / SAME_POSITION_MM).astype(np.int64), axis=0))


def check_not_time_series(ds: Any, name: str) -> None:
    """Refuse a multi-frame file whose frames are time points, not slices.

    Enhanced files give each frame's position: frames sharing positions are time points.
    Classic multi-frame files without per-frame positions are time points when their
    FrameIncrementPointer names a time attribute (or, without a pointer, when they carry
    FrameTime): ITK would otherwise stack them ``FrameTime`` "mm" apart.
    """
    frames = _frames(ds)
    if frames < 2:
        return
    positions = _frame_positions(ds)
    if positions is not None:
        distinct = _distinct_positions(positions)
        if distinct == frames:
            return  # a stack of slices in one file
    else:
        pointers = _increment_pointers(ds)
        timed = bool(pointers & TIME_POINTERS) or (not pointers and ("FrameTime" in ds or "FrameTimeVector" in ds))
        if not timed:
            return
        distinct = 1
    interval = ""
    if "FrameTime" in ds and ds.FrameTime not in (None, ""):
        interval = f", {float(ds.FrameTime):g} ms apart"
    where = "at one position" if distinct == 1 else f"at {distinct} positions"
    raise InputError(
        f"{name} is a time series of {frames} frames {where}{interval} (cine), not a 3D volume; "
        "choose a 3D series (slices at different positions) or export one time frame as its own series"
    )


# ---------------------------------------------------------------------------------- geometry
def _slice_tolerance(step: float) -> float:
    return min(max(SLICE_GAP_TOLERANCE * step, SLICE_GAP_MIN_TOLERANCE_MM), SLICE_GAP_MAX_TOLERANCE * step)


def check_slice_geometry(headers: Sequence[Any], files: Sequence[str], name: str = "its folder") -> List[str]:
    """Check the slice positions of a single-frame series; returns the jitter warning, if any.

    Positions are projected on the slice normal (from ImageOrientationPatient). Refused:
    mixed orientations, slices shifted within their plane (gantry tilt / shear), all images at
    one position or each position repeated (cine), duplicated positions, a gap of about k
    slices (k - 1 missing), any gap or position off the regular grid by more than the
    tolerance (:func:`_slice_tolerance`).

    Steps: :func:`slice_frame` (orientation, normal, sorted positions) ->
    :func:`_check_distinct_positions` -> :func:`_check_in_plane_shift` -> :func:`_check_gaps`
    -> :func:`_check_regular_grid` -> :func:`_jitter_warning`.
    """
    if any("ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds for ds in headers):
        return []  # not a cross-sectional series with positions; ITK decides
    frame = slice_frame(headers, files, name)
    _check_distinct_positions(frame, files, name)
    step = float(np.median(frame.gaps))
    tol = _slice_tolerance(step)
    _check_in_plane_shift(frame, tol, name)
    _check_gaps(frame, step, tol, name)
    mean, worst = _check_regular_grid(frame, tol, name)
    return _jitter_warning(frame.gaps, mean, worst)


@dataclass(frozen=True)
class SliceFrame:
    """Where the slices of a series lie, in mm (LPS).

    Attributes:
        normal: unit slice normal (row x column of the first ImageOrientationPatient), (3,).
        ipps: ImagePositionPatient of each file in reading order, (n, 3).
        along: each position projected on ``normal``, (n,).
        order: indices that sort ``along`` (stable).
        pos: ``along`` sorted, (n,); ``gaps``: its differences, (n - 1,).
    """

    normal: np.ndarray
    ipps: np.ndarray
    along: np.ndarray
    order: np.ndarray
    pos: np.ndarray
    gaps: np.ndarray


def slice_frame(headers: Sequence[Any], files: Sequence[str], name: str = "its folder") -> SliceFrame:
    """The slice normal and sorted positions of a series whose headers all carry positions.

    Raises:
        InputError: the images do not share one orientation (within :data:`ORIENTATION_TOLERANCE`).
    """
    iops = np.asarray([[float(v) for v in ds.ImageOrientationPatient] for ds in headers])
    ipps = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    _check_one_orientation(iops, files, name)
    normal = np.cross(iops[0, :3], iops[0, 3:])
    normal /= np.linalg.norm(normal)
    along = ipps @ normal
    order = np.argsort(along, kind="stable")
    pos = along[order]
    return SliceFrame(normal, ipps, along, order, pos, np.diff(pos))


def _check_one_orientation(iops: np.ndarray, files: Sequence[str], name: str) -> None:
    """Refuse direction cosines ``iops`` (n, 6) that differ between images."""
    off = np.abs(iops - iops[0]).max(axis=1)
    if off.max() <= ORIENTATION_TOLERANCE:
        return
    k = int(np.argmax(off))
    normal_0 = np.cross(iops[0, :3], iops[0, 3:])
    normal_k = np.cross(iops[k, :3], iops[k, 3:])
    angle = math.degrees(math.acos(np.clip(abs(np.dot(normal_0, normal_k)), -1, 1)))
    raise InputError(
        f"the DICOM series in {name} mixes slice orientations: {int(np.sum(off > ORIENTATION_TOLERANCE))} of its "
        f"{len(iops)} images (e.g. {Path(files[k]).name}) are turned by {angle:.1f} deg from the first; read one "
        "orientation at a time"
    )


def _check_distinct_positions(frame: SliceFrame, files: Sequence[str], name: str) -> None:
    """Refuse a series with images at one position, each position repeated (cine), or a duplicate."""
    pos, n = frame.pos, len(frame.pos)
    distinct = _distinct_positions(pos[:, None])
    if distinct == n:
        return
    counts = np.unique(np.round(pos / SAME_POSITION_MM).astype(np.int64), return_counts=True)[1]
    if distinct == 1 or (len(set(counts.tolist())) == 1 and n > 2):
        where = "at one position" if distinct == 1 else f"at {distinct} positions ({counts[0]} at each)"
        raise InputError(
            f"the DICOM series in {name} is a time series of {n} images {where} (cine), not a 3D volume; "
            "choose a 3D series (slices at different positions) or export one time frame as its own series"
        )
    i = int(np.flatnonzero(frame.gaps < SAME_POSITION_MM)[0])
    first, second = Path(files[frame.order[i]]).name, Path(files[frame.order[i + 1]]).name
    raise InputError(
        f"the DICOM series in {name} has two slices at the same position (duplicated slices): "
        f"{first} and {second} at {pos[i]:.2f} mm along the slice normal"
    )


def _check_in_plane_shift(frame: SliceFrame, tol: float, name: str) -> None:
    """Refuse slices shifted within their plane by more than ``tol`` mm (gantry tilt, shear)."""
    lateral = (frame.ipps - frame.ipps[frame.order[0]]) - np.outer(frame.along - frame.pos[0], frame.normal)
    shift = float(np.linalg.norm(lateral, axis=1).max())
    if shift > tol:
        raise InputError(
            f"the slices of the DICOM series in {name} are shifted within their plane by up to {shift:.2f} mm "
            "(a tilted gantry or sheared stack); resample it onto a rectangular grid (e.g. Slicer's acquisition "
            "geometry regularization) before using it here"
        )


def _check_gaps(frame: SliceFrame, step: float, tol: float, name: str) -> None:
    """Refuse a gap off the median ``step`` by more than ``tol``: missing slices when it is
    about a whole number of steps, else uneven spacing."""
    pos, gaps = frame.pos, frame.gaps
    bad = np.flatnonzero(np.abs(gaps - step) > tol)
    if not bad.size:
        return
    i = int(bad[0])
    g = float(gaps[i])
    k = int(round(g / step))
    where = f"between slices {i} and {i + 1} (at {pos[i]:.2f} and {pos[i + 1]:.2f} mm along the slice normal)"
    more = f"; {bad.size - 1} more gap(s) are off too" if bad.size > 1 else ""
    what = f"{k - 1} missing slice(s)" if k >= 2 and abs(g - k * step) <= tol else "uneven slice spacing"
    raise InputError(
        f"the DICOM series in {name} has {what}: {where} the gap is {g:.3f} mm, expected {step:.3f} mm "
        f"(+/- {tol:.3f} mm){more}"
    )


def _check_regular_grid(frame: SliceFrame, tol: float, name: str) -> "tuple[float, float]":
    """Refuse a slice off ITK's regular grid (first-to-last distance / (n - 1)) by more than
    ``tol``; returns ``(mean spacing, largest offset)`` in mm."""
    pos, n = frame.pos, len(frame.pos)
    mean = (pos[-1] - pos[0]) / (n - 1)  # ITK's spacing: first-to-last distance / (n - 1)
    residual = pos - (pos[0] + mean * np.arange(n))
    worst = float(np.abs(residual).max())
    if worst > tol:
        i = int(np.argmax(np.abs(residual)))
        raise InputError(
            f"the DICOM series in {name} has uneven slice spacing: slice {i} lies {worst:.3f} mm off a regular "
            f"{mean:.3f} mm grid (tolerance {tol:.3f} mm)"
        )
    return mean, worst


def _jitter_warning(gaps: np.ndarray, mean: float, worst: float) -> List[str]:
    """The warning for accepted jitter above Slicer's :data:`SLICE_JITTER_WARN_MM`, else none."""
    jitter = float(np.abs(gaps - mean).max())
    if jitter <= SLICE_JITTER_WARN_MM:
        return []
    return [
        f"slice positions are irregular: gaps {gaps.min():.3f} to {gaps.max():.3f} mm (up to "
        f"{100 * jitter / mean:.1f} % off the mean {mean:.3f} mm), slices up to {worst:.3f} mm off a regular grid; "
        "read on the regular grid as ITK does (mean spacing, first slice's origin)"
    ]
