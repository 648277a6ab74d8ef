"""DICOM Segmentation objects (SEG) read as label maps, with highdicom.

A DICOM SEG is how PACS-side AI tools, Slicer's QuantitativeReporting (dcmqi) and
TotalSegmentator's DICOM output store masks: each segment is a stack of binary (or
fractional) frames with its own positions, usually only the frames where the segment is
present. GDCM reads such a file as a plain image, stacking every frame of every segment as
"slices", which puts segments on top of each other at wrong positions; highdicom
(``Segmentation.get_volume``) sorts the frames by position, checks they form a regular grid
and combines the segments into one label map, which this module turns into a
:class:`~clinicalai.volume.Volume` (labels = segment numbers, names and colours in
``metadata["segments"]`` as for a ``.seg.nrrd``).

The volume covers the frames the file holds, which is often fewer slices than the image the
segmentation was drawn on; :func:`clinicalai.volume.spatial.place_on_grid` puts it on that
image's grid when both share a lattice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError
from .core import Volume
from .dicom_multiframe import exception_line, volume_from_highdicom
from .formats import SEGMENT_COLORS
from .integrity import check_voxel_budget

#: label maps are written as uint8 (``.seg.nrrd``, NIfTI masks): segment numbers must fit
MAX_SEGMENT_NUMBER = 255


def is_dicom_seg_file(path: "str | os.PathLike[str]") -> bool:
    """True for a DICOM Segmentation file (by its SOP class; the name may be anything). Reads
    the file meta and the SOP class only: the browser's file list and uploads call it in the
    server process, on files nobody has checked yet."""
    import pydicom

    from .dicom_checks import is_segmentation
    from .formats import image_format

    p = Path(path)
    try:
        if not p.is_file() or image_format(p) != "dicom":
            return False
        ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not DICOM, or damaged: not a SEG this app opens
        return False
    return is_segmentation(ds)


def read_dicom_seg(path: "str | os.PathLike[str]") -> Volume:
    """Read a DICOM Segmentation file as a label volume.

    Returns:
        uint8 label volume (z, y, x) in LPS geometry, ``modality="SEG"``, ``units="label"``;
        voxel value = segment number (0 = no segment); ``metadata["segments"]``: one dict per
        segment (``id``, ``name``, ``value``, ``layer``, ``color`` RGB 0..1).

    Raises:
        InputError: not a readable SEG; over the voxel budget; segments that overlap (a label
            map holds one segment per voxel); frames that do not form one regular 3D grid;
            segment numbers above 255.
    """
    import highdicom as hd

    p = Path(path)
    try:
        seg = hd.seg.segread(str(p))
    except Exception as exc:  # noqa: BLE001 - highdicom / pydicom raise many types for bad files
        raise InputError(f"{p.name}: not a readable DICOM Segmentation ({exception_line(exc)})") from None
    descriptions = list(seg.SegmentSequence)
    numbers = [int(d.SegmentNumber) for d in descriptions]
    if not numbers:
        raise InputError(f"{p.name}: the DICOM Segmentation describes no segment")
    if max(numbers) > MAX_SEGMENT_NUMBER:
        raise InputError(f"{p.name}: segment number {max(numbers)} does not fit a label map (at most {MAX_SEGMENT_NUMBER})")
    frames = int(seg.get("NumberOfFrames") or 1)
    check_voxel_budget(p.name, (int(seg.Columns), int(seg.Rows), frames), 1.0)
    try:
        hd_volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint8)
    except (ValueError, RuntimeError) as exc:
        message = exception_line(exc)
        if "overlap" in message.lower():
            raise InputError(
                f"{p.name} has overlapping segments (a voxel in more than one); a label map holds one "
                "segment per voxel: export the segments you need without overlap"
            ) from None
        raise InputError(f"{p.name}: its frames do not form one regular 3D grid ({message})") from None
    return _to_volume(hd_volume, descriptions, p)


def write_dicom_seg(
    labels: Volume,
    source_files: Sequence["str | os.PathLike[str]"],
    path: "str | os.PathLike[str]",
    segments: Optional[Sequence[Mapping[str, Any]]] = None,
    series_description: str = "ClinicalAI segmentation",
) -> Path:
    """Write ``labels`` (a label map on the grid of the DICOM series ``source_files``) as a DICOM
    Segmentation of that series, with highdicom: one binary segment per label value, only the
    frames that hold a segment, as a PACS-side tool writes it.

    Args:
        labels: integer label map (z, y, x) on the series' grid (0 = background).
        source_files: the image series' files (any order).
        path: the ``.dcm`` file to write (atomically).
        segments: ``name`` / ``value`` per segment (default ``labels.metadata["segments"]``,
            else ``Segment_<value>`` for each value present).

    Raises:
        InputError: a source file without a position, or one whose slice is not on the label
            map's grid.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from ..outputs import atomic_output

    sources = [pydicom.dcmread(str(f)) for f in source_files]
    to_index = np.linalg.inv(labels.index_to_lps())
    frames = []
    for ds in sources:
        if "ImagePositionPatient" not in ds:
            raise InputError(f"{Path(ds.filename).name}: no ImagePositionPatient; cannot place its segmentation frame")
        k = to_index @ np.r_[np.asarray([float(v) for v in ds.ImagePositionPatient]), 1.0]
        if not np.allclose(k[:2], 0, atol=1e-3) or abs(k[2] - round(k[2])) > 1e-3 or not 0 <= round(k[2]) < labels.shape[0]:
            raise InputError(f"{Path(ds.filename).name} is not a slice of the label map's grid")
        frames.append(labels.array[int(round(k[2]))])
    entries = list(segments or labels.metadata.get("segments") or
                   [{"value": int(v)} for v in np.unique(labels.array) if v != 0])
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=int(e["value"]), segment_label=str(e.get("name") or f"Segment_{int(e['value'])}"),
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="ClinicalAI", version="1", family=codes.cid7162.ArtificialIntelligence))
        for e in sorted(entries, key=lambda e: int(e["value"]))
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.stack(frames).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="ClinicalAI", manufacturer_model_name="ClinicalAI", software_versions="1",
        device_serial_number="0", series_description=series_description)
    out = Path(path)
    with atomic_output(out) as tmp:
        seg.save_as(tmp)
    return out


def _to_volume(hd_volume: Any, descriptions: List[Any], source: Path) -> Volume:
    volume = volume_from_highdicom(hd_volume, dtype=np.uint8, modality="SEG", units="label")
    volume.metadata["source"] = str(source)
    volume.metadata["segments"] = [_segment_entry(d, i) for i, d in enumerate(descriptions)]
    return volume


def _segment_entry(description: Any, index: int) -> Dict[str, Any]:
    number = int(description.SegmentNumber)
    name = str(description.get("SegmentLabel") or f"Segment_{number}")
    color = [float(c) for c in SEGMENT_COLORS[index % len(SEGMENT_COLORS)]]
    lab = description.get("RecommendedDisplayCIELabValue")
    if lab is not None and len(lab) == 3:
        from highdicom.color import CIELabColor

        try:
            color = [c / 255.0 for c in CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb()]
        except (TypeError, ValueError):
            pass  # a malformed colour is not worth refusing the mask for: the palette's stays
    return {"id": f"Segment_{number}", "name": name, "value": number, "layer": 0, "color": color}
