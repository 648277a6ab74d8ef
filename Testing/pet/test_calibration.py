"""Calibration of the PET ensemble: reliability table, Brier, ECE against hand computations, the
temperature fit on synthetic logits, and the "uncertain" state from real bundled-ensemble runs."""

import json
import shutil

import numpy as np
import pytest

from clinicalai.pet.calibration import (UNCERTAIN_MARGIN, UNCERTAIN_SPREAD, apply_temperature, brier_score,
                                        calibration_report, expected_calibration_error, fit_temperature, logit,
                                        reliability_table, uncertainty)

LABELS = [0, 0, 1, 1, 1, 0]
PROBS = [0.1, 0.3, 0.35, 0.8, 1.0, 0.9]


def test_brier_by_hand():
    # (0.1^2 + 0.3^2 + 0.65^2 + 0.2^2 + 0^2 + 0.9^2) / 6
    assert brier_score(LABELS, PROBS) == pytest.approx((0.01 + 0.09 + 0.4225 + 0.04 + 0.0 + 0.81) / 6)


def test_reliability_table_and_ece_by_hand():
    table = reliability_table(LABELS, PROBS, n_bins=2)
    # bin [0, 0.5): 0.1, 0.3, 0.35 with labels 0, 0, 1; bin [0.5, 1]: 0.8, 1.0, 0.9 with labels 1, 1, 0
    assert [r["n"] for r in table] == [3, 3]
    assert table[0]["mean_probability"] == pytest.approx(0.25)
    assert table[0]["fraction_positive"] == pytest.approx(1 / 3, abs=1e-4)
    assert table[1]["mean_probability"] == pytest.approx(0.9)
    assert table[1]["fraction_positive"] == pytest.approx(2 / 3, abs=1e-4)
    # ECE = (3 |1/3 - 0.25| + 3 |2/3 - 0.9|) / 6
    assert expected_calibration_error(LABELS, PROBS, n_bins=2) == pytest.approx((abs(1 / 3 - 0.25) + abs(2 / 3 - 0.9)) / 2)
    empty = reliability_table([0, 1], [0.0, 1.0], n_bins=4)
    assert [r["n"] for r in empty] == [1, 0, 0, 1] and empty[1]["mean_probability"] is None
    rep = calibration_report(LABELS, PROBS, n_bins=2)
    assert rep["n"] == 6 and rep["reliability"] == table
    with pytest.raises(ValueError):
        brier_score([0, 2], [0.1, 0.2])


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_t = 2.5
    z = rng.normal(0.0, 4.0, 20000)
    # labels drawn from sigmoid(z / T): the logits z are over-confident by T
    y = (rng.random(z.size) < apply_temperature(z, true_t)).astype(int)
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.05)
    p = np.array([0.2, 0.5, 0.9])
    assert np.allclose(apply_temperature(logit(p), 1.0), p)
    # temperature keeps the ranking
    assert np.all(np.diff(apply_temperature(logit(p), 3.0)) > 0)


def test_uncertainty_thresholds():
    assert not uncertainty(0.9, [0.85, 0.9, 0.95]).uncertain
    near = uncertainty(0.5 + UNCERTAIN_MARGIN / 2, [0.55, 0.55])
    assert near.uncertain and "threshold" in near.reasons[0]
    split = uncertainty(0.8, [0.8 - UNCERTAIN_SPREAD, 0.8, 0.81 + 0.0])
    assert split.uncertain and "disagree" in split.reasons[0]


def _tiny_case():
    from clinicalai.phantoms.pet import pet_case

    return pet_case(5100, recurrence=True, spacing=(4.0, 4.0, 4.0), shape=(36, 54, 48))


def test_uncertain_state_from_a_real_ensemble_run(tmp_path):
    from clinicalai.pet.workflow import bundled_pet_models, load_pet_models, predict_pet

    case = _tiny_case()
    res = predict_pet(case.image, load_pet_models(device="cpu"), brain_mask=case.brain_mask)
    expected = uncertainty(res.probability, res.fold_probabilities)
    assert res.uncertain == expected.uncertain and res.uncertain_reasons == expected.reasons
    assert res.temperature == 1.0
    d = res.to_dict()
    assert d["uncertain"] == res.uncertain and d["uncertain_reasons"] == res.uncertain_reasons

    # the same folds with a huge card temperature: every probability near 0.5, so uncertain
    paths = []
    for pt in bundled_pet_models():
        shutil.copy(pt, tmp_path / pt.name)
        card = json.loads(pt.with_suffix(".json").read_text())
        card["calibration"] = {"temperature": 1000.0}
        (tmp_path / pt.with_suffix(".json").name).write_text(json.dumps(card))
        paths.append(tmp_path / pt.name)
    hot = predict_pet(case.image, load_pet_models(paths, device="cpu"), brain_mask=case.brain_mask)
    assert hot.temperature == 1000.0
    assert abs(hot.probability - 0.5) < 0.01 and hot.uncertain
    assert any("threshold" in r for r in hot.uncertain_reasons)
    # temperature keeps the side of 0.5 of every fold
    assert [p > 0.5 for p in hot.fold_probabilities] == [p > 0.5 for p in res.fold_probabilities]


def test_paired_brier_difference():
    from clinicalai.pet.calibration import brier_difference

    better = [0.0, 0.1, 0.9, 1.0, 1.0, 0.2]
    d = brier_difference(LABELS, PROBS, better, n_boot=500)
    assert d["value"] == pytest.approx(round(brier_score(LABELS, better) - brier_score(LABELS, PROBS), 4), abs=1e-4)
    assert d["ci95"][0] <= d["value"] <= d["ci95"][1]
