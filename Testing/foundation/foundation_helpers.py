"""Helpers of the foundation tests (imported by name: conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from clinicalai.volume import Volume

#: a rotation far from any axis permutation, so every geometry bug shows
OBLIQUE = Rotation.from_euler("xyz", [23.0, -37.0, 61.0], degrees=True).as_matrix()
SPACING = (0.7, 1.3, 3.1)  # x, y, z mm: anisotropic, as a clinical MRI
ORIGIN = (-12.5, 33.25, 7.125)


def make_volume(dtype=np.int16, shape=(7, 9, 11), direction=OBLIQUE, seed=0, **kw) -> Volume:
    """A random volume of ``dtype`` on an oblique anisotropic grid."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(max(info.min, -3000), min(info.max, 3000), size=shape, endpoint=True).astype(dtype)
    else:
        arr = rng.normal(0, 250, size=shape).astype(dtype)
    return Volume(arr, spacing=SPACING, origin=ORIGIN, direction=direction, **kw)
