"""Training of the NVAE mask corrector, its model card and ``clinicalai train corrector``.

Training is denoising: the input is a plausible mask corrupted by
:mod:`clinicalai.segcorrect.corruptions` (or, with ``clean_fraction``, left clean, so a good
mask is mapped to itself), optionally plus pairs (segmenter output, ground truth), also on
strongly augmented copies of the training images where the segmenter really fails
(:func:`shifted_segmenter_pairs`); the target is the plausible mask. A fixed validation set
(:func:`validation_batch`, phantoms from :data:`CHECKPOINT_SEED`) can pick the best checkpoint
and stop early; the KL warm-up can scale with the run (:func:`resolve_kl_warmup`). Optimiser and schedule after the source study: Adamax lr 1e-2
(betas 0.9, 0.99, eps 1e-3), weight decay 3e-4, cosine annealing to 1e-4, batch 8, per-scale
KL weights ``beta`` with linear KL warm-up.

Masks are in the network space of :mod:`.corrector` (inference): 128 x 128 class-index
slices framed by :func:`~.preprocess.frame_from_mask`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..models import load_model, resolve_device, save_model
from ..phantoms.cardiac import cardiac_case
from ..progress import CancelToken, ProgressCallback, check_cancel, report, scaled
from .corruptions import CORRUPTION_KINDS, corrupt_slice
from .data import resolve_cases
from .evaluate import evaluate_correctors
from .labels import CARDIAC_LABELS, CARDIAC_NAMES, N_CLASSES, card_labels
from .preprocess import frame_from_mask, to_network
from .validity import check_slice, label_dice
from .segmenter import segment_volume

#: KL weights per latent scale (coarsest first) of the source study
BETA_DEFAULT = (8.0, 10.0, 11.0)
BETA_CONTEXT = (1.0, 1.0, 5.0)
#: the source study's KL warm-up (iterations); right for its tens of thousands of iterations
KL_WARMUP_STUDY = 6420
#: ``--kl-warmup auto``: warm-up over this fraction of the run (NVAE's ``kl_anneal_portion``
#: default), so a short CPU run still reaches the full KL weight and trains at it for 70 %
KL_WARMUP_FRACTION = 0.3
#: share of samples drawn from (segmenter output, truth) pairs when there are any
PAIR_SHARE = 0.3
#: first seed of the phantoms that choose the best checkpoint (training family, never the
#: held-out seeds 3000-3019 nor the held-out family; apart from evaluate's 1000-1019)
CHECKPOINT_SEED = 1100
#: shifted copies whose segmenter output agrees less than this with the truth are not learnt from
SHIFTED_MIN_DICE = 0.5


@dataclass
class CorrectorConfig:
    """Hyper-parameters of :func:`train_corrector` (defaults: the source study's)."""

    iterations: int = 2000
    batch_size: int = 8
    lr: float = 1e-2
    min_lr: float = 1e-4
    weight_decay: float = 3e-4
    kl_warmup: int = KL_WARMUP_STUDY
    beta: Optional[Tuple[float, ...]] = None  # default BETA_DEFAULT, or BETA_CONTEXT with context
    context: bool = False
    spectral_weight: float = 0.0  # > 0 turns on spectral regularisation (NVAE's lambda)
    clean_fraction: float = 0.25
    corruption_kinds: Tuple[str, ...] = CORRUPTION_KINDS
    context_corruption: float = 0.3  # chance that each neighbour slice is corrupted too
    pair_share: float = PAIR_SHARE  # share of samples drawn from (segmenter output, truth) pairs, when given
    # best checkpoint / early stopping on a fixed validation set (train_corrector's ``validation``)
    validate_every: int = 50  # iterations between validation passes
    patience: int = 0  # validation passes without a better score before stopping (0: run to the end)
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


def _segmenter_pair(image: Any, truth: Any, segmenter: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``(segmenter output, truth)`` of one image, both ``(z, 128, 128)`` framed on the output."""
    raw = segment_volume(image, segmenter, expected_labels=list(CARDIAC_NAMES)).labels
    frame = frame_from_mask(raw.array, spacing=raw.spacing)
    return to_network(raw.array, frame, kind="labels"), to_network(truth.array, frame, kind="labels")


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
        pairs.append(_segmenter_pair(case.image, case.labels, segmenter))
        report(progress, (i + 1) / len(cases), f"segmenter outputs: case {i + 1} of {len(cases)}")
    return pairs


def shift_case(case: Any, augmentation: "str | Mapping[str, Any]" = "strong", seed: int = 0) -> Tuple[Any, Any]:
    """A training-family case moved away from what the segmenter learnt: ``(image, labels)``.

    The image is scaled to [0, 1] (0.5 / 99.5 percentiles; the augmentation's noise levels are
    of that range) and passed through :func:`clinicalai.augment.make_augmenter` in 3D (``zyx``,
    in-plane rotation, contrast, bias, noise, blur, context removal); the labels follow the
    geometric part only (nearest neighbour), so their values never change and, with
    ``affine_prob`` 0, neither do they. Both keep the case's grid (spacing, origin, direction).
    """
    from ..augment import make_augmenter

    img = case.image.array.astype(np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    aug = make_augmenter(augmentation, seed=seed, spatial_dims=3)
    out = aug({"image": img[None], "label": case.labels.array[None]})
    return (case.image.with_array(np.asarray(out["image"][0], np.float32)),
            case.labels.with_array(np.asarray(out["label"][0])))


def shifted_segmenter_pairs(
    cases: Sequence[Any], segmenter: Any, n: int, augmentation: "str | Mapping[str, Any]" = "strong", seed: int = 0,
    min_dice: float = SHIFTED_MIN_DICE, progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], List[float]]:
    """The segmenter's failures on ``n`` shifted copies of ``cases`` (case ``i % len(cases)``,
    augmentation seed ``seed + i``: :func:`shift_case`), as :func:`segmenter_pairs` pairs.

    A copy whose output has a mean Dice with the truth below ``min_dice`` (over the whole
    volume) is left out: where the segmenter found no heart there is nothing to correct, and
    such pairs would teach the corrector to draw a heart from nothing.

    Returns ``(pairs kept, mean Dice of every copy's output, kept or not)``.
    """
    pairs: List[Tuple[np.ndarray, np.ndarray]] = []
    dices: List[float] = []
    for i in range(n):
        check_cancel(cancel)
        image, labels = shift_case(cases[i % len(cases)], augmentation, seed + i)
        raw, truth = _segmenter_pair(image, labels, segmenter)
        dices.append(label_dice(raw, truth, range(1, N_CLASSES)))
        if dices[-1] >= min_dice:
            pairs.append((raw, truth))
        report(progress, (i + 1) / n, f"shifted segmenter outputs: {i + 1} of {n}")
    return pairs, dices


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
    # validation passes (train_corrector's ``validation``): iteration, Dice, share of valid slices
    validation_iterations: List[int] = field(default_factory=list)
    validation_dice: List[float] = field(default_factory=list)
    validation_valid: List[float] = field(default_factory=list)
    best_iteration: Optional[int] = None  # the checkpoint returned (last iteration without validation)
    stopped_at: Optional[int] = None  # last iteration run when patience ran out (None: ran to the end)

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
        if pairs and rng.random() < config.pair_share:
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


def validation_batch(volumes: Sequence[np.ndarray], pairs: Sequence[Tuple[np.ndarray, np.ndarray]],
                     config: CorrectorConfig, n_slices: int = 128,
                     seed: int = CHECKPOINT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed validation set ``(x (n, C, H, W), y (n, H, W))`` drawn as the training batches are
    (same corruption kinds, clean share and pair share) from held-out masks and pairs, with its
    own seeded generator, so every validation pass scores the same slices."""
    cfg = replace(config, batch_size=int(n_slices))
    return _sample_batch(volumes, pairs, cfg, np.random.default_rng(seed), list(range(1, config.num_classes)))


class _BestCheckpoint:
    """Scores the network on a validation set, keeps the best weights, counts patience.

    Score: mean Dice over RV / MYO / LV of the network's output (posterior mean, eval mode)
    against the plausible targets, pooled over the set; the share of output slices passing
    every validity criterion is recorded beside it.
    """

    def __init__(self, batch: Tuple[np.ndarray, np.ndarray], config: CorrectorConfig, history: TrainingHistory,
                 device: str) -> None:
        self.x, self.y = batch
        self.config, self.history, self.device = config, history, device
        self.best_score, self.best_state, self.waited = -1.0, None, 0

    def check(self, model: Any, iteration: int) -> bool:
        """Validate after ``iteration``; ``True`` when ``patience`` passes brought nothing better."""
        import torch

        was_training = model.training
        model.eval()
        with torch.no_grad():
            pred = np.concatenate([model(torch.from_numpy(self.x[i:i + 32]).to(self.device)).argmax(1).cpu().numpy()
                                   for i in range(0, len(self.x), 32)])
        model.train(was_training)  # training goes on in train mode; the mode is left as found
        dice = label_dice(pred, self.y, range(1, self.config.num_classes))
        valid = float(np.mean([check_slice(p).valid for p in pred]))
        h = self.history
        h.validation_iterations.append(int(iteration))
        h.validation_dice.append(round(dice, 4))
        h.validation_valid.append(round(valid, 4))
        if dice > self.best_score:
            self.best_score, self.waited, h.best_iteration = dice, 0, int(iteration)
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return 0 < self.config.patience <= self.waited

    def restore(self, model: Any) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def train_corrector(
    volumes: Sequence[np.ndarray],
    config: Optional[CorrectorConfig] = None,
    pairs: Sequence[Tuple[np.ndarray, np.ndarray]] = (),
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    log_every: int = 25,
    device: str = "cpu",
    validation: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> Tuple[Any, TrainingHistory]:
    """Train an NVAE corrector.

    Args:
        volumes: plausible masks, each ``(z, H, W)`` class indices in network space (H, W
            divisible by 8; 128 x 128 for SegCorrect).
        config: hyper-parameters.
        pairs: optional ``(segmenter output, ground truth)`` volumes of the same shape each;
            ``config.pair_share`` of samples are drawn from them when given.
        progress, cancel: as every workflow.
        device: ``cpu``, ``cuda`` or ``auto``.
        validation: optional fixed set ``(x, y)`` (:func:`validation_batch`). Scored every
            ``config.validate_every`` iterations once the KL warm-up is over (the checkpoint is
            one trained at the full objective; with a warm-up longer than the run, from half of
            it on); the best-scoring weights are returned, and
            ``config.patience`` passes without a better score stop the run early.

    Returns:
        ``(trained NVAE in eval mode on the CPU, history)``.
    """
    import torch

    # imported on use: clinicalai.networks.nvae imports torch at module level
    from ..networks.nvae import kl_warmup, nvae_loss

    device = resolve_device(device)
    config = config or CorrectorConfig()
    model, opt, sched, beta = _training_setup(volumes, config, device)
    rng = np.random.default_rng(config.seed)
    labels = list(range(1, config.num_classes))
    history = TrainingHistory()
    best = _BestCheckpoint(validation, config, history, device) if validation is not None else None
    last = config.iterations - 1
    # checkpoints trained at the full objective; a warm-up longer than the run: its second half
    first_check = min(config.kl_warmup, (config.iterations + 1) // 2)
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
        if it % log_every == 0 or it == last:
            history.iterations.append(it)
            history.loss.append(float(loss.detach()))
            history.reconstruction.append(float(rec.detach()))
            history.kl.append(float(kl.detach()))
            report(progress, (it + 1) / config.iterations, f"corrector iteration {it + 1}/{config.iterations} "
                                                           f"loss {float(loss.detach()):.4f}")
        due = (it + 1) % max(1, config.validate_every) == 0 or it == last
        if best is not None and due and it + 1 >= first_check and best.check(model, it):
            history.stopped_at = it
            break
    history.seconds = time.perf_counter() - started
    if best is not None and best.best_state is not None:
        best.restore(model)
    else:
        history.best_iteration = it
    model.eval().cpu()
    return model, history


def _training_setup(volumes: Sequence[np.ndarray], config: CorrectorConfig, device: str) -> Tuple[Any, Any, Any, Tuple[float, ...]]:
    """Checked inputs -> ``(NVAE on device, Adamax, cosine schedule, beta per scale)``."""
    import torch

    from ..networks.nvae import NVAE

    if not volumes:
        raise ValueError("train_corrector needs at least one plausible mask volume")
    shapes = {tuple(v.shape[1:]) for v in volumes}
    if len(shapes) != 1:
        raise ValueError(f"all training slices must have one in-plane shape, got {sorted(shapes)}")
    torch.manual_seed(config.seed)
    model = NVAE(**config.network_kwargs()).to(device)
    beta = config.resolved_beta()
    if len(beta) != len(config.groups_per_scale):
        raise ValueError(f"beta needs {len(config.groups_per_scale)} values (one per latent scale), got {beta}")
    opt = torch.optim.Adamax(model.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-3,
                             weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.iterations), eta_min=config.min_lr)
    return model, opt, sched, beta


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


def resolve_kl_warmup(value: "int | str", iterations: int) -> int:
    """``--kl-warmup``: a number of iterations (>= 0), or ``auto`` = :data:`KL_WARMUP_FRACTION`
    of ``iterations`` (at least 1).

    Raises:
        InputError: neither a non-negative integer nor ``auto``.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return max(1, int(round(KL_WARMUP_FRACTION * int(iterations))))
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or (isinstance(value, float) and not float(value).is_integer()):
        raise InputError(f"--kl-warmup must be a number of iterations (>= 0) or 'auto', got {value!r}")
    return n


def _pairs_of(cases: Sequence[Any], segmenter: Any, shifted: int, seed: int, progress: Optional[ProgressCallback],
              cancel: Optional[CancelToken]) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], Dict[str, Any]]:
    """The segmenter's outputs on ``cases`` and on ``shifted`` shifted copies of them, with
    what the card says about them (counts, Dice of the shifted outputs)."""
    pairs = segmenter_pairs(cases, segmenter, progress=scaled(progress, 0.0, 0.5), cancel=cancel)
    info: Dict[str, Any] = {"segmenter": segmenter.card.name, "cases": len(pairs)}
    if shifted > 0:
        extra, dices = shifted_segmenter_pairs(cases, segmenter, shifted, seed=seed,
                                               progress=scaled(progress, 0.5, 1.0), cancel=cancel)
        info["shifted"] = {"copies": shifted, "kept": len(extra), "augmentation": "strong (clinicalai.augment)",
                           "augmentation_seeds": [seed, seed + shifted - 1], "min_dice": SHIFTED_MIN_DICE,
                           "segmenter_dice_mean": round(float(np.mean(dices)), 4),
                           "segmenter_dice_kept_mean": round(float(np.mean([d for d in dices if d >= SHIFTED_MIN_DICE]
                                                                         or [float("nan")])), 4)}
        pairs = pairs + extra
    return pairs, info


def _checkpoint_set(n: int, config: CorrectorConfig, segmenter: Any, shifted: bool,
                    cancel: Optional[CancelToken]) -> Tuple[Tuple[np.ndarray, np.ndarray], Dict[str, Any]]:
    """The validation set that picks the checkpoint: ``n`` training-family phantoms from
    :data:`CHECKPOINT_SEED`, corrupted as in training, plus (with a segmenter) its outputs on
    them and, with ``shifted``, on one shifted copy of each."""
    cases = [cardiac_case(CHECKPOINT_SEED + i, ("ED", "ES")[i % 2]) for i in range(n)]
    pairs: List[Tuple[np.ndarray, np.ndarray]] = []
    if segmenter is not None:
        pairs, _ = _pairs_of(cases, segmenter, n if shifted else 0, CHECKPOINT_SEED, None, cancel)
    batch = validation_batch([network_space_masks(c.labels) for c in cases], pairs, config)
    info = {"phantoms": n, "phantom_seeds": [CHECKPOINT_SEED, CHECKPOINT_SEED + n - 1], "slices": int(len(batch[1])),
            "segmenter_pairs": len(pairs), "every": config.validate_every, "patience": config.patience,
            "score": "mean Dice (RV, MYO, LV) of the network output with the plausible target, after the KL warm-up"}
    return batch, info


def train_corrector_command(
    out: "str | Any",
    phantoms: Optional[int] = None,
    data: Optional[str] = None,
    context: bool = False,
    iterations: int = 2000,
    kl_warmup: "int | str" = "auto",
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
    shifted: int = 0,
    early_stopping: int = 0,
    patience: int = 0,
    validate_every: int = 50,
    pair_share: float = PAIR_SHARE,
) -> Dict[str, Any]:
    """``clinicalai train corrector``: train, validate on held-out phantoms, save ``out`` + card.

    Plausible masks: phantoms seeds ``0..phantoms-1`` or the ground truths of an ACDC folder.
    With ``segmenter`` (a loaded segmentation model), its outputs on the same training images
    are learnt from too (:func:`segmenter_pairs`; ``pair_share`` of samples), as in the source
    study, and with ``shifted`` > 0 its outputs on that many strongly augmented copies of them
    (:func:`shifted_segmenter_pairs`: where it really fails). ``kl_warmup``: iterations or
    ``auto`` (:func:`resolve_kl_warmup`). ``early_stopping`` > 0: that many phantoms from
    :data:`CHECKPOINT_SEED` choose the best checkpoint (:func:`train_corrector`'s validation).
    Validation: ``validate`` held-out phantoms (seeds 1000...) with synthetic corruptions,
    gated and ungated (:func:`~.evaluate.evaluate_correctors`). Returns the card written.
    """
    import torch

    out = Path(out)
    if threads:
        torch.set_num_threads(int(threads))
    if data is not None:
        cases = resolve_cases(data, seed=seed)
        source: Dict[str, Any] = {"data": str(data), "cases": len(cases)}
    else:
        n = int(phantoms or 40)
        cases = [cardiac_case(i, ("ED", "ES")[i % 2]) for i in range(n)]
        source = {"phantoms": n, "phantom_seeds": [0, n - 1]}
    volumes = [network_space_masks(case.labels) for case in cases]
    config = CorrectorConfig(iterations=iterations, kl_warmup=resolve_kl_warmup(kl_warmup, iterations), context=context,
                             seed=seed, spectral_weight=spectral_weight, batch_size=batch_size, pair_share=pair_share,
                             validate_every=validate_every, patience=patience)
    pairs: List[Tuple[np.ndarray, np.ndarray]] = []
    if segmenter is not None:
        pairs, source["segmenter_outputs"] = _pairs_of(cases, segmenter, shifted, seed, scaled(progress, 0.0, 0.1), cancel)
        source["segmenter_outputs"]["share_of_samples"] = pair_share
        progress = scaled(progress, 0.1, 1.0)
    checkpoint, checkpoint_info = (_checkpoint_set(early_stopping, config, segmenter, shifted > 0, cancel)
                                   if early_stopping > 0 else (None, None))
    model, history = train_corrector(volumes, config, pairs=pairs, progress=progress, cancel=cancel, device=device,
                                     validation=checkpoint)
    training = {**source, "command": command, "seconds": round(history.seconds, 1), "kl_warmup_rule": str(kl_warmup),
                "final_loss": history.loss[-1], "loss_curve": [round(v, 4) for v in history.loss],
                "threads": torch.get_num_threads(), "device": device, "best_iteration": history.best_iteration,
                "stopped_at": history.stopped_at,
                "objective": "denoising ELBO: corrupted or clean plausible mask in, plausible mask out"}
    if checkpoint_info is not None:
        training["checkpoint_validation"] = {**checkpoint_info, "iterations": history.validation_iterations,
                                             "dice": history.validation_dice, "valid": history.validation_valid}
    card = corrector_card(config, CARDIAC_LABELS, name=name or out.stem, training=training,
                          synthetic_demo=data is None)
    if validate and validate > 0:
        card["validation"] = _validate_saved(model, card, validate, out)
    save_model(model, card, out)
    return card


def _validate_saved(model: Any, card: Dict[str, Any], n: int, out: Path) -> Dict[str, Any]:
    """The card's validation figures of ``model`` saved as it will ship (:func:`validation_figures`)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "corrector.pt"
        save_model(model, card, tmp_path)
        report_ = evaluate_correctors({card["name"]: load_model(tmp_path, device="cpu")}, n_cases=n, seed=VALIDATION_SEED)
    return validation_figures(report_, n, command_path=out)


__all__ = ["BETA_CONTEXT", "BETA_DEFAULT", "CHECKPOINT_SEED", "KL_WARMUP_FRACTION", "KL_WARMUP_STUDY", "PAIR_SHARE",
           "SHIFTED_MIN_DICE", "CorrectorConfig", "TrainingHistory", "VALIDATION_SEED", "corrector_card",
           "network_space_masks", "phantom_masks", "resolve_kl_warmup", "segmenter_pairs", "shift_case",
           "shifted_segmenter_pairs", "train_corrector", "train_corrector_command", "validation_batch",
           "validation_figures"]
