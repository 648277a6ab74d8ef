"""Does an input fit the model it is given to? Warnings, never refusals.

A network answers whatever it is given: a cube of noise handed to the PET ensemble comes back
as "recurrence" with P = 0.998. The card says what the model was made for
(``input.modality``, ``input.fov_mm``, ``input.intensity_range``);
an input far from that gets a one-line warning in the report and the panels, beside the
reader's own warnings (``Volume.metadata["warnings"]``, e.g. DICOM slice-position jitter).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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


def input_fit_warnings(volume: Volume, card, what: str = "the image") -> List[str]:
    """One sentence per way ``volume`` is far from what ``card``'s model was made for."""
    out: List[str] = []
    want, have = _modality(card.input.modality), _modality(volume.modality)
    if want and have and have != "SEG" and want != have:
        out.append(f"{what} is {have} but model {card.name} was made for {want}; its answer may mean nothing")
    fov = training_fov_mm(card)
    if fov:
        # compare extents sorted: a model made for 256 x 256 x 168 mm does not care which file axis is which
        mine, theirs = sorted(field_of_view_mm(volume)), sorted(float(f) for f in fov)
        if any(m > FOV_FACTOR * t or m < t / FOV_FACTOR for m, t in zip(mine, theirs)):
            out.append(f"{what} covers {' x '.join(f'{m:.0f}' for m in field_of_view_mm(volume))} mm, far from the "
                       f"{' x '.join(f'{t:.0f}' for t in fov)} mm model {card.name} was trained on")
    rng = card.input.intensity_range
    if rng:
        lo, hi = float(rng[0]), float(rng[1])
        p1, p50, p99 = (float(v) for v in np.percentile(np.asarray(volume.array, np.float32), [1, 50, 99]))
        width = max(hi - lo, 1e-12)
        if not lo - width <= p50 <= hi + width or p99 < lo or p1 > hi:
            out.append(f"{what}'s values ({p1:.3g} to {p99:.3g}, 1st to 99th percentile) are far from the range "
                       f"{lo:.3g} to {hi:.3g} model {card.name} was trained on")
    return out


def input_warnings(volume: Volume, cards: Sequence = (), what: str = "the image") -> List[str]:
    """The reader's warnings on ``volume`` and the fit warnings of each card, without repeats."""
    found: List[str] = [str(w) for w in (volume.metadata.get("warnings") or [])]
    for card in cards:
        for w in input_fit_warnings(volume, card, what):
            if w not in found:
                found.append(w)
    return found


__all__ = ["FOV_FACTOR", "field_of_view_mm", "input_fit_warnings", "input_warnings", "training_fov_mm"]
