"""The hand-written NVAE: shapes, gradients, KL per scale, warm-up, registration."""

import pytest
import torch

from clinicalai.networks import build_network, count_parameters
from clinicalai.networks.nvae import NVAE, kl_warmup, nvae_loss


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return NVAE(stem_channels=4, latent_channels=8)


def test_forward_backward_shapes(small):
    # 64 x 64 keeps the test fast; any size divisible by 16 works (128 x 128 in SegCorrect)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 64, 64)), 4).permute(0, 3, 1, 2).float()
    small.train()
    logits, kls = small.elbo_terms(x)
    assert logits.shape == (2, 4, 64, 64)
    assert len(kls) == 3 and all(k.ndim == 0 and float(k.detach()) >= 0 for k in kls)
    loss, rec, kl = nvae_loss(logits, x.argmax(1), kls)
    loss.backward()
    grads = [p.grad for p in small.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    small.zero_grad()


def test_context_input_and_deterministic_eval():
    net = NVAE(in_channels=12, latent_channels=8, groups_per_scale=(2, 1, 1)).eval()
    x = torch.rand(1, 12, 128, 128)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert a.shape == (1, 4, 128, 128)
    assert torch.equal(a, b)  # eval decodes the posterior mean
    with pytest.raises(ValueError):
        net(torch.rand(1, 12, 120, 120))


def test_latent_hierarchy_layout():
    net = NVAE()
    assert net.groups_per_scale == (4, 2, 1)
    assert len(net.enc_samplers) == 7  # one posterior per latent group
    assert net.enc_samplers[0].out_channels == 2 * 20  # mean and log sigma of 20 channels
    ses = [m for m in net.modules() if m.__class__.__name__ == "SqueezeExcitation"]
    assert ses and ses[0].fc[0].out_features == max(ses[0].fc[0].in_features // 8, 2)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.SiLU) for m in net.modules())  # Swish


def test_kl_warmup_and_beta_weighting(small):
    assert kl_warmup(0, 6420) == pytest.approx(1e-4)
    assert kl_warmup(3210, 6420) == pytest.approx(0.5)
    assert kl_warmup(10_000, 6420) == 1.0
    logits = torch.randn(2, 4, 32, 32)
    target = torch.randint(0, 4, (2, 32, 32))
    kls = [torch.tensor(3.0), torch.tensor(2.0), torch.tensor(1.0)]
    loss0, rec, _ = nvae_loss(logits, target, kls, kl_coefficient=0.0)
    assert torch.isclose(loss0, rec)
    loss1, _, kl = nvae_loss(logits, target, kls, beta=(8, 10, 11), kl_coefficient=1.0)
    assert float(kl) == pytest.approx((8 * 3 + 10 * 2 + 11 * 1) / (32 * 32))
    assert float(loss1) > float(loss0)
    with pytest.raises(ValueError):
        nvae_loss(logits, target, kls, beta=(1, 1))


def test_spectral_regularisation_is_differentiable():
    net = NVAE(latent_channels=4, groups_per_scale=(1, 1, 1))
    reg = net.spectral_regularisation()
    assert reg.item() > 0
    reg.backward()
    assert net.stem.weight.grad is not None and float(net.stem.weight.grad.abs().sum()) > 0


def test_registered_for_model_cards():
    net = build_network("clinicalai.networks.NVAE", {"in_channels": 4, "latent_channels": 20})
    assert isinstance(net, NVAE)
    assert count_parameters(net) < 1_000_000  # small enough for a CPU demo
