"""Does an input fit the model it is given to? Warnings, never refusals.

A network answers whatever it is given: a cube of noise handed to the PET ensemble comes back
as "recurrence" with P = 0.998. The card says what the model was made for
(``input.modality``, ``input.fov_mm``, ``input.intensity_range``);
an input far from that gets a one-line warning in the report and the panels, beside the
reader's own warnings (``Volume.metadata["warnings"]``, e.g. DICOM slice-position jitter).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..volume import Volume

#: a physical field of view outside [1/FOV_FACTOR, FOV_FACTOR] x the training one is "far"
FOV_FACTOR = 2.0
#: modality names that mean the same thing (DICOM codes first)
_MODALITY_ALIASES = {"PT": "PT", "PET": "PT", "MR": "MR", "MRI": "MR", "CT": "CT"}


def _modality(name: Optional[str]) -> Optional[str]:
    if not name:
        return None
    key = str(name).strip().upper()
    return _MODALITY_ALIASES.get(key, key)


def field_of_view_mm(volume: Volume) -> Tuple[float, float, float]:
    """Physical extent (mm) along the volume's i, j, k axes."""
    return tuple(float(n * s) for n, s in zip(reversed(volume.shape), volume.spacing))  # type: ignore[return-value]


def training_fov_mm(card) -> Optional[Sequence[float]]:
    """The card's ``input.fov_mm``: the field of view of the scans the model was trained on
    (not ``spacing_mm`` x ``size``, which is the network's box and often a crop of them)."""
    return list(card.input.fov_mm) if card.input.fov_mm else None


class FitProblem(NamedTuple):
    """One way an input is far from what a model was made for.

    code: "modality", "binary", "dims", "fov", "intensity" or "frames" (the MRML logic: a node that is
        one time point of a 4D file; stable, for tests and reports);
    message: one sentence for the user.
    """

    code: str
    message: str


#: an input with at most this many distinct values (sampled) is a mask or label map, not an image
LABEL_LIKE_MAX_VALUES = 2


def _label_like(volume: Volume) -> bool:
    """True when ``volume`` (any shape) holds at most LABEL_LIKE_MAX_VALUES distinct values.

    Why: the issue's PET ensemble classified a binary brain mask; a scan of any modality has
    far more than two grey values, so this never fires on a real image. A strided sample keeps
    it cheap on large volumes (a mask stays a mask when subsampled).
    """
    arr = np.asarray(volume.array)
    sample = arr[tuple(slice(None, None, max(1, n // 64)) for n in arr.shape)]
    return np.unique(sample).size <= LABEL_LIKE_MAX_VALUES


def check_fit(card, volume: Volume, what: str = "the image") -> List[FitProblem]:
    """Every way ``volume`` is far from what ``card``'s model was made for (pure; reads only).

    Unknown modality (a NIfTI without tags) is not a mismatch; binary content is.
    """
    out: List[FitProblem] = []
    want, have = _modality(card.input.modality), _modality(volume.modality)
    if want and have and have != "SEG" and want != have:
        out.append(FitProblem("modality", f"{what} is {have} but model {card.name} was made for {want}; "
                                          "its answer may mean nothing"))
    if _label_like(volume):
        out.append(FitProblem("binary", f"{what} holds at most {LABEL_LIKE_MAX_VALUES} values: a mask or label "
                                        f"map, not an image model {card.name} can read"))
    if int(getattr(card, "spatial_dims", 3)) == 3 and min(volume.shape) < 2:
        out.append(FitProblem("dims", f"{what} is a single slice but model {card.name} is a 3D model"))
    fov = training_fov_mm(card)
    if fov:
        # compare extents sorted: a model made for 256 x 256 x 168 mm does not care which file axis is which
        mine, theirs = sorted(field_of_view_mm(volume)), sorted(float(f) for f in fov)
        if any(m > FOV_FACTOR * t or m < t / FOV_FACTOR for m, t in zip(mine, theirs)):
            out.append(FitProblem("fov", f"{what} covers {' x '.join(f'{m:.0f}' for m in field_of_view_mm(volume))} "
                                         f"mm, far from the {' x '.join(f'{t:.0f}' for t in fov)} mm model "
                                         f"{card.name} was trained on"))
    rng = card.input.intensity_range
    if rng:
        lo, hi = float(rng[0]), float(rng[1])
        p1, p50, p99 = (float(v) for v in np.percentile(np.asarray(volume.array, np.float32), [1, 50, 99]))
        width = max(hi - lo, 1e-12)
        if not lo - width <= p50 <= hi + width or p99 < lo or p1 > hi:
            out.append(FitProblem("intensity", f"{what}'s values ({p1:.3g} to {p99:.3g}, 1st to 99th percentile) "
                                               f"are far from the range {lo:.3g} to {hi:.3g} model {card.name} "
                                               "was trained on"))
    return out


def input_fit_warnings(volume: Volume, card, what: str = "the image") -> List[str]:
    """One sentence per way ``volume`` is far from what ``card``'s model was made for."""
    return [p.message for p in check_fit(card, volume, what)]


def input_warnings(volume: Volume, cards: Sequence = (), what: str = "the image") -> List[str]:
    """The reader's warnings on ``volume`` and the fit warnings of each card, without repeats."""
    found: List[str] = [str(w) for w in (volume.metadata.get("warnings") or [])]
    for card in cards:
        for w in input_fit_warnings(volume, card, what):
            if w not in found:
                found.append(w)
    return found


__all__ = ["FOV_FACTOR", "FitProblem", "LABEL_LIKE_MAX_VALUES", "check_fit", "field_of_view_mm", "input_fit_warnings", "input_warnings", "training_fov_mm"]
