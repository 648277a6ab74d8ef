"""The CT configuration of SegCorrect: tubular structures (biliary ducts) with a 3D U-Net.

Training samples patches around and away from the ducts (MONAI ``RandCropByPosNegLabeld``)
and augments them with MONAI transforms (flips, 90-degree and small rotations, elastic
deformation, intensity scale / shift). Inference runs the network over the whole volume with
MONAI ``sliding_window_inference`` (Gaussian-weighted overlapping patches), on the input
grid: nothing is resampled, so the result is on the image's geometry by construction.

Intensities: a HU window (default -100..300 HU) mapped to 0..1, recorded in the card as
``normalization {"kind": "minmax", "lower", "upper"}``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import ClinicalAIError, InputError, ModelError
from ..models import check_model_output, resolve_device, save_model
from ..models.layout import is_monai_layout, normalize_intensity, prepare_monai_input
from ..networks import build_network
from ..phantoms.tubular import TUBULAR_LABELS, TubularCase, tubular_dataset
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..volume import SpatialPipeline, Volume
from .labels import card_labels
from .outputs import SegmenterOutput, TrainResult, card_segments, slice_confidence, softmax

#: HU window mapped to 0..1
HU_WINDOW = (-100.0, 300.0)
DEFAULT_PATCH = (32, 32, 32)
DEFAULT_CT_CHANNELS = (8, 16, 32, 64)


def ct_architecture_spec(channels: Optional[Sequence[int]] = None, num_classes: int = 2) -> Dict[str, Any]:
    """The card's ``architecture``: MONAI 3D UNet (1 residual unit per level)."""
    ch = [int(c) for c in (channels or DEFAULT_CT_CHANNELS)]
    return {"name": "monai.networks.nets.UNet",
            "kwargs": {"spatial_dims": 3, "in_channels": 1, "out_channels": num_classes, "channels": ch,
                       "strides": [2] * (len(ch) - 1), "num_res_units": 1, "norm": "batch"}}


def window_hu(array: np.ndarray, lower: float = HU_WINDOW[0], upper: float = HU_WINDOW[1]) -> np.ndarray:
    """HU -> 0..1 over ``[lower, upper]``, clipped (MONAI ``ScaleIntensityRange``)."""
    import torch
    from monai.transforms import ScaleIntensityRange

    out = ScaleIntensityRange(a_min=lower, a_max=upper, b_min=0.0, b_max=1.0, clip=True)(
        torch.from_numpy(np.asarray(array, np.float32)))
    return np.asarray(out.as_tensor().numpy() if hasattr(out, "as_tensor") else out, np.float32)


def _train_transforms(patch: Sequence[int], samples: int, seed: int, augment: bool):
    from monai.transforms import (
        Compose,
        Rand3DElasticd,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandRotate90d,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "label")
    steps = [RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=tuple(patch), pos=2, neg=1,
                                    num_samples=samples, allow_smaller=True)]
    if augment:
        steps += [
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
            RandRotate90d(keys=keys, prob=0.3, spatial_axes=(1, 2)),
            RandRotated(keys=keys, prob=0.3, range_x=0.2, range_y=0.2, range_z=0.2, mode=("bilinear", "nearest")),
            Rand3DElasticd(keys=keys, prob=0.2, sigma_range=(5, 7), magnitude_range=(20, 60),
                           mode=("bilinear", "nearest"), padding_mode="zeros"),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        ]
    t = Compose(steps)
    t.set_random_state(seed)
    return t


def _predictor(model_or_module, cancel: Optional[CancelToken], counter: Optional[List[int]] = None,
               progress: Optional[ProgressCallback] = None, total: int = 1):
    """A callable for ``sliding_window_inference`` over a torch module or a LoadedModel."""
    import torch

    def run(x):
        check_cancel(cancel)
        if hasattr(model_or_module, "predict"):
            y = torch.from_numpy(model_or_module.predict(x.detach().cpu().numpy())).to(x.device)
        else:
            y = model_or_module(x)
        if counter is not None:
            counter[0] += 1
            report(progress, 0.05 + 0.85 * min(1.0, counter[0] / max(total, 1)), f"patch batch {counter[0]}/{total}")
        return y

    return run


def _n_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    n = 1
    for s, r in zip(shape, roi):
        r = min(r, s) if s >= r else r
        step = max(1, int(r * (1 - overlap)))
        n *= 1 if s <= r else int(np.ceil((s - r) / step)) + 1
    return n


