"""Fixtures of the foundation tests. Helpers live in foundation_helpers.py (a unique module
name: with --import-mode=importlib test folders are not packages, so this folder is put on
sys.path for it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from foundation_helpers import make_volume  # noqa: E402


@pytest.fixture
def oblique_volume():
    return make_volume()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny networks here run fastest on one thread; with two threads on a shared, busy
    2-core machine, torch's thread pool spends most of its time waiting (10-100x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
