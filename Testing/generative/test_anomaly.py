"""The anomaly workflow: maps on the input grid, lesion scores, clear errors, CLI."""

import json

import numpy as np
import pytest

from clinicalai.cli import main
from clinicalai.errors import Cancelled, InputError, ModelError
from clinicalai.generative import AnomalyResult, anomaly, list_anomaly_models
from clinicalai.models import load_model, save_model
from clinicalai.phantoms.brain import brain_case
from clinicalai.progress import CancelToken
from clinicalai.volume import Volume, read_volume, write_volume


def _oblique(angle_deg: float = 20.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    return rz @ rx


def test_map_on_oblique_anisotropic_input_grid(ae_package):
    # anisotropic (3 mm slices) and oblique, same anatomy size in mm as the training phantoms
    case = brain_case(7, shape=(32, 64, 64), spacing=(2.0, 2.0, 3.0), pathological=True, direction=_oblique(),
                      lesion_radius_mm=(10.0, 14.0))
    model = load_model(ae_package, device="cpu")
    calls = []
    result = anomaly(case.image, model, progress=lambda f, m: calls.append(f), lesion=case.lesion,
                     mask=case.brain_mask)
    assert isinstance(result, AnomalyResult)
    for vol in (result.map, result.reconstruction):
        assert vol.same_grid(case.image), vol
    assert result.map.array.dtype == np.float32 and np.all(np.isfinite(result.map.array))
    assert result.score > 0 and result.kind == "ae" and calls[-1] == 1.0
    # the map is brighter in the lesion than in the rest of the brain
    les = case.lesion.array > 0
    brain = (case.brain_mask.array > 0) & ~les
    assert result.map.array[les].mean() > 1.5 * result.map.array[brain].mean()
    assert result.lesion_scores["auroc"] > 0.8
    d = json.loads(json.dumps(result.to_dict()))
    assert d["kind"] == "ae" and d["map"]["shape"] == list(case.image.shape) and "total_s" in d["timings"]


def test_volume_score_higher_with_lesion(ae_package):
    model = load_model(ae_package, device="cpu")
    healthy = [anomaly(brain_case(100 + i, pathological=False).image, model).score for i in range(3)]
    lesioned = [anomaly(brain_case(200 + i, pathological=True, lesion_radius_mm=(10.0, 14.0)).image, model).score
                for i in range(3)]
    assert min(lesioned) > max(healthy)


def test_bad_inputs_give_clear_errors(ae_package):
    model = load_model(ae_package, device="cpu")
    img = brain_case(1).image
    with pytest.raises(InputError, match="2D"):
        anomaly(Volume(np.random.rand(1, 32, 32).astype(np.float32)), model)
    bad = img.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        anomaly(img.with_array(bad), model)
    with pytest.raises(InputError, match="constant"):
        anomaly(img.with_array(np.zeros_like(img.array)), model)
    with pytest.raises(InputError, match="lesion mask"):
        anomaly(img, model, lesion=Volume(np.zeros((4, 4, 4), np.uint8)))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        anomaly(img, model, cancel=token)


def test_card_errors(tmp_path, ae_package):
    card = json.loads(ae_package.with_suffix(".json").read_text())
    module = load_model(ae_package, device="cpu").module
    for change, message in (({"generative_kind": "cyclegan"}, "CycleGAN network"),
                            ({"generative_kind": "gan"}, "generative_kind"),
                            ({"task": "classification", "classes": ["a", "b"]}, "anomaly-detection model")):
        path = tmp_path / f"m{len(message)}.pt"
        save_model(module, {**card, **change}, path)
        with pytest.raises(ModelError, match=message):
            anomaly(brain_case(1).image, path)


def test_list_anomaly_models(ae_package):
    items = list_anomaly_models(ae_package.parent)
    assert [i["name"] for i in items] == ["tiny-ae"]
    assert items[0]["kind"] == "ae" and items[0]["path"].endswith("tiny-ae.pt")
    for item in list_anomaly_models():  # the bundled ones, whatever is installed
        assert item["kind"] in ("wgan-gp", "ae", "vae", "f-anogan", "cyclegan")


def test_cli_anomaly(tmp_path, ae_package, capsys):
    case = brain_case(3, pathological=True, lesion_radius_mm=(10.0, 14.0))
    write_volume(case.image, tmp_path / "img.nii.gz")
    write_volume(case.lesion, tmp_path / "lesion.nii.gz")
    rc = main(["anomaly", str(tmp_path / "img.nii.gz"), "--model", str(ae_package), "-o", str(tmp_path / "map.nii.gz"),
               "--lesion", str(tmp_path / "lesion.nii.gz"), "--json", str(tmp_path / "r.json"), "--device", "cpu"])
    assert rc == 0
    m = read_volume(tmp_path / "map.nii.gz")
    assert m.same_grid(case.image, atol=1e-4)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["lesion_scores"]["auroc"] > 0.8
    assert "lesion Dice" in capsys.readouterr().out


def test_cli_errors_write_nothing(tmp_path, ae_package, capsys):
    out = tmp_path / "map.nii.gz"
    rc = main(["anomaly", str(tmp_path / "missing.nii.gz"), "--model", str(ae_package), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "error" in err
    assert not out.exists()
    write_volume(Volume(np.zeros((8, 8, 8), np.float32)), tmp_path / "flat.nii.gz")
    rc = main(["anomaly", str(tmp_path / "flat.nii.gz"), "--model", str(ae_package), "-o", str(out)])
    assert rc == 1 and "constant" in capsys.readouterr().err and not out.exists()
    rc = main(["train", "generative", "ae", "--phantoms", "1", "-o", str(tmp_path / "x.pt")])
    assert rc == 1 and "at least 2" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    rc = main(["train", "generative", "cyclegan", "--phantoms", "4", "--input", "sulci", "-o", str(tmp_path / "x.pt")])
    assert rc == 1 and "pathological" in capsys.readouterr().err
    rc = main(["train", "generative", "ae", "--phantoms", "4", "--size", "30", "-o", str(tmp_path / "x.pt")])
    assert rc == 1 and "multiple of the product of the strides" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_cli_train_and_evaluate(tmp_path, capsys):
    model = tmp_path / "vae.pt"
    rc = main(["train", "generative", "vae", "--phantoms", "4", "--epochs", "2", "--batch-size", "4",
               "--channels", "4,8", "--latent-size", "8", "--validate", "4", "-o", str(model)])
    assert rc == 0, capsys.readouterr().err
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["task"] == "anomaly-detection" and card["generative_kind"] == "vae" and card["synthetic_demo"]
    assert "volume_auroc" in card["validation"] and card["training"]["epochs_run"] == 2
    out = tmp_path / "eval"
    rc = main(["evaluate", "generative", "--model", str(model), "--phantoms", "6", "--sizes", "100",
               "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert {r["anomaly"] for r in report["synthetic_anomalies"]} == {"hot", "cold"}
    assert (out / "latent" / "codes_pca_tsne.png").is_file()
    assert "AUROC" in capsys.readouterr().out


def test_sulcal_label_model_workflow(tmp_path):
    from clinicalai.generative.package import sulcal_set, sulcal_spec
    from clinicalai.generative.sulci import remove_structure, sulcal_case
    from clinicalai.generative.train import TrainConfig, train_generative

    spec = sulcal_spec(16)
    res = train_generative(TrainConfig(kind="f-anogan", epochs=2, batch_size=4, latent_size=8, channels=(4, 8),
                                       strides=(2, 2), n_critic=1), spec, sulcal_set(4, spec, seed=1))
    path = tmp_path / "sulci.pt"
    save_model(res.module, {"name": "sulci", "task": "anomaly-detection", "format": "state_dict",
                            "architecture": {"name": res.architecture, "kwargs": res.kwargs},
                            "input": spec.card_input(), "generative_kind": "f-anogan", **spec.card_extra()}, path)
    model = load_model(path, device="cpu")
    skeleton = sulcal_case(5, size=20)  # a larger crop than the model grid: cropped, then put back
    damaged, removed = remove_structure(skeleton.array, 30, np.random.default_rng(0))
    assert removed.sum() == 30 and (damaged == 60).sum() == (skeleton.array == 60).sum() - 30
    result = anomaly(skeleton.with_array(damaged), model, lesion=skeleton.with_array(removed.astype(np.uint8)))
    assert result.map.same_grid(skeleton) and result.reconstruction.same_grid(skeleton)
    assert set(np.unique(result.reconstruction.array)) <= {0, 11, 60}
    assert "feature_residual" in result.details and result.lesion_scores["lesion_voxels"] == 30
    with pytest.raises(InputError, match="label volume"):
        anomaly(brain_case(1).image, model)
    with pytest.raises(InputError, match="has no sign"):
        anomaly(skeleton.with_array(damaged), model, polarity="darker")
