"""Generative networks for anomaly detection, built from MONAI blocks.

MONAI has the parts (``Regressor`` as an encoder, ``Generator``, ``Critic``, ``UNet``,
``PatchDiscriminator``, ``AutoEncoder``, ``VarAutoEncoder``) but not the *combinations* the
source studies train: an encoder + generator + critic trained together (the cortical-folding
WGAN-GP, f-AnoGAN) and a CycleGAN with two generators and two discriminators. A model file is
one state dict with one card, so each combination is one ``nn.Module`` holding its parts.

AE and VAE need no wrapper: their cards name ``monai.networks.nets.AutoEncoder`` /
``monai.networks.nets.VarAutoEncoder`` directly.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from . import register_architecture


def _start_shape(in_spatial: Sequence[int], strides: Sequence[int]) -> List[int]:
    factor = 1
    for s in strides:
        factor *= int(s)
    shape = [int(d) // factor for d in in_spatial]
    if any(d * factor != int(o) for d, o in zip(shape, in_spatial)) or any(d < 1 for d in shape):
        raise ValueError(f"spatial size {tuple(in_spatial)} must be divisible by the product of strides ({factor})")
    return shape


@register_architecture(
    "Encoder + generator + critic (WGAN-GP / f-AnoGAN); forward(x) = G(E(x))",
    reference_kwargs={"in_shape": [3, 80, 80, 80], "latent_size": 1728, "channels": [16, 32, 64, 128],
                      "strides": [2, 2, 2, 2]},
)
class EncoderGeneratorCritic(nn.Module):
    """Encoder, generator and critic of a latent-space GAN, as one module.

    Args:
        in_shape: ``(channels, *spatial)`` of one input, e.g. ``(1, 32, 32, 32)`` for an MR
            volume or ``(3, 80, 80, 80)`` for a one-hot 3-class sulcal skeleton.
        latent_size: length of the code ``z`` (1728 = 12^3 in the cortical-folding study).
        channels: feature channels per resolution level of the encoder / critic (the generator
            mirrors them).
        strides: downsampling per level; the spatial size must be divisible by their product.
        num_res_units: residual units per level (MONAI ``ResidualUnit``; 0: plain convolutions).
        critic_norm: normalisation in the critic. ``None`` (default) because the WGAN-GP penalty
            constrains the gradient per sample, which batch statistics would couple.

    Shapes:
        ``encode``: ``(N, *in_shape) -> (N, latent_size)``;
        ``decode``: ``(N, latent_size) -> (N, *in_shape)`` (intensities, or class logits);
        ``critic``: ``(N, *in_shape) -> (N, 1)`` (unbounded WGAN score, high = real);
        ``forward(x) = decode(encode(x))``.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 32, 32, 32),
        latent_size: int = 1728,
        channels: Sequence[int] = (16, 32, 64),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 0,
        critic_norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        from monai.networks.nets import Critic, Generator, Regressor

        in_shape = tuple(int(v) for v in in_shape)
        channels = tuple(int(c) for c in channels)
        strides = tuple(int(s) for s in strides)
        if len(channels) != len(strides):
            raise ValueError("channels and strides need the same length")
        self.in_shape = in_shape
        self.latent_size = int(latent_size)
        start = _start_shape(in_shape[1:], strides)
        self.encoder = Regressor(in_shape, (self.latent_size,), channels, strides, num_res_units=num_res_units)
        gen_channels = tuple(reversed(channels[:-1])) + (in_shape[0],)
        self.generator = Generator(
            (self.latent_size,), (channels[-1], *start), gen_channels, strides, num_res_units=num_res_units
        )
        self.critic = Critic(in_shape, channels, strides, num_res_units=num_res_units, norm=critic_norm, dropout=None)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def critic_features(self, x: torch.Tensor) -> torch.Tensor:
        """The critic's last convolutional features (the f-AnoGAN feature residual uses them)."""
        return self.critic.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class _ResidualGenerator(nn.Module):
    """``x + UNet(x)``: a CycleGAN generator that only has to learn what to change.

    The UNet's last convolution starts at zero, so an untrained generator is the identity: the
    cycle and identity losses start at 0 instead of at the noise of a random UNet, which
    matters for the short CPU runs this is trained with. (With ``num_res_units=0`` that
    convolution is the UNet's output layer.)
    """

    def __init__(self, spatial_dims: int, channels: int, features: Sequence[int], strides: Sequence[int],
                 num_res_units: int) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims, channels, channels, features, strides, num_res_units=num_res_units)
        last = [m for m in self.unet.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d,
                                                                  nn.ConvTranspose3d))][-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.unet(x)


@register_architecture(
    "CycleGAN healthy <-> pathological (UNet generators, PatchGAN discriminators); forward(x) = healthy(x)"
)
class CycleGAN(nn.Module):
    """Two residual UNet generators and two PatchGAN discriminators, as one module.

    ``to_healthy`` maps a pathological image to a healthy-looking one (it learns to erase
    lesions); ``to_pathological`` maps back. ``forward(x) = to_healthy(x)``, so
    ``x - forward(x)`` is the lesion map.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        features: UNet channels per level.
        strides: UNet downsampling per level (one fewer than ``features``).
        disc_channels: first-layer channels of the PatchGAN discriminators.
        disc_layers: downsampling layers of the discriminators.

    Shapes: ``(N, C, *spatial) -> (N, C, *spatial)``; discriminators return a list of feature
    maps, the last one the patch scores (MONAI ``PatchDiscriminator``).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        features: Sequence[int] = (8, 16, 32),
        strides: Sequence[int] = (2, 2),
        num_res_units: int = 0,
        disc_channels: int = 8,
        disc_layers: int = 2,
    ) -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        def generator() -> nn.Module:
            return _ResidualGenerator(spatial_dims, in_channels, tuple(features), tuple(strides), num_res_units)

        def discriminator() -> nn.Module:
            # instance norm: batch statistics of a batch of 2-4 volumes would be noise
            return PatchDiscriminator(spatial_dims, disc_channels, in_channels, num_layers_d=disc_layers,
                                      norm="INSTANCE")

        self.to_healthy = generator()
        self.to_pathological = generator()
        self.disc_healthy = discriminator()
        self.disc_pathological = discriminator()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_healthy(x)
