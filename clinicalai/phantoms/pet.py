"""Brain 18F-FDOPA PET phantoms: recurrence (focal hot lesion) vs treatment-related change.

A case is built in the head's own frame (millimetres, x = patient left, y = posterior,
z = superior) and sampled on a scanner's grid:

- head (scalp / soft tissue, SUV ~0.5) around a brain with low FDOPA uptake (SUV ~1, cortex
  a little above white matter, ventricles low);
- striatum: caudate and putamen of both sides, high uptake (2.0-2.6x brain);
- a resection cavity (cold) in both classes, and beside it
  - recurrence (label 1): a focal hot lesion, TBRmax 2.5-4.0 against healthy brain (clearly
    above the 1.6 threshold), or
  - treatment-related change (label 0): faint diffuse uptake, TBR 1.1-1.4;
- a "scanner": grid spacing, resolution (Gaussian PSF, FWHM) and noise. ``A`` is a
  high-resolution PET/CT (2 mm voxels, FWHM 4 mm), ``B`` an older one (2.7 x 2.7 x 3.3 mm,
  FWHM 6.5 mm, more noise).

Values are stored in Bq/mL, decay-corrected to the series start (``DecayCorrection START``),
from a per-case body weight, injected dose and injection / scan times; ``metadata["pet"]``
holds the same tags a DICOM reader gives, so :func:`clinicalai.pet.suv.to_suv` turns the image
back into the SUV map the phantom was drawn from. :func:`write_pet_dicom` writes a DICOM PT
series with those tags (pydicom), :func:`write_pet_dataset` a labelled data set with a CSV.

Deterministic: the same ``seed`` gives the same case.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..outputs import atomic_output, write_csv
from ..pet.classes import LABELS  # the engine's class names: label -> name
from ..progress import report
from ..volume import Volume, write_volume
from ..volume.dicom_writer import MODALITY_SOP_CLASS, check_series_folder
from ..volume.io import PHILIPS_SUV_SCALE_TAG, RADIOPHARMACEUTICAL_KEYWORDS
from .common import segment_metadata

#: F-18 half-life in seconds (DICOM RadionuclideHalfLife)
F18_HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class Scanner:
    """A simulated PET scanner: grid, resolution and noise."""

    name: str
    spacing: Tuple[float, float, float]  # mm (x, y, z)
    shape: Tuple[int, int, int]  # voxels (z, y, x)
    fwhm_mm: float
    noise: float  # relative noise at SUV 1
    manufacturer: str


SCANNERS = {
    "A": Scanner("A", (2.0, 2.0, 2.0), (72, 108, 96), 4.0, 0.06, "ClinicalAI phantom PET/CT A"),
    "B": Scanner("B", (2.73, 2.73, 3.27), (44, 80, 70), 6.5, 0.10, "ClinicalAI phantom PET/CT B"),
}


@dataclass
class PetCase:
    """One synthetic FDOPA PET scan.

    Attributes:
        image: activity concentration in Bq/mL (``units="BQML"``, ``metadata["pet"]`` = SUV tags).
        suv: the same image in SUV body weight (the ground truth of the SUV conversion).
        brain_mask: 1 inside the brain.
        lesion: 1 in the hot lesion (recurrence) or the diffuse uptake region (TRC).
        label: 1 recurrence, 0 treatment-related change.
        scanner: ``"A"`` or ``"B"``.
        tbr_true: lesion peak over healthy brain uptake before blur and noise.
    """

    image: Volume
    suv: Volume
    brain_mask: Volume
    lesion: Volume
    label: int
    scanner: str
    tbr_true: float
    info: Dict[str, Any] = field(default_factory=dict)


def _rotation_z(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _inside(p: np.ndarray, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoid distance (<= 1 inside) of points ``p`` (..., 3)."""
    return np.sqrt((((p - np.asarray(center)) / np.asarray(radii)) ** 2).sum(-1))


