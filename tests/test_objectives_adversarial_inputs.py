"""Adversarial step inputs: pgd names bad images/labels; AWP's proxy backward uses the fp16 scaler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gkl.attacks import pgd
from gkl.objectives.adversarial import build_adversarial_objective
from gkl.objectives.awp import AdversarialWeightPerturbation
from gkl.settings.adversarial import TRADESSettings


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4))


def _inputs(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 2, 2, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_pgd_rejects_non_finite_images_naming_them(bad: float) -> None:
    images, labels = _inputs()
    images[2, 1, 0, 1] = bad
    with pytest.raises(ValueError, match=r"^images: expected finite values in \[0, 1\], got NaN or inf$"):
        pgd(_model(), images, labels, eps=0.1, step_size=0.05, steps=2)


@pytest.mark.parametrize("loss", ["ce", "kl", "gkl", "cw"])
def test_pgd_rejects_out_of_range_labels_naming_them(loss: str) -> None:
    images, labels = _inputs()
    labels[3] = 4  # the model has 4 classes: 0..3
    with pytest.raises(
        ValueError,
        match=r"^labels: expected class indices in \[0, 3\] \(the model has 4 "
        r"classes\), got label 4$",
    ):
        pgd(_model(), images, labels, eps=0.1, step_size=0.05, steps=1, loss=loss)
    labels[3] = -1
    with pytest.raises(ValueError, match=r"^labels: expected class indices >= 0, got -1$"):
        pgd(_model(), images, labels, eps=0.1, step_size=0.05, steps=1, loss=loss)


def test_pgd_still_rejects_images_outside_the_unit_box() -> None:
    images, labels = _inputs()
    with pytest.raises(ValueError, match=r"^images: expected values in \[0, 1\]"):
        pgd(_model(), images * 2 - 0.5, labels, eps=0.1, step_size=0.05, steps=1)


def test_adversarial_step_reports_targets_and_batch_size() -> None:
    images, labels = _inputs(6)
    objective = build_adversarial_objective(TRADESSettings(awp_gamma=0.0, attack_steps=1), num_classes=4, epochs=2)
    out = objective(_model(), (images, labels), epoch=1, step=1)
    assert out.batch_size == 6 and torch.equal(out.targets, labels) and out.logits.shape == (6, 4)


def test_training_checks_the_first_batch_once_while_pgd_skips_value_checks() -> None:
    """In the engine (value checks off) pgd makes no host sync for its input checks; the objective checks
    the first batch it sees, so images outside [0, 1] (normalised data) still fail at once, naming them."""
    from gkl.losses import value_checks

    images, labels = _inputs(6)
    objective = build_adversarial_objective(TRADESSettings(awp_gamma=0.0, attack_steps=1), num_classes=4, epochs=2)
    with value_checks(False):
        pgd(_model(), images * 2 - 0.5, labels, eps=0.1, step_size=0.05, steps=1)  # not checked here
        with pytest.raises(ValueError, match=r"^images: expected values in \[0, 1\]"):
            objective(_model(), (images * 2 - 0.5, labels), epoch=1, step=1)
        objective(_model(), (images, labels), epoch=1, step=1)
        objective(_model(), (images * 2 - 0.5, labels), epoch=1, step=2)  # checked once: later batches are not
    fresh = build_adversarial_objective(TRADESSettings(awp_gamma=0.0, attack_steps=1), num_classes=4, epochs=2)
    labels[0] = 4
    with value_checks(False), pytest.raises(ValueError, match=r"^labels: expected class indices in \[0, 3\]"):
        fresh(_model(), (images, labels), epoch=1, step=1)


# ---------------------------------------------------------------------------------- AWP under fp16
def _awp_setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))

    def loss_fn(proxy: nn.Module) -> torch.Tensor:
        # tiny loss: its activation gradients underflow to zero in float16 unless scaled
        return 1e-9 * proxy(x).float().square().sum()

    return net, loss_fn


def _perturbation(net, loss_fn, *, scaler=None, fp16: bool = False) -> list[torch.Tensor]:
    awp = AdversarialWeightPerturbation(gamma=0.01, proxy_lr=1e4)  # lr only scales; large keeps float32 exact
    with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        return awp.compute_perturbation(net, loss_fn, scaler=scaler)


def _cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double().flatten(), v.double().flatten()
    return float(u @ v / (u.norm() * v.norm()))


def test_awp_proxy_backward_under_fp16_uses_the_gradient_scaler() -> None:
    net, loss_fn = _awp_setup()
    reference = _perturbation(net, loss_fn)  # float32
    unscaled = _perturbation(net, loss_fn, fp16=True)
    scaled = _perturbation(net, loss_fn, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16), fp16=True)
    assert all(float(v.abs().max()) == 0.0 for v in unscaled)  # the underflow the scaler prevents
    for ref, got, w in zip(reference, scaled, (net[0].weight, net[2].weight)):
        assert _cosine(ref, got) > 0.9999
        assert got.norm().item() == pytest.approx(0.01 * w.norm().item(), rel=1e-4)


def test_awp_skips_the_perturbation_when_scaled_gradients_overflow() -> None:
    net, loss_fn = _awp_setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)
    perturbation = _perturbation(net, loss_fn, scaler=scaler, fp16=True)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in perturbation)
    assert scaler.get_scale() == pytest.approx(1e38)  # read, never updated by AWP


def test_awp_with_a_scaler_in_float32_matches_no_scaler() -> None:
    net, loss_fn = _awp_setup()
    plain = _perturbation(net, loss_fn)
    scaled = _perturbation(net, loss_fn, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    for a, b in zip(plain, scaled):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)
