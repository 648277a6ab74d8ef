"""The attribution-constrained classifier (issue #5; ``clinicalai train classifier``).

A healthy-vs-lesion slice classifier trained with

    loss = BCE(logit, label) + alpha_A * mean_{healthy i} psi_t(z_i),
    z_i = mean_v |A(x_i)_v|  (the mean absolute attribution of healthy image i),

where ``A`` is the attribution of the lesion logit (the input gradient, or Expected Gradients
with baselines drawn from the other healthy images of the batch), computed with
``create_graph=True`` so the penalty is differentiated through the gradient (double
backprop), and ``psi_t`` is the extended log-barrier of Kervadec et al. (2019) with t = 20 on
the constraint ``z_i <= 0`` ("no attribution on healthy images"): ``-log(-z)/t`` inside,
continued linearly (slope t) beyond ``z = -1/t^2``. As ``z_i >= 0`` the barrier acts through
its linear branch until the attributions vanish.

The idea (from the source thesis): a classifier that may not respond to healthy anatomy
has to base its decision on the lesions, so its attribution maps of pathological images can
be thresholded into lesion segmentations from image-level labels alone.

Data: axial 2D slices of brain-lesion phantoms (:mod:`clinicalai.phantoms.brain`), label 1
when the slice holds at least ``min_lesion_voxels`` lesion voxels, 0 when it holds none. The
``mix`` family adds MNI-template phantoms (:mod:`clinicalai.phantoms.mni`) of both contrasts
(T1-like: dark lesions, FLAIR-like: bright ones) from that family's TRAINING stream, never the
held-out evaluation's; slices of both families are padded to one size (background level).
Input: the slice intensities (per-volume z-score), or tissue probability
maps (``input_mode="tpm"``, :func:`tissue_probability_maps`) as in the thesis.

The network is MONAI's ``ResNet`` (basic blocks [1, 1, 1, 1], narrow, stride-1 stem without
max-pooling so 32x32 slices keep their small lesions), with one logit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..augment import augment_batch, image_augmenter
from ..casemap import CaseMapper, serial_map
from ..errors import InputError
from ..networks import build_network
from ..phantoms.brain import brain_case, brain_dataset
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .core import attribute
from .methods import baseline_name
from .metrics import TABLE_KEYS, choose_threshold, score_map, summarize_scores
from .preprocess import normalize_intensity
from .tissue import tissue_probability_maps

CONSTRAINTS = ("none", "gradient", "expected-gradients")
#: the blocks of the ResNet a card may name for Grad-CAM (layer1 keeps the input grid, each next one halves it)
CAM_LAYERS = ("layer1", "layer2", "layer3", "layer4")
INPUT_MODES = ("intensity", "tpm")
CLASSES = ["healthy", "lesion"]
#: z-score over non-zero voxels: removes the per-scan scale without clipping the bright lesions
#: (a percentile clip at 99.5 flattens them onto white matter)
NORMALIZATION = {"kind": "zscore"}
#: the phantom geometry the demo classifier is trained and evaluated on: 4 mm voxels keep
#: double backprop affordable on a CPU; lesions of 5-10 mm radius stay a few voxels wide
DEFAULT_SHAPE = (24, 32, 32)
PHANTOM_SPACING = (4.0, 4.0, 4.0)
LESION_RADIUS_MM = (5.0, 10.0)
#: central axial slices used: the brain fills them
SLICE_RANGE = (4, 20, 1)
#: the in-plane voxel (mm) of the network grid by default (``--grid-mm``); a finer grid keeps a
#: T1-like lesion (a few partial-volume voxels of CSF-like intensity at 4 mm) more voxels wide
GRID_MM = 4.0
#: channel widths of the four ResNet blocks by default (``--widths``)
WIDTHS = (8, 16, 32, 32)
#: a lesion slice holds at least this lesion area (mm^2; 10 voxels of 4 x 4 mm), whatever the grid
MIN_LESION_AREA_MM2 = 160.0
#: training data: the brain-lesion phantoms alone, or mixed with MNI-template phantoms
FAMILIES = ("phantom", "mix")
#: template slices used: those whose brain section is at least this share of the case's largest,
#: one every 8 mm (neighbours 4 mm apart repeat each other; more cases for the same cost)
MNI_MIN_BRAIN_SHARE = 0.3
MNI_SLICE_STEP_MM = 8.0


def architecture(input_channels: int = 1, widths: Sequence[int] = WIDTHS) -> Dict[str, Any]:
    """The card's ``architecture`` entry: a narrow MONAI ResNet with one logit; ``widths``: the
    channels of its four blocks."""
    widths = [int(w) for w in widths]
    if len(widths) != 4 or min(widths) < 1:
        raise InputError(f"the classifier needs 4 positive block widths, got {widths}")
    return {
        "name": "monai.networks.nets.ResNet",
        "kwargs": {
            "block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": widths,
            "spatial_dims": 2, "n_input_channels": int(input_channels), "conv1_t_size": 3,
            "conv1_t_stride": 1, "no_max_pool": True, "num_classes": 1,
        },
    }


# ---------------------------------------------------------------------------- input maps
def volume_channels(image: np.ndarray, input_mode: str = "intensity") -> np.ndarray:
    """``(C, z, y, x)`` network channels of one volume for ``input_mode``."""
    if input_mode == "intensity":
        return normalize_intensity(image, NORMALIZATION)[None]
    if input_mode == "tpm":
        return tissue_probability_maps(image)
    raise InputError(f"input mode must be one of {', '.join(INPUT_MODES)}, got {input_mode!r}")


# ---------------------------------------------------------------------------- data
@dataclass
class SliceSet:
    """Axial slices: ``images (N, C, y, x)``, ``labels (N,)``, ``lesion``/``brain`` ``(N, y, x)``."""

    images: np.ndarray
    labels: np.ndarray
    lesion: np.ndarray
    brain: np.ndarray
    case: np.ndarray

    def __len__(self) -> int:
        return int(len(self.labels))


def slice_dataset(cases: Sequence[Any], input_mode: str = "intensity", min_lesion_voxels: Optional[int] = None,
                  slice_range=SLICE_RANGE) -> SliceSet:
    """Slices of phantom ``cases`` (``BrainCase``, all of one in-plane size): label 1 with >=
    ``min_lesion_voxels`` lesion voxels (default: :data:`MIN_LESION_AREA_MM2` on each case's
    in-plane voxel, 10 at 4 mm), 0 with none; slices with a few lesion voxels are left out
    (ambiguous). ``slice_range``: ``(start, stop, step)`` axial indices, or ``None``: one slice
    every :data:`MNI_SLICE_STEP_MM` whose brain section is >= :data:`MNI_MIN_BRAIN_SHARE` of the
    case's largest (cases of any size, e.g. MNI-template phantoms)."""
    imgs, labels, lesions, brains, case_ids = [], [], [], [], []
    for ci, case in enumerate(cases):
        ch = volume_channels(case.image.array, input_mode)
        les = case.lesion.array > 0
        brain = case.brain_mask.array > 0
        sz = case.image.spacing[2]
        least = min_lesion_voxels if min_lesion_voxels is not None else _least_lesion_voxels(case.image.spacing)
        for z in _slice_indices(brain, slice_range, sz):
            n = int(les[z].sum())
            if 0 < n < least:
                continue
            imgs.append(ch[:, z])
            labels.append(1.0 if n else 0.0)
            lesions.append(les[z])
            brains.append(brain[z])
            case_ids.append(ci)
    return SliceSet(np.stack(imgs).astype(np.float32), np.array(labels, np.float32), np.stack(lesions),
                    np.stack(brains), np.array(case_ids))


