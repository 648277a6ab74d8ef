"""Brain phantoms on a real anatomical template (MNI ICBM152): held-out cases, and a training stream.

A second brain family, written apart from :mod:`clinicalai.phantoms.brain` (MR) and
:mod:`clinicalai.phantoms.pet` (FDOPA PET), which train the demo models. Those draw heads from
ellipsoids; this one starts from the grey-matter, white-matter and brain-mask templates of the
MNI ICBM152 2009a nonlinear symmetric atlas that nilearn ships inside its wheel
(``nilearn.datasets.load_mni152_gm_template`` etc.; no download), so the anatomy (cortical
folding, ventricles, deep grey matter, cerebellum) is that of a real average brain. No model
is trained on the held-out stream's cases: they tell whether a demo model learned brains or
learned its generator. A trainer may draw template cases from the separate ``"train"`` stream
(the brain-lesion classifier's ``--family mix``).

- **MR** (:func:`mni_brain_case`): T1-like or FLAIR-like contrast computed from the GM / WM /
  CSF probability maps (CSF = brain mask - GM - WM), skull-stripped or with a skull and scalp
  shell; 1-3 lesions with irregular shapes (thresholded smoothed noise inside a ball), mostly in
  white matter; a random affine deformation of the template; a multiplicative polynomial bias
  field; Rician noise; 1-2 mm in-plane and 1-7 mm slices, oblique directions allowed; healthy
  cases have no lesion.
- **PET** (:func:`mni_pet_case`): 18F-FDOPA in Bq/mL with the same DICOM SUV tags as the
  training PET phantoms (:func:`clinicalai.phantoms.pet.pet_tags`), so
  :func:`clinicalai.pet.suv.to_suv` converts them. Striatal uptake from a geometric caudate /
  putamen model in MNI coordinates weighted by the template's grey matter (no atlas ships),
  low cortex / white-matter contrast, a skull and scalp, a resection cavity, a Gaussian PSF of
  4-6 mm FWHM, Poisson-like noise; recurrence = a hot lesion of varied size and contrast;
  not recurrence = normal, diffuse mild uptake (treatment-related change) and / or
  asymmetric striata.

Geometry is exact: image, lesion, brain mask (and tissue labels) share one grid; each output
voxel is the mean of ``f x f x f`` sub-voxels sampled through the deformation (partial volume
across thick slices), masks are the sub-voxel majority.

Returns the same case types as the training families (:class:`~clinicalai.phantoms.brain.BrainCase`,
:class:`~clinicalai.phantoms.pet.PetCase`), so every evaluation takes either family.
Deterministic per seed, in its own seed space (``numpy.random.default_rng([MNI_SEED_TAG, stream, seed])``:
no integer seed of the training families gives the same stream). Two streams per modality
(:data:`STREAMS`): ``"heldout"`` (the default; the evaluations and README tables) and
``"train"`` (the only one a trainer may draw from, :func:`case_rng`): their stream numbers
differ, so no seed of one gives a case of the other. The 1 mm templates are
block-averaged to 2 mm once per process and cached.

**Licence of the templates.** nilearn (BSD-3-Clause) redistributes the MNI ICBM152 2009a
templates; its dataset description lists their licence as "unknown". The licence the
McConnell Brain Imaging Centre publishes with the ICBM 2009 atlases is permissive:

    Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal
    Neurological Institute, McGill University. Permission to use, copy, modify, and
    distribute this software and its documentation for any purpose and without fee is hereby
    granted, provided that the above copyright notice appear in all copies. The authors and
    McGill University make no representations about the suitability of this software for any
    purpose. It is provided "as is" without express or implied warranty. The authors are not
    responsible for any data loss, equipment damage, property loss, or injury to subjects or
    patients resulting from the use or misuse of this software package.

Nothing of the templates is copied into this repository; they are read from the installed
nilearn at run time. References: Fonov et al., NeuroImage 47 (2009) S102; Fonov et al.,
NeuroImage 54 (2011) 313-327; Collins et al., NeuroImage 10 (1999).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..volume import Volume
from .brain import BACKGROUND, CSF, GREY, SKULL, WHITE, BrainCase, lesion_metadata
from .common import segment_metadata
from .pet import BRAIN_COLOR, LABELS, LESION_COLOR, PetCase, PetDose, bqml_image, decayed_dose, pet_tags

#: first entry of every seed sequence of this family ("MNI" in ASCII)
MNI_SEED_TAG = 0x4D4E49
#: stream numbers of the seed sequences, per (modality, use): the held-out evaluation's numbers
#: are those of the first release (its cases stay as they were); training draws only from "train"
STREAMS = {("MR", "heldout"): 1, ("PET", "heldout"): 2, ("MR", "train"): 3, ("PET", "train"): 4}
STREAM_NAMES = ("heldout", "train")
#: the cached template resolution (mm): 1 mm blocks of 2x2x2 averaged
TEMPLATE_SPACING_MM = 2.0
#: zero margin (voxels at 2 mm) added around the template so a scalp fits below the cerebellum
_PAD = 8
#: LPS position (mm) the phantom grids are centred on: the middle of the MNI head
HEAD_CENTRE_LPS = np.array([0.0, 18.0, 12.0])
#: field of view (mm, x y z in the grid's own frame)
MR_FOV_MM = (190.0, 230.0, 190.0)
PET_FOV_MM = (220.0, 250.0, 210.0)
CONTRASTS = ("T1", "FLAIR")
#: the template, as the cases' metadata names it
TEMPLATE_NAME = "MNI ICBM152 2009a (nilearn)"
PET_KINDS = ("recurrence", "normal", "trc", "asymmetric")
MNI_LICENSE = (
    "MNI ICBM152 2009a templates, as shipped by nilearn: Copyright (C) 1993-2009 Louis Collins, "
    "McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University; permission "
    "to use, copy, modify and distribute for any purpose without fee, with this notice; provided as is."
)


# ---------------------------------------------------------------------------- the template
@dataclass(frozen=True)
class Template:
    """The MNI152 maps on one 2 mm LPS grid (arrays ``(z, y, x)``, float32 in [0, 1])."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray  # soft brain mask (block mean of the 1 mm mask)
    outside_mm: np.ndarray  # distance (mm) from the brain, 0 inside
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: np.ndarray

    def volume(self, array: np.ndarray) -> Volume:
        """``array`` on the template grid."""
        return Volume(array.astype(np.float32), spacing=self.spacing, origin=self.origin, direction=self.direction)

    def lps(self, index_zyx: np.ndarray) -> np.ndarray:
        """LPS mm of voxel indices ``(..., 3)`` given as ``(z, y, x)``."""
        ijk = np.asarray(index_zyx, float)[..., ::-1] * np.asarray(self.spacing)
        return ijk @ self.direction.T + np.asarray(self.origin)


