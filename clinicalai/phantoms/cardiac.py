"""Short-axis cine cardiac MRI phantoms with RV / MYO / LV labels (ACDC-like).

A case is a stack of 8-14 short-axis slices (base first, apex last, as in ACDC). In each
slice the LV blood pool is a disc inside a myocardial ring; the RV is a crescent wrapped
around the septal side of the ring. Radii shrink from base to apex; the RV stops before the
apex, so apical slices hold only LV + MYO (the very last one sometimes only a MYO cap), and
some cases start above the ventricles with a basal slice that holds only RV. End-systole (ES)
has a smaller LV cavity and a thicker myocardium than end-diastole (ED) of the same patient.

The image is bright-blood (SSFP-like): blood bright, myocardium dark, a body ellipse with
organ-like blobs and dark lungs around it, a smooth multiplicative bias field, blur and
Rician-like noise. In-plane spacing 1.2-1.8 mm, slice thickness 5-10 mm, in-plane size
160-256 voxels, heart position and size varied.

Deterministic: ``cardiac_case(seed, phase)`` always gives the same case; the anatomy depends on
``seed`` only, so the ED and ES cases of one seed are the same patient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..outputs import atomic_output
from ..progress import report
# the label table (names, values, colours) is the engine's, defined once; re-exported here
from ..segcorrect.labels import CARDIAC_LABELS, LV, MYO, N_CLASSES, RV, cardiac_segments
from ..volume import Volume, write_volume

PHASES = ("ED", "ES")
GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")


@dataclass
class CardiacCase:
    """One synthetic short-axis stack.

    Attributes:
        image: float32 MR volume ``(z, y, x)``.
        labels: uint8 label volume on the same grid, values 0 bg, 1 RV, 2 MYO, 3 LV.
        phase: ``"ED"`` or ``"ES"``.
        meta: patient parameters (group, height, weight), heart centre in voxels, radii in mm.
    """

    image: Volume
    labels: Volume
    phase: str
    meta: Dict[str, Any] = field(default_factory=dict)


def _patient(seed: int) -> Dict[str, Any]:
    """Anatomy and acquisition parameters drawn from ``seed`` only (shared by ED and ES)."""
    rng = np.random.default_rng([int(seed), 1])
    n = int(rng.choice([160, 176, 192, 208, 224, 232, 256]))
    m = int(np.clip(n + rng.choice([-32, -16, 0, 0, 16, 24]), 160, 256))
    return dict(
        group=str(rng.choice(GROUPS)),
        height=float(np.round(rng.uniform(150, 195), 1)),
        weight=float(np.round(rng.uniform(50, 110), 1)),
        n_slices=int(rng.integers(8, 15)),
        size_yx=(n, m),
        spacing_xy=float(np.round(rng.uniform(1.2, 1.8), 3)),
        thickness=float(np.round(rng.uniform(5.0, 10.0), 2)),
        # heart centre as a fraction of the field of view
        center_frac=(float(rng.uniform(0.40, 0.60)), float(rng.uniform(0.40, 0.60))),
        lv_radius_ed=float(rng.uniform(20.0, 30.0)),  # mm, basal endocardial radius at ED
        myo_ed=float(rng.uniform(6.0, 9.0)),  # mm, wall thickness at ED
        es_factor=float(rng.uniform(0.62, 0.78)),  # ES cavity radius / ED cavity radius
        lv_ellipticity=float(rng.uniform(0.85, 1.0)),
        lv_angle=float(rng.uniform(0, np.pi)),
        rv_angle=float(rng.uniform(np.pi * 0.85, np.pi * 1.15)),  # RV on the image left (+x is right)
        rv_length=float(rng.uniform(1.5, 2.1)),  # RV half-length / epicardial radius
        rv_width=float(rng.uniform(0.9, 1.25)),  # RV half-width / epicardial radius
        rv_extent=float(rng.uniform(0.55, 0.8)),  # fraction of the stack (from the base) with RV
        apex_cap=bool(rng.random() < 0.5),  # last slice holds only a MYO cap
        base_rv_only=bool(rng.random() < 0.3),  # first slice above the LV: RV only
        intensity=dict(
            blood=float(rng.uniform(0.85, 1.15)),
            myo=float(rng.uniform(0.22, 0.35)),
            body=float(rng.uniform(0.35, 0.55)),
            fat=float(rng.uniform(0.7, 0.95)),
            lung=float(rng.uniform(0.03, 0.08)),
            scale=float(rng.uniform(200.0, 1200.0)),  # scanner units vary; normalisation handles it
        ),
    )


def cardiac_case(
    seed: int,
    phase: Optional[str] = None,
    *,
    n_slices: Optional[int] = None,
    size: Optional[Tuple[int, int]] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[np.ndarray] = None,
    origin: Optional[Sequence[float]] = None,
    noise: float = 0.04,
    bias: float = 0.25,
) -> CardiacCase:
    """One short-axis cardiac MRI phantom.

    Args:
        seed: random seed; the anatomy depends on it only (ED and ES are one patient).
        phase: ``"ED"``, ``"ES"``, or ``None`` (decided by the seed).
        n_slices: number of slices (default 8-14 from the seed).
        size: in-plane ``(y, x)`` voxels (default 160-256 from the seed).
        spacing: ``(x, y, z)`` mm (default in-plane 1.2-1.8, thickness 5-10 from the seed).
        direction: 3x3 direction matrix (columns = LPS directions of i, j, k); default identity.
        origin: LPS origin in mm; default centres the stack on (0, 0, 0).
        noise: Rician-like noise level relative to blood intensity.
        bias: amplitude of the smooth multiplicative bias field.

    Steps: patient (:func:`_patient`, seed only) and phase -> heart geometry
    (:func:`_heart`) -> labels slice by slice (:func:`_slice_labels`) -> MR intensities
    (:func:`_render`) -> grid and volumes.
    """
    p = _patient(seed)
    phase = _resolve_phase(seed, phase)
    rng = np.random.default_rng([int(seed), 3 + PHASES.index(phase)])
    nz = int(n_slices or p["n_slices"])
    ny, nx = (int(s) for s in (size or p["size_yx"]))
    if spacing is None:
        spacing = (p["spacing_xy"], p["spacing_xy"], p["thickness"])
    sx, sy, sz = (float(s) for s in spacing)
    heart = _heart(p, phase == "ES", nz, (ny, nx), (sx, sy))
    labels = np.zeros((nz, ny, nx), np.uint8)
    for k in range(nz):
        labels[k] = _slice_labels(heart, k, rng)
    image = _render(labels, p, rng, (sz, sy, sx), noise=noise, bias=bias)
    kw = _stack_geometry((nz, ny, nx), (sx, sy, sz), direction, origin)
    meta = {
        "seed": int(seed),
        "phase": phase,
        "group": p["group"],
        "height": p["height"],
        "weight": p["weight"],
        "center_yx": heart.center_yx,
        "lv_endo_radius_mm": float(heart.r_endo0),
        "myo_thickness_mm": float(heart.wall0),
        "rv_only_first_slice": bool(heart.first),
        "apex_cap": bool(p["apex_cap"]),
    }
    img = Volume(image, modality="MR", units="a.u.", metadata={"phantom": "cardiac", **meta}, **kw)
    seg = Volume(labels, modality="SEG", units="label", metadata={"segments": cardiac_segments()}, **kw)
    return CardiacCase(image=img, labels=seg, phase=phase, meta=meta)


def _resolve_phase(seed: int, phase: Optional[str]) -> str:
    """``"ED"`` or ``"ES"``: the one asked for, or one drawn from ``seed`` (its own stream)."""
    if phase is None:
        phase = PHASES[int(np.random.default_rng([int(seed), 2]).integers(2))]
    phase = str(phase).upper()
    if phase not in PHASES:
        raise ValueError(f"phase must be 'ED' or 'ES', got {phase!r}")
    return phase


@dataclass(frozen=True)
class _Heart:
    """The in-plane geometry of one patient's ventricles at one phase (all mm, arrays ``(y, x)``)."""

    p: Dict[str, Any]  # the patient (:func:`_patient`)
    es: bool  # end-systole
    nz: int  # slices
    first: int  # 1 when the first slice lies above the base (RV only), else 0
    center_yx: Tuple[float, float]  # heart centre in voxels
    xx: np.ndarray  # x of each pixel relative to the heart centre
    yy: np.ndarray
    u: np.ndarray  # pixel coordinates along / across the LV's long in-plane axis
    v: np.ndarray
    r_endo0: float  # basal endocardial radius at this phase
    wall0: float  # basal wall thickness at this phase
    r_epi_ed: float  # basal epicardial radius at ED (the RV hugs it at every phase)

    @property
    def ventricular(self) -> int:
        """Slices from the base to the apex."""
        return self.nz - self.first


