"""Reading and writing volumes: NIfTI, NRRD (``.seg.nrrd`` for masks) and DICOM series.

Geometry is read and written by SimpleITK (ITK's readers are the reference for NIfTI qform /
sform and DICOM slice positions); pydicom is used only for the tags SimpleITK does not
expose in a structured way (PET dose and timing sequences).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..outputs import atomic_output
from .bids_pet import bids_pet_sidecar, read_bids_pet_sidecar
from .core import Volume, time_series_error
from .dicom_checks import (
    SLICE_GAP_MAX_TOLERANCE,
    check_is_image,
    check_left_out_files,
    check_series,
    is_enhanced_multiframe,
    is_segmentation,
    read_dicom_header,
)
from .dicom_dynamic import DynamicSeries, split_dynamic_series, time_slices
from .dicom_folders import dicom_series_files, image_series, list_dicom_series, why_no_series
from .dicom_multiframe import read_enhanced_multiframe
from .dicom_seg import read_dicom_seg, write_dicom_seg
from .dicom_writer import write_dicom_series
from .formats import NIFTI_SUFFIXES, NRRD_SUFFIXES, SEGMENT_COLORS, image_format
from .integrity import check_image_file, nifti_version
from .nifti import check_frame, first_line, read_nifti2, read_nifti_frames, warn_of_two_geometries

#: DICOM tags (keyword -> tag) copied into ``Volume.metadata["dicom"]`` when present.
DICOM_KEYWORDS = {
    "Modality": "0008|0060",
    "SeriesInstanceUID": "0020|000e",
    "StudyInstanceUID": "0020|000d",
    "SeriesDescription": "0008|103e",
    "PatientWeight": "0010|1030",
    "PatientSize": "0010|1020",
    "PatientSex": "0010|0040",
    "Units": "0054|1001",
    "DecayCorrection": "0054|1102",
    "SeriesDate": "0008|0021",
    "SeriesTime": "0008|0031",
    "AcquisitionDate": "0008|0022",
    "AcquisitionTime": "0008|0032",
    "Manufacturer": "0008|0070",
}

#: SUV-relevant tags read with pydicom (sequences SimpleITK flattens poorly).
PET_KEYWORDS = (
    "Units",
    "DecayCorrection",
    "CorrectedImage",
    "PatientWeight",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "Manufacturer",
)
RADIOPHARMACEUTICAL_KEYWORDS = (
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
    "Radiopharmaceutical",
)
#: Philips private SUV scale factor (7053,1000) for CNTS images.
PHILIPS_SUV_SCALE_TAG = (0x7053, 0x1000)


# ---------------------------------------------------------------------------------- reading
def read_volume(path: "str | os.PathLike[str]", series_uid: Optional[str] = None, frame: Optional[int] = None) -> Volume:
    """Read a NIfTI / NRRD file, a DICOM series (folder, or one file of the series) or a DICOM
    Segmentation file (a label map, :mod:`.dicom_seg`).

    Args:
        path: the file or DICOM folder.
        series_uid: which series to read when a folder holds several.
        frame: which time point (from 0) of a 4D NIfTI (fMRI, dynamic PET, DCE) or of a dynamic
            PET DICOM series (frames in time order) to read; a 4D file without it is refused, and
            a 3D one has only frame 0.

    Raises:
        InputError: missing or unreadable file; a file cut off, corrupt or larger than the
            voxel budget (:mod:`clinicalai.volume.integrity`); a NRRD reading voxels from
            outside its folder; several DICOM series and no ``series_uid``; missing,
            duplicated or unevenly spaced DICOM slices beyond the jitter tolerance, a
            multi-frame time series (:mod:`clinicalai.volume.dicom_checks`); non-scalar image.

    Accepted slice-position jitter is reported in ``volume.metadata["warnings"]`` (a list of
    one-line strings).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    kind = image_format(p)
    if kind == "dicom":
        if p.is_file():
            header = read_dicom_header(p)
            if is_segmentation(header):
                return read_dicom_seg(p)  # a SEG file is a whole label map on its own
            check_is_image(header, p.name)
            if series_uid is None:  # one file given: read the series it belongs to
                uid = header.get("SeriesInstanceUID")
                series_uid = str(uid) if uid else None
        return read_dicom_series(p if p.is_dir() else p.parent, series_uid=series_uid, frame=frame)
    import SimpleITK as sitk

    # header, size and data-file checks first: ITK zero-fills cut-off files, follows any NRRD
    # "data file:" path and allocates whatever the header declares
    if frame is not None and kind not in ("nifti", "nrrd"):
        raise InputError(f"{p.name}: a frame is chosen in a 4D NIfTI or NRRD, or a dynamic PET DICOM series, only")
    if frame is not None and kind == "nifti":
        # only that time point is read, and the voxel budget holds per time point
        return read_time_frames(p, [frame])[0][0]
    check_image_file(p, kind)
    if kind == "nifti" and nifti_version(p) == 2:
        volume = read_nifti2(p)
        add_bids_pet_tags(volume, p)
        return volume
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{p.name}: cannot be read as an image ({first_line(exc)})") from None
    if kind == "nrrd":
        image = _nrrd_frame(image, reader, frame, p.name)
    if kind == "seg-nrrd" and image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(
            f"{p.name} is a segmentation with {image.GetNumberOfComponentsPerPixel()} layers (overlapping "
            "segments); save it from Slicer with non-overlapping segments (one layer)"
        )
    volume = Volume.from_sitk(image)
    volume.metadata["source"] = str(p)
    if kind == "nifti":
        warn_of_two_geometries(volume, p)
    if kind == "seg-nrrd":
        volume.metadata["segments"] = _read_segment_metadata(reader)
        volume.modality = "SEG"
        volume.units = "label"
    else:
        add_bids_pet_tags(volume, p)
    return volume


