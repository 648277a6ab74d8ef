"""A second, independent family of short-axis cardiac phantoms, for testing only.

No model is ever trained on these cases: they are the held-out family that tells whether a
model learned hearts or learned :mod:`clinicalai.phantoms.cardiac`. Written apart from that
generator, with other choices at every step:

- **shape**: a 3D heart, not a stack of 2D drawings. The LV is a prolate spheroid cut by a
  base plane (across the stack) and closed at the apex, with a wall of varying thickness; the RV is a second,
  flatter half-spheroid beside it, cut by the LV epicardium and ending before the apex. The
  heart's long axis is tilted 0-20 degrees from the stack axis, so slices cut it obliquely, and
  the RV lies at any angle around the LV (``max_rotation_deg``), not only on the image left.
- **partial volume**: labels and image are rendered on a grid 3x finer in-plane and 3x along
  the slice, then averaged (image) and voted (labels) down to the stack.
- **contrast and surroundings**: bright blood with a dark myocardium, but other ranges; with a
  body (textured tissue, dark lungs) or with none around the heart (air only).
- **acquisition**: in-plane 1.0-2.2 mm, slices 3-10 mm thick, 96-224 voxels; a polynomial bias
  field, Gaussian or Rician noise, and a motion-like blur along a random in-plane direction.

``heldout_cardiac_case(seed)`` is deterministic and returns the same
:class:`~clinicalai.phantoms.cardiac.CardiacCase` type (labels 1 RV, 2 MYO, 3 LV), so every
evaluation takes either family.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..segcorrect.labels import LV, MYO, RV, cardiac_segments
from ..volume import Volume
from .cardiac import CardiacCase

#: supersampling per axis for partial volume (in-plane, through-plane)
_SUPER = (3, 3)
#: the seeds of this family start here, far from any training seed of the first family
HELDOUT_SEED_BASE = 900_000


def heldout_case_parameters(seed: int, max_rotation_deg: float = 180.0) -> Dict[str, Any]:
    """The anatomy, contrast and acquisition drawn for ``seed`` (cheap: nothing is rendered)."""
    rng = np.random.default_rng([HELDOUT_SEED_BASE + int(seed), 7])
    ny = int(rng.integers(96, 225))
    return dict(
        size_yx=(ny, int(np.clip(ny + rng.integers(-24, 25), 96, 224))),
        spacing_xy=float(rng.uniform(1.0, 2.2)),
        thickness=float(rng.uniform(3.0, 10.0)),
        lv_radii=(float(rng.uniform(17.0, 30.0)), float(rng.uniform(15.0, 28.0))),  # mm, basal endocardium
        lv_length=float(rng.uniform(60.0, 90.0)),  # base to apex, mm
        wall=(float(rng.uniform(5.0, 11.0)), float(rng.uniform(0.7, 1.3))),  # mm; septal/lateral ratio
        rv_angle=float(np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg)) + np.pi),
        rv_scale=(float(rng.uniform(1.1, 1.6)), float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.55, 0.8))),
        tilt=(float(np.deg2rad(rng.uniform(0.0, 20.0))), float(rng.uniform(0, 2 * np.pi))),
        centre_frac=(float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65))),
        base_offset=float(rng.uniform(0.0, 4.0)),  # mm: first slice's top below the base plane
        body=bool(rng.random() < 0.6),
        blood=float(rng.uniform(0.7, 1.3)),
        myo=float(rng.uniform(0.1, 0.45)),
        tissue=float(rng.uniform(0.25, 0.6)),
        lung=float(rng.uniform(0.0, 0.12)),
        rician=bool(rng.random() < 0.5),
        noise=float(rng.uniform(0.02, 0.08)),
        bias=float(rng.uniform(0.0, 0.35)),
        blur_mm=float(rng.uniform(0.0, 3.0)) if rng.random() < 0.6 else 0.0,
        blur_angle=float(rng.uniform(0, np.pi)),
        scale=float(rng.uniform(80.0, 3000.0)),
        texture_seed=int(rng.integers(0, 2**31)),
    )


def _rotation(tilt: float, azimuth: float) -> np.ndarray:
    """Columns: the heart's short axes a, b and long axis u (base -> apex) in stack coordinates."""
    u = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    a = np.cross([0.0, 1.0, 0.0], u)
    a /= np.linalg.norm(a)
    return np.stack([a, np.cross(u, a), u], axis=1)