def _heart(p: Dict[str, Any], es: bool, nz: int, size_yx: Tuple[int, int], spacing_xy: Tuple[float, float]) -> _Heart:
    """Pixel coordinates around the heart centre and the basal radii of one phase."""
    ny, nx = size_yx
    sx, sy = spacing_xy
    cy = p["center_frac"][0] * ny
    cx = p["center_frac"][1] * nx
    yy, xx = np.meshgrid((np.arange(ny) - cy) * sy, (np.arange(nx) - cx) * sx, indexing="ij")
    r_endo0 = p["lv_radius_ed"] * (p["es_factor"] if es else 1.0)
    # mass is roughly conserved: a smaller cavity comes with a thicker wall
    wall0 = p["myo_ed"] * (1.0 + (0.45 if es else 0.0))
    r_epi_ed = p["lv_radius_ed"] + p["myo_ed"]
    # slice position from base (t=0) to apex (t=1); an optional RV-only slice sits above the base
    first = 1 if p["base_rv_only"] and nz >= 9 else 0
    ca, sa = np.cos(p["lv_angle"]), np.sin(p["lv_angle"])
    u = ca * xx + sa * yy
    v = -sa * xx + ca * yy
    return _Heart(p, es, nz, first, (float(cy), float(cx)), xx, yy, u, v, r_endo0, wall0, r_epi_ed)


