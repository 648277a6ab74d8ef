"""Writing a volume as a DICOM series (one file per slice), after SimpleITK's
``DicomSeriesFromArray`` recipe: geometry goes into Image Position / Orientation (Patient)
of every slice, so ITK reads the same grid back.

Integer volumes are stored as they are (values exact). Float volumes are stored as uint16
with a per-series Rescale Slope / Intercept, so values come back within half a step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..errors import InputError
from ..outputs import atomic_output
from .core import Volume

#: SOP Class UID of a slice by modality (anything else is stored as Secondary Capture)
MODALITY_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def check_series_folder(folder: "str | Path") -> Path:
    """Refuse to replace ``folder`` unless it is new, empty or holds only ``.dcm`` files.

    A series folder is replaced as a whole; a path that names a file, or a folder holding
    anything else (other files, sub-folders: a user's home or project folder given by
    mistake), is an :class:`InputError` and nothing is touched.
    """
    folder = Path(folder)
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise InputError(f"{folder} is a file; a DICOM series is written into a new or empty folder")
    others = [p.name for p in folder.iterdir() if not (p.is_file() and p.suffix.lower() == ".dcm")]
    if others:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(
            f"{folder} holds files other than a DICOM series ({shown}); write the series into a new or empty folder"
        )
    return folder


def write_dicom_series(
    volume: Volume,
    folder: "str | Path",
    extra_tags: Optional[Mapping[str, str]] = None,
    series_description: str = "ClinicalAI",
) -> Path:
    """Write ``volume`` as a DICOM series into ``folder`` (created; replaced atomically).

    ``extra_tags`` maps ``"gggg|eeee"`` to string values set on every slice. An existing
    ``folder`` is replaced only when it holds nothing but ``.dcm`` files
    (:func:`check_series_folder`).
    """
    import SimpleITK as sitk
    import pydicom.uid

    folder = check_series_folder(folder)
    arr = volume.array
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    bits: dict = {}
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min(initial=0) >= 0 and arr.max(initial=0) <= 65535:
            pixels, slope, intercept = arr.astype(np.uint16), 1.0, 0.0
        elif arr.min(initial=0) >= -32768 and arr.max(initial=0) <= 32767:
            pixels, slope, intercept = arr.astype(np.int16), 1.0, 0.0
        else:
            raise InputError("integer values outside the 16-bit range cannot be stored in DICOM here")
    else:
        volume.require_finite()
        # GDCM refuses a fractional slope/intercept on integer pixels, so a float volume is
        # handed over as float64 and GDCM quantises it with the slope/intercept given here
        # (16-bit unsigned stored values; error at most half a step).
        lo, hi = float(arr.min()), float(arr.max())
        intercept = float(f"{lo:.10g}")
        slope = float(f"{(hi - intercept) / 65534.0:.10g}") if hi > lo else 1.0
        pixels = arr.astype(np.float64)
        bits = {"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "0"}
    modality = volume.modality or "OT"
    direction = volume.direction
    study_uid = pydicom.uid.generate_uid()
    series_uid = pydicom.uid.generate_uid()
    frame_uid = pydicom.uid.generate_uid()
    now_date, now_time = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    iop = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    common = {
        "0008|0060": modality,
        "0008|0016": MODALITY_SOP_CLASS.get(modality, _SECONDARY_CAPTURE),
        "0020|000d": study_uid,
        "0020|000e": series_uid,
        "0020|0052": frame_uid,
        "0008|0020": now_date,
        "0008|0030": now_time,
        "0008|0021": now_date,
        "0008|0031": now_time,
        "0008|103e": series_description,
        "0010|0010": "Anonymous",
        "0010|0020": "ClinicalAI",
        "0020|0037": iop,
        "0028|1053": f"{slope:.10g}",
        "0028|1052": f"{intercept:.10g}",
        "0018|0050": f"{volume.spacing[2]:.10g}",
        "0018|0088": f"{volume.spacing[2]:.10g}",
        **bits,
    }
    if extra_tags:
        common.update(extra_tags)
    image = volume.with_array(pixels).to_sitk()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    with atomic_output(folder, directory=True, replace_checked=True) as tmp:  # check_series_folder: .dcm only
        for k in range(pixels.shape[0]):
            # a one-slice 3D image, not a 2D one: GDCM writes the image's third spacing into an MR
            # slice's SpacingBetweenSlices, and a 2D slice's is 1 (tools that trust the tag,
            # highdicom among them, would see 1 mm slices)
            slice_image = image[:, :, k:k + 1]
            for tag, value in common.items():
                slice_image.SetMetaData(tag, value)
            position = volume.index_to_lps() @ np.array([0.0, 0.0, float(k), 1.0])
            slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position[:3]))
            slice_image.SetMetaData("0020|0013", str(k + 1))
            slice_image.SetMetaData("0008|0018", pydicom.uid.generate_uid())
            writer.SetFileName(str(tmp / f"slice{k:04d}.dcm"))
            writer.Execute(slice_image)
    return folder
