"""MONAI bundle folders: card derived from metadata.json, no bundle code ever runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet, resnet10

from clinicalai.errors import ModelError
from clinicalai.models import load_model
from clinicalai.models.bundle import card_from_bundle
from clinicalai.models.package import load_bundle

UNET = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


def metadata(task="segmentation", channel_def=None, shape=(32, 32), out_channels=3):
    return {
        "name": "Synthetic heart bundle", "version": "0.2.1", "monai_version": "1.6.1",
        "task": "Cardiac MRI segmentation" if task == "segmentation" else "Brain lesion classification",
        "description": "test bundle", "authors": "ClinicalAI tests",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": 1,
                                 "spatial_shape": list(shape), "dtype": "float32", "value_range": [0, 1]}},
            "outputs": {"pred": {"type": "image" if task == "segmentation" else "probabilities",
                                 "format": "segmentation" if task == "segmentation" else "classification",
                                 "num_channels": out_channels, "spatial_shape": list(shape) if task == "segmentation" else [],
                                 "channel_def": channel_def or {"0": "background", "1": "RV", "2": "LV"}}},
        },
    }


def inference(network_def, **extra):
    return {
        "imports": ["$import os"],
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5]},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -50, "a_max": 250, "b_min": 0, "b_max": 1},
        ]},
        **extra,
    }


def make_bundle(root: Path, meta: dict, network_def=None, module=None, torchscript=False) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    if network_def is not None:
        (root / "configs" / "inference.json").write_text(json.dumps(inference(network_def)))
    if module is not None:
        if torchscript:
            torch.jit.save(torch.jit.script(module), str(root / "models" / "model.ts"))
        else:
            torch.save(module.state_dict(), root / "models" / "model.pt")
    return root


def unet(seed=0):
    torch.manual_seed(seed)
    return UNet(**UNET).eval()


def test_state_dict_bundle_is_rebuilt_and_its_card_derived(tmp_path):
    module = unet()
    folder = make_bundle(tmp_path / "heart", metadata(), {"_target_": "UNet", **UNET}, module)
    loaded = load_bundle(folder, device="cpu")
    card = loaded.card
    assert card.task == "segmentation" and card.format == "state_dict" and card.spatial_dims == 2
    assert card.name == "Synthetic heart bundle" and card.version == "0.2.1"
    assert card.architecture.name == "monai.networks.nets.UNet"
    assert [(lab.value, lab.name) for lab in card.labels] == [(1, "RV"), (2, "LV")]
    assert card.input.channels == 1 and list(card.input.size) == [32, 32]
    assert list(card.input.spacing_mm) == [1.5, 1.5]
    assert card.input.normalization.kind == "range" and card.input.normalization.a_max == 250
    assert card.extra_get("bundle")["input_modality"] == "MR"
    assert card.input.layout.kind == "monai" and card.input.layout.axcodes is None  # no Orientationd
    # a bundle's network saw MONAI's (x, y) arrays; predict takes and gives the engine's (y, x)
    x = np.random.default_rng(0).normal(size=(2, 1, 32, 24)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x.transpose(0, 1, 3, 2).copy())).numpy().transpose(0, 1, 3, 2)
    np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-6)
    # load_model dispatches folders to the bundle loader
    assert load_model(folder, device="cpu").card.name == card.name


def test_torchscript_bundle_and_classification_card(tmp_path):
    torch.manual_seed(0)
    net = resnet10(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    meta = metadata("classification", {"0": "healthy", "1": "lesion"}, shape=(16, 16, 16), out_channels=2)
    folder = make_bundle(tmp_path / "cls", meta, module=net, torchscript=True)
    from clinicalai.models.registry import UntrustedModelError

    with pytest.raises(UntrustedModelError, match="TorchScript, which is code"):
        load_bundle(folder, device="cpu")
    loaded = load_bundle(folder, device="cpu", trust_code=True)  # this test's own file, trusted explicitly
    assert loaded.card.task == "classification" and loaded.card.format == "torchscript"
    assert loaded.card.classes == ["healthy", "lesion"] and loaded.card.spatial_dims == 3
    x = np.random.default_rng(1).normal(size=(2, 1, 16, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 1, 4, 3, 2).copy())).numpy()  # MONAI's (x, y, z)
    np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    "network_def, match",
    [
        ({"_target_": "os.system", "command": "touch MARKER"}, "not allowed"),
        ({"_target_": "$__import__('os').system('touch MARKER')"}, "expression"),
        ({"_target_": "monai.networks.nets._private"}, "not a valid MONAI"),
        ({"_target_": "UNet", **dict(UNET, act="$__import__('os').system('touch MARKER')")}, "does not evaluate"),
        ({"_target_": "UNet", **dict(UNET, norm={"_target_": "os.system", "command": "touch MARKER"})}, "only the network"),
        ("$@something", "needs 'network_def'"),
    ],
)
def test_bundle_code_is_never_run(tmp_path, monkeypatch, network_def, match):
    monkeypatch.chdir(tmp_path)
    folder = make_bundle(tmp_path / "evil", metadata(), network_def, unet())
    with pytest.raises(ModelError, match=match):
        load_bundle(folder, device="cpu")
    assert not (tmp_path / "MARKER").exists()


def test_bundle_problems_are_clear(tmp_path):
    with pytest.raises(ModelError, match="not a MONAI bundle"):
        load_model(tmp_path, device="cpu")
    folder = make_bundle(tmp_path / "b", metadata(), {"_target_": "UNet", **UNET})
    with pytest.raises(ModelError, match="has no weights"):
        load_bundle(folder)
    (folder / "configs" / "metadata.json").write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        card_from_bundle(folder, "torchscript")
    (folder / "configs" / "metadata.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="network_data_format"):
        card_from_bundle(folder, "torchscript")
    folder2 = make_bundle(tmp_path / "c", metadata(), None, unet())
    with pytest.raises(ModelError, match="no configs/inference.json"):
        load_bundle(folder2, device="cpu")
    folder3 = make_bundle(tmp_path / "d", metadata(), {"_target_": "UNet", **dict(UNET, channels=[8, 16, 32])}, unet())
    with pytest.raises(ModelError, match="do not fit"):
        load_bundle(folder3, device="cpu")


def test_symbolic_shapes_and_full_target_paths(tmp_path):
    meta = metadata()
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = ["16*n", "16*n"]
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = 1
    folder = make_bundle(tmp_path / "b", meta, {"_target_": "monai.networks.nets.unet.UNet", **UNET}, unet())
    card = load_bundle(folder, device="cpu").card
    assert card.input.size is None and card.spatial_dims == 2  # from network_def.spatial_dims
    assert card.architecture.name == "monai.networks.nets.UNet"


def test_monai_layout_2d_bundle_answers_the_same_whatever_the_file_order(tmp_path):
    """With Orientationd(RAS) in the bundle, the network sees the same slices whether the file
    stores the anatomy axially or sagittally: the labels agree voxel for voxel in RAS."""
    from clinicalai.segcorrect.segmenter import segment_volume
    from clinicalai.volume import Volume, reorient_to_axcodes

    config = inference({"_target_": "UNet", **UNET})
    config["preprocessing"]["transforms"].insert(1, {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"})
    folder = make_bundle(tmp_path / "b2d", metadata(), None, unet())
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    model = load_model(folder, device="cpu")
    assert model.card.input.layout.axcodes == "RAS" and list(model.card.input.spacing_mm) == [1.5, 1.5]
    rng = np.random.default_rng(3)
    axial = Volume(rng.normal(100, 30, size=(6, 40, 44)).astype(np.float32), spacing=(1.4, 1.4, 5.0),
                   origin=(3.0, -2.0, 10.0))
    sagittal = reorient_to_axcodes(axial, "ASL")[0]
    assert sagittal.shape != axial.shape
    a = segment_volume(axial, model, two_pass=False)
    s = segment_volume(sagittal, model, two_pass=False)
    assert a.labels.same_grid(axial) and s.labels.same_grid(sagittal)
    ras_a = reorient_to_axcodes(a.labels, "RAS")[0]
    ras_s = reorient_to_axcodes(s.labels, "RAS")[0]
    assert ras_a.same_grid(ras_s, atol=1e-6)
    np.testing.assert_array_equal(ras_a.array, ras_s.array)
    assert len(np.unique(ras_a.array)) > 1  # an untrained net still paints something to compare
    # two passes on the bundle's own grid: the crop search is reported on the input grid's output
    two = segment_volume(axial, model)
    assert two.labels.same_grid(axial) and len(two.heart_search) >= 1
    assert sum(t["chosen"] for t in two.heart_search) == 1