def _block_mean(a: np.ndarray, f: Sequence[int]) -> np.ndarray:
    """Mean over ``f``-blocks of ``a`` ``(z, y, x)``, after zero-padding each axis to a multiple of ``f``."""
    pad = [(0, (-s) % k) for s, k in zip(a.shape, f)]
    a = np.pad(a, pad)
    z, y, x = (s // k for s, k in zip(a.shape, f))
    return a.reshape(z, f[0], y, f[1], x, f[2]).mean(axis=(1, 3, 5))


@functools.lru_cache(maxsize=2)
def load_template(spacing_mm: float = TEMPLATE_SPACING_MM) -> Template:
    """The nilearn MNI152 GM / WM / brain-mask templates, block-averaged to ``spacing_mm``
    (an integer number of mm) and converted to LPS; cached per process.

    Raises:
        ImportError: nilearn is not installed (``pip install nilearn``).
    """
    from nilearn import datasets

    f = int(round(spacing_mm))
    gm_img = datasets.load_mni152_gm_template(resolution=1)
    affine = np.asarray(gm_img.affine, float)
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0) or not np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3])):
        raise ValueError("unexpected MNI template affine (expected 1 mm, axis-aligned)")

    def zyx(img) -> np.ndarray:  # nibabel (i, j, k) -> (k, j, i), float32
        return np.asarray(img.get_fdata(dtype=np.float32)).transpose(2, 1, 0)

    maps = {
        "gm": zyx(gm_img),
        "wm": zyx(datasets.load_mni152_wm_template(resolution=1)),
        "brain": zyx(datasets.load_mni152_brain_mask(resolution=1)),
    }
    # block means keep partial volume; the 2 mm grid's first voxel is the centre of the first block
    maps = {k: np.pad(_block_mean(v, (f, f, f)), _PAD) for k, v in maps.items()}
    gm, wm = np.clip(maps["gm"], 0, 1), np.clip(maps["wm"], 0, 1)
    brain = np.clip(np.maximum(maps["brain"], gm + wm), 0, 1)
    csf = np.clip(brain - gm - wm, 0, 1)
    # RAS (nilearn affine) -> LPS: flip the signs of the first two rows
    flip = np.diag([-1.0, -1.0, 1.0])
    direction = flip @ (affine[:3, :3] / np.abs(np.diag(affine)[:3]))
    first_centre = np.full(3, (f - 1) / 2.0) - _PAD * f  # in 1 mm index units (i, j, k)
    origin = flip @ (affine[:3, :3] @ first_centre + affine[:3, 3])
    outside = ndimage.distance_transform_edt(brain < 0.5) * float(f)
    return Template(gm=gm, wm=wm, csf=csf, brain=brain, outside_mm=outside.astype(np.float32),
                    spacing=(float(f),) * 3, origin=tuple(float(v) for v in origin), direction=direction)