def pet_case(
    seed: int,
    recurrence: Optional[bool] = None,
    scanner: Optional[str] = None,
    direction: Optional[np.ndarray] = None,
    spacing: Optional[Sequence[float]] = None,
    shape: Optional[Sequence[int]] = None,
) -> PetCase:
    """One brain FDOPA PET phantom in Bq/mL.

    Args:
        seed: random seed (same seed, same case).
        recurrence: label; ``None``: decided by the seed (60 % recurrence, as in the study).
        scanner: ``"A"`` or ``"B"``; ``None``: decided by the seed.
        direction: 3x3 direction matrix of the grid (columns i, j, k in LPS), e.g. oblique.
        spacing, shape: override the scanner's grid (mm x, y, z; voxels z, y, x).

    Steps (one random stream, drawn in this order): label and scanner -> the scanner's grid ->
    healthy head (:func:`_healthy_head`) -> treated site and lesion or diffuse change
    (:func:`_treated_region`) -> PSF and noise (:func:`_scanner_blur_and_noise`) -> dose and
    timing, Bq/mL (:func:`_draw_dose`) -> volumes.
    """
    rng = np.random.default_rng(seed)
    if recurrence is None:
        recurrence = bool(rng.random() < 0.6)
    if scanner is None:
        scanner = "A" if rng.random() < 0.5 else "B"
    if scanner not in SCANNERS:
        raise InputError(f"unknown phantom scanner {scanner!r}; choose one of {', '.join(SCANNERS)}")
    sc = SCANNERS[scanner]
    grid = _scanner_grid(sc, spacing, shape, direction)
    head = _healthy_head(_head_frame_points(grid, rng), rng)
    suv, region, tbr = _treated_region(head, bool(recurrence), rng)
    suv = _scanner_blur_and_noise(suv, sc, np.asarray(grid.spacing), head.base, rng)
    dose = _draw_dose(rng)
    bqml = bqml_image(suv, dose)
    tags = pet_tags(dose.weight_kg, dose.dose_bq, dose.injection, dose.scan_start, manufacturer=sc.manufacturer)
    return PetCase(
        image=grid.with_array(bqml, modality="PT", units="BQML", metadata={"pet": tags}),
        suv=grid.with_array(suv.astype(np.float32), modality="PT", units="SUV"),
        brain_mask=grid.with_array(head.brain.astype(np.uint8), modality="SEG", units="label",
                                   metadata=segment_metadata("brain", BRAIN_COLOR)),
        lesion=grid.with_array(region.astype(np.uint8), modality="SEG", units="label",
                               metadata=segment_metadata(LABELS[int(recurrence)], LESION_COLOR)),
        label=int(recurrence),
        scanner=scanner,
        tbr_true=float(tbr),
        info={"weight_kg": dose.weight_kg, "dose_bq": dose.dose_bq, "injection": dose.injection.isoformat(),
              "scan_start": dose.scan_start.isoformat(), "healthy_brain_suv": float(head.base),
              "striatum_ratio": float(head.striatum_ratio)},
    )


#: colours of a PET phantom's brain mask and of its lesion / change region (RGB 0..1)
BRAIN_COLOR = (0.9, 0.9, 0.6)
LESION_COLOR = (1.0, 0.3, 0.1)


def _scanner_grid(sc: Scanner, spacing: Optional[Sequence[float]], shape: Optional[Sequence[int]],
                  direction: Optional[np.ndarray]) -> Volume:
    """An empty float32 volume on the scanner's grid (or the given spacing / shape / direction),
    centred on the LPS origin so the head sits in the field of view whatever the direction."""
    sp = np.asarray(spacing if spacing is not None else sc.spacing, dtype=float)
    shp = tuple(int(s) for s in (shape if shape is not None else sc.shape))
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    extent = (np.array(shp[::-1]) - 1) * sp
    origin = -d @ (extent / 2.0)
    return Volume(np.zeros(shp, np.float32), spacing=tuple(sp), origin=tuple(origin), direction=d)


