"""One interface over the generative networks: build, reconstruct, score, encode/decode.

Kinds (``generative_kind`` in a model card):

========== ============================================= =========================================
kind       network (card ``architecture.name``)           volume score
========== ============================================= =========================================
wgan-gp    ``clinicalai.networks.EncoderGeneratorCritic`` reconstruction error of G(E(x))
f-anogan   ``clinicalai.networks.EncoderGeneratorCritic`` residual + kappa * critic-feature residual
ae         ``monai.networks.nets.AutoEncoder``            reconstruction error
vae        ``monai.networks.nets.VarAutoEncoder``         reconstruction error (posterior mean)
cyclegan   ``clinicalai.networks.CycleGAN``               mean of the erased signal x - G_healthy(x)
========== ============================================= =========================================

The reconstruction error is the mean squared residual over the top ``top_fraction`` voxels
of the residual map (default :data:`TOP_FRACTION`, 0.1 %): a lesion covers well under 1 % of a
brain volume, and a mean over the whole grid would drown it in the residual of healthy tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..errors import ModelError
from ..networks import build_network
from ..networks.generative import CycleGAN, EncoderGeneratorCritic
from .data import GridSpec

KINDS = ("wgan-gp", "ae", "vae", "f-anogan", "cyclegan")
#: share of the map's voxels whose mean gives the volume score (card key ``top_fraction``);
#: 0.1 % separated lesioned from healthy validation phantoms best (1 % and 3 % dilute a lesion)
TOP_FRACTION = 0.001
#: for sulcal-skeleton (label) models the whole crop: a thin skeleton is never reconstructed
#: voxel-exactly, so the top voxels are misfits of healthy sulci; a removed structure only
#: shifts the mean (removed-structure AUROC 0.52-0.38 with the top 1 %, 0.59-0.66 with the mean)
LABEL_TOP_FRACTION = 1.0


def default_top_fraction(input_kind: str) -> float:
    """The card's ``top_fraction`` for a model reading ``input_kind`` volumes."""
    return LABEL_TOP_FRACTION if input_kind == "labels" else TOP_FRACTION
ARCHITECTURES = {
    "wgan-gp": "clinicalai.networks.EncoderGeneratorCritic",
    "f-anogan": "clinicalai.networks.EncoderGeneratorCritic",
    "ae": "monai.networks.nets.AutoEncoder",
    "vae": "monai.networks.nets.VarAutoEncoder",
    "cyclegan": "clinicalai.networks.CycleGAN",
}
SCORE_NAMES = {
    "wgan-gp": "reconstruction error",
    "ae": "reconstruction error",
    "vae": "reconstruction error",
    "f-anogan": "f-AnoGAN score (residual + kappa * critic feature residual)",
    "cyclegan": "erased signal (difference to the healthy translation)",
}


def architecture_for(kind: str, spec: GridSpec, latent_size: int, channels, strides,
                     num_res_units: int = 0) -> Tuple[str, Dict[str, Any]]:
    """``(architecture name, kwargs)`` for a model card."""
    c = spec.channels
    channels = [int(v) for v in channels]
    strides = [int(v) for v in strides]
    if kind in ("wgan-gp", "f-anogan"):
        return ARCHITECTURES[kind], {"in_shape": list(spec.in_shape), "latent_size": int(latent_size),
                                     "channels": channels, "strides": strides, "num_res_units": num_res_units}
    if kind == "ae":
        return ARCHITECTURES[kind], {"spatial_dims": 3, "in_channels": c, "out_channels": c, "channels": channels,
                                     "strides": strides, "num_res_units": num_res_units}
    if kind == "vae":
        return ARCHITECTURES[kind], {"spatial_dims": 3, "in_shape": list(spec.in_shape), "out_channels": c,
                                     "latent_size": int(latent_size), "channels": channels, "strides": strides,
                                     "num_res_units": num_res_units, "use_sigmoid": False,
                                     "use_mean_at_inference": True}
    if kind == "cyclegan":
        return ARCHITECTURES[kind], {"spatial_dims": 3, "in_channels": c, "features": channels,
                                     "strides": strides[: len(channels) - 1], "num_res_units": num_res_units,
                                     "disc_channels": channels[0], "disc_layers": 2}
    raise ModelError(f"unknown generative kind {kind!r}; one of {', '.join(KINDS)}")


def build(kind: str, spec: GridSpec, latent_size: int, channels, strides, num_res_units: int = 0):
    name, kwargs = architecture_for(kind, spec, latent_size, channels, strides, num_res_units)
    return build_network(name, kwargs), name, kwargs