# ---------------------------------------------------------------------------- geometry
def random_oblique(rng: np.random.Generator, max_deg: float = 25.0) -> np.ndarray:
    """A proper rotation (3x3, columns = LPS directions of i, j, k) within ``max_deg`` of axial."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", rng.uniform(-max_deg, max_deg, 3), degrees=True).as_matrix()


def _random_deformation(rng: np.random.Generator, rot_deg: float = 10.0, scale: Tuple[float, float] = (0.9, 1.1),
                        shear: float = 0.06, shift_mm: float = 6.0):
    """A SimpleITK affine transform (subject -> template points) about the head centre."""
    import SimpleITK as sitk
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", rng.uniform(-rot_deg, rot_deg, 3), degrees=True).as_matrix()
    sh = np.eye(3) + np.triu(rng.uniform(-shear, shear, (3, 3)), 1)
    matrix = rot @ sh @ np.diag(rng.uniform(*scale, 3))
    t = sitk.AffineTransform(3)
    t.SetMatrix(tuple(float(v) for v in matrix.ravel()))
    t.SetCenter(tuple(float(v) for v in HEAD_CENTRE_LPS))
    t.SetTranslation(tuple(float(v) for v in rng.normal(0, shift_mm / 2, 3)))
    return t


def _output_grid(spacing: Sequence[float], direction: np.ndarray, fov_mm: Sequence[float],
                 centre: np.ndarray) -> Volume:
    """An empty volume of ``spacing`` (mm x y z) and ``direction`` covering ``fov_mm`` around ``centre`` (LPS)."""
    sp = np.asarray(spacing, float)
    n = np.maximum(np.ceil(np.asarray(fov_mm, float) / sp).astype(int), 2)  # voxels (x, y, z)
    origin = centre - direction @ ((n - 1) * sp / 2.0)
    return Volume(np.zeros(tuple(n[::-1]), np.float32), spacing=tuple(sp), origin=tuple(origin), direction=direction)


def _supersampling(spacing: Sequence[float], template_mm: float) -> Tuple[int, int, int]:
    """Sub-voxels per axis (x, y, z) so that each sub-voxel is at most the template's size."""
    return tuple(max(1, int(np.ceil(s / template_mm - 1e-6))) for s in spacing)  # type: ignore[return-value]


