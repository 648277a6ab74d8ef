"""Brain MRI phantoms with (or without) lesions, for attribution and anomaly detection.

A head is an ellipsoid of skull/scalp around a brain made of white matter, a cortical grey
matter shell, CSF ventricles; a pathological case adds one to three hyperintense lesions
(T2/FLAIR-like) inside the white matter and returns their mask. Brain size, shape, position
and intensity vary between cases, so a classifier *can* pick up biased cues (as the source
thesis warns) unless it learns the lesion.

Deterministic: the same ``seed`` gives the same case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..volume import Volume

#: tissue classes of :attr:`BrainCase.tissues`
BACKGROUND, CSF, GREY, WHITE, SKULL = 0, 1, 2, 3, 4
TISSUE_NAMES = {BACKGROUND: "background", CSF: "CSF", GREY: "grey matter", WHITE: "white matter", SKULL: "skull"}


@dataclass
class BrainCase:
    """One synthetic brain: image, lesion mask (empty when healthy), tissue labels, label."""

    image: Volume
    lesion: Volume
    tissues: Volume
    brain_mask: Volume
    pathological: bool


def _ellipsoid(shape: Tuple[int, int, int], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (
        ((zz - center[0]) / radii[0]) ** 2 + ((yy - center[1]) / radii[1]) ** 2 + ((xx - center[2]) / radii[2]) ** 2
    ) <= 1.0


def brain_case(
    seed: int,
    shape: Sequence[int] = (48, 64, 64),
    pathological: Optional[bool] = None,
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    n_lesions: Optional[int] = None,
    lesion_radius_mm: Tuple[float, float] = (4.0, 9.0),
    noise: float = 0.03,
    direction: Optional[np.ndarray] = None,
    origin: Sequence[float] = (-64.0, -64.0, -48.0),
) -> BrainCase:
    """One brain MRI phantom.

    Args:
        seed: random seed (same seed, same case).
        shape: ``(z, y, x)`` voxels.
        pathological: with lesions (``None``: decided by the seed, 50 %).
        spacing: voxel size in mm ``(x, y, z)``.
        n_lesions: number of lesions (default 1-3 for a pathological case).
        lesion_radius_mm: range of lesion radii.
        noise: Rician-like noise level relative to white matter intensity.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    if pathological is None:
        pathological = bool(rng.random() < 0.5)
    sp_zyx = np.array(spacing[::-1], dtype=float)
    center = np.array(shape, dtype=float) / 2 + rng.normal(0, 1.0, 3)
    head_r = np.array(shape, dtype=float) * rng.uniform(0.40, 0.46, 3)
    brain_r = head_r * rng.uniform(0.80, 0.86)
    head = _ellipsoid(shape, center, head_r)
    brain = _ellipsoid(shape, center, brain_r)
    white = _ellipsoid(shape, center, brain_r * rng.uniform(0.72, 0.80))
    # cortical folding: perturb the grey/white border with low-frequency noise
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3)
    white &= wobble < 0.6 * wobble.std() + 0.0
    white = ndimage.binary_opening(white, iterations=1) & brain
    vent_r = brain_r * np.array([0.18, 0.12, 0.10]) * rng.uniform(0.8, 1.4)
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        c = center + np.array([0.0, -0.05 * shape[1], side * 0.08 * shape[2]])
        ventricles |= _ellipsoid(shape, c, vent_r)
    tissues = np.zeros(shape, np.uint8)
    tissues[head] = SKULL
    tissues[brain] = GREY
    tissues[white] = WHITE
    tissues[ventricles & brain] = CSF
    lesion = np.zeros(shape, bool)
    if pathological:
        count = n_lesions if n_lesions is not None else int(rng.integers(1, 4))
        candidates = np.argwhere(white & ~ndimage.binary_dilation(ventricles, iterations=2))
        for _ in range(count):
            if len(candidates) == 0:
                break
            c = candidates[rng.integers(len(candidates))].astype(float)
            r_mm = rng.uniform(*lesion_radius_mm)
            radii = r_mm / sp_zyx * rng.uniform(0.8, 1.2, 3)
            lesion |= _ellipsoid(shape, c, radii)
        lesion &= brain
    # intensities (T2-FLAIR-like: lesion bright, CSF dark), with a per-case scale and bias
    scale = rng.uniform(0.85, 1.15)
    means = {BACKGROUND: 0.0, CSF: 0.15, GREY: 0.55, WHITE: 0.70, SKULL: 0.35}
    image = np.zeros(shape, np.float32)
    for label, mean in means.items():
        image[tissues == label] = mean
    image[lesion] = rng.uniform(1.05, 1.25)
    image = ndimage.gaussian_filter(image, 0.7)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    bias = 1 + 0.1 * (rng.normal() * zz + rng.normal() * yy + rng.normal() * xx)
    image = image * bias * scale
    image = np.abs(image + rng.normal(0, noise, shape) + 1j * rng.normal(0, noise, shape)).astype(np.float32)
    image[~head] *= 0.3
    kw = dict(spacing=tuple(spacing), origin=tuple(origin), direction=np.eye(3) if direction is None else direction)
    img_vol = Volume(image.astype(np.float32), modality="MR", units="a.u.", **kw)
    return BrainCase(
        image=img_vol,
        lesion=Volume(lesion.astype(np.uint8), modality="SEG", units="label", metadata={"segments": [{"name": "lesion", "value": 1, "color": (1.0, 0.2, 0.2)}]}, **kw),
        tissues=Volume(tissues, modality="SEG", units="label", **kw),
        brain_mask=Volume(brain.astype(np.uint8), modality="SEG", units="label", **kw),
        pathological=pathological,
    )


def brain_dataset(n: int, seed: int = 0, balanced: bool = True, **kwargs) -> list[BrainCase]:
    """``n`` cases; with ``balanced``, alternately healthy and pathological."""
    return [
        brain_case(seed * 100003 + i, pathological=(i % 2 == 1) if balanced else None, **kwargs) for i in range(n)
    ]