def _label_field(x: np.ndarray, y: np.ndarray, z: np.ndarray, p: Dict[str, Any]) -> np.ndarray:
    """Labels at points ``(x, y, z)`` mm in stack coordinates, heart base centre at the origin."""
    frame = _rotation(*p["tilt"])
    pts = np.stack([x, y, z], -1) @ frame  # local (a, b, t): t from the base (0) to the apex
    a, b, t = pts[..., 0], pts[..., 1], pts[..., 2]
    ra, rb = p["lv_radii"]
    length = p["lv_length"]
    # the base is a plane across the stack (the valve plane as the slices see it), so no slice
    # shows the cavity open to the outside; the apex follows the tilted long axis
    inside_long = (z >= 0) & (t >= -length)
    endo = inside_long & ((a / ra) ** 2 + (b / rb) ** 2 + (t / length) ** 2 <= 1.0)
    # a wall thicker on the septum (towards the RV) than laterally
    angle = np.arctan2(b, a)
    wall = p["wall"][0] * (1.0 + 0.5 * (p["wall"][1] - 1.0) * (1.0 + np.cos(angle - p["rv_angle"])))
    epi = inside_long & ((a / (ra + wall)) ** 2 + (b / (rb + wall)) ** 2 + (t / (length + wall)) ** 2 <= 1.0)
    # the RV: a flatter half-spheroid centred beside the LV on the septal side
    sx, sy, sl = p["rv_scale"]
    cx, cy = (ra + p["wall"][0]) * 0.9 * np.cos(p["rv_angle"]), (rb + p["wall"][0]) * 0.9 * np.sin(p["rv_angle"])
    ca, sa = np.cos(p["rv_angle"]), np.sin(p["rv_angle"])
    u = (a - cx) * ca + (b - cy) * sa  # across the septum
    v = -(a - cx) * sa + (b - cy) * ca  # along the septum
    rv_w, rv_h, rv_len = sy * (ra + 10.0), sx * (rb + 10.0), sl * length
    rv = inside_long & ((u / rv_w) ** 2 + (v / rv_h) ** 2 + (t / rv_len) ** 2 <= 1.0) & ~epi
    out = np.zeros(x.shape, np.uint8)
    out[rv] = RV
    out[epi & ~endo] = MYO
    out[endo] = LV
    return out


def _surroundings(shape: Tuple[int, int, int], spacing: Sequence[float], p: Dict[str, Any]) -> np.ndarray:
    """Background intensity: a textured body with dark lungs, or air."""
    nz, ny, nx = shape
    if not p["body"]:
        return np.zeros(shape, np.float32)
    rng = np.random.default_rng(p["texture_seed"])
    yy, xx = np.meshgrid((np.arange(ny) - ny / 2) * spacing[1], (np.arange(nx) - nx / 2) * spacing[0], indexing="ij")
    half = (ny * spacing[1] * rng.uniform(0.38, 0.48), nx * spacing[0] * rng.uniform(0.4, 0.5))
    body = (yy / half[0]) ** 2 + (xx / half[1]) ** 2 <= 1.0
    texture = ndimage.gaussian_filter(rng.normal(size=(ny, nx)), 6.0 / spacing[0])
    texture = 1.0 + 0.6 * texture / (np.abs(texture).max() + 1e-9)
    base = np.where(body, p["tissue"] * texture, 0.0)
    for side in (-1, 1):  # lungs: two dark ellipses beside the heart
        ly, lx = rng.uniform(-0.1, 0.1) * half[0], side * rng.uniform(0.55, 0.65) * half[1]
        lung = ((yy - ly) / (half[0] * rng.uniform(0.45, 0.6))) ** 2 + ((xx - lx) / (half[1] * 0.28)) ** 2 <= 1.0
        base = np.where(lung & body, p["lung"], base)
    return np.repeat(base[None].astype(np.float32), nz, axis=0)


