"""``clinicalai.morphology.binary_fill_holes`` is SciPy's hole filling, computed in one pass."""

import numpy as np
import pytest
from scipy import ndimage

from clinicalai.morphology import binary_fill_holes


@pytest.mark.parametrize("shape", [(7,), (1, 9), (64, 64), (96, 80), (12, 24, 20)])
@pytest.mark.parametrize("full_connectivity", [False, True])
def test_same_as_scipy_on_random_masks(shape, full_connectivity):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    structure = ndimage.generate_binary_structure(len(shape), len(shape)) if full_connectivity else None
    filled_some = 0
    for density in (0.2, 0.4, 0.55, 0.7, 0.9):
        for _ in range(6):
            # blobs with holes of many sizes and depths, some touching the array's faces
            mask = ndimage.binary_opening(rng.random(shape) < density) | (rng.random(shape) < 0.05)
            if rng.random() < 0.5:  # only a sub-box of it, anywhere up to the faces (the bounding-box crop)
                starts = [int(rng.integers(0, n)) for n in shape]
                box = tuple(slice(a, a + int(rng.integers(1, n + 1))) for a, n in zip(starts, shape))
                small = np.zeros_like(mask)
                small[box] = mask[box]
                mask = small
            ours = binary_fill_holes(mask, structure=structure)
            assert ours.dtype == bool and ours.shape == mask.shape
            np.testing.assert_array_equal(ours, ndimage.binary_fill_holes(mask, structure=structure))
            filled_some += int((ours & ~mask).any())
    if len(shape) > 1 and min(shape) > 1:
        assert filled_some >= 3, "the masks had holes to fill"


def test_a_ring_is_filled_and_a_ring_cut_by_the_edge_is_not():
    yy, xx = np.ogrid[:40, :40]
    r2 = (yy - 20) ** 2 + (xx - 20) ** 2
    ring = (r2 < 15 ** 2) & (r2 > 10 ** 2)
    assert binary_fill_holes(ring).sum() == (r2 < 15 ** 2).sum()
    cut = ring[:, 20:]  # the ring's right half: its inside reaches the array's left face
    np.testing.assert_array_equal(binary_fill_holes(cut), cut)
    assert binary_fill_holes(np.zeros((5, 5))).sum() == 0 and binary_fill_holes(np.ones((5, 5))).all()
