"""Toy classifiers with known answers for the attribution tests."""

import numpy as np
import pytest
import torch
import torch.nn as nn


class MaskMul(nn.Module):
    """Multiplies the features by a fixed region mask: the network only sees that region."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        return x * self.mask


class RegionNet(nn.Module):
    """logit_k = sum_c w[k, c] * sum_{v in region} relu(x_c[v]) (a conv block with identity
    1x1 kernels, then the region mask, then global sum and a linear head).

    For positive inputs the gradient w.r.t. x_c is w[target, c] inside the region and exactly 0
    outside; the last conv block is ``features``.
    """

    def __init__(self, region: np.ndarray, channels: int = 1, n_classes: int = 3):
        super().__init__()
        dims = region.ndim
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        conv = Conv(channels, channels, 1, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            for c in range(channels):
                conv.weight[(c, c) + (0,) * dims] = 1.0
        self.features = nn.Sequential(conv, nn.ReLU(inplace=True), MaskMul(torch.from_numpy(region)))
        self.head = nn.Linear(channels, n_classes, bias=False)
        with torch.no_grad():
            w = torch.arange(1, n_classes * channels + 1, dtype=torch.float32).reshape(n_classes, channels)
            w[0] *= -1  # class 0 counts the region negatively
            self.head.weight.copy_(w)

    def forward(self, x):
        f = self.features(x)
        return self.head(f.flatten(2).sum(-1))


def region_mask(shape, lo, hi):
    m = np.zeros(shape, np.float32)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


@pytest.fixture
def region2d():
    return region_mask((16, 16), (4, 9), (8, 14))


@pytest.fixture
def region3d():
    return region_mask((12, 16, 16), (2, 4, 9), (6, 8, 14))


@pytest.fixture
def RegionNetCls():
    """The RegionNet class (test modules cannot import conftest under --import-mode=importlib)."""
    return RegionNet
