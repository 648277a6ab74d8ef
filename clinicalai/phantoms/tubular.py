"""CT phantoms with branching tubes (biliary-duct-like), for the 3D SegCorrect configuration.

A liver-like block of contrast-enhanced parenchyma (about 100 HU) holds a tree of
hypodense ducts (about 10 HU, label 1) that branches from a hilar trunk, radius shrinking at
each generation, plus bright portal-vein-like tubes (about 180 HU) that are *not* labelled,
so a network must learn the ducts and not every tube. Fat and air around it, blur and
Gaussian noise (CT noise is close to Gaussian in HU).

Deterministic: the same ``seed`` gives the same case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..volume import Volume

#: the one label of the duct phantoms (colour: Slicer's GenericAnatomyColors "bile duct"-like green)
TUBULAR_LABELS: List[Dict[str, Any]] = [{"name": "duct", "value": 1, "color": (0.0, 145 / 255, 30 / 255)}]


@dataclass
class TubularCase:
    """One CT phantom: ``image`` in HU (float32), ``labels`` uint8 (1 = duct), ``meta``."""

    image: Volume
    labels: Volume
    meta: Dict[str, Any] = field(default_factory=dict)


def _tree(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, radius: float,
          length: float, generations: int) -> List[Tuple[np.ndarray, np.ndarray, float]]:
    """Segments ``(p0, p1, radius)`` in mm of a random branching tree."""
    segments = []
    stack = [(start, direction / np.linalg.norm(direction), radius, length, 0)]
    while stack:
        p, d, r, ln, g = stack.pop()
        # a slightly curved branch: a few straight pieces with a wandering direction
        pieces = 4
        for _ in range(pieces):
            d = d + rng.normal(0, 0.15, 3)
            d /= np.linalg.norm(d)
            q = p + d * ln / pieces
            segments.append((p, q, r))
            p = q
        if g + 1 < generations:
            for _ in range(2):
                nd = d + rng.normal(0, 0.7, 3)
                stack.append((p, nd / np.linalg.norm(nd), r * rng.uniform(0.65, 0.8), ln * rng.uniform(0.6, 0.8), g + 1))
    return segments


def _paint(shape: Sequence[int], spacing_zyx: np.ndarray, segments) -> np.ndarray:
    """Voxels (z, y, x) within each segment's radius of the segment (capsules)."""
    mask = np.zeros(shape, bool)
    grid = [np.arange(s) * sp for s, sp in zip(shape, spacing_zyx)]
    for p0, p1, r in segments:
        lo = np.maximum(np.floor((np.minimum(p0, p1) - r) / spacing_zyx).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(p0, p1) + r) / spacing_zyx).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.meshgrid(*[g[a:b] for g, a, b in zip(grid, lo, hi)], indexing="ij")
        pts = np.stack([zz, yy, xx], -1)
        v = p1 - p0
        t = np.clip(((pts - p0) @ v) / max(float(v @ v), 1e-9), 0, 1)
        dist = np.linalg.norm(pts - (p0 + t[..., None] * v), axis=-1)
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= dist <= r
    return mask


def tubular_case(
    seed: int,
    shape: Sequence[int] = (40, 64, 64),
    spacing: Sequence[float] = (1.0, 1.0, 1.5),
    direction: Optional[np.ndarray] = None,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    noise_hu: float = 12.0,
    generations: int = 3,
) -> TubularCase:
    """One CT duct phantom.

    Args:
        seed: random seed (same seed, same case).
        shape: ``(z, y, x)`` voxels.
        spacing: ``(x, y, z)`` mm.
        noise_hu: Gaussian noise standard deviation in HU.
        generations: branching levels of the duct tree (trunk = 1).
    """
    rng = np.random.default_rng([int(seed), 11])
    shape = tuple(int(s) for s in shape)
    sp = np.array(spacing[::-1], float)  # (z, y, x) mm
    ext = np.array(shape) * sp
    center = ext / 2 + rng.normal(0, 0.05, 3) * ext
    start = center + rng.normal(0, 0.05, 3) * ext
    direction0 = rng.normal(0, 1, 3)
    radius = rng.uniform(2.0, 3.0)
    ducts = _paint(shape, sp, _tree(rng, start, direction0, radius, 0.35 * ext.min(), generations))
    ducts |= _paint(shape, sp, _tree(rng, start, -direction0, radius * 0.9, 0.3 * ext.min(), generations))
    vessels = _paint(shape, sp, _tree(rng, center + rng.normal(0, 0.15, 3) * ext, rng.normal(0, 1, 3),
                                      radius * 1.1, 0.45 * ext.min(), generations))
    vessels &= ~ndimage.binary_dilation(ducts, iterations=1)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    liver = (zz / 1.3) ** 2 + (yy / 1.05) ** 2 + (xx / 1.1) ** 2 <= 1.0
    body = (yy / 1.2) ** 2 + (xx / 1.25) ** 2 <= 1.0
    image = np.full(shape, -1000.0, np.float32)
    image[body] = -100.0  # fat
    image[liver] = rng.uniform(90, 120)
    image[vessels & liver] = rng.uniform(160, 200)
    ducts &= liver
    image[ducts] = rng.uniform(0, 25)
    image = ndimage.gaussian_filter(image, 0.7)
    image += rng.normal(0, noise_hu, shape).astype(np.float32)
    kw = dict(spacing=tuple(float(s) for s in spacing), origin=tuple(origin),
              direction=np.eye(3) if direction is None else np.asarray(direction, float))
    meta = {"seed": int(seed), "duct_voxels": int(ducts.sum())}
    return TubularCase(
        image=Volume(image.astype(np.float32), modality="CT", units="HU", metadata={"phantom": "tubular", **meta}, **kw),
        labels=Volume(ducts.astype(np.uint8), modality="SEG", units="label",
                      metadata={"segments": [dict(lab) for lab in TUBULAR_LABELS]}, **kw),
        meta=meta,
    )


def tubular_dataset(n: int, seed: int = 0, **kwargs: Any) -> List[TubularCase]:
    """``n`` cases with seeds ``seed*1000 + i``."""
    return [tubular_case(seed * 1000 + i, **kwargs) for i in range(n)]


__all__ = ["TUBULAR_LABELS", "TubularCase", "tubular_case", "tubular_dataset"]