def _slice_labels(h: _Heart, k: int, rng: np.random.Generator) -> np.ndarray:
    """Labels ``(y, x)`` uint8 of slice ``k``: LV disc in a MYO ring, RV crescent beside the septum.

    Draws the slice's misregistration jitter (breath-hold) from ``rng``.
    """
    p = h.p
    t = (k - h.first) / max(h.ventricular - 1, 1)
    # half-ellipsoid long axis: radius shrinks towards the apex
    shrink = np.sqrt(max(1.0 - (0.92 * t) ** 2, 0.0))
    r_endo = h.r_endo0 * shrink
    r_epi = (h.r_endo0 + h.wall0) * shrink
    if h.es:  # the ES apex has a smaller cavity relative to the wall
        r_endo *= 1.0 - 0.25 * t
    epi_r_ed = h.r_epi_ed * shrink
    jitter = rng.normal(0, 0.6, 2)  # slice misregistration (breath-hold), mm
    uu = h.u - jitter[0]
    vv = h.v - jitter[1]
    rho = np.sqrt(uu ** 2 + (vv / p["lv_ellipticity"]) ** 2)
    if k < h.first:  # above the base: RV outflow only
        lv = np.zeros_like(rho, bool)
        epi = np.zeros_like(rho, bool)
    else:
        epi = rho <= r_epi
        lv = rho <= r_endo
        if k == h.nz - 1 and p["apex_cap"]:
            lv[:] = False  # apical cap: myocardium only
    rv = _rv_crescent(h, k, epi, epi_r_ed, jitter)
    out = np.zeros(rho.shape, np.uint8)
    out[rv] = RV
    out[epi & ~lv] = MYO
    out[lv] = LV
    return out


