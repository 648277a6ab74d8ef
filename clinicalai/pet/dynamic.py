"""A static PET from a dynamic one: the activity averaged over a window of its frames.

Research PET is often kept dynamic: the PET datasets of OpenNeuro are 4D BIDS-PET NIfTI files
whose ``*_pet.json`` sidecar gives each frame's start and length (``FrameTimesStart``,
``FrameDuration``, seconds from ``TimeZero``), the injection (``InjectionStart``) and whether the
frames are decay-corrected (``ImageDecayCorrected``, to ``ImageDecayCorrectionTime``). The fold
models, SUVmax and TBR take a static scan: the mean activity concentration over the window in
which the protocol acquires it. That mean is what a scanner reconstructing the same counts as one
frame would give: the duration-weighted mean of the frames in the window

    C_static = sum_i d_i C_i / sum_i d_i,

with every frame decay-corrected to one time. Frames already decay-corrected (to any one
reference) are averaged as they are and keep the sidecar's reference. Frames that are not are
first corrected to the start of the window, ``t0``: a frame starting at ``s_i`` and lasting
``d_i`` measured the mean of ``C(t0) 2^(-(t - t0) / T)`` over its length, so

    C_i(t0) = C_i * 2^((s_i - t0) / T) * (lambda d_i) / (1 - exp(-lambda d_i)),  lambda = ln 2 / T

(the per-frame correction scanners apply: exact when the activity is constant within a frame;
0.05 % off for a lesion whose uptake peaks inside a 5 min frame, ``Testing/pet/test_dynamic.py``),
and the static image is then decay-corrected to ``t0``, which its tags say, so SUV is computed
from the same activity either way.

Only whole frames are used: a frame that straddles an edge of the window is left out, and the
window actually averaged is reported. Why by hand: neither SimpleITK nor MONAI nor nibabel
knows BIDS-PET frame timing; PETPVC / PETSurfer-like tools that do are not Python packages.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..volume import Volume
from ..volume.bids_pet import HALF_LIFE_S, _nuclide_key, bids_pet_sidecar, bids_pet_tags, load_bids_pet_sidecar

#: a frame counts as inside the window when it overshoots an edge by at most this (s): sidecars
#: round frame times to the second or the millisecond
EDGE_TOLERANCE_S = 1.0


#: the latest window end accepted (min after injection): a day, far beyond any PET protocol
MAX_WINDOW_MIN = 24 * 60.0


def parse_static_window(text: str) -> Tuple[float, float]:
    """``"10-30"`` (minutes after injection, as a page or a user types it) -> ``(10.0, 30.0)``.

    Raises:
        InputError: not two numbers ``START-END`` with 0 <= START < END <= ``MAX_WINDOW_MIN``.
    """
    parts = str(text).replace(" ", "").split("-") if isinstance(text, str) and len(text) <= 40 else []
    try:
        start, end = (float(v) for v in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        start, end = math.nan, math.nan
    if not (0.0 <= start < end <= MAX_WINDOW_MIN):
        raise InputError(f"the static window is minutes after the injection as START-END, e.g. 10-30 "
                         f"(0 <= START < END <= {MAX_WINDOW_MIN:g}), not {str(text)[:40]!r}")
    return start, end


@dataclass(frozen=True)
class FrameTimes:
    """When each frame of a dynamic PET was acquired, in seconds after the injection.

    Attributes:
        starts_s: frame starts ``(frames,)``.
        durations_s: frame lengths ``(frames,)``, all > 0.
    """

    starts_s: np.ndarray
    durations_s: np.ndarray

    @property
    def ends_s(self) -> np.ndarray:
        return self.starts_s + self.durations_s

    def span(self, frames: Sequence[int]) -> Tuple[float, float]:
        """Start and end (s after injection) of consecutive ``frames``."""
        return float(self.starts_s[frames[0]]), float(self.ends_s[frames[-1]])

    def describe(self) -> str:
        """``"24 frames from 0.0 to 60.0 min after injection"``."""
        return (f"{len(self.starts_s)} frames from {self.starts_s[0] / 60:.1f} to {self.ends_s[-1] / 60:.1f} min "
                "after injection")


def frame_times(sidecar: Mapping[str, Any], time_points: int, name: str) -> FrameTimes:
    """The frame times of a BIDS-PET sidecar for a file of ``time_points`` frames.

    Raises:
        InputError: ``FrameTimesStart`` / ``FrameDuration`` / ``InjectionStart`` missing or not
            numbers, a count that is not the file's, a frame of no length, overlapping frames.
    """
    def numbers(key: str) -> np.ndarray:
        value = sidecar.get(key)
        if not isinstance(value, list) or not value:
            raise InputError(f"{name}: the sidecar has no {key} (a list of seconds), which a dynamic PET needs")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) for v in value):
            raise InputError(f"{name}: {key} holds something that is not a number of seconds")
        return np.asarray(value, dtype=np.float64)

    starts, durations = numbers("FrameTimesStart"), numbers("FrameDuration")
    if not (len(starts) == len(durations) == time_points):
        raise InputError(f"{name}: the sidecar times {len(starts)} frame starts and {len(durations)} durations, "
                         f"the image has {time_points} frames")
    injection = sidecar.get("InjectionStart")
    if isinstance(injection, bool) or not isinstance(injection, (int, float)) or not math.isfinite(float(injection)):
        raise InputError(f"{name}: the sidecar has no InjectionStart (s from TimeZero), so no window after the "
                         "injection can be placed")
    if (durations <= 0).any():
        raise InputError(f"{name}: frame {int(np.argmax(durations <= 0))} has no length (FrameDuration <= 0)")
    if (starts[1:] < starts[:-1] + durations[:-1] - EDGE_TOLERANCE_S).any():
        raise InputError(f"{name}: the frames overlap in time (FrameTimesStart + FrameDuration)")
    return FrameTimes(starts - float(injection), durations)


def frames_in_window(times: FrameTimes, window_min: Tuple[float, float], name: str) -> List[int]:
    """The frames lying wholly inside ``window_min`` (minutes after injection), in order.

    Raises:
        InputError: an empty or reversed window; no whole frame inside it (the message says the
            frames' span and the frames nearest the window).
    """
    start, end = (60.0 * float(w) for w in window_min)
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start or start < 0:
        raise InputError(f"the static window {window_min[0]:g}-{window_min[1]:g} min is not a window after the "
                         "injection (start >= 0, end after start)")
    inside = [i for i in range(len(times.starts_s))
              if times.starts_s[i] >= start - EDGE_TOLERANCE_S and times.ends_s[i] <= end + EDGE_TOLERANCE_S]
    if not inside:
        edges = ", ".join(f"{s / 60:.1f}-{e / 60:.1f}" for s, e in zip(times.starts_s, times.ends_s)
                          if e > start and s < end) or "none"
        raise InputError(f"{name}: no whole frame lies in {window_min[0]:g}-{window_min[1]:g} min after the injection "
                         f"({times.describe()}; frames touching the window, in min: {edges})")
    return inside


def decay_to(times: FrameTimes, frames: Sequence[int], reference_s: float, half_life_s: float) -> np.ndarray:
    """Factors that take the values of frames that are *not* decay-corrected to activity at
    ``reference_s`` (s after injection): ``2^((s_i - t0) / T) * lambda d_i / (1 - exp(-lambda d_i))``
    (module docstring)."""
    lam = math.log(2.0) / half_life_s
    s = times.starts_s[list(frames)]
    d = times.durations_s[list(frames)]
    return np.exp(lam * (s - reference_s)) * (lam * d) / -np.expm1(-lam * d)


#: a frame whose DecayCorrectionDateTime is this close to the series' reference is corrected to it
#: (DT text keeps microseconds; scanners round the series time to the second)
DECAY_REFERENCE_TOLERANCE_S = 1.0
#: what :class:`StaticFromDynamic` says of the frames' decay correction
CORRECTED_FRAMES = "frames decay-corrected in the file"
UNCORRECTED_FRAMES = "each frame decay-corrected to the window's start"
OWN_TIME_FRAMES = ("frames decay-corrected in the file to their own times (DecayCorrectionDateTime), brought to the "
                   "series' reference")


@dataclass
class StaticFromDynamic:
    """How a static image was made from a dynamic one (``Volume.metadata["static_from_frames"]``)."""

    frames: List[int]
    window_min: Tuple[float, float]
    averaged_min: Tuple[float, float]
    decay: str

    def to_dict(self) -> Dict[str, Any]:
        return {"frames": list(self.frames), "window_min": list(self.window_min),
                "averaged_min": [round(v, 4) for v in self.averaged_min], "decay": self.decay}

    def sentence(self) -> str:
        lo, hi = self.averaged_min
        return (f"static image: the duration-weighted mean of frames {self.frames[0]}-{self.frames[-1]} "
                f"({lo:.1f}-{hi:.1f} min after injection; {self.decay})")


def static_from_dynamic(path: "str | Path", window_min: Tuple[float, float], series_uid: "str | None" = None) -> Volume:
    """The static PET of the window ``window_min`` (minutes after injection) of a dynamic PET:
    a 4D BIDS-PET NIfTI ``path`` (frame times from its ``*_pet.json``), or a dynamic PET DICOM
    series (a folder, or one of its files; ``series_uid`` when the folder holds several; frame
    times from each frame's ``AcquisitionTime`` and ``ActualFrameDuration``, the injection from
    the radiopharmaceutical tags). The result has the file's 3D geometry, PET tags (decay-corrected
    to the window's start when the frames were not), ``metadata["static_from_frames"]`` and a
    sentence in ``metadata["warnings"]`` saying which frames were averaged.

    Raises:
        InputError: no sidecar beside a NIfTI; frame times missing or wrong
            (:func:`frame_times`); no whole frame in the window; whether the frames are
            decay-corrected unknown, or uncorrected frames of an unknown half-life; any reading
            error.
    """
    from ..volume.formats import image_format

    p = Path(path)
    if p.exists() and image_format(p) == "dicom":
        return _static_from_dicom(p, window_min, series_uid)
    return _static_from_bids(p, window_min)


def read_pet_image(path: "str | Path", static_window: "Sequence[float] | None" = None) -> Volume:
    """The PET to classify: the file itself, or the static image of ``static_window`` (minutes
    after injection) of a dynamic PET (:func:`static_from_dynamic`, its sentence printed by the
    command line from ``metadata["warnings"]``).

    Raises:
        InputError: as :func:`clinicalai.volume.read_volume`; a dynamic PET without a window,
            with what to give.
    """
    from ..errors import TimeSeriesError
    from ..volume import read_volume

    if static_window is not None:
        return static_from_dynamic(path, (float(static_window[0]), float(static_window[1])))
    try:
        return read_volume(path)
    except TimeSeriesError as exc:
        raise InputError(
            f"{Path(path).name} is a dynamic PET with {exc.time_points} frames; the models take a static scan: give "
            "--static-window START END (minutes after injection, the window of your protocol's static scan; a "
            "static_window column START-END in a CSV) to average its frames (their times come from a BIDS-PET "
            "*_pet.json sidecar, or from the DICOM series)") from None


def _static_from_bids(p: Path, window_min: Tuple[float, float]) -> Volume:
    from ..volume.io import read_time_frames, time_point_count

    sidecar_path = bids_pet_sidecar(p)
    if sidecar_path is None:
        raise InputError(f"{p.name}: a static window needs the frame times of a BIDS-PET sidecar "
                         f"({p.name.split('.')[0]}.json beside a file named *_pet.nii[.gz]) or a dynamic PET DICOM series")
    sidecar = load_bids_pet_sidecar(sidecar_path)
    times = frame_times(sidecar, time_point_count(p), sidecar_path.name)
    chosen = frames_in_window(times, window_min, p.name)
    corrected = sidecar.get("ImageDecayCorrected")
    if corrected not in (True, False):
        raise InputError(f"{sidecar_path.name}: ImageDecayCorrected (true or false) is missing; frames are averaged "
                         "only when it is known whether each is decay-corrected")
    start_s = times.span(chosen)[0]
    if corrected:
        half_life, tags_sidecar = None, dict(sidecar)
    else:
        nuclide = sidecar.get("TracerRadionuclide")
        key = _nuclide_key(nuclide) if isinstance(nuclide, str) else ""
        if key not in HALF_LIFE_S:
            raise InputError(f"{sidecar_path.name}: the frames are not decay-corrected and TracerRadionuclide "
                             f"({nuclide!r}) gives no known half-life, so they cannot be averaged")
        half_life = HALF_LIFE_S[key]
        # the static image is decay-corrected to the window's start: its tags say so, in BIDS terms
        tags_sidecar = dict(sidecar, ImageDecayCorrected=True,
                            ImageDecayCorrectionTime=start_s + float(sidecar["InjectionStart"]))
    frames, _ = read_time_frames(p, frames=chosen)
    tags, _ = bids_pet_tags(tags_sidecar)
    tags["TagSource"] = frames[0].metadata.get("pet", {}).get("TagSource", "BIDS sidecar")
    factors = np.ones(len(chosen)) if half_life is None else decay_to(times, chosen, start_s, half_life)
    return _average(frames, times, chosen, window_min, factors,
                    CORRECTED_FRAMES if half_life is None else UNCORRECTED_FRAMES, tags)


def _static_from_dicom(p: Path, window_min: Tuple[float, float], series_uid: "str | None") -> Volume:
    from ..volume.dicom_checks import read_dicom_header
    from ..volume.io import read_dicom_frames, read_pet_tags
    from .suv import MissingSuvInput, injection_datetime

    folder = p if p.is_dir() else p.parent
    if series_uid is None and p.is_file():
        series_uid = str(read_dicom_header(p).get("SeriesInstanceUID") or "") or None
    chosen: List[int] = []
    found: Dict[str, Any] = {}

    def choose(dynamic) -> List[int]:
        # the frames of the window, known once the series is split (one scan of the folder)
        tags = read_pet_tags(dynamic.files[0][0])
        try:
            injection = injection_datetime(tags)
        except MissingSuvInput:
            raise InputError(f"{folder.name}: the series has no injection time (RadiopharmaceuticalStartDateTime), "
                             "so no window after the injection can be placed") from None
        times = FrameTimes(np.array([(s - injection).total_seconds() for s in dynamic.starts]),
                           np.asarray(dynamic.durations_s, np.float64))
        chosen.extend(frames_in_window(times, window_min, folder.name))
        found.update(times=times, tags=tags, references=dynamic.decay_references)
        return chosen

    frames, _ = read_dicom_frames(folder, choose, series_uid)
    times, tags = found["times"], dict(frames[0].metadata.get("pet") or found["tags"])
    correction = str(tags.get("DecayCorrection") or "").strip().upper()
    if correction in ("START", "ADMIN"):
        # every frame corrected to one time, the series' (QIBA: SeriesDate/Time) or the injection,
        # unless a frame's own DecayCorrectionDateTime says otherwise
        offsets = _decay_reference_offsets(tags, correction, [found["references"][k] for k in chosen], folder.name)
        if np.any(np.abs(offsets) > DECAY_REFERENCE_TOLERANCE_S):
            half_life = _half_life_of(tags, folder.name, "the frames are decay-corrected to different times")
            factors, decay = np.exp2(offsets / half_life), OWN_TIME_FRAMES
        else:
            factors, decay = np.ones(len(chosen)), CORRECTED_FRAMES
    elif correction == "NONE":
        half_life = _half_life_of(tags, folder.name, "the frames are not decay-corrected")
        reference = injection_datetime(tags) + dt.timedelta(seconds=float(times.starts_s[chosen[0]]))
        day, time = reference.strftime("%Y%m%d"), reference.strftime("%H%M%S.%f")
        corrected = [str(v).strip().upper() for v in (tags.get("CorrectedImage") or [])]
        tags.update(DecayCorrection="START", SeriesDate=day, SeriesTime=time, AcquisitionDate=day, AcquisitionTime=time,
                    CorrectedImage=corrected + ([] if "DECY" in corrected else ["DECY"]))
        factors, decay = decay_to(times, chosen, times.span(chosen)[0], half_life), UNCORRECTED_FRAMES
    else:
        raise InputError(f"{folder.name}: DecayCorrection {correction or '(missing)'} does not say whether the frames "
                         "are decay-corrected (START, ADMIN or NONE), so they cannot be averaged")
    return _average(frames, times, chosen, window_min, factors, decay, tags)


def _half_life_of(tags: Dict[str, Any], name: str, why: str) -> float:
    try:
        return float(tags["RadionuclideHalfLife"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{name}: {why} and RadionuclideHalfLife is missing, so they cannot be averaged") from None


def _decay_reference_offsets(tags: Dict[str, Any], correction: str, references: Sequence[str], name: str) -> np.ndarray:
    """Seconds from the series' decay-correction reference (START: the series time, as SUV takes
    it; ADMIN: the injection) to each frame's own ``DecayCorrectionDateTime`` (0 where a frame
    has none). Why: the PET Image module lets each image name the time it is corrected to; a
    frame corrected to its own start holds more decayed values than one corrected to the series
    start, 2^(offset / T) less."""
    from .suv import decay_reference, injection_datetime, parse_dicom_dt

    if not any(references):
        return np.zeros(len(references))
    series_reference = injection_datetime(tags) if correction == "ADMIN" else decay_reference(tags, correction)[0]
    offsets = []
    for ref in references:
        if not ref:
            offsets.append(0.0)
            continue
        try:
            offsets.append((parse_dicom_dt(ref, "DecayCorrectionDateTime") - series_reference).total_seconds())
        except InputError:
            raise InputError(f"{name}: a frame's DecayCorrectionDateTime {ref!r} is not a DICOM date-time") from None
    return np.array(offsets)


def _average(frames: Sequence[Volume], times: FrameTimes, chosen: Sequence[int], window_min: Tuple[float, float],
             factors: np.ndarray, decay: str, tags: Dict[str, Any]) -> Volume:
    """The duration-weighted mean of ``frames`` (the ``chosen`` ones of ``times``), each first
    multiplied by its decay ``factors`` (what ``decay`` says they do)."""
    start_s, end_s = times.span(chosen)
    if any(f.shape != frames[0].shape or not f.same_grid(frames[0]) for f in frames[1:]):
        raise InputError("the frames of the window do not share one grid, so they cannot be averaged")
    weights = times.durations_s[list(chosen)] * factors
    total = np.zeros(frames[0].array.shape, np.float64)
    for volume, w in zip(frames, weights):
        total += w * volume.array.astype(np.float64)
    mean = (total / times.durations_s[list(chosen)].sum()).astype(np.float32)
    made = StaticFromDynamic(list(chosen), (float(window_min[0]), float(window_min[1])), (start_s / 60, end_s / 60), decay)
    out = frames[0].with_array(mean, modality="PT")
    out.metadata["pet"] = tags
    out.metadata["static_from_frames"] = made.to_dict()
    out.metadata["warnings"] = list(frames[0].metadata.get("warnings", [])) + [made.sentence()]
    return out


__all__ = ["EDGE_TOLERANCE_S", "MAX_WINDOW_MIN", "FrameTimes", "StaticFromDynamic", "decay_to", "frame_times",
           "frames_in_window", "parse_static_window", "read_pet_image", "static_from_dynamic"]
