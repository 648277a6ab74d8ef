"""PET preprocessing of the study, as one invertible function.

``preprocess_pet`` does, in order:

1. SUV body weight (:mod:`.suv`);
2. reorientation to LPS (an exact permutation) and resampling to ``spacing_mm`` (2 mm, IBSI);
3. the brain mask: the user's (resampled onto this grid, nearest neighbour) or computed
   (threshold at 0.7 x the median head uptake, largest connected component, holes filled);
4. a crop / zero-pad to ``size_xyz`` voxels (128 x 128 x 82) centred on the brain's centroid;
5. min-max normalisation to [0, 1] over that box.

Steps 2 and 4 go through :class:`clinicalai.volume.SpatialPipeline`, so a map computed in
network space (Grad-CAM) goes back onto the *original PET grid* exactly with
:meth:`PetPreprocessed.to_input_grid`.

Axis order. ``Volume.array`` is ``(z, y, x)``; the network input is the study's
``(C, X, Y, Z)`` = ``(1, 128, 128, 82)``, i.e. the transposed array, with X along patient
left (L), Y posterior (P), Z superior (S) after step 2. A batch is ``(N, 1, X, Y, Z)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..morphology import binary_fill_holes
from ..volume import SpatialPipeline, Volume, crop_or_pad, reorient_to_lps, resample_to_grid, resample_to_spacing
from .suv import SuvConversion, to_suv

#: the study's network input: 2 mm voxels, 128 x 128 x 82 (x, y, z)
FULL_SPACING_MM = (2.0, 2.0, 2.0)
FULL_SIZE_XYZ = (128, 128, 82)
#: the reduced input for CPU demos and tests: the same field of view at 4 mm
REDUCED_SPACING_MM = (4.0, 4.0, 4.0)
REDUCED_SIZE_XYZ = (64, 64, 41)
#: the bundled demo models and the tests (2 CPU cores): the same field of view at 8 mm
DEMO_SPACING_MM = (8.0, 8.0, 8.0)
DEMO_SIZE_XYZ = (32, 32, 21)


@dataclass
class PetPreprocessed:
    """The network input of one PET and what is needed to map results back.

    Attributes:
        input: ``(1, X, Y, Z)`` float32 in [0, 1] (network axis order, see module docstring).
        suv: the PET in SUV on the *original* grid.
        brain_mask: brain mask (uint8) on the original grid.
        net_suv: SUV in network space (a Volume, array ``(Z, Y, X)``), before min-max.
        net_brain_mask: the brain mask in network space (uint8 Volume).
        conversion: the SUV conversion used.
        minmax: ``(lo, hi)`` SUV of the min-max step.
        brain_mask_source: ``"given"`` or ``"computed"``.
    """

    input: np.ndarray
    suv: Volume
    brain_mask: Volume
    net_suv: Volume
    net_brain_mask: Volume
    conversion: SuvConversion
    minmax: Tuple[float, float]
    brain_mask_source: str
    pipeline: SpatialPipeline = field(repr=False, default_factory=SpatialPipeline)

    def net_volume(self, array_xyz: np.ndarray, **kwargs: Any) -> Volume:
        """A network-space array ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) as a Volume on the network grid."""
        a = np.asarray(array_xyz)
        if a.ndim == 4:
            a = a[0]
        return self.net_suv.with_array(np.ascontiguousarray(a.transpose(2, 1, 0)).astype(np.float32), **kwargs)

    def to_input_grid(self, array_xyz: np.ndarray, interpolator: str = "linear", **kwargs: Any) -> Volume:
        """Map a network-space array ``(X, Y, Z)`` back onto the original PET grid (exact grid)."""
        v = self.net_volume(array_xyz, **kwargs)
        return self.pipeline.invert(v, interpolator=interpolator)


def compute_brain_mask(suv: Volume) -> Volume:
    """Brain mask of an FDOPA PET in SUV: threshold + largest component + holes filled.

    FDOPA brain uptake is low but above scalp and far above air: voxels above 0.7 x the median
    of the head (voxels above 10 % of the 99.5th percentile) are brain, the largest 3D component
    is kept (drops scalp and noise) and its holes (ventricles, resection cavity) are filled.
    """
    a = ndimage.gaussian_filter(suv.array.astype(np.float32), 1.0)
    top = float(np.percentile(a, 99.5))
    if top <= 0:
        raise InputError("the PET has no uptake above zero; a brain mask cannot be computed")
    head = a > 0.1 * top
    thr = 0.7 * float(np.median(a[head]))
    mask = a > thr
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("no brain found in the PET (nothing above the brain threshold)")
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    mask = labels == (1 + int(np.argmax(sizes)))
    mask = ndimage.binary_closing(mask, iterations=2, border_value=0) | mask
    mask = binary_fill_holes(mask)
    return suv.with_array(mask.astype(np.uint8), modality="SEG", units="label")


def _mask_on(mask: Volume, grid_volume: Volume) -> Volume:
    """``mask`` on ``grid_volume``'s grid (nearest neighbour unless the grids already match)."""
    if mask.same_grid(grid_volume, atol=1e-4):
        m = mask.array
    else:
        m = resample_to_grid(mask.with_array((mask.array > 0).astype(np.uint8)), grid_volume.grid, "nearest").array
    return grid_volume.with_array((np.asarray(m) > 0).astype(np.uint8), modality="SEG", units="label")


