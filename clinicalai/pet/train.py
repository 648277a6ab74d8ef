"""Training and evaluation of the PET recurrence CNNs, as in the study.

- Data: a CSV with ``path, label`` and optionally ``scanner, brain_mask, split, units,
  weight_kg, dose_bq, injection_time, scan_time, decay_correction, static_window`` (paths relative to the CSV;
  label 1 / 0 or ``recurrence`` / ``trc``; a DICOM folder carries its own units and SUV tags,
  a NIfTI row states ``units`` (``suv`` / ``bqml``, the latter with weight, dose and ISO times); a
  dynamic PET row gives ``static_window`` START-END, minutes after injection, :mod:`.dynamic`). Rows with ``split == test`` are held out; the others go into
  stratified k-fold cross-validation balancing label *and* scanner.
- Each fold trains one network (BCE or Symmetric Cross Entropy; Adam lr 1e-4, weight decay
  1e-3, batch 10, 150 epochs, ReduceLROnPlateau(patience 15, factor 0.5) on the validation
  loss; nnU-Net-like augmentation with MONAI transforms) and keeps the weights of its best
  validation epoch. Out-of-fold probabilities of every training case are the validation
  figures; a test case's probability is the mean over the fold models.
- Metrics: accuracy, balanced accuracy, AUC, AP, sensitivity, specificity with bootstrap 95 %
  intervals (scikit-learn's definitions, computed with numpy). Per-patient training-loss
  curves flag cases whose loss stays high while the rest is learnt: likely mislabelled (the
  small-loss criterion of noisy-label learning).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..attribution.layers import default_cam_layer
from ..errors import InputError
from ..models import resolve_device, save_model
from ..networks import build_network, count_parameters
from ..networks.pet_cnns import PET_CAM_LAYERS, pet_architecture
from ..outputs import atomic_output, check_output_folder
from ..volume import read_volume
from ..progress import CancelToken, ProgressCallback, check_cancel, report, scaled
from .classes import CLASSES, LABELS
from .dynamic import parse_static_window, read_pet_image
from .preprocess import REDUCED_SIZE_XYZ, REDUCED_SPACING_MM, describe_input, preprocess_pet
from .suv import UNITS, pet_tags_from_options

LABEL_WORDS = {"1": 1, "0": 0, **{name: k for k, name in LABELS.items()}, "trc": 0, "true": 1, "false": 0}


# ----------------------------------------------------------------------------------- data
@dataclass
class PetRow:
    """One row of the PET CSV (paths resolved)."""

    id: str
    path: Path
    label: int
    scanner: str = ""
    brain_mask: Optional[Path] = None
    split: str = "train"
    units: Optional[str] = None
    tags: Optional[Dict[str, Any]] = None
    #: minutes after injection whose frames make the static scan of a dynamic PET (``static_window`` column)
    static_window: Optional[Tuple[float, float]] = None


def read_pet_csv(csv_path: "str | Path", units: Optional[str] = None) -> List[PetRow]:
    """Rows of a PET CSV; clear errors for a missing column, file or label."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: no such CSV file")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        for need in ("path", "label"):
            if need not in fields:
                raise InputError(f"{csv_path.name} has no '{need}' column (columns: {', '.join(fields) or 'none'})")
        raw = list(reader)
    if not raw:
        raise InputError(f"{csv_path.name} has no rows")
    rows = []
    for n, r in enumerate(raw, start=2):
        r = {k.strip(): (v or "").strip() for k, v in r.items() if k}
        p = csv_path.parent / r["path"]
        if not p.exists():
            raise InputError(f"{csv_path.name} line {n}: image {r['path']} does not exist")
        lab = LABEL_WORDS.get(r["label"].lower())
        if lab is None:
            raise InputError(f"{csv_path.name} line {n}: label {r['label']!r} is not 0/1 or recurrence/trc")
        mask = csv_path.parent / r["brain_mask"] if r.get("brain_mask") else None
        if mask is not None and not mask.exists():
            raise InputError(f"{csv_path.name} line {n}: brain mask {r['brain_mask']} does not exist")
        row_units = (r.get("units") or units or None)
        if row_units and row_units.lower() not in UNITS:
            raise InputError(f"{csv_path.name} line {n}: units {row_units!r} is not suv or bqml")
        tags = None
        if row_units and row_units.lower() == "bqml" and r.get("weight_kg"):
            lacking = [c for c in ("dose_bq", "injection_time", "scan_time") if not r.get(c)]
            if lacking:
                raise InputError(f"{csv_path.name} line {n}: a Bq/mL row with weight_kg also needs {', '.join(lacking)}")
            try:
                weight, dose_mbq = float(r["weight_kg"]), float(r["dose_bq"]) / 1e6
            except ValueError:
                raise InputError(f"{csv_path.name} line {n}: weight_kg and dose_bq must be numbers "
                                 f"({r['weight_kg']!r}, {r['dose_bq']!r})") from None
            try:
                tags = pet_tags_from_options(weight, dose_mbq, r["injection_time"], r["scan_time"],
                                             r.get("decay_correction") or "START")
            except InputError as exc:
                raise InputError(f"{csv_path.name} line {n}: {exc}") from None
        window = None
        if r.get("static_window"):
            try:
                window = parse_static_window(r["static_window"])
            except InputError as exc:
                raise InputError(f"{csv_path.name} line {n}: {exc}") from None
        rows.append(PetRow(id=Path(r["path"]).name.split(".")[0], path=p, label=lab, scanner=r.get("scanner", ""),
                           brain_mask=mask, split=(r.get("split") or "train").lower(), units=row_units, tags=tags,
                           static_window=window))
    return rows


