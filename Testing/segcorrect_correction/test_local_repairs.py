"""The local repairs of the evidence strategy (issue #14, the degraded-slice target): each fixes
the corruption it is for on a crafted slice and leaves a correct slice unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clinicalai.segcorrect.candidates import (Evidence, candidates_for_slice, close_ring, close_walls, fill_gaps,
                                              fill_holes, fill_speckles, local_repairs, misplaced_cavity_as_rv,
                                              relabel_islands)
from clinicalai.segcorrect.corruptions import speckle_dropout
from clinicalai.segcorrect.validity import CARDIAC_VALUES as V
from clinicalai.segcorrect.validity import check_slice, label_dice


@pytest.mark.parametrize("lv_r", [7, 3])
def test_an_lv_patch_inside_the_rv_takes_the_label_of_its_surroundings(draw, lv_r):
    """An LV patch inside the RV touching the septum (a label swap): the nearest-pixel rule would
    give its septal side to the myocardium; its surroundings say RV. With an apical cavity
    (radius 3) the patch is larger than the cavity, and still the patch is what is relabelled."""
    truth = draw.heart(lv_r=lv_r)
    raw = truth.copy()
    patch = draw.disc(truth.shape, (32, 22), 5) & (truth == 1)
    raw[patch] = 3
    assert not check_slice(raw).valid and np.sum(patch) > 20
    if lv_r == 3:
        assert np.sum(patch) > np.sum(truth == 3)  # the cavity is the smaller LV component
    fixed = relabel_islands(raw, V)
    np.testing.assert_array_equal(fixed, truth)
    np.testing.assert_array_equal(relabel_islands(truth, V), truth)


def test_a_whole_structure_under_the_wrong_label_is_named_by_where_it_lies(draw):
    """Label swaps of a whole structure: the cavity labelled RV (an RV island enclosed by the
    wall) becomes LV again; the whole RV labelled LV (a second "cavity" outside the wall) becomes
    RV again. A correct slice is left unchanged by both."""
    for truth in (draw.heart(), draw.heart(lv_r=9, myo_r=12, rv_r=6)):  # 253 cavity pixels, 104 RV ones: larger, too
        cavity_as_rv = truth.copy()
        cavity_as_rv[truth == 3] = 1
        assert not check_slice(cavity_as_rv).valid
        np.testing.assert_array_equal(relabel_islands(cavity_as_rv, V), truth)
    truth = draw.heart()
    rv_as_lv = truth.copy()
    rv_as_lv[truth == 1] = 3
    assert not check_slice(rv_as_lv).valid
    np.testing.assert_array_equal(misplaced_cavity_as_rv(rv_as_lv, V), truth)
    np.testing.assert_array_equal(misplaced_cavity_as_rv(truth, V), truth)


def test_a_gap_through_the_wall_is_closed(draw):
    """A 2-pixel gap through the lateral wall (a speckle dropout or a narrow missing wedge: the
    cavity touches background): closing the myocardium with a disc of radius 2 restores it."""
    truth = draw.heart()
    raw = truth.copy()
    box = np.zeros(truth.shape, bool)
    box[31:33, 44:52] = True
    gap = box & (truth == 2)  # the lateral wall is x 46-49 here
    raw[gap] = 0
    assert gap.sum() >= 7 and "lv_enclosed_by_myo" in check_slice(raw).failed
    fixed = close_walls(raw, V, radius=2)
    assert check_slice(fixed).valid
    # all but the outline's one-pixel tip at (32, 49), which no closing brings back
    assert np.count_nonzero(fixed != truth) <= 1 and (fixed[gap] == 2).sum() >= gap.sum() - 1
    for radius in (2, 3):
        np.testing.assert_array_equal(close_walls(truth, V, radius), truth)


def test_an_eroded_myocardium_grows_back_into_its_gaps(draw):
    """The myocardium eroded by one pixel (what the erode corruption leaves: a background ring
    between it and the cavity, a gap to the RV): invalid, and the gaps filled by MYO make it
    valid and closer to the truth than the raw slice (the wall
    back against the cavity and the RV); a correct slice is left unchanged."""
    truth = draw.heart()
    raw = truth.copy()
    myo = truth == 2
    raw[myo & ~ndimage.binary_erosion(myo)] = 0
    assert not check_slice(raw).valid
    fixed = fill_gaps(raw, V, "MYO")
    assert check_slice(fixed).valid
    assert label_dice(fixed, truth, (1, 2, 3)) > label_dice(raw, truth, (1, 2, 3)) + 0.03
    # the wall is back against the cavity and the RV; only its outer edge to the background, which
    # no gap marks, stays eroded
    inner = myo & ndimage.binary_dilation(np.isin(truth, (1, 3)))
    assert (fixed[inner] == 2).all()
    for name in ("RV", "MYO", "LV"):
        np.testing.assert_array_equal(fill_gaps(truth, V, name), truth)


def test_the_local_repairs_join_the_candidates(draw):
    """In the evidence strategy the islands relabelled by their surroundings are a valid
    candidate equal to the truth for the LV patch in the RV, and win where the segmenter's
    probabilities support them (with agreement alone a ring drawn around the patch, closer to
    the raw mask, scores higher: the scoring, not the pool, decides such slices); every local
    repair of a correct slice is the slice itself."""
    truth = draw.heart(lv_r=3)
    raw = truth.copy()
    raw[draw.disc(truth.shape, (32, 22), 5) & (truth == 1)] = 3
    plain = candidates_for_slice(raw, {}, V, Evidence((1, 2, 3), None, raw))
    islands = [c for c in plain if c.source == "islands relabelled by their surroundings"]
    assert len(islands) == 1 and islands[0].validity.valid
    np.testing.assert_array_equal(islands[0].labels, truth)
    probabilities = np.full((4,) + truth.shape, 0.1 / 3, np.float32)
    for c in range(4):
        probabilities[c][truth == c] = 0.9
    ranking = candidates_for_slice(raw, {}, V, Evidence((1, 2, 3), probabilities, raw))
    np.testing.assert_array_equal(ranking[0].labels, truth)
    for name, lab in local_repairs(truth, V):
        np.testing.assert_array_equal(lab, truth, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_a_speckle_dropout_of_the_wall_is_filled_by_the_wall(draw, seed):
    """The speckle dropout corruption on the myocardium (grains of it dropped to background,
    :func:`clinicalai.segcorrect.corruptions.speckle_dropout`): invalid, and each speckle filled
    by the label around it (then the ring closed outwards, for a grain on the cavity's edge
    that went to the LV) gives a valid slice close to the truth, closer than the nearest-pixel
    hole filling; a correct slice is left unchanged."""
    truth = draw.heart()
    raw = speckle_dropout(truth, [2], np.random.default_rng(seed))
    assert not check_slice(raw).valid
    fixed = close_ring(fill_speckles(raw, V, 2), V, outward=True)
    assert check_slice(fixed).valid
    # the evidence strategy's pool offers it (the local repairs)
    assert any(np.array_equal(lab, fixed) for _, lab in local_repairs(raw, V))
    dice = label_dice(fixed, truth, (1, 2, 3))
    assert dice >= 0.98 and dice > label_dice(fill_holes(raw, V), truth, (1, 2, 3))
    assert label_dice(raw, truth, (1, 2, 3)) < dice - 0.03
    for radius in (1, 2, 3):
        np.testing.assert_array_equal(fill_speckles(truth, V, radius), truth)
    hole = truth.copy()
    hole[29:35, 40:46] = 0  # 6 x 6, 3 pixels deep: a hole (maybe a cavity), not a speckle
    np.testing.assert_array_equal(fill_speckles(hole, V), hole)
