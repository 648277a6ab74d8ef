"""Training data for the 2D segmenters: ACDC patient folders or phantom cases -> 128 x 128 slices.

The ACDC layout (``patientNNN/Info.cfg`` with ``ED:`` / ``ES:`` frame numbers,
``patientNNN_frameXX.nii.gz`` and ``patientNNN_frameXX_gt.nii.gz``; labels 1 RV, 2 MYO,
3 LV) is read into :class:`~clinicalai.phantoms.cardiac.CardiacCase` objects, the same type
the phantoms give, so training code does not care where the cases came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..phantoms.cardiac import PHASES, CardiacCase, cardiac_dataset
from ..volume import read_volume
from .labels import BACKGROUND, CARDIAC_VALUES
from .preprocess import NETWORK_SIZE, frame_for_volume, frame_from_mask, to_network

#: label values of the ACDC ground truth
ACDC_LABEL_VALUES = (BACKGROUND,) + tuple(CARDIAC_VALUES.values())


def read_info_cfg(path: "str | os.PathLike[str]") -> Dict[str, str]:
    """``Info.cfg`` as a dict (``ED``, ``ES``, ``Group``, ``Height``, ``NbFrame``, ``Weight``)."""
    info: Dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def _patient_folders(root: Path) -> List[Path]:
    if (root / "Info.cfg").is_file():
        return [root]
    folders = sorted(p for p in root.glob("**/patient*") if p.is_dir() and (p / "Info.cfg").is_file())
    return folders


def load_acdc(
    folder: "str | os.PathLike[str]",
    phases: Sequence[str] = PHASES,
    limit: Optional[int] = None,
) -> List[CardiacCase]:
    """Read ED / ES frames and their ground truth from an ACDC folder (or one patient folder).

    Raises:
        InputError: no patient folders, an ``Info.cfg`` without ED/ES, a missing frame or
            ground truth, a ground truth off the image grid or with labels outside 0..3.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (an ACDC data set is a folder of patientNNN folders)")
    folders = _patient_folders(root)
    if not folders:
        raise InputError(f"{root}: no ACDC patient folders found (patientNNN/Info.cfg)")
    cases: List[CardiacCase] = []
    for pf in folders[:limit] if limit else folders:
        info = read_info_cfg(pf / "Info.cfg")
        for phase in phases:
            if phase not in info:
                raise InputError(f"{pf / 'Info.cfg'} has no '{phase}:' frame number")
            frame = int(float(info[phase]))
            img_path = pf / f"{pf.name}_frame{frame:02d}.nii.gz"
            gt_path = pf / f"{pf.name}_frame{frame:02d}_gt.nii.gz"
            for p in (img_path, gt_path):
                if not p.is_file():
                    raise InputError(f"{pf.name}: {p.name} is missing")
            image = read_volume(img_path)
            labels = read_volume(gt_path)
            if not labels.same_grid(image, atol=1e-3):
                raise InputError(f"{gt_path.name} is not on the grid of {img_path.name}")
            values = np.unique(labels.array)
            if not set(values.tolist()) <= set(ACDC_LABEL_VALUES):
                raise InputError(f"{gt_path.name} has label values {values.tolist()}; ACDC labels are "
                                 f"{ACDC_LABEL_VALUES[0]}..{ACDC_LABEL_VALUES[-1]}")
            labels = labels.with_array(labels.array.astype(np.uint8), modality="SEG", units="label")
            image.modality = image.modality or "MR"
            meta: Dict[str, Any] = {"patient": pf.name, "frame": frame, "phase": phase,
                                    "group": info.get("Group"), "source": str(img_path)}
            cases.append(CardiacCase(image=image, labels=labels, phase=phase, meta=meta))
    return cases


