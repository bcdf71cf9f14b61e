"""Robust evaluation on a constructed linear classifier whose robust accuracy is known exactly.

Two classes separated by the hyperplane u·(x − c) = 0, u a unit vector with entries ±1/8
(64 inputs), c = 0.5: an example at signed distance d from the plane is classified by the sign
of d, and an attack of l2 radius eps (or l∞ radius eps/8, i.e. eps·‖u‖₁/8 = eps along u) can
cross the plane exactly when |d| < eps. The inputs stay inside [0.3, 0.7], so clipping to
[0, 1] never interferes. With eps = 0.2 and distances in {0.05, 0.1, 0.15} (crossable) or
{0.25, 0.3, 0.35} (not), PGD-10 with steps summing to five radii must fool exactly the near
examples: with a uniform random start r (‖r‖ ≤ eps) and the gradient direction fixed (±u), the
final point's component along u is at least eps / √(1 + 1/25) > 0.19 > 0.15 (l2), and the l∞
iterate saturates at the corner eps·sign(u) (l∞).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import gkl.evaluate.robust
from gkl.attacks.autoattack import AutoAttackResult
from gkl.evaluate.robust import evaluate_robustness

NEAR, FAR = (0.05, 0.1, 0.15), (0.25, 0.3, 0.35)


def _direction() -> torch.Tensor:
    signs = torch.ones(64)
    signs[torch.randperm(64, generator=torch.Generator().manual_seed(1))[:32]] = -1.0
    return signs / 8.0  # unit l2 norm, l1 norm 8


class Hyperplane(nn.Module):
    """Logits (0, s·u·(x − 0.5)): class 1 on the positive side of the plane."""

    def __init__(self, u: torch.Tensor, scale: float = 20.0) -> None:
        super().__init__()
        self.register_buffer("u", u)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = self.scale * ((x.flatten(1) - 0.5) @ self.u)
        return torch.stack([torch.zeros_like(margin), margin], dim=1)


def _dataset(u: torch.Tensor) -> tuple[TensorDataset, int]:
    """Examples at each distance of NEAR and FAR on both sides, plus noise orthogonal to u; returns the
    dataset and the number of NEAR examples."""
    g = torch.Generator().manual_seed(0)
    points, labels = [], []
    for d in NEAR + FAR:
        for side in (1.0, -1.0):
            for _ in range(4):
                noise = 0.05 * (torch.rand(64, generator=g) - 0.5)
                noise -= (noise @ u) * u  # orthogonal to u: the distance stays d
                points.append(0.5 + side * d * u + noise)
                labels.append(1 if side > 0 else 0)
    images = torch.stack(points).view(-1, 1, 8, 8)
    assert images.min() > 0.3 and images.max() < 0.7
    return TensorDataset(images, torch.tensor(labels)), len(NEAR) * 2 * 4


@pytest.mark.parametrize(("norm", "eps", "step"), [("l2", 0.2, 0.1), ("linf", 0.2 / 8, 0.1 / 8)])
def test_pgd_fools_exactly_the_examples_within_eps_of_the_plane(norm: str, eps: float, step: float) -> None:
    u = _direction()
    data, near = _dataset(u)
    model = Hyperplane(u)
    report = evaluate_robustness(
        model, data, eps_list=(eps, 0.6 * eps), attacks=("pgd10",), step_size=step, norm=norm, batch_size=16
    )
    n = len(data)
    assert report.clean_accuracy == 1.0
    assert report.accuracy("pgd10", eps) == pytest.approx((n - near) / n)
    assert report.worst_case(eps) == pytest.approx((n - near) / n)
    # at 0.6 of the radius (a shift of 0.12 along u) the distances 0.05 and 0.1 can be crossed
    assert report.accuracy("pgd10", 0.6 * eps) == pytest.approx((n - 16) / n)


def test_a_cheaper_attack_beating_autoattack_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A weak AutoAttack run (constructed: it returns the clean images) fails on the examples
    PGD fools: the report names the attack, the number of examples and the accuracy order."""

    def weak_autoattack(model, images, labels, **kwargs):
        with torch.no_grad():
            return AutoAttackResult(adversarial=images.clone(), robust=model(images).argmax(dim=1) == labels)

    monkeypatch.setattr(gkl.evaluate.robust, "autoattack", weak_autoattack)
    u = _direction()
    data, near = _dataset(u)
    report = evaluate_robustness(
        Hyperplane(u), data, eps_list=(0.2,), attacks=("pgd10", "autoattack"), step_size=0.1, norm="l2"
    )
    assert report.accuracy("autoattack", 0.2) == 1.0
    assert f"eps 0.2: pgd10 succeeds on {near} example(s) where AutoAttack fails" in " ".join(report.warnings)
    assert "eps 0.2: pgd10 accuracy is below AutoAttack accuracy" in report.warnings
    assert "warning: eps 0.2: pgd10 accuracy is below AutoAttack accuracy" in report.format_table()