def ct_dice(module, cases: Sequence[TubularCase], patch: Sequence[int], device: str = "cpu") -> float:
    """Mean duct Dice (MONAI ``DiceMetric``) of whole-volume sliding-window predictions."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=False, reduction="mean")
    module.eval()
    with torch.inference_mode():
        for case in cases:
            x = torch.from_numpy(window_hu(case.image.array))[None, None].to(device)
            logits = sliding_window_inference(x, tuple(patch), 4, module, overlap=0.25, mode="gaussian")
            pred = logits.argmax(1, keepdim=True)
            y = torch.from_numpy(case.labels.array.astype(np.int64))[None, None].to(device)
            metric(torch.cat([pred == 0, pred == 1], 1).float(), torch.cat([y == 0, y == 1], 1).float())
    return float(metric.aggregate().item())


def train_ct_segmenter(
    data: Any = 6,
    epochs: int = 20,
    out_path: "str | Path | None" = None,
    *,
    channels: Optional[Sequence[int]] = None,
    patch: Sequence[int] = DEFAULT_PATCH,
    samples_per_case: int = 4,
    lr: float = 1e-3,
    augment: bool = True,
    seed: int = 0,
    max_seconds: Optional[float] = None,
    device: str = "cpu",
    name: str = "ct-ducts-unet3d",
    command: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
):
    """Train the 3D duct U-Net on tubular phantoms (``data``: a number of them or a case list).

    The last case is held out for validation (sliding-window Dice on the whole volume); the
    best epoch's weights are kept. Returns a :class:`~clinicalai.segcorrect.segmenter.TrainResult`.
    """
    import torch

    t0 = time.perf_counter()
    cases = tubular_dataset(int(data), seed=seed) if isinstance(data, (int, np.integer)) else list(data)
    if len(cases) < 2:
        raise InputError("CT training needs at least 2 cases (one is held out for validation)")
    train, val = cases[:-1], cases[-1:]
    dev = resolve_device(device)
    torch.manual_seed(seed)
    spec = ct_architecture_spec(channels)
    module = build_network(spec["name"], spec["kwargs"]).to(dev)
    sampler = _train_transforms(patch, samples_per_case, seed, augment)
    items = [{"image": window_hu(c.image.array)[None], "label": c.labels.array[None].astype(np.float32)} for c in train]
    best, history = _fit_ct(module, items, sampler, val, patch=patch, epochs=epochs, lr=lr, max_seconds=max_seconds,
                            t0=t0, device=dev, progress=progress, cancel=cancel)
    card = ct_segmenter_card(spec, patch, name=name, training={
        "command": command, "data": f"{len(cases)} tubular CT phantoms", "epochs_run": len(history),
        "optimizer": f"Adam lr {lr}", "loss": "monai.losses.DiceCELoss", "patch": list(patch),
        "augmentation": bool(augment), "seed": seed}, duct_dice=best)
    path = save_model(module, card, out_path) if out_path is not None else None
    return TrainResult(module=module, card=card, best_val_dice=best, history=history, path=path,
                       seconds=time.perf_counter() - t0)


def _fit_ct(module, items: Sequence[Dict[str, np.ndarray]], sampler, val: Sequence[TubularCase], *,
            patch: Sequence[int], epochs: int, lr: float, max_seconds: Optional[float], t0: float, device: str,
            progress: Optional[ProgressCallback], cancel: Optional[CancelToken]):
    """The epochs of :func:`train_ct_segmenter`: Adam + Dice-CE on patches ``sampler`` draws
    from each training item, whole-volume Dice on ``val`` after each epoch. The module ends
    with the best epoch's weights, in eval mode; returns ``(best Dice, history)``."""
    import torch
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    best, best_state, history = -1.0, copy.deepcopy(module.state_dict()), []
    for epoch in range(1, epochs + 1):
        check_cancel(cancel)
        module.train()
        losses = []
        for item in items:
            patches = sampler(item)
            x = torch.stack([torch.as_tensor(p["image"]) for p in patches]).float().to(device)
            y = torch.stack([torch.as_tensor(p["label"]) for p in patches]).round().to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        dice = ct_dice(module, val, patch, device)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": dice})
        if dice > best:
            best, best_state = dice, copy.deepcopy(module.state_dict())
        report(progress, epoch / epochs, f"epoch {epoch}/{epochs}: val Dice {dice:.3f}")
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    module.load_state_dict(best_state)
    module.eval()
    return best, history


