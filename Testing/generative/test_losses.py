"""The losses against hand-checked cases."""

import math

import pytest
import torch

from clinicalai.generative.losses import critic_loss, generator_loss, gradient_penalty, reconstruction_loss


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere, so the penalty is lam (|w| - 1)^2."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())
        self.b = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1, keepdim=True) + self.b


@pytest.mark.parametrize("norm", [0.5, 1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic(norm):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 4, 4, 4, generator=g)
    w = w / w.norm() * norm
    critic = LinearCritic(w)
    real, fake = torch.randn(5, 1, 4, 4, 4, generator=g), torch.randn(5, 1, 4, 4, 4, generator=g)
    gp = gradient_penalty(critic, real, fake, lam=10.0)
    assert gp.item() == pytest.approx(10.0 * (norm - 1.0) ** 2, rel=1e-5, abs=1e-6)
    # the interpolation point does not matter for a linear critic
    gp_eps = gradient_penalty(critic, real, fake, lam=10.0, eps=torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0]))
    assert gp_eps.item() == pytest.approx(gp.item(), rel=1e-5, abs=1e-6)
    # and the penalty trains the critic: d/dw lam (|w| - 1)^2 = 2 lam (|w| - 1) w / |w|
    gp.backward()
    expected = 2 * 10.0 * (norm - 1.0) * w / norm
    assert torch.allclose(critic.w.grad, expected, atol=1e-4)


def test_gradient_penalty_of_a_quadratic_critic():
    # D(x) = 0.5 |x|^2 has gradient x; with real = fake = x0 the norm is |x0|
    critic = lambda x: 0.5 * (x.flatten(1) ** 2).sum(1)  # noqa: E731
    x0 = torch.zeros(2, 1, 2, 2, 2)
    x0[0, 0, 0, 0, 0] = 2.0
    x0[1, 0, 1, 1, 1] = 0.5
    gp = gradient_penalty(critic, x0, x0, lam=1.0)
    assert gp.item() == pytest.approx(((2.0 - 1.0) ** 2 + (0.5 - 1.0) ** 2) / 2)


def test_adversarial_losses():
    real, fake = torch.tensor([[2.0], [4.0]]), torch.tensor([[-1.0], [1.0]])
    assert critic_loss("wgan-gp", real, fake).item() == pytest.approx(0.0 - 3.0)
    assert generator_loss("wgan-clip", fake).item() == pytest.approx(0.0)
    bce = critic_loss("gan", torch.tensor([[0.0]]), torch.tensor([[0.0]])).item()
    assert bce == pytest.approx(2 * math.log(2), rel=1e-5)
    with pytest.raises(ValueError):
        critic_loss("lsgan", real, fake)


def test_sulcus_weighted_cross_entropy():
    # one wrong voxel of each class; weighting the sulcus 5x raises its share of the loss
    target = torch.zeros(1, 3, 1, 1, 2)
    target[0, 0, 0, 0, 0] = 1  # inside
    target[0, 2, 0, 0, 1] = 1  # sulcus
    logits = torch.zeros(1, 3, 1, 1, 2)
    logits[0, 0, 0, 0, 0] = 2.0  # inside right
    logits[0, 1, 0, 0, 1] = 2.0  # sulcus predicted outside
    plain = reconstruction_loss(logits, target, True, "ce")
    weighted = reconstruction_loss(logits, target, True, "ce", class_weights=(1.0, 1.0, 5.0))
    assert weighted.item() > plain.item()
    l2 = reconstruction_loss(logits, target, True, "l2")
    assert 0 < l2.item() < 1


def test_label_reconstruction_losses_by_hand():
    # voxel A: inside, logits (2, 0, 0), right; voxel B: sulcus, logits (0, 2, 0), predicted outside
    target = torch.zeros(1, 3, 1, 1, 2)
    target[0, 0, 0, 0, 0] = 1
    target[0, 2, 0, 0, 1] = 1
    logits = torch.zeros(1, 3, 1, 1, 2)
    logits[0, 0, 0, 0, 0] = 2.0
    logits[0, 1, 0, 0, 1] = 2.0
    z = math.exp(2) + 2
    nll_a, nll_b = -math.log(math.exp(2) / z), -math.log(1 / z)
    assert reconstruction_loss(logits, target, True, "ce").item() == pytest.approx((nll_a + nll_b) / 2, rel=1e-5)
    # weighted cross-entropy is the weighted mean: (1 * nll_a + 5 * nll_b) / (1 + 5)
    weighted = reconstruction_loss(logits, target, True, "ce", class_weights=(1.0, 1.0, 5.0)).item()
    assert weighted == pytest.approx((nll_a + 5 * nll_b) / 6, rel=1e-5)
    # L2: mean over classes and voxels of (softmax - one-hot)^2
    p_hi, p_lo = math.exp(2) / z, 1 / z
    sq_a = (p_hi - 1) ** 2 + 2 * p_lo ** 2
    sq_b = p_lo ** 2 + p_hi ** 2 + (p_lo - 1) ** 2
    assert reconstruction_loss(logits, target, True, "l2").item() == pytest.approx((sq_a + sq_b) / 6, rel=1e-5)
    # intensities: mean squared error whatever the kind
    x, r = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    assert reconstruction_loss(r, x, False).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="ce or l2"):
        reconstruction_loss(logits, target, True, "l1")