def _frames_on_a_list_axis(reader: Any) -> bool:
    """A NRRD whose voxels are a ``list`` (ITK reads the axis as components): how Slicer saves a
    volume sequence (``.seq.nrrd``), one frame per entry."""
    keys = reader.GetMetaDataKeys()
    return "NRRD_kinds[pixel]" in keys and reader.GetMetaData("NRRD_kinds[pixel]").strip() == "list" and \
        reader.GetNumberOfComponents() > 1


def _nrrd_time_points(reader: Any) -> int:
    """How many time points the NRRD a SimpleITK ``reader`` has read (its header at least) holds:
    the entries of a ``.seq.nrrd``'s list axis, the fourth axis of a 4D image, else 1."""
    if _frames_on_a_list_axis(reader):
        return int(reader.GetNumberOfComponents())
    return int(reader.GetSize()[3]) if reader.GetDimension() == 4 else 1


def _nrrd_frame(image: Any, reader: Any, frame: Optional[int], name: str) -> Any:
    """Time point ``frame`` of a NRRD's SimpleITK ``image`` (``reader``: what read it): of a 4D
    scalar NRRD, or of a volume sequence as Slicer saves one (``.seq.nrrd``: the frames are a
    ``list`` axis, which ITK reads as the components of each voxel; Slicer's Sequences module
    documents the format). ``None``: the image itself, refused as a time series when it holds
    several frames. Why by hand: ITK reads both kinds, but neither SimpleITK nor MONAI picks a
    frame of them."""
    import SimpleITK as sitk

    frames, listed = _nrrd_time_points(reader), _frames_on_a_list_axis(reader)
    if frame is None:
        if listed:
            raise time_series_error(frames, f"{name} is a volume sequence (Slicer's .seq.nrrd)")
        return image  # a 4D image is refused by Volume.from_sitk, naming its time points
    check_frame(frame, frames, name)
    if listed:
        return sitk.VectorIndexSelectionCast(image, int(frame))
    if image.GetDimension() == 4:
        return sitk.Extract(image, list(image.GetSize())[:3] + [0], [0, 0, 0, int(frame)])
    return image


