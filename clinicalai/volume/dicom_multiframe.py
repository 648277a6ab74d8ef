"""Enhanced multi-frame DICOM images (one file, every slice a frame with its own position), read
with highdicom.

Enhanced MR / CT / PET files (Philips, Siemens XA, Legacy Converted objects from PACS) store the
frames in whatever order the scanner chose (acquisition, interleaved, by dimension index) and
each frame's position in its functional groups. ITK's reader stacks the frames in file order
and takes the slice spacing from a single tag: ordered frames come out right, reordered ones as
a volume of 1 mm slices in the wrong order, without a warning. highdicom
(``Image.get_volume``) sorts the frames by position along the slice normal and checks that they
form one regular grid; this module turns its volume into a :class:`~clinicalai.volume.Volume`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .core import Volume


def exception_line(exc: BaseException) -> str:
    """The first line of a highdicom / pydicom error (theirs put the point first; ITK's last:
    :func:`clinicalai.volume.nifti.first_line`)."""
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def volume_from_highdicom(hd_volume: Any, dtype: Any = None, **kwargs: Any) -> Volume:
    """A :class:`Volume` from a ``highdicom.Volume``: its array is (slices, rows, columns) and
    its affine maps (slice, row, column, 1) to LPS mm; a Volume's x is the column, y the row,
    z the slice, with direction columns x, y, z."""
    affine = np.asarray(hd_volume.affine, dtype=float)
    axes = affine[:3, [2, 1, 0]]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing
    origin = affine[:3, 3].copy()
    array = np.asarray(hd_volume.array)
    if np.dot(direction[:, 2], np.cross(direction[:, 0], direction[:, 1])) < 0:
        # slices along row x column, as ITK and Slicer stack a series: the same voxels
        origin = origin + (array.shape[0] - 1) * spacing[2] * direction[:, 2]
        direction[:, 2] = -direction[:, 2]
        array = array[::-1]
    if dtype is not None:
        array = array.astype(dtype)
    return Volume(
        np.ascontiguousarray(array),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(v) for v in origin),
        direction=direction,
        **kwargs,
    )


def read_enhanced_multiframe(path: "str | os.PathLike[str]") -> Volume:
    """Read one enhanced multi-frame DICOM image whose frames are slices at distinct positions.

    Values: the stored values through the modality transform (rescale slope / intercept, per
    frame where the file has one per frame), as ITK reads a series; float64.

    Raises:
        InputError: highdicom cannot parse it, or its frames are not one regular grid (a gap,
            a repeated position, frames of several orientations).
    """
    import highdicom as hd

    p = Path(path)
    try:
        image = hd.imread(str(p))
        hd_volume = image.get_volume(apply_real_world_transform=False, apply_modality_transform=None)
    except (ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise InputError(f"{p.name}: its frames do not form one regular 3D volume ({exception_line(exc)})") from None
    volume = volume_from_highdicom(hd_volume)
    volume.metadata["source"] = str(p)
    return volume
