"""Candidates for invalid slices, chosen by the evidence (strategy="evidence")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.segcorrect.candidates import Evidence, candidates_for_slice, close_ring, rebuild_ring
from clinicalai.segcorrect.validity import CARDIAC_VALUES, check_slice

V = CARDIAC_VALUES  # RV 1, MYO 2, LV 3


def _heart(n: int = 64) -> np.ndarray:
    """A valid slice: LV disc, MYO ring, RV crescent on the left."""
    y, x = np.mgrid[:n, :n]
    r = np.hypot(y - 32, x - 36)
    out = np.zeros((n, n), np.int64)
    out[(np.hypot(y - 32, x - 22) < 13) & (r >= 13)] = 1
    out[(r < 13)] = 2
    out[r < 9] = 3
    assert check_slice(out).valid
    return out


def _probabilities(labels: np.ndarray, sharp: float = 0.9) -> np.ndarray:
    p = np.full((4,) + labels.shape, (1 - sharp) / 3, np.float32)
    for c in range(4):
        p[c][labels == c] = sharp
    return p


def test_an_lv_island_in_the_rv_is_removed_and_the_truth_recovered():
    truth = _heart()
    raw = truth.copy()
    raw[28:31, 14:17] = 3  # an LV island inside the RV
    assert not check_slice(raw).valid
    ranking = candidates_for_slice(raw, {}, V, Evidence((1, 2, 3), None, raw))
    best = ranking[0]
    assert best.validity.valid
    np.testing.assert_array_equal(best.labels, truth)


def test_a_broken_ring_is_closed_and_the_probabilities_pick_the_right_closure():
    truth = _heart()
    raw = truth.copy()
    gap = (raw == 2) & (np.arange(64)[None, :] > 44)  # the lateral wall missing: LV touches background
    raw[gap] = 0
    assert "lv_enclosed_by_myo" in check_slice(raw).failed
    for candidate in (close_ring(raw, V, outward=True), close_ring(raw, V, outward=False), rebuild_ring(raw, V)):
        assert check_slice(candidate).valid
    # the segmenter's own probabilities know where the wall is: the rebuilt ring wins
    ranking = candidates_for_slice(raw, {}, V, Evidence((1, 2, 3), _probabilities(truth), raw))
    assert ranking[0].validity.valid and ranking[0].source.startswith("ring")
    dice_best = 2 * np.sum((ranking[0].labels == 2) & (truth == 2)) / (np.sum(ranking[0].labels == 2) + np.sum(truth == 2))
    assert dice_best > 0.8


def test_evidence_strategy_never_touches_a_valid_mask_and_checks_its_inputs():
    from clinicalai.models import load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.pipeline import correct_mask

    corrector = load_model("cardiac-nvae", device="cpu")
    case = cardiac_case(7, size=(96, 96), n_slices=5)
    result = correct_mask(case.labels, corrector, strategy="evidence")
    np.testing.assert_array_equal(result.final.array, case.labels.array)
    assert result.settings["strategy"] == "evidence"
    with pytest.raises(InputError, match="strategy must be one of gate, evidence"):
        correct_mask(case.labels, corrector, strategy="best")
    with pytest.raises(InputError, match="segmenter probabilities have shape"):
        correct_mask(case.labels, corrector, strategy="evidence", probabilities=np.zeros((4, 2, 2, 2), np.float32))


def test_on_the_heldout_family_evidence_makes_slices_valid_and_better():
    """The bundled segmenter on two held-out phantoms: some raw slices are invalid (3 of 22
    with the domain-randomised model; most of them with the earlier mild one); with the
    evidence strategy every slice becomes valid and the mean Dice rises."""
    from clinicalai.models import load_model
    from clinicalai.segcorrect.evaluate_segmenter import evaluate_segmenter

    seg, cor = load_model("cardiac-unet", device="cpu"), load_model("cardiac-nvae", device="cpu")
    # the evidence strategy judges the network's own masks: the card's largest-component step (on
    # in the bundled card, for the gate) removes RV pieces no candidate brings back, so a run with
    # this strategy leaves it off unless asked (pipeline.keep_largest_for_run)
    report = evaluate_segmenter(seg, cor, family="heldout", n_cases=2, seed=0, strategy="evidence")
    assert report["keep_largest_component"] is False
    assert report["raw"]["validity_rate"] < 0.95
    assert report["final"]["validity_rate"] >= 0.95
    assert report["final"]["dice"]["mean"] > report["raw"]["dice"]["mean"]


def test_the_next_best_candidate_of_a_slice_can_be_taken_from_the_result():
    """A panel offers the runner-up: ``result.candidate(z, k)`` is the k-th reported candidate's
    mask, ``with_candidate`` the final mask with it; a valid slice has no candidates."""
    from clinicalai.models import load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.pipeline import correct_mask

    corrector = load_model("cardiac-nvae", device="cpu")
    case = cardiac_case(7, size=(96, 96), n_slices=5)
    noisy = case.labels.array.copy()
    z = next(i for i in range(noisy.shape[0]) if (noisy[i] == 2).sum() > 50)
    rows, cols = np.nonzero(noisy[z] == 1)
    noisy[z, rows[0]:rows[0] + 3, cols[0]:cols[0] + 3] = 3  # an LV island at the RV's edge
    assert not check_slice(noisy[z]).valid
    result = correct_mask(case.labels.with_array(noisy), corrector, strategy="evidence")
    reported = result.slices[z].candidates
    assert len(reported) >= 2
    np.testing.assert_array_equal(result.candidate(z, 0), result.final.array[z])
    second = result.candidate(z, 1)
    assert second.shape == noisy[z].shape and check_slice(second).valid == reported[1]["valid"]
    swapped = result.with_candidate(z, 1)
    np.testing.assert_array_equal(swapped.array[z], second)
    np.testing.assert_array_equal(np.delete(swapped.array, z, 0), np.delete(result.final.array, z, 0))
    valid_z = next(s.index for s in result.slices if s.valid_before)
    with pytest.raises(InputError, match="no candidate"):
        result.candidate(valid_z, 0)
    with pytest.raises(InputError, match="outside the mask"):
        result.candidate(99, 1)
    assert "ranking" not in result.slices[z].to_dict()


def test_without_probabilities_a_redrawing_candidate_is_offered_for_review_not_applied():
    """A basal slice (MYO disc, no LV) with a 6 x 6 hole, wider than the gaps the local repairs
    fill: the only valid candidate turns the hole into an LV cavity, a new structure (Dice with
    raw ~0.67). Nothing but the raw mask speaks for it, so the raw slice is kept and the
    candidate offered; with probabilities that support it, it is applied. A 2 x 2 hole is a gap:
    filled by the myocardium around it."""
    from clinicalai.segcorrect.candidates import REVIEW_AGREEMENT, needs_review
    from clinicalai.segcorrect.pipeline import CORRECTED, KEPT_RAW, GateSettings, judge_slice
    from clinicalai.models import load_model

    raw = _heart()
    raw[raw == 3] = 2  # no cavity: a basal slice
    settings = GateSettings.of(load_model("cardiac-nvae", device="cpu"), True, None, 0.96, "evidence")
    small = raw.copy()
    small[31:33, 34:36] = 0
    decision, proposal = judge_slice(0, small, small.copy(), settings)
    assert decision.decision == CORRECTED and "gaps filled by MYO" in decision.reason
    np.testing.assert_array_equal(proposal, raw)
    raw[29:35, 34:40] = 0  # a hole in the myocardium
    assert not check_slice(raw).valid
    decision, proposal = judge_slice(0, raw, raw.copy(), settings)
    assert decision.decision == KEPT_RAW and "for review" in decision.reason
    assert check_slice(proposal).valid and decision.score < REVIEW_AGREEMENT  # offered: corrected holds it
    assert needs_review(decision.ranking[0], Evidence((1, 2, 3), None, raw))
    supported = proposal.copy()
    decision, _ = judge_slice(0, raw, raw.copy(), settings, probabilities=_probabilities(supported))
    assert decision.decision == CORRECTED
    assert not needs_review(decision.ranking[0], Evidence((1, 2, 3), _probabilities(supported), raw))


def test_the_cardiac_segmenter_warns_that_it_is_unsure_of_a_brain_but_not_of_a_heart():
    """Issue #16 item 6: SegCorrect drew RV / MYO / LV over a brain MR (NIfTI, no tags, a field
    of view like a heart's: nothing before the run tells them apart). The bundled segmenter's
    own confidence does: its median over slices is below the card's limit on a brain phantom and
    above it on a cardiac phantom of either family, and the run says so in its warnings."""
    from clinicalai.models import load_model
    from clinicalai.phantoms.brain import brain_case
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.phantoms.cardiac_heldout import heldout_cardiac_case
    from clinicalai.segcorrect.pipeline import run_segcorrect

    model = load_model(Path(__file__).resolve().parents[2] / "Resources" / "Models" / "cardiac-unet.json")
    assert model.card.input.min_median_confidence is not None
    brain = run_segcorrect(brain_case(0).image, model)
    assert any("unsure of this image" in w for w in brain.warnings), brain.warnings
    for image in (cardiac_case(5000).image, heldout_cardiac_case(0).image):
        heart = run_segcorrect(image, model)
        assert not any("unsure" in w for w in heart.warnings), heart.warnings


def _image(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """A bright-blood slice of ``truth``: blood (RV, LV) bright, myocardium dark, background
    in between, with noise (the phantoms' SSFP-like contrast)."""
    level = np.array([350.0, 700.0, 250.0, 700.0])[truth]
    return (level + np.random.default_rng(seed).normal(0, 40, truth.shape)).astype(np.float32)


def test_the_image_term_prefers_the_right_label_for_a_wrong_patch_in_a_bright_cavity():
    """Issue #14: without probabilities the image is evidence. A patch of the LV cavity (bright
    blood) is labelled RV in the raw slice (invalid: RV in two pieces touching the LV). Two
    valid candidates relabel it: as cavity (right) or as myocardium (wrong, a bump of the wall);
    they agree with the raw mask almost equally, and agreement alone picks the wrong one. The
    intensity model (fitted under the raw mask's interior) knows the patch is blood, not muscle."""
    from clinicalai.segcorrect.candidates import IntensityModel, SliceContext

    truth = _heart()
    y, x = np.mgrid[:64, :64]
    patch = (np.hypot(y - 32, x - 28) < 4) & (truth == 3)  # touches the septal wall
    raw, wrong = truth.copy(), truth.copy()
    raw[patch], wrong[patch] = 1, 2
    assert not check_slice(raw).valid and check_slice(wrong).valid
    image = _image(truth)
    proposals = {"as myocardium": wrong, "as cavity": truth}
    plain = candidates_for_slice(raw, proposals, V, Evidence((1, 2, 3), None, raw))
    assert plain[0].source == "as myocardium"  # agreement alone: the wrong label
    with_image = Evidence((1, 2, 3), None, raw, SliceContext(image, IntensityModel.fit(image[None], raw[None], (1, 2, 3))))
    assert "image" in with_image.kind
    ranking = candidates_for_slice(raw, proposals, V, with_image)
    scores = {c.source: c.score for c in ranking if c.validity.valid}
    assert max(scores, key=scores.get) == "as cavity"
    assert scores["as cavity"] > scores["as myocardium"] + 0.005
    # the near tie (NEAR_TIE 0.025 since the local repairs) hands the win to the candidate within
    # it that agrees most with the raw mask: a repair 12 pixels from the truth, not the wrong label (26)
    assert ranking[0].source != "as myocardium"
    assert np.count_nonzero(ranking[0].labels != truth) < np.count_nonzero(wrong != truth)


def test_refining_on_the_image_relabels_a_wrong_patch_by_its_intensity():
    """A myocardium bump grown into the bright cavity (valid, so no repair of the shape touches
    it): :func:`image_refined` gives it back to the cavity, and leaves the rest as it was."""
    from clinicalai.segcorrect.candidates import IntensityModel, image_refined, keep_largest_components

    truth = _heart()
    y, x = np.mgrid[:64, :64]
    patch = (np.hypot(y - 32, x - 28) < 6) & (truth == 3)
    wrong = truth.copy()
    wrong[patch] = 2
    # fitted on a volume: two correct slices and the wrong one (the model is per volume)
    images = np.stack([_image(truth, 1), _image(truth, 2), _image(truth, 0)])
    model = IntensityModel.fit(images, np.stack([truth, truth, wrong]), (1, 2, 3))
    refined = image_refined(wrong, images[2], model)
    assert np.mean(refined[patch] == 3) > 0.8
    assert np.count_nonzero(refined != truth) < np.count_nonzero(wrong != truth) / 2
    # a refinement may leave specks (noise); its topological repairs are what compete
    assert check_slice(keep_largest_components(refined, V)).valid


def test_the_neighbour_term_prefers_the_candidate_matching_its_neighbours():
    """Two RVs in one slice (invalid): one where the neighbouring slices have it, one larger on
    the far side. Agreement with the raw mask prefers the larger; the valid neighbours' masks
    prefer the one that matches them."""
    from clinicalai.segcorrect.candidates import SliceContext

    left = _heart()
    y, x = np.mgrid[:64, :64]
    r = np.hypot(y - 32, x - 36)
    right = left.copy()
    right[right == 1] = 0
    right[(np.hypot(y - 32, x - 50) < 14) & (r >= 13)] = 1  # a larger RV on the other side
    assert check_slice(right).valid and np.sum(right == 1) > np.sum(left == 1)
    raw = left.copy()
    raw[right == 1] = 1
    assert not check_slice(raw).valid
    proposals = {"left RV": left, "right RV": right}
    plain = candidates_for_slice(raw, proposals, V, Evidence((1, 2, 3), None, raw))
    assert np.array_equal(plain[0].labels, right)
    with_neighbours = Evidence((1, 2, 3), None, raw, SliceContext(neighbours=[left, left]))
    ranking = candidates_for_slice(raw, proposals, V, with_neighbours)
    assert np.array_equal(ranking[0].labels, left) and ranking[0].margin > 0


def test_evaluation_with_evidence_and_the_image_makes_corrupted_phantoms_valid():
    """Issue #14: on corrupted phantoms (validation seeds; the evaluation passes each phantom's
    image to the correction, as `clinicalai correct --image` does) the evidence strategy
    without probabilities makes most invalid slices valid and raises Dice, where agreement
    with the raw mask alone kept the redraws for review."""
    from clinicalai.models import load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.evaluate import evaluate_correctors
    from clinicalai.segcorrect.pipeline import correct_mask

    cor = load_model("cardiac-nvae", device="cpu")
    # two phantoms (19 slices, 15 of them invalid before correction) are enough for the figures below
    rep = evaluate_correctors({"cardiac-nvae": cor}, n_cases=2, seed=1000, strategy="evidence")
    v = rep["variants"]["cardiac-nvae"]
    raw, gated = v["raw"], v["gated"]
    assert raw["validity_rate"] < 0.7
    assert gated["validity_rate"] >= raw["validity_rate"] + 0.3 and gated["validity_rate"] > 0.9
    assert gated["dice"]["mean"] > raw["dice"]["mean"] + 0.01
    assert gated["dice_change"]["improved_0.02"] > 3 * gated["dice_change"]["degraded_0.02"]
    # a correct mask is left as it is, image or not
    case = cardiac_case(1000, "ED")
    clean = correct_mask(case.labels, cor, image=case.image, strategy="evidence")
    np.testing.assert_array_equal(clean.final.array, case.labels.array)


def test_keep_largest_follows_the_card_but_not_under_the_evidence_strategy():
    from clinicalai.models import load_model
    from clinicalai.segcorrect.pipeline import keep_largest_for_run

    card = load_model("cardiac-unet", device="cpu").card
    assert keep_largest_for_run(card, None, "gate", True) is True  # the bundled card asks for it
    assert keep_largest_for_run(card, None, "evidence", False) is True  # no correction: the card decides
    assert keep_largest_for_run(card, None, "evidence", True) is False  # the candidates hold the same repair
    assert keep_largest_for_run(card, True, "evidence", True) is True  # asked for: done
    assert keep_largest_for_run(card, False, "gate", True) is False


def test_the_shape_term_finds_a_plausible_mask_more_likely_than_a_broken_one(monkeypatch):
    """The corrector NVAE's reconstruction log-likelihood (the shape term of the evidence without
    probabilities): a phantom's true slice scores higher than the same slice with its myocardium
    speckled or a hole punched in the cavity; one call scores a batch, in order."""
    from clinicalai.models import load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.pipeline import _shape_scorer

    case = cardiac_case(7, size=(96, 96), n_slices=5)
    truth = case.labels.array.astype(np.int64)
    z = int(np.argmax([(truth[i] == 2).sum() for i in range(truth.shape[0])]))
    speckled, holed = truth[z].copy(), truth[z].copy()
    myo = np.argwhere(truth[z] == 2)
    drop = myo[np.random.default_rng(0).random(len(myo)) < 0.4]
    speckled[drop[:, 0], drop[:, 1]] = 0
    cy, cx = np.argwhere(truth[z] == 3).mean(0).astype(int)
    holed[cy - 2:cy + 3, cx - 2:cx + 3] = 0
    cor = load_model("cardiac-nvae", device="cpu")
    score = _shape_scorer(truth, case.labels, cor, cor.torch_module("test"))
    s = score(np.stack([truth[z], speckled, holed]))
    assert s.shape == (3,) and np.all(s <= 0)
    assert s[0] > s[1] + 0.05 and s[0] > s[2]
    np.testing.assert_allclose(score(truth[z][None])[0], s[0], atol=1e-5)  # batching does not change a score
    # in the evidence: SHAPE_WEIGHT x the score joins the support, one batch per slice's candidates
    # (the default weight is 0 since the local repairs, docs/segcorrect.md: the term is tested at 0.2)
    import clinicalai.segcorrect.candidates as candidates
    from clinicalai.segcorrect.candidates import SliceContext

    monkeypatch.setattr(candidates, "SHAPE_WEIGHT", 0.2)
    SHAPE_WEIGHT = candidates.SHAPE_WEIGHT
    with_shape = Evidence((1, 2, 3), None, speckled, SliceContext(shape=score))
    region = np.ones(speckled.shape, bool)
    plain = Evidence((1, 2, 3), None, speckled)
    assert with_shape.support(truth[z], region) == pytest.approx(plain.support(truth[z], region) + SHAPE_WEIGHT * s[0],
                                                                 abs=1e-5)


def test_a_near_tie_goes_to_the_candidate_closest_to_the_raw_mask():
    """Without probabilities, valid candidates within NEAR_TIE of the best score are won by the
    one agreeing most with the raw slice; with probabilities the score alone decides."""
    from clinicalai.segcorrect.candidates import NEAR_TIE, IntensityModel, SliceContext

    truth = _heart()
    raw = truth.copy()
    y, x = np.mgrid[:64, :64]
    raw[(np.hypot(y - 32, x - 40) < 3) & (truth == 3)] = 0  # a background hole in the cavity
    raw[(np.hypot(y - 22, x - 30) < 2)] = 3  # and a speck of LV in the wall
    assert not check_slice(raw).valid
    image = _image(truth)
    evidence = Evidence((1, 2, 3), None, raw, SliceContext(image, IntensityModel.fit(image[None], raw[None], (1, 2, 3))))
    ranking = candidates_for_slice(raw, {"truth": truth}, V, evidence)
    valid = [c for c in ranking if c.validity.valid]
    assert len(valid) > 2 and ranking[0] is valid[0]
    best = max(c.score for c in valid)
    near = [c for c in valid if c.score >= best - NEAR_TIE]
    assert ranking[0].score >= best - NEAR_TIE and ranking[0].agreement == max(c.agreement for c in near)
    with_probs = candidates_for_slice(raw, {"truth": truth}, V, Evidence((1, 2, 3), _probabilities(truth), raw))
    assert with_probs[0].score == max(c.score for c in with_probs if c.validity.valid)


def test_the_image_term_carries_the_refinement_s_outline_prior():
    """The image term is what :func:`image_refined` maximises: the log-likelihood minus
    ``ICM_BETA`` per pair of unlike 8-neighbours. A redraw fitted pixel by pixel to a noisy
    image (no smoothness: every pixel takes its likeliest label) explains the image better than
    the true outline, by the noise it follows; with the outline prior the truth scores higher."""
    from clinicalai.segcorrect.candidates import (ICM_BETA, IMAGE_WEIGHT, IntensityModel, SliceContext, image_refined,
                                                  unlike_neighbour_pairs)

    assert unlike_neighbour_pairs(np.array([[1, 1], [1, 2]])) == 3  # right, below, diagonal of the 2
    assert unlike_neighbour_pairs(np.zeros((5, 5), int)) == 0
    truth = _heart()
    image = (np.array([350.0, 700.0, 250.0, 700.0])[truth]
             + np.random.default_rng(3).normal(0, 90, truth.shape)).astype(np.float32)  # muscle and background overlap
    model = IntensityModel.fit(image[None], truth[None], (1, 2, 3))
    fitted = image_refined(truth, image, model, beta=0.0, iterations=1)
    assert unlike_neighbour_pairs(fitted) > 1.5 * unlike_neighbour_pairs(truth)  # a ragged outline
    evidence = Evidence((1, 2, 3), None, truth, SliceContext(image, model))
    region = np.ones(truth.shape, bool)
    heart = np.count_nonzero(truth)

    def likelihood_only(labels):
        return evidence.support(labels, region) + IMAGE_WEIGHT * ICM_BETA * unlike_neighbour_pairs(labels) / heart

    assert likelihood_only(fitted) > likelihood_only(truth)
    assert evidence.support(truth, region) > evidence.support(fitted, region)
