"""Synthetic corruptions of 2D label masks: the implausible shapes a corrector must learn to fix.

Each kind imitates a failure seen in segmenter outputs (the source study's list): erosion or
dilation of a structure, holes, spurious blobs, label swaps, noisy boundaries, a shifted
structure, a missing part. All are deterministic for a given seed; sizes scale with the
structure (its equivalent radius), so they work at any in-plane resolution.

Masks are ``(y, x)`` integer arrays of label values (0 background); ``labels`` lists the
foreground values that may be corrupted (default 1, 2, 3 = RV, MYO, LV).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from ..errors import InputError

#: the default kinds (every figure measured before issue 14's extra kinds used these)
CORRUPTION_KINDS: Tuple[str, ...] = (
    "erode_dilate", "holes", "blobs", "label_swap", "boundary_noise", "shift", "missing",
)
#: kinds issue 14 adds: what segmenters get wrong that the defaults do not draw
EXTRA_CORRUPTION_KINDS: Tuple[str, ...] = ("speckle_dropout", "far_blobs", "cavity_patch")
#: named sets of kinds (``clinicalai evaluate segcorrect --corruptions``)
CORRUPTION_SETS: Dict[str, Tuple[str, ...]] = {
    "default": CORRUPTION_KINDS, "all": CORRUPTION_KINDS + EXTRA_CORRUPTION_KINDS,
}

Rng = Union[int, np.random.Generator]


def _rng(seed: Rng) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _pick_label(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> Optional[int]:
    present = [v for v in labels if np.any(mask == v)]
    return int(rng.choice(present)) if present else None


def _radius(region: np.ndarray) -> float:
    return float(np.sqrt(region.sum() / np.pi))


def _disc(shape: Tuple[int, int], center: Tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2


def _random_point(region: np.ndarray, rng: np.random.Generator) -> Tuple[int, int]:
    ys, xs = np.nonzero(region)
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def erode_dilate(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Erode (to background / its surroundings) or dilate (over its neighbours) one structure."""
    out = mask.copy()
    lab = _pick_label(mask, labels, rng)
    if lab is None:
        return out
    region = mask == lab
    steps = int(rng.integers(1, max(2, int(0.25 * _radius(region)) + 2)))
    if rng.random() < 0.5:
        eroded = ndimage.binary_erosion(region, iterations=steps)
        # what the structure loses goes to the most common neighbouring label (usually background)
        lost = region & ~eroded
        ring = ndimage.binary_dilation(region, iterations=1) & ~region
        neigh = mask[ring]
        fill = int(np.bincount(neigh).argmax()) if neigh.size else 0
        out[lost] = fill
    else:
        out[ndimage.binary_dilation(region, iterations=steps)] = lab
    return out


