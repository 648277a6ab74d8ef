"""Every method on 2D and 3D toy models with a known answer; parity with MONAI and captum."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from clinicalai.attribution import METHODS, attribute_tensor, conv_layer_names, default_cam_layer
from clinicalai.errors import InputError, ModelError


def _opts(method, x):
    if method == "expected-gradients":
        return {"references": torch.zeros_like(x[:1]).repeat(3, *[1] * (x.ndim - 1)), "n_samples": 8}
    if method == "occlusion":
        return {"patch": 2}
    if method == "smoothgrad":
        return {"nt_samples": 4}
    if method == "integrated-gradients":
        return {"n_steps": 8}
    return {}


@pytest.mark.parametrize("head", ["multi-class", "binary"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", list(METHODS))
def test_attribution_lands_in_the_region_the_model_looks_at(method, dims, head, region2d, region3d, RegionNetCls):
    region = region2d if dims == 2 else region3d
    channels = 2
    torch.manual_seed(0)
    net = RegionNetCls(region, channels=channels, n_classes=3 if head == "multi-class" else 1)
    if head == "binary":  # one logit counting the region positively: target 0 is that logit
        with torch.no_grad():
            net.head.weight.abs_()
    x = torch.rand((2, channels) + region.shape) + 0.1  # positive: the ReLU is the identity
    a = attribute_tensor(net, x, method, target=2 if head == "multi-class" else 0, **_opts(method, x))
    per_voxel = a.abs().sum(1)  # (N, *spatial)
    expected_channels = 1 if METHODS[method].layer_based else channels
    assert a.shape == (2, expected_channels) + region.shape
    inside = per_voxel[:, torch.from_numpy(region) > 0]
    outside = per_voxel[:, torch.from_numpy(region) == 0]
    assert float(inside.min()) > 0
    if method in ("gradcam", "gradcam++"):
        # the CAM is upsampled from the layer grid (same size here): zero outside the region
        assert float(outside.max()) < 1e-6
    elif method == "occlusion":
        # 2-voxel patches straddle the region border: far voxels are exactly 0
        assert float(outside.mean()) < 0.2 * float(inside.mean())
    else:
        assert float(outside.abs().max()) < 1e-6


@pytest.mark.parametrize("dims", [2, 3])
def test_gradient_is_the_linear_weight_and_sign_follows_target(dims, region2d, region3d, RegionNetCls):
    region = region2d if dims == 2 else region3d
    net = RegionNetCls(region, channels=2, n_classes=3)
    x = torch.rand((1, 2) + region.shape) + 0.1
    g2 = attribute_tensor(net, x, "gradient", target=2)
    w = net.head.weight.detach()
    r = torch.from_numpy(region) > 0
    for c in range(2):
        assert torch.allclose(g2[0, c][r], w[2, c].expand(int(r.sum())))
    g0 = attribute_tensor(net, x, "gradient", target=0)
    assert float(g0[0][:, r].max()) < 0  # class 0 weights are negative
    # gradient x input is x times that; IG with a zero baseline equals it for this piecewise-linear net
    gxi = attribute_tensor(net, x, "gradient-x-input", target=2)
    ig = attribute_tensor(net, x, "integrated-gradients", target=2, n_steps=16)
    assert torch.allclose(gxi, x * g2, atol=1e-6)
    assert torch.allclose(ig, gxi, atol=1e-4)


def test_default_target_is_predicted_class_and_one_logit_heads(region2d, RegionNetCls):
    net = RegionNetCls(region2d, channels=1, n_classes=3)
    x = torch.rand((1, 1, 16, 16)) + 0.1
    # predicted class is 2 (largest positive weight)
    assert torch.allclose(attribute_tensor(net, x, "gradient"), attribute_tensor(net, x, "gradient", target=2))
    binary = RegionNetCls(region2d, channels=1, n_classes=1)
    with torch.no_grad():
        binary.head.weight.fill_(0.5)
    g = attribute_tensor(binary, x, "gradient")
    assert float(g.max()) == pytest.approx(0.5)
    with pytest.raises(InputError, match="one logit"):
        attribute_tensor(binary, x, "gradient", target=1)
    with pytest.raises(InputError, match="out of range"):
        attribute_tensor(net, x, "gradient", target=3)


def test_expected_gradients_on_a_linear_model():
    torch.manual_seed(1)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
    x = torch.rand(2, 2, 8, 8)
    ref = torch.rand(1, 2, 8, 8)
    # one reference repeated: EG = (x - ref) * w exactly, whatever the interpolation points
    eg = attribute_tensor(lin, x, "expected-gradients", target=1, references=ref.repeat(4, 1, 1, 1),
                          n_samples=10, internal_batch_size=6)
    w = lin[1].weight[1].detach().reshape(2, 8, 8)
    assert torch.allclose(eg, (x - ref) * w, atol=1e-5)
    # completeness in expectation: sum of EG ~ f(x) - mean f(refs)
    refs = torch.rand(50, 2, 8, 8)
    eg = attribute_tensor(lin, x, "expected-gradients", target=1, references=refs, n_samples=400)
    with torch.no_grad():
        expected = lin(x)[:, 1] - lin(refs)[:, 1].mean()
    assert torch.allclose(eg.flatten(1).sum(1), expected, atol=0.15 * float(expected.abs().max()) + 0.05)
    with pytest.raises(InputError, match="reference"):
        attribute_tensor(lin, x, "expected-gradients")


def test_smoothgrad_of_linear_model_is_the_weight():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(1 * 6 * 6 * 6, 3))
    x = torch.rand(1, 1, 6, 6, 6)
    sg = attribute_tensor(lin, x, "smoothgrad", target=1, nt_samples=5)
    assert torch.allclose(sg[0, 0], lin[1].weight[1].detach().reshape(6, 6, 6), atol=1e-6)


def _resnet(dims):
    """MONAI's ResNet10 layout (BasicBlock x [1, 1, 1, 1], in-place ReLUs, batch norm), narrow
    so the tests stay fast."""
    from monai.networks.nets import ResNet

    torch.manual_seed(0)
    return ResNet("basic", [1, 1, 1, 1], [4, 8, 16, 32], spatial_dims=dims, n_input_channels=1,
                  conv1_t_size=3, num_classes=3).eval()


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcam_parity_with_monai(dims):
    from monai.visualize import GradCAM, GradCAMpp
    from monai.visualize.class_activation_maps import default_normalizer

    net = _resnet(dims)
    x = torch.rand((1, 1) + (24,) * dims)
    assert default_cam_layer(net, x) == "layer4"
    mine = attribute_tensor(net, x, "gradcam", target=1)  # default layer: found automatically
    theirs = GradCAM(nn_module=copy.deepcopy(net), target_layers="layer4")(x, class_idx=1)
    diff = (default_normalizer(mine) - theirs).abs().max()
    assert float(diff) < 1e-5
    mine_pp = attribute_tensor(net, x, "gradcam++", target=1, layer="layer3")
    theirs_pp = GradCAMpp(nn_module=copy.deepcopy(net), target_layers="layer3")(x, class_idx=1)
    assert float((default_normalizer(mine_pp) - theirs_pp).abs().max()) < 1e-5
    # the model is left as it was (in-place ReLUs restored, no hooks left behind)
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())


def test_integrated_gradients_parity_with_captum():
    from captum.attr import IntegratedGradients

    net = _resnet(3)
    x = torch.rand(2, 1, 16, 16, 16)
    base = torch.rand(1, 1, 16, 16, 16)
    mine = attribute_tensor(net, x, "integrated-gradients", target=2, baseline=base, n_steps=12, internal_batch_size=12)
    ref = IntegratedGradients(net).attribute(x, baselines=base.expand_as(x), target=2, n_steps=12)
    assert float((mine - ref).abs().max()) < 1e-5
    assert float(mine.abs().max()) > 0


def test_blurred_baseline_integrated_gradients_is_x_minus_blur_times_weight():
    from monai.transforms import GaussianSmooth

    from clinicalai.attribution.methods import blurred_baseline

    torch.manual_seed(3)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 10 * 10, 2))
    x = torch.rand(2, 2, 6, 10, 10)
    b = blurred_baseline(x, sigma_mm=2.0)  # no spacing: 1 mm voxels
    # per sample, all channels, as MONAI's GaussianSmooth; smoother than the noise it blurs
    assert torch.allclose(b[1], torch.as_tensor(GaussianSmooth(sigma=2.0)(x[1])), atol=1e-6)
    assert float(b.std()) < 0.5 * float(x.std())
    ig = attribute_tensor(lin, x, "integrated-gradients", target=1, baseline="blur", sigma_mm=2.0, n_steps=4)
    w = lin[1].weight[1].detach().reshape(2, 6, 10, 10)
    assert torch.allclose(ig, (x - b) * w, atol=1e-5)  # IG of a linear model, exact for any steps


class _BatchRecorder(nn.Module):
    """A linear classifier that records the batch size of every forward pass."""

    def __init__(self, numel: int):
        super().__init__()
        torch.manual_seed(5)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(numel, 2))
        self.sizes = []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        return self.net(x)


@pytest.mark.parametrize("method, options, evaluations", [
    ("integrated-gradients", {"n_steps": 10}, 10),
    ("expected-gradients", {"n_samples": 10}, 10),
    ("smoothgrad", {"nt_samples": 10}, 10),
    ("occlusion", {"patch": 4}, 8),
])
def test_sampling_methods_go_through_in_batches_of_the_chosen_size(method, options, evaluations):
    x = torch.rand(1, 1, 8, 8, 8)
    ref = torch.rand(1, 1, 8, 8, 8)
    if method == "expected-gradients":
        options = dict(options, references=ref.repeat(3, 1, 1, 1, 1))
    small = _BatchRecorder(512)
    a_small = attribute_tensor(small, x, method, target=1, internal_batch_size=3, **options)
    big = _BatchRecorder(512)
    big.load_state_dict(small.state_dict())
    a_big = attribute_tensor(big, x, method, target=1, internal_batch_size=64, **options)
    # the attribution passes never exceed the batch (the first pass finds the target)
    assert max(small.sizes) <= 3 and sum(small.sizes[1:]) >= evaluations
    assert max(big.sizes) > 3
    # a linear model has batch-independent answers (EG: one reference, SmoothGrad: the weight)
    assert torch.allclose(a_small, a_big, atol=1e-5)


def test_auto_batch_size_from_free_memory(monkeypatch):
    from clinicalai.attribution import methods

    net = _resnet(3)
    x = torch.rand(1, 1, 16, 16, 16)
    per_sample = 3 * methods.activation_bytes(net, x)
    # the leaf outputs of one forward pass: at least the stem's output (4 channels, stride 2 -> 8^3) in float32
    assert per_sample >= 3 * 4 * 8 ** 3 * 4
    monkeypatch.delenv("CLINICALAI_ATTRIBUTION_BATCH", raising=False)
    monkeypatch.setattr(methods, "_available_bytes", lambda device: 5 * per_sample + 1)
    assert methods.auto_batch_size(net, x) == 5
    monkeypatch.setattr(methods, "_available_bytes", lambda device: per_sample // 2)
    assert methods.auto_batch_size(net, x) == 1  # never below one sample
    monkeypatch.setattr(methods, "_available_bytes", lambda device: 1000 * per_sample)
    assert methods.auto_batch_size(net, x) == 32  # capped
    monkeypatch.setenv("CLINICALAI_ATTRIBUTION_BATCH", "7")
    assert methods.auto_batch_size(net, x) == 7


def test_blurred_baseline_integrated_gradients_runs():
    net = _resnet(2)
    x = torch.rand(1, 1, 20, 20)
    a = attribute_tensor(net, x, "integrated-gradients", target=0, baseline="blur", sigma_mm=3, n_steps=4)
    assert a.shape == x.shape and torch.isfinite(a).all() and float(a.abs().sum()) > 0


def test_errors():
    net = _resnet(2)
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ModelError, match="layer4"):
        attribute_tensor(net, x, "gradcam", layer="layer9")
    assert "layer4" in conv_layer_names(net)
    with pytest.raises(InputError, match="unknown attribution method.*gradcam"):
        attribute_tensor(net, x, "lime")
    with pytest.raises(InputError, match="does not use a layer"):
        attribute_tensor(net, x, "gradient", layer="layer4")
    with pytest.raises(InputError, match="option"):
        attribute_tensor(net, x, "gradient", n_steps=3)
    with pytest.raises(InputError, match="2D or 3D"):
        attribute_tensor(net, torch.rand(16, 16), "gradient")
    seg = nn.Conv2d(1, 2, 3, padding=1)
    with pytest.raises(ModelError, match="segmentation"):
        attribute_tensor(seg, x, "gradient")
    no_relu = nn.Sequential(nn.Flatten(), nn.Linear(256, 2))
    with pytest.raises(ModelError, match="ReLU"):
        attribute_tensor(no_relu, x, "guided-backprop")
    with pytest.raises(ModelError, match="gradients"):
        attribute_tensor(lambda batch: np.zeros((len(batch), 2)), x, "gradient")


def test_occlusion_on_a_plain_function_matches_the_torch_model(region2d, RegionNetCls):
    net = RegionNetCls(region2d, channels=1, n_classes=2)
    x = torch.rand(1, 1, 16, 16) + 0.1

    def numpy_forward(batch):
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    a_fn = attribute_tensor(numpy_forward, x, "occlusion", target=1, patch=4, stride=2)
    a_torch = attribute_tensor(net, x, "occlusion", target=1, patch=4, stride=2)
    assert torch.allclose(a_fn, a_torch, atol=1e-5)
