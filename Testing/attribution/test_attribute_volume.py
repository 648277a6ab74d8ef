"""attribute() on Volumes: card preprocessing, maps on the input grid, ONNX, randomisation check."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from clinicalai.attribution import attribute, normalize_map, randomization_check
from clinicalai.errors import InputError, ModelError
from clinicalai.models import load_model
from clinicalai.volume import Volume


class SumNet(nn.Module):
    """logit 1 = sum of relu(x) over the field of view, logit 0 = its negative: the
    gradient-x-input map of class 1 is the (preprocessed) image itself."""

    def __init__(self, dims=3):
        super().__init__()
        Conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.features = nn.Sequential(Conv(1, 1, 1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)

    def forward(self, x):
        s = self.features(x).flatten(1).sum(1, keepdim=True)
        return torch.cat([-s, s], dim=1)


def _oblique_volume():
    theta = np.deg2rad(25)
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    zz, yy, xx = np.mgrid[:14, :18, :22]
    blob = np.exp(-(((zz - 7) / 3.0) ** 2 + ((yy - 6) / 3.0) ** 2 + ((xx - 15) / 4.0) ** 2)).astype(np.float32)
    return Volume(blob + 0.01, spacing=(1.2, 0.9, 2.5), origin=(10.0, -20.0, 5.0), direction=direction, modality="MR")


CARD3D = {
    "name": "toy", "task": "classification", "format": "state_dict",
    "architecture": {"name": "monai.networks.nets.resnet10", "kwargs": {}},
    "spatial_dims": 3, "classes": ["healthy", "lesion"],
    "input": {"channels": 1, "spacing_mm": [1.5, 1.5, 2.0], "size": [20, 16, 16],
              "normalization": {"kind": "minmax"}},
}


def test_map_lands_on_the_oblique_input_grid():
    vol = _oblique_volume()
    res = attribute(SumNet(), vol, "gradient-x-input", target="lesion", card=CARD3D, normalization="max-abs")
    assert res.volume.same_grid(vol)
    assert res.volume.array.dtype == np.float32
    assert res.target == 1 and res.target_name == "lesion" and res.signed
    assert res.normalization == "max-abs" and float(np.abs(res.array).max()) == pytest.approx(1.0)
    # gradient x input of this net is the (min-max normalised) image, resampled there and back
    inside = res.array > 0.05
    corr = np.corrcoef(res.array[inside], vol.array[inside])[0, 1]
    assert corr > 0.95
    peak = np.unravel_index(np.argmax(res.array), vol.shape)
    assert np.abs(np.array(peak) - np.array([7, 6, 15])).max() <= 2
    d = res.to_dict()
    json.dumps(d)
    assert set(d) >= {"method", "target", "signed", "normalization", "options", "timings", "prediction"}
    assert d["prediction"]["classes"] == ["healthy", "lesion"]
    # the other class is the negated map
    neg = attribute(SumNet(), vol, "gradient-x-input", target=0, card=CARD3D, normalization="none")
    pos = attribute(SumNet(), vol, "gradient-x-input", target=1, card=CARD3D, normalization="none")
    assert np.allclose(neg.array, -pos.array, atol=1e-6)


def test_gradcam_on_volume_uses_card_layer_and_is_unsigned():
    vol = _oblique_volume()
    card = dict(CARD3D, cam_layer="features")
    res = attribute(SumNet(), vol, "gradcam", target=1, card=card)
    assert res.layer == "features" and not res.signed and res.array.min() >= 0
    assert res.volume.same_grid(vol)
    with pytest.raises(ModelError, match="no layer called 'conv9'.*features"):
        attribute(SumNet(), vol, "gradcam", layer="conv9", card=card)


def test_slice_model_on_a_volume():
    vol = _oblique_volume()
    card = dict(CARD3D, spatial_dims=2, input={"channels": 1, "size": [24, 20], "normalization": {"kind": "none"}})
    res = attribute(SumNet(dims=2), vol, "gradient-x-input", target=1, card=card, normalization="none")
    assert res.volume.same_grid(vol)
    # each slice explained on its own: gradient x input is the image itself (reoriented back)
    assert np.allclose(res.array, vol.array, atol=1e-5)
    assert res.prediction["per_slice_max"]


def test_normalizations():
    a = np.array([-4.0, 1.0, 2.0, 100.0])
    n, s, name = normalize_map(a, "max-abs")
    assert s == 100.0 and name == "max-abs" and n[-1] == 1.0
    n, s, name = normalize_map(a, "percentile:50")
    assert name == "percentile:50" and s == pytest.approx(3.0) and n.max() == 1.0 and n.min() == -1.0
    with pytest.raises(InputError):
        normalize_map(a, "zscore")


def test_clear_errors_on_volumes():
    vol = _oblique_volume()
    with pytest.raises(InputError, match="target 5 is out of range"):
        attribute(SumNet(), vol, "gradient", target=5, card=CARD3D)
    with pytest.raises(InputError, match="unknown target class 'tumour'"):
        attribute(SumNet(), vol, "gradient", target="tumour", card=CARD3D)
    with pytest.raises(InputError, match="unknown attribution method"):
        attribute(SumNet(), vol, "shap", card=CARD3D)
    with pytest.raises(InputError, match="reference"):
        attribute(SumNet(), vol, "expected-gradients", card=CARD3D)
    flat = Volume(np.ones((1, 8, 8), np.float32))
    with pytest.raises(InputError, match="3D"):
        attribute(SumNet(), flat, "gradient", card=CARD3D)


def test_expected_gradients_with_reference_volumes():
    vol = _oblique_volume()
    refs = [vol.with_array(np.zeros_like(vol.array) + 0.01 * i) for i in range(3)]
    card = dict(CARD3D, input=dict(CARD3D["input"], normalization={"kind": "none"}))
    res = attribute(SumNet(), vol, "expected-gradients", target=1, card=card, references=refs, n_samples=6,
                    normalization="none")
    assert res.volume.same_grid(vol) and res.options["n_samples"] == 6
    # near-zero references: EG = (x - x') for this net, about the image (gradient x input)
    gxi = attribute(SumNet(), vol, "gradient-x-input", target=1, card=card, normalization="none")
    inside = gxi.array > 0.05
    assert np.allclose(res.array[inside], gxi.array[inside], atol=0.025)
    assert np.abs(res.array[inside] - gxi.array[inside]).max() > 0  # the references were used


def test_onnx_model_gets_occlusion_and_a_clear_error_for_gradients(tmp_path):
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 2))
    path = tmp_path / "toy.onnx"
    with pytest.warns(DeprecationWarning):  # the TorchScript exporter, enough for a toy model
        torch.onnx.export(net, torch.rand(1, 1, 16, 16, 20), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    card = dict(CARD3D, format="onnx")
    card.pop("architecture")
    (tmp_path / "toy.json").write_text(json.dumps(card))
    model = load_model(path, device="cpu")
    vol = _oblique_volume()
    res = attribute(model, vol, "occlusion", target=1, patch=4)
    assert res.volume.same_grid(vol) and np.isfinite(res.array).all()
    with pytest.raises(ModelError, match="ONNX"):
        attribute(model, vol, "integrated-gradients")
    with pytest.raises(ModelError, match="ONNX"):
        randomization_check(model, vol, "occlusion")


def test_randomization_check_tells_trained_from_random():
    torch.manual_seed(0)
    from monai.networks.nets import ResNet

    net = ResNet("basic", [1, 1, 1, 1], [4, 8, 16, 32], spatial_dims=3, n_input_channels=1, conv1_t_size=3,
                 num_classes=2).eval()
    vol = _oblique_volume()
    check = randomization_check(net, vol, "gradient", target=1, card=CARD3D)
    assert check.trained.volume.same_grid(vol) and check.randomized.volume.same_grid(vol)
    assert -1 <= check.spearman_abs <= 1 and check.passed == (check.spearman_abs < 0.5)
    assert check.spearman_abs < 0.9  # the weights changed, so did the map
    # a map that does not depend on the weights (SumNet has none that matter) fails the check
    class NoWeights(nn.Module):
        def forward(self, x):
            s = torch.relu(x).flatten(1).sum(1, keepdim=True)
            return torch.cat([-s, s], dim=1)

    same = randomization_check(NoWeights(), vol, "gradient-x-input", target=1, card=CARD3D)
    assert same.spearman_abs > 0.99 and not same.passed
    json.dumps(check.to_dict())


@pytest.mark.parametrize("dims", [3, 2])
def test_integrated_gradients_from_a_reference_volume(dims):
    """SumNet is linear on positive inputs: IG from a positive reference r is exactly x - r,
    for a 3D model and for a slice model explained in chunks of slices."""
    vol = _oblique_volume()
    ref = vol.with_array((0.5 * vol.array).astype(np.float32))
    if dims == 3:
        card = dict(CARD3D, input=dict(CARD3D["input"], normalization={"kind": "none"}))
        extra = {}
    else:
        card = dict(CARD3D, spatial_dims=2, input={"channels": 1, "normalization": {"kind": "none"}})
        extra = {"slice_batch": 4}  # 14 slices in chunks of 4: the baseline follows each chunk
    res = attribute(SumNet(dims), vol, "integrated-gradients", target=1, card=card, baseline="reference",
                    references=[ref], n_steps=4, normalization="none", **extra)
    assert res.volume.same_grid(vol) and res.options["baseline"] == "reference"
    gxi = attribute(SumNet(dims), vol, "gradient-x-input", target=1, card=card, normalization="none")
    inside = gxi.array > 0.05  # inside the field of view of the 3D card's crop
    assert np.allclose(res.array[inside], 0.5 * gxi.array[inside], atol=1e-4)
    if dims == 2:
        assert np.allclose(res.array, vol.array - ref.array, atol=1e-5)
    with pytest.raises(InputError, match="reference"):
        attribute(SumNet(dims), vol, "integrated-gradients", card=card, baseline="reference")
    if dims == 2:
        short = Volume(ref.array[:9], spacing=ref.spacing, origin=ref.origin, direction=ref.direction)
        with pytest.raises(InputError, match="9 slices and the image 14"):
            attribute(SumNet(dims), vol, "integrated-gradients", card=card, baseline="reference", references=[short])


def test_percentile_normalisation_is_recorded():
    vol = _oblique_volume()
    card = dict(CARD3D, input=dict(CARD3D["input"], normalization={"kind": "none"}))
    raw = attribute(SumNet(), vol, "gradient-x-input", target=1, card=card, normalization="none")
    res = attribute(SumNet(), vol, "gradient-x-input", target=1, card=card, normalization="percentile:90")
    assert res.normalization == "percentile:90" and res.to_dict()["normalization"] == "percentile:90"
    assert res.volume.metadata["attribution"]["normalization"] == "percentile:90"
    assert res.scale == pytest.approx(float(np.percentile(np.abs(raw.array), 90)), rel=1e-5)
    assert np.allclose(res.array, np.clip(raw.array / res.scale, -1, 1), atol=1e-6)
    assert raw.normalization == "none" and raw.scale == 1.0
