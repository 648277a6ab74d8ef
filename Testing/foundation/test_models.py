"""Model packages: card validation, checksums, the allow-list, untrusted pickles, the three
backends, device choice, batching and the CUDA out-of-memory fallback."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from clinicalai.errors import DeviceError, ModelError
from clinicalai.models import LoadedModel, load_model, parse_card, read_card, resolve_device, save_model, sha256_of
from clinicalai.models.package import oom_next_step
from clinicalai.networks import _REGISTRY, build_network, register_architecture, resolve_architecture

UNET_KWARGS = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2],
               "num_res_units": 1}
SEG_CARD = {
    "name": "tiny-unet", "version": "1.0.0", "task": "segmentation", "spatial_dims": 2,
    "architecture": {"name": "monai.networks.nets.UNet", "kwargs": UNET_KWARGS},
    "input": {"channels": 1, "size": [32, 32]},
    "labels": [{"name": "LV", "value": 1, "color": [1, 0, 0]}, {"name": "MYO", "value": 2}],
}


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(**UNET_KWARGS).eval()


def x2d(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 32, 32)).astype(np.float32)


def torch_out(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture
def saved_unet(tmp_path):
    module = tiny_unet()
    path = save_model(module, SEG_CARD, tmp_path / "tiny.pt")
    return module, path


# ---------------------------------------------------------------------------------- cards
def test_card_lists_every_problem_in_words():
    bad = {"task": "segmentaton", "format": "pickle", "spatial_dims": 3, "sha256": "1234",
           "input": {"channels": 0, "spacing_mm": [1.0, -2.0, 1.0], "size": [64, 64]}, "labels": [{"name": "a", "value": 0}]}
    with pytest.raises(ModelError) as info:
        parse_card(bad, "bad.json")
    msg = str(info.value)
    assert "\n" not in msg
    for words in ("name is missing", "task must be one of", "format must be one of", "sha256", "64 hexadecimal",
                  "input.channels", "spacing value must be positive", "labels.0.value"):
        assert words in msg, words
    assert "bad.json" in msg


def test_card_cross_field_problems_are_all_listed():
    card = {"name": "x", "task": "classification", "format": "state_dict", "spatial_dims": 2,
            "input": {"size": [1, 2, 3]}}
    with pytest.raises(ModelError) as info:
        parse_card(card)
    msg = str(info.value)
    assert "(3 problems)" in msg
    assert "needs 'architecture'" in msg and "needs 'classes'" in msg and "input.size needs 2 values" in msg


def test_card_keeps_extra_keys_and_round_trips():
    card = parse_card(dict(SEG_CARD, format="state_dict", study={"dice": 0.9}))
    assert card.extra_get("study") == {"dice": 0.9}
    assert parse_card(card.to_dict()).to_dict() == card.to_dict()
    assert card.label_names() == {1: "LV", 2: "MYO"}


def test_card_file_problems(tmp_path):
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_card(tmp_path / "m.json")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match="has no model card"):
        load_model(tmp_path / "w.pt")


def test_store_heldout_adds_one_entry_and_refuses_broken_cards(tmp_path):
    from clinicalai.models.card import store_heldout

    path = tmp_path / "m.json"
    path.write_text(json.dumps(dict(SEG_CARD, format="state_dict", study={"dice": 0.9})))
    store_heldout(path, {"mean_dice": 0.8, "command": "clinicalai evaluate ..."})
    data = json.loads(path.read_text())
    assert data["heldout"] == {"mean_dice": 0.8, "command": "clinicalai evaluate ..."} and data["study"] == {"dice": 0.9}
    store_heldout(path, {"mean_dice": 0.7})  # a rerun replaces the entry
    assert read_card(path).extra_get("heldout") == {"mean_dice": 0.7}
    path.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        store_heldout(path, {"mean_dice": 0.8})
    assert path.read_text() == "{not json" and [p.name for p in tmp_path.iterdir()] == ["m.json"]
    with pytest.raises(ModelError, match="no model card found"):
        store_heldout(tmp_path / "none.json", {})
    assert not (tmp_path / "none.json").exists()


# ---------------------------------------------------------------------------------- state dicts
def test_state_dict_round_trip_and_sha256(saved_unet):
    module, path = saved_unet
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_of(path) and card["format"] == "state_dict" and card["weights"] == "tiny.pt"
    loaded = load_model(path, device="cpu")
    assert loaded.backend == "torch" and loaded.device == "cpu"
    np.testing.assert_allclose(loaded.predict(x2d()), torch_out(module, x2d()), atol=1e-6)
    # the card path works too
    assert load_model(path.with_suffix(".json"), device="cpu").card.name == "tiny-unet"


def test_sha256_mismatch_is_refused(saved_unet):
    _, path = saved_unet
    with open(path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ModelError, match="does not match its card: sha256"):
        load_model(path, device="cpu")


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    card = dict(SEG_CARD, architecture={"name": "monai.networks.nets.UNet", "kwargs": dict(UNET_KWARGS, channels=[8, 16, 32])})
    path = save_model(tiny_unet(), SEG_CARD, tmp_path / "m.pt")
    data = json.loads(path.with_suffix(".json").read_text())
    data["architecture"] = card["architecture"]
    path.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not fit monai.networks.nets.UNet"):
        load_model(path, device="cpu")


class FoundationTinyNet(torch.nn.Module):
    """A two-layer 2D classifier (test-only registration)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def registered_tiny_net():
    register_architecture(reference_parameters=50, reference_kwargs={"in_channels": 1})(FoundationTinyNet)
    yield "clinicalai.networks.FoundationTinyNet"
    _REGISTRY.pop("clinicalai.networks.FoundationTinyNet", None)


