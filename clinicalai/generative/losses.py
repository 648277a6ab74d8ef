"""Losses of the generative models.

MONAI has adversarial losses (``monai.losses.PatchAdversarialLoss``: least squares, hinge,
BCE) but no Wasserstein critic loss and no gradient penalty, so those are written here.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     lam: float = 10.0, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): ``lam * E[(||grad_x D(x_hat)||_2 - 1)^2]``.

    ``x_hat = eps * real + (1 - eps) * fake`` with ``eps ~ U(0, 1)`` per sample (``eps`` of
    shape ``(N,)`` may be given, for tests). The norm is over all non-batch dimensions.
    ``create_graph=True`` so the penalty itself can be back-propagated into the critic.
    """
    n = real.shape[0]
    if eps is None:
        eps = torch.rand(n, device=real.device, dtype=real.dtype)
    eps = eps.reshape(n, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(x_hat)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norms = grad.reshape(n, -1).norm(2, dim=1)
    return lam * ((norms - 1.0) ** 2).mean()


def critic_loss(kind: str, real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """The critic's (discriminator's) loss on its scores for real and generated inputs.

    ``wgan-gp`` / ``wgan-clip``: ``E[D(fake)] - E[D(real)]``; ``gan``: binary cross-entropy on
    logits (real -> 1, fake -> 0).
    """
    if kind in ("wgan-gp", "wgan-clip"):
        return fake_score.mean() - real_score.mean()
    if kind == "gan":
        return (F.binary_cross_entropy_with_logits(real_score, torch.ones_like(real_score))
                + F.binary_cross_entropy_with_logits(fake_score, torch.zeros_like(fake_score)))
    raise ValueError(f"unknown adversarial loss {kind!r}")


def generator_loss(kind: str, fake_score: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial loss (non-saturating for the classic GAN)."""
    if kind in ("wgan-gp", "wgan-clip"):
        return -fake_score.mean()
    if kind == "gan":
        return F.binary_cross_entropy_with_logits(fake_score, torch.ones_like(fake_score))
    raise ValueError(f"unknown adversarial loss {kind!r}")


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, labels: bool, kind: str = "auto",
                        class_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Reconstruction term.

    Intensities: mean squared error. Labels (one-hot ``target``, ``output`` logits): weighted
    cross-entropy (``ce``, the study weights sulcus 5 vs 1) or the squared error between the
    softmax and the one-hot target (``l2``).
    """
    if not labels:
        return F.mse_loss(output, target)
    if kind in ("auto", "ce"):
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=output.dtype, device=output.device)
        return F.cross_entropy(output, target.argmax(1), weight=w)
    if kind == "l2":
        return F.mse_loss(torch.softmax(output, 1), target)
    raise ValueError(f"unknown reconstruction loss {kind!r} (ce or l2)")
