"""predict_pet: fold ensemble, Grad-CAM on the input grid, attention check, clear errors; the CLI."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from clinicalai.cli import main
from clinicalai.errors import InputError, ModelError
from clinicalai.models import load_model, save_model
from clinicalai.pet.workflow import predict_pet
from clinicalai.phantoms.pet import pet_case
from clinicalai.volume import Volume, write_volume


@pytest.fixture(scope="module")
def fold_models(trained):
    result, _ = trained
    return [load_model(p, device="cpu") for p in result.model_paths]


def test_predict_with_cam_on_an_oblique_grid(fold_models):
    d = Rotation.from_euler("xyz", [0, 10, -15], degrees=True).as_matrix()
    case = pet_case(61, recurrence=True, scanner="A", direction=d, spacing=(2.2, 2.0, 2.6), shape=(56, 100, 90))
    r = predict_pet(case.image, fold_models, brain_mask=case.brain_mask, cam=True)
    assert 0.0 <= r.probability <= 1.0
    assert r.probability == pytest.approx(np.mean(r.fold_probabilities))
    assert r.spread == pytest.approx(max(r.fold_probabilities) - min(r.fold_probabilities))
    assert r.label in ("recurrence", "treatment-related change")
    assert r.cam.same_grid(case.image, atol=1e-9) and r.cam.array.max() <= 1.0 + 1e-6
    inside = r.cam.array[case.brain_mask.array > 0].sum() / r.cam.array.sum()
    assert r.cam_inside_brain_fraction == pytest.approx(inside, rel=1e-5)
    assert r.static.tbr_max > 1.6 and r.static.lesion_voi.startswith("threshold")
    assert any("not for clinical use" in w for w in r.warnings)
    d_ = r.to_dict()
    json.dumps(d_)
    assert set(d_["timings_s"]) >= {"preprocess", "inference", "gradcam", "static", "total"}


def test_ensemble_separates_recurrence_from_trc(fold_models):
    fast_grid = {"spacing": (4.0, 4.0, 4.0), "shape": (36, 54, 48)}
    cases = {lab: [pet_case(700 + i, recurrence=bool(lab), **fast_grid) for i in range(3)] for lab in (0, 1)}
    probs = {lab: [predict_pet(c.image, fold_models, brain_mask=c.brain_mask).probability for c in cs]
             for lab, cs in cases.items()}
    assert np.mean(probs[1]) > np.mean(probs[0])


def test_wrong_task_model_is_refused(tmp_path, fold_models):
    net = fold_models[0].module
    card = fold_models[0].card.to_dict()
    card.update(task="segmentation", labels=[{"name": "lesion", "value": 1}], name="seg")
    save_model(net, card, tmp_path / "seg.pt")
    with pytest.raises(ModelError, match="segmentation"):
        predict_pet(pet_case(62).image, [load_model(tmp_path / "seg.pt", device="cpu")])


def test_cli_writes_json_and_cam(tmp_path, trained, capsys):
    result, _ = trained
    case = pet_case(63, recurrence=True, scanner="B")
    write_volume(case.suv, tmp_path / "pet_suv.nii.gz")
    args = ["pet", str(tmp_path / "pet_suv.nii.gz"), "--units", "suv", "--cam", str(tmp_path / "cam.nii.gz"),
            "--json", str(tmp_path / "r.json")]
    for p in result.model_paths:
        args += ["--model", str(p)]
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= report["probability_recurrence"] <= 1 and len(report["fold_probabilities"]) == 2
    assert isinstance(report["uncertain"], bool) and report["temperature"] == 1.0
    from clinicalai.volume import read_volume

    assert read_volume(tmp_path / "cam.nii.gz").same_grid(case.suv, atol=1e-4)
    assert "P(recurrence)" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["no-units", "2d"])
def test_cli_clear_errors_and_no_partial_output(tmp_path, trained, capsys, problem):
    result, _ = trained
    arr = pet_case(64).suv.array
    units = ["--units", "suv"]
    if problem == "no-units":
        units = []
    else:
        arr = arr[30:31]
    write_volume(Volume(arr, spacing=(2, 2, 2)), tmp_path / "pet.nii.gz")
    code = main(["pet", str(tmp_path / "pet.nii.gz"), *units, "--model", str(result.model_paths[0]),
                 "--json", str(tmp_path / "r.json"), "--cam", str(tmp_path / "cam.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("clinicalai: error:")
    assert {"no-units": "--units", "2d": "2D"}[problem] in err[0]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "cam.nii.gz").exists()


def test_nan_image_is_refused(fold_models):
    # (ITK's NIfTI reader turns NaN into 0, so this is checked on a volume in memory)
    pet = pet_case(65).image
    arr = pet.array.copy()
    arr[20, 50, 50] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_pet(pet.with_array(arr), fold_models)


FAST_GRID = {"spacing": (4.0, 4.0, 4.0), "shape": (36, 54, 48)}


def test_cam_is_the_mean_of_the_fold_maps_at_the_card_layer(fold_models, tmp_path):
    from clinicalai.pet.preprocess import preprocess_from_card
    from clinicalai.pet.workflow import gradcam_tensor

    case = pet_case(68, recurrence=True, **FAST_GRID)
    r = predict_pet(case.image, fold_models, brain_mask=case.brain_mask, cam=True)
    pp = preprocess_from_card(case.image, fold_models[0].card, brain_mask=case.brain_mask)
    x = torch.from_numpy(pp.input[None])
    maps = [gradcam_tensor(m.module, x, m.card.cam_layer) for m in fold_models]
    assert maps[0].shape == pp.input.shape[1:] and not np.allclose(maps[0], maps[1])  # two different folds
    expected = np.clip(pp.to_input_grid(np.mean(maps, axis=0)).array, 0, None)
    np.testing.assert_allclose(r.cam.array, expected, atol=1e-5)
    # the card's cam_layer is the layer used: an earlier block gives another map, a missing one an error
    other = []
    for i, m in enumerate(fold_models):
        card = m.card.to_dict()
        card.update(cam_layer="features.4", name=f"pet-test-early-fold{i}")
        other.append(load_model(save_model(m.module, card, tmp_path / f"early{i}.pt"), device="cpu"))
    early = predict_pet(case.image, other, brain_mask=case.brain_mask, cam=True)
    assert early.probability == pytest.approx(r.probability)
    assert not np.allclose(early.cam.array, r.cam.array, atol=1e-3)
    card = fold_models[0].card.to_dict()
    card.update(cam_layer="features.99", name="pet-test-badlayer")
    bad = load_model(save_model(fold_models[0].module, card, tmp_path / "bad.pt"), device="cpu")
    with pytest.raises(ModelError, match="features.99"):
        predict_pet(case.image, [bad], brain_mask=case.brain_mask, cam=True)


def test_attention_check_warns_when_the_map_lies_outside_the_mask(fold_models):
    from scipy import ndimage

    from clinicalai.pet.workflow import CAM_INSIDE_BRAIN_WARNING

    case = pet_case(69, recurrence=True, **FAST_GRID)
    everywhere = case.brain_mask.with_array(np.ones_like(case.brain_mask.array))
    r = predict_pet(case.image, fold_models, brain_mask=everywhere, cam=True)
    assert r.cam_inside_brain_fraction == pytest.approx(1.0)
    assert not any("Grad-CAM energy" in w for w in r.warnings)
    # a "brain" of 3x3x3 voxels at the brain's centre holds a small share of a smooth map
    k, j, i = np.round(ndimage.center_of_mass(case.brain_mask.array)).astype(int)
    tiny = np.zeros_like(case.brain_mask.array)
    tiny[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = 1
    r = predict_pet(case.image, fold_models, brain_mask=case.brain_mask.with_array(tiny), cam=True)
    assert r.cam_inside_brain_fraction < CAM_INSIDE_BRAIN_WARNING
    assert any("Grad-CAM energy lies inside the brain" in w for w in r.warnings)
    assert r.to_dict()["cam_inside_brain_fraction"] == pytest.approx(r.cam_inside_brain_fraction, abs=1e-4)


def test_cli_trains_and_evaluates_from_a_csv(tmp_path, pet_cases, capsys):
    """CSV (NIfTI in Bq/mL with weight, dose and times; one row in SUV) -> `train pet` ->
    `evaluate pet`: the evaluation's ensemble probabilities are the training run's test predictions."""
    import csv

    from clinicalai.pet.train_demo import DEMO_ARCH_KWARGS

    rows = []
    for i, c in enumerate(pet_cases[:8]):
        img = c.suv if i == 0 else c.image
        write_volume(img, tmp_path / f"c{i}.nii.gz")
        write_volume(c.brain_mask, tmp_path / f"c{i}_brain.nii.gz")
        rows.append({"path": f"c{i}.nii.gz", "label": ["trc", "recurrence"][c.label], "scanner": c.scanner,
                     "brain_mask": f"c{i}_brain.nii.gz", "split": "test" if i >= 6 else "train",
                     "units": "suv" if i == 0 else "bqml", "weight_kg": "" if i == 0 else c.info["weight_kg"],
                     "dose_bq": "" if i == 0 else c.info["dose_bq"], "injection_time": c.info["injection"],
                     "scan_time": c.info["scan_start"]})
    with open(tmp_path / "cases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "run"
    assert main(["train", "pet", "--csv", str(tmp_path / "cases.csv"), "--arch", "cnn3d", "--arch-kwargs",
                 json.dumps(DEMO_ARCH_KWARGS), "--folds", "2", "--epochs", "2", "--batch-size", "3", "--lr", "1e-3",
                 "--spacing", "12", "12", "12", "--size", "22", "22", "14", "--no-augment", "--device", "cpu",
                 "--synthetic-demo", "--out", str(out)]) == 0
    assert "out-of-fold AUC" in capsys.readouterr().out
    with open(out / "test_predictions.csv") as f:
        test_pred = {r["id"]: float(r["probability"]) for r in csv.DictReader(f)}
    assert sorted(test_pred) == ["c6", "c7"]
    with open(out / "loss_curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert [r["id"] for r in curves] == [f"c{i}" for i in range(6)] and all(r["epoch2"] for r in curves)
    models = sorted(str(p) for p in out.glob("*-fold*.pt"))
    assert len(models) == 2
    ev = tmp_path / "ev"
    assert main(["evaluate", "pet", "--csv", str(tmp_path / "cases.csv"), *sum((["--model", m] for m in models), []),
                 "--bootstrap", "50", "--out", str(ev)]) == 0
    with open(ev / "predictions.csv") as f:
        ev_pred = {r["id"]: float(r["probability"]) for r in csv.DictReader(f)}
    assert ev_pred.keys() == test_pred.keys()
    for k in ev_pred:
        assert ev_pred[k] == pytest.approx(test_pred[k], abs=1e-4)
    summary = json.loads((ev / "metrics.json").read_text())
    assert summary["metrics"]["n"]["value"] == 2 and "ci95" in summary["metrics"]["auc"]
    cal = summary["calibration"]
    assert cal["n"] == 2 and sum(r["n"] for r in cal["reliability"]) == 2 and 0 <= cal["brier"] <= 1


def test_csv_errors_name_the_line(tmp_path):
    from clinicalai.pet.train import read_pet_csv

    write_volume(Volume(np.ones((4, 5, 6), np.float32)), tmp_path / "a.nii.gz")
    (tmp_path / "c.csv").write_text("path,label,units,weight_kg,dose_bq\na.nii.gz,1,bqml,70,\n")
    with pytest.raises(InputError, match="line 2.*dose_bq, injection_time, scan_time"):
        read_pet_csv(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("path,label,units\na.nii.gz,1,counts\n")
    with pytest.raises(InputError, match="line 2: units 'counts'"):
        read_pet_csv(tmp_path / "c.csv")
