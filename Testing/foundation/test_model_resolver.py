"""One model resolver (paths and names, bundled and user models), ``models import``, trust in
TorchScript (code) and the loading hardening of issue 15 item 7.

Every test points ``$CLINICALAI_MODELS`` at a temporary folder, so nothing is read from or
written to the real user's model folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

from clinicalai.cli import main
from clinicalai.errors import ModelError
from clinicalai.models import (
    BUNDLED_MODELS_DIR,
    UntrustedModelError,
    import_model,
    load_model,
    resolve_model,
    save_model,
    sha256_of,
    trust_info,
    trust_model,
)
from clinicalai.models.registry import IMPORT_RECORD, TRUST_FILE, trust_code_scope
from clinicalai.volume import read_volume, write_volume

UNKNOWN = "no bundled or user model of that name"
UNET = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0}
SEG_CARD = {"name": "tiny", "task": "segmentation", "spatial_dims": 2, "input": {"channels": 1},
            "architecture": {"name": "monai.networks.nets.UNet", "kwargs": UNET},
            "labels": [{"name": "A", "value": 1}, {"name": "B", "value": 2}]}

pytestmark = pytest.mark.skipif(not (BUNDLED_MODELS_DIR / "cardiac-unet.json").is_file(),
                                reason="the bundled demo models are not trained ('make models')")


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv("CLINICALAI_MODELS", str(folder))
    return folder


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def state_dict_package(folder: Path, name: str = "tiny", seed: int = 0) -> Tuple[torch.nn.Module, Path]:
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    module = UNet(**UNET).eval()
    return module, save_model(module, dict(SEG_CARD, name=name), folder / f"{name}.pt")


class _Marker(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` (run by torch.jit.load) and ``forward``
    write into ``marker`` through ``torch.from_file(shared=True)``: the attack of issue 15."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.hits = torch.zeros(1)

    def forward(self, x):
        t = torch.from_file(self.marker, True, 8, dtype=torch.uint8)
        t.fill_(43)
        return x.repeat(1, 3, 1, 1) + t.sum().float() * 0

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool, torch.Tensor]:
        return (self.marker, self.training, self.hits)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool, torch.Tensor]) -> None:
        self.marker = state[0]
        self.training = state[1]
        t = torch.from_file(self.marker, True, 8, dtype=torch.uint8)
        t.fill_(42)
        self.hits = t.float()


def code_package(folder: Path, marker: Path, name: str = "scripted") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    torch.jit.save(torch.jit.script(_Marker(str(marker))), str(path))
    path.with_suffix(".json").write_text(json.dumps(dict(SEG_CARD, name=name, format="torchscript")))
    return path


def code_bundle(folder: Path, marker: Path) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    meta = {"name": "ts-bundle", "network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [16, 16]}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                             "channel_def": {"0": "bg", "1": "A", "2": "B"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.jit.save(torch.jit.script(_Marker(str(marker))), str(folder / "models" / "model.ts"))
    return folder


# ---------------------------------------------------------------------------------- names
def test_names_and_paths_resolve_and_unknown_names_list_the_known_ones(user_dir, tmp_path):
    assert resolve_model("cardiac-unet") == BUNDLED_MODELS_DIR / "cardiac-unet.json"
    assert load_model("cardiac-unet", device="cpu").card.name == "cardiac-unet"
    _, path = state_dict_package(tmp_path)
    assert resolve_model(str(path)) == path
    for spec in ("no-such-model", "missing.pt", str(tmp_path / "nowhere" / "x.pt")):
        with pytest.raises(ModelError) as info:
            load_model(spec, device="cpu")
        msg = str(info.value)
        assert UNKNOWN in msg and "cardiac-unet" in msg and "pet-cnn3d-fold0" in msg and "\n" not in msg
        assert str(user_dir) in msg and "clinicalai models import" in msg
    # the Slicer / browser helpers go through the same resolver and error
    from clinicalai.mrml.model_choices import chosen_model_path, model_card

    assert chosen_model_path("", "cardiac-nvae") == BUNDLED_MODELS_DIR / "cardiac-nvae.json"
    assert model_card("cardiac-nvae").task == "mask-correction"
    with pytest.raises(ModelError, match=UNKNOWN):
        chosen_model_path("no-such-model", "cardiac-unet")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Tiny phantoms for every command that takes a model."""
    from clinicalai.attribution.constrained import phantom
    from clinicalai.phantoms.brain import brain_case
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.phantoms.pet import pet_case

    d = tmp_path_factory.mktemp("resolver-inputs")
    cardiac = cardiac_case(3, "ED", n_slices=4, size=(128, 128))
    write_volume(cardiac.image, d / "cardiac.nii.gz")
    write_volume(cardiac.labels, d / "cardiac-mask.nii.gz")
    write_volume(pet_case(66, spacing=(4.0, 4.0, 4.0), shape=(36, 54, 48)).image, d / "pet.nii.gz")
    write_volume(phantom(11, pathological=True).image, d / "lesion2d.nii.gz")
    write_volume(brain_case(3, pathological=True).image, d / "brain.nii.gz")
    return d


