"""2D short-axis segmenters (MONAI networks): training and two-pass inference on a volume.

Architectures (all from ``monai.networks.nets``, 2D, 1 input channel, 4 outputs: background,
RV, MYO, LV): ``unet`` (UNet), ``resunet`` (UNet with 2 residual units per level),
``attention-unet`` (AttentionUnet), ``swin-unetr`` (SwinUNETR). Training follows the study:
Adam lr 1e-3, up to 100 epochs, Dice + cross-entropy (MONAI ``DiceCELoss``), the checkpoint
with the best validation Dice (MONAI ``DiceMetric``) is kept.

Inference (:func:`segment_volume`) never looks at ground truth: a coarse pass on the whole
slice (resized to 128 x 128) finds the heart, its largest foreground component gives the
crop (:func:`~clinicalai.segcorrect.preprocess.frame_from_mask`, the rule used for training),
and a second pass on the crop gives the result, mapped back onto the input grid. When that
fine pass labels less than half of the component the crop was set on, the next largest
components are tried, and if none is confirmed the largest part of what the best fine pass found
(``SegmenterOutput.heart_search`` records each try; :func:`find_heart`). A card with
``postprocessing: {"keep_largest_component": true}`` then keeps only the largest 3D connected
component of each label (MONAI ``KeepLargestConnectedComponent``): islands drawn away from the heart go.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..augment import augmentation_params, make_augmenter
from ..errors import InputError, ModelError
from ..models import LoadedModel, parse_card, resolve_device, save_model
from ..models.layout import apply_spatial_steps
from ..models.layout import normalize_intensity as card_normalization
from ..networks import build_network
from ..progress import CancelToken, ProgressCallback, check_cancel, report, scaled
from ..volume import Volume
from . import ARCHITECTURES
from .ct import segment_ct
from .data import build_slices, resolve_cases, split_cases
from .labels import CARDIAC_LABELS, N_CLASSES, card_labels
from .outputs import SegmenterOutput, TrainResult, card_segments, crop_confirmed, slice_confidence, softmax
from .preprocess import (
    CROP_MARGIN,
    MIN_CROP_MM,
    NETWORK_SIZE,
    SliceFrame,
    frame_for_volume,
    crop_voxels,
    frame_from_mask,
    from_network,
    normalize_intensity,
    to_network,
)

log = logging.getLogger(__name__)

#: default feature channels per level (4 levels: 128 -> 16 px at the bottom)
DEFAULT_CHANNELS = (16, 32, 64, 128)

INTENDED_USE_DEMO = "synthetic phantom demo; not for clinical use"

#: coarse components tried as the heart, largest first, while none is confirmed
MAX_HEART_CANDIDATES = 3
#: a coarse component smaller than this fraction of the largest is not tried
MIN_CANDIDATE_FRACTION = 0.1
#: the smallest fine-pass foreground (mL) tried as a refined crop: far below a heart (the
#: phantoms' hearts are 139-506 mL, an adult's several hundred), far above a speck
MIN_REFINED_ML = 10.0

#: the card key under ``postprocessing`` that switches on :func:`keep_largest_components`
KEEP_LARGEST_KEY = "keep_largest_component"


def architecture_spec(arch: str, channels: Optional[Sequence[int]] = None, num_classes: int = N_CLASSES) -> Dict[str, Any]:
    """The card's ``architecture`` entry (allow-listed MONAI name + JSON kwargs) for ``arch``."""
    ch = [int(c) for c in (channels or DEFAULT_CHANNELS)]
    strides = [2] * (len(ch) - 1)
    if arch in ("unet", "resunet"):
        return {"name": "monai.networks.nets.UNet",
                "kwargs": {"spatial_dims": 2, "in_channels": 1, "out_channels": num_classes, "channels": ch,
                           "strides": strides, "num_res_units": 2 if arch == "resunet" else 0, "norm": "batch"}}
    if arch == "attention-unet":
        return {"name": "monai.networks.nets.AttentionUnet",
                "kwargs": {"spatial_dims": 2, "in_channels": 1, "out_channels": num_classes, "channels": ch,
                           "strides": strides}}
    if arch == "swin-unetr":
        # feature_size must be a multiple of 12 (the attention heads split it); 128 px is a
        # multiple of 32, as SwinUNETR needs
        feature = max(12, 12 * int(round(ch[0] / 12)))
        return {"name": "monai.networks.nets.SwinUNETR",
                "kwargs": {"spatial_dims": 2, "in_channels": 1, "out_channels": num_classes,
                           "feature_size": feature, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24]}}
    raise InputError(f"unknown segmenter architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


# ------------------------------------------------------------------------------------ training
def _dice_on(module, images: np.ndarray, labels: np.ndarray, device: str, batch_size: int = 32) -> Dict[str, float]:
    """Mean foreground Dice (MONAI ``DiceMetric``) and per class on network-space slices."""
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot as monai_one_hot

    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    module.eval()
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(images[s:s + batch_size]).to(device)
            y = torch.from_numpy(labels[s:s + batch_size].astype(np.int64)).to(device)
            pred = module(x).argmax(1, keepdim=True)
            metric(monai_one_hot(pred, N_CLASSES), monai_one_hot(y, N_CLASSES))
    per_class = metric.aggregate().cpu().numpy()
    per_class = np.nan_to_num(per_class, nan=0.0)
    names = [lab["name"] for lab in CARDIAC_LABELS]
    out = {name: float(v) for name, v in zip(names, per_class)}
    out["mean"] = float(per_class.mean())
    return out


def train_segmenter(
    data: Any,
    arch: str = "unet",
    epochs: int = 100,
    out_path: "str | Path | None" = None,
    *,
    channels: Optional[Sequence[int]] = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    val_fraction: float = 0.2,
    seed: int = 0,
    out_size: Sequence[int] = NETWORK_SIZE,
    augment: bool = True,
    augmentation: "str | Dict[str, Any]" = "strong",
    max_seconds: Optional[float] = None,
    device: str = "cpu",
    name: Optional[str] = None,
    command: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    keep_largest: bool = False,
    threads: Optional[int] = None,
    init_from: "str | Path | None" = None,
    average_from: Optional[int] = None,
) -> TrainResult:
    """Train a 2D segmenter on ACDC cases or phantoms and (optionally) save its package.

    Args:
        data: ACDC folder, number of phantom cases, or a list of ``CardiacCase``.
        arch: one of :data:`ARCHITECTURES`.
        epochs: maximum epochs (an epoch = every training slice once, as a heart crop and as
            a whole-slice view).
        out_path: ``.pt`` path for :func:`clinicalai.models.save_model` (card beside it).
        channels: feature channels per level (default :data:`DEFAULT_CHANNELS`).
        augment: switch augmentation on / off.
        augmentation: preset name or parameters for :func:`clinicalai.augment.make_augmenter`
            (stored in the card's ``training.augmentation``).
        max_seconds: stop after this much training time (the best checkpoint is kept).
        device: ``cpu`` / ``cuda`` / ``auto``.
        keep_largest: the card asks for the largest-component step
            (``postprocessing.keep_largest_component``), and the card's validation uses it.
        threads: torch CPU threads (``None``: torch's default); recorded in the card.
        init_from: a segmenter package of the same architecture to start from (a run
            continued past a time limit); its card's training command goes into this card.
        average_from: keep the average of the weights after epochs ``average_from`` ..
            last (stochastic weight averaging, torch's ``AveragedModel``; batch-norm statistics
            recomputed on the training slices) instead of the best validation epoch.
            ``None``: the best epoch.
    """
    import torch

    t_start = time.perf_counter()
    if epochs < 1:
        raise InputError("epochs must be at least 1")
    if average_from is not None and not 1 <= average_from <= epochs:
        raise InputError(f"average_from must be an epoch between 1 and {epochs}, got {average_from}")
    _set_threads(threads)
    spec = architecture_spec(arch, channels)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    module = build_network(spec["name"], spec["kwargs"]).to(dev)
    started_from = _warm_start(module, init_from, spec)  # a wrong package fails before the data is built
    cases = resolve_cases(data, seed=seed)
    train_cases, val_cases = split_cases(cases, val_fraction, seed)
    report(progress, 0.0, f"preparing {len(train_cases)} training / {len(val_cases)} validation cases")
    train_slices = build_slices(train_cases, seed=seed, out_size=out_size)
    val_slices = build_slices(val_cases, seed=seed + 1, out_size=out_size, exact=True)
    aug_params = augmentation_params(augmentation) if augment else None
    fit = _fit(module, train_cases, train_slices, val_slices, epochs=epochs, batch_size=batch_size, lr=lr,
               seed=seed, out_size=out_size, augmentation=aug_params, max_seconds=max_seconds, t_start=t_start, device=dev,
               progress=progress, cancel=cancel, average_from=average_from)
    report(progress, 1.0, "validating the whole pipeline on the held-out cases")
    volume_scores = validate_on_volumes(module, spec, val_cases, out_size, dev, keep_largest=keep_largest)
    training = {
        "command": command,
        "data": str(data) if isinstance(data, (str, Path)) else f"{len(cases)} cardiac phantom cases",
        "arch": arch, "epochs_run": len(fit.history), "epochs_max": epochs, "batch_size": batch_size,
        "optimizer": f"Adam lr {lr}", "loss": "monai.losses.DiceCELoss", "seed": seed,
        "n_train_cases": len(train_cases), "n_val_cases": len(val_cases),
        "n_train_slices": fit.n_train_slices, "augmentation": aug_params or False,
        "best_epoch": int(1 + int(np.argmax([h["val_dice"] for h in fit.history]))),
        **({"weight_averaging": fit.averaged} if fit.averaged else {}),
        "threads": torch.get_num_threads(), "device": str(dev), "seconds": round(time.perf_counter() - t_start, 1),
        **({"init_from": started_from} if started_from else {}),
    }
    card = segmenter_card(spec, name=name or f"cardiac-{arch}", synthetic=not isinstance(data, (str, Path)),
                          training=training, validation=_validation_record(len(val_cases), volume_scores, fit.scores),
                          out_size=out_size, keep_largest=keep_largest)
    path = save_model(module, card, out_path) if out_path is not None else None
    return TrainResult(module=module, card=card, best_val_dice=float(fit.best), history=fit.history, path=path,
                       seconds=time.perf_counter() - t_start)


def _warm_start(module, init_from: "str | Path | None", spec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Load the weights of the package ``init_from`` into ``module``; returns what the card
    records of it (path, sha256, its training command), ``None`` without ``init_from``.

    Raises:
        InputError: the package's architecture is not ``spec``.
    """
    if init_from is None:
        return None
    from ..models import load_model

    start = load_model(init_from, device="cpu")
    arch = start.card.architecture
    if arch.name != spec["name"] or dict(arch.kwargs) != dict(spec["kwargs"]):
        raise InputError(f"{init_from}: its architecture ({arch.name} {dict(arch.kwargs)}) is not the one "
                         f"asked for ({spec['name']} {spec['kwargs']})")
    module.load_state_dict(start.module.state_dict())
    return {"path": str(init_from), "sha256": start.card.sha256,
            "command": (start.card.training or {}).get("command")}


def _set_threads(threads: Optional[int]) -> None:
    """torch's CPU threads for a training run (``None``: leave torch's default)."""
    import torch

    if threads is None:
        return
    if threads < 1:
        raise InputError("threads must be at least 1")
    torch.set_num_threads(int(threads))


@dataclass
class _Fit:
    """The state of a training run: per-epoch history and the best checkpoint so far."""

    state: Dict[str, Any]
    history: List[Dict[str, float]] = field(default_factory=list)
    best: float = -1.0
    scores: Dict[str, float] = field(default_factory=dict)
    n_train_slices: int = 0
    averaged: Optional[Dict[str, Any]] = None  # what the card records of the weight averaging


def _fit(module, train_cases: Sequence[Any], train_slices: Tuple[np.ndarray, np.ndarray],
         val_slices: Tuple[np.ndarray, np.ndarray], *, epochs: int, batch_size: int, lr: float, seed: int,
         out_size: Sequence[int], augmentation: Optional[Dict[str, Any]], max_seconds: Optional[float], t_start: float, device: str,
         progress: Optional[ProgressCallback], cancel: Optional[CancelToken], average_from: Optional[int] = None) -> _Fit:
    """The epochs of :func:`train_segmenter`: Adam + Dice-CE on ``train_slices`` (crop jitter
    redrawn every 5th epoch), validation Dice on ``val_slices`` after each; the module ends
    with the best epoch's weights (with ``average_from``: the average of the weights after
    epochs ``average_from`` .. last), in eval mode."""
    import torch
    from monai.losses import DiceCELoss
    from torch.optim.swa_utils import AveragedModel

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    aug = make_augmenter(augmentation, seed) if augmentation is not None else None
    rng = np.random.default_rng(seed)
    fit = _Fit(state=copy.deepcopy(module.state_dict()))
    tr_img, tr_lab = train_slices
    average: Optional[AveragedModel] = None
    for epoch in range(1, epochs + 1):
        check_cancel(cancel)
        if epoch > 1 and epoch % 5 == 0:  # fresh crop jitter now and then
            tr_img, tr_lab = build_slices(train_cases, seed=seed + epoch, out_size=out_size)
        loss = _train_epoch(module, tr_img, tr_lab, rng.permutation(len(tr_img)), batch_size, aug, loss_fn, optimizer,
                            device, cancel)
        if average_from is not None and epoch >= average_from:
            if average is None:
                average = AveragedModel(module)
            average.update_parameters(module)
        scores = _dice_on(module, val_slices[0], val_slices[1], device)
        fit.history.append({"epoch": epoch, "loss": loss, "val_dice": scores["mean"]})
        if scores["mean"] > fit.best:
            fit.best, fit.state, fit.scores = scores["mean"], copy.deepcopy(module.state_dict()), scores
        report(progress, epoch / epochs, f"epoch {epoch}/{epochs}: loss {loss:.3f}, val Dice {scores['mean']:.3f}")
        if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
            log.info("time limit reached after %d epochs", epoch)
            break
    fit.n_train_slices = int(len(tr_img))
    if average is not None:
        _recompute_batch_norm(average, tr_img, tr_lab, batch_size, augmentation, seed, device)
        module.load_state_dict(average.module.state_dict())
        fit.scores = _dice_on(module, val_slices[0], val_slices[1], device)
        fit.averaged = {"method": "torch.optim.swa_utils.AveragedModel (equal weights) + update_bn on the last "
                                  "epoch's training slices, augmented", "epochs": [average_from, len(fit.history)],
                        "val_dice": round(fit.scores["mean"], 4)}
    else:
        if average_from is not None:  # the time limit came first
            fit.averaged = {"epochs": None, "note": f"the time limit stopped the run before epoch {average_from}: "
                                                    "the best epoch's weights were kept"}
        module.load_state_dict(fit.state)
    module.eval()
    return fit


def _recompute_batch_norm(average, images: np.ndarray, labels: np.ndarray, batch_size: int,
                          augmentation: Optional[Dict[str, Any]], seed: int, device: str) -> None:
    """Batch-norm running statistics of the averaged model from one pass over the training
    slices, augmented as in training: averaged weights are a network no epoch trained, so
    the statistics of any one epoch do not fit it (torch's ``update_bn``). The order and the
    augmentation draws start afresh from ``seed``, so the result depends only on the
    averaged weights and the slices."""
    from torch.optim.swa_utils import update_bn

    aug = make_augmenter(augmentation, seed) if augmentation is not None else None
    order = np.random.default_rng(seed).permutation(len(images))
    batches = [x for x, _ in _training_batches(images, labels, order, batch_size, aug, device)]
    update_bn(batches, average, device=device)


def _train_epoch(module, images: np.ndarray, labels: np.ndarray, order: np.ndarray, batch_size: int, aug, loss_fn,
                 optimizer, device: str, cancel: Optional[CancelToken]) -> float:
    """One pass over ``images`` / ``labels`` ``(N, 1, H, W)`` in ``order``; the mean batch loss
    (NaN when no batch ran)."""
    module.train()
    losses = []
    for x, y in _training_batches(images, labels, order, batch_size, aug, device):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(module(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        check_cancel(cancel)
    return float(np.mean(losses)) if losses else float("nan")


def _training_batches(images: np.ndarray, labels: np.ndarray, order: np.ndarray, batch_size: int, aug, device: str):
    """Yield ``(image, label)`` batches of ``images`` / ``labels`` ``(N, 1, H, W)`` in ``order``,
    each pair through ``aug`` when given, as float tensors on ``device`` (labels rounded);
    a last batch of one is left out (batch norm needs two samples)."""
    import torch

    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        if len(idx) < 2:
            continue
        x = torch.from_numpy(images[idx])
        y = torch.from_numpy(labels[idx].astype(np.float32))
        if aug is not None:
            pairs = [aug({"image": xi, "label": yi}) for xi, yi in zip(x, y)]
            x = torch.stack([torch.as_tensor(p["image"]) for p in pairs])
            y = torch.stack([torch.as_tensor(p["label"]) for p in pairs])
        yield x.float().to(device), y.round().to(device)


def _validation_record(n_cases: int, volume_scores: Dict[str, float], network_scores: Dict[str, float]) -> Dict[str, Any]:
    """The card's ``validation`` block of a trained segmenter."""
    return {"metric": "monai.metrics.DiceMetric on held-out cases: 'dice' = segment_volume "
                      "(coarse pass, crop, fine pass) on the input grid; 'network_space_dice' = "
                      "slices cropped on the ground truth",
            "n_cases": n_cases,
            "dice": volume_scores,
            "network_space_dice": {k: round(v, 4) for k, v in network_scores.items()}}


def validate_on_volumes(module, spec: Dict[str, Any], cases, out_size: Sequence[int] = NETWORK_SIZE,
                        device: str = "cpu", keep_largest: bool = False) -> Dict[str, float]:
    """Mean per-class Dice (MONAI ``DiceMetric``) of :func:`segment_volume` on whole cases
    (``keep_largest``: with the largest-component step)."""
    import torch
    from monai.metrics import DiceMetric

    card = parse_card(segmenter_card(spec, "validation", True, {}, {}, out_size, keep_largest), "validation card")
    model = LoadedModel(card=card, backend="torch", path=Path("."), device=device, module=module)
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    for case in cases:
        pred = segment_volume(case.image, model).labels.array
        onehot = lambda a: torch.from_numpy(np.stack([a == k for k in range(N_CLASSES)])[None].astype(np.float32))  # noqa: E731
        metric(onehot(pred), onehot(case.labels.array))
    per_class = np.nan_to_num(metric.aggregate().cpu().numpy(), nan=0.0)
    out = {lab["name"]: round(float(v), 4) for lab, v in zip(CARDIAC_LABELS, per_class)}
    out["mean"] = round(float(per_class.mean()), 4)
    return out


def segmenter_card(
    spec: Dict[str, Any],
    name: str,
    synthetic: bool,
    training: Dict[str, Any],
    validation: Dict[str, Any],
    out_size: Sequence[int] = NETWORK_SIZE,
    keep_largest: bool = False,
) -> Dict[str, Any]:
    """The model card of a 2D cardiac segmenter (``keep_largest``: with
    ``postprocessing: {"keep_largest_component": true}``, read by :func:`segment_volume`)."""
    card = {
        "name": name,
        "version": "1.0.0",
        "task": "segmentation",
        "format": "state_dict",
        "architecture": spec,
        "spatial_dims": 2,
        "input": {"channels": 1, "size": [int(s) for s in out_size], "modality": "MR",
                  # the fine pass normalised on the heart box: a wide field of view or a bright
                  # organ far from the heart broke whole-volume percentiles (docs/heldout.md)
                  "normalization": {"kind": "percentile", "lower": 1.0, "upper": 99.0, "region": "crop"}},
        "labels": card_labels(CARDIAC_LABELS),
        "preprocessing": {"slices": "short-axis slices, one network sample each",
                          "crop": "heart-centred box from a coarse whole-slice pass",
                          "crop_margin": CROP_MARGIN, "min_crop_mm": MIN_CROP_MM},
        "synthetic_demo": bool(synthetic),
        "intended_use": INTENDED_USE_DEMO if synthetic else "research use; not a medical device",
        "training": training,
        "validation": validation,
    }
    if keep_largest:
        card["postprocessing"] = {KEEP_LARGEST_KEY: True}
    return card


# ----------------------------------------------------------------------------------- inference
def check_segmentation_model(model, expected_labels: Optional[Sequence[str]] = None) -> None:
    """Raise :class:`ModelError` when ``model`` is not a segmenter this workflow can use."""
    card = model.card
    if card.task != "segmentation":
        raise ModelError(f"model {card.name} is a {card.task} model, not a segmentation model")
    if card.input.channels != 1:
        raise ModelError(f"model {card.name} expects {card.input.channels} input channels; segmenters here take 1")
    if expected_labels is not None:
        have = [lab.name for lab in sorted(card.labels, key=lambda lab: lab.value)]
        want = list(expected_labels)
        if [h.upper() for h in have] != [w.upper() for w in want]:
            raise ModelError(f"model {card.name} segments {', '.join(have)}; this workflow needs {', '.join(want)}")
        if [lab.value for lab in sorted(card.labels, key=lambda lab: lab.value)] != list(range(1, len(want) + 1)):
            raise ModelError(f"model {card.name}: label values must be 1..{len(want)}")


def _check_image(image: Volume) -> None:
    if not isinstance(image, Volume):
        raise InputError("the image must be a Volume")
    image.require_volumetric("image")
    image.require_finite("image")
    image.require_not_empty("image")


def _predict_probs(model, x: np.ndarray, n_classes: int, batch_size: int, progress, cancel) -> np.ndarray:
    """Softmax ``(z, C, H, W)`` for network-space images ``(z, 1, H, W)``."""
    out = []
    n = len(x)
    for s in range(0, n, batch_size):
        check_cancel(cancel)
        logits = model.predict(x[s:s + batch_size])
        if logits.shape[1] != n_classes:
            raise ModelError(
                f"model {model.card.name} outputs {logits.shape[1]} channels but its card lists "
                f"{n_classes - 1} labels (+ background)"
            )
        out.append(softmax(logits.astype(np.float32)))
        report(progress, min(n, s + batch_size) / n, f"slices {min(n, s + batch_size)}/{n}")
    return np.concatenate(out)


def keeps_largest_component(card: Any, override: Optional[bool] = None) -> bool:
    """Whether :func:`segment_volume` keeps only the largest 3D component of each label:
    ``override`` when given (the ``--keep-largest-component`` / ``--no-keep-largest-component``
    options), else the card's ``postprocessing.keep_largest_component`` (default off).

    Raises:
        ModelError: the card's value is not ``true`` / ``false``.
    """
    if override is not None:
        return bool(override)
    post = card.extra_get("postprocessing", {}) or {}
    value = post.get(KEEP_LARGEST_KEY, False) if isinstance(post, dict) else False
    if not isinstance(value, bool):
        raise ModelError(f"model {card.name}: postprocessing.{KEEP_LARGEST_KEY} must be true or false, got {value!r}")
    return value


def keep_largest_components(labels: Volume, values: Sequence[int]) -> Volume:
    """``labels`` (uint8 ``(z, y, x)``) with every voxel of a label in ``values`` that lies
    outside that label's largest 3D connected component set to background (0).

    MONAI ``KeepLargestConnectedComponent`` (per label independently, full 26-connectivity) on
    the whole volume: a structure is one connected body in 3D, so islands a 2D network draws
    away from the heart go while the heart's own slices stay joined through their neighbours.
    Geometry (spacing, origin, direction) and metadata are those of ``labels``; ``labels`` itself
    is not changed (the MONAI transform works in place, so it gets a copy).
    """
    from monai.transforms import KeepLargestConnectedComponent

    step = KeepLargestConnectedComponent(applied_labels=[int(v) for v in values], is_onehot=False, independent=True)
    kept = np.asarray(step(labels.array[None].copy()))[0]
    return labels.with_array(kept.astype(labels.array.dtype))


def segment_volume(
    image: Volume,
    model,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    batch_size: int = 16,
    expected_labels: Optional[Sequence[str]] = None,
    two_pass: bool = True,
    keep_largest: Optional[bool] = None,
) -> SegmenterOutput:
    """Segment a short-axis stack (2D model) or a CT volume (3D model) onto the input grid.

    Args:
        image: the volume ``(z, y, x)``; slices along z are short-axis slices.
        model: a :class:`~clinicalai.models.LoadedModel` with a segmentation card.
        expected_labels: label names the caller needs (e.g. ``["RV", "MYO", "LV"]``).
        two_pass: crop on the heart found by a coarse pass (the trained setting).
        keep_largest: keep only the largest 3D component per label
            (:func:`keep_largest_components`); ``None``: as the card's
            ``postprocessing.keep_largest_component`` says. Probabilities and slice confidence
            stay the network's own.

    Raises:
        InputError: 2D image, NaN / infinite voxels, empty or constant image.
        ModelError: not a segmentation model, label mismatch, output channels off the card.
        Cancelled: ``cancel`` was set.
    """
    check_segmentation_model(model, expected_labels)
    _check_image(image)
    keep = keeps_largest_component(model.card, keep_largest)  # a bad card value fails before inference
    out = _segment_any(image, model, progress, cancel, batch_size, two_pass)
    if keep:
        t = time.perf_counter()
        out.labels = keep_largest_components(out.labels, [lab.value for lab in model.card.labels])
        spent = time.perf_counter() - t
        out.timings["keep_largest_component_s"] = spent
        out.timings["total_s"] = out.timings.get("total_s", 0.0) + spent
    return out


def _segment_any(image: Volume, model, progress, cancel, batch_size: int, two_pass: bool) -> SegmenterOutput:
    """The network part of :func:`segment_volume`: the 3D path, a 2D MONAI-layout model on
    its own grid and back, or the slice pipeline."""
    if model.card.spatial_dims == 3:
        return segment_ct(image, model, progress=progress, cancel=cancel)
    net_image, pipe = apply_spatial_steps(image, model.card)
    if pipe.inverses:
        # a 2D MONAI-layout model: MONAI's reorientation / in-plane spacing first, then the
        # slice pipeline below on that grid, and both outputs back onto the input grid
        out = _segment_slices(net_image, model, progress, cancel, batch_size, two_pass)
        labels = pipe.invert(out.labels, interpolator="nearest")
        probs = np.stack([pipe.invert(net_image.with_array(p), interpolator="linear").array for p in out.probabilities])
        conf = probs.max(0)
        return SegmenterOutput(
            labels=image.with_array(labels.array.astype(np.uint8), modality="SEG", units="label",
                                    metadata=dict(out.labels.metadata)),
            probabilities=probs.astype(np.float32),
            slice_confidence=np.array([float(conf[k].mean()) for k in range(conf.shape[0])], np.float32),
            frame=None, timings=out.timings, heart_search=out.heart_search)
    return _segment_slices(image, model, progress, cancel, batch_size, two_pass)


def slice_intensities(array: np.ndarray, card: Any, crop: Optional[SliceFrame] = None) -> np.ndarray:
    """``(z, y, x)`` intensities normalised as a 2D segmenter's card says (float32).

    ``percentile`` cards (the cardiac models) go through :func:`.preprocess.normalize_intensity`,
    the rule they were trained with (defaults 1 / 99, a flat volume maps to zeros); every other
    kind through :func:`clinicalai.models.layout.normalize_intensity`. ``crop``: the fine pass's
    box; a ``percentile`` card with ``region: "crop"`` takes its percentiles from the voxels in
    that box (all slices) instead of the whole volume, and scales the whole volume with them.
    """
    norm = card.input.normalization
    if norm.kind == "percentile":  # per volume, clipped (the cardiac models' rule)
        reference = crop_voxels(array, crop) if crop is not None and norm.region == "crop" else None
        return normalize_intensity(array, norm.lower or 1.0, norm.upper or 99.0, reference=reference)
    return card_normalization(array, norm)


def _segment_slices(image: Volume, model, progress, cancel, batch_size: int, two_pass: bool) -> SegmenterOutput:
    """The slice pipeline of :func:`segment_volume` (2D model, slices along z of ``image``):
    normalise, coarse pass on the whole slice, fine pass on the heart crop, back to the grid."""
    t0 = time.perf_counter()
    timings: Dict[str, float] = {}
    card = model.card
    n_classes = len(card.labels) + 1
    out_size = tuple(card.input.size or NETWORK_SIZE)
    intensities = slice_intensities(image.array, card)
    frame = frame_for_volume(image.shape, spacing=image.spacing, out_size=out_size)
    timings["preprocess_s"] = time.perf_counter() - t0

    def run(frame, start: float, end: float) -> np.ndarray:
        x = to_network(intensities, frame, "image", normalize=False)[:, None]
        return _predict_probs(model, x, n_classes, batch_size, scaled(progress, start, end), cancel)

    report(progress, 0.02, "coarse pass")
    t = time.perf_counter()
    probs = run(frame, 0.02, 0.45 if two_pass else 0.9)
    timings["coarse_s"] = time.perf_counter() - t
    search: List[Dict[str, Any]] = []
    if two_pass:
        t = time.perf_counter()

        def fine_pass(k: int, candidate: np.ndarray) -> Tuple[SliceFrame, np.ndarray]:
            nonlocal intensities
            crop = frame_from_mask(candidate, image.spacing, out_size=out_size)
            if card.input.normalization.region == "crop":
                intensities = slice_intensities(image.array, card, crop=crop)
            # the first fine pass is the usual one; a second or third only runs when it failed
            start = 0.45 if k == 0 else 0.85 + 0.05 * (k - 1) / MAX_HEART_CANDIDATES
            return crop, run(crop, start, 0.85 if k == 0 else start + 0.05 / MAX_HEART_CANDIDATES)

        voxel_ml = float(np.prod(image.spacing)) / 1000.0
        found, search = find_heart(_heart_candidates(probs, frame, image.shape), fine_pass, voxel_ml)
        if found is not None:
            frame, probs = found
        timings["fine_s"] = time.perf_counter() - t
    check_cancel(cancel)
    t = time.perf_counter()
    report(progress, 0.92, "mapping back onto the image grid")
    out = _slices_to_grid(probs, frame, image, card)
    timings["postprocess_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    out.timings = timings
    out.heart_search = search
    report(progress, 1.0, "segmentation done")
    return out


def _heart_candidates(probs: np.ndarray, frame: SliceFrame, shape: Sequence[int]) -> List[np.ndarray]:
    """Where the heart may be: the coarse pass's foreground components ``(z, y, x)`` bool on
    the input grid, largest first, at most :data:`MAX_HEART_CANDIDATES`, none smaller than
    :data:`MIN_CANDIDATE_FRACTION` of the largest (``probs``: ``(z, C, H, W)`` in network space).

    Why more than the largest: on a wide field of view the coarse pass sees the heart at a
    quarter of the fine pass's scale, and a vessel or the chest wall beside it can come out
    as the larger component; the fine pass on that crop then finds nothing (held-out stacks).
    """
    components = _components_largest_first(_foreground_on_grid(probs, frame, shape), MAX_HEART_CANDIDATES)
    if not components:
        return []
    least = MIN_CANDIDATE_FRACTION * np.count_nonzero(components[0])
    return [c for c in components if np.count_nonzero(c) >= least]


def find_heart(
    candidates: Sequence[np.ndarray],
    fine_pass: Callable[[int, np.ndarray], Tuple[SliceFrame, np.ndarray]],
    voxel_ml: Optional[float] = None,
) -> Tuple[Optional[Tuple[SliceFrame, np.ndarray]], List[Dict[str, Any]]]:
    """The fine pass on the first candidate crop that it confirms.

    Args:
        candidates: coarse foreground components ``(z, y, x)`` bool, in the order to try
            (:func:`_heart_candidates`: largest first).
        fine_pass: ``(index, candidate) -> (crop, probabilities)``: the fine pass on the crop set
            on a candidate, softmax ``(z, C, H, W)`` in that crop's network space.
        voxel_ml: the volume of one voxel (mL); with it, when no candidate is confirmed, the
            largest component of the best crop's fine-pass foreground is tried as one more
            candidate if it holds at least :data:`MIN_REFINED_ML` (``refined: true`` in its record).

    Returns:
        ``(crop, probabilities)`` of the first crop whose fine pass confirms its candidate (labels
        :data:`~.outputs.CONFIRMED_FRACTION` of it), else of the crop whose fine pass labels the
        most voxels of its own candidate (``None`` without candidates), and one record per pass
        run (``voxels``, ``found``: those the fine pass labels, ``confirmed`` fraction, ``chosen``). Trying stops at the first confirmed
        candidate, so an image where the largest component is the heart costs one fine pass, as
        before.
    """
    best: Optional[Tuple[int, int, SliceFrame, np.ndarray]] = None
    search: List[Dict[str, Any]] = []

    def attempt(k: int, candidate: np.ndarray) -> bool:
        nonlocal best
        crop, probs = fine_pass(k, candidate)
        voxels = int(np.count_nonzero(candidate))
        found = int(np.count_nonzero(_foreground_on_grid(probs, crop, candidate.shape) & candidate))
        search.append({"voxels": voxels, "found": found, "confirmed": round(found / max(voxels, 1), 4), "chosen": False})
        if crop_confirmed(found, voxels):  # confirmed: it wins over any unconfirmed larger one
            best = (found, k, crop, probs)
            return True
        if best is None or found > best[0]:
            best = (found, k, crop, probs)
        return False

    confirmed = any(attempt(k, candidate) for k, candidate in enumerate(candidates))  # stops at the first
    if not confirmed and best is not None and voxel_ml:
        # a crop set on a component far larger than the heart (a very wide field of view, where
        # the coarse pass labels noise around it) can still hold the heart at a coarse scale:
        # crop again on what that fine pass found, once
        _, _, crop, probs = best
        refined = _components_largest_first(_foreground_on_grid(probs, crop, candidates[0].shape), 1)
        if refined and np.count_nonzero(refined[0]) * voxel_ml >= MIN_REFINED_ML:
            attempt(len(search), refined[0])
            search[-1]["refined"] = True
    if best is None:
        return None, search
    search[best[1]]["chosen"] = True
    return (best[2], best[3]), search


def _foreground_on_grid(probs: np.ndarray, frame: SliceFrame, shape: Sequence[int]) -> np.ndarray:
    """A pass's foreground ``(z, y, x)`` bool on the input grid of ``shape`` (``probs``:
    softmax ``(z, C, H, W)`` in ``frame``'s network space; the coarse and the fine pass alike)."""
    return from_network(probs.argmax(1).astype(np.uint8), frame, shape, kind="labels", method="nearest") > 0


def _components_largest_first(mask: np.ndarray, limit: int) -> List[np.ndarray]:
    """The ``limit`` largest connected components of bool ``mask`` (scipy's default
    6-connectivity in 3D), largest first, as bool masks; ``[]`` for an empty mask."""
    components, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = ndimage.sum(mask, components, range(1, n + 1))
    return [components == (i + 1) for i in np.argsort(-sizes, kind="stable")[:limit]]


def _slices_to_grid(probs: np.ndarray, frame: SliceFrame, image: Volume, card: Any) -> SegmenterOutput:
    """Network-space softmax ``(z, C, H, W)`` -> labels (card values), probabilities and
    per-slice confidence on ``image``'s grid (confidence over the crop box where a slice has
    no foreground)."""
    shape = image.shape
    prob_in = from_network(np.moveaxis(probs, 1, 0), frame, shape, kind="probabilities", num_classes=len(card.labels) + 1)
    values = np.array([0] + [lab.value for lab in card.labels], np.uint8)
    labels = values[prob_in.argmax(0).astype(np.uint8)]  # channel i is the i-th label of the card
    box = np.zeros(shape[1:], bool)
    ys, ye, xs, xe = frame.inside(shape[1:])
    box[ys:ye, xs:xe] = True
    conf = slice_confidence(prob_in.max(0), labels > 0, box)
    out = image.with_array(labels, modality="SEG", units="label",
                           metadata={"segments": card_segments(card), "model": card.name,
                                     "source": image.metadata.get("source")})
    return SegmenterOutput(labels=out, probabilities=prob_in, slice_confidence=conf, frame=frame)


__all__ = [
    "ARCHITECTURES",
    "DEFAULT_CHANNELS",
    "SegmenterOutput",
    "TrainResult",
    "architecture_spec",
    "check_segmentation_model",
    "keep_largest_components",
    "keeps_largest_component",
    "segment_volume",
    "segmenter_card",
    "validate_on_volumes",
    "train_segmenter",
]