def _rv_crescent(h: _Heart, k: int, epi: np.ndarray, epi_r_ed: float, jitter: np.ndarray) -> np.ndarray:
    """The RV of slice ``k`` (bool ``(y, x)``): an ellipse centred beside the septum, minus the
    (ED-sized) epicardium, so it hugs the septum at every phase; ES squeezes it too. Empty
    below the RV's extent; only the largest connected part is kept."""
    p = h.p
    rv_on = k < h.first + max(1, int(round(p["rv_extent"] * h.ventricular)))
    rv = np.zeros_like(epi)
    if not rv_on:
        return rv
    ru, rv_ = np.cos(p["rv_angle"]), np.sin(p["rv_angle"])
    rv_scale = epi_r_ed * (0.75 if h.es else 1.0) if k >= h.first else h.r_epi_ed * 0.9
    off = epi_r_ed * 0.55 if k >= h.first else 0.0
    px = h.xx - jitter[0] - off * ru
    py = h.yy - jitter[1] - off * rv_
    a = px * ru + py * rv_
    b = -px * rv_ + py * ru
    rv = (a / (p["rv_length"] * rv_scale)) ** 2 + (b / (p["rv_width"] * rv_scale * 1.35)) ** 2 <= 1.0
    rv &= a > -0.2 * rv_scale  # keep the septal side, not a full ring around the LV
    rv &= ~epi
    lab, n = ndimage.label(rv)
    if n > 1:
        sizes = ndimage.sum(rv, lab, range(1, n + 1))
        rv = lab == (1 + int(np.argmax(sizes)))
    return rv


def _stack_geometry(shape_zyx: Tuple[int, int, int], spacing_xyz: Tuple[float, float, float],
                    direction: Optional[np.ndarray], origin: Optional[Sequence[float]]) -> Dict[str, Any]:
    """``Volume`` keyword arguments (spacing, origin, direction) of the stack; the default
    origin centres it on LPS (0, 0, 0)."""
    nz, ny, nx = shape_zyx
    sx, sy, sz = spacing_xyz
    if direction is None:
        direction = np.eye(3)
    direction = np.asarray(direction, float).reshape(3, 3)
    if origin is None:
        half = np.array([(nx - 1) * sx, (ny - 1) * sy, (nz - 1) * sz]) / 2
        origin = tuple(-(direction @ half))
    return dict(spacing=(sx, sy, sz), origin=tuple(float(o) for o in origin), direction=direction)