def _head_frame_points(grid: Volume, rng: np.random.Generator) -> np.ndarray:
    """The voxel centres of ``grid`` in the head's frame (mm), ``(z, y, x, 3)``: LPS shifted and
    turned by a random head position (shift ~ N(0, 4 mm), yaw within 8 deg)."""
    sp, origin = np.asarray(grid.spacing), np.asarray(grid.origin)
    kk, jj, ii = np.meshgrid(*[np.arange(s, dtype=float) for s in grid.shape], indexing="ij")
    ijk = np.stack([ii, jj, kk], -1) * sp
    lps = ijk @ grid.direction.T + origin
    shift = rng.normal(0, 4.0, 3)
    rot = _rotation_z(rng.uniform(-8, 8))
    return (lps - shift) @ rot  # (R^T (x - c)) for row vectors


@dataclass
class _Head:
    """A healthy head drawn at points ``p`` of the head frame; arrays on the grid ``(z, y, x)``."""

    p: np.ndarray  # points (z, y, x, 3), mm
    scale: float  # head size factor
    brain_c: np.ndarray  # brain centre (mm)
    brain_r: np.ndarray  # brain radii (mm)
    brain: np.ndarray  # bool
    striatum: np.ndarray  # bool
    suv: np.ndarray  # float64 SUV
    base: float  # healthy brain SUV
    striatum_ratio: float  # striatum / healthy brain uptake


def _healthy_head(p: np.ndarray, rng: np.random.Generator) -> _Head:
    """Scalp, cortex, white matter, ventricles and striata with their FDOPA uptake (SUV)."""
    shp = p.shape[:3]
    scale = rng.uniform(0.92, 1.08)
    head_r = np.array([76, 96, 84]) * scale
    brain_c = np.array([0.0, 0.0, 8.0])
    brain_r = np.array([64, 84, 62]) * scale
    head = _inside(p, (0, 0, 0), head_r) <= 1
    r_brain = _inside(p, brain_c, brain_r)
    brain = r_brain <= 1
    white = r_brain <= 0.82
    ventricles = np.zeros(shp, bool)
    for side in (-1, 1):
        ventricles |= _inside(p, (side * 7 * scale, 0, 14), np.array([5, 24, 9]) * scale) <= 1

    base = rng.uniform(0.9, 1.3)  # healthy brain SUV
    suv = np.zeros(shp, np.float64)
    suv[head] = 0.45 * base
    suv[brain] = 1.12 * base  # cortex
    suv[white] = 0.95 * base
    suv[ventricles & brain] = 0.35 * base
    striatum = np.zeros(shp, bool)
    s_uptake = rng.uniform(2.0, 2.6)
    for side in (-1, 1):
        caudate = _inside(p, (side * 13 * scale, -8 * scale, 16), np.array([5.5, 12, 8]) * scale) <= 1
        putamen = _inside(p, (side * 25 * scale, 2 * scale, 6), np.array([6, 15, 9]) * scale) <= 1
        striatum |= caudate | putamen
    suv[striatum] = s_uptake * base
    return _Head(p, scale, brain_c, brain_r, brain, striatum, suv, base, s_uptake)


def _treated_site(head: _Head, rng: np.random.Generator) -> np.ndarray:
    """A random point (mm, head frame) in one hemisphere, away from the striatum and the midline."""
    scale, brain_c, brain_r = head.scale, head.brain_c, head.brain_r
    side = 1 if rng.random() < 0.5 else -1
    for _ in range(100):
        c = np.array([side * rng.uniform(22, 45), rng.uniform(-55, 55), rng.uniform(-20, 40)]) * scale + brain_c * [0, 0, 1]
        if _inside(c[None], brain_c, brain_r * 0.78)[0] <= 1 and np.all(
            [_inside(c[None], (s * 25 * scale, 0, 8), np.array([18, 30, 20]))[0] > 1 for s in (-1, 1)]
        ):
            break
    return c