def ct_segmenter_card(spec: Dict[str, Any], patch: Sequence[int], name: str = "ct-ducts-unet3d",
                      training: Optional[Dict[str, Any]] = None, duct_dice: float = float("nan")) -> Dict[str, Any]:
    """The model card of a 3D duct segmenter (engine layout, HU window, sliding window)."""
    return {
        "name": name, "version": "1.0.0", "task": "segmentation", "format": "state_dict",
        "architecture": spec, "spatial_dims": 3,
        "input": {"channels": 1, "size": [int(p) for p in patch], "units": "HU", "modality": "CT",
                  "normalization": {"kind": "minmax", "lower": HU_WINDOW[0], "upper": HU_WINDOW[1]}},
        "labels": card_labels(TUBULAR_LABELS),
        "inference": {"method": "monai.inferers.sliding_window_inference", "roi_size": [int(p) for p in patch],
                      "overlap": 0.25, "mode": "gaussian"},
        "synthetic_demo": True, "intended_use": "synthetic phantom demo; not for clinical use",
        "training": training or {},
        "validation": {"metric": "monai.metrics.DiceMetric (duct, whole held-out volume)", "dice": {"duct": round(duct_dice, 4)}},
    }


def segment_ct(
    image: Volume,
    model,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    overlap: Optional[float] = None,
    sw_batch_size: Optional[int] = None,
):
    """3D segmentation onto the image's own grid, as the model card says.

    Engine-layout cards (the CT duct model): the volume's own grid, HU window, MONAI
    ``sliding_window_inference``. MONAI-layout cards (a MONAI bundle, or a ``.pt`` trained
    with MONAI transforms): the card's spatial steps (:mod:`clinicalai.models.layout`:
    ``Orientation``, ``Spacing``, ``CropForeground``), its normalisation, its inferer
    (``inference.inferer``: ``sliding_window`` with ``roi_size`` / ``overlap`` /
    ``sw_batch_size`` / ``mode``, or ``simple`` = the whole volume at once) and its
    post-processing (``postprocessing.activation``: ``softmax`` or ``sigmoid`` with
    ``threshold``); the probabilities go back through the recorded inverses (as MONAI's
    ``Invertd``) and the labels are their argmax on the input grid.

    Returns a :class:`~clinicalai.segcorrect.segmenter.SegmenterOutput` (``frame`` is ``None``).
    Raises :class:`ModelError` for a model that is not a 3D segmenter.
    """
    card = model.card
    if card.spatial_dims != 3 or card.task != "segmentation":
        raise ModelError(f"model {card.name} is not a 3D segmentation model")
    if image.array.ndim != 3 or min(image.shape) < 2:
        raise InputError("the image is a 2D image; this model needs a 3D volume")
    t0 = time.perf_counter()
    report(progress, 0.01, "preparing the network input")
    norm = card.input.normalization
    if is_monai_layout(card):
        net_image, pipe = prepare_monai_input(image, card)
        x = net_image.array
    elif norm.kind == "minmax":
        net_image, pipe = image, SpatialPipeline()
        x = window_hu(image.array, norm.lower if norm.lower is not None else HU_WINDOW[0],
                      norm.upper if norm.upper is not None else HU_WINDOW[1])
    else:
        net_image, pipe = image, SpatialPipeline()
        x = normalize_intensity(image.array, norm)
    inf = card.extra_get("inference", {}) or {}
    check_cancel(cancel)
    logits = _infer_3d(model, x, inf, overlap, sw_batch_size, progress, cancel)
    t1 = time.perf_counter()
    post = card.extra_get("postprocessing", {}) or {}
    probs = _activation(logits, card, post)
    if pipe.inverses:
        report(progress, 0.92, "mapping back onto the image grid")
        probs = np.stack([pipe.invert(net_image.with_array(p), interpolator="linear").array for p in probs]).astype(np.float32)
    values = np.array([0] + [lab.value for lab in card.labels], np.uint8)
    labels = values[_label_index(probs, post)]
    conf = slice_confidence(probs.max(0), labels > 0)
    out = image.with_array(labels, modality="SEG", units="label", metadata={"segments": card_segments(card), "model": card.name})
    report(progress, 1.0, "segmentation done")
    return SegmenterOutput(labels=out, probabilities=probs, slice_confidence=conf, frame=None,
                           timings={"inference_s": t1 - t0, "postprocess_s": time.perf_counter() - t1,
                                    "total_s": time.perf_counter() - t0})