def test_clinicalai_network_rebuilt_from_state_dict(tmp_path, registered_tiny_net):
    torch.manual_seed(0)
    net = FoundationTinyNet(1, 3).eval()
    card = {"name": "tiny-cls", "task": "classification", "spatial_dims": 2, "classes": ["a", "b", "c"],
            "architecture": {"name": registered_tiny_net, "kwargs": {"in_channels": 1, "num_classes": 3}}}
    loaded = load_model(save_model(net, card, tmp_path / "cls.pt"), device="cpu")
    assert isinstance(loaded.module, FoundationTinyNet)
    np.testing.assert_allclose(loaded.predict(x2d()), torch_out(net, x2d()), atol=1e-6)


@pytest.mark.parametrize(
    "name", ["os.system", "builtins.eval", "monai.networks.nets._private", "monai.networks.nets.UNet.__init__",
             "monai.networks.nets.torch", "clinicalai.networks.NoSuchNet", "torch.nn.Linear", "subprocess.Popen"],
)
def test_names_off_the_allow_list_are_refused(name, tmp_path):
    with pytest.raises(ModelError):
        resolve_architecture(name)
    # and through a card: refused before the weights file is even read
    (tmp_path / "m.pt").write_bytes(b"never read")
    card = dict(SEG_CARD, format="state_dict", architecture={"name": name, "kwargs": {}})
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not allowed|not a valid MONAI|not a network|unknown ClinicalAI|MONAI has no"):
        load_model(tmp_path / "m.pt", device="cpu")


def test_monai_factory_functions_are_allowed():
    net = build_network("monai.networks.nets.resnet10", {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 2})
    assert sum(p.numel() for p in net.parameters()) > 1_000_000
    with pytest.raises(ModelError, match="does not accept these arguments"):
        build_network("monai.networks.nets.UNet", {"no_such_argument": 1})


# ---------------------------------------------------------------------------------- untrusted pickles
def _write_card(path: Path, fmt: str = "state_dict") -> None:
    path.with_suffix(".json").write_text(json.dumps(dict(SEG_CARD, format=fmt)))