def _treated_region(head: _Head, recurrence: bool, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, float]:
    """The resection cavity (cold) and beside it a focal hot lesion (``recurrence``) or faint
    diffuse uptake; returns ``(suv, region mask, TBR)``, the region never in the striatum."""
    p, brain, base, suv = head.p, head.brain, head.base, head.suv
    c = _treated_site(head, rng)
    cavity_r = rng.uniform(5, 9)
    cavity = _inside(p, c, [cavity_r] * 3) <= 1
    if recurrence:
        r = rng.uniform(10, 18)
        offset = rng.normal(0, 1, 3)
        offset = offset / np.linalg.norm(offset) * (cavity_r + 0.6 * r)
        centre = c + offset
        tbr = rng.uniform(2.5, 4.0)
        rr = _inside(p, centre, r * rng.uniform(0.8, 1.2, 3))
        region = (rr <= 1) & brain
        profile = np.clip(1 - rr**2, 0, 1) ** 0.5  # peaked, irregular-free hot lesion
        suv = np.where(region, np.maximum(suv, base * (1 + (tbr - 1) * (0.55 + 0.45 * profile))), suv)
    else:
        r = rng.uniform(12, 22)
        tbr = rng.uniform(1.1, 1.4)
        rr = _inside(p, c, r * rng.uniform(0.8, 1.2, 3))
        region = (rr <= 1) & brain
        suv = np.where(region, np.maximum(suv, base * (1 + (tbr - 1) * np.exp(-2 * rr**2))), suv)
    suv[cavity & brain] = 0.3 * base
    region &= ~head.striatum  # the lesion / change VOI never includes normal striatal uptake
    return suv, region, tbr


def _scanner_blur_and_noise(suv: np.ndarray, sc: Scanner, spacing: np.ndarray, base: float,
                            rng: np.random.Generator) -> np.ndarray:
    """The scanner's Gaussian PSF (FWHM, ``spacing`` mm x y z), then Poisson-like noise whose
    variance grows with uptake; clipped at 0."""
    sigma_zyx = sc.fwhm_mm / 2.3548 / spacing[::-1]
    suv = ndimage.gaussian_filter(suv, sigma_zyx)
    suv = suv + rng.normal(0, 1, suv.shape) * sc.noise * np.sqrt(np.maximum(suv, 0.02) * base)
    return np.clip(suv, 0, None)


@dataclass(frozen=True)
class PetDose:
    """Body weight, injected dose and times of one scan; ``decayed_bq``: the dose at scan start."""

    weight_kg: float
    dose_bq: float
    injection: dt.datetime
    scan_start: dt.datetime
    decayed_bq: float


def _draw_dose(rng: np.random.Generator) -> PetDose:
    """FDOPA static scan 10-30 min after ~2 MBq/kg; values are decay-corrected to scan start."""
    weight_kg = float(np.round(rng.uniform(50, 100), 1))
    dose_bq = float(np.round(rng.uniform(1.5, 2.5) * weight_kg * 1e6, -5))  # ~2 MBq/kg
    injection = dt.datetime(2024, 3, 1, 8, 0, 0) + dt.timedelta(days=int(rng.integers(0, 300)), minutes=int(rng.integers(0, 480)), seconds=int(rng.integers(0, 60)))
    scan = injection + dt.timedelta(seconds=int(rng.integers(10 * 60, 30 * 60)))
    return PetDose(weight_kg, dose_bq, injection, scan, decayed_dose(dose_bq, injection, scan))


def decayed_dose(dose_bq: float, injection: dt.datetime, scan_start: dt.datetime) -> float:
    """The injected F-18 dose (Bq) decayed from injection to the scan start."""
    return dose_bq * 2.0 ** (-(scan_start - injection).total_seconds() / F18_HALF_LIFE_S)


def bqml_image(suv: np.ndarray, dose: PetDose) -> np.ndarray:
    """SUV (body weight) -> activity concentration in Bq/mL (float32), decay-corrected to the
    scan start: SUV x decayed dose / body weight in g."""
    return (suv * dose.decayed_bq / (dose.weight_kg * 1000.0)).astype(np.float32)


