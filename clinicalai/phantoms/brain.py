"""Brain MRI phantoms with (or without) lesions, for attribution and anomaly detection.

A head is an ellipsoid of skull/scalp around a brain made of white matter, a cortical grey
matter shell, CSF ventricles; a pathological case adds one to three hyperintense lesions
(T2/FLAIR-like) inside the white matter and returns their mask. Brain size, shape, position
and intensity vary between cases, so a classifier *can* pick up biased cues (as the source
thesis warns) unless it learns the lesion.

Deterministic: the same ``seed`` gives the same case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..outputs import atomic_output, write_csv
from ..progress import report
from ..volume import Volume, write_volume
from .common import BRAIN_LAYOUTS, segment_metadata

#: tissue classes of :attr:`BrainCase.tissues`
BACKGROUND, CSF, GREY, WHITE, SKULL = 0, 1, 2, 3, 4
TISSUE_NAMES = {BACKGROUND: "background", CSF: "CSF", GREY: "grey matter", WHITE: "white matter", SKULL: "skull"}
#: colour of an MR phantom's lesion segment (RGB 0..1)
LESION_COLOR = (1.0, 0.2, 0.2)


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

    Steps (one random stream, in this order): tissues (:func:`_tissues`) -> lesions
    (:func:`_lesions`) -> MR intensities (:func:`_mr_image`) -> volumes.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    if pathological is None:
        pathological = bool(rng.random() < 0.5)
    head, brain, white, ventricles, tissues = _tissues(shape, rng)
    lesion = np.zeros(shape, bool)
    if pathological:
        count = n_lesions if n_lesions is not None else int(rng.integers(1, 4))
        sp_zyx = np.array(spacing[::-1], dtype=float)
        lesion = _lesions(white & ~ndimage.binary_dilation(ventricles, iterations=2), count, lesion_radius_mm,
                          sp_zyx, rng) & brain
    image = _mr_image(tissues, lesion, head, noise, rng)
    kw = dict(spacing=tuple(spacing), origin=tuple(origin), direction=np.eye(3) if direction is None else direction)
    return BrainCase(
        image=Volume(image.astype(np.float32), modality="MR", units="a.u.", **kw),
        lesion=Volume(lesion.astype(np.uint8), modality="SEG", units="label", metadata=lesion_metadata(), **kw),
        tissues=Volume(tissues, modality="SEG", units="label", **kw),
        brain_mask=Volume(brain.astype(np.uint8), modality="SEG", units="label", **kw),
        pathological=pathological,
    )


def lesion_metadata() -> Dict[str, Any]:
    """``Volume.metadata`` of an MR phantom's lesion mask (one segment, ``"lesion"``, value 1)."""
    return segment_metadata("lesion", LESION_COLOR)


def _tissues(shape: Tuple[int, int, int], rng: np.random.Generator):
    """``(head, brain, white, ventricles, tissues)``: bool masks and the uint8 tissue labels
    (:data:`TISSUE_NAMES`) of a head of random size, shape and position (voxel units)."""
    center = np.array(shape, dtype=float) / 2 + rng.normal(0, 1.0, 3)
    head_r = np.array(shape, dtype=float) * rng.uniform(0.40, 0.46, 3)
    brain_r = head_r * rng.uniform(0.80, 0.86)
    head = _ellipsoid(shape, center, head_r)
    brain = _ellipsoid(shape, center, brain_r)
    # white matter is ~40 % of an adult brain, grey matter ~55 %, the ventricles a few %
    white = _ellipsoid(shape, center, brain_r * rng.uniform(0.80, 0.85))
    # cortical folding: perturb the grey/white border with low-frequency noise
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3)
    white &= wobble < 0.9 * wobble.std()
    white = ndimage.binary_opening(white, iterations=1) & brain
    # paired lateral ventricles: long antero-posteriorly (y), narrow left-right (x)
    vent_r = brain_r * np.array([0.22, 0.42, 0.11]) * rng.uniform(0.85, 1.25)
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        c = center + np.array([0.04 * shape[0], 0.0, side * 0.075 * shape[2]])
        ventricles |= _ellipsoid(shape, c, vent_r)
    # subarachnoid CSF: a thin rim between brain and skull
    rim = _ellipsoid(shape, center, brain_r * 1.05) & ~brain
    tissues = np.zeros(shape, np.uint8)
    tissues[head] = SKULL
    tissues[rim & head] = CSF
    tissues[brain] = GREY
    tissues[white] = WHITE
    tissues[ventricles & brain] = CSF
    return head, brain, white, ventricles, tissues