def load_inputs(
    rows: Sequence[PetRow],
    spacing_mm: Sequence[float],
    size_xyz: Sequence[int],
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Preprocessed network inputs ``(N, 1, X, Y, Z)`` of ``rows``."""
    out = []
    for i, r in enumerate(rows):
        check_cancel(cancel)
        pet = read_pet_image(r.path, r.static_window)
        mask = read_volume(r.brain_mask) if r.brain_mask else None
        try:
            pp = preprocess_pet(pet, units=r.units if not pet.metadata.get("pet") else None, brain_mask=mask,
                                spacing_mm=spacing_mm, size_xyz=size_xyz, tags=r.tags)
        except InputError as exc:
            raise InputError(f"{r.path.name}: {exc}") from None
        out.append(pp.input)
        report(progress, (i + 1) / len(rows), f"preprocessing {i + 1}/{len(rows)}")
    return np.stack(out).astype(np.float32)


# ----------------------------------------------------------------------------------- losses
class SymmetricCrossEntropy:
    """Symmetric Cross Entropy (Wang et al., ICCV 2019) for one logit: ``alpha * CE + beta * RCE``.

    RCE swaps prediction and label in the cross entropy, with log(0) clamped to ``A = -4``; for
    hard binary labels it equals ``-A * |y - p|``. Hand-written: MONAI and torch have no SCE.
    Returns per-sample losses ``(N,)``.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_clamp: float = -4.0) -> None:
        self.alpha, self.beta, self.A = float(alpha), float(beta), float(log_clamp)

    def __call__(self, logits, target):
        import torch
        import torch.nn.functional as F

        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        log_t = torch.clamp(torch.log(target.clamp_min(1e-12)), min=self.A)
        log_1t = torch.clamp(torch.log((1 - target).clamp_min(1e-12)), min=self.A)
        rce = -(p * log_t + (1 - p) * log_1t)
        return self.alpha * ce + self.beta * rce


def bce_per_sample(logits, target):
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


# ----------------------------------------------------------------------------------- augmentation
def augmentation(prob: float = 0.2, elastic: bool = True):
    """nnU-Net-like augmentation of one ``(1, X, Y, Z)`` tensor with MONAI transforms:
    rotation (+-15 deg) / translation (+-8 %) / scaling (0.85-1.25), elastic deformation, left-right
    mirror (axis X), brightness (multiplicative), contrast (around the mean), gamma, Gaussian noise.
    Only LR is mirrored: A/P and S/I mirrors make impossible brains."""
    import monai.transforms as T

    rad = math.radians(15)
    steps = [
        T.RandAffine(prob=prob, rotate_range=(rad, rad, rad), translate_range=(5, 5, 3), scale_range=(0.15, 0.15, 0.15),
                     padding_mode="zeros", mode="bilinear"),
    ]
    if elastic:
        steps.append(T.Rand3DElastic(sigma_range=(5, 7), magnitude_range=(20, 60), prob=prob / 2, padding_mode="zeros"))
    steps += [
        T.RandFlip(prob=0.5, spatial_axis=0),
        T.RandScaleIntensity(factors=0.25, prob=0.15),
        T.RandScaleIntensityFixedMean(prob=0.15, factors=0.25),
        T.RandAdjustContrast(prob=0.15, gamma=(0.7, 1.5)),
        T.RandGaussianNoise(prob=0.15, std=0.02),
    ]
    return T.Compose(steps)


