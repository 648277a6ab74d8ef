"""Fixtures of the SegCorrect correction tests: hand-drawn short-axis slices and phantoms."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tests run many small networks and MONAI metric ops: on a shared 2-core machine a
    second torch thread made them 10-30x slower (thread hand-offs while other jobs hold the
    cores), and on an idle one it gains little. Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disc(shape, center, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2


def draw_heart(shape=(64, 64), lv_center=(32, 38), lv_r=7, myo_r=11, rv_center=(32, 22), rv_r=10):
    """A valid mid-ventricular slice: LV disc, MYO ring around it, RV crescent on the septal side."""
    m = np.zeros(shape, np.uint8)
    epi = disc(shape, lv_center, myo_r)
    m[disc(shape, rv_center, rv_r) & ~epi] = 1
    m[epi] = 2
    m[disc(shape, lv_center, lv_r)] = 3
    return m


@pytest.fixture
def heart():
    return draw_heart()


class _Drawing:
    disc = staticmethod(disc)
    heart = staticmethod(draw_heart)


@pytest.fixture
def draw():
    """Drawing helpers: ``draw.disc(shape, center, radius)``, ``draw.heart(...)``."""
    return _Drawing