def test_pickled_full_module_is_refused(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(tiny_unet(), path)  # the whole nn.Module, pickled
    _write_card(path)
    with pytest.raises(ModelError) as info:
        load_model(path, device="cpu")
    msg = str(info.value)
    assert "refused" in msg and "pickled full model" in msg and "monai.networks.nets" in msg
    assert "weights_only" not in msg and "\n" not in msg


class _Payload:
    """Unpickling this runs ``os.system`` (a stand-in for malicious code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_malicious_payload_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.pt"
    obj = {"conv.weight": torch.zeros(2), "x": _Payload(marker)}
    if container == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    _write_card(path)
    with pytest.raises(ModelError) as info:
        load_model(path, device="cpu")
    assert "may be malicious" in str(info.value) and "system" in str(info.value)
    assert not marker.exists()
    # the payload is live: an unrestricted unpickler would have run it
    pickle.loads(pickle.dumps(_Payload(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x00garbage" * 20)
    _write_card(path)
    with pytest.raises(ModelError, match="not a readable PyTorch file"):
        load_model(path, device="cpu")


# ---------------------------------------------------------------------------------- TorchScript and ONNX
def test_torchscript_package(tmp_path):
    module = tiny_unet(1)
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    _write_card(path, "torchscript")
    loaded = load_model(path, device="cpu", trust_code=True)  # TorchScript is code: trusted explicitly
    assert loaded.backend == "torch"
    np.testing.assert_allclose(loaded.predict(x2d()), torch_out(module, x2d()), atol=1e-5)
    # a TorchScript archive claimed to be a state dict (and vice versa) is refused
    _write_card(path, "state_dict")
    with pytest.raises(ModelError, match="is a TorchScript archive"):
        load_model(path, device="cpu")
    sd = save_model(module, SEG_CARD, tmp_path / "sd.pt")
    _write_card(sd, "torchscript")
    with pytest.raises(ModelError, match="not a TorchScript archive"):
        load_model(sd, device="cpu", trust_code=True)


def test_onnx_package(tmp_path):
    module = tiny_unet(2)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 1, 32, 32),), str(path), input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    _write_card(path, "onnx")
    loaded = load_model(path, device="cpu")
    assert loaded.backend == "onnx" and loaded.module is None
    np.testing.assert_allclose(loaded.predict(x2d(4)), torch_out(module, x2d(4)), atol=1e-4)
    with pytest.raises(ModelError, match="ONNX model cannot give"):
        loaded.torch_module("integrated gradients")
    path.write_bytes(b"not onnx")
    path.with_suffix(".json").write_text(json.dumps(dict(SEG_CARD, format="onnx")))
    with pytest.raises(ModelError, match="cannot be loaded by onnxruntime"):
        load_model(path, device="cpu")


# ---------------------------------------------------------------------------------- devices and inference
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_gpu_is_a_device_error(saved_unet):
    _, path = saved_unet
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        load_model(path, device="cuda")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")


def test_predict_in_batches_equals_one_shot(saved_unet):
    _, path = saved_unet
    loaded = load_model(path, device="cpu")
    x = x2d(7, seed=3)
    seen = []
    one = loaded.predict(x)
    chunked = loaded.predict(x, batch_size=3, progress=lambda f, m: seen.append(f))
    np.testing.assert_allclose(chunked, one, atol=1e-5)
    assert seen == pytest.approx([3 / 7, 6 / 7, 1.0])
    with pytest.raises(ModelError, match="expects 1 input channel"):
        loaded.predict(np.zeros((1, 2, 32, 32), np.float32))
    with pytest.raises(ModelError, match="expects 2D input"):
        loaded.predict(np.zeros((1, 1, 8, 32, 32), np.float32))


class _OutOfMemoryAbove(torch.nn.Module):
    """Wraps a real network and raises torch's ``OutOfMemoryError`` for batches larger than
    ``limit``, as a GPU with little memory would.

    Injecting the exception is the only way to exercise the fallback here: the test machine has
    no GPU, and CPU allocations never raise CUDA's OutOfMemoryError.
    """

    def __init__(self, inner: torch.nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return self.inner(x)


def _loaded(module, card=SEG_CARD) -> LoadedModel:
    return LoadedModel(card=parse_card(dict(card, format="state_dict")), backend="torch", path=Path("x.pt"),
                       device="cpu", module=module)


def test_out_of_memory_halves_the_batch_and_keeps_results():
    inner = tiny_unet(4)
    wrapped = _OutOfMemoryAbove(inner, limit=2)
    x = x2d(8, seed=5)
    with pytest.warns(RuntimeWarning, match="retrying with batches of"):
        out = _loaded(wrapped).predict(x)
    np.testing.assert_allclose(out, torch_out(inner, x), atol=1e-5)
    assert wrapped.calls[:3] == [8, 4, 2]  # halved twice, then the rest in chunks of 2
    assert sum(c for c in wrapped.calls if c <= 2) == 8


def test_out_of_memory_at_one_sample_moves_to_cpu_then_gives_up():
    assert oom_next_step(8, "cuda") == (4, "cuda")
    assert oom_next_step(1, "cuda") == (1, "cpu")
    assert oom_next_step(1, "cuda:1") == (1, "cpu")
    with pytest.raises(ModelError, match="out of memory even for one sample on the CPU"):
        oom_next_step(1, "cpu")
    with pytest.warns(RuntimeWarning), pytest.raises(ModelError, match="on the CPU"):
        _loaded(_OutOfMemoryAbove(tiny_unet(), limit=0)).predict(x2d(2))


def test_other_errors_are_not_swallowed():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch somewhere")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _loaded(Broken()).predict(x2d(2))


def test_card_weights_must_lie_beside_the_card(saved_unet):
    _, path = saved_unet
    card = json.loads(path.with_suffix(".json").read_text())
    card["weights"] = "../elsewhere/tiny.pt"
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="must be a file name beside the card"):
        load_model(path.with_suffix(".json"), device="cpu")


def test_torchscript_archive_carrying_a_payload_is_refused_and_never_runs(tmp_path):
    """A file shaped like a TorchScript archive (constants.pkl, code/) whose pickles hold a
    payload: torch.jit.load's unpickler knows only TorchScript types, so it refuses it."""
    import zipfile

    marker = tmp_path / "PAYLOAD_RAN"
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(tiny_unet()), str(good))
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(("data.pkl", "constants.pkl")):
                data = pickle.dumps(_Payload(marker), protocol=2)
            dst.writestr(name, data)
    _write_card(evil, "torchscript")
    with pytest.raises(ModelError, match="cannot be loaded as TorchScript"):
        load_model(evil, device="cpu", trust_code=True)  # even trusted, torch's unpickler refuses it
    assert not marker.exists()


