"""One objective class per distillation method: each step equals its loss computed directly.

The step contract (PLAN: ``forward(model, batch, *, epoch, step)`` -> StepOutput with
``targets`` and ``batch_size``), the KD-term warm-up, the frozen teacher and the
class-wise prior of IKL/GKL (GKL Eqs. 8-9).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import dkd_loss, dkl_loss, gkl_loss, js_div, kl_div, logit_mse
from gkl.objectives.base import StepOutput
from gkl.objectives.distill import DISTILL_OBJECTIVES, GKLObjective, IKLObjective, KDObjective, build_distill_objective
from gkl.objectives.supervised import SupervisedObjective
from gkl.settings.distill import DISTILL_METHODS, DISTILL_SETTINGS, GKLSettings, KDSettings, distill_settings

C = 6


def _nets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, C)).double()
    teacher = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, C)).double()
    with torch.no_grad():
        teacher[-1].weight.mul_(3)  # a confident teacher
    return student, teacher


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(10, 5, generator=g, dtype=torch.float64), torch.randint(0, C, (10,), generator=g)


SETTINGS = {
    "kd": dict(temperature=3.0, ce_weight=0.1, kd_weight=0.9),
    "dkd": dict(temperature=2.0, dkd_alpha=0.5, dkd_beta=4.0),
    "dkl": dict(temperature=2.0, alpha=1.5, beta=0.5),
    "ikl": dict(temperature=2.0, alpha=3.0, beta=0.5, weight_temperature=2.0),
    "gkl": dict(temperature=2.0, alpha=3.0, beta=0.5, gamma=0.3, weight_temperature=3.0, normalize="batch"),
    "mse": dict(kd_weight=0.5),
    "jsd": dict(temperature=2.0),
}


def _expected_term(method: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    cfg = SETTINGS[method]
    if method == "kd":
        return kl_div(s, t, temperature=3.0)
    if method == "dkd":
        return dkd_loss(s, t, y, alpha=0.5, beta=4.0, temperature=2.0)
    if method == "dkl":
        return dkl_loss(s / 2, t / 2, alpha=1.5, beta=0.5) * 4
    if method == "ikl":
        return gkl_loss(
            s, t, alpha=3.0, beta=0.5, gamma=1.0, temperature=2.0, weight_temperature=2.0, normalize="batch"
        )
    if method == "gkl":
        return gkl_loss(
            s, t, alpha=3.0, beta=0.5, gamma=0.3, temperature=2.0, weight_temperature=3.0, normalize="batch"
        )
    if method == "mse":
        return logit_mse(s, t)
    assert cfg == {"temperature": 2.0}
    return js_div(s, t, temperature=2.0)


@pytest.mark.parametrize("method", DISTILL_METHODS)
def test_each_method_is_its_own_class_and_its_step_is_its_loss(method: str) -> None:
    student, teacher = _nets()
    x, y = _batch()
    settings = distill_settings(method, warmup_epochs=4, **SETTINGS[method])
    objective = build_distill_objective(teacher, settings, num_classes=C)
    assert type(objective) is DISTILL_OBJECTIVES[method] and objective.method == method
    assert type(objective.settings) is DISTILL_SETTINGS[method]
    out = objective(student, (x, y), epoch=2, step=7)
    assert isinstance(out, StepOutput) and set(out.losses) == {"ce", method}
    s, t = student(x), teacher(x)
    cfg = objective.settings
    assert torch.allclose(out.losses["ce"], cfg.ce_weight * F.cross_entropy(s.float(), y), rtol=0, atol=0)
    expected = (2 / 4) * cfg.kd_weight * _expected_term(method, s, t, y)
    assert torch.allclose(out.losses[method], expected, rtol=1e-12, atol=1e-14)
    assert out.targets is y and out.batch_size == 10 and torch.equal(out.logits, s)
    out.total().backward()
    assert all(p.grad is None for p in objective.teacher.parameters())  # frozen teacher
    assert all(p.grad is not None for p in student.parameters())
    assert objective.checkpoint_state() == {} or method in ("ikl", "gkl")


def test_warmup_counts_epochs_from_one() -> None:
    student, teacher = _nets()
    x, y = _batch()
    objective = KDObjective(teacher, KDSettings(warmup_epochs=3), num_classes=C)
    terms = [objective(student, (x, y), epoch=e, step=1).losses["kd"] for e in (1, 2, 3, 4)]
    full = kl_div(student(x), teacher(x), temperature=4.0)
    for e, term in zip((1, 2, 3, 4), terms):
        assert torch.allclose(term, min(e / 3, 1.0) * full, rtol=1e-12)


def test_a_method_refuses_another_methods_settings() -> None:
    _, teacher = _nets()
    with pytest.raises(ValueError, match=r"^settings: expected a GKLSettings for GKLObjective, got KDSettings"):
        GKLObjective(teacher, KDSettings(), num_classes=C)
    with pytest.raises(ValueError, match=r"^num_classes: expected a value >= 2"):
        KDObjective(teacher, KDSettings(), num_classes=1)


def test_class_wise_ikl_uses_the_previous_epochs_prior() -> None:
    """Epoch 1 weights are uniform; epoch 2 uses the mean teacher softmax at tau_w per class (Eq. 9)."""
    student, teacher = _nets()
    x, y = _batch()
    settings = distill_settings(
        "ikl", class_wise=True, weight_temperature=2.0, alpha=2.0, temperature=4.0, warmup_epochs=0
    )
    objective = IKLObjective(teacher, settings, num_classes=C).train()
    s, t = student(x), teacher(x)
    uniform = torch.full((10, C), 1.0 / C, dtype=torch.float32)  # the prior holds float32
    first = objective(student, (x, y), epoch=1, step=1).losses["ikl"]
    assert torch.allclose(
        first,
        gkl_loss(s, t, weights=uniform, alpha=2.0, beta=1.0, gamma=1.0, temperature=4.0, normalize="batch"),
        rtol=1e-12,
    )
    objective.on_epoch_end(1)
    probs = torch.softmax(t.detach() / 2.0, dim=1)
    means = torch.stack(
        [probs[y == c].mean(0) if (y == c).any() else torch.full((C,), 1.0 / C, dtype=torch.float64) for c in range(C)]
    )
    second = objective(student, (x, y), epoch=2, step=2).losses["ikl"]
    assert torch.allclose(
        second,
        gkl_loss(s, t, weights=means[y], alpha=2.0, beta=1.0, gamma=1.0, temperature=4.0, normalize="batch"),
        rtol=1e-6,
    )
    objective.eval()  # evaluation steps do not feed the prior
    before = objective.prior.sums.clone()
    objective(student, (x, y), epoch=2, step=3)
    assert torch.equal(objective.prior.sums, before)
    assert set(objective.checkpoint_state()) == {"prior.prior", "prior.sums", "prior.counts"}


def test_gkl_settings_reach_the_loss() -> None:
    student, teacher = _nets()
    x, y = _batch()
    settings = GKLSettings(alpha=2.0, gamma=0.0, normalize="weights", temperature=4.0, warmup_epochs=0)
    out = GKLObjective(teacher, settings, num_classes=C)(student, (x, y), epoch=1, step=1)
    s, t = student(x), teacher(x)
    # gamma = 0: unit weights, W = C for every example, D = N C^2
    d = t - s
    wmse = 0.5 * C * ((d - d.mean(1, keepdim=True)) ** 2).sum(1)
    ce = -(torch.softmax(t / 4, 1) * torch.log_softmax(s / 4, 1)).sum(1)
    expected = 2.0 * wmse.sum() / (10 * C * C) + ce.mean()
    assert torch.allclose(out.losses["gkl"], expected, rtol=1e-12)


def test_supervised_step_and_batch_shape_errors() -> None:
    student, _ = _nets()
    x, y = _batch()
    out = SupervisedObjective(label_smoothing=0.1)(student, (x, y), epoch=1, step=1)
    assert torch.allclose(out.losses["ce"], F.cross_entropy(student(x).float(), y, label_smoothing=0.1))
    assert out.targets is y and out.batch_size == 10
    with pytest.raises(ValueError, match=r"^batch: expected \(images, labels\)"):
        SupervisedObjective()(student, {"images": x}, epoch=1, step=1)
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a value in \[0, 1\)"):
        SupervisedObjective(label_smoothing=1.0)


def test_step_output_batch_size_defaults_to_the_logits() -> None:
    logits = torch.zeros(7, 3)
    assert StepOutput(losses={"a": logits.sum()}, logits=logits).batch_size == 7
    assert StepOutput(losses={"a": logits.sum()}, batch_size=4).batch_size == 4
    assert StepOutput(losses={"a": logits.sum()}).batch_size is None


def test_kd_at_infinite_temperature_is_the_documented_limit() -> None:
    """``distill.temperature: .inf`` (KD only) gives the T -> inf limit of docs/study.md,
    (1/2C) sum_j (d_j - mean(d))^2 per example with d = s - t, averaged over the batch."""
    import math

    student, teacher = _nets()
    x, y = _batch()
    d = student(x) - teacher(x)
    limit = ((d - d.mean(dim=1, keepdim=True)) ** 2).sum(dim=1).mean() / (2 * C)
    objective = KDObjective(teacher, KDSettings(temperature=math.inf, warmup_epochs=0), num_classes=C)
    out = objective(student, (x, y), epoch=1, step=1)
    assert torch.isfinite(out.losses["kd"]) and out.losses["kd"] > 0
    assert torch.allclose(out.losses["kd"], limit * objective.settings.kd_weight, rtol=1e-12)