def holes(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Punch 1-3 small holes (background, or another label) inside one structure."""
    out = mask.copy()
    lab = _pick_label(mask, labels, rng)
    if lab is None:
        return out
    region = mask == lab
    r = _radius(region)
    for _ in range(int(rng.integers(1, 4))):
        c = _random_point(region, rng)
        out[_disc(mask.shape, c, rng.uniform(0.12, 0.3) * r + 1) & region] = 0 if rng.random() < 0.7 else int(
            rng.choice([v for v in labels if v != lab] or [0]))
    return out


def blobs(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Add 1-3 spurious blobs of a label, near the heart (or anywhere on an empty slice)."""
    out = mask.copy()
    fg = mask > 0
    h, w = mask.shape
    if fg.any():
        ys, xs = np.nonzero(fg)
        cy, cx = ys.mean(), xs.mean()
        spread = max(np.ptp(ys), np.ptp(xs), 8)
        size = 0.5 * np.sqrt(fg.sum() / np.pi)
    else:
        cy, cx, spread, size = h / 2, w / 2, min(h, w) / 3, min(h, w) / 16
    for _ in range(int(rng.integers(1, 4))):
        c = (float(np.clip(cy + rng.normal(0, spread), 0, h - 1)), float(np.clip(cx + rng.normal(0, spread), 0, w - 1)))
        radius = rng.uniform(0.15, 0.5) * size + 1
        blob = _disc(mask.shape, c, radius)
        # irregular outline: threshold smoothed noise inside a slightly larger disc
        noise = ndimage.gaussian_filter(rng.normal(size=mask.shape), 1.5)
        blob = _disc(mask.shape, c, radius * 1.4) & ((noise > -0.05) | blob)
        out[blob] = int(rng.choice(list(labels)))
    return out


def label_swap(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Relabel a structure, or part of it (a disc region), as another structure."""
    out = mask.copy()
    lab = _pick_label(mask, labels, rng)
    if lab is None or len(labels) < 2:
        return out
    other = int(rng.choice([v for v in labels if v != lab]))
    region = mask == lab
    if rng.random() < 0.35:
        out[region] = other
    else:
        c = _random_point(region, rng)
        out[_disc(mask.shape, c, rng.uniform(0.3, 0.8) * _radius(region) + 1) & region] = other
    return out


def boundary_noise(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Ragged borders: pixels near a boundary take a neighbour's label where smooth noise says so."""
    fg = mask > 0
    if not fg.any():
        return mask.copy()
    width = int(rng.integers(1, 4))
    edges = np.zeros(mask.shape, bool)
    for v in np.unique(mask):
        region = mask == v
        edges |= ndimage.binary_dilation(region, iterations=width) & ~region
    noise = ndimage.gaussian_filter(rng.normal(size=mask.shape), rng.uniform(0.7, 2.0))
    flip = edges & (noise > np.quantile(noise, rng.uniform(0.4, 0.7)))
    # the label a pixel takes: that of a randomly shifted neighbour
    dy, dx = rng.integers(-width, width + 1, 2)
    neighbour = np.roll(mask, (int(dy) or 1, int(dx)), axis=(0, 1))
    out = mask.copy()
    out[flip] = neighbour[flip]
    return out


def shift(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Move one structure by a few pixels (what it leaves becomes background)."""
    out = mask.copy()
    lab = _pick_label(mask, labels, rng)
    if lab is None:
        return out
    region = mask == lab
    r = max(_radius(region), 2.0)
    dy, dx = (rng.uniform(0.2, 0.6) * r * rng.choice([-1, 1], 2)).round().astype(int)
    moved = ndimage.shift(region.astype(np.uint8), (int(dy), int(dx)), order=0, mode="constant") > 0
    out[region] = 0
    out[moved] = lab
    return out


def missing(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Remove a wedge of one structure (an open myocardium, half a ventricle)."""
    out = mask.copy()
    lab = _pick_label(mask, labels, rng)
    if lab is None:
        return out
    region = mask == lab
    ys, xs = np.nonzero(region)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    angle = np.arctan2(yy - cy, xx - cx)
    start = rng.uniform(-np.pi, np.pi)
    span = rng.uniform(0.3, 1.6)
    wedge = np.mod(angle - start, 2 * np.pi) < span
    out[region & wedge] = 0
    return out


def speckle_dropout(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Drop 15-40 % of one structure's pixels to background in small speckles (1-2 px grains)."""
    out = mask.copy()
    lab = _pick_label(mask, labels, rng)
    if lab is None:
        return out
    region = mask == lab
    noise = ndimage.gaussian_filter(rng.normal(size=mask.shape), rng.uniform(0.5, 1.0))
    inside = noise[region]
    dropped = region & (noise > np.quantile(inside, 1.0 - rng.uniform(0.15, 0.4)))
    out[dropped] = 0
    return out


def far_blobs(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Add 1-2 blobs of a label far from the heart (more than 2 heart radii from its centre),
    as a segmenter does on a bright vessel or the stomach."""
    out = mask.copy()
    fg = mask > 0
    h, w = mask.shape
    if not fg.any():
        return out
    ys, xs = np.nonzero(fg)
    cy, cx, r = ys.mean(), xs.mean(), _radius(fg)
    yy, xx = np.mgrid[:h, :w]
    far = np.hypot(yy - cy, xx - cx) > 2.0 * r + 4
    if not far.any():
        return out
    for _ in range(int(rng.integers(1, 3))):
        c = _random_point(far, rng)
        out[_disc(mask.shape, c, rng.uniform(0.15, 0.4) * r + 1)] = int(rng.choice(list(labels)))
    return out


def cavity_patch(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Paint a patch of a wrong label inside a cavity (LV = 3 or RV = 1): e.g. myocardium or RV
    inside the LV blood pool, LV inside the RV."""
    out = mask.copy()
    cavity = _pick_label(mask, [v for v in (1, 3) if v in labels], rng)
    if cavity is None:
        return out
    region = ndimage.binary_erosion(mask == cavity, iterations=1)
    if not region.any():
        return out
    wrong = int(rng.choice([v for v in labels if v != cavity]))
    c = _random_point(region, rng)
    out[_disc(mask.shape, c, rng.uniform(0.2, 0.45) * _radius(mask == cavity) + 1) & region] = wrong
    return out


CORRUPTIONS: Dict[str, Callable[[np.ndarray, Sequence[int], np.random.Generator], np.ndarray]] = {
    "erode_dilate": erode_dilate, "holes": holes, "blobs": blobs, "label_swap": label_swap,
    "boundary_noise": boundary_noise, "shift": shift, "missing": missing,
    "speckle_dropout": speckle_dropout, "far_blobs": far_blobs, "cavity_patch": cavity_patch,
}


def _check_kinds(kinds: Optional[Sequence[str]]) -> Tuple[str, ...]:
    kinds = tuple(kinds) if kinds else CORRUPTION_KINDS
    unknown = [k for k in kinds if k not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption kind(s) {unknown}; choose from {', '.join(CORRUPTIONS)}")
    return kinds


def corruption_kinds(text: str) -> Tuple[str, ...]:
    """Parse ``--corruptions`` (the CLI and ``scripts/segcorrect_rescore.py``): a set name of
    :data:`CORRUPTION_SETS` or a comma-separated list of kinds; raises :class:`InputError`."""
    if text in CORRUPTION_SETS:
        return CORRUPTION_SETS[text]
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in CORRUPTIONS]
    if not kinds or unknown:
        raise InputError(f"--corruptions: unknown {', '.join(unknown) or 'empty list'}; give "
                         f"{' or '.join(CORRUPTION_SETS)} or kinds from {', '.join(CORRUPTIONS)}")
    return kinds


def corrupt_slice(
    mask: np.ndarray,
    seed: Rng,
    kinds: Optional[Sequence[str]] = None,
    n: Union[int, Tuple[int, int]] = (1, 2),
    labels: Sequence[int] = (1, 2, 3),
) -> Tuple[np.ndarray, List[str]]:
    """Apply ``n`` random corruptions (kinds drawn from ``kinds``) to a ``(y, x)`` label mask.

    Args:
        mask: ``(y, x)`` integer labels; not modified.
        seed: int seed or a numpy ``Generator`` (same seed, same result).
        kinds: corruption kinds to draw from (default: all of :data:`CORRUPTION_KINDS`).
        n: number of corruptions, or an inclusive ``(low, high)`` range.
        labels: foreground values that may be corrupted.

    Returns:
        ``(corrupted mask, kinds applied in order)``.
    """
    if np.asarray(mask).ndim != 2:
        raise ValueError(f"corrupt_slice takes a 2D (y, x) mask, got shape {np.shape(mask)}")
    rng = _rng(seed)
    kinds = _check_kinds(kinds)
    count = int(rng.integers(n[0], n[1] + 1)) if isinstance(n, tuple) else int(n)
    out = np.asarray(mask).astype(np.int64, copy=True)
    applied: List[str] = []
    for _ in range(count):
        kind = str(rng.choice(kinds))
        out = CORRUPTIONS[kind](out, labels, rng)
        applied.append(kind)
    return out.astype(np.asarray(mask).dtype, copy=False), applied


def corrupt_volume(
    labels_zyx: np.ndarray,
    seed: Rng,
    kinds: Optional[Sequence[str]] = None,
    probability: float = 0.7,
    n: Union[int, Tuple[int, int]] = (1, 2),
    labels: Sequence[int] = (1, 2, 3),
) -> Tuple[np.ndarray, List[List[str]]]:
    """Corrupt each non-empty ``(y, x)`` slice of a ``(z, y, x)`` mask with ``probability``.

    Returns ``(corrupted array, per-slice list of kinds applied)`` (empty list: untouched).
    """
    rng = _rng(seed)
    kinds = _check_kinds(kinds)
    out = np.array(labels_zyx, copy=True)
    applied: List[List[str]] = []
    for z in range(out.shape[0]):
        if out[z].any() and rng.random() < probability:
            out[z], done = corrupt_slice(out[z], rng, kinds, n, labels)
            applied.append(done)
        else:
            applied.append([])
    return out, applied