def _render(fields: Dict[str, np.ndarray], tpl: Template, grid: Volume, transform,
            sigma_mm: float = 0.0) -> Dict[str, np.ndarray]:
    """Each template-space field sampled through ``transform`` onto ``grid`` (partial volume:
    mean of ``f`` sub-voxels per axis); with ``sigma_mm`` a Gaussian blur (a PET's PSF) is applied
    on the sub-voxel grid first. Returns ``(z, y, x)`` float32 arrays on ``grid``."""
    import SimpleITK as sitk

    f = _supersampling(grid.spacing, tpl.spacing[0])
    sub_sp = np.asarray(grid.spacing) / np.asarray(f)
    # the first sub-voxel centre of voxel 0 lies half a voxel minus half a sub-voxel before its centre
    sub_origin = np.asarray(grid.origin) - grid.direction @ ((np.asarray(f) - 1) * sub_sp / 2.0)
    size = [int(n * k) for n, k in zip(grid.shape[::-1], f)]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(tuple(float(v) for v in sub_sp))
    ref.SetOrigin(tuple(float(v) for v in sub_origin))
    ref.SetDirection(tuple(float(v) for v in grid.direction.ravel()))
    out = {}
    for name, arr in fields.items():
        src = tpl.volume(arr).to_sitk()
        fine = sitk.GetArrayFromImage(sitk.Resample(src, ref, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        if sigma_mm > 0:
            fine = ndimage.gaussian_filter(fine, sigma_mm / sub_sp[::-1], mode="constant")
        out[name] = _block_mean(fine, f[::-1]).astype(np.float32)
    return out


# ---------------------------------------------------------------------------- lesions
def _blob(tpl: Template, centre_zyx: np.ndarray, radius_mm: float, rng: np.random.Generator,
          irregularity: float = 0.6) -> np.ndarray:
    """A soft (0-1) lesion on the template grid: a ball of ``radius_mm`` whose border is pushed in
    and out by smoothed noise (thresholded), the connected part holding the centre."""
    sp = tpl.spacing[0]
    half = int(np.ceil(1.8 * radius_mm / sp)) + 2
    lo = np.maximum(np.asarray(centre_zyx, int) - half, 0)
    hi = np.minimum(np.asarray(centre_zyx, int) + half + 1, tpl.gm.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    shape = tuple(int(b - a) for a, b in zip(lo, hi))
    zz, yy, xx = np.meshgrid(*[(np.arange(a, b) - c) * sp for a, b, c in zip(lo, hi, centre_zyx)], indexing="ij")
    r2 = (zz ** 2 + yy ** 2 + xx ** 2) / radius_mm ** 2
    noise = ndimage.gaussian_filter(rng.normal(size=shape), max(radius_mm / (2.5 * sp), 0.7))
    noise /= noise.std() + 1e-9
    field = (1.0 - r2) + irregularity * 0.5 * noise
    solid = field > 0
    labels, _ = ndimage.label(solid)
    c = tuple(int(np.clip(ci - a, 0, s - 1)) for ci, a, s in zip(centre_zyx, lo, shape))
    if labels[c] > 0:
        solid = labels == labels[c]
    out = np.zeros(tpl.gm.shape, np.float32)
    out[box] = ndimage.gaussian_filter(solid.astype(np.float32), 0.5)  # a soft edge of ~1 mm
    return out


def _pick(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """One random voxel index ``(z, y, x)`` of ``mask``."""
    idx = np.flatnonzero(mask)
    return np.array(np.unravel_index(int(idx[rng.integers(len(idx))]), mask.shape))


def _lesion_sites(tpl: Template) -> Dict[str, np.ndarray]:
    """Where lesion centres may lie: deep white matter, or any parenchyma (GM or WM)."""
    parenchyma = (tpl.gm + tpl.wm) > 0.6
    return {"white": (tpl.wm > 0.75) & ndimage.binary_erosion(parenchyma, iterations=2), "any": parenchyma}


# ---------------------------------------------------------------------------- MR
def case_rng(modality: str, stream: str, seed: int) -> np.random.Generator:
    """The random stream of one case: ``default_rng([MNI_SEED_TAG, STREAMS[modality, stream], seed])``.

    Raises:
        ValueError: unknown ``stream`` (``"heldout"`` or ``"train"``) or negative ``seed``.
    """
    if stream not in STREAM_NAMES:
        raise ValueError(f"stream must be one of {STREAM_NAMES}, got {stream!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([MNI_SEED_TAG, STREAMS[modality, stream], int(seed)])


def _bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """exp(second-order polynomial) over the grid, coefficients ~ N(0, strength)."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    terms = [x, y, z, x * y, y * z, x * z, x * x - 0.33, y * y - 0.33, z * z - 0.33]
    c = rng.normal(0, strength, len(terms))
    return np.exp(sum(ci * t for ci, t in zip(c, terms))).astype(np.float32)


def mni_brain_case(
    seed: int,
    pathological: Optional[bool] = None,
    contrast: Optional[str] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[np.ndarray] = None,
    n_lesions: Optional[int] = None,
    lesion_radius_mm: Tuple[float, float] = (4.0, 14.0),
    skull: Optional[bool] = None,
    fov_mm: Sequence[float] = MR_FOV_MM,
    stream: str = "heldout",
    healthy_twin: bool = False,
) -> BrainCase:
    """One brain MR phantom on the MNI template (module docstring).

    Args:
        seed: any integer, in this family's own seed space.
        pathological: with 1-3 lesions (``None``: 50 % from the seed); healthy cases have none.
        contrast: ``"T1"`` (lesions dark) or ``"FLAIR"`` (lesions bright, CSF dark); ``None``: from the seed.
        spacing: voxel size in mm ``(x, y, z)``; ``None``: 1-2 mm in-plane, 1-7 mm slices.
        direction: 3x3 direction (columns i, j, k in LPS); ``None``: oblique (up to 25 deg) for half the seeds.
        n_lesions: lesions of a pathological case (default 1-3).
        lesion_radius_mm: range of lesion radii (mm) before the shape noise.
        skull: add a skull and scalp shell (``None``: 50 %); else the brain is skull-stripped.
        fov_mm: field of view (mm) in the grid's frame, centred on the head.
        stream: ``"heldout"`` (evaluation) or ``"train"`` (trainers; :func:`case_rng`).
        healthy_twin: the pathological case of this seed with its lesions drawn but not painted:
            the same deformation, grid, bias and noise, voxel for voxel, and no lesion (a
            counterfactual negative for training: it differs from its lesioned twin only where
            the lesions are).

    Returns:
        :class:`~clinicalai.phantoms.brain.BrainCase`: image (MR, a.u.), lesion, tissues
        (labels of :mod:`clinicalai.phantoms.brain`), brain_mask, all on one grid;
        ``image.metadata["phantom"]`` says what was drawn.

    Steps (one random stream, in this order): acquisition choices -> template-space tissue
    image with skull (:func:`_mr_tissue`) -> lesions (:func:`_mr_lesions`) -> sampling onto the
    scanner grid (:func:`_render`, :func:`_tissue_labels`) -> bias and Rician noise -> volumes.
    """
    rng = case_rng("MR", stream, seed)
    tpl = load_template()
    if pathological is None:
        pathological = bool(rng.random() < 0.5)
    if healthy_twin and not pathological:
        raise ValueError("a healthy twin is drawn from a pathological case: pathological must not be False")
    contrast = contrast or CONTRASTS[int(rng.integers(2))]
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if spacing is None:
        inplane = float(rng.uniform(1.0, 2.0))
        spacing = (inplane, inplane, float(rng.uniform(1.0, 7.0)))
    if direction is None:
        direction = random_oblique(rng) if rng.random() < 0.5 else np.eye(3)
    if skull is None:
        skull = bool(rng.random() < 0.5)
    transform = _random_deformation(rng)
    mu = _mr_intensities(contrast, rng)
    tissue, head, shell = _mr_tissue(tpl, mu, bool(skull), rng)
    lesion = np.zeros(tpl.gm.shape, np.float32)
    drawn: List[Dict[str, Any]] = []
    if pathological:
        lesion, drawn = _mr_lesions(tpl, n_lesions, lesion_radius_mm, rng)
        texture = ndimage.gaussian_filter(rng.normal(size=tpl.gm.shape).astype(np.float32), 1.5)
        texture = 1.0 + 0.12 * texture / (texture.std() + 1e-9)  # lesions are not uniform inside
        if healthy_twin:  # the random stream moved on as for the lesioned case; nothing is painted
            lesion = np.zeros_like(lesion)
        else:
            tissue = (1 - lesion) * tissue + lesion * mu["lesion"] * texture

    grid = _output_grid(spacing, np.asarray(direction, float), fov_mm, HEAD_CENTRE_LPS + rng.normal(0, 3, 3))
    out = _render({"image": tissue, "lesion": lesion, "brain": tpl.brain}, tpl, grid, transform)
    tissues = _tissue_labels(tpl, head, shell, grid, transform)
    brain = out["brain"] >= 0.5
    pathological = pathological and not healthy_twin
    lesion_mask = _lesion_mask(out["lesion"], brain) if pathological else np.zeros(grid.shape, bool)

    img = out["image"] * _bias_field(grid.shape, rng, float(rng.uniform(0.05, 0.2)))
    sigma = float(rng.uniform(0.015, 0.05)) * mu["wm"]
    img = np.sqrt((img + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2)  # Rician
    scale = float(rng.uniform(100.0, 2000.0))
    info = {"family": "mni", "seed": int(seed), "stream": stream, "contrast": contrast, "skull": bool(skull),
            "spacing": [float(v) for v in grid.spacing], "oblique": bool(not np.allclose(grid.direction, np.eye(3))),
            "lesions": [] if healthy_twin else drawn, "healthy_twin": bool(healthy_twin), "noise_sigma_rel_wm": sigma / mu["wm"], "template": TEMPLATE_NAME}
    return BrainCase(
        image=grid.with_array((img * scale).astype(np.float32), modality="MR", units="a.u.", metadata={"phantom": info}),
        lesion=grid.with_array(lesion_mask.astype(np.uint8), modality="SEG", units="label", metadata=lesion_metadata()),
        tissues=grid.with_array(tissues, modality="SEG", units="label"),
        brain_mask=grid.with_array(brain.astype(np.uint8), modality="SEG", units="label"),
        pathological=bool(pathological),
    )


def _mr_intensities(contrast: str, rng: np.random.Generator) -> Dict[str, float]:
    """Tissue intensities relative to white matter for ``contrast``; per case a little different."""
    if contrast == "T1":
        return {"wm": 1.0, "gm": rng.uniform(0.55, 0.7), "csf": rng.uniform(0.1, 0.25), "lesion": rng.uniform(0.3, 0.5),
                "skull": 0.05, "scalp": rng.uniform(0.7, 1.0)}
    return {"wm": 0.6, "gm": rng.uniform(0.7, 0.85), "csf": rng.uniform(0.03, 0.12), "lesion": rng.uniform(1.1, 1.5),
            "skull": 0.05, "scalp": rng.uniform(0.4, 0.7)}


def _mr_tissue(tpl: Template, mu: Dict[str, float], skull: bool,
               rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tissue image, soft head mask, skull-and-scalp shell)`` on the template grid: the GM /
    WM / CSF maps weighted by ``mu``, with a skull and scalp band outside the brain when ``skull``."""
    tissue = mu["wm"] * tpl.wm + mu["gm"] * tpl.gm + mu["csf"] * tpl.csf
    d = tpl.outside_mm
    skull_band = ((d > 1.5) & (d <= rng.uniform(6, 9))) if skull else np.zeros_like(d, bool)
    scalp_band = ((d > 1.5) & (d <= rng.uniform(11, 15)) & ~skull_band) if skull else np.zeros_like(d, bool)
    shell = skull_band | scalp_band
    head = np.maximum(tpl.brain, shell.astype(np.float32))
    tissue = tissue + mu["skull"] * skull_band + mu["scalp"] * scalp_band
    return tissue, head, shell


def _mr_lesions(tpl: Template, n_lesions: Optional[int], radius_mm: Tuple[float, float],
                rng: np.random.Generator) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Soft (0-1) irregular lesions on the template grid, mostly in white matter (as in MS /
    gliomas), and what was drawn (centre LPS, radius, site) for the case's metadata."""
    lesion = np.zeros(tpl.gm.shape, np.float32)
    drawn = []
    sites = _lesion_sites(tpl)
    parenchyma = (tpl.gm + tpl.wm) > 0.3
    for _ in range(int(n_lesions) if n_lesions is not None else int(rng.integers(1, 4))):
        where = "white" if rng.random() < 0.85 else "any"  # mostly white matter, as in MS / gliomas
        c = _pick(rng, sites[where])
        r = float(rng.uniform(*radius_mm))
        lesion = np.maximum(lesion, _blob(tpl, c, r, rng) * parenchyma)
        drawn.append({"centre_lps": [round(float(v), 1) for v in tpl.lps(c)], "radius_mm": round(r, 1), "site": where})
    return lesion, drawn


def _tissue_labels(tpl: Template, head: np.ndarray, shell: np.ndarray, grid: Volume, transform) -> np.ndarray:
    """uint8 tissue labels on ``grid``: the most probable template class (background, CSF, GM,
    WM, skull) at the nearest template voxel of each output voxel centre (no averaging of labels)."""
    import SimpleITK as sitk

    classes = np.stack([1 - head, tpl.csf, tpl.gm, tpl.wm, shell.astype(np.float32)])
    labels_tpl = np.array([BACKGROUND, CSF, GREY, WHITE, SKULL], np.float32)[classes.argmax(0)]
    lab = sitk.Resample(tpl.volume(labels_tpl).to_sitk(), grid.to_sitk(), transform, sitk.sitkNearestNeighbor, 0.0,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(lab).astype(np.uint8)


def _lesion_mask(lesion_fraction: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The sub-voxel majority of the lesion inside the brain; a small lesion seen through thick
    slices keeps at least its core (threshold half its peak fraction)."""
    les_frac = lesion_fraction * brain
    les_thr = min(0.5, 0.5 * float(les_frac.max())) if les_frac.max() > 0 else 1.0
    return (les_frac >= les_thr) & brain


# ---------------------------------------------------------------------------- PET
#: caudate head, caudate body and putamen of the right hemisphere: centre (RAS mm, MNI) and radii
#: (mm), from the usual MNI coordinates of these nuclei; the left ones mirror x
_STRIATUM_RAS = (
    ((12.0, 12.0, 9.0), (5.0, 9.0, 8.0)),
    ((15.0, -6.0, 19.0), (4.0, 11.0, 5.0)),
    ((25.0, 3.0, 1.0), (6.0, 15.0, 9.0)),
)


def _striatum(tpl: Template, side: int) -> np.ndarray:
    """Soft striatum of one side (``+1`` right, ``-1`` left), 0-1 on the template grid: the
    ellipsoids of :data:`_STRIATUM_RAS` where the template has deep grey matter."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in tpl.gm.shape], indexing="ij")
    lps = tpl.lps(np.stack([zz, yy, xx], -1))
    out = np.zeros(tpl.gm.shape, np.float32)
    for (cx, cy, cz), radii in _STRIATUM_RAS:
        centre_lps = np.array([-side * cx, -cy, cz])  # RAS -> LPS; right is x < 0 in LPS
        r = np.sqrt((((lps - centre_lps) / np.asarray(radii)) ** 2).sum(-1))
        out = np.maximum(out, np.clip(1.5 - r, 0, 1))  # flat core, 0.5 at the ellipsoid surface
    return out * np.clip(tpl.gm / 0.6, 0, 1)


@functools.lru_cache(maxsize=1)
def _striata() -> Tuple[np.ndarray, np.ndarray]:
    tpl = load_template()
    return _striatum(tpl, +1), _striatum(tpl, -1)


def mni_pet_case(
    seed: int,
    recurrence: Optional[bool] = None,
    kind: Optional[str] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[np.ndarray] = None,
    fwhm_mm: Optional[float] = None,
    fov_mm: Sequence[float] = PET_FOV_MM,
    stream: str = "heldout",
) -> PetCase:
    """One FDOPA PET phantom on the MNI template, in Bq/mL with SUV tags (module docstring).

    Args:
        seed: any integer, in this family's own seed space.
        recurrence: label (``None``: 50 % from the seed).
        kind: for a non-recurrence case ``"normal"``, ``"trc"`` (diffuse mild uptake) or
            ``"asymmetric"`` (one striatum 15-45 % lower); ``None``: from the seed.
        spacing: voxel size in mm ``(x, y, z)``; ``None``: 2-4 mm.
        direction: 3x3 direction (columns i, j, k in LPS); ``None``: oblique for half the seeds.
        fwhm_mm: PSF full width at half maximum; ``None``: 4-6 mm.
        stream: ``"heldout"`` (evaluation) or ``"train"`` (trainers; :func:`case_rng`).

    Returns:
        :class:`~clinicalai.phantoms.pet.PetCase`: image (Bq/mL, ``metadata["pet"]`` tags), suv,
        brain_mask, lesion (the recurrence, or the diffuse uptake region of a ``trc`` case; empty
        for ``normal`` and ``asymmetric``), label, ``scanner = "MNI"``, tbr_true; ``info["kind"]``.

    Steps (one random stream, in this order): label, kind and acquisition -> healthy uptake
    with striata, skull and scalp (:func:`_pet_healthy_suv`) -> treated site
    (:func:`_pet_treated_site`) -> PSF and sampling onto the scanner grid (:func:`_render`) ->
    noise -> dose and timing (:func:`_draw_pet_dose`), Bq/mL -> volumes.
    """
    rng = case_rng("PET", stream, seed)
    tpl = load_template()
    if recurrence is None:
        recurrence = bool(rng.random() < 0.5)
    if recurrence and kind is None:
        kind = "recurrence"
    elif kind is None:
        kind = ("normal", "trc", "trc", "asymmetric", "asymmetric")[int(rng.integers(5))]
    if kind not in PET_KINDS or (kind == "recurrence") != bool(recurrence):
        raise ValueError(f"kind {kind!r} does not fit recurrence={recurrence}")
    if spacing is None:
        inplane = float(rng.uniform(2.0, 4.0))
        spacing = (inplane, inplane, float(rng.uniform(2.0, 4.0)))
    if direction is None:
        direction = random_oblique(rng, 15.0) if rng.random() < 0.5 else np.eye(3)
    fwhm = float(fwhm_mm) if fwhm_mm is not None else float(rng.uniform(4.0, 6.0))
    transform = _random_deformation(rng, rot_deg=8.0)
    healthy = _pet_healthy_suv(tpl, kind, rng)
    suv, region, tbr, r = _pet_treated_site(tpl, healthy, kind, rng)

    grid = _output_grid(spacing, np.asarray(direction, float), fov_mm, HEAD_CENTRE_LPS + rng.normal(0, 4, 3))
    out = _render({"suv": suv, "lesion": region, "brain": tpl.brain}, tpl, grid, transform, sigma_mm=fwhm / 2.3548)
    brain = out["brain"] >= 0.5
    lesion_mask = (out["lesion"] >= 0.5) & brain if kind in ("recurrence", "trc") else np.zeros(grid.shape, bool)
    noise = float(rng.uniform(0.05, 0.12))
    clean = out["suv"]
    base = healthy.base
    suv_img = np.clip(clean + rng.normal(0, 1, clean.shape) * noise * np.sqrt(np.maximum(clean, 0.02) * base), 0, None)

    dose = _draw_pet_dose(rng)
    tags = pet_tags(dose.weight_kg, dose.dose_bq, dose.injection, dose.scan_start,
                    manufacturer="ClinicalAI MNI-template PET phantom")
    info = {"family": "mni", "seed": int(seed), "stream": stream, "kind": kind, "weight_kg": dose.weight_kg,
            "dose_bq": dose.dose_bq,
            "injection": dose.injection.isoformat(), "scan_start": dose.scan_start.isoformat(),
            "healthy_brain_suv": base, "striatum_ratio": healthy.ratio, "striatal_asymmetry": healthy.asymmetry,
            "region_radius_mm": r, "fwhm_mm": fwhm, "noise": noise,
            "spacing": [float(v) for v in grid.spacing], "oblique": bool(not np.allclose(grid.direction, np.eye(3))),
            "template": TEMPLATE_NAME}
    return PetCase(
        image=grid.with_array(bqml_image(suv_img, dose), modality="PT", units="BQML", metadata={"pet": tags}),
        suv=grid.with_array(suv_img.astype(np.float32), modality="PT", units="SUV"),
        brain_mask=grid.with_array(brain.astype(np.uint8), modality="SEG", units="label",
                                   metadata=segment_metadata("brain", BRAIN_COLOR)),
        lesion=grid.with_array(lesion_mask.astype(np.uint8), modality="SEG", units="label",
                               metadata=segment_metadata(LABELS[int(bool(recurrence))], LESION_COLOR)),
        label=int(bool(recurrence)), scanner="MNI", tbr_true=float(tbr), info=info,
    )


@dataclass(frozen=True)
class _HealthyPet:
    """Healthy FDOPA uptake on the template grid: ``suv`` (z, y, x), the soft ``striatum``
    (0-1), the healthy brain SUV ``base``, striatum / brain ``ratio``, and ``asymmetry`` (the
    lower striatum's factor, 1 when symmetric)."""

    suv: np.ndarray
    striatum: np.ndarray
    base: float
    ratio: float
    asymmetry: float


def _pet_healthy_suv(tpl: Template, kind: str, rng: np.random.Generator) -> _HealthyPet:
    """Low cortex / white-matter contrast, hot striata (one lower for ``"asymmetric"`` and a
    quarter of recurrences), skull and scalp uptake."""
    base = float(rng.uniform(0.8, 1.3))  # healthy brain SUV
    suv = base * (rng.uniform(1.0, 1.15) * tpl.gm + rng.uniform(0.8, 0.95) * tpl.wm + 0.3 * tpl.csf)
    right, left = _striata()
    ratio = float(rng.uniform(2.0, 3.2))  # striatum / brain
    asym = 1.0
    if kind == "asymmetric" or (kind == "recurrence" and rng.random() < 0.25):
        asym = float(rng.uniform(0.55, 0.85))
    sides = (asym, 1.0) if rng.random() < 0.5 else (1.0, asym)
    striatum = np.maximum(right, left)
    suv = suv + base * (ratio - 1) * (sides[0] * right + sides[1] * left)
    d = tpl.outside_mm
    skull = (d > 1.5) & (d <= rng.uniform(6, 9))
    scalp = (d > 1.5) & (d <= rng.uniform(11, 16)) & ~skull
    suv = suv + base * (0.15 * skull + rng.uniform(0.3, 0.7) * scalp)
    return _HealthyPet(suv, striatum, base, ratio, asym)


def _pet_treated_site(tpl: Template, healthy: _HealthyPet, kind: str,
                      rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """The treated site in one hemisphere, away from the striata and the cortex surface: a hot
    irregular lesion (``"recurrence"``), diffuse mild uptake (``"trc"``) or nothing, and in 70 %
    of cases a cold resection cavity beside it. Returns ``(suv, region 0-1, TBR, region radius
    mm)`` on the template grid; the region never includes striatal uptake."""
    suv, base, striatum = healthy.suv, healthy.base, healthy.striatum
    sites = _lesion_sites(tpl)["white"] & (ndimage.distance_transform_edt(striatum < 0.2) * tpl.spacing[0] > 18)
    centre = _pick(rng, sites)
    region = np.zeros(tpl.gm.shape, np.float32)
    tbr, r = 1.0, 0.0
    if kind == "recurrence":
        r = float(rng.uniform(5.0, 20.0))
        tbr = float(rng.uniform(1.8, 4.0))
        region = _blob(tpl, centre, r, rng, irregularity=0.8) * (tpl.brain > 0.5)
        peak = ndimage.gaussian_filter(region, r / 3 / tpl.spacing[0])  # hotter in the middle
        uptake = base * (1 + (tbr - 1) * (0.5 + 0.5 * peak / (peak.max() + 1e-9)))
        suv = np.where(region > 0, (1 - region) * suv + region * np.maximum(suv, uptake), suv)
    elif kind == "trc":
        r = float(rng.uniform(12.0, 25.0))
        tbr = float(rng.uniform(1.1, 1.5))
        zz, yy, xx = np.meshgrid(*[(np.arange(s) - c) * tpl.spacing[0] for s, c in zip(tpl.gm.shape, centre)], indexing="ij")
        rr2 = (zz ** 2 + yy ** 2 + xx ** 2) / r ** 2
        suv = suv * (1 + (tbr - 1) * np.exp(-2 * rr2) * (tpl.brain > 0.5))
        region = ((rr2 <= 1) & (tpl.brain > 0.5)).astype(np.float32)
    if rng.random() < 0.7:  # a cold resection cavity beside the site, in both classes
        cav_r = float(rng.uniform(5.0, 12.0))
        shift = rng.normal(size=3)
        shift = shift / np.linalg.norm(shift) * (cav_r / tpl.spacing[0])
        cavity = _blob(tpl, np.round(centre + shift).astype(int), cav_r, rng, irregularity=0.3) * (tpl.brain > 0.5)
        suv = (1 - cavity) * suv + cavity * 0.25 * base
        region = region * (1 - cavity)
    region = region * (striatum < 0.2)  # the lesion VOI never includes normal striatal uptake
    return suv, region, tbr, r


def _draw_pet_dose(rng: np.random.Generator) -> PetDose:
    """A static scan 10-40 min after ~1.5-3 MBq/kg, values decay-corrected to the scan start."""
    weight = float(np.round(rng.uniform(45, 110), 1))
    dose = float(np.round(rng.uniform(1.5, 3.0) * weight * 1e6, -5))
    injection = dt.datetime(2025, 1, 6, 7, 30) + dt.timedelta(days=int(rng.integers(0, 365)), minutes=int(rng.integers(0, 540)))
    scan = injection + dt.timedelta(seconds=int(rng.integers(10 * 60, 40 * 60)))
    return PetDose(weight, dose, injection, scan, decayed_dose(dose, injection, scan))


__all__ = ["CONTRASTS", "MNI_LICENSE", "MNI_SEED_TAG", "PET_KINDS", "STREAMS", "STREAM_NAMES", "Template",
           "case_rng", "load_template", "mni_brain_case", "mni_pet_case", "random_oblique"]
