"""The conventional static FDOPA parameters: SUVmax, TBRmax, TBRmean.

TBR = tumour (lesion) SUV over healthy background SUV. Choices (documented in docs/pet.md):

- **Background**: mean SUV of the healthy-appearing brain in the hemisphere *contralateral* to
  the lesion: brain-mask voxels on the other side of the brain's mid-sagittal plane (through
  the mask's centroid, across patient left-right), excluding voxels above 1.6 x the whole-brain
  median (the striatum and any other hot spot). Without a lesion, the same over both hemispheres.
- **Lesion VOI**: the user's VOI when given; otherwise the usual 1.6 x background threshold:
  brain voxels above 1.6 x background that are also clearly asymmetric (above 1.3 x the
  left-right mirrored uptake, dilated by ~10 mm to forgive head tilt), which keeps the striatum
  (hot on both sides) out; the connected component holding the hottest such voxel, at least
  0.1 mL. No such voxels: no lesion, TBR not reported.

Computed on the PET's own grid after an exact LPS reorientation (no resampling, so SUVmax is a
voxel value of the image); the VOI found is returned on the original grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume, reorient_to_lps, resample_to_grid

TBR_THRESHOLD = 1.6
ASYMMETRY = 1.3
MIN_LESION_ML = 0.1


@dataclass
class StaticParameters:
    """SUVmax / TBRmax / TBRmean of one scan.

    Attributes:
        suv_max: highest SUV in the lesion VOI (in the brain when there is no lesion).
        tbr_max, tbr_mean: lesion SUVmax / SUVmean over background (``None`` without a lesion).
        background_suv: mean SUV of the healthy background (module docstring).
        lesion_voi: ``"user"``, ``"threshold 1.6 x background"`` or ``"none above 1.6 x background"``.
        lesion_volume_ml: volume of the VOI.
        lesion_mask: the VOI on the PET grid (``None`` without a lesion).
        quantity: what ``suv_max`` and ``background_suv`` are: ``"SUVbw"``, or ``"Bq/mL"``
            for a PET whose SUV inputs are unknown (the keys of :meth:`to_dict` say it then).
    """

    suv_max: float
    tbr_max: Optional[float]
    tbr_mean: Optional[float]
    background_suv: float
    lesion_voi: str
    lesion_volume_ml: float
    lesion_mask: Optional[Volume] = None
    quantity: str = "SUVbw"

    def to_dict(self) -> Dict[str, Any]:
        r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        if self.quantity == "SUVbw":
            peak, background = {"SUVmax": r(self.suv_max)}, {"background_SUVmean": r(self.background_suv)}
        else:  # never call a Bq/mL value SUV
            peak, background = {"max_Bq/mL": r(self.suv_max)}, {"background_mean_Bq/mL": r(self.background_suv)}
        return {
            **peak, "TBRmax": r(self.tbr_max), "TBRmean": r(self.tbr_mean),
            **background, "lesion_voi": self.lesion_voi,
            "lesion_volume_ml": r(self.lesion_volume_ml),
            "background": "healthy-appearing contralateral hemisphere, striatum excluded",
            "uptake_units": self.quantity,
        }


def _on_grid(mask: Volume, ref: Volume, what: str) -> np.ndarray:
    if mask.same_grid(ref, atol=1e-4):
        return np.asarray(mask.array) > 0
    return resample_to_grid(mask.with_array((mask.array > 0).astype(np.uint8)), ref.grid, "nearest").array > 0


def _background(suv: np.ndarray, brain: np.ndarray, side: Optional[np.ndarray]) -> float:
    healthy = brain & (suv <= TBR_THRESHOLD * float(np.median(suv[brain])))
    if side is not None and np.any(healthy & side):
        healthy &= side
    bg = float(suv[healthy].mean())
    if not bg > 0:
        raise InputError("the brain mask holds no uptake on the PET (background SUV 0); "
                         "TBR cannot be computed (does the mask belong to this scan?)")
    return bg


def static_parameters(suv: Volume, brain_mask: Volume, lesion: Optional[Volume] = None,
                      quantity: str = "SUVbw") -> StaticParameters:
    """SUVmax, TBRmax and TBRmean of ``suv`` (an SUV volume) with its ``brain_mask``.

    ``lesion`` (a VOI on any grid) is used as given; otherwise it is found by the 1.6 x
    background threshold (module docstring). ``quantity="Bq/mL"``: ``suv`` is a Bq/mL PET
    (``units`` BQML) whose SUV inputs are unknown; the thresholds are ratios, so the VOI and TBR
    are the same, the peak and background are in Bq/mL.
    """
    if suv.units != ("SUV" if quantity == "SUVbw" else "BQML"):
        raise InputError("static parameters need the PET in SUV (convert it first)")
    brain_lps, _ = reorient_to_lps(suv.with_array(_on_grid(brain_mask, suv, "brain mask").astype(np.uint8)))
    v, inverse = reorient_to_lps(suv)
    a = v.array.astype(np.float64)
    brain = brain_lps.array > 0
    if not brain.any():
        raise InputError("the brain mask is empty on the PET")
    voxel_ml = float(np.prod(v.spacing)) / 1000.0
    # mid-sagittal plane: x index (patient left) of the brain centroid
    xs = np.arange(a.shape[2])[None, None, :]
    cx = float(ndimage.center_of_mass(brain)[2])
    if lesion is not None:
        lesion_lps, _ = reorient_to_lps(suv.with_array(_on_grid(lesion, suv, "lesion VOI").astype(np.uint8)))
        voi = lesion_lps.array > 0
        if not voi.any():
            raise InputError("the lesion VOI is empty on the PET (does it belong to this scan?)")
        source = "user"
    else:
        bg0 = _background(a, brain, None)
        mirror_idx = np.clip(np.round(2 * cx - np.arange(a.shape[2])).astype(int), 0, a.shape[2] - 1)
        mirrored = a[:, :, mirror_idx]
        size = np.maximum(1, np.round(10.0 / np.array(v.spacing[::-1])).astype(int) | 1)
        mirrored = ndimage.maximum_filter(mirrored, size=tuple(size))
        cand = brain & (a > TBR_THRESHOLD * bg0) & (a > ASYMMETRY * mirrored)
        labels, n = ndimage.label(cand)
        voi = np.zeros_like(cand)
        if n:
            sizes = ndimage.sum_labels(cand, labels, np.arange(1, n + 1)) * voxel_ml
            peaks = ndimage.maximum(a, labels, np.arange(1, n + 1))
            ok = [i for i in range(n) if sizes[i] >= MIN_LESION_ML]
            if ok:
                best = max(ok, key=lambda i: peaks[i])
                voi = labels == best + 1
        source = "threshold 1.6 x background" if voi.any() else "none above 1.6 x background"
    if not voi.any():
        bg = _background(a, brain, None)
        return StaticParameters(float(a[brain].max()), None, None, bg, source, 0.0, None, quantity)
    lesion_left = float(ndimage.center_of_mass(voi)[2]) > cx
    contralateral = (xs < cx) if lesion_left else (xs > cx)
    bg = _background(a, brain & ~voi, np.broadcast_to(contralateral, a.shape))
    suv_max = float(a[voi].max())
    mask_back = inverse(v.with_array(voi.astype(np.uint8), modality="SEG", units="label"))
    mask_back.metadata = {"segments": [{"name": "lesion VOI", "value": 1, "color": (1.0, 0.3, 0.1)}]}
    return StaticParameters(
        suv_max=suv_max, tbr_max=suv_max / bg, tbr_mean=float(a[voi].mean()) / bg, background_suv=bg,
        lesion_voi=source, lesion_volume_ml=float(voi.sum()) * voxel_ml, lesion_mask=mask_back, quantity=quantity,
    )