def twin_slice_dataset(cases: Sequence[Any], input_mode: str = "intensity") -> SliceSet:
    """Counterfactual negatives for the lesioned MNI-template ``cases`` (of
    :func:`make_mni_cases`): each one's healthy twin (``mni_brain_case(..., healthy_twin=True)``:
    the same anatomy, deformation, bias and noise, no lesion), at the axial slices where
    :func:`slice_dataset` (``slice_range=None``) labels the lesioned case 1; labels 0.

    Why: with lesioned and healthy cases of different seeds, a slice classifier can tell them
    apart by memorising their anatomy; a T1-like lesion (dark, among dark sulci and ventricles)
    is then learnt too little to be found in new cases (held-out slice AUC 0.75 with 160
    T1-like template cases, 0.92 with their twins added; docs/heldout.md). A twin differs from
    its lesioned slice only where the lesion is."""
    from ..phantoms.mni import mni_brain_case

    imgs, lesions, brains, case_ids = [], [], [], []
    for ci, case in enumerate(cases):
        info = case.image.metadata["phantom"]
        if not case.pathological or info.get("family") != "mni":
            continue
        twin = mni_brain_case(info["seed"], pathological=True, contrast=info["contrast"],
                              spacing=case.image.spacing, stream=info["stream"], healthy_twin=True)
        ch = volume_channels(twin.image.array, input_mode)
        les = case.lesion.array > 0
        brain = twin.brain_mask.array > 0
        least = _least_lesion_voxels(case.image.spacing)
        for z in _slice_indices(brain, None, case.image.spacing[2]):
            if les[z].sum() >= least:
                imgs.append(ch[:, z])
                lesions.append(np.zeros_like(les[z]))
                brains.append(brain[z])
                case_ids.append(ci)
    if not imgs:
        raise InputError("healthy twins need lesioned MNI-template cases with lesion slices")
    return SliceSet(np.stack(imgs).astype(np.float32), np.zeros(len(imgs), np.float32), np.stack(lesions),
                    np.stack(brains), np.array(case_ids))