COMMANDS = {
    "segment": ["segment", "{d}/cardiac.nii.gz", "-o", "{o}/mask.nii.gz", "--model", "cardiac-unet",
                "--corrector", "cardiac-nvae", "--device", "cpu"],
    "correct": ["correct", "{d}/cardiac-mask.nii.gz", "-o", "{o}/mask.nii.gz", "--corrector", "cardiac-nvae",
                "--device", "cpu"],
    "pet": ["pet", "{d}/pet.nii.gz", "--units", "suv", "--model", "pet-cnn3d-fold0", "--model", "pet-cnn3d-fold1",
            "--device", "cpu"],
    "explain": ["explain", "{d}/lesion2d.nii.gz", "--model", "brain-lesion-classifier", "--method", "gradient",
                "-o", "{o}/map.nii.gz", "--device", "cpu"],
    "anomaly": ["anomaly", "{d}/brain.nii.gz", "--model", "brain-ae-anomaly", "-o", "{o}/map.nii.gz",
                "--device", "cpu"],
    "export": ["export", "cardiac-unet", "--to", "onnx", "-o", "{o}/unet.onnx"],
    "models info": ["models", "info", "cardiac-unet"],
    "evaluate attribution": ["evaluate", "attribution", "--model", "brain-lesion-classifier", "--n-val", "2",
                             "--n-test", "2", "--method", "gradient"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_a_bundled_name_and_refuses_an_unknown_one(command, inputs, tmp_path, capsys):
    argv = [a.format(d=inputs, o=tmp_path) for a in COMMANDS[command]]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    known = next(a for a in argv if a in ("cardiac-unet", "cardiac-nvae", "pet-cnn3d-fold0", "brain-lesion-classifier",
                                          "brain-ae-anomaly"))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([("no-such-model" if a == known else a) for a in argv]) == 1
    line = one_error(capsys)
    assert UNKNOWN in line and "no-such-model" in line and "cardiac-unet" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_translate_takes_an_imported_models_name(tmp_path, capsys):
    from clinicalai.generative.sulci import sulcal_translation_pair

    model = tmp_path / "vnet.pt"
    assert main(["train", "translation", "--phantoms", "2", "--iterations", "1", "--size", "16", "--validate", "0",
                 "-o", str(model)]) == 0
    assert main(["models", "import", str(model), "--name", "my-vnet"]) == 0
    skeleton, _ = sulcal_translation_pair(1, size=16)
    write_volume(skeleton, tmp_path / "skeleton.nii.gz")
    assert main(["translate", str(tmp_path / "skeleton.nii.gz"), "--model", "my-vnet", "--device", "cpu",
                 "-o", str(tmp_path / "tissues.nii.gz")]) == 0
    assert read_volume(tmp_path / "tissues.nii.gz").shape == skeleton.shape
    capsys.readouterr()
    assert main(["translate", str(tmp_path / "skeleton.nii.gz"), "--model", "your-vnet", "-o",
                 str(tmp_path / "t2.nii.gz")]) == 1
    assert UNKNOWN in one_error(capsys) and not (tmp_path / "t2.nii.gz").exists()


# ---------------------------------------------------------------------------------- import
def test_import_a_state_dict_model_lists_loads_and_checks_sha256(user_dir, tmp_path, capsys):
    module, path = state_dict_package(tmp_path / "src")
    assert main(["models", "import", str(path), "--name", "my-unet"]) == 0
    assert "imported my-unet" in capsys.readouterr().out
    card = json.loads((user_dir / "my-unet" / "my-unet.json").read_text())
    assert card["weights"] == "my-unet.pt" and card["sha256"] == sha256_of(path)
    assert card["imported_from"]["source"] == str(path.resolve())
    # by name everywhere: models list (source column), the choosers, load_model
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["my-unet"]["source"] == "user" and rows["cardiac-unet"]["source"] == "bundled"
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "SOURCE" in table and any(ln.startswith("my-unet") and " user " in ln for ln in table.splitlines())
    from clinicalai.mrml.model_choices import bundled_models
    from clinicalai.web.panels.common import model_choices

    entry = next(m for m in bundled_models("segmentation") if m["name"] == "my-unet")
    assert entry["source"] == "user" and entry["path"] == str(user_dir / "my-unet" / "my-unet.json")
    assert any(c["title"] == "my-unet (user)" and c["value"] == entry["path"] for c in model_choices("segmentation"))
    x = np.random.default_rng(0).normal(size=(2, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_model("my-unet", device="cpu").predict(x), expected, atol=1e-5)
    # a name clash is refused unless --force; a bundled name always
    assert main(["models", "import", str(path), "--name", "my-unet"]) == 1
    assert "--force" in one_error(capsys)
    assert main(["models", "import", str(path), "--name", "cardiac-unet", "--force"]) == 1
    assert "bundled model" in one_error(capsys)
    _, other = state_dict_package(tmp_path / "src2", seed=1)
    assert main(["models", "import", str(other), "--name", "my-unet", "--force"]) == 0
    assert "replaced my-unet" in capsys.readouterr().out
    assert load_model("my-unet", device="cpu").card.sha256 == sha256_of(other)
    # the imported copy is checked on every load, even when the caller skips the card check
    with open(user_dir / "my-unet" / "my-unet.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelError, match="changed after it was imported"):
        load_model("my-unet", device="cpu", verify_sha256=False)
    assert sorted(p.name for p in user_dir.iterdir()) == ["my-unet"]  # no temporary folders left


def test_import_refuses_a_card_whose_sha256_does_not_match_and_writes_nothing(user_dir, tmp_path, capsys):
    _, path = state_dict_package(tmp_path)
    with open(path, "ab") as f:
        f.write(b"tampered")
    assert main(["models", "import", str(path)]) == 1
    assert "does not match its card" in one_error(capsys)
    assert not user_dir.exists() or not any(user_dir.iterdir())
    assert main(["models", "import", str(tmp_path / "none.pt")]) == 1
    assert "no such model" in one_error(capsys)
    _, good = state_dict_package(tmp_path / "g")
    assert main(["models", "import", str(good), "--name", "../escape"]) == 1
    assert "cannot be a model name" in one_error(capsys)
    assert not (tmp_path / "escape").exists()


def test_import_a_bundle_records_its_sha256_in_a_sidecar(user_dir, tmp_path):
    from monai.networks.nets import UNet

    src = tmp_path / "my_bundle"
    (src / "configs").mkdir(parents=True)
    (src / "models").mkdir()
    meta = {"name": "bundle", "network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [16, 16]}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                             "channel_def": {"0": "bg", "1": "A", "2": "B"}}}}}
    (src / "configs" / "metadata.json").write_text(json.dumps(meta))
    (src / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "UNet", **UNET}}))
    torch.save(UNet(**UNET).state_dict(), src / "models" / "model.pt")
    result = import_model(src)
    assert result.name == "my_bundle" and result.path == user_dir / "my_bundle"
    record = json.loads((user_dir / "my_bundle" / IMPORT_RECORD).read_text())
    assert record["sha256"] == sha256_of(src / "models" / "model.pt") and record["weights"] == "models/model.pt"
    assert load_model("my_bundle", device="cpu").card.task == "segmentation"
    torch.save(UNet(**UNET).state_dict(), user_dir / "my_bundle" / "models" / "model.pt")  # other weights
    with pytest.raises(ModelError, match="changed after it was imported"):
        load_model("my_bundle", device="cpu")


# ---------------------------------------------------------------------------------- TorchScript is code
def test_untrusted_torchscript_is_refused_before_any_of_its_code_runs(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    marker.write_bytes(b"\0" * 8)
    path = code_package(tmp_path / "m", marker)
    with pytest.raises(UntrustedModelError) as info:
        load_model(path, device="cpu")
    msg = str(info.value)
    assert "TorchScript, which is code" in msg and "--trust" in msg and "--trust-code" in msg and "\n" not in msg
    assert info.value.sha256 == sha256_of(path)
    # a bundle with models/model.ts, by path, through the CLI
    bundle = code_bundle(tmp_path / "b", marker)
    with pytest.raises(UntrustedModelError):
        load_model(bundle, device="cpu")
    # models info reads the card and hashes: it never runs the file
    assert main(["models", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NOT trusted" in out and "sha256 check" in out
    assert main(["models", "info", str(bundle)]) == 0
    assert marker.read_bytes() == b"\0" * 8  # nothing of either file ran
    # the GUI's question: what is it, is it code, is it trusted
    info = trust_info(path)
    assert info["code"] is True and info["trusted"] is False and info["sha256"] == sha256_of(path)
    # and when it does run (trusted for this call), the marker shows that it would have
    load_model(path, device="cpu", trust_code=True)
    assert marker.read_bytes() == b"*" * 8


def test_trust_by_import_by_flag_and_a_changed_file_is_untrusted_again(user_dir, tmp_path, capsys):
    # --trust-code: one run of one command; a trusted TorchScript model converts to ONNX
    module, sd = state_dict_package(tmp_path / "sd")
    scripted = tmp_path / "sd" / "unet-ts.pt"
    torch.jit.save(torch.jit.script(module), str(scripted))
    scripted.with_suffix(".json").write_text(json.dumps(dict(SEG_CARD, name="unet-ts", format="torchscript")))
    assert main(["export", str(scripted), "--to", "onnx", "-o", str(tmp_path / "x.onnx")]) == 1
    assert "--trust-code" in one_error(capsys) and not (tmp_path / "x.onnx").exists()
    assert main(["export", str(scripted), "--to", "onnx", "-o", str(tmp_path / "x.onnx"), "--trust-code",
                 "--input-size", "16", "16"]) == 0
    assert load_model(tmp_path / "x.onnx", device="cpu").backend == "onnx"
    with pytest.raises(UntrustedModelError):  # the flag did not outlive its run
        load_model(scripted, device="cpu")
    marker = tmp_path / "MARKER"
    path = code_package(tmp_path / "m", marker)
    # import without --trust: listed, refused on load; with --trust: shown, recorded, loads by name
    assert main(["models", "import", str(path), "--name", "scripted"]) == 0
    assert "will not load until you trust it" in capsys.readouterr().out
    with pytest.raises(UntrustedModelError):
        load_model("scripted", device="cpu")
    assert not marker.exists()
    assert main(["models", "import", str(path), "--name", "scripted", "--force", "--trust"]) == 0
    out = capsys.readouterr().out
    digest = sha256_of(path)
    assert f"sha256 {digest}" in out and str(path) in out and "trusting code: name scripted" in out
    trusted = json.loads((user_dir / TRUST_FILE).read_text())["trusted"]
    assert trusted[digest]["name"] == "scripted"
    assert load_model("scripted", device="cpu").backend == "torch"
    assert load_model(path, device="cpu").backend == "torch"  # trust follows the bytes, not the place
    # a changed file has another sha256: untrusted again
    code_package(tmp_path / "m2", tmp_path / "OTHER")
    changed = tmp_path / "m2" / "scripted.pt"
    assert sha256_of(changed) != digest
    with pytest.raises(UntrustedModelError):
        load_model(changed, device="cpu")
    # the Slicer dialog's path: ask once, remember by sha256
    assert trust_model(changed)["sha256"] == sha256_of(changed)
    assert load_model(changed, device="cpu").backend == "torch"
    with trust_code_scope(False):
        assert load_model(changed, device="cpu") is not None
    with pytest.raises(ModelError, match="holds no code"):
        trust_model("cardiac-unet")


# ---------------------------------------------------------------------------------- hardening
@pytest.mark.parametrize("kwargs, message", [
    ({"pretrained": True}, "download or read weights"),
    ({"pretrained_path": "/etc/passwd"}, "download or read weights"),
    ({"norm": "/home/user/weights.pt"}, "looks like a file path"),
    ({"channels": [4, 100000]}, "far larger than any network"),
    ({"channels": [4096, 4096, 4096], "strides": [2, 2], "spatial_dims": 3}, "parameters"),
])
def test_card_kwargs_that_fetch_files_or_are_absurd_are_refused(tmp_path, kwargs, message):
    from monai.networks.nets import UNet

    path = tmp_path / "m.pt"
    torch.save(UNet(**UNET).state_dict(), path)
    arch = {"name": "monai.networks.nets.UNet", "kwargs": dict(UNET, **kwargs)}
    path.with_suffix(".json").write_text(json.dumps(dict(SEG_CARD, format="state_dict", architecture=arch)))
    with pytest.raises(ModelError, match=message):
        load_model(path, device="cpu")


def test_deeply_nested_card_gives_a_clear_error(tmp_path, capsys):
    _, path = state_dict_package(tmp_path)
    path.with_suffix(".json").write_text('{"name": "x", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ModelError, match="nested too deeply"):
        load_model(path, device="cpu")
    assert main(["models", "info", str(path)]) == 1
    assert "nested too deeply" in one_error(capsys)


def test_weights_symlinked_out_of_the_model_folder_are_refused(tmp_path):
    _, path = state_dict_package(tmp_path / "elsewhere")
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(path, folder / "tiny.pt")
    (folder / "tiny.json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(folder / "tiny.pt", device="cpu")
    (folder / "local.pt").write_bytes(path.read_bytes())
    os.symlink(folder / "local.pt", folder / "linked.pt")
    (folder / "linked.json").write_text(path.with_suffix(".json").read_text().replace('"tiny.pt"', '"linked.pt"'))
    assert load_model(folder / "linked.pt", device="cpu").backend == "torch"