def _nifti_path(path: "str | os.PathLike[str]") -> Path:
    """``path`` as a NIfTI that exists (time points are read from a NIfTI only)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if image_format(p) != "nifti":
        raise InputError(f"{p.name}: time points are read from a 4D NIfTI only")
    return p


def time_point_count(path: "str | os.PathLike[str]") -> int:
    """How many time points a NIfTI or NRRD holds (1 for a 3D file; a Slicer ``.seq.nrrd``: its
    frames), from its header alone: no voxel is read, and the cut-off and budget checks are left
    to the reader of the voxels (:func:`read_time_frames`; a compressed file is decompressed whole
    to check it, which a count need not pay: the MRML logics ask it on every run).

    Raises:
        InputError: a missing file, neither NIfTI nor NRRD, a header that cannot be read.
    """
    p = Path(path)
    if p.exists() and image_format(p) == "nrrd":
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(f"{p.name}: cannot be read as an image ({first_line(exc)})") from None
        return _nrrd_time_points(reader)
    return read_nifti_frames(_nifti_path(path), [])[1]


def read_time_frames(path: "str | os.PathLike[str]", frames: Optional[Sequence[int]] = None) -> Tuple[List[Volume], int]:
    """Time points of a 4D NIfTI read in one pass: ``(volumes, time points in the file)``.

    ``frames``: which (from 0; default all). Each volume has the file's 3D geometry and, beside a
    BIDS-PET sidecar, its tags, as :func:`read_volume` with ``frame`` gives it; a 3D file has
    the one frame 0. Only the span of ``frames`` is read (:func:`.nifti.read_nifti_frames`), and
    the voxel budget holds per time point. Why not :func:`read_volume` per frame: a compressed
    4D file would be decompressed once per frame (a dynamic PET has 20-40), whole each time.

    Raises:
        InputError: as :func:`read_volume`; a frame outside the file's; not a NIfTI.
    """
    p = _nifti_path(path)
    check_image_file(p, "nifti", per_frame=True)
    volumes, count = read_nifti_frames(p, frames)
    for volume in volumes:
        add_bids_pet_tags(volume, p)
    return volumes, count


def add_bids_pet_tags(volume: Volume, image: "str | os.PathLike[str]") -> bool:
    """A NIfTI PET with a BIDS-PET sidecar (``*_pet.json``): its units, weight, dose and times
    into ``volume.metadata["pet"]`` as a DICOM PET has them (:mod:`.bids_pet`), the sidecar's
    path in ``metadata["pet_sidecar"]``. ``True`` when there was one.

    Raises:
        InputError: the sidecar is there but is not a JSON object.
    """
    sidecar = bids_pet_sidecar(image)
    if sidecar is None:
        return False
    tags, warnings = read_bids_pet_sidecar(sidecar)
    volume.metadata["pet"] = tags
    volume.metadata["pet_sidecar"] = str(sidecar)
    if warnings:
        volume.metadata.setdefault("warnings", []).extend(warnings)
    volume.modality = "PT"
    volume.units = tags.get("Units") or volume.units
    return True


def _single_slice_spacing(ds: Any, itk_spacing: float) -> float:
    """The slice spacing of a one-slice series (``ds``: its header): SpacingBetweenSlices, else
    SliceThickness (as Slicer shows such a slice), else what ITK gave."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return itk_spacing