def _least_lesion_voxels(spacing: Sequence[float]) -> int:
    """The lesion voxels a slice needs to be labelled 1 on a grid of ``spacing`` ``(x, y, z)`` mm:
    :data:`MIN_LESION_AREA_MM2` whatever the in-plane voxel."""
    return max(1, round(MIN_LESION_AREA_MM2 / (spacing[0] * spacing[1])))


def _slice_indices(brain: np.ndarray, slice_range, slice_mm: float) -> List[int]:
    """Axial indices of ``brain`` ``(z, y, x)`` (slices ``slice_mm`` apart) that :func:`slice_dataset` uses."""
    if slice_range is not None:
        return [z for z in range(*slice_range) if z < brain.shape[0]]
    area = brain.sum(axis=(1, 2))
    if area.max() == 0:
        return []
    keep = np.flatnonzero(area >= MNI_MIN_BRAIN_SHARE * area.max())
    return [int(z) for z in keep[::max(1, int(round(MNI_SLICE_STEP_MM / slice_mm)))]]


def _pad_slices(data: SliceSet, size: Tuple[int, int]) -> SliceSet:
    """``data`` centred in slices of ``size`` ``(y, x)``: images padded with the median of each
    slice's border (its background, after normalisation), masks with 0."""
    ny, nx = data.images.shape[-2:]
    if (ny, nx) == tuple(size):
        return data
    if ny > size[0] or nx > size[1]:
        raise ValueError(f"slices of {(ny, nx)} do not fit in {tuple(size)}")
    y0, x0 = (size[0] - ny) // 2, (size[1] - nx) // 2
    border = np.concatenate([data.images[..., 0, :], data.images[..., -1, :], data.images[..., :, 0],
                             data.images[..., :, -1]], axis=-1)
    fill = np.median(border, axis=-1)  # (N, C)
    images = np.broadcast_to(fill[..., None, None], data.images.shape[:2] + tuple(size)).copy()
    images[..., y0:y0 + ny, x0:x0 + nx] = data.images
    masks = []
    for m in (data.lesion, data.brain):
        out = np.zeros((len(m),) + tuple(size), m.dtype)
        out[:, y0:y0 + ny, x0:x0 + nx] = m
        masks.append(out)
    return SliceSet(images.astype(np.float32), data.labels, masks[0], masks[1], data.case)


def concat_slices(parts: Sequence[SliceSet]) -> SliceSet:
    """One :class:`SliceSet` of ``parts`` (slices of different sizes padded to the largest,
    :func:`_pad_slices`); case numbers run on across the parts."""
    size = (max(p.images.shape[-2] for p in parts), max(p.images.shape[-1] for p in parts))
    padded = [_pad_slices(p, size) for p in parts]
    offsets = np.cumsum([0] + [int(p.case.max()) + 1 if len(p) else 0 for p in parts])
    return SliceSet(np.concatenate([p.images for p in padded]), np.concatenate([p.labels for p in padded]),
                    np.concatenate([p.lesion for p in padded]), np.concatenate([p.brain for p in padded]),
                    np.concatenate([p.case + o for p, o in zip(padded, offsets)]))


