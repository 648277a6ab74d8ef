"""Network-space mapping: crop + resize to 128 x 128 and its exact inverse."""

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.segcorrect.preprocess import (
    frame_for_volume,
    frame_from_mask,
    from_network,
    normalize_intensity,
    one_hot,
    to_network,
)


def test_exact_round_trip_without_resize():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (5, 150, 170)).astype(np.uint8)
    # 128 x 128 box reaching past the top-left corner: padding, no resize
    frame = frame_for_volume(lab.shape, center_yx=(40, 50), size_mm=128.0, spacing=(1.0, 1.0, 5.0))
    assert (frame.height, frame.width) == (128, 128) and frame.y0 < 0 and frame.x0 < 0
    net = to_network(lab, frame, "labels")
    assert net.shape == (5, 128, 128)
    back = from_network(net, frame, lab.shape)
    inside = np.zeros(lab.shape, bool)
    inside[:, : frame.y0 + 128, : frame.x0 + 128] = True
    np.testing.assert_array_equal(back[inside], lab[inside])
    assert not back[~inside].any()


def test_round_trip_oblique_anisotropic(oblique, dice_fn):
    # in-plane 1.2 x 1.8 mm: the box is square in mm, so not square in voxels
    case = cardiac_case(4, "ED", spacing=(1.2, 1.8, 8.0), direction=oblique, origin=(12.0, -30.0, 40.0))
    lab = case.labels.array
    frame = frame_from_mask(lab, case.labels.spacing)
    assert frame.width > frame.height  # more voxels along x, where they are smaller
    net = to_network(lab, frame, "labels")
    back = from_network(net, frame, lab.shape)
    out = case.labels.with_array(back)
    assert out.same_grid(case.labels)
    for k in (1, 2, 3):
        assert dice_fn(back == k, lab == k) > 0.97
        # the structure stays where it was, in millimetres (LPS)
        idx = np.argwhere(back == k).mean(0)[::-1]
        ref = np.argwhere(lab == k).mean(0)[::-1]
        m = out.index_to_lps()[:3, :3]
        assert np.linalg.norm(m @ (idx - ref)) < 0.5
    probs = from_network(one_hot(net), frame, lab.shape, kind="probabilities")
    assert probs.shape == (4,) + lab.shape
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert dice_fn(probs.argmax(0) == 2, lab == 2) > 0.97


def test_image_normalisation_and_coarse_frame():
    case = cardiac_case(2, "ES")
    img = to_network(case.image.array, frame_for_volume(case.image.shape, spacing=case.image.spacing))
    assert img.shape[1:] == (128, 128) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.9
    n = normalize_intensity(case.image.array)
    assert np.isclose(np.percentile(n, 50), np.percentile((case.image.array - np.percentile(case.image.array, 1)) / np.ptp(np.percentile(case.image.array, [1, 99])), 50), atol=1e-3)


def test_one_hot_and_errors():
    oh = one_hot(np.array([[0, 3], [1, 2]]), 4)
    assert oh.shape == (4, 2, 2) and (oh.sum(0) == 1).all() and oh[3, 0, 1] == 1
    with pytest.raises(InputError):
        one_hot(np.array([5]), 4)
    frame = frame_for_volume((3, 40, 40))
    with pytest.raises(InputError):
        to_network(np.zeros((3, 41, 40)), frame)
    with pytest.raises(InputError):
        from_network(np.zeros((3, 128, 128)), frame, (3, 40, 41))