def fold_augmenter(cfg: "TrainConfig"):
    """The per-case augmentation of :func:`train_folds` (``None`` when ``cfg.augment`` is off),
    seeded with ``cfg.seed``: the study's nnU-Net-like one, or a :mod:`clinicalai.augment`
    preset on the ``(1, X, Y, Z)`` inputs (MONAI layout, rotation in the axial X-Y plane).

    Raises:
        InputError: an unknown ``cfg.augmentation``.
    """
    if not cfg.augment:
        return None
    if cfg.augmentation == "nnunet":
        aug = augmentation()
        aug.set_random_state(seed=cfg.seed)  # MONAI transforms keep their own generator: seed it, or runs differ
        return aug
    from ..augment import PRESETS, image_augmenter

    if cfg.augmentation not in PRESETS:
        raise InputError(f"PET augmentation must be nnunet or one of {', '.join(PRESETS)}, got {cfg.augmentation!r}")
    return image_augmenter(cfg.augmentation, cfg.seed, spatial_dims=3, layout="xyz")


# ----------------------------------------------------------------------------------- metrics
def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half): scikit-learn's value."""
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision, ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores from the highest
    (no interpolation): scikit-learn's ``average_precision_score``."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last index of each distinct score
    tps = np.cumsum(ys)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> Dict[str, float]:
    """Accuracy, balanced accuracy, AUC, AP, sensitivity, specificity of probabilities ``p`` for
    labels ``y`` (NaN where a metric needs both labels). Plain numpy with scikit-learn's
    definitions (a test compares them): the bootstrap calls this a thousand times, and
    scikit-learn's argument checks would make that take seconds."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    both = pos > 0 and neg > 0
    sens = tp / pos if pos else float("nan")
    spec = tn / neg if neg else float("nan")
    return {
        "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
        "balanced_accuracy": (sens + spec) / 2 if both else float("nan"),
        "auc": _auc(y, p) if both else float("nan"),
        "average_precision": _average_precision(y, p) if both else float("nan"),
        "sensitivity": sens,
        "specificity": spec,
    }


def bootstrap_metrics(y: Sequence[int], p: Sequence[float], n_boot: int = 1000, seed: int = 0,
                      threshold: float = 0.5) -> Dict[str, Dict[str, float]]:
    """Each metric with its percentile bootstrap 95 % interval (resampling cases)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    point = binary_metrics(y, p, threshold)
    rng = np.random.default_rng(seed)
    samples: Dict[str, List[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        m = binary_metrics(y[idx], p[idx], threshold)
        for k, v in m.items():
            if not math.isnan(v):
                samples[k].append(v)
    out = {}
    for k, v in point.items():
        s = samples[k]
        lo, hi = (float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))) if s else (float("nan"), float("nan"))
        out[k] = {"value": _r(v), "ci95": [_r(lo), _r(hi)]}
    out["n"] = {"value": int(len(y)), "positives": int(y.sum())}
    return out


def _r(v: float) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def stratified_folds(labels: Sequence[int], scanners: Sequence[str], k: int, seed: int = 0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, validation) index splits balancing label and scanner (falls back to the
    label alone when a label x scanner group has fewer than ``k`` cases)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if k < 2:
        raise InputError("cross-validation needs at least 2 folds")
    counts = np.bincount(labels, minlength=2)
    if counts.min() < k:
        raise InputError(f"{k} folds need at least {k} cases of each label; there are {counts[0]} TRC and {counts[1]} recurrence")
    strata = np.array([f"{lab}|{s}" for lab, s in zip(labels, scanners)])
    _, group_counts = np.unique(strata, return_counts=True)
    key = strata if group_counts.min() >= k else labels
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in skf.split(np.zeros(len(labels)), key)]


