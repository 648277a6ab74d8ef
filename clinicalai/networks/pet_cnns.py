"""3D CNNs of the FDOPA PET recurrence study that MONAI does not ship (CNN3D, VGG11-3D,
SqueezeNet3D). ResNet10 and SENet come from MONAI directly (``monai.networks.nets.resnet10``,
``monai.networks.nets.SENet``); see :data:`MONAI_PET_ARCHITECTURES`.

Every network takes ``(N, 1, D0, D1, D2)`` and returns ``(N, num_classes)`` logits (one logit by
default, for BCE). The spatial axis order is whatever the caller feeds: the networks end in
adaptive pooling, so they accept any input size; :mod:`clinicalai.pet.preprocess` documents the
order it uses.

Parameter counts (one output unless stated) against the study:

============  ===========  ===========  ==============================================
network       study        here         note
============  ===========  ===========  ==============================================
CNN3D         5,414,081    5,414,081    head pools to a 4x4x2 grid (256*32 = 8,192 features)
VGG11-3D      27,658,497   27,658,497   BN + ReLU, global average pooling, FC 512 -> 1
SqueezeNet3D  1,861,186    1,861,186    with ``num_classes=2`` (the study's count has a
                                        2-channel classifier conv); 1,860,673 with one logit
ResNet10      14,356,929   14,356,929   MONAI ``resnet10(n_input_channels=1, num_classes=1)``
SENet         (not given)  17,087,489   MONAI ``SENet`` with SEResNetBottleneck, layers
                                        (1,1,1,1), groups 1, reduction 4
============  ===========  ===========  ==============================================
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import nn

from ..errors import InputError
from . import register_architecture

#: kwargs that rebuild the two MONAI networks of the study with one output logit
MONAI_PET_ARCHITECTURES = {
    "resnet10": (
        "monai.networks.nets.resnet10",
        {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 1},
        14_356_929,
    ),
    "senet": (
        "monai.networks.nets.SENet",
        {
            "spatial_dims": 3, "in_channels": 1, "block": "se_resnet_bottleneck", "layers": [1, 1, 1, 1],
            "groups": 1, "reduction": 4, "num_classes": 1, "inplanes": 64, "input_3x3": False,
            "downsample_kernel_size": 1,
        },
        None,  # the study gives no count; ours is 17,087,489
    ),
}


def _conv_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    layers = [nn.Conv3d(cin, cout, 3, padding=1)]
    if norm == "instance":
        layers.append(nn.InstanceNorm3d(cout))  # affine=False, as the study's count implies
    elif norm == "batch":
        layers.append(nn.BatchNorm3d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@register_architecture(
    "CNN3D: 4 conv blocks (64, 64, 128, 256) + InstanceNorm + ReLU + MaxPool, FC 512, dropout 0.5",
    reference_parameters=5_414_081,
    reference_kwargs={"in_channels": 1, "num_classes": 1},
)
class CNN3D(nn.Module):
    """The study's plain 3D CNN.

    Four blocks conv3x3x3 -> InstanceNorm -> ReLU -> MaxPool(2) with 64, 64, 128, 256 channels;
    the features are average-pooled onto a ``pool_grid`` (default 4x4x2: the only head that
    reproduces the study's 5,414,081 parameters, 256*32 = 8,192 features into FC 512), then
    FC 512 -> ReLU -> Dropout -> FC ``num_classes``.

    ``norm="batch"`` or ``"none"`` replaces the instance norm (which removes each scan's overall
    uptake level).

    ``pool="max"`` pools the features by their maximum instead of their mean (same parameter
    count): the answer then rests on the strongest local response, the natural head for "is
    there one focal hot lesion anywhere" (the bundled demo models use it with a 1x1x1 grid, so
    their Grad-CAM points at the lesion).

    Input ``(N, in_channels, D0, D1, D2)``, output ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        channels: Sequence[int] = (64, 64, 128, 256),
        pool_grid: Sequence[int] = (4, 4, 2),
        hidden: int = 512,
        dropout: float = 0.5,
        norm: str = "instance",
        pool: str = "avg",
    ) -> None:
        super().__init__()
        if norm not in ("instance", "batch", "none"):
            raise ValueError(f"norm must be instance, batch or none, got {norm!r}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be avg or max, got {pool!r}")
        blocks = []
        cin = in_channels
        for c in channels:
            blocks += [_conv_block(cin, c, norm), nn.MaxPool3d(2, ceil_mode=True)]
            cin = c
        self.features = nn.Sequential(*blocks)
        grid = tuple(int(g) for g in pool_grid)
        self.pool = nn.AdaptiveAvgPool3d(grid) if pool == "avg" else nn.AdaptiveMaxPool3d(grid)
        n_feat = cin * math.prod(int(g) for g in pool_grid)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(n_feat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


@register_architecture(
    "VGG11-3D: configuration A with BatchNorm + ReLU, global average pooling, FC",
    reference_parameters=27_658_497,
    reference_kwargs={"in_channels": 1, "num_classes": 1},
)
class VGG11_3D(nn.Module):
    """VGG11 (configuration A) in 3D: 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M,
    each conv 3x3x3 + BatchNorm + ReLU; global average pooling; FC ``num_classes``.

    Input ``(N, in_channels, D0, D1, D2)``, output ``(N, num_classes)`` logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, width: float = 1.0) -> None:
        super().__init__()
        layers = []
        cin = in_channels
        for v in _VGG11:
            if v == "M":
                layers.append(nn.MaxPool3d(2, ceil_mode=True))
            else:
                c = max(1, int(v * width))
                layers.append(_conv_block(cin, c, "batch"))
                cin = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class Fire3D(nn.Module):
    """SqueezeNet Fire module in 3D: squeeze 1x1x1, then expand 1x1x1 and 3x3x3 concatenated."""

    def __init__(self, inplanes: int, squeeze: int, expand1: int, expand3: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv3d(inplanes, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1 = nn.Sequential(nn.Conv3d(squeeze, expand1, 1), nn.ReLU(inplace=True))
        self.expand3 = nn.Sequential(nn.Conv3d(squeeze, expand3, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], dim=1)


@register_architecture(
    "SqueezeNet3D (v1.0 layout): conv 7x7x7 96, eight Fire modules, dropout, 1x1x1 classifier conv",
    reference_parameters=1_861_186,
    reference_kwargs={"in_channels": 1, "num_classes": 2},
)
class SqueezeNet3D(nn.Module):
    """SqueezeNet v1.0 in 3D (no batch norm): conv 7x7x7/2 (96) -> MaxPool -> Fire x3 -> MaxPool
    -> Fire x4 -> MaxPool -> Fire -> Dropout -> conv 1x1x1 to ``num_classes`` -> ReLU-free global
    average pooling.

    The study's 1,861,186 parameters are this layout with a two-channel classifier conv
    (``num_classes=2``); with the one logit used here it has 1,860,673. The final ReLU of the
    2D original is left out so the logit can be negative (needed for BCE).

    Input ``(N, in_channels, D0, D1, D2)``, output ``(N, num_classes)`` logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, 96, 7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(3, stride=2, ceil_mode=True),
            Fire3D(96, 16, 64, 64),
            Fire3D(128, 16, 64, 64),
            Fire3D(128, 32, 128, 128),
            nn.MaxPool3d(3, stride=2, ceil_mode=True),
            Fire3D(256, 32, 128, 128),
            Fire3D(256, 48, 192, 192),
            Fire3D(384, 48, 192, 192),
            Fire3D(384, 64, 256, 256),
            nn.MaxPool3d(3, stride=2, ceil_mode=True),
            Fire3D(512, 64, 256, 256),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Conv3d(512, num_classes, 1), nn.AdaptiveAvgPool3d(1), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


#: short names used by ``clinicalai train pet --arch`` -> (card architecture name, kwargs, study count)
PET_ARCHITECTURES = {
    "cnn3d": ("clinicalai.networks.CNN3D", {"in_channels": 1, "num_classes": 1}, 5_414_081),
    "vgg11": ("clinicalai.networks.VGG11_3D", {"in_channels": 1, "num_classes": 1}, 27_658_497),
    "squeezenet": ("clinicalai.networks.SqueezeNet3D", {"in_channels": 1, "num_classes": 1}, 1_861_186),
    **MONAI_PET_ARCHITECTURES,
}

#: the default Grad-CAM layer of each (the last convolutional block)
PET_CAM_LAYERS = {
    "cnn3d": "features.6",
    "vgg11": "features.11",
    "squeezenet": "features.12",
    "resnet10": "layer4",
    "senet": "layer4",
}


def pet_architecture(short: str) -> Tuple[str, dict]:
    """``(card architecture name, kwargs)`` for a short name of :data:`PET_ARCHITECTURES`."""
    key = short.lower()
    if key not in PET_ARCHITECTURES:
        raise InputError(f"unknown PET architecture {short!r}; choose one of {', '.join(PET_ARCHITECTURES)}")
    name, kwargs, _ = PET_ARCHITECTURES[key]
    return name, dict(kwargs)
