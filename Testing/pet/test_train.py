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


def test_metrics_agree_with_scikit_learn():
    from sklearn import metrics as M

    rng = np.random.default_rng(3)
    for n in (5, 17, 60):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        p = np.round(rng.uniform(0, 1, n), 1)  # rounded: many tied scores
        m = binary_metrics(y, p)
        pred = (p >= 0.5).astype(int)
        assert m["auc"] == pytest.approx(M.roc_auc_score(y, p), abs=1e-12)
        assert m["average_precision"] == pytest.approx(M.average_precision_score(y, p), abs=1e-12)
        assert m["balanced_accuracy"] == pytest.approx(M.balanced_accuracy_score(y, pred), abs=1e-12)
        assert m["accuracy"] == pytest.approx(M.accuracy_score(y, pred), abs=1e-12)
        assert m["sensitivity"] == pytest.approx(M.recall_score(y, pred), abs=1e-12)
        assert m["specificity"] == pytest.approx(M.recall_score(y, pred, pos_label=0), abs=1e-12)
    one_class = binary_metrics(np.ones(4, int), np.array([0.2, 0.6, 0.7, 0.9]))
    assert math.isnan(one_class["auc"]) and one_class["sensitivity"] == 0.75


def test_defaults_are_the_study_s_in_python_and_on_the_command_line():
    from clinicalai.cli import build_parser
    from clinicalai.pet.train import TrainConfig

    cfg = TrainConfig()
    study = {"folds": 10, "epochs": 150, "batch_size": 10, "lr": 1e-4, "weight_decay": 1e-3, "loss": "bce",
             "patience": 15, "factor": 0.5, "augment": True}
    assert {k: getattr(cfg, k) for k in study} == study
    assert cfg.spacing_mm == (2.0, 2.0, 2.0) and cfg.size_xyz == (128, 128, 82)
    args = build_parser().parse_args(["train", "pet", "--csv", "x.csv", "--out", "o"])
    assert (args.folds, args.epochs, args.batch_size, args.lr, args.weight_decay, args.loss, args.patience,
            args.factor, args.no_augment, args.arch) == (10, 150, 10, 1e-4, 1e-3, "bce", 15, 0.5, False, "cnn3d")


def test_training_with_augmentation_is_reproducible(pet_cases, tmp_path):
    """Same data, same seed, augmentation on: the same weights (MONAI transforms keep their own
    random generator, which train_folds seeds; the bundled demo models are retrained this way)."""
    from clinicalai.pet.preprocess import preprocess_pet
    from clinicalai.pet.train import PetRow, TrainConfig, train_folds
    from clinicalai.pet.train_demo import DEMO_ARCH_KWARGS

    cases = pet_cases[:8]
    spacing, size = (12.0, 12.0, 12.0), (22, 22, 14)
    x = np.stack([preprocess_pet(c.image, brain_mask=c.brain_mask, spacing_mm=spacing, size_xyz=size).input for c in cases])
    rows = [PetRow(id=f"c{i}", path=None, label=c.label, scanner=c.scanner) for i, c in enumerate(cases)]
    cfg = TrainConfig(arch="cnn3d", arch_kwargs=dict(DEMO_ARCH_KWARGS), folds=2, epochs=2, batch_size=2, lr=1e-3,
                      weight_decay=0.0, augment=True, spacing_mm=spacing, size_xyz=size, seed=3, device="cpu",
                      name="rep")
    weights = []
    for run in ("a", "b"):
        res = train_folds("in-memory", tmp_path / run, cfg, inputs=x, rows=rows)
        weights.append([load_model(p, device="cpu").module.state_dict() for p in res.model_paths])
    for wa, wb in zip(*weights):
        for k in wa:
            assert torch.equal(wa[k], wb[k]), k
    assert load_model(res.model_paths[0], device="cpu").card.cam_layer == "features.2"