# ----------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Hyper-parameters (defaults: the study's)."""

    arch: str = "cnn3d"
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    folds: int = 10
    epochs: int = 150
    batch_size: int = 10
    lr: float = 1e-4
    weight_decay: float = 1e-3
    loss: str = "bce"  # or "sce"
    sce_alpha: float = 0.1
    sce_beta: float = 1.0
    patience: int = 15
    factor: float = 0.5
    augment: bool = True
    #: ``nnunet`` (the study's, :func:`augmentation`) or a :mod:`clinicalai.augment` preset
    #: (``strong`` / ``mild``: in-plane rotation of any angle, bias field, histogram shift ...)
    augmentation: str = "nnunet"
    spacing_mm: Tuple[float, float, float] = (2.0, 2.0, 2.0)
    size_xyz: Tuple[int, int, int] = (128, 128, 82)
    seed: int = 0
    device: str = "auto"
    name: Optional[str] = None
    synthetic_demo: bool = False
    command: str = ""

    @classmethod
    def reduced(cls, **kw: Any) -> "TrainConfig":
        """The CPU demo / test input: 64x64x41 voxels of 4 mm."""
        return cls(spacing_mm=REDUCED_SPACING_MM, size_xyz=REDUCED_SIZE_XYZ, **kw)


@dataclass
class TrainResult:
    """What :func:`train_folds` produced."""

    model_paths: List[Path]
    oof_probability: np.ndarray
    labels: np.ndarray
    metrics: Dict[str, Any]
    test_metrics: Optional[Dict[str, Any]]
    flagged: List[Dict[str, Any]]
    seconds: float


def _loss_fn(cfg: TrainConfig):
    if cfg.loss == "bce":
        return bce_per_sample
    if cfg.loss == "sce":
        return SymmetricCrossEntropy(cfg.sce_alpha, cfg.sce_beta)
    raise InputError(f"unknown loss {cfg.loss!r}; use bce or sce")