def check_pet(pet: Volume) -> None:
    """Clear errors for what no PET workflow can use: 2D, NaN, empty."""
    pet.require_volumetric("PET image", min_slices=4)
    pet.require_finite("PET image")
    pet.require_not_empty("PET image")
    if float(np.min(pet.array)) < -1e-3 * max(1e-12, float(np.max(np.abs(pet.array)))):
        raise InputError("the PET image has negative values; it is not an activity or SUV image")


def preprocess_pet(
    pet: Volume,
    units: Optional[str] = None,
    brain_mask: Optional[Volume] = None,
    spacing_mm: Sequence[float] = FULL_SPACING_MM,
    size_xyz: Sequence[int] = FULL_SIZE_XYZ,
    tags: Optional[Mapping[str, Any]] = None,
    mask_outside: bool = False,
    bqml_fallback: bool = False,
) -> PetPreprocessed:
    """The network input of ``pet`` and its inverse (module docstring).

    Args:
        pet: the PET (Bq/mL with PET tags, or SUV); any grid, oblique allowed.
        units: ``suv`` / ``bqml`` when the image does not say (NIfTI).
        brain_mask: brain mask on any grid (resampled); ``None``: computed.
        spacing_mm: network voxel size (x, y, z) mm.
        size_xyz: network input size (x, y, z) voxels.
        tags: PET tags for a Bq/mL NIfTI (:func:`clinicalai.pet.suv.pet_tags_from_options`).
        mask_outside: zero everything outside the brain mask before min-max (the study kept it).
        bqml_fallback: a Bq/mL PET without what SUV needs stays in Bq/mL (``suv`` then holds
            Bq/mL, ``conversion.quantity`` says so): the min-max normalisation and the
            brain-mask threshold are relative, so the network input is the same.
    """
    check_pet(pet)
    suv, conversion = to_suv(pet, units=units, tags=tags, bqml_fallback=bqml_fallback)
    pipe = SpatialPipeline()
    v = pipe.apply(reorient_to_lps, suv)
    v = pipe.apply(resample_to_spacing, v, tuple(float(s) for s in spacing_mm), "linear")
    v = v.with_array(np.clip(v.array, 0, None).astype(np.float32))  # linear resampling keeps >= 0; clip rounding
    if brain_mask is not None:
        brain_mask.require_volumetric("brain mask", min_slices=2)
        net_mask = _mask_on(brain_mask, v)
        if not net_mask.array.any():
            raise InputError("the brain mask is empty on the PET (does it belong to this scan?)")
        source = "given"
    else:
        net_mask = compute_brain_mask(v)
        source = "computed"
    centre_zyx = ndimage.center_of_mass(net_mask.array > 0)
    size_zyx = tuple(int(s) for s in reversed(tuple(size_xyz)))
    before_crop = len(pipe.inverses)
    v = pipe.apply(crop_or_pad, v, size_zyx, centre_zyx)
    net_mask, _ = crop_or_pad(net_mask, size_zyx, centre_zyx)
    arr = v.array.astype(np.float32)
    if mask_outside:
        arr = np.where(net_mask.array > 0, arr, 0.0).astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise InputError("the PET is constant inside the network's field of view; nothing to classify")
    x = ((arr - lo) / (hi - lo)).transpose(2, 1, 0)[None].astype(np.float32)
    assert len(pipe.inverses) == before_crop + 1
    # brain mask on the original grid: invert the crop exactly, then nearest-neighbour resampling
    if brain_mask is not None and brain_mask.same_grid(pet, atol=1e-4):
        mask_in = pet.with_array((brain_mask.array > 0).astype(np.uint8), modality="SEG", units="label")
    else:
        # nearest neighbour: the voxels midway between two network voxels (every fifth plane of a
        # 4.8 mm PET under the 8 mm network) go one way whatever float noise the spacing carries
        # (resample_to_grid's tie rule; before it, a DICOM series and its NIfTI differed in 2.8 %
        # of the mask and TBRmax by 1.8 %)
        mask_in = pipe.invert(net_mask, interpolator="nearest")
        mask_in = pet.with_array((mask_in.array > 0).astype(np.uint8), modality="SEG", units="label")
    mask_in.metadata = {"segments": [{"name": "brain", "value": 1, "color": (0.9, 0.9, 0.6)}]}
    return PetPreprocessed(
        input=np.ascontiguousarray(x), suv=suv, brain_mask=mask_in, net_suv=v, net_brain_mask=net_mask,
        conversion=conversion, minmax=(lo, hi), brain_mask_source=source, pipeline=pipe,
    )


def preprocess_from_card(pet: Volume, card, **kwargs: Any) -> PetPreprocessed:
    """:func:`preprocess_pet` with the spacing and size of a model card (``input.spacing_mm``,
    ``input.size`` in x, y, z)."""
    spacing = card.input.spacing_mm or FULL_SPACING_MM
    size = card.input.size or FULL_SIZE_XYZ
    return preprocess_pet(pet, spacing_mm=spacing, size_xyz=size,
                          mask_outside=bool(card.extra_get("mask_outside", False)), **kwargs)


def describe_input(spacing_mm: Sequence[float], size_xyz: Sequence[int]) -> Dict[str, Any]:
    """The card's ``input`` block for a PET network."""
    return {
        "channels": 1,
        "spacing_mm": [float(s) for s in spacing_mm],
        "size": [int(s) for s in size_xyz],
        "normalization": {"kind": "minmax"},
        "units": "SUV",
        "modality": "PT",
        # the head PETs of the study fill the network's box (the crop centres on the brain)
        "fov_mm": [float(s) * float(n) for s, n in zip(spacing_mm, size_xyz)],
        "axis_order": "(N, C, X, Y, Z), X=L, Y=P, Z=S after reorientation to LPS",
    }
