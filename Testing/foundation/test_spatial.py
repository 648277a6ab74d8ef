"""Spatial steps and their inverses on oblique, anisotropic volumes."""

from __future__ import annotations

import numpy as np
import pytest
from foundation_helpers import OBLIQUE, make_volume
from scipy.spatial.transform import Rotation

from clinicalai.errors import InputError
from clinicalai.volume import SpatialPipeline, Volume, crop_or_pad, reorient_to_lps, resample_to_grid, resample_to_spacing


def lps_of(vol: Volume, zyx) -> np.ndarray:
    """Physical LPS position (mm) of the voxel at array index ``(z, y, x)``."""
    return (vol.index_to_lps() @ np.r_[np.asarray(zyx, float)[::-1], 1.0])[:3]


def centroid_lps(vol: Volume) -> np.ndarray:
    w = np.clip(vol.array.astype(float), 0, None)
    idx = np.indices(vol.shape).reshape(3, -1).astype(float)
    return lps_of(vol, (idx * w.reshape(-1)).sum(axis=1) / w.sum())


# a flipped, permuted oblique direction (a "RAI"-like acquisition): reorientation must permute and flip
PERMUTED = Rotation.from_euler("xyz", [170.0, -35.0, 100.0], degrees=True).as_matrix()


@pytest.mark.parametrize("direction", [OBLIQUE, PERMUTED, np.diag([-1.0, 1.0, -1.0]), np.eye(3)[:, [2, 0, 1]]])
def test_reorient_keeps_every_voxel_in_place_and_inverts_exactly(direction):
    vol = make_volume(np.int16, shape=(5, 7, 9), direction=direction)
    out, inverse = reorient_to_lps(vol)
    # index axes now point closest to L, P, S, with positive sign
    assert np.all(np.diag(out.direction) > 0)
    assert np.argmax(np.abs(out.direction), axis=0).tolist() == [0, 1, 2]
    # every voxel keeps its physical position: check each value against the source position
    flat_pos = np.argsort(vol.array, axis=None)
    for flat in flat_pos[:: max(1, flat_pos.size // 25)]:
        zyx = np.unravel_index(flat, vol.shape)
        target = lps_of(vol, zyx)
        ijk = np.linalg.solve(out.index_to_lps()[:3, :3], target - np.array(out.origin))
        kji = np.round(ijk[::-1]).astype(int)
        np.testing.assert_allclose(ijk[::-1], kji, atol=1e-6)
        assert out.array[tuple(kji)] == vol.array[zyx]
    back = inverse(out)
    assert back.same_grid(vol) and np.array_equal(back.array, vol.array)


def test_reorient_prefers_the_best_overall_axis_pairing():
    # for this rotation, pairing LPS axes with index axes one by one (greedy) leaves the S
    # axis with an index axis only 0.40 aligned to it; the best pairing keeps every axis >= 0.62
    d = Rotation.from_euler("xyz", [142.0, 130.0, 12.0], degrees=True).as_matrix()
    out, inverse = reorient_to_lps(make_volume(np.int16, direction=d))
    assert np.min(np.diag(out.direction)) > 0.6
    assert np.array_equal(inverse(out).array, make_volume(np.int16, direction=d).array)


@pytest.mark.parametrize("size", [(5, 7, 9), (9, 12, 16), (3, 15, 4)])
def test_crop_pad_inverse_is_exact_where_seen(size):
    vol = make_volume(np.int16, shape=(7, 9, 11))
    out, inverse = crop_or_pad(vol, size, pad_value=-999)
    assert out.shape == size
    # kept voxels keep their physical position
    hits = np.argwhere(out.array != -999)
    for zyx in hits[:: max(1, len(hits) // 20)]:
        src = np.linalg.solve(vol.index_to_lps()[:3, :3], lps_of(out, zyx) - np.array(vol.origin))[::-1]
        assert out.array[tuple(zyx)] == vol.array[tuple(np.round(src).astype(int))]
    back = inverse(out)
    assert back.same_grid(vol)
    seen = back.array != -999
    assert np.array_equal(back.array[seen], vol.array[seen])
    if all(s >= v for s, v in zip(size, vol.shape)):  # pure padding: nothing was lost
        assert np.array_equal(back.array, vol.array)


def test_crop_pad_rejects_bad_sizes():
    with pytest.raises(InputError):
        crop_or_pad(make_volume(), (0, 4, 4))


def test_resample_inverse_lands_on_the_input_grid():
    vol = make_volume(np.float32, shape=(8, 20, 24))
    out, inverse = resample_to_spacing(vol, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(out.spacing, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(out.direction, vol.direction, atol=1e-12)
    # same physical extent, centre kept
    centre_in = lps_of(vol, (np.array(vol.shape) - 1) / 2)
    centre_out = lps_of(out, (np.array(out.shape) - 1) / 2)
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-6)
    back = inverse(out)
    assert back.same_grid(vol, atol=1e-9)
    labels = out.with_array((out.array > 0).astype(np.uint8))
    back_labels = inverse(labels, interpolator="nearest")
    assert back_labels.same_grid(vol) and back_labels.array.dtype == np.uint8
    assert set(np.unique(back_labels.array)) <= {0, 1}


def test_resample_keeps_a_bright_point_in_place():
    a = np.zeros((20, 24, 28), np.float32)
    a[9, 11, 13] = 1000.0
    vol = Volume(a, spacing=(0.8, 1.1, 2.5), origin=(1.0, 2.0, 3.0), direction=OBLIQUE)
    out, inverse = resample_to_spacing(vol, (1.0, 1.0, 1.0))
    truth = lps_of(vol, (9, 11, 13))
    peak = np.unravel_index(np.argmax(out.array), out.shape)
    assert np.linalg.norm(lps_of(out, peak) - truth) <= 0.5 * np.sqrt(3) + 1e-6  # within half a voxel
    assert np.linalg.norm(centroid_lps(out) - truth) < 0.25  # linear interpolation keeps the centroid
    back = inverse(out)
    assert np.unravel_index(np.argmax(back.array), back.shape) == (9, 11, 13)


def test_resample_to_grid_nearest_keeps_labels_and_dtype():
    vol = make_volume(np.uint8, shape=(6, 8, 10))
    out = resample_to_grid(vol, vol.grid, interpolator="nearest")
    assert out.array.dtype == np.uint8 and np.array_equal(out.array, vol.array)


def test_resample_rejects_bad_spacing():
    with pytest.raises(InputError):
        resample_to_spacing(make_volume(), (1.0, 0.0, 1.0))


def test_pipeline_of_all_three_inverts_to_the_input_grid():
    vol = make_volume(np.float32, shape=(12, 30, 26), direction=PERMUTED)
    vol.array[4:8, 10:20, 8:18] += 2000.0  # a block well inside the crop
    pipe = SpatialPipeline()
    x = pipe.apply(reorient_to_lps, vol)
    x = pipe.apply(resample_to_spacing, x, (1.2, 1.2, 1.2))
    x = pipe.apply(crop_or_pad, x, (48, 48, 48))
    assert x.shape == (48, 48, 48)
    back = pipe.invert(x)
    assert back.same_grid(vol)
    block = np.zeros(vol.shape, bool)
    block[5:7, 12:18, 10:16] = True  # the block's interior (away from interpolation edges)
    assert np.all(back.array[block] > 1000.0)
    assert np.median(back.array[~np.pad(np.ones((6, 14, 14), bool), ((3, 3), (8, 8), (6, 6)))]) < 1000.0
    mask = pipe.invert(x.with_array((x.array > 1000).astype(np.uint8)), interpolator="nearest")
    assert mask.same_grid(vol) and mask.array.dtype == np.uint8
    assert mask.array[block].all()


def test_nearest_neighbour_ties_do_not_hang_on_float_noise_in_the_geometry():
    # a 2 mm grid over 1 mm columns of 1 / 0: every sample lies midway between two voxels; a
    # spacing a DICOM series and its NIfTI would write 1e-7 mm apart must give one mask
    from clinicalai.volume.core import Grid

    columns = np.zeros((4, 8, 8), np.uint8)
    columns[:, :, ::2] = 1
    source = Volume(columns, spacing=(1.0, 1.0, 1.0))
    masks = [resample_to_grid(source, Grid((4, 8, 4), (2.0 + eps, 1.0, 1.0), (0.5, 0.0, 0.0), tuple(np.eye(3).ravel())),
                              "nearest").array for eps in (0.0, 1e-7, -1e-7)]
    for mask in masks[1:]:
        np.testing.assert_array_equal(mask, masks[0])
    # away from ties the nudge moves nothing: the same grid resamples to itself
    np.testing.assert_array_equal(resample_to_grid(source, source.grid, "nearest").array, columns)