def resolve_cases(data: Any, seed: int = 0) -> List[CardiacCase]:
    """Cases from an ACDC folder path, a number of phantoms, or a list of cases."""
    if isinstance(data, (str, os.PathLike)):
        return load_acdc(data)
    if isinstance(data, (int, np.integer)) and not isinstance(data, bool):
        if data < 2:
            raise InputError("training needs at least 2 phantom cases (one for validation)")
        return cardiac_dataset(int(data), seed=seed)
    cases = list(data)
    if not cases or not all(isinstance(c, CardiacCase) for c in cases):
        raise InputError("training data must be an ACDC folder, a number of phantoms, or a list of cardiac cases")
    return cases


def split_cases(cases: Sequence[CardiacCase], val_fraction: float = 0.2, seed: int = 0) -> Tuple[List[CardiacCase], List[CardiacCase]]:
    """Split by patient (ED and ES of one patient stay together) into (train, validation)."""
    keys = [c.meta.get("patient", c.meta.get("seed", i)) for i, c in enumerate(cases)]
    unique = sorted(set(keys), key=str)
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    n_val = max(1, int(round(val_fraction * len(unique)))) if len(unique) > 1 else 0
    val_keys = set(order[:n_val])
    train = [c for c, k in zip(cases, keys) if k not in val_keys]
    val = [c for c, k in zip(cases, keys) if k in val_keys]
    if not train:
        raise InputError("not enough cases to hold some out for validation")
    return train, val or list(train)


def case_slices(
    case: CardiacCase,
    rng: Optional[np.random.Generator] = None,
    out_size: Sequence[int] = NETWORK_SIZE,
    coarse: bool = False,
    jitter_mm: float = 8.0,
    scale_jitter: float = 0.15,
) -> Tuple[np.ndarray, np.ndarray]:
    """Network-space ``(z, 1, H, W)`` float32 images and ``(z, 1, H, W)`` uint8 labels of one case.

    ``coarse=True`` frames the whole slice (what the first inference pass sees); otherwise
    the heart-centred crop from the ground truth, with the centre shifted by up to
    ``jitter_mm`` and the size scaled by ``1 +- scale_jitter`` when ``rng`` is given, so the
    network tolerates the imperfect crop that inference gets from its coarse pass.
    """
    lab = case.labels.array
    spacing = case.image.spacing
    if coarse:
        frame = frame_for_volume(lab.shape, spacing=spacing, out_size=out_size)
    else:
        frame = frame_from_mask(lab, spacing, out_size=out_size)
        if rng is not None:
            sx, sy = spacing[:2]
            size_mm = frame.height * sy * (1 + rng.uniform(-scale_jitter, scale_jitter))
            cy, cx = frame.center_yx
            cy += rng.uniform(-jitter_mm, jitter_mm) / sy
            cx += rng.uniform(-jitter_mm, jitter_mm) / sx
            frame = frame_for_volume(lab.shape, (cy, cx), size_mm, spacing, out_size)
    img = to_network(case.image.array, frame, "image")
    seg = to_network(lab, frame, "labels")
    return img[:, None], seg[:, None]


def build_slices(
    cases: Sequence[CardiacCase],
    seed: int = 0,
    out_size: Sequence[int] = NETWORK_SIZE,
    coarse_copies: int = 1,
    jittered_copies: int = 1,
    exact: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """All slices of ``cases`` in network space: ``(N, 1, H, W)`` images and labels.

    Each case gives ``jittered_copies`` heart crops (``exact``: the ground-truth crop without
    jitter, for validation) and ``coarse_copies`` whole-slice views.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for case in cases:
        for _ in range(jittered_copies):
            i, s = case_slices(case, None if exact else rng, out_size)
            images.append(i)
            labels.append(s)
        for _ in range(coarse_copies):
            i, s = case_slices(case, None, out_size, coarse=True)
            images.append(i)
            labels.append(s)
    if not images:
        raise InputError("no slices to train on")
    return np.concatenate(images), np.concatenate(labels)


__all__ = ["build_slices", "case_slices", "load_acdc", "read_info_cfg", "resolve_cases", "split_cases"]