def _itk_reason(exc: BaseException) -> str:
    """ITK's message without the source path and object address it starts with."""
    reason = first_line(exc)
    reason = re.sub(r"^.*?\(\):\s*", "", reason)  # "/path/gdcmAttribute.h:443 (): ..."
    reason = re.sub(r"^ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    if "invalid logic behavior" in reason:  # GDCM's internal assertion text: nothing a user can act on
        return "its header breaks GDCM's parser: not standard, or damaged"
    return reason


def _read_segment_metadata(reader) -> List[Dict[str, Any]]:
    keys = set(reader.GetMetaDataKeys())
    segments = []
    index = 0
    while f"Segment{index}_ID" in keys:
        get = lambda k, default="": reader.GetMetaData(k) if k in keys else default  # noqa: E731
        color = [float(c) for c in get(f"Segment{index}_Color", "0.5 0.5 0.5").split()]
        segments.append(
            {
                "id": get(f"Segment{index}_ID"),
                "name": get(f"Segment{index}_Name"),
                "value": int(get(f"Segment{index}_LabelValue", str(index + 1))),
                "layer": int(get(f"Segment{index}_Layer", "0")),
                "color": color,
            }
        )
        index += 1
    return segments


def read_dicom_series(folder: "str | os.PathLike[str]", series_uid: Optional[str] = None,
                      frame: Optional[int] = None) -> Volume:
    """Read one DICOM series from ``folder`` with checked slice spacing; ``frame``: which frame
    (from 0, in time order) of a dynamic PET series, which is refused without one
    (:mod:`.dicom_dynamic`; any other series has only frame 0)."""
    folder = Path(folder)
    files, first = _series_files(folder, series_uid)
    if time_slices(first) > 1:
        dynamic = split_dynamic_series(files, folder.name)
        if frame is None:
            raise time_series_error(len(dynamic.files), f"{folder.name} is a dynamic PET series")
        check_frame(frame, len(dynamic.files), folder.name)
        return _read_series_files(folder, dynamic.files[int(frame)], first)
    if frame is not None:
        check_frame(frame, 1, folder.name)
    return _read_series_files(folder, files, first)


def read_dicom_frames(folder: "str | os.PathLike[str]", frames: "Sequence[int] | Callable[[DynamicSeries], Sequence[int]]",
                      series_uid: Optional[str] = None) -> Tuple[List[Volume], DynamicSeries]:
    """Frames of a dynamic PET series, from one scan of the folder: ``(volumes of frames,
    the series split into frames with each one's start and duration)``. ``frames``: which
    (from 0, in time order), or a function choosing them from the split series (its times).

    Raises:
        InputError: as :func:`read_dicom_series`; the series is not a dynamic PET.
    """
    folder = Path(folder)
    files, first = _series_files(folder, series_uid)
    if time_slices(first) <= 1:
        raise InputError(f"{folder.name}: not a dynamic PET series (NumberOfTimeSlices is 1 or absent)")
    dynamic = split_dynamic_series(files, folder.name)
    chosen = list(frames(dynamic) if callable(frames) else frames)
    for f in chosen:
        check_frame(f, len(dynamic.files), folder.name)
    return [_read_series_files(folder, dynamic.files[int(f)], first) for f in chosen], dynamic


def _series_files(folder: Path, series_uid: Optional[str]) -> Tuple[List[str], Any]:
    """The files of the series to read in ``folder`` (``series_uid``, or its only image series)
    and the first one's header."""
    series_files = dicom_series_files(folder)  # one scan: GDCM's takes seconds on a large folder
    series = list_dicom_series(folder, series_files)
    if series_uid is not None and series_uid not in {s["uid"] for s in series}:
        check_left_out_files(folder, series_uid, [])  # its files may all be damaged: say so
    if not series:
        raise InputError(why_no_series(folder))
    if series_uid is None:
        images = image_series(series)
        if len(images) == 1:
            series = images  # an image series and segmentations of it: the folder's image is the series
        if len(series) > 1:
            listing = "; ".join(
                f"'{s['description'] or 'no description'}' ({s['modality']}, {s['files']} files, e.g. "
                f"{Path(series_files[s['uid']][0]).name}; SeriesInstanceUID {s['uid']})"
                for s in series
            )
            raise InputError(
                f"{folder.name} holds {len(series)} DICOM series; give one file of the series you want instead of "
                f"the folder (its series is read), or its SeriesInstanceUID in Python: {listing}"
            )
        series_uid = series[0]["uid"]
    elif series_uid not in {s["uid"] for s in series}:
        raise InputError(f"{folder.name}: no DICOM series with SeriesInstanceUID {series_uid}")
    files = series_files[series_uid]
    check_left_out_files(folder, series_uid, files)
    return files, read_dicom_header(files[0])


def _read_series_files(folder: Path, files: List[str], first: Any) -> Volume:
    """One 3D series from ``files`` (in the series reader's order), checked."""
    import SimpleITK as sitk

    if is_segmentation(first):
        if len(files) > 1:
            raise InputError(f"{folder.name}: the series holds {len(files)} DICOM Segmentation files; open one of them")
        return read_dicom_seg(files[0])
    checked = check_series(files, folder.name)
    warnings = checked.warnings
    if len(files) == 1 and is_enhanced_multiframe(first):
        volume = read_enhanced_multiframe(files[0])
        tags = {kw: str(first.get(kw)).strip() for kw in DICOM_KEYWORDS if first.get(kw) not in (None, "")}
        return _with_dicom_metadata(volume, tags, folder, files, warnings)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    if checked.varying_rescale:
        reader.SetOutputPixelType(sitk.sitkFloat64)  # each slice rescaled by its own slope, none cast to integers
    # the jitter check_series accepted is reported in metadata["warnings"]; ITK would print
    # its own multi-line warning on stderr for every gap over 1e-4 of the spacing
    reader.SetSpacingWarningRelThreshold(SLICE_GAP_MAX_TOLERANCE)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        which = Path(files[0]).name if len(files) == 1 else f"{folder.name} ({len(files)} files)"
        raise InputError(f"{which}: GDCM cannot read this DICOM series ({_itk_reason(exc)})") from None
    tags = {
        kw: reader.GetMetaData(0, tag).strip()
        for kw, tag in DICOM_KEYWORDS.items()
        if reader.HasMetaDataKey(0, tag)
    }
    if image.GetSize()[2] == 1:
        # one slice: ITK has no second position to measure the spacing from and puts 1 mm
        image.SetSpacing(image.GetSpacing()[:2] + (_single_slice_spacing(first, image.GetSpacing()[2]),))
    return _with_dicom_metadata(Volume.from_sitk(image), tags, folder, files, warnings)


def _with_dicom_metadata(volume: Volume, tags: Dict[str, str], folder: Path, files: List[str], warnings: List[str]) -> Volume:
    """``volume`` with what a DICOM series tells beyond its voxels: modality, tags, files,
    warnings, and the PET tags SUV needs."""
    volume.modality = tags.get("Modality") or None
    volume.metadata["dicom"] = tags
    volume.metadata["source"] = str(folder)
    volume.metadata["dicom_files"] = files
    if warnings:
        volume.metadata.setdefault("warnings", []).extend(warnings)
    if volume.modality == "PT":
        volume.metadata["pet"] = read_pet_tags(files[0])
        volume.units = volume.metadata["pet"].get("Units") or None
    return volume


def read_pet_tags(dicom_file: "str | os.PathLike[str]") -> Dict[str, Any]:
    """The tags SUV computation needs, by DICOM keyword (absent tags are left out)."""
    import pydicom

    ds = pydicom.dcmread(str(dicom_file), stop_before_pixels=True)
    tags: Dict[str, Any] = {}
    for kw in PET_KEYWORDS:
        if kw in ds and ds.data_element(kw).value not in (None, ""):
            value = ds.data_element(kw).value
            tags[kw] = list(value) if kw == "CorrectedImage" and not isinstance(value, str) else value
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if seq:
        item = seq[0]
        for kw in RADIOPHARMACEUTICAL_KEYWORDS:
            if kw in item and item.data_element(kw).value not in (None, ""):
                tags[kw] = item.data_element(kw).value
    if PHILIPS_SUV_SCALE_TAG in ds:
        tags["PhilipsSUVScaleFactor"] = ds[PHILIPS_SUV_SCALE_TAG].value
    # pydicom values (DSfloat, MultiValue) -> plain Python for JSON reports
    for k, v in list(tags.items()):
        if isinstance(v, bytes):
            tags[k] = v.decode(errors="replace")
        elif hasattr(v, "real") and not isinstance(v, (int, float)):
            tags[k] = float(v)
        elif not isinstance(v, (int, float, list)):
            tags[k] = str(v)
    return tags


# ---------------------------------------------------------------------------------- writing
def write_volume(
    volume: Volume,
    path: "str | os.PathLike[str]",
    segments: Optional[Sequence[Mapping[str, Any]]] = None,
    compress: bool = True,
    dicom_series: Optional[Sequence[str]] = None,
) -> Path:
    """Write ``volume`` atomically as NIfTI, NRRD, ``.seg.nrrd``, a DICOM series folder (a path
    without suffix) or a DICOM SEG (``.dcm``: a label map of the series ``dicom_series``).

    Args:
        segments: for ``.seg.nrrd`` and DICOM SEG: ``[{"name", "value", "color": (r, g, b) in
            0..1}, ...]`` (defaults: ``volume.metadata["segments"]``, or one per non-zero label).
        compress: gzip-compress NRRD data (NIfTI compression follows ``.nii.gz``).
        dicom_series: for ``.dcm``: the files of the DICOM series ``volume`` is a label map of
            (``Volume.metadata["dicom_files"]`` of the image read from it).

    Returns the path written. Nothing is left behind on failure.
    """
    import SimpleITK as sitk

    p = Path(path)
    name = p.name.lower()
    if name.endswith(".dcm"):
        if not dicom_series:
            raise InputError(f"{p.name}: a .dcm output is a DICOM SEG of the image's DICOM series, and this image was "
                             "not read from one; write .seg.nrrd or .nii.gz (or a folder name for a DICOM series)")
        return write_dicom_seg(volume, dicom_series, p, segments)
    if p.suffix == "" and not name.endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES):
        return write_dicom_series(volume, p)
    kind = image_format(p)
    image = volume.to_sitk()
    if kind == "seg-nrrd":
        labels = volume.array
        if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
            raise InputError("a .seg.nrrd holds integer labels; this volume has fractional values")
        image = Volume.to_sitk(volume.with_array(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)))
        segs = segments if segments is not None else volume.metadata.get("segments")
        if not segs:
            segs = [{"name": f"Segment_{v}", "value": int(v)} for v in np.unique(labels) if v != 0]
        for key, value in seg_nrrd_header(segs, volume.shape).items():
            image.SetMetaData(key, value)
    with atomic_output(p) as tmp:
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(tmp))
        writer.SetUseCompression(compress)
        try:
            writer.Execute(image)
        except RuntimeError as exc:
            raise InputError(f"{p.name}: cannot be written ({first_line(exc)})") from None
    return p


def seg_nrrd_header(segments: Sequence[Mapping[str, Any]], shape: Tuple[int, int, int]) -> Dict[str, str]:
    """The key/value pairs Slicer's segmentation reader expects in a ``.seg.nrrd`` header."""
    z, y, x = shape
    header = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": "",
    }
    for i, seg in enumerate(segments):
        color = seg.get("color") or SEGMENT_COLORS[i % len(SEGMENT_COLORS)]
        header.update(
            {
                f"Segment{i}_ID": str(seg.get("id") or f"Segment_{seg['value']}"),
                f"Segment{i}_Name": str(seg.get("name") or f"Segment_{seg['value']}"),
                f"Segment{i}_Color": " ".join(f"{float(c):.6g}" for c in color[:3]),
                f"Segment{i}_ColorAutoGenerated": "0",
                f"Segment{i}_LabelValue": str(int(seg["value"])),
                f"Segment{i}_Layer": "0",
                f"Segment{i}_Extent": f"0 {x - 1} 0 {y - 1} 0 {z - 1}",
                f"Segment{i}_NameAutoGenerated": "0",
                f"Segment{i}_Tags": str(seg.get("tags", "")),
            }
        )
    return header
