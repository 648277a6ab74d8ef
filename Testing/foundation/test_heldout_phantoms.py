"""The held-out cardiac phantom family: plausible anatomy, its own variety, never the training family."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clinicalai.phantoms.cardiac import LV, MYO, RV, cardiac_case
from clinicalai.phantoms.cardiac_heldout import heldout_cardiac_case, heldout_case_parameters

SEEDS = range(6)


@pytest.fixture(scope="module")
def cases():
    return [heldout_cardiac_case(s) for s in SEEDS]


def test_same_seed_same_case_and_geometry(cases):
    again = heldout_cardiac_case(2)
    np.testing.assert_array_equal(again.image.array, cases[2].image.array)
    np.testing.assert_array_equal(again.labels.array, cases[2].labels.array)
    for c in cases:
        assert c.labels.same_grid(c.image)
        d = c.image.direction
        np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-9)
        assert not np.allclose(d, np.eye(3))  # oblique stacks by default
        assert c.image.modality == "MR" and c.meta["family"] == "heldout"


def test_anatomy_is_plausible(cases):
    """On every slice with an LV cavity, the myocardium surrounds it (the cavity touches
    neither background nor RV), and the RV, where present, lies against the myocardium."""
    for c in cases:
        lab = c.labels.array
        assert {RV, MYO, LV} <= set(np.unique(lab))
        for k in range(lab.shape[0]):
            lv = lab[k] == LV
            if lv.sum() < 20:
                continue
            ring = ndimage.binary_dilation(lv, iterations=1) & ~lv
            leaks = np.isin(lab[k][ring], (0, RV)).mean()
            assert leaks < 0.05, (c.meta["seed"], k, leaks)
            rv = lab[k] == RV
            if rv.sum() > 20:
                assert (ndimage.binary_dilation(rv, iterations=2) & (lab[k] == MYO)).any()


def test_every_true_slice_passes_segcorrects_validity_criteria(cases):
    """The family's masks are anatomically valid by the same criteria SegCorrect judges
    segmentations with, so validity figures on it measure the segmenter, not the phantom."""
    from clinicalai.segcorrect.validity import check_slice

    for c in cases:
        for z, slice_ in enumerate(c.labels.array):
            if slice_.any():
                result = check_slice(slice_)
                assert result.valid, (c.meta["seed"], z, [k for k, ok in result.criteria.items() if not ok])


def test_blood_is_bright_and_myocardium_dark(cases):
    for c in cases:
        img, lab = c.image.array, c.labels.array
        core = ndimage.binary_erosion(lab == LV, iterations=1)
        assert np.median(img[core]) > 1.5 * np.median(img[lab == MYO])


def test_the_family_differs_from_the_training_family(cases):
    """RV at any angle around the LV (the training family keeps it on the image left), bodies
    present or absent, thin and thick slices."""
    params = [heldout_case_parameters(s) for s in range(40)]
    assert max(abs(np.rad2deg(p["rv_angle"] - np.pi)) for p in params) > 90
    assert {p["body"] for p in params} == {True, False}
    thick = [p["thickness"] for p in params]
    assert min(thick) < 5 and max(thick) > 8
    # the rendered cases say what they drew
    assert [c.meta["spacing"][2] for c in cases] == [heldout_case_parameters(s)["thickness"] for s in SEEDS]
    # no case of it is a case of the first family
    first = cardiac_case(0)
    assert all(c.image.shape != first.image.shape or not np.allclose(c.image.array, first.image.array) for c in cases)
    # limiting the rotation keeps the RV near the image left, as the training family has it
    near = [abs(np.rad2deg(heldout_case_parameters(s, max_rotation_deg=20)["rv_angle"] - np.pi)) for s in range(40)]
    assert max(near) <= 20
