"""NVAE: a deep hierarchical variational auto-encoder for 2D label masks (Vahdat & Kautz, 2020).

Hand-written here because MONAI has no NVAE (``monai.networks.nets`` offers a plain ``VarAutoEncoder``
with a single latent, not a hierarchy of latent groups with residual posteriors). SegCorrect uses it
as a *mask corrector*: a one-hot mask goes in, logits of a plausible mask come out (the posterior
mean is decoded at inference, so the output is deterministic).

Layout (defaults, at 128 x 128 input)::

    one-hot (N, 4|12, 128, 128) -> stem conv (4 ch) -> 2 residual cells, stride 2 (16 ch, 32 x 32)
    encoder tower, three scales: 32 x 32 (1 group), 16 x 16 (2 groups), 8 x 8 (4 groups)
    decoder tower, top-down: 4 latent groups at 8 x 8, 2 at 16 x 16, 1 at 32 x 32,
        each group: prior p(z_l | z_<l) from the decoder state, posterior q(z_l | x, z_<l) as a
        *residual* (delta mu, delta log sigma) relative to that prior, 20 latent channels
    post-process: 2 residual cells (encoder type), upsampling to 128 x 128 -> ELU + conv -> (N, 4, 128, 128) logits

Cells: encoder residual cell = BN-Swish-conv3x3-BN-Swish-conv3x3-SE; decoder residual cell =
BN-conv1x1 (expand)-BN-Swish-depthwise conv5x5-BN-Swish-conv1x1-BN-SE, as in the paper.
``channel_reduction`` is the squeeze-excitation reduction ratio (default 8).

Shapes: ``forward(x)`` takes ``(N, in_channels, H, W)`` with H, W divisible by
``2 ** (preprocess_blocks + scales - 1)`` (16 by default) and returns
logits ``(N, out_channels, H, W)``; :meth:`NVAE.elbo_terms` also returns the KL divergence of
each latent *scale* (coarsest first), summed over latent elements and averaged over the batch,
in nats. :func:`nvae_loss` combines them with per-scale KL weights ``beta`` and KL warm-up.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_architecture


class SqueezeExcitation(nn.Module):
    """Channel re-weighting from global average pooling; ``reduction`` divides the channels."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 2)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(x.mean(dim=(2, 3)))
        return x * w[:, :, None, None]


def _resample(x: torch.Tensor, stride: int) -> torch.Tensor:
    if stride == 2:
        return F.avg_pool2d(x, 2)
    if stride == -1:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x


class EncoderCell(nn.Module):
    """NVAE encoder residual cell; ``stride`` 1, 2 (down) or -1 (up)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, reduction: int = 8) -> None:
        super().__init__()
        self.stride = stride
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in, momentum=0.05), nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, stride=2 if stride == 2 else 1, padding=1),
            nn.BatchNorm2d(c_out, momentum=0.05), nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            SqueezeExcitation(c_out, reduction),
        )
        self.skip = nn.Identity() if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = _resample(x, -1) if self.stride == -1 else x
        # 0.1 keeps the residual branch small at initialisation (as the NVAE code does)
        return self.skip(_resample(inp, 2) if self.stride == 2 else inp) + 0.1 * self.body(inp)


class DecoderCell(nn.Module):
    """NVAE decoder residual cell (inverted residual with a depthwise 5x5); ``stride`` 1 or -1."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, reduction: int = 8, expansion: int = 3) -> None:
        super().__init__()
        self.stride = stride
        hidden = c_in * expansion
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in, momentum=0.05),
            nn.Conv2d(c_in, hidden, 1),
            nn.BatchNorm2d(hidden, momentum=0.05), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden),
            nn.BatchNorm2d(hidden, momentum=0.05), nn.SiLU(),
            nn.Conv2d(hidden, c_out, 1),
            nn.BatchNorm2d(c_out, momentum=0.05),
            SqueezeExcitation(c_out, reduction),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == -1:
            x = _resample(x, -1)
        return self.skip(x) + 0.1 * self.body(x)


