"""``clinicalai models list | info | architectures`` and ``clinicalai export``."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from monai.networks.nets import UNet, resnet10

from clinicalai.cli import main
from clinicalai.models import load_model, save_model, sha256_of
from clinicalai.networks import architectures, build_network, count_parameters

UNET = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}
RESNET = {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 2, "widen_factor": 0.25}  # 0.9 M parameters


def unet_package(tmp_path, name="unet"):
    torch.manual_seed(0)
    module = UNet(**UNET).eval()
    card = {"name": name, "task": "segmentation", "spatial_dims": 2, "input": {"size": [48, 48]},
            "architecture": {"name": "monai.networks.nets.UNet", "kwargs": UNET},
            "labels": [{"name": "RV", "value": 1}, {"name": "LV", "value": 2}], "synthetic_demo": True}
    return module, save_model(module, card, tmp_path / f"{name}.pt")


def resnet_package(tmp_path):
    torch.manual_seed(0)
    module = resnet10(**RESNET).eval()
    card = {"name": "resnet", "task": "classification", "input": {"size": [24, 24, 24]},
            "architecture": {"name": "monai.networks.nets.resnet10", "kwargs": RESNET}, "classes": ["no", "yes"]}
    return module, save_model(module, card, tmp_path / "resnet.pt")


def one_stderr_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("package, shape", [(unet_package, (3, 1, 48, 48)), (resnet_package, (3, 1, 24, 24, 24))])
def test_export_onnx_and_torchscript_agree_with_torch(tmp_path, capsys, package, shape):
    module, path = package(tmp_path)
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()

    assert main(["export", str(path), "--to", "onnx", "-o", str(tmp_path / "out.onnx")]) == 0
    card = json.loads((tmp_path / "out.json").read_text())
    assert card["format"] == "onnx" and card["weights"] == "out.onnx"
    assert card["sha256"] == sha256_of(tmp_path / "out.onnx")
    assert card["exported_from"]["sha256"] == sha256_of(path)
    # onnxruntime directly, batch of 3 (the export ran with 2): the batch axis is dynamic
    session = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.max(np.abs(got - expected)) < 1e-4
    assert np.max(np.abs(load_model(tmp_path / "out.onnx", device="cpu").predict(x) - expected)) < 1e-4

    assert main(["export", str(path), "--to", "torchscript", "-o", str(tmp_path / "ts.pt")]) == 0
    ts = load_model(tmp_path / "ts.pt", device="cpu", trust_code=True)  # TorchScript is code: trusted explicitly
    assert ts.card.format == "torchscript" and ts.card.sha256 == sha256_of(tmp_path / "ts.pt")
    assert np.max(np.abs(ts.predict(x) - expected)) < 1e-5
    assert "max abs difference" in capsys.readouterr().out


def test_export_errors_leave_nothing(tmp_path, capsys):
    _, path = unet_package(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", str(path), "--to", "onnx", "-o", str(tmp_path / "wrong.pt")]) == 1
    assert "written as .onnx" in one_stderr_line(capsys)
    assert main(["export", str(path), "--to", "torchscript", "-o", str(tmp_path / "x.pt"), "--input-size", "8"]) == 1
    assert "--input-size needs 2 values" in one_stderr_line(capsys)
    assert main(["export", str(tmp_path / "nope.pt"), "--to", "onnx", "-o", str(tmp_path / "n.onnx")]) == 1
    assert "no such model" in one_stderr_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_models_list(tmp_path, capsys):
    unet_package(tmp_path, "cardiac-demo")
    (tmp_path / "broken.json").write_text(json.dumps({"name": "broken", "task": "guess"}))
    assert main(["models", "list", "--dir", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cardiac-demo"]["task"] == "segmentation" and rows["cardiac-demo"]["format"] == "state_dict"
    assert rows["cardiac-demo"]["synthetic"] is True
    assert "task must be one of" in rows["broken"]["problem"]
    assert main(["models", "list", "--dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "cardiac-demo" in table and "yes (synthetic demo)" in table and "invalid card" in table
    assert main(["models", "list"]) == 0  # the bundled folder (may still be empty)


def test_models_info_and_sha_check(tmp_path, capsys):
    _, path = unet_package(tmp_path)
    assert main(["models", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"name": "unet"' in out and "sha256 check: ok" in out
    with open(path, "ab") as f:
        f.write(b"x")
    assert main(["models", "info", str(path.with_suffix(".json"))]) == 1
    assert "does not match its card" in one_stderr_line(capsys)
    assert main(["models", "info", "no-such-bundled-model"]) == 1
    assert "no bundled or user model of that name" in one_stderr_line(capsys)


def test_models_architectures(capsys):
    assert main(["models", "architectures", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    for name, arch in architectures().items():  # every allow-listed ClinicalAI network is listed
        row = by_name[name][0]
        assert row["reference_parameters"] == arch.reference_parameters
        if row["parameters"] is not None:
            assert row["parameters"] == count_parameters(build_network(name, arch.reference_kwargs or {}))
    resnet_row = by_name["monai.networks.nets.resnet10"][0]
    assert resnet_row["parameters"] == count_parameters(resnet10(**resnet_row["kwargs"]))
    assert {"monai.networks.nets.UNet", "monai.networks.nets.DenseNet121"} <= set(by_name)
