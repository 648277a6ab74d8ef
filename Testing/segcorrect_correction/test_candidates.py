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
    """The bundled segmenter on two held-out phantoms: most raw slices are invalid; with the
    evidence strategy every slice becomes valid and the mean Dice rises (the gate barely moves)."""
    from clinicalai.models import load_model
    from clinicalai.segcorrect.evaluate_segmenter import evaluate_segmenter

    seg, cor = load_model("cardiac-unet", device="cpu"), load_model("cardiac-nvae", device="cpu")
    # the network's own masks: the card's largest-component step (on in the bundled card) removes
    # RV pieces no candidate brings back, and on these two phantoms the evidence strategy then ends
    # below the post-processed raw mask (docs/segmentation.md); it is measured without the step
    report = evaluate_segmenter(seg, cor, family="heldout", n_cases=2, seed=0, strategy="evidence", keep_largest=False)
    assert report["keep_largest_component"] is False
    assert report["raw"]["validity_rate"] < 0.5
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
    """A basal slice (MYO disc, no LV) with a small hole: the only valid candidate turns the hole
    into an LV cavity, a new structure (Dice with raw ~0.67). Nothing but the raw mask speaks for
    it, so the raw slice is kept and the candidate offered; with probabilities that support it,
    it is applied."""
    from clinicalai.segcorrect.candidates import REVIEW_AGREEMENT, needs_review
    from clinicalai.segcorrect.pipeline import CORRECTED, KEPT_RAW, GateSettings, judge_slice
    from clinicalai.models import load_model

    raw = _heart()
    raw[raw == 3] = 2  # no cavity: a basal slice
    raw[31:33, 35:37] = 0  # a hole in the myocardium
    assert not check_slice(raw).valid
    settings = GateSettings.of(load_model("cardiac-nvae", device="cpu"), True, None, 0.96, "evidence")
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
