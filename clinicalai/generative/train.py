"""Training the generative models on healthy volumes (and, for CycleGAN, pathological ones).

Defaults follow the cortical-folding study for the latent GAN (latent 1728, lr 2e-4, Adam
betas (0.5, 0.9), 800 epochs, 5 critic steps per generator step, gradient-penalty lambda 10,
sulcus class weight 5 vs 1); they are meant for a GPU and 80^3 crops. Tests and demo models
use small grids, latent sizes and epoch counts, or ``max_seconds``.

One *epoch* is one pass over the training volumes in minibatches. For the adversarial kinds
each minibatch gives ``n_critic`` critic updates (fresh noise each) and one generator update.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..augment import augment_batch, image_augmenter
from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .data import GridSpec
from .losses import critic_loss, generator_loss, gradient_penalty, reconstruction_loss
from .nets import KINDS, TOP_FRACTION, build, feature_residual, score_batch

log = logging.getLogger(__name__)
ADVERSARIAL = ("wgan-gp", "wgan-clip", "gan")
#: cross-entropy weight of the sulcus class (60) vs 1 for inside / outside (the study's)
SULCUS_WEIGHT = 5.0


@dataclass
class TrainConfig:
    """Hyper-parameters (defaults: the cortical-folding study's, for GPU users)."""

    kind: str = "wgan-gp"
    epochs: int = 800
    batch_size: int = 8
    lr: float = 2e-4
    latent_size: int = 1728
    channels: Tuple[int, ...] = (16, 32, 64)
    strides: Tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 0
    #: adversarial loss of wgan-gp / f-anogan: wgan-gp, wgan-clip (weight clipping) or gan
    adversarial: str = "wgan-gp"
    n_critic: int = 5
    gp_lambda: float = 10.0
    clip_value: float = 0.01
    #: reconstruction term: auto (cross-entropy for labels, L2 for intensities), ce or l2
    recon_loss: str = "auto"
    recon_weight: float = 10.0
    adversarial_weight: float = 1.0
    #: class weights of the label cross-entropy, in label_values order (0 inside, 11 outside, 60 sulcus)
    class_weights: Optional[Tuple[float, ...]] = None
    kappa: float = 1.0
    beta: float = 1e-3
    cycle_weight: float = 10.0
    identity_weight: float = 5.0
    #: CycleGAN perceptual term: L1 between the healthy discriminator's first-layer features
    #: of the input and of its translation (0: off)
    perceptual_weight: float = 0.0
    seed: int = 0
    max_seconds: Optional[float] = None
    #: a :mod:`clinicalai.augment` preset (``strong`` / ``mild``) on each intensity volume, or
    #: None (the bundled generative models were trained without; label maps cannot take it)
    augmentation: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown generative kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.adversarial not in ADVERSARIAL:
            raise InputError(f"adversarial loss must be one of {', '.join(ADVERSARIAL)}, got {self.adversarial!r}")
        if self.recon_loss not in ("auto", "ce", "l2"):
            raise InputError(f"reconstruction loss must be auto, ce or l2, got {self.recon_loss!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.n_critic < 1:
            raise InputError("epochs, batch size and critic steps must be at least 1")


@dataclass
class TrainResult:
    module: torch.nn.Module
    architecture: str
    kwargs: Dict[str, Any]
    history: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    epochs_run: int = 0


def class_weights_for(config: TrainConfig, spec: GridSpec) -> Optional[Tuple[float, ...]]:
    """Class weights of the label cross-entropy, in ``spec.label_values`` order.

    ``config.class_weights`` when given (one per label value); otherwise, for label models
    trained with cross-entropy, the study's: sulcus (60) weighted :data:`SULCUS_WEIGHT` (5)
    vs 1 for the other classes, the rarest class being the one that matters. ``None`` for
    intensity models and the L2 term.
    """
    if spec.input_kind != "labels" or config.recon_loss == "l2":
        return None
    if config.class_weights is not None:
        if len(config.class_weights) != len(spec.label_values):
            raise InputError(f"class_weights needs one weight per label value {list(spec.label_values)}, "
                             f"got {list(config.class_weights)}")
        return tuple(float(w) for w in config.class_weights)
    return tuple(SULCUS_WEIGHT if v == 60 else 1.0 for v in spec.label_values)


def _fits(x: np.ndarray, spec: GridSpec) -> bool:
    """``x`` is ``(N, *spec.in_shape)``, or for a whole field of view at least that large."""
    if x.ndim != 5 or x.shape[1] != spec.in_shape[0]:
        return False
    if spec.whole:
        return all(a >= b for a, b in zip(x.shape[2:], spec.shape_zyx))
    return tuple(x.shape[2:]) == tuple(spec.shape_zyx)


def _window_sampler(spec: GridSpec, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """For a whole field of view, a random ``spec.size`` window of each volume of a batch
    (MONAI ``RandSpatialCrop``, seeded), anywhere in it: the model must reconstruct the brain's
    edge, the scalp and the background as well as the centre, since inference slides over all
    of them. For a centre field of view, the batch as it is."""
    if not spec.whole:
        return lambda x: x
    from monai.transforms import RandSpatialCrop

    crop = RandSpatialCrop(spec.shape_zyx, random_center=True, random_size=False)
    crop.set_random_state(seed=seed)

    def window(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) == tuple(spec.shape_zyx):
            return x
        out = [crop(v) for v in x]
        return torch.stack([w.as_tensor() if hasattr(w, "as_tensor") else w for w in out])  # plain tensors, no MONAI metadata

    return window


def _batches(n: int, bs: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, bs):
        yield order[i:i + bs]


def train_generative(
    config: TrainConfig,
    spec: GridSpec,
    healthy: np.ndarray,
    pathological: Optional[np.ndarray] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> TrainResult:
    """Train one generative model.

    Args:
        config: hyper-parameters; ``config.kind`` picks the model.
        spec: the model grid (``healthy.shape[1:] == spec.in_shape``).
        healthy: ``(N, C, z, y, x)`` training volumes without anomalies.
        pathological: ``(M, C, z, y, x)`` volumes with lesions (CycleGAN only; unpaired).
    """
    healthy = np.asarray(healthy, np.float32)
    if not _fits(healthy, spec):
        raise InputError(f"training volumes must have shape (N, {', '.join(map(str, spec.in_shape))})"
                         + (" or larger (whole field of view)" if spec.whole else "") + f", got {healthy.shape}")
    if pathological is not None and not _fits(np.asarray(pathological), spec):
        raise InputError(f"pathological volumes must fit the model grid {spec.in_shape}, got {np.shape(pathological)}")
    if len(healthy) < 2:
        raise InputError("training needs at least 2 volumes")
    if config.kind == "cyclegan" and (pathological is None or len(pathological) < 2):
        raise InputError("a CycleGAN needs pathological volumes too (at least 2)")
    if config.augmentation is not None and spec.input_kind == "labels":
        raise InputError("augmentation changes intensities; label-map models cannot take it")
    aug = image_augmenter(config.augmentation, config.seed, spatial_dims=3) if config.augmentation else None
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    module, name, kwargs = build(config.kind, spec, config.latent_size, config.channels, config.strides,
                                 config.num_res_units)
    module.train()
    labels = spec.input_kind == "labels"
    weights = class_weights_for(config, spec)
    step = {
        "ae": _AEStep, "vae": _AEStep, "wgan-gp": _LatentGANStep, "f-anogan": _LatentGANStep,
        "cyclegan": _CycleGANStep,
    }[config.kind](module, config, labels, weights)
    window = _window_sampler(spec, config.seed)
    x_all = torch.from_numpy(healthy)
    p_all = torch.from_numpy(np.asarray(pathological, np.float32)) if pathological is not None else None
    history: List[Dict[str, float]] = []
    t0 = time.perf_counter()
    epochs_run = 0
    for epoch in range(config.epochs):
        check_cancel(cancel)
        phase = step.phase(epoch, time.perf_counter() - t0)
        sums: Dict[str, float] = {}
        count = 0
        for idx in _batches(len(x_all), config.batch_size, rng):
            x = augment_batch(aug, window(x_all[idx]))
            p = window(p_all[rng.integers(0, len(p_all), len(idx))]) if p_all is not None else None
            for k, v in step(x, p, phase).items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
        epochs_run = epoch + 1
        history.append({"epoch": epoch, **{k: v / max(count, 1) for k, v in sums.items()}})
        report(progress, epochs_run / config.epochs, f"{config.kind} epoch {epochs_run}/{config.epochs}")
        if config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds:
            log.info("stopping after %d epochs (max_seconds)", epochs_run)
            break
    module.eval()
    return TrainResult(module, name, kwargs, history, time.perf_counter() - t0, epochs_run)


def _adam(params, lr: float) -> torch.optim.Optimizer:
    # betas (0.5, 0.9): the WGAN-GP paper's, which the study used
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))


class _AEStep:
    """AE / VAE: reconstruction (+ beta * KL for the VAE)."""

    def __init__(self, module, config: TrainConfig, labels: bool, weights) -> None:
        self.m, self.c, self.labels, self.w = module, config, labels, weights
        self.opt = _adam(module.parameters(), config.lr)

    def phase(self, epoch: int, elapsed: float = 0.0) -> str:
        return "reconstruction"

    def __call__(self, x, p, phase) -> Dict[str, float]:
        self.opt.zero_grad()
        out: Dict[str, float] = {}
        if self.c.kind == "vae":
            recon, mu, logvar, _ = self.m(x)
            kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
            rec = reconstruction_loss(recon, x, self.labels, self.c.recon_loss, self.w)
            loss = rec + self.c.beta * kl
            out["kl"] = kl.item()
        else:
            rec = reconstruction_loss(self.m(x), x, self.labels, self.c.recon_loss, self.w)
            loss = rec
        loss.backward()
        self.opt.step()
        out["reconstruction"] = rec.item()
        return out


class _LatentGANStep:
    """Encoder + generator + critic.

    ``wgan-gp`` (the cortical-folding study): critic on real vs G(z); encoder and generator
    together on the adversarial loss of G(z) plus ``recon_weight`` * reconstruction of G(E(x)).

    ``f-anogan`` (Schlegl et al. 2019): first half of the epochs a plain WGAN (critic and
    generator, no encoder), second half "izi_f" encoder training with G and the critic frozen:
    ``||x - G(E(x))||^2 + kappa * ||f(x) - f(G(E(x)))||^2``, f = critic features.
    """

    def __init__(self, module, config: TrainConfig, labels: bool, weights) -> None:
        self.m, self.c, self.labels, self.w = module, config, labels, weights
        self.opt_d = _adam(module.critic.parameters(), config.lr)
        self.opt_g = _adam(module.generator.parameters(), config.lr)
        self.opt_e = _adam(module.encoder.parameters(), config.lr)

    def phase(self, epoch: int, elapsed: float = 0.0) -> str:
        if self.c.kind == "f-anogan":
            # half the epochs (or half the time budget) for the GAN, the rest for the encoder
            in_time = self.c.max_seconds is None or elapsed < 0.5 * self.c.max_seconds
            return "gan" if epoch < max(1, self.c.epochs // 2) and in_time else "izi"
        return "joint"

    def _as_image(self, logits_or_image: torch.Tensor) -> torch.Tensor:
        if not self.labels:
            return logits_or_image
        # the critic must see labels as real data look: one-hot. Soft probabilities would let
        # it separate real from fake by softness alone (its gradients then explode); the
        # straight-through estimator passes the softmax gradient to the generator.
        p = torch.softmax(logits_or_image, 1)
        hard = torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).movedim(-1, 1).to(p.dtype)
        return hard + p - p.detach()

    def __call__(self, x, p, phase) -> Dict[str, float]:
        m, c = self.m, self.c
        out: Dict[str, float] = {}
        if phase == "izi":
            self.opt_e.zero_grad()
            recon = m.decode(m.encode(x))
            img = self._as_image(recon)
            rec = reconstruction_loss(recon, x, self.labels, c.recon_loss, self.w)
            feat = feature_residual(m, x, img).mean()
            (rec + c.kappa * feat).backward()
            self.opt_e.step()
            return {"reconstruction": rec.item(), "feature_residual": feat.item()}
        n = x.shape[0]
        for _ in range(c.n_critic):
            self.opt_d.zero_grad()
            with torch.no_grad():
                fake = self._as_image(m.decode(torch.randn(n, m.latent_size)))
            loss_d = critic_loss(c.adversarial, m.critic(x), m.critic(fake))
            if c.adversarial == "wgan-gp":
                gp = gradient_penalty(m.critic, x, fake, c.gp_lambda)
                loss_d = loss_d + gp
                out["gradient_penalty"] = gp.item()
            loss_d.backward()
            self.opt_d.step()
            if c.adversarial == "wgan-clip":
                with torch.no_grad():
                    for prm in m.critic.parameters():
                        prm.clamp_(-c.clip_value, c.clip_value)
        out["critic"] = loss_d.item()
        self.opt_g.zero_grad()
        self.opt_e.zero_grad()
        for prm in m.critic.parameters():
            prm.requires_grad_(False)
        fake = self._as_image(m.decode(torch.randn(n, m.latent_size)))
        loss_g = c.adversarial_weight * generator_loss(c.adversarial, m.critic(fake))
        out["generator"] = loss_g.item()
        if phase == "joint":
            rec = reconstruction_loss(m.decode(m.encode(x)), x, self.labels, c.recon_loss, self.w)
            loss_g = loss_g + c.recon_weight * rec
            out["reconstruction"] = rec.item()
        loss_g.backward()
        for prm in m.critic.parameters():
            prm.requires_grad_(True)
        self.opt_g.step()
        if phase == "joint":
            self.opt_e.step()
        return out


class _CycleGANStep:
    """CycleGAN (Zhu et al. 2017) with least-squares adversarial losses (MONAI
    ``PatchAdversarialLoss``), cycle and identity L1 terms, optional perceptual term."""

    def __init__(self, module, config: TrainConfig, labels: bool, weights) -> None:
        from monai.losses import PatchAdversarialLoss

        self.m, self.c = module, config
        self.adv = PatchAdversarialLoss(criterion="least_squares")
        self.opt_g = _adam(list(module.to_healthy.parameters()) + list(module.to_pathological.parameters()), config.lr)
        self.opt_d = _adam(list(module.disc_healthy.parameters()) + list(module.disc_pathological.parameters()),
                           config.lr)

    def phase(self, epoch: int, elapsed: float = 0.0) -> str:
        return "cycle"

    def __call__(self, h, p, phase) -> Dict[str, float]:
        m, c = self.m, self.c
        l1 = torch.nn.functional.l1_loss
        discs = list(m.disc_healthy.parameters()) + list(m.disc_pathological.parameters())
        for prm in discs:
            prm.requires_grad_(False)
        self.opt_g.zero_grad()
        fake_h = m.to_healthy(p)
        fake_p = m.to_pathological(h)
        feats_h = m.disc_healthy(fake_h)
        adv = (self.adv(feats_h[-1], target_is_real=True, for_discriminator=False)
               + self.adv(m.disc_pathological(fake_p)[-1], target_is_real=True, for_discriminator=False))
        cyc = l1(m.to_pathological(fake_h), p) + l1(m.to_healthy(fake_p), h)
        idt = l1(m.to_healthy(h), h) + l1(m.to_pathological(p), p)
        loss = adv + c.cycle_weight * cyc + c.identity_weight * idt
        out = {"adversarial": adv.item(), "cycle": cyc.item(), "identity": idt.item()}
        if c.perceptual_weight > 0:
            # low-level features (first PatchGAN layer of the healthy discriminator) of the
            # input and of its translation should agree: anatomy (and atrophy) kept, only
            # what the discriminator finds unhealthy may change
            perc = l1(feats_h[0], m.disc_healthy(p)[0].detach())
            loss = loss + c.perceptual_weight * perc
            out["perceptual"] = perc.item()
        loss.backward()
        self.opt_g.step()
        for prm in discs:
            prm.requires_grad_(True)
        self.opt_d.zero_grad()
        d_loss = 0.5 * (
            self.adv(m.disc_healthy(h)[-1], target_is_real=True, for_discriminator=True)
            + self.adv(m.disc_healthy(fake_h.detach())[-1], target_is_real=False, for_discriminator=True)
            + self.adv(m.disc_pathological(p)[-1], target_is_real=True, for_discriminator=True)
            + self.adv(m.disc_pathological(fake_p.detach())[-1], target_is_real=False, for_discriminator=True)
        )
        d_loss.backward()
        self.opt_d.step()
        out["discriminator"] = d_loss.item()
        return out


@torch.no_grad()
def volume_scores(module, kind: str, x: np.ndarray, labels: bool, kappa: float = 1.0,
                  batch_size: int = 8, top_fraction: float = TOP_FRACTION) -> np.ndarray:
    """Anomaly score of each volume of ``x`` (``(N, C, z, y, x)``)."""
    module.eval()
    out = []
    for i in range(0, len(x), batch_size):
        out.append(score_batch(module, kind, torch.from_numpy(np.asarray(x[i:i + batch_size], np.float32)),
                               labels, kappa, top_fraction).score.cpu().numpy())
    return np.concatenate(out)


def config_dict(config: TrainConfig) -> Dict[str, Any]:
    d = asdict(config)
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
    return d