def heldout_cardiac_case(
    seed: int,
    *,
    n_slices: Optional[int] = None,
    direction: Optional[np.ndarray] = None,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    max_rotation_deg: float = 180.0,
) -> CardiacCase:
    """One short-axis stack of the held-out family (module docstring).

    Args:
        seed: any integer; the family's own seed space (never a training seed of the first one).
        n_slices: slices base to apex (default: enough to cover the heart at this thickness).
        direction: 3x3 direction of the stack (default: a random oblique one from the seed).
        origin: LPS origin (mm) of voxel 0.
        max_rotation_deg: the RV lies within this angle of the image left (180: anywhere).
    """
    p = heldout_case_parameters(seed, max_rotation_deg)
    ny, nx = p["size_yx"]
    sxy, thick = p["spacing_xy"], p["thickness"]
    nz = n_slices or int(np.clip(np.ceil((p["lv_length"] + p["wall"][0] - p["base_offset"]) / thick), 4, 24))
    fy, fz = _SUPER
    cy, cx = p["centre_frac"][0] * ny * sxy, p["centre_frac"][1] * nx * sxy
    # fine grid: fy x fy sub-voxels in-plane, fz through the slice, centred in each voxel
    sub_xy = (np.arange(fy) + 0.5) / fy - 0.5
    sub_z = (np.arange(fz) + 0.5) / fz - 0.5
    zs = ((np.arange(nz)[:, None] + sub_z[None]) * thick + thick / 2 + p["base_offset"]).ravel()
    ys = ((np.arange(ny)[:, None] + sub_xy[None]) * sxy - cy).ravel()
    xs = ((np.arange(nx)[:, None] + sub_xy[None]) * sxy - cx).ravel()
    labels = np.zeros((nz, ny, nx), np.uint8)
    fractions = np.zeros((4, nz, ny, nx), np.float32)
    for k in range(nz):  # one slice at a time keeps the fine grid small
        zk = zs[k * fz:(k + 1) * fz]
        z3, y3, x3 = np.meshgrid(zk, ys, xs, indexing="ij")
        fine = _label_field(x3, y3, z3, p).reshape(fz, ny, fy, nx, fy)
        for lab in range(4):
            fractions[lab, k] = (fine == lab).mean(axis=(0, 2, 4))
    labels = fractions.argmax(0).astype(np.uint8)  # the majority of each voxel's sub-voxels
    background = _surroundings((nz, ny, nx), (sxy, sxy, thick), p)
    heart = fractions[RV] * p["blood"] + fractions[LV] * p["blood"] + fractions[MYO] * p["myo"]
    image = heart + fractions[0] * background  # partial volume: each voxel mixes what it holds
    if p["blur_mm"] > 0:  # motion along one in-plane direction
        sigma = p["blur_mm"] / sxy
        image = ndimage.gaussian_filter(image, (0, abs(np.sin(p["blur_angle"])) * sigma + 1e-3,
                                                abs(np.cos(p["blur_angle"])) * sigma + 1e-3))
    rng = np.random.default_rng([HELDOUT_SEED_BASE + int(seed), 11])
    yy, xx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    coeff = rng.normal(size=5) * p["bias"]
    bias = 1.0 + coeff[0] * xx + coeff[1] * yy + coeff[2] * xx * yy + coeff[3] * xx ** 2 + coeff[4] * yy ** 2
    image = image * np.clip(bias, 0.3, 3.0)[None]
    noise = p["noise"] * max(p["blood"], 1e-3)
    if p["rician"]:
        image = np.sqrt((image + rng.normal(0, noise, image.shape)) ** 2 + rng.normal(0, noise, image.shape) ** 2)
    else:
        image = np.clip(image + rng.normal(0, noise, image.shape), 0, None)
    if direction is None:
        from scipy.spatial.transform import Rotation

        direction = Rotation.from_euler("xyz", rng.uniform(-35, 35, 3), degrees=True).as_matrix()
    vol = Volume((image * p["scale"]).astype(np.float32), spacing=(sxy, sxy, thick), origin=tuple(origin),
                 direction=np.asarray(direction, float), modality="MR")
    meta = {"family": "heldout", "seed": int(seed), "body": p["body"], "rician": p["rician"],
            "rv_angle_deg": float(np.rad2deg(p["rv_angle"] - np.pi)), "tilt_deg": float(np.rad2deg(p["tilt"][0])),
            "spacing": [sxy, sxy, thick]}
    return CardiacCase(image=vol, labels=vol.with_array(labels, modality="SEG", units="label",
                                                        metadata={"segments": cardiac_segments()}),
                       phase="ED", meta=meta)


__all__ = ["HELDOUT_SEED_BASE", "heldout_case_parameters", "heldout_cardiac_case"]
