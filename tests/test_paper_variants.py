"""The method variants the paper's released runs and ablations need, in float64.

* ``break_asymmetry=False`` (GKL paper Table I, row (b)): the wMSE keeps DKL's stop-gradient on the
  ``logits`` side (Eq. 5); with α = β = γ = 1 and sample-wise weights it is DKL, whose gradients are
  KL's (Theorem 1).
* ``autoaugment_ce: mean`` (the authors' AutoAugment GKL-AT script): one clean CE over both views.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior
from gkl.losses.functional import dkl_loss, gkl_loss, kl_div
from gkl.objectives.adversarial import GKLATObjective, TRADESObjective
from gkl.settings.adversarial import adversarial_settings
from gkl.settings.distill import distill_settings
from gkl.utils.errors import ConfigError


def _logits(seed: int = 0, n: int = 7, c: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        2 * torch.randn(n, c, generator=g, dtype=torch.float64),
        2 * torch.randn(n, c, generator=g, dtype=torch.float64),
    )


def _grads(fn, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s, t = s.clone().requires_grad_(), t.clone().requires_grad_()
    value = fn(s, t)
    gs, gt = torch.autograd.grad(value, (s, t))
    return value.detach(), gs, gt


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (4.0, 0.5)])
def test_gkl_without_breaking_the_asymmetry_is_dkl(alpha: float, beta: float) -> None:
    s, t = _logits()
    got = _grads(lambda a, b: gkl_loss(a, b, alpha=alpha, beta=beta, break_asymmetry=False), s, t)
    want = _grads(lambda a, b: dkl_loss(a, b, alpha=alpha, beta=beta), s, t)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gkl_without_breaking_the_asymmetry_has_the_kl_gradient() -> None:
    s, t = _logits(1)
    _, gs, gt = _grads(lambda a, b: gkl_loss(a, b, break_asymmetry=False), s, t)
    _, ks, kt = _grads(lambda a, b: kl_div(a, b), s, t)
    torch.testing.assert_close(gs, ks, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gt, kt, rtol=1e-10, atol=1e-12)
    # breaking it changes the student's gradient (the wMSE now reaches the logits)
    _, bs, _ = _grads(lambda a, b: gkl_loss(a, b), s, t)
    assert (bs - ks).abs().max() > 1e-3


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_stop_gradient_moves_the_wmse_gradient_to_the_targets_only(reduction: str) -> None:
    s, t = _logits(2)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0])
    prior = ClassPrior(6)
    prior.prior = torch.softmax(torch.randn(6, 6, generator=torch.Generator().manual_seed(3)), dim=1)
    w = prior(labels).to(torch.float64)
    kw = dict(weights=w, alpha=3.0, beta=2.0, gamma=0.5, temperature=2.0, reduction=reduction)
    value, gs, gt = _grads(lambda a, b: gkl_loss(a, b, break_asymmetry=False, **kw), s, t)
    full, _, full_gt = _grads(lambda a, b: gkl_loss(a, b, **kw), s, t)
    _, ce_gs, _ = _grads(lambda a, b: gkl_loss(a, b, **{**kw, "alpha": 0.0}), s, t)
    torch.testing.assert_close(value, full, rtol=1e-12, atol=1e-12)  # same value
    torch.testing.assert_close(gs, ce_gs, rtol=1e-10, atol=1e-12)  # logits: the CE term only
    torch.testing.assert_close(gt, full_gt, rtol=1e-10, atol=1e-12)  # targets: the wMSE as before


def test_break_asymmetry_is_a_checked_setting() -> None:
    assert distill_settings("gkl").break_asymmetry is True
    assert distill_settings("gkl", break_asymmetry=False).break_asymmetry is False
    with pytest.raises(ConfigError, match="distill.break_asymmetry"):
        distill_settings("gkl", break_asymmetry="no")
    with pytest.raises(ConfigError, match="adversarial.break_asymmetry"):
        adversarial_settings("gkl", break_asymmetry=1)
    with pytest.raises(ConfigError, match="adversarial.autoaugment_ce"):
        adversarial_settings("trades", autoaugment_ce="sum")
    with pytest.raises(ValueError, match="break_asymmetry"):
        gkl_loss(*_logits(), break_asymmetry=None)


def _two_views(seed: int = 4) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double()
    images = torch.rand(8, 3, 2, 2, dtype=torch.float64)  # 4 examples, then their second view
    adversarial = (images + 0.05 * torch.randn_like(images)).clamp(0, 1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    return model, images, adversarial, labels


@pytest.mark.parametrize("objective_class,method", [(GKLATObjective, "gkl"), (TRADESObjective, "trades")])
def test_autoaugment_ce_mean_is_one_cross_entropy_over_both_views(objective_class, method) -> None:
    model, images, adversarial, labels = _two_views()
    terms = {}
    for mode in ("weighted", "mean"):
        settings = adversarial_settings(method, autoaugment_weight=0.5, autoaugment_ce=mode, awp_gamma=0.0)
        objective = objective_class(settings, num_classes=5, epochs=2)
        terms[mode] = objective._views_loss(model, images, adversarial, labels, 4)[0]
    clean = model(images)
    ce_a, ce_b = F.cross_entropy(clean[:4], labels[:4]), F.cross_entropy(clean[4:], labels[4:])
    mean, weighted = terms["mean"], terms["weighted"]
    torch.testing.assert_close(mean["ce"] + mean["autoaug_ce"], F.cross_entropy(clean, labels), rtol=1e-12, atol=0)
    torch.testing.assert_close(mean["ce"], 0.5 * ce_a, rtol=1e-12, atol=0)
    torch.testing.assert_close(weighted["ce"], ce_a, rtol=1e-12, atol=0)
    torch.testing.assert_close(weighted["autoaug_ce"], 0.5 * ce_b, rtol=1e-12, atol=0)
    robust = "gkl" if method == "gkl" else "kl"
    for name in (robust, f"autoaug_{robust}"):  # the robust terms keep weights 1 and autoaugment_weight
        torch.testing.assert_close(mean[name], weighted[name], rtol=1e-12, atol=0)