def _predict(module, x: np.ndarray, device: str, batch: int = 8) -> np.ndarray:
    import torch

    module.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            t = torch.from_numpy(x[s:s + batch]).to(device)
            out.append(torch.sigmoid(module(t)[:, 0].float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fold_feature_reference(module, inputs: np.ndarray, train_rows: np.ndarray, held_rows: np.ndarray,
                           fold: int) -> Optional[Dict[str, Any]]:
    """The ``ood`` block of fold ``fold``'s card (:mod:`clinicalai.models.ood`): the features of
    its training inputs ``inputs[train_rows]`` (as preprocessed, not augmented), and the
    threshold from the inputs it never trained on, ``inputs[held_rows]`` (its validation fold
    and the test split). ``None`` for a network that ends in a class-map convolution
    (:func:`~clinicalai.models.ood.feature_layers`; a wide last layer gets a reduced reference)."""
    import torch

    from ..models.ood import feature_layers, fit_reference, network_features

    module.eval()
    layers = feature_layers(module)
    if not layers:
        return None
    device = next(module.parameters()).device

    def features(rows):
        return [network_features(module, torch.from_numpy(inputs[int(i):int(i) + 1]).to(device), layers) for i in rows]

    return fit_reference(np.concatenate(features(train_rows)), features(held_rows), layers=layers,
                         data=f"the {len(train_rows)} training inputs of fold {fold} (not augmented); threshold from "
                              f"the {len(held_rows)} inputs it never trained on (its validation fold and the test split)")


def flag_mislabelled(ids: Sequence[str], curves: np.ndarray, labels: np.ndarray) -> List[Dict[str, Any]]:
    """Cases whose training loss stays high over the last half of training.

    ``curves`` is ``(cases, epochs)`` mean per-case training loss (NaN when not trained on). A
    case is flagged when its late mean loss is above ln 2 (worse than a coin toss on its own label)
    and above Q3 + 1.5 IQR of all cases' late losses.
    """
    if curves.size == 0:
        return []
    import warnings

    half = curves[:, curves.shape[1] // 2:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cases never trained on (test rows): all NaN
        late = np.nanmean(half, axis=1)
    finite = late[np.isfinite(late)]
    if finite.size < 4:
        return []
    q1, q3 = np.percentile(finite, [25, 75])
    cut = max(math.log(2), q3 + 1.5 * (q3 - q1))
    return [
        {"id": ids[i], "label": int(labels[i]), "late_training_loss": round(float(late[i]), 4)}
        for i in np.argsort(-np.nan_to_num(late, nan=-1)) if np.isfinite(late[i]) and late[i] > cut
    ]


def train_folds(
    csv_path: "str | Path",
    out_dir: "str | Path",
    config: TrainConfig,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    inputs: Optional[np.ndarray] = None,
    rows: Optional[List[PetRow]] = None,
    overwrite: bool = False,
) -> TrainResult:
    """K-fold training (module docstring); writes into ``out_dir`` (a new or empty folder, or
    with ``overwrite`` an existing one where only these files are replaced; written atomically):
    ``<name>-fold<k>.pt/.json``, ``oof_predictions.csv``, ``test_predictions.csv``,
    ``loss_curves.csv``, ``metrics.json``.

    ``inputs`` / ``rows`` skip reading and preprocessing (already done by the caller).
    """
    t0 = time.perf_counter()
    check_output_folder(out_dir, overwrite)  # refused before training, not after it
    cfg = config
    arch_name, kwargs = pet_architecture(cfg.arch)
    kwargs.update(cfg.arch_kwargs)
    device = resolve_device(cfg.device)
    loss_fn = _loss_fn(cfg)
    if rows is None:
        rows = read_pet_csv(csv_path)
    if inputs is None:
        inputs = load_inputs(rows, cfg.spacing_mm, cfg.size_xyz, progress=_sub(progress, 0.0, 0.1), cancel=cancel)
    data = _FoldData(inputs, np.array([r.label for r in rows]),
                     np.array([i for i, r in enumerate(rows) if r.split != "test"]),
                     np.array([i for i, r in enumerate(rows) if r.split == "test"]))
    folds = stratified_folds(data.labels[data.train_idx], [rows[i].scanner for i in data.train_idx], cfg.folds, cfg.seed)
    aug = fold_augmenter(cfg)
    oof = np.full(len(rows), np.nan)
    curves = np.full((len(rows), cfg.epochs), np.nan)
    fold_info = []
    modules = []
    references = []
    _seed_everything(cfg.seed)
    for f, (tr_local, va_local) in enumerate(folds):
        tr, va = data.train_idx[tr_local], data.train_idx[va_local]
        model = build_network(arch_name, kwargs).to(device)
        best = _train_fold(model, f, tr, va, data, cfg, loss_fn, aug, curves, device, progress, cancel)
        model.load_state_dict(best[1])
        pv = _predict(model, inputs[va], device)
        references.append(fold_feature_reference(model, inputs, tr, np.concatenate([va, data.test_idx]), f))
        oof[va] = pv
        fold_auc = binary_metrics(data.labels[va], pv)["auc"]
        fold_info.append({"fold": f, "train": len(tr), "validation": len(va), "best_epoch": best[2] + 1,
                          "validation_loss": round(best[0], 4), "validation_auc": _r(fold_auc)})
        modules.append(model.cpu())
    result = _evaluate_folds(modules, data, oof, curves, [r.id for r in rows])
    paths = _write_package(Path(out_dir), overwrite, csv_path, cfg, arch_name, kwargs, modules, references, fold_info, result,
                           rows, data, oof, curves, t0)
    report(progress, 1.0, "done")
    return TrainResult(paths, oof[data.train_idx], data.labels[data.train_idx], result["out_of_fold"],
                       result["test"], result["likely_mislabelled"], time.perf_counter() - t0)


# ---------------------------------------------------------------------------- steps of train_folds
@dataclass
class _FoldData:
    """The preprocessed inputs ``(N, 1, X, Y, Z)``, labels ``(N,)`` and which rows are
    cross-validated (``train_idx``) or held out (``test_idx``)."""

    inputs: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray


def _seed_everything(seed: int) -> None:
    """torch, numpy and MONAI's global generators (the networks' initial weights, the batches)."""
    import monai
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    monai.utils.set_determinism(seed=seed)


def _train_fold(model, f: int, tr: np.ndarray, va: np.ndarray, data: _FoldData, cfg: TrainConfig, loss_fn, aug,
                curves: np.ndarray, device: str, progress: Optional[ProgressCallback],
                cancel: Optional[CancelToken]) -> Tuple[float, Any, int]:
    """Train fold ``f`` on rows ``tr``; ``(best validation loss, its state dict, its epoch)``.
    Per-case training losses go into ``curves`` ``(cases, epochs)``."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", patience=cfg.patience, factor=cfg.factor)
    best: Tuple[float, Any, int] = (math.inf, None, -1)
    rng = np.random.default_rng(cfg.seed + f)
    xv = torch.from_numpy(data.inputs[va]).to(device)
    yv = torch.from_numpy(data.labels[va].astype(np.float32)).to(device)
    total_steps = cfg.folds * cfg.epochs
    for epoch in range(cfg.epochs):
        check_cancel(cancel)
        model.train()
        _train_epoch(model, opt, rng.permutation(tr), data, cfg, loss_fn, aug, curves[:, epoch], device)
        model.eval()
        with torch.inference_mode():
            vloss = float(loss_fn(model(xv)[:, 0], yv).mean())
        sched.step(vloss)
        if vloss < best[0]:
            best = (vloss, copy.deepcopy(model.state_dict()), epoch)
        report(progress, 0.1 + 0.85 * (f * cfg.epochs + epoch + 1) / total_steps,
               f"fold {f + 1}/{cfg.folds} epoch {epoch + 1}/{cfg.epochs} val loss {vloss:.3f}")
    return best


def _train_epoch(model, opt, order: np.ndarray, data: _FoldData, cfg: TrainConfig, loss_fn, aug,
                 epoch_losses: np.ndarray, device: str) -> None:
    """One pass over ``order`` (row indices) in batches; each case's loss into ``epoch_losses``."""
    import torch

    for s in range(0, len(order), cfg.batch_size):
        b = order[s:s + cfg.batch_size]
        if len(b) < 2 and len(order) > 1:
            b = np.concatenate([b, order[:1]])  # no batch of one (norm layers)
        xb = [torch.from_numpy(data.inputs[i]) for i in b]
        if aug is not None:
            xb = [torch.as_tensor(aug(x)).float() for x in xb]
        xb = torch.stack(xb).to(device)
        yb = torch.from_numpy(data.labels[b].astype(np.float32)).to(device)
        per = loss_fn(model(xb)[:, 0], yb)
        opt.zero_grad()
        per.mean().backward()
        opt.step()
        for i, lv in zip(b, per.detach().cpu().numpy()):
            epoch_losses[i] = float(lv)


def _evaluate_folds(modules: Sequence[Any], data: _FoldData, oof: np.ndarray, curves: np.ndarray,
                    ids: Sequence[str]) -> Dict[str, Any]:
    """Out-of-fold and test metrics (test: mean of the fold models) and likely mislabelled cases."""
    oof_metrics = bootstrap_metrics(data.labels[data.train_idx], oof[data.train_idx])
    test_metrics = None
    test_prob = None
    if len(data.test_idx):
        test_prob = np.mean([_predict(m, data.inputs[data.test_idx], "cpu") for m in modules], axis=0)
        test_metrics = bootstrap_metrics(data.labels[data.test_idx], test_prob)
    return {"out_of_fold": oof_metrics, "test": test_metrics, "test_probability": test_prob,
            "likely_mislabelled": flag_mislabelled(ids, curves, data.labels)}


def _fold_card(name: str, f: int, module, cfg: TrainConfig, arch_name: str, kwargs: Dict[str, Any], csv_path,
               fold_info: Sequence[Dict[str, Any]], result: Dict[str, Any]) -> Dict[str, Any]:
    """The model card of fold ``f``."""
    test_metrics = result["test"]
    return {
        "name": f"{name}-fold{f}", "version": "1.0.0", "task": "classification",
        "architecture": {"name": arch_name, "kwargs": kwargs}, "spatial_dims": 3,
        "input": describe_input(cfg.spacing_mm, cfg.size_xyz),
        "classes": CLASSES, "output": "one logit; P(recurrence) = sigmoid(logit)",
        "cam_layer": _cam_layer(module, PET_CAM_LAYERS.get(cfg.arch.lower()), cfg.size_xyz),
        "parameters": count_parameters(module),
        "synthetic_demo": cfg.synthetic_demo,
        "intended_use": ("synthetic phantom demo; not for clinical use" if cfg.synthetic_demo
                         else "research use: recurrence vs treatment-related change on 18F-FDOPA PET; not a medical device"),
        "training": {"command": cfg.command, "data": str(csv_path), "fold": f, "folds": cfg.folds,
                     "config": {k: v for k, v in asdict(cfg).items() if k not in ("command",)}},
        "validation": {"fold": fold_info[f], "out_of_fold_auc": result["out_of_fold"]["auc"],
                       "test_auc": test_metrics["auc"] if test_metrics else None},
    }


def _write_package(out_dir: Path, overwrite: bool, csv_path, cfg: TrainConfig, arch_name: str,
                   kwargs: Dict[str, Any], modules: Sequence[Any], references: Sequence[Optional[Dict[str, Any]]],
                   fold_info: Sequence[Dict[str, Any]],
                   result: Dict[str, Any], rows: Sequence[PetRow], data: _FoldData, oof: np.ndarray,
                   curves: np.ndarray, t0: float) -> List[Path]:
    """The fold models with their cards and the CSV / JSON reports, written atomically into
    ``out_dir``; the model paths."""
    name = cfg.name or f"pet-{cfg.arch.lower()}"
    ids, labels, train_idx, test_idx = [r.id for r in rows], data.labels, data.train_idx, data.test_idx
    paths = []
    with atomic_output(out_dir, directory=True, overwrite=overwrite) as tmp:
        for f, m in enumerate(modules):
            card = _fold_card(name, f, m, cfg, arch_name, kwargs, csv_path, fold_info, result)
            if references[f] is not None:
                card["ood"] = references[f]
            p = save_model(m, card, tmp / f"{name}-fold{f}.pt")
            paths.append(out_dir / p.name)
        _write_csv(tmp / "oof_predictions.csv", ["id", "label", "scanner", "probability"],
                   [[ids[i], labels[i], rows[i].scanner, round(float(oof[i]), 5)] for i in train_idx])
        if result["test_probability"] is not None:
            _write_csv(tmp / "test_predictions.csv", ["id", "label", "scanner", "probability"],
                       [[ids[i], labels[i], rows[i].scanner, round(float(p), 5)]
                        for i, p in zip(test_idx, result["test_probability"])])
        _write_csv(tmp / "loss_curves.csv", ["id", "label"] + [f"epoch{e + 1}" for e in range(cfg.epochs)],
                   [[ids[i], labels[i]] + ["" if np.isnan(v) else round(float(v), 5) for v in curves[i]] for i in train_idx])
        summary = {"architecture": arch_name, "kwargs": kwargs, "folds": fold_info, "out_of_fold": result["out_of_fold"],
                   "test": result["test"], "likely_mislabelled": result["likely_mislabelled"],
                   "seconds": round(time.perf_counter() - t0, 1),
                   "input": describe_input(cfg.spacing_mm, cfg.size_xyz), "command": cfg.command}
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return paths


def _cam_layer(module, preferred: Optional[str], size_xyz: Sequence[int] = REDUCED_SIZE_XYZ) -> str:
    """The card's Grad-CAM layer: the architecture's usual one when ``module`` has it (a CNN3D
    with fewer blocks, e.g. the bundled demo's two, has no ``features.6``), else its last
    convolutional block (:func:`clinicalai.attribution.layers.default_cam_layer`, found on a
    zero input of ``size_xyz``, the card's network input size)."""
    import torch

    if preferred and preferred in dict(module.named_modules()):
        return preferred
    device = next(module.parameters()).device
    return default_cam_layer(module, torch.zeros((1, 1, *size_xyz), device=device))


def _write_csv(path: Path, header: List[str], rows: List[List[Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _sub(progress: Optional[ProgressCallback], a: float, b: float) -> Optional[ProgressCallback]:
    return scaled(progress, a, b)
