"""Fixtures for the SegCorrect segmenter tests (phantoms, oblique anisotropic geometry)."""

import numpy as np
import pytest


def oblique_direction(angle_deg: float = 20.0) -> np.ndarray:
    """A rotation about an oblique axis (columns = LPS directions of i, j, k)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.deg2rad(angle_deg) * np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])).as_matrix()


@pytest.fixture(scope="session")
def oblique():
    return oblique_direction()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


@pytest.fixture(scope="session")
def dice_fn():
    return dice


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tests run tiny convolutions: one thread beats two that contend with the rest of
    the suite on a 2-core machine (measured 30 s vs 1 s for a one-epoch training run)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