def _label_index(probs: np.ndarray, post: Dict[str, Any]) -> np.ndarray:
    """Index into [background, labels...] per voxel: argmax (MONAI ``AsDiscrete(argmax=True)``),
    or for sigmoid outputs the strongest label at or above ``threshold`` (MONAI
    ``AsDiscrete(threshold=...)``), else background."""
    if post.get("activation") != "sigmoid":
        return probs.argmax(0)
    fg = probs[1:]
    return np.where(fg.max(0) >= float(post.get("threshold", 0.5)), fg.argmax(0) + 1, 0)


def _infer_3d(model, x: np.ndarray, inf: Dict[str, Any], overlap: Optional[float], sw_batch_size: Optional[int],
              progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> np.ndarray:
    """Logits ``(C, z, y, x)`` of ``model`` for the normalised array ``x`` ``(z, y, x)``: MONAI
    ``sliding_window_inference`` (the default) or one forward pass (``inferer: simple``)."""
    import torch
    from monai.inferers import sliding_window_inference

    if inf.get("inferer") == "simple":
        report(progress, 0.05, "whole-volume inference")
        return model.predict(x[None, None])[0].astype(np.float32)
    roi_xyz = inf.get("roi_size") or model.card.input.size or DEFAULT_PATCH
    # the card gives roi_size in the network's own axis order: (x, y, z) for a MONAI-layout
    # model, which the engine (arrays z, y, x) reverses
    roi = tuple(int(s) for s in (reversed(roi_xyz) if model.card.input.layout.kind == "monai" else roi_xyz))
    ov = float(overlap if overlap is not None else inf.get("overlap", 0.25))
    batch = int(sw_batch_size or inf.get("sw_batch_size", 4))
    total = int(np.ceil(_n_windows(x.shape, roi, ov) / batch))
    counter = [0]
    report(progress, 0.02, "sliding-window inference")
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(np.ascontiguousarray(x))[None, None], roi, batch,
            _predictor(model, cancel, counter, progress, total), overlap=ov, mode=inf.get("mode", "gaussian"),
        )
    return logits[0].cpu().numpy().astype(np.float32)


def _activation(logits: np.ndarray, card, post: Dict[str, Any]) -> np.ndarray:
    """Per-class probabilities ``(labels + 1, ...)`` from logits ``(C, ...)``: softmax over
    ``labels + 1`` channels, or a sigmoid per label channel (``activation: sigmoid``; the
    background is 1 - the largest label probability)."""
    n_labels = len(card.labels)
    if post.get("activation", "softmax") == "sigmoid":
        if logits.shape[0] != n_labels:
            raise ModelError(f"model {card.name} outputs {logits.shape[0]} channels; with a sigmoid its card's "
                             f"{n_labels} label(s) need one channel each")
        fg = 1.0 / (1.0 + np.exp(-logits))
        return np.concatenate([1.0 - fg.max(0, keepdims=True), fg]).astype(np.float32)
    if logits.shape[0] != n_labels + 1:
        raise ModelError(f"model {card.name} outputs {logits.shape[0]} channels but its card lists "
                         f"{n_labels} labels (+ background)")
    return softmax(logits, axis=0)


__all__ = ["HU_WINDOW", "ct_architecture_spec", "ct_dice", "ct_segmenter_card", "segment_ct", "train_ct_segmenter",
           "window_hu"]


CT_DEMO_COMMAND = (
    "python -m clinicalai.segcorrect.ct --phantoms 10 --epochs 60 --max-minutes 5 --lr 0.003 "
    "-o Resources/Models/ct-ducts-unet3d.pt"
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m clinicalai.segcorrect.ct``: train the CT duct demo model on phantoms."""
    import argparse
    import shlex
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m clinicalai.segcorrect.ct", description=train_ct_segmenter.__doc__)
    p.add_argument("--phantoms", type=int, default=10, help="number of tubular CT phantoms (last one held out)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt")
    args = p.parse_args(argv)
    try:
        check_model_output(args.output)
        r = train_ct_segmenter(args.phantoms, args.epochs, args.output, lr=args.lr, seed=args.seed,
                               max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                               command="python -m clinicalai.segcorrect.ct " + " ".join(shlex.quote(a) for a in argv))
    except ClinicalAIError as exc:
        print(f"clinicalai: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({len(r.history)} epochs in {r.seconds:.0f} s); held-out duct Dice {r.best_val_dice:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
