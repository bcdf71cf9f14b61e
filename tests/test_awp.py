"""AWP: exact restore, per-layer perturbation norm gamma * ||w||, BN/bias untouched, update kept."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.objectives.awp import AdversarialWeightPerturbation, perturbable_weights


def _net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).to(dtype)
    with torch.no_grad():  # non-trivial BN affine parameters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.train()


def _loss_fn(images, labels):
    return lambda net: F.cross_entropy(net(images), labels)


def _batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (16,), generator=g)


def test_perturbable_weights_are_conv_and_linear_only():
    names = [name for name, _ in perturbable_weights(_net())]
    assert names == ["0.weight", "3.weight", "8.weight"]


def test_perturb_then_restore_is_bitwise_exact():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    awp = AdversarialWeightPerturbation(gamma=5e-3)
    awp.perturb_for_loss(net, _loss_fn(*_batch()))
    assert awp.active
    assert not torch.equal(net[0].weight, before["0.weight"])
    awp.restore()
    assert not awp.active
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert torch.equal(torch.signbit(v), torch.signbit(before[k])), k  # bitwise, including -0.0
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("gamma", [5e-3, 0.1])
def test_each_layer_moves_by_gamma_times_its_norm(gamma):
    net = _net(torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    awp = AdversarialWeightPerturbation(gamma=gamma)
    awp.perturb_for_loss(net, _loss_fn(*_batch(torch.float64)))
    for name, weight in perturbable_weights(net):
        moved = (weight.detach() - before[name]).norm()
        assert moved == pytest.approx(gamma * before[name].norm().item(), rel=1e-6), name
    for name, value in net.state_dict().items():  # BatchNorm, biases and buffers untouched
        if name not in dict(perturbable_weights(net)):
            assert torch.equal(value, before[name]), name
    awp.restore()


def test_float32_layer_norms_within_rounding():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    awp = AdversarialWeightPerturbation(gamma=5e-3)
    awp.perturb_for_loss(net, _loss_fn(*_batch()))
    for name, weight in perturbable_weights(net):
        moved = (weight.detach().double() - before[name].double()).norm()
        assert moved == pytest.approx(5e-3 * before[name].double().norm().item(), rel=1e-4), name


def test_perturbation_is_an_ascent_direction():
    net = _net(torch.float64)
    images, labels = _batch(torch.float64)
    with torch.no_grad():
        loss_before = F.cross_entropy(net(images), labels)
    awp = AdversarialWeightPerturbation(gamma=0.05)
    awp.perturb_for_loss(net, _loss_fn(images, labels))
    with torch.no_grad():
        loss_after = F.cross_entropy(net(images), labels)
    awp.restore()
    assert loss_after > loss_before


def test_restore_keeps_the_optimizer_update():
    net = _net(torch.float64)
    images, labels = _batch(torch.float64)
    reference = _net(torch.float64)
    awp = AdversarialWeightPerturbation(gamma=5e-3)
    awp.perturb_for_loss(net, _loss_fn(images, labels))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    F.cross_entropy(net(images), labels).backward()
    update = {n: -0.1 * p.grad.clone() for n, p in net.named_parameters()}
    optimizer.step()
    awp.restore()
    for (name, p), (_, p0) in zip(net.named_parameters(), reference.named_parameters()):
        assert torch.allclose(p, p0 + update[name], atol=1e-12), name


def test_perturb_twice_without_restore_raises_and_bad_gamma():
    net = _net()
    awp = AdversarialWeightPerturbation(gamma=5e-3)
    awp.perturb_for_loss(net, _loss_fn(*_batch()))
    with pytest.raises(RuntimeError, match="restore"):
        awp.perturb_for_loss(net, _loss_fn(*_batch()))
    with pytest.raises(ValueError, match="gamma"):
        AdversarialWeightPerturbation(gamma=-1.0)
    with pytest.raises(ValueError, match="proxy_lr"):
        AdversarialWeightPerturbation(proxy_lr=0.0)


def test_proxy_does_not_touch_model_bn_statistics():
    net = _net()
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    awp = AdversarialWeightPerturbation(gamma=5e-3)
    awp.perturb_for_loss(net, _loss_fn(*_batch()))
    for k, v in net.named_buffers():
        assert torch.equal(v, buffers[k]), k
    awp.restore()