def make_mni_cases(n: int, seed: int, grid_mm: float = GRID_MM, t1_share: float = 0.5) -> list:
    """``n`` MNI-template phantoms of the mni family's TRAINING stream (seeds ``seed..seed+n-1``
    there; never a held-out evaluation case) with ``grid_mm`` isotropic voxels: alternately
    healthy and lesioned; a share ``t1_share`` of the pairs T1-like, the rest FLAIR-like, spread
    evenly (0.5: T1-like and FLAIR-like in turn)."""
    from ..phantoms.mni import mni_brain_case

    if not 0.0 <= t1_share <= 1.0:
        raise InputError(f"the share of T1-like template cases must be in [0, 1], got {t1_share}")

    def contrast(pair: int) -> str:  # pair k is T1-like when ceil(k * share) steps up at k + 1
        return "T1" if math.ceil(round((pair + 1) * t1_share, 9)) > math.ceil(round(pair * t1_share, 9)) else "FLAIR"

    return [mni_brain_case(seed + i, pathological=bool(i % 2), contrast=contrast(i // 2),
                           spacing=(grid_mm,) * 3, stream="train") for i in range(n)]


def training_slices(family: str = "phantom", n_cases: int = 40, n_mni: int = 0, seed: int = 0,
                    shape: Sequence[int] = DEFAULT_SHAPE, input_mode: str = "intensity",
                    grid_mm: float = GRID_MM, t1_share: float = 0.5, twins: bool = False) -> SliceSet:
    """The training slices of ``family``: ``n_cases`` brain-lesion phantoms, plus for ``mix``
    ``n_mni`` MNI-template phantoms of the training stream (:func:`make_mni_cases`, ``t1_share``
    of them T1-like), all with ``grid_mm`` in-plane voxels; ``twins``: also the healthy twins of
    the lesioned template cases (:func:`twin_slice_dataset`)."""
    if family not in FAMILIES:
        raise InputError(f"training family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if family == "mix" and n_mni < 2:
        raise InputError("the mix family needs at least 2 MNI-template phantoms")
    if twins and family != "mix":
        raise InputError("healthy twins are drawn for MNI-template phantoms: they need --family mix")
    mni = make_mni_cases(n_mni, seed, grid_mm, t1_share) if family == "mix" else []  # checks the share first
    data = slice_dataset(make_cases(n_cases, seed, shape, grid_mm), input_mode)
    if family == "phantom":
        return data
    parts = [data, slice_dataset(mni, input_mode, slice_range=None)]
    return concat_slices(parts + ([twin_slice_dataset(mni, input_mode)] if twins else []))


def phantom_geometry(shape: Sequence[int] = DEFAULT_SHAPE, grid_mm: float = GRID_MM):
    """``(shape (z, y, x), spacing (x, y, z) mm)`` of brain-lesion phantoms with ``grid_mm``
    in-plane voxels covering the field of view of ``shape`` at :data:`PHANTOM_SPACING` (the
    slices stay 4 mm apart: the slice model sees one at a time)."""
    if not grid_mm > 0:
        raise InputError(f"the in-plane voxel size must be a positive number of mm, got {grid_mm}")
    f = PHANTOM_SPACING[0] / float(grid_mm)
    return ((int(shape[0]),) + tuple(int(round(s * f)) for s in shape[1:]),
            (float(grid_mm), float(grid_mm), PHANTOM_SPACING[2]))


def make_cases(n: int, seed: int, shape=DEFAULT_SHAPE, grid_mm: float = GRID_MM):
    """``n`` phantoms, alternately healthy and pathological, at the demo geometry
    (:func:`phantom_geometry`)."""
    shape, spacing = phantom_geometry(shape, grid_mm)
    return brain_dataset(n, seed=seed, shape=shape, spacing=spacing, lesion_radius_mm=LESION_RADIUS_MM)


def phantom(seed: int, pathological: bool):
    """One phantom at the demo geometry."""
    return brain_case(seed, shape=DEFAULT_SHAPE, spacing=PHANTOM_SPACING, pathological=pathological,
                      lesion_radius_mm=LESION_RADIUS_MM)


# ---------------------------------------------------------------------------- the constraint
def log_barrier(z, t: float = 20.0):
    """Extended log-barrier psi_t(z) for the constraint z <= 0 (Kervadec et al. 2019)."""
    import torch

    threshold = -1.0 / t ** 2
    inside = -torch.log(torch.clamp(-z, min=1e-12)) / t
    outside = t * z - math.log(1.0 / t ** 2) / t + 1.0 / t
    return torch.where(z <= threshold, inside, outside)


def training_attribution(module, x, method: str = "gradient", references=None):
    """Attribution of the lesion logit w.r.t. ``x`` with the graph kept (double backprop).

    ``gradient``: dF/dx. ``expected-gradients``: one EG sample per image, (x - x') * dF/dx at
    x' + a (x - x'), with x' drawn from ``references`` and a ~ U(0, 1) (Erion et al.'s
    attribution-prior training uses one sample per step too).
    """
    import torch

    if method == "gradient":
        xi = x.detach().clone().requires_grad_(True)
        out = module(xi).sum()
        (g,) = torch.autograd.grad(out, xi, create_graph=True)
        return g
    if method == "expected-gradients":
        refs = references if references is not None else x
        idx = torch.randint(0, refs.shape[0], (x.shape[0],), device=x.device)
        base = refs[idx].detach()
        alpha = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device)
        xi = (base + alpha * (x.detach() - base)).requires_grad_(True)
        (g,) = torch.autograd.grad(module(xi).sum(), xi, create_graph=True)
        return (x.detach() - base) * g
    raise InputError(f"the constraint's attribution must be gradient or expected-gradients, got {method!r}")


# ---------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    module: Any
    card: Dict[str, Any]
    history: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train_classifier(
    constraint: str = "gradient",
    alpha: float = 5.0,
    t: float = 20.0,
    input_mode: str = "intensity",
    n_cases: int = 40,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    constraint_batch: int = 8,
    shape: Sequence[int] = DEFAULT_SHAPE,
    data: Optional[SliceSet] = None,
    augmentation: Optional[str] = None,
    family: str = "phantom",
    n_mni: int = 0,
    t1_share: float = 0.5,
    twins: bool = False,
    grid_mm: float = GRID_MM,
    widths: Sequence[int] = WIDTHS,
    cam_layer: str = "layer4",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> TrainResult:
    """Train a healthy-vs-lesion slice classifier, constrained or not (``constraint="none"``).

    Returns the trained module (eval mode, CPU) and its model card (without sha256; save with
    :func:`clinicalai.models.save_model`). ``augmentation``: a :mod:`clinicalai.augment` preset
    (``strong`` / ``mild``) applied to each training slice (every channel), or ``None``.
    ``family``/``n_mni``/``t1_share``/``twins``/``grid_mm``: the training data when ``data`` is not
    given (:func:`training_slices`); ``grid_mm`` (in-plane voxel, mm) goes into the card's
    ``input.spacing_mm``, so :func:`clinicalai.attribution.attribute` resamples any image to it.
    ``widths``: the ResNet's block widths (:func:`architecture`); ``cam_layer``: the card's Grad-CAM
    layer (``layer1``..``layer4``; finer maps in the earlier blocks).
    """
    import torch

    _check_training_options(constraint, input_mode, epochs, n_cases, family, widths, cam_layer)
    phantom_geometry(shape, grid_mm)  # a bad voxel size fails before any phantom is made
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if data is None:
        report(progress, 0.0, "making phantoms")
        data = training_slices(family, n_cases, n_mni, seed, shape, input_mode, grid_mm, t1_share, twins)
    x_all = torch.from_numpy(data.images)
    y_all = torch.from_numpy(data.labels)
    n_pos = float(y_all.sum())
    if n_pos == 0 or n_pos == len(y_all):
        raise InputError("the training slices need both healthy and lesion slices")
    arch = architecture(x_all.shape[1], widths)
    module = build_network(arch["name"], arch["kwargs"])
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    pos_weight = torch.tensor((len(y_all) - n_pos) / n_pos)
    step = _Step(module, opt, torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight), constraint, alpha, t,
                 constraint_batch, x_all[y_all == 0])
    aug = image_augmenter(augmentation, seed, spatial_dims=2) if augmentation is not None else None
    history = []
    steps_per_epoch = max(1, math.ceil(len(y_all) / batch_size))
    for epoch in range(epochs):
        module.train()
        order = rng.permutation(len(y_all))
        sums = {"bce": 0.0, "barrier": 0.0, "z": 0.0}
        for s in range(steps_per_epoch):
            check_cancel(cancel)
            idx = torch.from_numpy(order[s * batch_size:(s + 1) * batch_size])
            for k, v in step(augment_batch(aug, x_all[idx]), y_all[idx]).items():
                sums[k] += v
            report(progress, (epoch + (s + 1) / steps_per_epoch) / epochs, f"epoch {epoch + 1}/{epochs}")
        history.append({k: v / steps_per_epoch for k, v in sums.items()} | {"epoch": epoch + 1})
    module.eval()
    seconds = time.perf_counter() - started
    hyper = {"alpha": alpha, "t": t, "epochs": epochs, "batch_size": batch_size, "constraint_batch": constraint_batch,
             "lr": lr, "augmentation": aug.params if aug is not None else None}
    card = _classifier_card(arch, int(x_all.shape[1]), constraint, input_mode,
                            data_description(family, n_cases, n_mni, shape, seed, grid_mm, t1_share, twins), len(y_all),
                            int(n_pos), hyper, seconds, history)
    card["input"]["spacing_mm"] = [float(grid_mm)] * 2
    card["cam_layer"] = cam_layer
    return TrainResult(module, card, history, seconds)


def _check_training_options(constraint: str, input_mode: str, epochs: int, n_cases: int, family: str,
                            widths: Sequence[int] = WIDTHS, cam_layer: str = "layer4") -> None:
    """Every option checked before any phantom is made (one clear :class:`InputError`)."""
    architecture(1, widths)
    if cam_layer not in CAM_LAYERS:
        raise InputError(f"the Grad-CAM layer must be one of {', '.join(CAM_LAYERS)}, got {cam_layer!r}")
    if family not in FAMILIES:
        raise InputError(f"training family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if constraint not in CONSTRAINTS:
        raise InputError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {constraint!r}")
    if input_mode not in INPUT_MODES:
        raise InputError(f"input mode must be one of {', '.join(INPUT_MODES)}, got {input_mode!r}")
    if epochs < 1 or n_cases < 2:
        raise InputError("training needs at least 1 epoch and 2 cases")


@dataclass
class _Step:
    """One optimisation step of the constrained classifier on a batch ``(B, C, y, x)``:
    weighted BCE, plus ``alpha`` x the log-barrier of the healthy slices' mean |attribution|."""

    module: Any
    opt: Any
    bce: Any
    constraint: str
    alpha: float
    t: float
    constraint_batch: int
    healthy_all: Any  # every healthy training slice: the Expected Gradients references

    def __call__(self, xb, yb) -> Dict[str, float]:
        """The step's losses ``bce``, ``barrier`` and mean attribution ``z`` (0 unconstrained)."""
        import torch

        logits = self.module(xb)[:, 0]
        loss = self.bce(logits, yb)
        out = {"bce": float(loss.detach()), "barrier": 0.0, "z": 0.0}
        # double backprop is the cost of training (~10x a plain step on a CPU): the barrier
        # is estimated on up to ``constraint_batch`` healthy slices of each batch
        healthy = xb[yb == 0][:self.constraint_batch]
        if self.constraint != "none" and len(healthy) > 0:
            refs = self.healthy_all[torch.randint(0, len(self.healthy_all), (len(healthy),))]
            a = training_attribution(self.module, healthy, self.constraint, references=refs)
            z = a.abs().flatten(1).mean(1)
            penalty = log_barrier(z, self.t).mean()
            loss = loss + self.alpha * penalty
            out["barrier"] = float(penalty.detach())
            out["z"] = float(z.detach().mean())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return out


def data_description(family: str, n_cases: int, n_mni: int, shape: Sequence[int], seed: int,
                     grid_mm: float = GRID_MM, t1_share: float = 0.5, twins: bool = False) -> Dict[str, Any]:
    """The card's ``training`` entries that say what :func:`training_slices` drew: ``data``,
    ``family``, ``seed``, and for ``mix`` the template's licence (``template_licence``)."""
    grid_shape, spacing = phantom_geometry(shape, grid_mm)
    text = (f"{n_cases} brain-lesion phantoms {list(grid_shape)} of {spacing[0]:g} x {spacing[1]:g} x {spacing[2]:g} mm "
            f"(seed {seed}), axial slices")
    out: Dict[str, Any] = {"family": family, "seed": seed}
    if family == "mix":
        from ..phantoms.mni import MNI_LICENSE, TEMPLATE_NAME

        text += (f"; {n_mni} MNI-template phantoms ({TEMPLATE_NAME}; training stream, seeds "
                 f"{seed}-{seed + n_mni - 1}; half lesioned; {t1_share:.0%} T1-like, the rest FLAIR-like; {grid_mm:g} mm voxels, oblique "
                 f"for half), one axial slice every {MNI_SLICE_STEP_MM:g} mm among those holding >= {MNI_MIN_BRAIN_SHARE:.0%} of "
                 "the largest brain section")
        if twins:
            text += "; the healthy twin of each lesioned template phantom at its lesion slices (label 0)"
        out["healthy_twins"] = bool(twins)
        out["template_licence"] = MNI_LICENSE
    return {"data": text, **out}


def _classifier_card(arch: Dict[str, Any], channels: int, constraint: str, input_mode: str,
                     data: Dict[str, Any], n_slices: int, n_lesion_slices: int,
                     hyper: Dict[str, Any], seconds: float, history: List[Dict[str, float]]) -> Dict[str, Any]:
    """The trained classifier's model card (``data``: :func:`data_description`; ``hyper``:
    alpha, t, epochs, batch_size, constraint_batch, lr, recorded under ``training``)."""
    return {
        "name": f"brain-lesion-classifier-{constraint}" + ("-tpm" if input_mode == "tpm" else ""),
        "version": "1.0.0",
        "task": "classification",
        "format": "state_dict",
        "architecture": arch,
        "spatial_dims": 2,
        "input": {"channels": channels, "normalization": dict(NORMALIZATION),
                  "input_mode": input_mode, "modality": "MR"},
        "classes": list(CLASSES),
        "cam_layer": "layer4",
        "intended_use": "synthetic phantom demo; not for clinical use",
        "synthetic_demo": True,
        "training": {
            **data,
            "slices": n_slices, "lesion_slices": n_lesion_slices,
            "constraint": constraint, "alpha": hyper["alpha"], "t": hyper["t"], "epochs": hyper["epochs"],
            "batch_size": hyper["batch_size"], "constraint_batch": hyper["constraint_batch"], "input_mode": input_mode,
            "lr": hyper["lr"], "seconds": round(seconds, 1),
            "augmentation": hyper.get("augmentation"),
            "final": history[-1] if history else {},
        },
    }


# ---------------------------------------------------------------------------- evaluation
def slice_auc(module, data: SliceSet) -> float:
    """ROC AUC of the slice classification (scikit-learn)."""
    import torch
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        p = torch.cat([module(torch.from_numpy(data.images[i:i + 256]))[:, 0] for i in range(0, len(data), 256)])
    return float(roc_auc_score(data.labels, p.numpy()))


def lesion_maps(module, cases, method: str, input_mode: str = "intensity", card=None) -> List[np.ndarray]:
    """The lesion-class maps of pathological ``cases``, whole volumes ``(z, y, x)``, slice by
    slice through :func:`clinicalai.attribution.attribute` (max-abs normalised per volume)."""
    maps = []
    for case in cases:
        options: Dict[str, Any] = {}
        if method == "expected-gradients":
            options = {"n_samples": 8}
        res = attribute(module, case.image, method, target="lesion", card=card, normalization="max-abs",
                        references=_references() if method == "expected-gradients" else None, **options)
        maps.append(res.array)
    return maps


_REFS: Dict[str, Any] = {}


def _references(n: int = 4):
    """Healthy reference volumes for Expected Gradients (phantoms with their own seeds)."""
    if "intensity" not in _REFS:
        _REFS["intensity"] = [phantom(900000 + i, pathological=False).image for i in range(n)]
    return _REFS["intensity"]


def evaluate_models(
    models: Dict[str, Any],
    n_val: int = 6,
    n_test: int = 10,
    seed: int = 1000,
    methods: Optional[Dict[str, str]] = None,
    progress: Optional[ProgressCallback] = None,
    map_cases: CaseMapper = serial_map,
) -> Dict[str, Dict[str, Any]]:
    """Lesion segmentation from attribution maps, per model (``map_cases`` runs the models:
    default one after the other here; ``clinicalai.batch`` gives one for Dask workers).

    ``models``: name -> ``LoadedModel`` (or ``(module, card dict)``). For each, the map
    threshold is the precision/recall operating point on ``n_val`` pathological validation
    phantoms (:func:`choose_threshold`), then every metric of :func:`score_map` is computed
    inside the brain mask of ``n_test`` pathological test phantoms (other seeds), plus the
    slice classification AUC. ``methods``: name -> attribution method (default: the model's
    training constraint, gradient for an unconstrained model).
    """
    val = [phantom(seed + i, pathological=True) for i in range(n_val)]
    test = [phantom(seed + 5000 + i, pathological=True) for i in range(n_test)]
    test_healthy = [phantom(seed + 9000 + i, pathological=False) for i in range(n_test)]
    items = list(models.items())

    def done(i: int) -> None:
        report(progress, i / len(items), f"{i}/{len(items)} models evaluated")

    scored = map_cases(_evaluate_one, items, (val, test, test_healthy, methods), done)
    results: Dict[str, Dict[str, Any]] = {name: r for (name, _), r in zip(items, scored)}
    report(progress, 1.0, "done")
    return results


def _evaluate_one(item: Tuple[str, Any], val, test, test_healthy, methods: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """One (name, model) of :func:`evaluate_models`: threshold on ``val``, scores on ``test``."""

    name, model = item
    module, card = (model.module, model.card) if hasattr(model, "card") else model
    card_dict = card.to_dict() if hasattr(card, "to_dict") else dict(card)
    input_mode = (card_dict.get("input") or {}).get("input_mode", "intensity")
    constraint = (card_dict.get("training") or {}).get("constraint", "none")
    method = (methods or {}).get(name) or ("expected-gradients" if constraint == "expected-gradients" else "gradient")
    v_maps = lesion_maps(module, val, method, input_mode, card=card)
    thr = choose_threshold([np.clip(m, 0, None) for m in v_maps], [c.lesion for c in val], [c.brain_mask for c in val])
    t_maps = lesion_maps(module, test, method, input_mode, card=card)
    scores = [score_map(m, c.lesion, mask=c.brain_mask, threshold=thr) for m, c in zip(t_maps, test)]
    grid = card_grid_mm(card_dict)
    auc = slice_auc(module, slice_dataset([on_grid(c, grid) for c in test + test_healthy], input_mode))
    return {
        "method": method, "constraint": constraint, "input_mode": input_mode, "threshold": thr,
        "slice_auc": auc, "summary": summarize_scores(scores), "per_case": scores,
    }


def card_grid_mm(card) -> float:
    """The in-plane voxel (mm) a classifier's card (dict or parsed) resamples to: its
    ``input.spacing_mm``, else :data:`GRID_MM` (cards from before the option had none: 4 mm)."""
    if hasattr(card, "input"):
        spacing = card.input.spacing_mm
    else:
        spacing = (card.get("input") or {}).get("spacing_mm")
    return float(spacing[0]) if spacing else GRID_MM


def on_grid(case, grid_mm: float):
    """``case`` (a ``BrainCase``) resampled to ``grid_mm`` in-plane voxels (slices kept), as a
    slice model with that card spacing sees it: image linear, masks nearest; itself when already there."""
    from dataclasses import replace

    from ..volume import resample_to_spacing

    sx, sy, sz = case.image.spacing
    if np.allclose((sx, sy), grid_mm):
        return case
    spacing = (grid_mm, grid_mm, sz)
    masks = {k: resample_to_spacing(getattr(case, k), spacing, "nearest")[0] for k in ("lesion", "tissues", "brain_mask")}
    return replace(case, image=resample_to_spacing(case.image, spacing)[0], **masks)


#: the attribution methods of the held-out template figures (docs/heldout.md)
TEMPLATE_METHODS = ("integrated-gradients", "gradcam")


def template_attribution_auroc(model, n: int, seed: int = 0, methods: Sequence[str] = TEMPLATE_METHODS,
                               log=None, baselines: Sequence[str] = ("zero",)) -> Dict[str, Dict[str, List[float]]]:
    """Attribution AUROC (lesion class, against the lesion mask inside the brain, :func:`score_map`)
    of ``model`` (a ``LoadedModel``) on ``n`` lesioned MNI-template phantoms of the HELD-OUT
    stream (seeds ``seed..seed+n-1``), FLAIR-like and T1-like alternately, with isotropic voxels
    of the model's grid (:func:`card_grid_mm`: 4 mm for the bundled card). Integrated gradients runs once per name of ``baselines`` (:data:`.methods.BASELINES`,
    blur at its default sigma); its key is the method's name for ``zero`` and
    ``"integrated-gradients (NAME)"`` otherwise. Returns ``{contrast: {key: [AUROC per case]}}``;
    ``log(line)`` hears each case."""
    from ..phantoms.mni import mni_brain_case

    runs = [(m, {"baseline": baseline_name(b)} if m == "integrated-gradients" else {})
            for m in methods for b in (baselines if m == "integrated-gradients" else ("",))]
    out: Dict[str, Dict[str, List[float]]] = {}
    grid = card_grid_mm(model.card)
    for i in range(n):
        contrast = ("FLAIR", "T1")[i % 2]
        case = mni_brain_case(seed + i, pathological=True, contrast=contrast, spacing=(grid,) * 3, stream="heldout")
        for method, options in runs:
            res = attribute(model, case.image, method, target="lesion", **options)
            auroc = score_map(res.volume, case.lesion, mask=case.brain_mask, pointing_tolerance=0)["auroc"]
            key = method if options.get("baseline", "zero") == "zero" else f"{method} ({options['baseline']})"
            out.setdefault(contrast, {}).setdefault(key, []).append(auroc)
            if log is not None:
                log(f"case {i} {contrast} {key}: AUROC {auroc:.3f}")
    return out


def template_summary(figures: Dict[str, Dict[str, List[float]]], n: int, seed: int,
                     grid_mm: float = GRID_MM) -> Dict[str, Any]:
    """:func:`template_attribution_auroc`'s figures as a card's ``heldout`` entry: mean, sd and
    count per contrast and method, with the data they came from."""
    per = {c: {m: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4), "n": len(v)}
               for m, v in ms.items()} for c, ms in figures.items()}
    return {"data": f"{n} lesioned MNI-template phantoms of the held-out stream (seeds {seed}-{seed + n - 1}), "
                    f"FLAIR-like and T1-like alternately, {grid_mm:g} mm voxels",
            "metric": "attribution AUROC of the lesion class against the lesion mask inside the brain",
            "auroc": per}


def format_table(results: Dict[str, Dict[str, Any]]) -> str:
    """A Markdown table: Dice, AUROC, pAUC, AUPRC, pointing game (mean +/- sd), slice AUC."""
    keys = TABLE_KEYS
    head = "| model | method | " + " | ".join(keys) + " | slice AUC |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for name, r in results.items():
        cells = []
        for k in keys:
            s = r["summary"][k]
            cells.append("n/a" if s["mean"] is None else f"{s['mean']:.3f} +/- {s['std']:.3f}")
        lines.append(f"| {name} | {r['method']} | " + " | ".join(cells) + f" | {r['slice_auc']:.3f} |")
    return "\n".join(lines)