def _gaussian_params(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    mu, log_sigma = torch.chunk(t, 2, dim=1)
    # soft clamp as in NVAE: keeps log sigma in (-5, 5) without killing gradients
    return mu, 5.0 * torch.tanh(log_sigma / 5.0)


def _kl(mu_q, ls_q, mu_p, ls_p) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, elementwise."""
    var_ratio = torch.exp(2 * (ls_q - ls_p))
    return 0.5 * (var_ratio + ((mu_q - mu_p) / torch.exp(ls_p)) ** 2 - 1.0) - (ls_q - ls_p)


@register_architecture(
    summary="NVAE hierarchical VAE for 2D mask correction (Vahdat & Kautz 2020), hand-written: MONAI has none",
)
class NVAE(nn.Module):
    """Hierarchical VAE that maps a (possibly implausible) one-hot mask to plausible mask logits.

    Args:
        in_channels: 4 (one-hot of one slice) or 12 (previous, current, next slice).
        out_channels: classes of the output logits (4: background, RV, MYO, LV).
        stem_channels: channels after the stem; doubled at every downsampling.
        latent_channels: channels of every latent group.
        groups_per_scale: latent groups per scale, coarsest scale first (default ``(4, 2, 1)``).
        channel_reduction: squeeze-excitation reduction ratio.
        cells_per_group: residual cells before each latent group (encoder and decoder).
        expansion: channel expansion of the decoder's inverted residual cells.
        preprocess_blocks: downsampling cells before the first latent scale (and upsampling
            cells after the last).
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        stem_channels: int = 4,
        latent_channels: int = 20,
        groups_per_scale: Sequence[int] = (4, 2, 1),
        channel_reduction: int = 8,
        cells_per_group: int = 1,
        expansion: int = 3,
        preprocess_blocks: int = 2,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.latent_channels = int(latent_channels)
        self.groups_per_scale = tuple(int(g) for g in groups_per_scale)
        n_scales = len(self.groups_per_scale)
        r = int(channel_reduction)
        c0 = int(stem_channels)
        self.stem = nn.Conv2d(in_channels, c0, 3, padding=1)
        # preprocessing: each block halves the resolution and doubles the channels (as in NVAE);
        # two blocks put the latent scales at 32, 16 and 8 pixels for a 128 x 128 input, which
        # keeps training on a CPU in minutes
        self.pre = nn.Sequential(*[EncoderCell(c0 * 2 ** b, c0 * 2 ** (b + 1), stride=2, reduction=r)
                                   for b in range(preprocess_blocks)])
        self.downsampling = 2 ** (preprocess_blocks + n_scales - 1)
        c_first = c0 * 2 ** preprocess_blocks
        # channels per scale, finest first
        chans = [c_first * 2 ** s for s in range(n_scales)]
        self.scale_channels = chans

        # ---- encoder (bottom-up): scales finest -> coarsest
        self.enc_cells = nn.ModuleList()  # per scale: ModuleList of groups (each: Sequential of cells)
        self.enc_down = nn.ModuleList()
        for s in range(n_scales):
            groups = self.groups_per_scale[n_scales - 1 - s]
            self.enc_cells.append(nn.ModuleList(
                nn.Sequential(*[EncoderCell(chans[s], chans[s], reduction=r) for _ in range(cells_per_group)])
                for _ in range(groups)
            ))
            if s < n_scales - 1:
                self.enc_down.append(EncoderCell(chans[s], chans[s + 1], stride=2, reduction=r))
        top = chans[-1]
        self.enc_top = nn.Sequential(nn.ELU(), nn.Conv2d(top, top, 1), nn.ELU())

        # ---- decoder (top-down): scales coarsest -> finest; one sampler per latent group
        self.prior_feature = nn.Parameter(torch.rand(1, top, 1, 1))
        self.dec_cells = nn.ModuleList()
        self.enc_samplers = nn.ModuleList()
        self.dec_samplers = nn.ModuleList()
        self.enc_combiners = nn.ModuleList()
        self.dec_combiners = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for t in range(n_scales):
            s = n_scales - 1 - t  # encoder scale index of this decoder scale
            c = chans[s]
            for g in range(self.groups_per_scale[t]):
                first = t == 0 and g == 0
                self.dec_cells.append(nn.Identity() if first else nn.Sequential(
                    *[DecoderCell(c, c, reduction=r, expansion=expansion) for _ in range(cells_per_group)]))
                self.enc_combiners.append(nn.Identity() if first else nn.Conv2d(c, c, 1))
                self.enc_samplers.append(nn.Conv2d(c, 2 * latent_channels, 3, padding=1))
                self.dec_samplers.append(nn.Identity() if first else nn.Sequential(
                    nn.ELU(), nn.Conv2d(c, 2 * latent_channels, 1)))
                self.dec_combiners.append(nn.Conv2d(c + latent_channels, c, 1))
            if t < n_scales - 1:
                self.dec_up.append(DecoderCell(c, chans[s - 1], stride=-1, reduction=r, expansion=expansion))
        # post-processing at full resolution with plain residual cells: the inverted-residual
        # cell's depthwise 5x5 on 128 x 128 maps was 2x slower on a CPU for no gain on masks
        self.post = nn.Sequential(*[EncoderCell(c0 * 2 ** (b + 1), c0 * 2 ** b, stride=-1, reduction=r)
                                    for b in reversed(range(preprocess_blocks))])
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(c0, out_channels, 3, padding=1))

    # ------------------------------------------------------------------ forward
    def elbo_terms(self, x: torch.Tensor, sample: bool | None = None, temperature: float | torch.Tensor = 1.0,
                   generator: torch.Generator | None = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``(logits (N, out, H, W), [KL of each scale, coarsest first])``.

        ``sample``: draw z from the posterior (default: while training); otherwise decode its mean.
        ``temperature``: scale of the posterior's standard deviation when sampling, a number or
        ``(N, 1, 1, 1)`` per sample (the latent-space search draws at growing radii);
        ``generator``: the noise's source, for reproducible draws.
        """
        sample = self.training if sample is None else sample
        return self.decode(self.encode(x), sample, temperature, generator)

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The bottom-up features of every latent group, coarsest first (decoding order).

        Kept apart from :meth:`decode` so that several draws around one input (the latent-space
        search) pay for the encoder once.
        """
        if x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
            raise ValueError(f"NVAE needs H and W divisible by {self.downsampling}, got {tuple(x.shape[-2:])}")
        h = self.pre(self.stem(x))
        n_scales = len(self.groups_per_scale)
        enc_features: List[torch.Tensor] = []  # finest first
        for s in range(n_scales):
            for group in self.enc_cells[s]:
                h = group(h)
                enc_features.append(h)
            if s < n_scales - 1:
                h = self.enc_down[s](h)
        enc_features[-1] = self.enc_top(enc_features[-1])
        enc_features.reverse()  # coarsest first, in decoding order
        return enc_features

    def decode(self, enc_features: List[torch.Tensor], sample: bool = False, temperature: float | torch.Tensor = 1.0,
               generator: torch.Generator | None = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Top-down pass over :meth:`encode`'s features: as :meth:`elbo_terms`."""

        def posterior(k: int, state: torch.Tensor, mu_p: torch.Tensor, ls_p: torch.Tensor, first: bool):
            q_in = enc_features[k] if first else enc_features[k] + self.enc_combiners[k](state)
            d_mu, d_ls = _gaussian_params(self.enc_samplers[k](q_in))
            # residual posterior (NVAE eq. 2): q is expressed relative to the prior
            mu_q, ls_q = mu_p + d_mu, ls_p + d_ls
            z = mu_q
            if sample:
                noise = torch.randn(mu_q.shape, generator=generator, device=mu_q.device, dtype=mu_q.dtype)
                z = mu_q + temperature * torch.exp(ls_q) * noise
            return z, _kl(mu_q, ls_q, mu_p, ls_p).sum(dim=(1, 2, 3)).mean()

        return self._top_down(enc_features[0], posterior)

    def posterior_means(self, enc_features: List[torch.Tensor]) -> List[torch.Tensor]:
        """The posterior mean of every latent group, coarsest first: ``[(N, latent_channels, h_k, w_k)]``
        (the code :meth:`decode` decodes without sampling; where the latent-space optimisation starts)."""
        means: List[torch.Tensor] = []

        def keep(k: int, state: torch.Tensor, mu_p: torch.Tensor, ls_p: torch.Tensor, first: bool):
            q_in = enc_features[k] if first else enc_features[k] + self.enc_combiners[k](state)
            means.append(mu_p + _gaussian_params(self.enc_samplers[k](q_in))[0])
            return means[-1], mu_p.new_zeros(())

        self._top_down(enc_features[0], keep)
        return means

    def decode_latents(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits ``(N, out_channels, H, W)`` of given latent codes (one per group, coarsest first,
        shaped as :meth:`posterior_means`): the decoder alone, differentiable in the codes (the
        latent-space optimisation of :mod:`clinicalai.segcorrect.latent`)."""
        return self._top_down(latents[0], lambda k, state, mu_p, ls_p, first: (latents[k], mu_p.new_zeros(())))[0]

    def _top_down(self, like: torch.Tensor, pick) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The decoder tower: ``pick(k, state, prior mu, prior log sigma, first) -> (z_k, KL_k)``
        gives group k's code; ``like`` (batch size, device, dtype, the top group's h, w).
        Returns ``(logits, [KL of each scale, coarsest first])``."""
        n_scales = len(self.groups_per_scale)
        kl_per_scale: List[torch.Tensor] = []
        state = None
        k = 0
        for t in range(n_scales):
            kl_scale = like.new_zeros(())
            for _ in range(self.groups_per_scale[t]):
                first = state is None
                if first:
                    mu_p = torch.zeros(like.shape[0], self.latent_channels, *like.shape[2:], device=like.device,
                                       dtype=like.dtype)
                    ls_p = torch.zeros_like(mu_p)
                    state = self.prior_feature.expand(like.shape[0], -1, *like.shape[2:])
                else:
                    state = self.dec_cells[k](state)
                    mu_p, ls_p = _gaussian_params(self.dec_samplers[k](state))
                z, kl = pick(k, state, mu_p, ls_p, first)
                kl_scale = kl_scale + kl
                state = self.dec_combiners[k](torch.cat([state, z], dim=1))
                k += 1
            kl_per_scale.append(kl_scale)
            if t < n_scales - 1:
                state = self.dec_up[t](state)
        return self.head(self.post(state)), kl_per_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_channels, H, W)`` of the corrected mask."""
        return self.elbo_terms(x)[0]

    # ------------------------------------------------------------------ regularisation
    def spectral_regularisation(self) -> torch.Tensor:
        """Sum of the largest singular values of every conv weight, plus NVAE's BN-scale term.

        Small networks: an exact matrix 2-norm is cheap here, so no power iteration is kept.
        """
        total = self.prior_feature.new_zeros(())
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                total = total + torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
            elif isinstance(m, nn.BatchNorm2d) and m.weight is not None:
                total = total + torch.log(m.weight.abs() + 1e-6).clamp(min=0).sum()
        return total


def kl_warmup(iteration: int, warmup_iterations: int = 6420) -> float:
    """KL coefficient: linear from ~0 to 1 over ``warmup_iterations`` (then 1)."""
    if warmup_iterations <= 0:
        return 1.0
    return max(1e-4, min(1.0, float(iteration) / float(warmup_iterations)))


def nvae_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kl_per_scale: Sequence[torch.Tensor],
    beta: Sequence[float] = (8.0, 10.0, 11.0),
    kl_coefficient: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, reconstruction, weighted KL)`` per sample, in nats.

    Args:
        logits: ``(N, C, H, W)`` decoder output.
        target: ``(N, H, W)`` class indices (int64) of the plausible mask.
        kl_per_scale: from :meth:`NVAE.elbo_terms` (coarsest first).
        beta: KL weight of each scale, coarsest first.
        kl_coefficient: warm-up factor (:func:`kl_warmup`).
    """
    if len(beta) != len(kl_per_scale):
        raise ValueError(f"beta has {len(beta)} values for {len(kl_per_scale)} latent scales")
    # cross-entropy summed over pixels (the log-likelihood of a categorical decoder)
    rec = F.cross_entropy(logits, target, reduction="none").sum(dim=(1, 2)).mean()
    kl = sum(float(b) * k for b, k in zip(beta, kl_per_scale))
    # normalised per pixel so the learning rate does not depend on the image size
    pixels = float(math.prod(target.shape[1:]))
    return (rec + kl_coefficient * kl) / pixels, rec / pixels, kl / pixels
