"""Anatomical validity of a short-axis slice mask, criterion by criterion.

In the spirit of Painchaud et al. (2019, "Cardiac MRI segmentation with strong anatomical
guarantees"): a slice is *valid* when every criterion below holds. Each one is reported on
its own, so a user sees *why* a slice was judged implausible, and the gate can tell whether a
correction fixed it.

Criteria (a structure that is absent passes its own criteria: apical and basal slices
legitimately lack the RV or the LV cavity, and an empty slice is valid):

- ``<S>_one_component``: each of RV, MYO, LV is one connected region (8-connectivity).
- ``<S>_no_holes``: RV and LV have no holes; the myocardium's only hole is the LV cavity
  (a ring around the LV), i.e. what MYO encloses is LV.
- ``lv_enclosed_by_myo``: the LV touches neither background nor the RV nor the slice border.
- ``rv_touches_myo``: where RV and MYO are both present, they share a border.
- ``no_lv_rv_contact``: LV and RV never touch.
- ``structures_consistent``: an LV cavity needs a myocardium around it.
- ``no_background_holes``: the heart (RV + MYO + LV) encloses no background pocket larger than
  ``pinhole_pixels`` (default 2: single-pixel gaps where the RV crescent meets the myocardium
  are a rasterisation artefact of two touching shapes, seen in manual masks too).

Touching uses 4-connectivity (pixels sharing an edge). The default label values are the
ACDC ones (:data:`~.labels.CARDIAC_VALUES`).

Beside validity, the gate measures how far a correction moves a slice: :func:`label_dice`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage

from ..morphology import binary_fill_holes
from .labels import CARDIAC_VALUES

CRITERIA = (
    "rv_one_component", "myo_one_component", "lv_one_component",
    "rv_no_holes", "myo_no_holes", "lv_no_holes",
    "lv_enclosed_by_myo", "rv_touches_myo", "no_lv_rv_contact",
    "structures_consistent", "no_background_holes",
)

_EIGHT = np.ones((3, 3), bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass
class SliceValidity:
    """Validity of one slice: ``valid`` and each criterion (True = satisfied)."""

    criteria: Dict[str, bool] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return all(self.criteria.values())

    @property
    def failed(self) -> List[str]:
        return [k for k, ok in self.criteria.items() if not ok]

    def to_dict(self) -> Dict[str, object]:
        return {"valid": self.valid, "criteria": dict(self.criteria), "failed": self.failed}


def _components(region: np.ndarray) -> int:
    return int(ndimage.label(region, structure=_EIGHT)[1])


def _holes(region: np.ndarray) -> np.ndarray:
    # holes are 4-connected background pockets (the complement of 8-connected foreground)
    return binary_fill_holes(region, structure=_FOUR) & ~region


def _touch(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.any(ndimage.binary_dilation(a, structure=_FOUR) & b))


def _touches_border(region: np.ndarray) -> bool:
    return bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())


def check_slice(labels: np.ndarray, values: Optional[Mapping[str, int]] = None,
                pinhole_pixels: int = 2) -> SliceValidity:
    """Judge one ``(y, x)`` label slice.

    Args:
        labels: integer label values.
        values: ``{"RV": v, "MYO": v, "LV": v}``; default :data:`CARDIAC_VALUES`.
        pinhole_pixels: background pockets inside the heart up to this size are tolerated.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"check_slice takes a 2D (y, x) slice, got shape {lab.shape}")
    v = dict(CARDIAC_VALUES if values is None else values)
    lv_on_border = _touches_border(lab == v["LV"])
    # judge the heart's bounding box plus a one-pixel background ring (where the image allows):
    # every criterion is unchanged by the crop, and the morphology runs on far fewer pixels
    ys, xs = np.nonzero(np.isin(lab, [v["RV"], v["MYO"], v["LV"]]))
    if ys.size:
        lab = lab[max(ys.min() - 1, 0):ys.max() + 2, max(xs.min() - 1, 0):xs.max() + 2]
    rv, myo, lv = (lab == v["RV"]), (lab == v["MYO"]), (lab == v["LV"])
    has_rv, has_myo, has_lv = rv.any(), myo.any(), lv.any()
    heart = rv | myo | lv
    c: Dict[str, bool] = {}
    c["rv_one_component"] = _components(rv) <= 1
    c["myo_one_component"] = _components(myo) <= 1
    c["lv_one_component"] = _components(lv) <= 1
    c["rv_no_holes"] = not _holes(rv).any()
    myo_holes = _holes(myo)
    c["myo_no_holes"] = not np.any(myo_holes & ~lv)
    c["lv_no_holes"] = not _holes(lv).any()
    if has_lv:
        c["lv_enclosed_by_myo"] = bool(
            has_myo and not lv_on_border and not _touch(lv, ~heart) and not _touch(lv, rv)
        )
    else:
        c["lv_enclosed_by_myo"] = True
    c["rv_touches_myo"] = bool(_touch(rv, myo)) if (has_rv and has_myo) else True
    c["no_lv_rv_contact"] = not (has_lv and has_rv and _touch(lv, rv))
    c["structures_consistent"] = bool(has_myo or not has_lv)
    pockets, n = ndimage.label(_holes(heart), structure=_FOUR)
    c["no_background_holes"] = bool(n == 0 or np.bincount(pockets.ravel())[1:].max() <= pinhole_pixels)
    return SliceValidity(c)


def check_volume(labels_zyx: np.ndarray, values: Optional[Mapping[str, int]] = None) -> List[SliceValidity]:
    """:func:`check_slice` for every ``(y, x)`` slice of a ``(z, y, x)`` label array."""
    arr = np.asarray(labels_zyx)
    if arr.ndim != 3:
        raise ValueError(f"check_volume takes a (z, y, x) array, got shape {arr.shape}")
    return [check_slice(s, values) for s in arr]


def validity_rate(labels_zyx: np.ndarray, values: Optional[Mapping[str, int]] = None,
                  skip_empty: bool = False) -> float:
    """Fraction of valid slices (``skip_empty``: count only slices with a structure)."""
    arr = np.asarray(labels_zyx)
    slices = [s for s in arr if (s.any() or not skip_empty)]
    if not slices:
        return 1.0
    return float(np.mean([check_slice(s, values).valid for s in slices]))


def cardiac_values_from_labels(labels: Sequence[Mapping[str, object]]) -> Dict[str, int]:
    """``{"RV": v, "MYO": v, "LV": v}`` from card/phantom label entries (name, value).

    Raises ``KeyError`` naming the missing structure when a label set is not RV/MYO/LV.
    """
    by_name = {str(lab["name"]).upper(): int(lab["value"]) for lab in labels}
    missing = [n for n in CARDIAC_VALUES if n not in by_name]
    if missing:
        raise KeyError(", ".join(missing))
    return {n: by_name[n] for n in CARDIAC_VALUES}


def label_dice(a: np.ndarray, b: np.ndarray, values: Sequence[int]) -> float:
    """Mean Dice over the label ``values`` present in ``a`` or ``b`` (1.0 when both are empty)."""
    scores = []
    for v in values:
        x, y = a == v, b == v
        total = int(x.sum()) + int(y.sum())
        if total:
            scores.append(2.0 * int((x & y).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


__all__ = ["CARDIAC_VALUES", "CRITERIA", "SliceValidity", "cardiac_values_from_labels", "check_slice", "check_volume",
           "label_dice", "validity_rate"]