def pet_tags(
    weight_kg: float,
    dose_bq: float,
    injection: dt.datetime,
    scan_start: dt.datetime,
    units: str = "BQML",
    decay_correction: str = "START",
    manufacturer: str = "ClinicalAI phantom",
) -> Dict[str, Any]:
    """The SUV tags of a scan, by DICOM keyword, as :func:`clinicalai.volume.io.read_pet_tags` gives them."""
    return {
        "Units": units,
        "DecayCorrection": decay_correction,
        "CorrectedImage": ["DECY", "ATTN", "SCAT", "RAN", "NORM"],
        "PatientWeight": float(weight_kg),
        "SeriesDate": scan_start.strftime("%Y%m%d"),
        "SeriesTime": scan_start.strftime("%H%M%S.%f"),
        "AcquisitionDate": scan_start.strftime("%Y%m%d"),
        "AcquisitionTime": scan_start.strftime("%H%M%S.%f"),
        "Manufacturer": manufacturer,
        "RadionuclideTotalDose": float(dose_bq),
        "RadionuclideHalfLife": F18_HALF_LIFE_S,
        "RadiopharmaceuticalStartTime": injection.strftime("%H%M%S.%f"),
        "RadiopharmaceuticalStartDateTime": injection.strftime("%Y%m%d%H%M%S.%f"),
        "Radiopharmaceutical": "Fluorodopa F^18^",
    }


def write_pet_dicom(
    volume: Volume,
    folder: "str | Path",
    tags: Optional[Dict[str, Any]] = None,
    series_description: str = "ClinicalAI FDOPA PET phantom",
    omit: Sequence[str] = (),
) -> Path:
    """Write a PET volume as a DICOM PT series (one file per slice) with its SUV tags.

    ``tags`` (default ``volume.metadata["pet"]``) are written as DICOM attributes,
    the radiopharmaceutical ones inside RadiopharmaceuticalInformationSequence; keywords in
    ``omit`` are left out (to test missing-tag errors). Pixel values are int16 with one
    Rescale Slope for the series. The folder is replaced atomically.
    """
    import pydicom
    from pydicom.uid import generate_uid

    tags = dict(volume.metadata.get("pet", {}) if tags is None else tags)
    pixels, slope = _int16_pixels(volume)
    series = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(),
              "FrameOfReferenceUID": generate_uid(), "SeriesDescription": series_description}
    folder = check_series_folder(folder)
    with atomic_output(folder, directory=True) as tmp:
        for k in range(pixels.shape[0]):
            ds = _pt_slice(volume, pixels, k, slope, series)
            _set_pet_tags(ds, tags, omit)
            pydicom.dcmwrite(str(tmp / f"pt{k:04d}.dcm"), ds, enforce_file_format=True)
    return folder


