"""predict_pet: fold ensemble, Grad-CAM on the input grid, attention check, clear errors; the CLI."""

import json

import numpy as np
import pytest
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
