"""``clinicalai explain``: map on the image grid, scores with --lesion, clear errors, no partial files."""

import json

import pytest
import torch

from clinicalai.attribution.constrained import CLASSES, NORMALIZATION, architecture, phantom
from clinicalai.cli import main
from clinicalai.models import save_model
from clinicalai.networks import build_network
from clinicalai.volume import read_volume, write_volume


@pytest.fixture
def model_and_case(tmp_path):
    torch.manual_seed(0)
    arch = architecture(1)
    net = build_network(arch["name"], arch["kwargs"]).eval()
    card = {"name": "toy-classifier", "task": "classification", "architecture": arch, "spatial_dims": 2,
            "input": {"channels": 1, "normalization": NORMALIZATION}, "classes": CLASSES, "cam_layer": "layer4",
            "synthetic_demo": True, "intended_use": "test"}
    model = save_model(net, card, tmp_path / "toy.pt")
    case = phantom(11, pathological=True)
    write_volume(case.image, tmp_path / "image.nii.gz")
    write_volume(case.lesion, tmp_path / "lesion.nii.gz")
    return model, tmp_path


def test_explain_writes_map_on_grid_and_prints_scores(model_and_case, capsys):
    model, d = model_and_case
    rc = main(["explain", str(d / "image.nii.gz"), "--model", str(model), "--method", "gradcam", "--target",
               "lesion", "-o", str(d / "map.nii.gz"), "--lesion", str(d / "lesion.nii.gz"),
               "--json", str(d / "r.json"), "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "gradcam map of class 'lesion'" in out
    printed = out.strip().splitlines()[-1].split()
    keys = ("dice", "auroc", "pauc_fpr10", "auprc", "pointing_game", "positive_share")
    assert printed[0::2] == list(keys)
    image = read_volume(d / "image.nii.gz")
    m = read_volume(d / "map.nii.gz")
    assert m.same_grid(image, atol=1e-4)
    record = json.loads((d / "r.json").read_text())
    assert record["method"] == "gradcam" and record["target_name"] == "lesion"
    assert 0 <= record["scores"]["auroc"] <= 1 and record["layer"] == "layer4"
    # the printed numbers are the recorded scores
    for k, v in zip(keys, printed[1::2]):
        assert v == ("n/a" if record["scores"][k] is None else f"{record['scores'][k]:.3f}")


@pytest.mark.parametrize("argv, message", [
    (["--method", "gradcam", "--layer", "layer9"], "no layer called 'layer9'"),
    (["--method", "gradient", "--target", "7"], "target 7 is out of range"),
    (["--method", "gradient", "--target", "tumour"], "unknown target class"),
    (["--method", "expected-gradients"], "reference"),
    (["--method", "lime"], "invalid choice"),
])
def test_explain_errors_are_one_line_and_write_nothing(model_and_case, capsys, argv, message):
    model, d = model_and_case
    out = d / "bad_map.nii.gz"
    rc = main(["explain", str(d / "image.nii.gz"), "--model", str(model), "-o", str(out), "--device", "cpu", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".bad_map")]


def test_explain_lesion_on_another_grid_is_refused(model_and_case, capsys):
    model, d = model_and_case
    lesion = read_volume(d / "lesion.nii.gz")
    write_volume(lesion.with_array(lesion.array, spacing=(1.0, 1.0, 1.0)), d / "other.nii.gz")
    rc = main(["explain", str(d / "image.nii.gz"), "--model", str(model), "--method", "gradient", "-o",
               str(d / "m.nii.gz"), "--lesion", str(d / "other.nii.gz"), "--device", "cpu"])
    assert rc == 1 and "grid" in capsys.readouterr().err
    assert not (d / "m.nii.gz").exists()


@pytest.mark.parametrize("argv, message", [
    (["--family", "mix", "--mni", "1"], "at least 2 MNI-template phantoms"),
    (["--family", "template"], "invalid choice"),
    (["--augmentation", "extreme"], "invalid choice"),
    (["--ig-baseline", "noise"], "unknown baseline 'noise'"),
    (["--grid-mm", "0"], "positive number of mm"),
    (["--widths", "8", "16", "0", "32"], "4 positive block widths"),
    (["--cam-layer", "fc"], "the Grad-CAM layer must be one of layer1, layer2, layer3, layer4"),
    (["--family", "mix", "--mni", "2", "--t1-share", "1.5"], "share of T1-like template cases"),
    (["--healthy-twins"], "they need --family mix"),
])
def test_train_classifier_family_errors_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "mix.pt"
    rc = main(["train", "classifier", "--phantoms", "2", "--epochs", "1", "--validate", "0", "-o", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_train_classifier_on_the_mixed_family_records_data_and_licence(tmp_path, capsys):
    pytest.importorskip("nilearn")
    from clinicalai.phantoms.mni import MNI_LICENSE

    before = torch.get_num_threads()
    out = tmp_path / "mix.pt"
    try:
        rc = main(["train", "classifier", "--constraint", "none", "--phantoms", "2", "--family", "mix", "--mni", "2",
                   "--healthy-twins", "--epochs", "1", "--augmentation", "mild", "--threads", "1", "--validate", "0",
                   "--ig-baseline", "blur", "-o", str(out)])
    finally:
        torch.set_num_threads(before)
    assert rc == 0 and out.exists()
    card = json.loads(out.with_suffix(".json").read_text())
    training = card["training"]
    # the card's integrated-gradients default (the bundled classifier's make-models command sets it)
    assert card["attribution"] == {"baseline": "blur", "blur_sigma_mm": 8.0}
    assert training["family"] == "mix" and training["template_licence"] == MNI_LICENSE
    assert "2 MNI-template phantoms" in training["data"] and training["augmentation"]["rotate_deg"] == 15.0
    assert training["healthy_twins"] is True and "healthy twin" in training["data"]
    assert training["command"].endswith("--family mix --mni 2 --healthy-twins --augmentation mild --ig-baseline blur "
                                        "-o mix.pt")


def test_train_classifier_grid_widths_and_cam_layer_reach_the_card(tmp_path):
    before = torch.get_num_threads()
    out = tmp_path / "coarse.pt"
    try:
        rc = main(["train", "classifier", "--constraint", "none", "--phantoms", "4", "--epochs", "1", "--threads", "1",
                   "--validate", "0", "--grid-mm", "8", "--widths", "4", "4", "8", "8", "--cam-layer", "layer3",
                   "-o", str(out)])
    finally:
        torch.set_num_threads(before)
    assert rc == 0 and out.exists()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["input"]["spacing_mm"] == [8.0, 8.0] and card["cam_layer"] == "layer3"
    assert card["architecture"]["kwargs"]["block_inplanes"] == [4, 4, 8, 8]
    assert "[24, 16, 16] of 8 x 8 x 4 mm" in card["training"]["data"]
    assert card["training"]["command"].endswith("--grid-mm 8 --widths 4 4 8 8 --cam-layer layer3 -o coarse.pt")
