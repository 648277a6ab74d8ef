"""Training: learning on phantoms, fold models with valid cards, losses, metrics, folds."""

import json
import math

import numpy as np
import pytest
import torch

from clinicalai.models import load_model
from clinicalai.pet.train import (SymmetricCrossEntropy, binary_metrics, bootstrap_metrics, flag_mislabelled,
                                  stratified_folds)


def test_short_training_learns_the_phantoms(trained):
    result, out = trained
    # out-of-fold AUC of 2 fold models after 10 epochs on 36 phantoms (0.81 measured): chance is 0.5
    assert result.metrics["auc"]["value"] >= 0.7, result.metrics
    lo, hi = result.metrics["auc"]["ci95"]
    assert lo <= result.metrics["auc"]["value"] <= hi
    assert len(result.oof_probability) == 36 and np.all(np.isfinite(result.oof_probability))
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["folds"]) == 2 and summary["input"]["size"] == [22, 22, 14]
    assert (out / "oof_predictions.csv").read_text().count("\n") == 37
    assert (out / "loss_curves.csv").is_file()


def test_fold_models_load_with_cards(trained):
    result, _ = trained
    assert [p.name for p in result.model_paths] == ["pet-test-fold0.pt", "pet-test-fold1.pt"]
    m = load_model(result.model_paths[0], device="cpu")
    assert m.card.task == "classification" and m.card.synthetic_demo
    assert m.card.classes == ["treatment-related change", "recurrence"]
    assert m.card.input.size == (22, 22, 14) and m.card.input.spacing_mm == (12.0, 12.0, 12.0)
    assert m.card.cam_layer == "features.6"
    assert m.card.validation["fold"]["validation_auc"] is not None
    assert m.predict(np.zeros((1, 1, 22, 22, 14), np.float32)).shape == (1, 1)


def test_symmetric_cross_entropy_by_hand():
    sce = SymmetricCrossEntropy(alpha=0.1, beta=1.0)
    z = torch.tensor([0.0, 2.0, -1.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0])))
    ce = -np.where([1, 0, 1], np.log(p), np.log(1 - p))
    rce = 4.0 * np.abs(np.array([1, 0, 1]) - p)  # -A * |y - p| with A = -4
    np.testing.assert_allclose(sce(z, y).numpy(), 0.1 * ce + 1.0 * rce, rtol=1e-5)


def test_metrics_and_bootstrap():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.2, 0.8, 0.7, 0.4, 0.9, 0.95])
    m = binary_metrics(y, p)
    assert m["sensitivity"] == pytest.approx(4 / 5) and m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["auc"] == pytest.approx(14 / 15)  # 14 of 15 (pos, neg) pairs ordered
    b = bootstrap_metrics(y, p, n_boot=200)
    assert b["auc"]["ci95"][0] <= b["auc"]["value"] <= b["auc"]["ci95"][1] <= 1.0


def test_folds_balance_label_and_scanner():
    labels = np.array([0, 1] * 20)
    scanners = np.array(["A"] * 20 + ["B"] * 20)
    folds = stratified_folds(labels, scanners, 4)
    assert len(folds) == 4
    for tr, va in folds:
        assert len(set(tr) & set(va)) == 0
        assert abs(labels[va].mean() - 0.5) < 0.11
        assert abs((scanners[va] == "A").mean() - 0.5) < 0.11
    assert sorted(np.concatenate([va for _, va in folds]).tolist()) == list(range(40))


def test_flags_a_case_whose_loss_stays_high():
    rng = np.random.default_rng(0)
    curves = np.exp(-np.linspace(0, 3, 20))[None] * rng.uniform(0.8, 1.2, (12, 20))
    curves[5] = 1.5 + rng.normal(0, 0.05, 20)  # never learnt: a likely wrong label
    flagged = flag_mislabelled([f"c{i}" for i in range(12)], curves, np.zeros(12, int))
    assert [f["id"] for f in flagged] == ["c5"]
    assert flagged[0]["late_training_loss"] > math.log(2)