def test_bundle_weights_carrying_a_payload_are_refused(tmp_path):
    """A MONAI bundle's models/model.pt goes through the same restricted unpickler."""
    marker = tmp_path / "PAYLOAD_RAN"
    folder = tmp_path / "bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    meta = {"name": "b", "network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [32, 32]}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                             "channel_def": {"0": "bg", "1": "LV", "2": "MYO"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "UNet", **UNET_KWARGS}}))
    torch.save({"model.0.conv.unit0.conv.weight": torch.zeros(1), "x": _Payload(marker)}, folder / "models" / "model.pt")
    with pytest.raises(ModelError, match="may be malicious"):
        load_model(folder, device="cpu")
    assert not marker.exists()


def test_half_precision_is_never_used_on_the_cpu(tmp_path):
    module = tiny_unet(6)
    path = save_model(module, dict(SEG_CARD, half_precision=True), tmp_path / "half.pt")
    assert load_model(path, device="cpu").card.half_precision is True
    loaded = load_model(path, device="cpu")
    assert loaded.half is False  # float16 convolutions are a CUDA feature; the CPU keeps float32
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    out = loaded.predict(x2d())
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, torch_out(module, x2d()), atol=1e-6)


def test_out_of_memory_messages_of_every_backend_are_recognised():
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    from clinicalai.models.package import _is_cuda_oom

    assert _is_cuda_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert _is_cuda_oom(RuntimeError("CUDA error: out of memory"))
    assert _is_cuda_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    # onnxruntime's CUDA provider raises a generic RuntimeException
    assert _is_cuda_oom(RuntimeException(
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. "
        "Name:'/conv/Conv' Status Message: Failed to allocate memory for requested buffer of size 268435456"))
    assert not _is_cuda_oom(RuntimeError("Given groups=1, weight of size [4, 1, 3, 3], expected input to have 1 channels"))
    assert not _is_cuda_oom(ValueError("shape mismatch"))


class _CudaOutOfMemoryAbove(torch.nn.Module):
    """Raises torch's ``OutOfMemoryError`` for batches larger than ``limit`` *on the GPU only*
    (a GPU with little memory); on the CPU it runs the real network."""

    def __init__(self, inner: torch.nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, []

    def forward(self, x):
        self.calls.append((x.device.type, x.shape[0]))
        if x.is_cuda and x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return self.inner(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_half_precision_and_oom_fallback_on_a_gpu(tmp_path):
    assert resolve_device("auto") == "cuda"
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("cuda:x")
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    module = tiny_unet(7)
    x = x2d(4, seed=8)
    reference = torch_out(module, x)
    full = load_model(save_model(module, SEG_CARD, tmp_path / "full.pt"), device="cuda")
    assert full.device == "cuda" and full.half is False
    # cuDNN may use TF32 convolutions: agreement to a small fraction of the output range
    np.testing.assert_allclose(full.predict(x), reference, atol=1e-2 * float(np.abs(reference).max()))
    half = load_model(save_model(module, dict(SEG_CARD, half_precision=True), tmp_path / "half.pt"), device="auto")
    assert half.half is True and all(p.dtype == torch.float16 for p in half.module.parameters())
    out = half.predict(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference, atol=5e-2 * float(np.abs(reference).max()))
    # out of memory: halve the batch on the GPU, then move to the CPU for one sample
    wrapped = _CudaOutOfMemoryAbove(tiny_unet(7), limit=0).cuda()
    loaded = LoadedModel(card=parse_card(dict(SEG_CARD, format="state_dict")), backend="torch", path=Path("x.pt"),
                         device="cuda", module=wrapped)
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        got = loaded.predict(x)
    assert loaded.device == "cpu" and next(wrapped.parameters()).device.type == "cpu"
    np.testing.assert_allclose(got, reference, atol=1e-5)  # computed on the CPU, as the reference
    assert wrapped.calls[:3] == [("cuda", 4), ("cuda", 2), ("cuda", 1)]
    assert [c for c in wrapped.calls if c[0] == "cpu"] == [("cpu", 1)] * 4