def _lesions(sites: np.ndarray, count: int, radius_mm: Tuple[float, float], spacing_zyx: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` ellipsoidal lesions (bool ``(z, y, x)``) centred on random voxels of
    ``sites``, radii drawn from ``radius_mm`` (mm) and stretched by +/- 20 % per axis."""
    lesion = np.zeros(sites.shape, bool)
    candidates = np.argwhere(sites)
    for _ in range(count):
        if len(candidates) == 0:
            break
        c = candidates[rng.integers(len(candidates))].astype(float)
        r_mm = rng.uniform(*radius_mm)
        radii = r_mm / spacing_zyx * rng.uniform(0.8, 1.2, 3)
        lesion |= _ellipsoid(sites.shape, c, radii)
    return lesion


def _mr_image(tissues: np.ndarray, lesion: np.ndarray, head: np.ndarray, noise: float,
              rng: np.random.Generator) -> np.ndarray:
    """T2-FLAIR-like intensities (lesion bright, CSF dark, float32 ``(z, y, x)``) with a per-case
    scale, a linear bias field, blur and Rician-like noise; dimmed outside the head."""
    shape = tissues.shape
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
    return image


def brain_dataset(n: int, seed: int = 0, balanced: bool = True, **kwargs) -> list[BrainCase]:
    """``n`` cases; with ``balanced``, alternately healthy and pathological."""
    return [
        brain_case(seed * 100003 + i, pathological=(i % 2 == 1) if balanced else None, **kwargs) for i in range(n)
    ]


def write_brain_dataset(
    out_dir: "str | os.PathLike[str]",
    n: int,
    seed: int = 0,
    layout: str = "flat",
    progress: Optional[Callable[[float, str], None]] = None,
) -> Path:
    """Write ``n`` brain MRI phantoms (alternately healthy and pathological) and a CSV.

    Layouts (``out_dir`` relative paths):

    - ``flat``: ``caseNNN/image.nii.gz``, ``caseNNN/lesion.nii.gz``, ``caseNNN/brain_mask.nii.gz``;
    - ``brats`` (BraTS-like): ``BraTS-SYN-NNNNN/BraTS-SYN-NNNNN_flair.nii.gz``, ``..._seg.nii.gz``,
      ``..._brainmask.nii.gz``.

    ``out_dir/cases.csv`` has columns ``case, label (healthy | pathological), image, lesion,
    brain_mask, lesion_voxels`` (paths relative to the CSV). Returns the CSV path.
    Same ``seed``, same bytes.
    """
    if int(n) < 1:
        raise InputError("the number of brain phantoms must be at least 1")
    if layout not in BRAIN_LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(BRAIN_LAYOUTS)}, got {layout!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, case in enumerate(_iter_brain_dataset(int(n), seed)):
        if layout == "brats":
            name = f"BraTS-SYN-{i:05d}"
            files = {"image": f"{name}/{name}_flair.nii.gz", "lesion": f"{name}/{name}_seg.nii.gz",
                     "brain_mask": f"{name}/{name}_brainmask.nii.gz"}
        else:
            name = f"case{i:03d}"
            files = {"image": f"{name}/image.nii.gz", "lesion": f"{name}/lesion.nii.gz",
                     "brain_mask": f"{name}/brain_mask.nii.gz"}
        with atomic_output(out / name, directory=True) as tmp:
            for key, vol in (("image", case.image), ("lesion", case.lesion), ("brain_mask", case.brain_mask)):
                write_volume(vol, tmp / Path(files[key]).name)
        rows.append({"case": name, "label": "pathological" if case.pathological else "healthy", **files,
                     "lesion_voxels": int(np.count_nonzero(case.lesion.array))})
        report(progress, (i + 1) / n, f"brain phantom {i + 1}/{n}")
    return write_csv(rows, out / "cases.csv")


def _iter_brain_dataset(n: int, seed: int):
    # the cases of brain_dataset(n, seed), one at a time (memory stays flat for large n)
    for i in range(n):
        yield brain_case(seed * 100003 + i, pathological=(i % 2 == 1))