def check_kind(module: torch.nn.Module, kind: str) -> None:
    """A clear error when a card's ``generative_kind`` does not fit its network."""
    from monai.networks.nets import AutoEncoder, VarAutoEncoder

    expected = {"wgan-gp": EncoderGeneratorCritic, "f-anogan": EncoderGeneratorCritic, "ae": AutoEncoder,
                "vae": VarAutoEncoder, "cyclegan": CycleGAN}.get(kind)
    if expected is None:
        raise ModelError(f"card generative_kind {kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(module, expected):
        raise ModelError(f"generative_kind {kind!r} needs a {expected.__name__} network, "
                         f"the card builds {type(module).__name__}")


def reconstruct(module: torch.nn.Module, kind: str, x: torch.Tensor) -> torch.Tensor:
    """The healthy reconstruction of ``x`` (``(N, C, *spatial)``; logits for label inputs)."""
    if kind == "vae":
        mu, _ = module.encode_forward(x)
        return module.decode_forward(mu, False)
    return module(x)


@dataclass
class ScoreParts:
    """Per-voxel map (``(N, *spatial)``) and per-volume scores of a batch."""

    map: torch.Tensor
    score: torch.Tensor
    reconstruction: torch.Tensor
    details: Dict[str, torch.Tensor]


#: what an anomaly map of an intensity model may show: the residual's size, or one sign of it
#: (:func:`clinicalai.generative.anomaly.map_polarity`)
POLARITIES = ("both", "brighter", "darker")


def residual_map(x: torch.Tensor, recon: torch.Tensor, labels: bool) -> torch.Tensor:
    """``|x - r|`` for intensities; ``1 - p(true class)`` for one-hot labels."""
    if labels:
        return 1.0 - (torch.softmax(recon, 1) * x).sum(1)
    return (x - recon).abs().sum(1)


def top_mean(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the largest ``fraction`` of each sample's values, ``(N, ...) -> (N,)``."""
    flat = values.reshape(values.shape[0], -1)
    k = max(1, int(round(fraction * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(1)


def score_batch(module: torch.nn.Module, kind: str, x: torch.Tensor, labels: bool, kappa: float = 1.0,
                top_fraction: float = TOP_FRACTION) -> ScoreParts:
    """Anomaly map and volume score for a batch ``x`` (``(N, C, *spatial)``)."""
    recon = reconstruct(module, kind, x)
    amap = residual_map(x, recon, labels)
    details: Dict[str, torch.Tensor] = {}
    fres = None
    if kind in ("wgan-gp", "f-anogan"):
        details["critic"] = module.critic(x).reshape(-1).detach()
        if kind == "f-anogan":
            target = torch.softmax(recon, 1) if labels else recon
            fres = feature_residual(module, x, target)
            details["feature_residual"] = fres.detach()
    score, error = map_score(amap, kind, top_fraction, kappa, fres)
    if error is not None:
        details["reconstruction_error"] = error.detach()
    return ScoreParts(amap, score, recon, details)


def map_score(amap: torch.Tensor, kind: str, top_fraction: float, kappa: float = 1.0,
              feature_residual: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(volume score, reconstruction error or None)`` per sample of an anomaly map
    ``(N, *spatial)``: the mean of its top ``top_fraction`` squared residuals, plus ``kappa`` x
    the f-AnoGAN ``feature_residual`` where given; for a CycleGAN the mean of its top
    unsquared changes (the healthy translation only changes what it considers abnormal: the
    largest changes measure how much was erased), and no reconstruction error."""
    if kind == "cyclegan":
        return top_mean(amap, top_fraction), None
    error = top_mean(amap ** 2, top_fraction)
    score = error + kappa * feature_residual if kind == "f-anogan" and feature_residual is not None else error
    return score, error


def feature_residual(module: torch.nn.Module, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """f-AnoGAN feature residual ``||f(x) - f(r)||^2``, per sample, relative to ``||f(x)||^2``.

    f-AnoGAN divides by the number of features; the critic of a WGAN is unbounded, so the
    scale of its features drifts with training and ``kappa`` would have to be re-tuned for
    every model. Relative to the features' own energy the term is scale-free.
    """
    fx = module.critic_features(x)
    fr = module.critic_features(recon)
    num = ((fx - fr) ** 2).reshape(fx.shape[0], -1).mean(1)
    den = (fx ** 2).reshape(fx.shape[0], -1).mean(1).detach().clamp_min(1e-8)
    return num / den


class Codec:
    """Encode to / decode from a flat latent code, for the latent-space analyses.

    Works for ``wgan-gp`` / ``f-anogan`` (E and G), ``vae`` (posterior mean and decoder) and
    ``ae`` (the bottleneck feature map, flattened).
    """

    def __init__(self, module: torch.nn.Module, kind: str) -> None:
        if kind == "cyclegan":
            raise ModelError("a CycleGAN has no latent code; latent analyses need a wgan-gp, f-anogan, ae or vae model")
        self.module, self.kind = module, kind
        self._shape: Optional[Tuple[int, ...]] = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.kind in ("wgan-gp", "f-anogan"):
            return m.encode(x)
        if self.kind == "vae":
            return m.encode_forward(x)[0]
        z = m.intermediate(m.encode(x))
        self._shape = tuple(z.shape[1:])
        return z.reshape(z.shape[0], -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.kind in ("wgan-gp", "f-anogan"):
            return m.decode(z)
        if self.kind == "vae":
            return m.decode_forward(z, False)
        if self._shape is None:
            raise RuntimeError("encode at least once before decoding an AE code")
        return m.decode(z.reshape(z.shape[0], *self._shape))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
