"""Synthetic corruptions: every kind changes a mask, is deterministic by seed, and mostly
breaks anatomical validity."""

import numpy as np
import pytest

from clinicalai.segcorrect.corruptions import CORRUPTION_KINDS, corrupt_slice, corrupt_volume
from clinicalai.segcorrect.validity import check_slice


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_each_kind_changes_the_mask_deterministically(kind, heart):
    outs = [corrupt_slice(heart, seed, kinds=[kind], n=1) for seed in range(12)]
    for out, applied in outs:
        assert applied == [kind]
        assert out.shape == heart.shape and out.dtype == heart.dtype
        assert set(np.unique(out)) <= {0, 1, 2, 3}
    changed = [not np.array_equal(o, heart) for o, _ in outs]
    assert sum(changed) >= 10
    again, _ = corrupt_slice(heart, 5, kinds=[kind], n=1)
    assert np.array_equal(again, outs[5][0])
    invalid = sum(not check_slice(o).valid for o, _ in outs)
    assert invalid >= 3, f"{kind} should usually break anatomy, broke {invalid}/12"


def test_input_not_modified_and_bad_kind(heart):
    before = heart.copy()
    corrupt_slice(heart, 0, n=3)
    assert np.array_equal(before, heart)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_slice(heart, 0, kinds=["melt"])
    with pytest.raises(ValueError):
        corrupt_slice(heart[None], 0)


def test_corrupt_volume_leaves_empty_slices_and_is_seeded(heart):
    vol = np.stack([np.zeros_like(heart), heart, heart, heart, heart])
    a, kinds = corrupt_volume(vol, 3, probability=1.0)
    b, _ = corrupt_volume(vol, 3, probability=1.0)
    assert np.array_equal(a, b)
    assert kinds[0] == [] and np.array_equal(a[0], vol[0])
    assert all(k for k in kinds[1:])
    c, kinds_c = corrupt_volume(vol, 3, probability=0.0)
    assert np.array_equal(c, vol) and not any(kinds_c)
