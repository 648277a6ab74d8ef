"""A dynamic PET series: the slices of every frame in one DICOM series, as scanners export it.

The PET Image module numbers each image ``ImageIndex = (frame - 1) x NumberOfSlices + slice``
(both from 1; Type 1 in PET), and the PET Series module gives ``NumberOfTimeSlices`` for a
``DYNAMIC`` series. Each image also carries its frame's start (``AcquisitionDate`` /
``AcquisitionTime``) and length (``ActualFrameDuration``, ms). GDCM and SimpleITK read such a
series as one stack with every position repeated, which :mod:`.dicom_checks` refuses as a cine;
here its files are split into frames, each read and checked as a 3D series of its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

from ..errors import InputError

#: what the split needs of each file (pydicom ``specific_tags``)
DYNAMIC_TAGS = ["Modality", "NumberOfTimeSlices", "NumberOfSlices", "ImageIndex", "AcquisitionDate",
                "AcquisitionTime", "ActualFrameDuration", "DecayCorrectionDateTime"]


def time_slices(ds: Any) -> int:
    """How many frames a PET series' header says it holds (1 for anything else)."""
    if str(ds.get("Modality", "")).upper() != "PT":
        return 1
    try:
        return max(int(ds.get("NumberOfTimeSlices") or 1), 1)
    except (TypeError, ValueError):
        return 1


@dataclass
class DynamicSeries:
    """A dynamic PET series split into frames.

    Attributes:
        files: each frame's files ``[frame][slice]``, frames in time order.
        starts: each frame's start (date-time of its images' acquisition).
        durations_s: each frame's length (s).
        decay_references: each frame's ``DecayCorrectionDateTime`` (0018,9701; DICOM DT text), the
            time its values are decay-corrected to when a scanner writes it per frame; "" when absent.
    """

    files: List[List[str]]
    starts: List[dt.datetime]
    durations_s: List[float]
    decay_references: List[str]


def split_dynamic_series(files: Sequence[str], name: str) -> DynamicSeries:
    """The frames of a dynamic PET series' ``files``.

    Each frame keeps the files in the order given (the series reader's, by position).

    Raises:
        InputError: an image without ``ImageIndex``; a frame with fewer or more images than
            ``NumberOfSlices`` (a series cut short); a frame without start or duration, or
            whose images disagree on them.
    """
    import pydicom

    headers = []
    for f in files:
        try:
            headers.append(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=DYNAMIC_TAGS))
        except Exception:  # noqa: BLE001 - pydicom raises many types for damaged files
            raise InputError(f"{Path(f).name}: not a readable DICOM file (damaged or cut off in its header)") from None
    frames, slices = time_slices(headers[0]), int(headers[0].get("NumberOfSlices") or 0)
    if slices < 1:
        raise InputError(f"{name}: a dynamic PET series without NumberOfSlices cannot be split into its frames")
    groups: List[List[tuple]] = [[] for _ in range(frames)]
    for f, ds in zip(files, headers):
        index = ds.get("ImageIndex")
        if index is None or not 1 <= int(index) <= frames * slices:
            raise InputError(f"{Path(f).name}: an image of a dynamic PET series without a valid ImageIndex "
                             f"(1 to {frames * slices})")
        groups[(int(index) - 1) // slices].append((int(index), f, ds))
    starts, durations, references = [], [], []
    for k, group in enumerate(groups):
        if len(group) != slices:
            raise InputError(f"{name}: frame {k} of the dynamic PET series has {len(group)} of its {slices} images "
                             "(the series is incomplete)")
        timing = {(str(ds.get("AcquisitionDate", "")), str(ds.get("AcquisitionTime", "")),
                   str(ds.get("ActualFrameDuration", "")), str(ds.get("DecayCorrectionDateTime", "") or "").strip())
                  for _, _, ds in group}
        if len(timing) != 1:
            raise InputError(f"{name}: the images of frame {k} disagree on its start, duration or decay-correction time")
        date, time, duration, decay_reference = timing.pop()
        try:
            start = dt.datetime.strptime(date + time.split(".")[0].ljust(6, "0"), "%Y%m%d%H%M%S")
            start += dt.timedelta(seconds=float("0." + time.split(".")[1]) if "." in time else 0.0)
            length = float(duration) / 1000.0
        except ValueError:
            raise InputError(f"{name}: frame {k} has no readable start (AcquisitionDate/Time) or ActualFrameDuration") from None
        if length <= 0:
            raise InputError(f"{name}: frame {k} has no length (ActualFrameDuration {duration})")
        starts.append(start)
        durations.append(length)
        references.append(decay_reference)
    order = sorted(range(frames), key=lambda k: starts[k])
    return DynamicSeries([[f for _, f, _ in groups[k]] for k in order], [starts[k] for k in order],
                         [durations[k] for k in order], [references[k] for k in order])


__all__ = ["DYNAMIC_TAGS", "DynamicSeries", "split_dynamic_series", "time_slices"]
