"""TRADES, GKL-AT and PGD-AT objectives: loss identities, prior handling, AWP wiring, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gkl.config import load_config
from gkl.objectives.adversarial import (
    GKLATObjective,
    PGDATObjective,
    TRADESObjective,
    autoaugment_view,
    build_adversarial_objective,
)
from gkl.objectives.awp import perturbable_weights
from gkl.objectives.base import StepOutput
from gkl.settings.adversarial import GKLATSettings, TRADESSettings, adversarial_settings
from helpers import TinyConvNet

ROOT = Path(__file__).resolve().parents[1]


def _batch(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_gkl_at_loss_with_alpha_zero_is_kl_plus_clean_entropy():
    settings = GKLATSettings(alpha=0.0, beta=1.0, temperature=1.0)
    objective = build_adversarial_objective(settings, num_classes=5, epochs=10)
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3
    adv = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (7,), generator=g)
    terms = objective.at_losses(clean, adv, labels)
    p = F.softmax(clean, 1)
    kl = (p * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1).mean()
    entropy = -(p * F.log_softmax(clean, 1)).sum(1).mean()
    assert terms["gkl"].dtype == torch.float64
    assert torch.allclose(terms["gkl"], kl + entropy, rtol=1e-12, atol=1e-12)
    assert torch.allclose(terms["ce"], F.cross_entropy(clean, labels), rtol=1e-12)


def test_trades_loss_is_ce_plus_beta_kl_adv_clean():
    objective = build_adversarial_objective(TRADESSettings(), num_classes=5, epochs=10)
    g = torch.Generator().manual_seed(1)
    clean, adv = (
        torch.randn(6, 5, generator=g, dtype=torch.float64),
        torch.randn(6, 5, generator=g, dtype=torch.float64),
    )
    labels = torch.randint(0, 5, (6,), generator=g)
    terms = objective.at_losses(clean, adv, labels)
    kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    assert torch.allclose(terms["kl"], 6.0 * kl, rtol=1e-12)
    assert torch.allclose(terms["ce"], F.cross_entropy(clean, labels), rtol=1e-12)


#: the GKL term of the GKL-AT recipes (configs/cifar10_at/_base.yaml); the settings' defaults are the
#: shared KL-family ones (gkl.settings.kl_family), so the recipes write these values out.
GKL_AT_RECIPE = dict(alpha=20.0, beta=4.0, weight_temperature=4.0, class_wise=True)


def test_settings_defaults_follow_method_and_recipes():
    gkl = GKLATSettings()
    assert (gkl.method, gkl.attack_loss, gkl.eps_schedule, gkl.attack_budget) == (
        "gkl",
        "gkl",
        "linear",
        "high-as-released",
    )
    assert (
        gkl.alpha,
        gkl.beta,
        gkl.gamma,
        gkl.temperature,
        gkl.weight_temperature,
        gkl.class_wise,
        gkl.prior_momentum,
        gkl.normalize,
    ) == (1.0, 1.0, 1.0, 1.0, 1.0, False, None, "weights")
    assert (gkl.awp_gamma, gkl.awp_start_epoch) == (5e-3, 10)
    recipe = load_config(ROOT / "configs" / "cifar10_at" / "gkl_wrn34_10.yaml").adversarial
    assert {k: getattr(recipe, k) for k in GKL_AT_RECIPE} == GKL_AT_RECIPE
    trades = TRADESSettings()
    assert (trades.attack_loss, trades.eps_schedule, trades.attack_budget, trades.trades_beta) == (
        "kl",
        "fixed",
        "fixed",
        6.0,
    )
    assert (trades.attack_steps, trades.attack_step_size, trades.eps) == (10, 2 / 255, 8 / 255)
    assert adversarial_settings("pgd_at").attack_loss == "ce"
    assert isinstance(
        build_adversarial_objective(adversarial_settings("pgd_at"), num_classes=3, epochs=2), PGDATObjective
    )


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"method": "mart"}, "method"),
        ({"eps": -1.0}, "eps"),
        ({"attack_budget": "huge"}, "attack_budget"),
        ({"attack_loss": "l2"}, "attack_loss"),
        ({"weight_temperature": 0.0}, "weight_temperature"),
        ({"attack_steps": 1.5}, "attack_steps"),
        ({"norm": "l1"}, "norm"),
        ({"awp_gamma": float("nan")}, "awp_gamma"),
    ],
)
def test_bad_settings_raise_naming_the_field(kwargs, word):
    with pytest.raises(ValueError, match=word):
        adversarial_settings(**kwargs)


def test_gkl_objective_step_prior_and_checkpoint():
    torch.manual_seed(0)
    model = TinyConvNet()
    settings = GKLATSettings(awp_gamma=0.0, **GKL_AT_RECIPE)
    objective = GKLATObjective(settings, num_classes=10, epochs=4)
    images, labels = _batch()
    uniform = torch.full((10, 10), 0.1)
    assert torch.allclose(objective.prior.prior, uniform)
    out = objective(model, (images, labels), epoch=1, step=1)
    assert isinstance(out, StepOutput) and set(out.losses) == {"ce", "gkl"}
    assert 0.0 <= out.metrics["adv_accuracy"] <= 1.0
    assert out.metrics["attack_eps"] == pytest.approx(8 / 255 / 4)
    assert out.logits.shape == (12, 10)
    out.total().backward()  # clean and adversarial branches reach the parameters
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # the prior only changes at the epoch end, to the mean clean softmax at tau_w = 4 per class
    assert torch.allclose(objective.prior.prior, uniform)
    objective.on_epoch_end(1)
    with torch.no_grad():
        model.eval()
        probs = F.softmax(out.logits / 4.0, dim=1)
    seen = labels.unique()
    for c in seen.tolist():
        assert torch.allclose(objective.prior.prior[c], probs[labels == c].mean(0), atol=1e-5)
    state = objective.checkpoint_state()
    assert any(key.startswith("prior.") for key in state)
    fresh = GKLATObjective(settings, num_classes=10, epochs=4)
    fresh.load_checkpoint_state(state)
    assert torch.equal(fresh.prior.prior, objective.prior.prior)


def test_gkl_attack_uses_current_class_weights():
    torch.manual_seed(0)
    TinyConvNet()  # draws from the RNG as the model of the other tests does: the same batch follows
    objective = GKLATObjective(GKLATSettings(awp_gamma=0.0, **GKL_AT_RECIPE), num_classes=10, epochs=4)
    images, labels = _batch()
    with torch.no_grad():
        objective.prior.prior.copy_(torch.softmax(torch.randn(10, 10), dim=1))
    extras = objective.attack_extras(labels)
    assert torch.equal(extras["class_weights"], objective.prior.prior[labels])


@pytest.mark.parametrize("method", ["trades", "gkl", "pgd_at"])
def test_awp_perturbs_during_step_and_restores_after(method):
    torch.manual_seed(0)
    model = TinyConvNet()
    budget = {"attack_steps": 2} if method != "gkl" else {"attack_budget": "fixed", "attack_steps": 2}
    settings = adversarial_settings(method, awp_gamma=0.01, awp_start_epoch=2, **budget)
    objective = build_adversarial_objective(settings, num_classes=10, epochs=4)
    images, labels = _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objective(model, (images, labels), epoch=1, step=1)  # before the AWP start epoch: nothing perturbed
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())
    out = objective(model, (images, labels), epoch=2, step=1)
    moved = [name for name, w in perturbable_weights(model) if not torch.equal(w, before[name])]
    assert moved == [name for name, _ in perturbable_weights(model)]
    assert torch.isfinite(out.total())
    objective.after_optimizer_step()  # no optimizer step taken: weights come back bitwise
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:  # the training forward updates BN statistics
            assert torch.equal(v, before[k]), k


def test_autoaugment_view_and_two_view_loss():
    torch.manual_seed(0)
    images = torch.rand(5, 3, 8, 8)
    view = autoaugment_view(images)
    assert view.shape == images.shape and view.dtype == images.dtype
    assert view.min() >= 0 and view.max() <= 1
    assert torch.equal(view * 255, (view * 255).round())  # made on uint8 values
    model = TinyConvNet()
    settings = TRADESSettings(awp_gamma=0.0, autoaugment_weight=0.5, attack_steps=1)
    objective = TRADESObjective(settings, num_classes=10, epochs=2)
    gray, labels = _batch(n=6)
    out = objective(model, (gray, labels), epoch=1, step=1)
    assert set(out.losses) == {"ce", "kl", "autoaug_ce", "autoaug_kl"}
    assert out.logits.shape == (6, 10)


def test_objective_leaves_model_in_train_mode_and_no_param_grads_from_attack():
    torch.manual_seed(0)
    model = TinyConvNet().train()
    objective = build_adversarial_objective(TRADESSettings(awp_gamma=0.0, attack_steps=3), num_classes=10, epochs=2)
    images, labels = _batch()
    objective(model, (images, labels), epoch=1, step=1)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