def write_dynamic_pet_dicom(
    frames: Sequence[Volume],
    starts_s: Sequence[float],
    durations_s: Sequence[float],
    tags: Dict[str, Any],
    folder: "str | Path",
    decay_references_s: Optional[Sequence[float]] = None,
) -> Path:
    """Write the frames of a dynamic PET as one DICOM PT series, as scanners export them.

    Every frame's slices are in the one series (``SeriesType`` DYNAMIC\\IMAGE,
    ``NumberOfTimeSlices``); each image has its ``ImageIndex`` (frame x slices + slice + 1), its
    frame's start as ``AcquisitionDate`` / ``AcquisitionTime``, ``ActualFrameDuration`` and
    ``FrameReferenceTime`` (ms, the frame's middle, from the series start) and its frame's
    Rescale Slope. ``starts_s``: frame starts in s after the series start (``tags``'
    ``SeriesDate`` / ``SeriesTime``); ``tags`` as :func:`pet_tags` gives them, their
    ``DecayCorrection`` saying what the frames' values are (START: all decay-corrected to the
    series start; NONE: not corrected). ``decay_references_s``: each frame's
    ``DecayCorrectionDateTime`` (0018,9701), in s after the series start, for frames whose
    values are decay-corrected to their own time (omitted: none written). The folder is replaced
    atomically.
    """
    import pydicom
    from pydicom.uid import generate_uid

    if not (len(frames) == len(starts_s) == len(durations_s)) or not frames:
        raise InputError("a dynamic PET needs one start and one duration per frame")
    if decay_references_s is not None and len(decay_references_s) != len(frames):
        raise InputError("a dynamic PET needs one decay-correction time per frame, or none")
    series = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(),
              "FrameOfReferenceUID": generate_uid(), "SeriesDescription": "ClinicalAI dynamic FDOPA PET phantom"}
    series_start = dt.datetime.strptime(tags["SeriesDate"] + tags["SeriesTime"].split(".")[0], "%Y%m%d%H%M%S")
    folder = check_series_folder(folder)
    with atomic_output(folder, directory=True) as tmp:
        for f, (volume, start, duration) in enumerate(zip(frames, starts_s, durations_s)):
            pixels, slope = _int16_pixels(volume)
            begins = series_start + dt.timedelta(seconds=float(start))
            frame_tags = dict(tags, AcquisitionDate=begins.strftime("%Y%m%d"), AcquisitionTime=begins.strftime("%H%M%S.%f"))
            corrected_to = None if decay_references_s is None else \
                series_start + dt.timedelta(seconds=float(decay_references_s[f]))
            n = pixels.shape[0]
            for k in range(n):
                ds = _pt_slice(volume, pixels, k, slope, series)
                _set_pet_tags(ds, frame_tags, ())
                ds.InstanceNumber = ds.ImageIndex = f * n + k + 1
                ds.SeriesType = ["DYNAMIC", "IMAGE"]
                ds.NumberOfTimeSlices = len(frames)
                ds.ActualFrameDuration = int(round(1000.0 * float(duration)))
                if corrected_to is not None:
                    ds.DecayCorrectionDateTime = corrected_to.strftime("%Y%m%d%H%M%S.%f")
                ds.FrameReferenceTime = f"{1000.0 * (float(start) + float(duration) / 2.0):.1f}"
                pydicom.dcmwrite(str(tmp / f"pt{f:03d}_{k:04d}.dcm"), ds, enforce_file_format=True)
    return folder


def _int16_pixels(volume: Volume) -> Tuple[np.ndarray, float]:
    """``(int16 pixels, Rescale Slope)`` of a non-negative PET volume with a right-handed grid."""
    arr = np.asarray(volume.array, dtype=np.float64)
    volume.require_finite("PET image")
    if arr.min() < 0:
        raise InputError("a PET series written here needs non-negative values")
    d = volume.direction
    if not np.allclose(np.cross(d[:, 0], d[:, 1]), d[:, 2], atol=1e-6):
        raise InputError("DICOM slices need a right-handed direction (k = i x j)")
    slope = float(arr.max()) / 32767.0 if arr.max() > 0 else 1.0
    return np.round(arr / slope).astype(np.int16), slope


def _pt_slice(volume: Volume, pixels: np.ndarray, k: int, slope: float, series: Dict[str, str]):
    """The pydicom dataset of slice ``k``: file meta, UIDs, geometry and pixels (no SUV tags)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = MODALITY_SOP_CLASS["PT"]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword, value in series.items():
        setattr(ds, keyword, value)
    ds.Modality = "PT"
    ds.PatientName = "Phantom^PET"
    ds.PatientID = "CLINICALAI-PET"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImageIndex = k + 1
    ds.NumberOfSlices = pixels.shape[0]
    d = volume.direction
    ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*d[:, 0], *d[:, 1])]
    pos = volume.index_to_lps() @ np.array([0.0, 0.0, float(k), 1.0])
    ds.ImagePositionPatient = [f"{v:.10g}" for v in pos[:3]]
    ds.PixelSpacing = [f"{volume.spacing[1]:.10g}", f"{volume.spacing[0]:.10g}"]  # row, column
    ds.SliceThickness = f"{volume.spacing[2]:.10g}"
    ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = "0"
    ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
    return ds


def _set_pet_tags(ds, tags: Dict[str, Any], omit: Sequence[str]) -> None:
    """The SUV tags on ``ds``: plain attributes, Philips' private scale factor, and the
    radiopharmaceutical ones in RadiopharmaceuticalInformationSequence (``omit`` left out)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    ds.StudyDate = tags.get("SeriesDate", "")
    for kw, value in tags.items():
        if kw in RADIOPHARMACEUTICAL_KEYWORDS or kw in omit or kw == "PhilipsSUVScaleFactor":
            continue
        if kw in ("PatientWeight",):
            value = f"{float(value):.6g}"
        setattr(ds, kw, value)
    if "PhilipsSUVScaleFactor" in tags and "PhilipsSUVScaleFactor" not in omit:
        group = PHILIPS_SUV_SCALE_TAG[0]
        ds.add_new((group, 0x0010), "LO", "Philips PET Private Group")
        ds.add_new(PHILIPS_SUV_SCALE_TAG, "DS", f"{float(tags['PhilipsSUVScaleFactor']):.10g}")
    item = Dataset()
    for kw in RADIOPHARMACEUTICAL_KEYWORDS:
        if kw in tags and kw not in omit:
            value = tags[kw]
            if kw in ("RadionuclideTotalDose", "RadionuclideHalfLife"):
                value = f"{float(value):.10g}"
            setattr(item, kw, value)
    ds.RadiopharmaceuticalInformationSequence = DicomSequence([item])


