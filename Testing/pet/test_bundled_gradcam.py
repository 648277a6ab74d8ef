"""The bundled demo fold models (``python -m clinicalai.pet.train_demo``) look at the lesion: their
fold-mean Grad-CAM on recurrence phantoms they were not trained on peaks in or next to the
lesion and ranks lesion voxels above the rest of the brain."""

import numpy as np
import pytest

from clinicalai.attribution.metrics import score_map
from clinicalai.pet.calibration import CAM_EVIDENCE_THRESHOLD, CAM_EVIDENCE_UNITS
from clinicalai.pet.workflow import load_pet_models, predict_pet
from clinicalai.phantoms.pet import pet_case

FAST_GRID = {"spacing": (4.0, 4.0, 4.0), "shape": (36, 54, 48)}  # phantoms on a coarse 4 mm native grid


@pytest.fixture(scope="module")
def demo_models():
    return load_pet_models(device="cpu")


# seeds outside the demo's training set (seed 7: 700021-700180) and the other PET tests; one per scanner
@pytest.mark.parametrize("seed,scanner", [(8101, "A"), (8102, "B")])
def test_bundled_models_grad_cam_points_at_the_lesion(demo_models, seed, scanner):
    case = pet_case(seed, recurrence=True, scanner=scanner, **FAST_GRID)
    r = predict_pet(case.image, demo_models, brain_mask=case.brain_mask, cam=True)
    assert r.label == "recurrence", r.fold_probabilities
    # pointing game over the whole volume: the map's maximum lies within 2 voxels (8 mm) of the lesion
    whole = score_map(r.cam, case.lesion, pointing_tolerance=2)
    assert whole["pointing_game"] == 1.0
    in_brain = score_map(r.cam, case.lesion, mask=case.brain_mask)
    assert in_brain["auroc"] > 0.9, in_brain
    cam, lesion, brain = r.cam.array, case.lesion.array > 0, case.brain_mask.array > 0
    assert cam[lesion].mean() > 3 * cam[brain & ~lesion].mean()
    # a weak floor (~5 % of the peak) over brain and scalp keeps the energy share near 0.5, but
    # the brain holds twice the share of the map that its share of the volume would give
    assert r.cam_inside_brain_fraction > 2 * brain.mean(), (r.cam_inside_brain_fraction, brain.mean())


def test_the_panels_map_is_dark_on_a_negative_case_and_keeps_the_lesion_on_a_positive_one(demo_models):
    """Issue 16 item 9: the fold Grad-CAMs are scaled to their own peak, so 0.2 x peak painted
    the striatum and scalp of a case the ensemble calls negative. The map the panels show
    (``cam_evidence``: Grad-CAM x P(recurrence), brain only) at the default threshold paints
    nothing there, and on a positive case still covers the lesion as the Grad-CAM does."""
    negative = pet_case(8103, recurrence=False, **FAST_GRID)
    r = predict_pet(negative.image, demo_models, brain_mask=negative.brain_mask, cam=True)
    assert r.probability < 0.5, r.fold_probabilities
    raw_painted = r.cam.array >= CAM_EVIDENCE_THRESHOLD * r.cam.array.max()
    shown = r.cam_evidence()
    assert shown.same_grid(r.cam) and shown.units == CAM_EVIDENCE_UNITS
    brain = negative.brain_mask.array > 0
    assert raw_painted.sum() > 100  # the peak-relative rule painted a lot ...
    assert (shown.array >= CAM_EVIDENCE_THRESHOLD).sum() <= 0.05 * raw_painted.sum()  # ... this one next to nothing
    assert not shown.array[~brain].any()
    np.testing.assert_allclose(shown.array[brain], r.cam.array[brain] * r.probability, rtol=1e-6)

    positive = pet_case(8101, recurrence=True, scanner="A", **FAST_GRID)
    r = predict_pet(positive.image, demo_models, brain_mask=positive.brain_mask, cam=True)
    lesion = positive.lesion.array > 0
    raw_in_lesion = (r.cam.array[lesion] >= CAM_EVIDENCE_THRESHOLD * r.cam.array.max()).sum()
    shown_in_lesion = (r.cam_evidence().array[lesion] >= CAM_EVIDENCE_THRESHOLD).sum()
    assert raw_in_lesion > 0 and shown_in_lesion >= 0.8 * raw_in_lesion, (shown_in_lesion, raw_in_lesion, r.probability)
