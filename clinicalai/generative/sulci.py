"""Sulcal-skeleton phantoms and the synthetic anomalies of the cortical-folding evaluation.

The cortical-folding study trains on skeletonised sulci of healthy subjects, cropped around a
region of interest, with three voxel classes: 0 inside the brain, 11 outside, 60 sulcus. Its
phantom counterpart here is the medial surface (3D skeleton, ``skimage.morphology.skeletonize``)
of the cortical grey-matter ribbon of a brain phantom: a thin, folded sheet, like a sulcal
skeleton, whose shape varies with the phantom's folding noise.

The study looks for anomalies by removing a structure (``bbox_max`` 200, 500 or 800 voxels)
and inspecting t-SNE clusters; :func:`remove_structure` does the removal so the anomaly score
can be judged by AUROC per size, and :func:`insert_blob` makes hot/cold blobs in intensity
volumes.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..phantoms.brain import GREY, WHITE, brain_case
from ..volume import Volume, crop_or_pad
from .data import SULCAL_LABELS

INSIDE, OUTSIDE, SULCUS = SULCAL_LABELS


def sulcal_case(seed: int, size: int = 32, shape: Sequence[int] = (48, 64, 64),
                roi_offset: Tuple[float, float, float] = (0.0, -0.2, -0.2), **brain_kwargs) -> Volume:
    """A healthy sulcal-skeleton-like label volume (``size``^3, values 0 / 11 / 60).

    Args:
        seed: phantom seed.
        size: crop edge in voxels (the study crops 80^3 at 1 mm).
        shape: shape of the underlying brain phantom (z, y, x).
        roi_offset: crop centre relative to the volume centre, as a fraction of the shape
            (z, y, x); the default region holds cortex of one hemisphere.
    """
    return sulcal_translation_pair(seed, size, shape, roi_offset, **brain_kwargs)[0]


#: tissue values of the cortical-folding study's translation target: outside / CSF, grey, white
TISSUE_VALUES = (0, 100, 200)


def sulcal_translation_pair(seed: int, size: int = 32, shape: Sequence[int] = (48, 64, 64),
                            roi_offset: Tuple[float, float, float] = (0.0, -0.2, -0.2),
                            **brain_kwargs) -> Tuple[Volume, Volume]:
    """``(skeleton, tissues)`` of one brain phantom on the same ``size``^3 crop: the sulcal
    skeleton of :func:`sulcal_case` (0 / 11 / 60) and the phantom's own tissues as the V-Net
    translation target of the cortical-folding study (:data:`TISSUE_VALUES`: 0 outside the
    brain or CSF, 100 grey matter, 200 white matter)."""
    from skimage.morphology import skeletonize

    case = brain_case(seed, shape=shape, pathological=False, **brain_kwargs)
    tissues = np.asarray(case.tissues.array)
    brain = np.asarray(case.brain_mask.array).astype(bool)
    skeleton = skeletonize(tissues == GREY).astype(bool)
    labels = np.full(tissues.shape, OUTSIDE, np.int16)
    labels[brain] = INSIDE
    labels[skeleton & brain] = SULCUS
    target = np.zeros(tissues.shape, np.int16)
    target[tissues == GREY] = TISSUE_VALUES[1]
    target[tissues == WHITE] = TISSUE_VALUES[2]
    centre = (np.array(shape) - 1) / 2.0 + np.array(roi_offset) * np.array(shape)
    crops = []
    for array, pad in ((labels, OUTSIDE), (target, TISSUE_VALUES[0])):
        vol = case.tissues.with_array(array, modality="SEG", units="label", metadata={})
        crops.append(crop_or_pad(vol, (size, size, size), centre, pad_value=pad)[0])
    return crops[0], crops[1]


def remove_structure(labels: np.ndarray, n_voxels: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Remove a sulcal structure of ``n_voxels`` voxels: the sulcus voxels nearest a random
    sulcus voxel become "inside brain". Returns ``(new labels, removed mask)``."""
    labels = np.asarray(labels)
    idx = np.argwhere(labels == SULCUS)
    if len(idx) < n_voxels:
        raise InputError(f"the skeleton has {len(idx)} sulcus voxels; cannot remove {n_voxels}")
    seed = idx[rng.integers(len(idx))]
    nearest = np.argsort(((idx - seed) ** 2).sum(1), kind="stable")[:n_voxels]
    removed = np.zeros(labels.shape, bool)
    removed[tuple(idx[nearest].T)] = True
    out = labels.copy()
    out[removed] = INSIDE
    return out, removed


def insert_blob(image: np.ndarray, n_voxels: int, rng: np.random.Generator, kind: str = "hot",
                mask: Optional[np.ndarray] = None, contrast: float = 0.6) -> Tuple[np.ndarray, np.ndarray]:
    """A ball of about ``n_voxels`` voxels made brighter (``hot``) or darker (``cold``) by
    ``contrast`` times the image's 98th percentile, centred on a random voxel of ``mask``.
    Returns ``(new image, blob mask)``."""
    if kind not in ("hot", "cold"):
        raise InputError(f"blob kind must be 'hot' or 'cold', got {kind!r}")
    image = np.asarray(image, dtype=np.float32)
    candidates = np.argwhere(mask if mask is not None else image > np.percentile(image, 50))
    if len(candidates) == 0:
        raise InputError("no voxel to place a blob in")
    centre = candidates[rng.integers(len(candidates))]
    radius = (3.0 * n_voxels / (4.0 * np.pi)) ** (1.0 / 3.0)
    zz, yy, xx = np.ogrid[: image.shape[0], : image.shape[1], : image.shape[2]]
    dist2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    blob = dist2 <= radius ** 2
    ref = float(np.percentile(image, 98))
    out = image.copy()
    if kind == "hot":
        out[blob] += contrast * ref
    else:
        out[blob] = np.maximum(out[blob] - contrast * ref, 0.0)
    return out, blob
