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
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..outputs import atomic_output
from .bids_pet import bids_pet_sidecar, read_bids_pet_sidecar
from .core import Volume, time_series_error
from .dicom_checks import (
    SEGMENTATION_SOP_CLASS,
    SLICE_GAP_MAX_TOLERANCE,
    check_is_image,
    check_left_out_files,
    check_series,
    dicom_object_kind,
    has_pixels,
    is_enhanced_multiframe,
    read_dicom_header,
)
from .dicom_multiframe import read_enhanced_multiframe
from .dicom_seg import read_dicom_seg, write_dicom_seg
from .dicom_writer import write_dicom_series
from .formats import NIFTI_SUFFIXES, NRRD_SUFFIXES, SEGMENT_COLORS, has_dicom_magic, image_format
from .integrity import check_image_file, nifti_version

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
def read_volume(path: "str | os.PathLike[str]", series_uid: Optional[str] = None) -> Volume:
    """Read a NIfTI / NRRD file, a DICOM series (folder, or one file of the series) or a DICOM
    Segmentation file (a label map, :mod:`.dicom_seg`).

    Args:
        path: the file or DICOM folder.
        series_uid: which series to read when a folder holds several.

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
            if str(header.get("SOPClassUID") or "") == SEGMENTATION_SOP_CLASS:
                return read_dicom_seg(p)  # a SEG file is a whole label map on its own
            check_is_image(header, p.name)
            if series_uid is None:  # one file given: read the series it belongs to
                uid = header.get("SeriesInstanceUID")
                series_uid = str(uid) if uid else None
        return read_dicom_series(p if p.is_dir() else p.parent, series_uid=series_uid)
    import SimpleITK as sitk

    # header, size and data-file checks first: ITK zero-fills cut-off files, follows any NRRD
    # "data file:" path and allocates whatever the header declares
    check_image_file(p, kind)
    if kind == "nifti" and nifti_version(p) == 2:
        volume = _read_nifti2(p)
        add_bids_pet_tags(volume, p)
        return volume
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{p.name}: cannot be read as an image ({_first_line(exc)})") from None
    if kind == "seg-nrrd" and image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(
            f"{p.name} is a segmentation with {image.GetNumberOfComponentsPerPixel()} layers (overlapping "
            "segments); save it from Slicer with non-overlapping segments (one layer)"
        )
    volume = Volume.from_sitk(image)
    volume.metadata["source"] = str(p)
    if kind == "nifti":
        _warn_of_two_geometries(volume, p)
    if kind == "seg-nrrd":
        volume.metadata["segments"] = _read_segment_metadata(reader)
        volume.modality = "SEG"
        volume.units = "label"
    else:
        add_bids_pet_tags(volume, p)
    return volume


def _read_nifti2(p: Path) -> Volume:
    """A NIfTI-2 file (64-bit sizes: what HCP pipelines, Connectome Workbench and dcm2niix
    write for large images), read by nibabel: SimpleITK's NIfTI reader takes NIfTI-1 only.
    The geometry is the one ITK would take (:func:`itk_nifti_affine`), so a file reads the same
    as NIfTI-1 or NIfTI-2; the volume keeps the voxels in LPS."""
    import nibabel as nib

    try:
        image = nib.load(str(p))
        data = np.asanyarray(image.dataobj)  # applies scl_slope / scl_inter like ITK
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InputError(f"{p.name}: cannot be read as an image ({_first_line(exc)})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise time_series_error(data.shape[3])
    if data.ndim not in (2, 3) or data.dtype.kind not in "biuf":
        raise InputError(f"{p.name}: only scalar 3D images are supported (this one is {data.ndim}D, {data.dtype})")
    if data.ndim == 2:
        data = data[:, :, None]
    ras, _ = itk_nifti_affine(image)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    volume = Volume(
        np.ascontiguousarray(data.transpose(2, 1, 0)),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(v) for v in lps[:3, 3]),
        direction=lps[:3, :3] / spacing,
    )
    volume.metadata["source"] = str(p)
    _warn_of_two_geometries(volume, p, image)
    return volume


#: the NIfTI xform codes' names (NIfTI-1 standard)
NIFTI_XFORM_NAMES = {1: "scanner", 2: "aligned", 3: "Talairach", 4: "MNI", 5: "template"}
#: qform and sform further apart than this (mm, at any corner of the volume) are two geometries
TWO_GEOMETRIES_MM = 0.01


def itk_nifti_affine(image: Any) -> Tuple[np.ndarray, str]:
    """The voxel-to-RAS matrix ITK's (and so Slicer's) NIfTI reader takes from a nibabel image,
    and which it is: the sform when its code is "scanner" or the qform has no code, else the
    qform; with neither, the voxel sizes (LPS axes, origin 0). nibabel and MONAI's
    ``NibabelReader`` take the sform whenever it has a code."""
    qform, qcode = image.get_qform(coded=True)
    sform, scode = image.get_sform(coded=True)
    if scode and (scode == 1 or not qcode):
        return np.asarray(sform, dtype=float), "sform"
    if qcode:
        return np.asarray(qform, dtype=float), "qform"
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    return np.diag([-zooms[0], -zooms[1], zooms[2], 1.0]), "voxel sizes"


def nifti_geometry_warning(p: "str | os.PathLike[str]", image: Any = None) -> Optional[str]:
    """One line when a NIfTI's qform and sform both have a code, put the volume in different
    places, and ITK and Slicer read the qform (:func:`itk_nifti_affine`) while nibabel, MONAI
    and FSL read the sform: a model trained through them saw the other geometry. Header only."""
    import nibabel as nib

    p = Path(p)
    try:
        image = image if image is not None else nib.load(str(p))
        qform, qcode = image.get_qform(coded=True)
        sform, scode = image.get_sform(coded=True)
        shape = [max(int(n), 1) for n in image.shape[:3]]
    except Exception:  # noqa: BLE001 - the image was read; a header nibabel dislikes is not worth a refusal
        return None
    if not (qcode and scode) or itk_nifti_affine(image)[1] != "qform":
        return None  # one geometry, or every reader takes the sform
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    apart = float(np.linalg.norm((corners @ (np.asarray(qform) - np.asarray(sform)).T)[:, :3], axis=1).max())
    if apart <= TWO_GEOMETRIES_MM:
        return None
    return (f"{p.name} holds two geometries up to {apart:.1f} mm apart (qform: {NIFTI_XFORM_NAMES.get(int(qcode), qcode)}, "
            f"sform: {NIFTI_XFORM_NAMES.get(int(scode), scode)}); read with the qform, as ITK and Slicer do, while nibabel, "
            "MONAI and FSL use the sform: a model trained through them saw the other one")


def _warn_of_two_geometries(volume: Volume, p: Path, image: Any = None) -> None:
    warning = nifti_geometry_warning(p, image)
    if warning:
        volume.metadata.setdefault("warnings", []).append(warning)


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


def _single_slice_spacing(dicom_file: str, itk_spacing: float) -> float:
    """The slice spacing of a one-slice series: SpacingBetweenSlices, else SliceThickness (as
    Slicer shows such a slice), else what ITK gave."""
    ds = read_dicom_header(dicom_file)
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
    reason = _first_line(exc)
    reason = re.sub(r"^.*?\(\):\s*", "", reason)  # "/path/gdcmAttribute.h:443 (): ..."
    reason = re.sub(r"^ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    if "invalid logic behavior" in reason:  # GDCM's internal assertion text: nothing a user can act on
        return "its header breaks GDCM's parser: not standard, or damaged"
    return reason


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages put the useful sentence last
    return lines[-1] if lines else type(exc).__name__


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


def dicom_series_files(folder: "str | os.PathLike[str]") -> Dict[str, List[str]]:
    """SeriesInstanceUID -> the image files of that series in ``folder``, in slice order.

    GDCM's scanner (what SimpleITK and Slicer's readers use) groups and sorts the files. It
    stops with an error at some files it cannot parse (e.g. a single-frame RT dose, on which
    GDCM's own consistency assertion fails), and then no file of the folder can be read. Such a
    folder is scanned again file by file with pydicom (headers only); each file that fails
    costs only itself. pydicom does not sort slices, so the files of a series are put in order
    along the slice normal, as GDCM does.
    """
    import SimpleITK as sitk

    folder = str(folder)
    try:
        return {
            uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ()
        }
    except RuntimeError:
        return _series_files_by_pydicom(Path(folder))


def _dicom_headers(folder: Path) -> Iterator[Tuple[Path, Any]]:
    """``(path, header)`` of every file of ``folder`` (not its subfolders) that reads as DICOM."""
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            yield path, read_dicom_header(path)
        except InputError:
            continue


def _series_files_by_pydicom(folder: Path) -> Dict[str, List[str]]:
    groups: Dict[str, List[Tuple[Tuple[float, float, str], str]]] = {}
    for path, ds in _dicom_headers(folder):
        uid = ds.get("SeriesInstanceUID")
        if not uid or not has_pixels(ds):
            continue
        groups.setdefault(str(uid), []).append((_slice_sort_key(ds, path.name), str(path)))
    return {uid: [f for _, f in sorted(members)] for uid, members in groups.items()}


def _slice_sort_key(ds: Any, name: str) -> Tuple[float, float, str]:
    """Position along the slice normal, then InstanceNumber, then the file name."""
    position = 0.0
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        position = float(np.dot(np.cross(iop[:3], iop[3:]), ipp))
    except (AttributeError, TypeError, ValueError):
        pass
    try:
        instance = float(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        instance = 0.0
    return (position, instance, name)


def list_dicom_series(folder: "str | os.PathLike[str]", series_files: Optional[Dict[str, List[str]]] = None) -> List[Dict[str, Any]]:
    """Every DICOM series under ``folder``: uid, description, modality, number of files
    (``series_files``: :func:`dicom_series_files` of the folder, when the caller has it)."""
    series = []
    for uid, files in (dicom_series_files(folder) if series_files is None else series_files).items():
        ds = read_dicom_header(files[0])
        series.append(
            {
                "uid": uid,
                "description": str(ds.get("SeriesDescription") or "").strip(),
                "modality": str(ds.get("Modality") or "").strip(),
                "files": len(files),
            }
        )
    return series


def _why_no_series(folder: Path) -> str:
    """Why ``folder`` holds no image series, in one sentence: what the DICOM files there are
    (reports, RT objects, a DICOMDIR), or which subfolders hold the series (a disc export)."""
    kinds: Dict[str, int] = {}
    dicom_files = 0
    for path, ds in _dicom_headers(folder):
        dicom_files += 1
        if path.name.upper() == "DICOMDIR" or "DirectoryRecordSequence" in ds:
            kinds["DICOMDIR"] = kinds.get("DICOMDIR", 0) + 1
        elif not has_pixels(ds):
            what = dicom_object_kind(ds)
            kinds[what] = kinds.get(what, 0) + 1
    below = _subfolders_with_dicom(folder)
    if below:
        shown = ", ".join(below[:3]) + (f" and {len(below) - 3} more" if len(below) > 3 else "")
        return f"{folder.name}: the DICOM series are in its subfolders ({shown}); choose the folder of one series"
    if kinds:
        listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return f"{folder.name}: no DICOM image series in this folder; its DICOM files hold no image ({listing})"
    if dicom_files:
        return f"{folder.name}: no DICOM image series in this folder (GDCM could read none of its {dicom_files} DICOM files)"
    return f"{folder}: no DICOM series found in this folder"


#: how deep, and how many folders, :func:`_subfolders_with_dicom` looks (a disc export nests
#: PATIENT/STUDY/SERIES, 3-4 levels; the bound keeps a mistaken choice of "/" cheap)
_SUBFOLDER_DEPTH = 4
_SUBFOLDER_VISITS = 2000


def _subfolders_with_dicom(folder: Path) -> List[str]:
    found: List[str] = []
    visits = 0
    stack = [(folder, 0)]
    while stack and visits < _SUBFOLDER_VISITS:
        current, depth = stack.pop()
        visits += 1
        try:
            entries = sorted(current.iterdir())
        except OSError:
            continue
        if current != folder and any(e.is_file() and (e.suffix.lower() == ".dcm" or has_dicom_magic(e)) for e in entries[:50]):
            found.append(str(current.relative_to(folder)))
            continue
        if depth < _SUBFOLDER_DEPTH:
            stack.extend((e, depth + 1) for e in reversed(entries) if e.is_dir() and not e.is_symlink() and not e.name.startswith("."))
    return found


def read_dicom_series(folder: "str | os.PathLike[str]", series_uid: Optional[str] = None) -> Volume:
    """Read one DICOM series from ``folder`` with checked slice spacing."""
    import SimpleITK as sitk

    folder = Path(folder)
    series_files = dicom_series_files(folder)  # one scan: GDCM's takes seconds on a large folder
    series = list_dicom_series(folder, series_files)
    if series_uid is not None and series_uid not in {s["uid"] for s in series}:
        check_left_out_files(folder, series_uid, [])  # its files may all be damaged: say so
    if not series:
        raise InputError(_why_no_series(folder))
    if series_uid is None:
        images = [s for s in series if s["modality"] != "SEG"]
        if len(images) == 1:
            series = images  # an image series and segmentations of it: the folder's image is the series
        if len(series) > 1:
            listing = "; ".join(
                f"{s['uid']} ({s['description'] or 'no description'}, {s['modality']}, {s['files']} files)"
                for s in series
            )
            raise InputError(
                f"{folder.name} holds {len(series)} DICOM series; choose one by SeriesInstanceUID: {listing}"
            )
        series_uid = series[0]["uid"]
    elif series_uid not in {s["uid"] for s in series}:
        raise InputError(f"{folder.name}: no DICOM series with SeriesInstanceUID {series_uid}")
    files = series_files[series_uid]
    check_left_out_files(folder, series_uid, files)
    first = read_dicom_header(files[0])
    if str(first.get("SOPClassUID") or "") == SEGMENTATION_SOP_CLASS:
        if len(files) > 1:
            raise InputError(f"{folder.name}: the series {series_uid} holds {len(files)} DICOM Segmentation files; open one of them")
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
        image.SetSpacing(image.GetSpacing()[:2] + (_single_slice_spacing(files[0], image.GetSpacing()[2]),))
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
            raise InputError(f"{p.name}: cannot be written ({_first_line(exc)})") from None
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