def write_pet_dataset(
    out_dir: "str | Path",
    n: int = 40,
    seed: int = 0,
    fmt: str = "nifti",
    test_fraction: float = 0.2,
    balanced: bool = False,
    progress: Optional[Callable[[float, str], None]] = None,
    make_case: Optional[Callable[[int], PetCase]] = None,
) -> Path:
    """Write ``n`` PET phantoms and ``out_dir/pet_cases.csv``; returns the CSV path.

    Images are written in Bq/mL (NIfTI ``case###_pet.nii.gz`` or DICOM folders with
    ``fmt="dicom"``) with brain masks (``case###_brain.nii.gz``). NIfTI holds no units or
    dose, so the CSV gives them: columns ``path, label, scanner, brain_mask, split, units,
    weight_kg, dose_bq, injection_time, scan_time`` (paths relative to the CSV). ``split`` is
    ``test`` for a label- and scanner-stratified ``test_fraction`` of cases, ``train`` otherwise.
    ``balanced`` alternates the labels (else 60 % recurrence, as in the study).
    ``progress(fraction, message)`` is called after each case. ``make_case(i)`` gives case ``i``
    of another family (e.g. :func:`clinicalai.phantoms.pet_mix.write_mixed_pet_dataset`); its
    ``scanner`` joins the label in the stratified split. Default: :func:`pet_case` of this family.
    """
    if n < 1:
        raise InputError("the number of PET phantoms must be at least 1")
    if fmt not in ("nifti", "dicom"):
        raise InputError(f"format must be 'nifti' or 'dicom', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        if make_case is not None:
            case = make_case(i)
        else:
            rec = (i % 2 == 1) if balanced else None
            case = pet_case(seed * 100_003 + i, recurrence=rec, scanner="AB"[(i // 2) % 2] if balanced else None)
        stem = f"case{i:03d}"
        if fmt == "dicom":
            write_pet_dicom(case.image, out / f"{stem}_pet")
            path = f"{stem}_pet"
        else:
            path = f"{stem}_pet.nii.gz"
            write_volume(case.image, out / path)
        write_volume(case.brain_mask, out / f"{stem}_brain.nii.gz")
        rows.append({
            "path": path, "label": case.label, "scanner": case.scanner, "brain_mask": f"{stem}_brain.nii.gz",
            "split": "train", "units": "bqml", "weight_kg": case.info["weight_kg"], "dose_bq": case.info["dose_bq"],
            "injection_time": case.info["injection"], "scan_time": case.info["scan_start"],
        })
        report(progress, (i + 1) / n, f"PET phantom {i + 1}/{n}")
    # stratified hold-out: every (label, scanner) group gives its share of test cases
    rng = np.random.default_rng(seed)
    groups: Dict[Tuple[int, str], list] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["label"], r["scanner"]), []).append(i)
    for members in groups.values():
        k = int(round(test_fraction * len(members)))
        for i in rng.permutation(members)[:k]:
            rows[i]["split"] = "test"
    return write_csv(rows, out / "pet_cases.csv")
