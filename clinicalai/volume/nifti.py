"""NIfTI beyond what SimpleITK reads: NIfTI-2 (through nibabel) and files whose qform and sform
disagree.

SimpleITK's NIfTI reader (and so Slicer's) takes NIfTI-1 only, and of the two geometries a
NIfTI can hold it takes the sform when that is scanner-coded or there is no qform, else the
qform; nibabel, MONAI's ``NibabelReader`` and FSL take the sform whenever it has a code. A
registered image (scanner qform, aligned / MNI sform) is therefore not where a model trained
through MONAI saw it; :func:`nifti_geometry_warning` says so. NIfTI-2 is read by ITK's rule
(:func:`itk_nifti_affine`), so a file reads the same in either version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .core import Volume, time_series_error


def first_line(exc: BaseException) -> str:
    """The line of an exception's message a user can act on (ITK puts it last)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def check_frame(frame: int, frames: int, name: str) -> None:
    """Refuse a time point outside ``0 .. frames - 1``."""
    if not 0 <= int(frame) < frames:
        what = "a 3D image: its only frame is 0" if frames == 1 else f"its frames are 0 to {frames - 1}"
        raise InputError(f"{name} has no frame {frame} ({what})")


def read_nifti2(p: Path) -> Volume:
    """A NIfTI-2 file (64-bit sizes: what HCP pipelines, Connectome Workbench and dcm2niix
    write for large images), read by nibabel: SimpleITK's NIfTI reader takes NIfTI-1 only.
    The geometry is the one ITK would take (:func:`itk_nifti_affine`), so a file reads the same
    as NIfTI-1 or NIfTI-2; the volume keeps the voxels in LPS. A 4D file is refused
    (:func:`time_series_error`) before any voxel is read."""
    _, count = read_nifti_frames(p, [])
    if count > 1:
        raise time_series_error(count)
    return read_nifti_frames(p, [0])[0][0]


def _volume_of(image: Any, data: np.ndarray, p: Path) -> Volume:
    """A volume of ``data`` ``(i, j, k)`` on the geometry ITK takes from the nibabel ``image``:
    the direction and origin of :func:`itk_nifti_affine`, the voxel sizes of ``pixdim`` (ITK's
    NIfTI reader takes them from there, not from the matrix's columns, which a float32 sform
    rounds: 4.8 mm came out 4.79999986, and a TBR moved by 2 % between two reads of one file)."""
    ras, _ = itk_nifti_affine(image)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    columns = np.linalg.norm(lps[:3, :3], axis=0)
    # pixdim[1:4] as ITK reads it; ITK gives an axis beyond dim[0] (a 2D file's third) 1 mm
    zooms = np.abs(np.asarray(image.header["pixdim"][1:4], dtype=float))
    zooms[int(image.header["dim"][0]):] = 1.0
    spacing = np.where((zooms > 0) & np.isfinite(zooms), zooms.astype(np.float32).astype(float), columns)
    volume = Volume(
        np.ascontiguousarray(data.transpose(2, 1, 0)),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(v) for v in lps[:3, 3]),
        direction=lps[:3, :3] / columns,
    )
    volume.metadata["source"] = str(p)
    return volume


def read_nifti_frames(p: Path, frames: "Sequence[int] | None" = None) -> Tuple[List[Volume], int]:
    """Time points of a 3D or 4D NIfTI (1 or 2), reading only the span of ``frames`` (default
    all): ``(volumes, time points in the file)``, each on the geometry ITK takes.

    nibabel reads a slab of the voxel array lazily (memory-mapped for ``.nii``; for ``.nii.gz``
    decompressed up to the last frame wanted, once): the frames of a static window, not the
    whole dynamic PET, are held in memory."""
    import nibabel as nib

    try:
        image = nib.load(str(p))
        shape = tuple(int(n) for n in image.shape)
        while len(shape) > 4 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) == 2:  # one slice
            shape += (1,)
        if len(shape) not in (3, 4):
            raise InputError(f"{p.name}: only scalar 3D images are supported (this one is {len(shape)}D, "
                             f"{image.get_data_dtype()})")
        count = shape[3] if len(shape) == 4 else 1
        chosen = list(range(count)) if frames is None else [int(f) for f in frames]
        for f in chosen:
            check_frame(f, count, p.name)
        if not chosen:
            return [], count
        lo, hi = min(chosen), max(chosen)
        proxy = image.dataobj
        slab = np.asanyarray(proxy[..., lo:hi + 1] if len(image.shape) >= 4 else proxy)  # applies scl_slope / scl_inter
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InputError(f"{p.name}: cannot be read as an image ({first_line(exc)})") from None
    slab = slab.reshape(shape[:3] + (hi - lo + 1,))
    if slab.dtype.kind not in "biuf":
        raise InputError(f"{p.name}: only scalar 3D images are supported (this one is 3D, {slab.dtype})")
    volumes = [_volume_of(image, slab[..., f - lo], p) for f in chosen]
    warn_of_two_geometries(volumes[0], p, image)
    return volumes, count


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


def warn_of_two_geometries(volume: Volume, p: Path, image: Any = None) -> None:
    warning = nifti_geometry_warning(p, image)
    if warning:
        volume.metadata.setdefault("warnings", []).append(warning)
