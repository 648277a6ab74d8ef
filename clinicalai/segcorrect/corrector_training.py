"""Training of the NVAE mask corrector, its model card and ``clinicalai train corrector``.

Training is denoising: the input is a plausible mask corrupted by
:mod:`clinicalai.segcorrect.corruptions` (or, with ``clean_fraction``, left clean, so a good
mask is mapped to itself), optionally plus pairs (segmenter output, ground truth); the target
is the plausible mask. Optimiser and schedule after the source study: Adamax lr 1e-2
(betas 0.9, 0.99, eps 1e-3), weight decay 3e-4, cosine annealing to 1e-4, batch 8, per-scale
KL weights ``beta`` with linear KL warm-up.

Masks are in the network space of :mod:`.corrector` (inference): 128 x 128 class-index
slices framed by :func:`~.preprocess.frame_from_mask`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..models import load_model, resolve_device, save_model
from ..phantoms.cardiac import cardiac_case
from ..progress import CancelToken, ProgressCallback, check_cancel, report, scaled
from .corruptions import CORRUPTION_KINDS, corrupt_slice
from .data import resolve_cases
from .evaluate import evaluate_correctors
from .labels import CARDIAC_LABELS, CARDIAC_NAMES, N_CLASSES, card_labels
from .preprocess import frame_from_mask, to_network
from .segmenter import segment_volume

#: KL weights per latent scale (coarsest first) of the source study
BETA_DEFAULT = (8.0, 10.0, 11.0)
BETA_CONTEXT = (1.0, 1.0, 5.0)


@dataclass
class CorrectorConfig:
    """Hyper-parameters of :func:`train_corrector` (defaults: the source study's)."""

    iterations: int = 2000
    batch_size: int = 8
    lr: float = 1e-2
    min_lr: float = 1e-4
    weight_decay: float = 3e-4
    kl_warmup: int = 6420
    beta: Optional[Tuple[float, ...]] = None  # default BETA_DEFAULT, or BETA_CONTEXT with context
    context: bool = False
    spectral_weight: float = 0.0  # > 0 turns on spectral regularisation (NVAE's lambda)
    clean_fraction: float = 0.25
    corruption_kinds: Tuple[str, ...] = CORRUPTION_KINDS
    context_corruption: float = 0.3  # chance that each neighbour slice is corrupted too
    seed: int = 0
    num_classes: int = N_CLASSES
    # network size (kwargs of NVAE)
    stem_channels: int = 4
    latent_channels: int = 20
    groups_per_scale: Tuple[int, ...] = (4, 2, 1)
    channel_reduction: int = 8
    preprocess_blocks: int = 2

    def resolved_beta(self) -> Tuple[float, ...]:
        return tuple(self.beta) if self.beta else (BETA_CONTEXT if self.context else BETA_DEFAULT)

    def network_kwargs(self) -> Dict[str, Any]:
        return {
            "in_channels": self.num_classes * (3 if self.context else 1),
            "out_channels": self.num_classes,
            "stem_channels": self.stem_channels,
            "latent_channels": self.latent_channels,
            "groups_per_scale": list(self.groups_per_scale),
            "channel_reduction": self.channel_reduction,
            "preprocess_blocks": self.preprocess_blocks,
        }



def network_space_masks(label_volume: Any) -> np.ndarray:
    """A label :class:`Volume` -> class-index slices ``(z, 128, 128)`` in the segmenter's frame.

    The box comes from the mask itself (:func:`~clinicalai.segcorrect.preprocess.frame_from_mask`),
    the rule used at inference on a raw mask, so training and correction see masks framed alike.
    """
    frame = frame_from_mask(label_volume.array, spacing=label_volume.spacing)
    return to_network(label_volume.array, frame, kind="labels")


def segmenter_pairs(cases: Sequence[Any], segmenter: Any, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``(segmenter output, ground truth)`` in network space for each case with an image.

    The segmenter (a segmentation :class:`~clinicalai.models.LoadedModel` with RV/MYO/LV labels)
    runs on ``case.image`` exactly as ``clinicalai segment`` does; both masks are framed on the
    *segmenter's* mask (the box the corrector will see at inference) so the pair stays aligned.
    Label values must be the class indices (1 RV, 2 MYO, 3 LV, as in ACDC and the phantoms).
    """
    pairs: List[Tuple[np.ndarray, np.ndarray]] = []
    for i, case in enumerate(cases):
        check_cancel(cancel)
        raw = segment_volume(case.image, segmenter, expected_labels=list(CARDIAC_NAMES)).labels
        frame = frame_from_mask(raw.array, spacing=raw.spacing)
        pairs.append((to_network(raw.array, frame, kind="labels"), to_network(case.labels.array, frame, kind="labels")))
        report(progress, (i + 1) / len(cases), f"segmenter outputs: case {i + 1} of {len(cases)}")
    return pairs


def phantom_masks(n: int, seed: int = 0) -> List[np.ndarray]:
    """Network-space ground-truth masks of ``n`` cardiac phantoms (ED and ES alternate)."""
    return [network_space_masks(cardiac_case(seed + i, ("ED", "ES")[i % 2]).labels) for i in range(n)]


@dataclass
class TrainingHistory:
    """Loss curve and timing of one training run (per logged iteration)."""

    iterations: List[int] = field(default_factory=list)
    loss: List[float] = field(default_factory=list)
    reconstruction: List[float] = field(default_factory=list)
    kl: List[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _sample_batch(
    volumes: Sequence[np.ndarray],
    pairs: Sequence[Tuple[np.ndarray, np.ndarray]],
    config: CorrectorConfig,
    rng: np.random.Generator,
    labels: Sequence[int],
) -> Tuple[np.ndarray, np.ndarray]:
    """One batch: inputs ``(B, C or 3C, H, W)`` one-hot and targets ``(B, H, W)`` int64."""
    xs, ys = [], []
    for _ in range(config.batch_size):
        if pairs and rng.random() < 0.3:
            noisy_vol, clean_vol = pairs[int(rng.integers(len(pairs)))]
            z = int(rng.integers(clean_vol.shape[0]))
            noisy = [noisy_vol[i] if 0 <= i < noisy_vol.shape[0] else None for i in (z - 1, z, z + 1)]
            target = clean_vol[z]
        else:
            vol = volumes[int(rng.integers(len(volumes)))]
            z = int(rng.integers(vol.shape[0]))
            target = vol[z]
            noisy = []
            for i in (z - 1, z, z + 1):
                if not 0 <= i < vol.shape[0]:
                    noisy.append(None)
                    continue
                s = vol[i]
                if i == z:
                    if rng.random() >= config.clean_fraction:
                        s = corrupt_slice(s, rng, config.corruption_kinds, (1, 3), labels)[0]
                elif config.context and rng.random() < config.context_corruption:
                    s = corrupt_slice(s, rng, config.corruption_kinds, 1, labels)[0]
                noisy.append(s)
        empty = np.zeros_like(target)
        trio = np.stack([empty if s is None else s for s in noisy])
        onehot = (trio[:, None] == np.arange(config.num_classes)[None, :, None, None]).astype(np.float32)
        xs.append(onehot.reshape(-1, *target.shape) if config.context else onehot[1])
        ys.append(target.astype(np.int64))
    return np.stack(xs), np.stack(ys)


def train_corrector(
    volumes: Sequence[np.ndarray],
    config: Optional[CorrectorConfig] = None,
    pairs: Sequence[Tuple[np.ndarray, np.ndarray]] = (),
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    log_every: int = 25,
    device: str = "cpu",
) -> Tuple[Any, TrainingHistory]:
    """Train an NVAE corrector.

    Args:
        volumes: plausible masks, each ``(z, H, W)`` class indices in network space (H, W
            divisible by 8; 128 x 128 for SegCorrect).
        config: hyper-parameters.
        pairs: optional ``(segmenter output, ground truth)`` volumes of the same shape each;
            30 % of samples are drawn from them when given.
        progress, cancel: as every workflow.
        device: ``cpu``, ``cuda`` or ``auto``.

    Returns:
        ``(trained NVAE in eval mode on the CPU, history)``.
    """
    import torch

    # imported on use: clinicalai.networks.nvae imports torch at module level
    from ..networks.nvae import NVAE, kl_warmup, nvae_loss

    device = resolve_device(device)
    config = config or CorrectorConfig()
    if not volumes:
        raise ValueError("train_corrector needs at least one plausible mask volume")
    shapes = {tuple(v.shape[1:]) for v in volumes}
    if len(shapes) != 1:
        raise ValueError(f"all training slices must have one in-plane shape, got {sorted(shapes)}")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    labels = list(range(1, config.num_classes))
    model = NVAE(**config.network_kwargs()).to(device)
    beta = config.resolved_beta()
    if len(beta) != len(config.groups_per_scale):
        raise ValueError(f"beta needs {len(config.groups_per_scale)} values (one per latent scale), got {beta}")
    opt = torch.optim.Adamax(model.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-3,
                             weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.iterations), eta_min=config.min_lr)
    history = TrainingHistory()
    started = time.perf_counter()
    model.train()
    for it in range(config.iterations):
        check_cancel(cancel)
        x, y = _sample_batch(volumes, pairs, config, rng, labels)
        logits, kl_scales = model.elbo_terms(torch.from_numpy(x).to(device))
        loss, rec, kl = nvae_loss(logits, torch.from_numpy(y).to(device), kl_scales, beta, kl_warmup(it, config.kl_warmup))
        if config.spectral_weight > 0:
            loss = loss + config.spectral_weight * model.spectral_regularisation()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 200.0)
        opt.step()
        sched.step()
        if it % log_every == 0 or it == config.iterations - 1:
            history.iterations.append(it)
            history.loss.append(float(loss.detach()))
            history.reconstruction.append(float(rec.detach()))
            history.kl.append(float(kl.detach()))
            report(progress, (it + 1) / config.iterations, f"corrector iteration {it + 1}/{config.iterations} "
                                                           f"loss {float(loss.detach()):.4f}")
    history.seconds = time.perf_counter() - started
    model.eval().cpu()
    return model, history


def corrector_card(
    config: CorrectorConfig,
    labels: Sequence[Mapping[str, Any]],
    name: str = "cardiac-nvae",
    training: Optional[Dict[str, Any]] = None,
    validation: Optional[Dict[str, Any]] = None,
    synthetic_demo: bool = True,
) -> Dict[str, Any]:
    """The model card of a trained corrector (``task: mask-correction``)."""
    kwargs = config.network_kwargs()
    return {
        "name": name,
        "version": "1.0.0",
        "task": "mask-correction",
        "format": "state_dict",
        "architecture": {"name": "clinicalai.networks.NVAE", "kwargs": kwargs},
        "spatial_dims": 2,
        "input": {"channels": kwargs["in_channels"], "size": [128, 128], "normalization": {"kind": "none"}},
        "labels": card_labels(labels),
        "context_slices": bool(config.context),
        "one_hot": True,
        "intended_use": ("synthetic phantom demo; not for clinical use" if synthetic_demo
                         else "research use: correction of cardiac short-axis masks"),
        "synthetic_demo": bool(synthetic_demo),
        "training": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
                     "beta": list(config.resolved_beta()), **(training or {})},
        "validation": validation or {},
    }



VALIDATION_SEED = 1000


def validation_figures(report_: Dict[str, Any], n_cases: int, command_path: Any = "MODEL.pt") -> Dict[str, Any]:
    """The card's ``validation`` block from an :func:`~.evaluate.evaluate_correctors` report."""
    v = next(iter(report_["variants"].values()))
    last = VALIDATION_SEED + n_cases - 1
    return {
        "data": f"{n_cases} held-out cardiac phantoms (seeds {VALIDATION_SEED}-{last}) with synthetic "
                "corruptions (70 % of slices); synthetic, not patient data",
        "min_agreement": report_["min_agreement"],
        "dice_before": round(v["raw"]["dice"]["mean"], 4),
        "dice_after_ungated": round(v["ungated"]["dice"]["mean"], 4),
        "dice_after_gated": round(v["gated"]["dice"]["mean"], 4),
        "validity_before": round(v["raw"]["validity_rate"], 4),
        "validity_after_ungated": round(v["ungated"]["validity_rate"], 4),
        "validity_after_gated": round(v["gated"]["validity_rate"], 4),
        "slices_degraded_0.02_gated": v["gated"]["dice_change"]["degraded_0.02"],
        "slices_improved_0.02_gated": v["gated"]["dice_change"]["improved_0.02"],
        "slices_degraded_0.02_ungated": v["ungated"]["dice_change"]["degraded_0.02"],
        "slices": v["gated"]["dice_change"]["slices"],
        "command": f"clinicalai evaluate segcorrect --corrector {command_path} --no-context --phantoms {n_cases} "
                   f"--seed {VALIDATION_SEED}",
    }


def train_corrector_command(
    out: "str | Any",
    phantoms: Optional[int] = None,
    data: Optional[str] = None,
    context: bool = False,
    iterations: int = 2000,
    kl_warmup: int = 6420,
    spectral_weight: float = 0.0,
    seed: int = 0,
    threads: Optional[int] = None,
    validate: int = 12,
    name: Optional[str] = None,
    command: str = "",
    batch_size: int = 8,
    device: str = "cpu",
    segmenter: Optional[Any] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Dict[str, Any]:
    """``clinicalai train corrector``: train, validate on held-out phantoms, save ``out`` + card.

    Plausible masks: phantoms seeds ``0..phantoms-1`` or the ground truths of an ACDC folder.
    With ``segmenter`` (a loaded segmentation model), its outputs on the same training images
    are learnt from too (:func:`segmenter_pairs`; 30 % of samples), as in the source study.
    Validation: ``validate`` held-out phantoms (seeds 1000...) with synthetic corruptions,
    gated and ungated (:func:`~.evaluate.evaluate_correctors`). Returns the card written.
    """
    import torch

    out = Path(out)
    if threads:
        torch.set_num_threads(int(threads))
    if data is not None:
        cases = resolve_cases(data, seed=seed)
        source = {"data": str(data), "cases": len(cases)}
    else:
        n = int(phantoms or 40)
        cases = [cardiac_case(i, ("ED", "ES")[i % 2]) for i in range(n)]
        source = {"phantoms": n, "phantom_seeds": [0, n - 1]}
    volumes = [network_space_masks(case.labels) for case in cases]
    pairs: List[Tuple[np.ndarray, np.ndarray]] = []
    if segmenter is not None:
        pairs = segmenter_pairs(cases, segmenter, progress=scaled(progress, 0.0, 0.1), cancel=cancel)
        source["segmenter_outputs"] = {"segmenter": segmenter.card.name, "cases": len(pairs), "share_of_samples": 0.3}
        progress = scaled(progress, 0.1, 1.0)
    config = CorrectorConfig(iterations=iterations, kl_warmup=kl_warmup, context=context, seed=seed,
                             spectral_weight=spectral_weight, batch_size=batch_size)
    model, history = train_corrector(volumes, config, pairs=pairs, progress=progress, cancel=cancel, device=device)
    training = {**source, "command": command, "seconds": round(history.seconds, 1),
                "final_loss": history.loss[-1], "loss_curve": [round(v, 4) for v in history.loss],
                "threads": torch.get_num_threads(), "device": device,
                "objective": "denoising ELBO: corrupted or clean plausible mask in, plausible mask out"}
    card = corrector_card(config, CARDIAC_LABELS, name=name or out.stem, training=training,
                          synthetic_demo=data is None)
    if validate and validate > 0:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp) / "corrector.pt"
            save_model(model, card, tmp_path)
            report_ = evaluate_correctors({card["name"]: load_model(tmp_path, device="cpu")}, n_cases=validate,
                                          seed=VALIDATION_SEED)
        card["validation"] = validation_figures(report_, validate, command_path=out)
    save_model(model, card, out)
    return card


__all__ = ["BETA_CONTEXT", "BETA_DEFAULT", "CorrectorConfig", "TrainingHistory", "VALIDATION_SEED", "corrector_card",
           "network_space_masks", "phantom_masks", "segmenter_pairs", "train_corrector", "train_corrector_command",
           "validation_figures"]