def _render(
    labels: np.ndarray,
    p: Dict[str, Any],
    rng: np.random.Generator,
    spacing_zyx: Tuple[float, float, float],
    noise: float,
    bias: float,
) -> np.ndarray:
    """Bright-blood MR intensities for a label stack (float32, scanner-like units)."""
    nz, ny, nx = labels.shape
    _, sy, sx = spacing_zyx
    it = p["intensity"]
    yy, xx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    cy, cx = p["center_frac"]
    # body ellipse around the heart, lungs either side, a few organ-like blobs
    body = ((yy - (2 * cy - 1) * 0.3) / 0.88) ** 2 + (xx / 0.95) ** 2 <= 1.0
    fat = body & ~(((yy - (2 * cy - 1) * 0.3) / 0.80) ** 2 + (xx / 0.87) ** 2 <= 1.0)
    hx, hy = 2 * cx - 1, 2 * cy - 1
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lungs |= ((yy - hy + 0.05) / 0.45) ** 2 + ((xx - hx - side * 0.45) / 0.28) ** 2 <= 1.0
    lungs &= body & ~fat
    base = np.where(body, it["body"], 0.02).astype(np.float32)
    base[fat] = it["fat"]
    base[lungs] = it["lung"]
    blobs = np.zeros((ny, nx), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        by, bx = rng.uniform(-0.8, 0.8, 2)
        r = rng.uniform(0.06, 0.18)
        blob = ((yy - by) / r) ** 2 + ((xx - bx) / (r * rng.uniform(0.6, 1.4))) ** 2 <= 1.0
        blobs[blob & body & ~lungs] = rng.uniform(-0.15, 0.35)
    base = base + blobs
    image = np.repeat(base[None], nz, axis=0)
    heart_zone = ndimage.binary_dilation(labels > 0, iterations=3, structure=np.ones((1, 3, 3), bool))
    image[heart_zone] = it["body"] * 0.9  # pericardial tissue around the heart
    image[labels == MYO] = it["myo"]
    image[(labels == LV) | (labels == RV)] = it["blood"]
    # trabeculae / papillary muscles: a few dark dots inside the blood pools
    dots = (rng.random(labels.shape) < 0.004) & (labels == LV)
    image[ndimage.binary_dilation(dots, iterations=1, structure=np.ones((1, 3, 3), bool))] = it["myo"] * 1.3
    # in-plane partial volume, a smooth bias field, Rician-like noise
    image = ndimage.gaussian_filter(image, (0, 0.8, 0.8))
    zz = np.linspace(-1, 1, nz)[:, None, None]
    c = rng.normal(0, 1, 4)
    field_ = 1.0 + bias * np.tanh(c[0] * yy[None] * 0.7 + c[1] * xx[None] * 0.7 + c[2] * zz * 0.3 + c[3] * yy[None] * xx[None] * 0.5)
    image = image * field_
    n = noise * it["blood"]
    image = np.abs(image + rng.normal(0, n, image.shape) + 1j * rng.normal(0, n, image.shape))
    return (image * it["scale"]).astype(np.float32)


def cardiac_dataset(n: int, seed: int = 0, **kwargs: Any) -> List[CardiacCase]:
    """``n`` cases: patients ``seed*1000 + i//2``, alternately ED and ES."""
    return [cardiac_case(seed * 1000 + i // 2, PHASES[i % 2], **kwargs) for i in range(n)]


def write_cardiac_dataset(
    out_dir: "str | os.PathLike[str]",
    n: int,
    seed: int = 0,
    progress: Optional[Callable[[float, str], None]] = None,
    **kwargs: Any,
) -> List[Path]:
    """Write ``n`` synthetic patients in the ACDC layout; returns the patient folders.

    ``out_dir/patientNNN/`` holds ``Info.cfg`` (ED, ES, Group, Height, NbFrame, Weight) and
    ``patientNNN_frameXX.nii.gz`` + ``patientNNN_frameXX_gt.nii.gz`` for the ED and ES frames.
    ``progress(fraction, message)`` is called after each patient; ``kwargs`` go to
    :func:`cardiac_case`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for i in range(n):
        pid = seed * 1000 + i
        name = f"patient{i + 1:03d}"
        rng = np.random.default_rng([pid, 9])
        nb_frames = int(rng.integers(20, 36))
        ed = 1
        es = int(rng.integers(8, 15))
        with atomic_output(out / name, directory=True) as tmp:
            info = None
            for phase, frame in (("ED", ed), ("ES", es)):
                case = cardiac_case(pid, phase, **kwargs)
                write_volume(case.image, tmp / f"{name}_frame{frame:02d}.nii.gz")
                write_volume(case.labels, tmp / f"{name}_frame{frame:02d}_gt.nii.gz")
                info = case.meta
            (tmp / "Info.cfg").write_text(
                f"ED: {ed}\nES: {es}\nGroup: {info['group']}\nHeight: {info['height']}\n"
                f"NbFrame: {nb_frames}\nWeight: {info['weight']}\n"
            )
        folders.append(out / name)
        report(progress, (i + 1) / n, f"cardiac phantom {i + 1}/{n}")
    return folders


__all__ = [
    "CARDIAC_LABELS",
    "CardiacCase",
    "N_CLASSES",
    "cardiac_case",
    "cardiac_dataset",
    "cardiac_segments",
    "write_cardiac_dataset",
]
