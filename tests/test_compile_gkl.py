"""torch.compile(fullgraph=True) over the losses and a GKL distillation step equals eager.

The loss family has no graph break at default settings: the per-call value checks (on by
default) are skipped while compiling, and the class-wise prior's update is sync-free.
The ``aot_eager`` backend traces the whole step with Dynamo (``fullgraph=True`` fails on
any graph break) and its backward with AOTAutograd, without a C++ compiler, so the tests
stay fast; inductor compiles the same graph (benchmarks/losses.py times it).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior, GKLLoss, dkl_loss, gkl_loss, ikl_loss, kl_div, value_checks_active
from gkl.objectives.distill import GKLObjective
from gkl.settings.distill import GKLSettings

C = 5


def _nets(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, C)).double()
    teacher = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, C)).double().requires_grad_(False)
    return student, teacher


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(24, 8, generator=g, dtype=torch.float64), torch.randint(0, C, (24,), generator=g)


@pytest.fixture
def fresh_dynamo():
    assert value_checks_active()  # default settings: the content checks are on
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_gkl_step_with_class_wise_weights_compiles_without_graph_breaks(fresh_dynamo) -> None:
    student, teacher = _nets()
    x, y = _batch()
    prior = ClassPrior(C, temperature=4.0).double()
    prior.update(teacher(x), y)
    prior.step()  # non-uniform class-wise weights (Eqs. 8-9)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        with torch.no_grad():
            target = teacher(x)
        return F.cross_entropy(logits, y) + gkl_loss(
            logits, target, weights=prior(y), alpha=2.0, beta=1.0, gamma=0.5, temperature=4.0
        )

    compiled_student = copy.deepcopy(student)
    eager = step(student, x, y)
    eager.backward()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(compiled_student, x, y)
    compiled.backward()
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(student.named_parameters(), compiled_student.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-10, atol=1e-12), name


def test_gkl_objective_step_compiles_and_feeds_its_prior(fresh_dynamo) -> None:
    """The objective's own forward (student, frozen teacher, prior update, GKL) as one graph."""
    student, teacher = _nets()
    x, y = _batch()
    settings = GKLSettings(class_wise=True, alpha=4.0, gamma=0.3, warmup_epochs=2)
    eager_obj = GKLObjective(teacher, settings, num_classes=C).double().train()
    compiled_obj = copy.deepcopy(eager_obj)
    compiled_student = copy.deepcopy(student)
    for epoch in (1, 2):  # epoch 2: the prior of epoch 1 weights the wMSE
        out = eager_obj(student, (x, y), epoch=epoch, step=epoch)
        sum(out.losses.values()).backward()
        eager_obj.on_epoch_end(epoch)
        step = torch.compile(compiled_obj, fullgraph=True, backend="aot_eager")
        got = step(compiled_student, (x, y), epoch=epoch, step=epoch)
        sum(got.losses.values()).backward()
        compiled_obj.on_epoch_end(epoch)
        for name in out.losses:
            assert torch.allclose(got.losses[name], out.losses[name], rtol=1e-12, atol=1e-12), (epoch, name)
    assert torch.allclose(compiled_obj.prior.prior, eager_obj.prior.prior, rtol=1e-12)
    for p, q in zip(student.parameters(), compiled_student.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-10, atol=1e-12)


def test_every_loss_and_a_class_wise_module_in_training_compile_as_one_graph(fresh_dynamo) -> None:
    """gkl_loss, ikl_loss, dkl_loss, kl_div and GKLLoss(class_wise=True) in training mode (prior
    update included) in one fullgraph, checks on: values, gradients and prior buffers equal eager."""
    g = torch.Generator().manual_seed(2)
    s0 = 3 * torch.randn(12, C, 2, generator=g, dtype=torch.float64)  # dense: 2 positions per example
    t0 = 3 * torch.randn(12, C, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (12, 2), generator=g)
    y[0, 1] = -100  # an ignored position
    module = GKLLoss(C, class_wise=True, alpha=3.0, gamma=0.5, temperature=2.0, weight_temperature=4.0).double()
    module.prior.update(t0.flip(0), y)
    module.prior.step()  # non-uniform class-wise weights
    compiled_module = copy.deepcopy(module)

    def losses(mod: nn.Module, s: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
        return torch.stack(
            [
                gkl_loss(s, t, gamma=gamma, temperature=2.0, targets=y),
                ikl_loss(s, t, alpha=20.0, beta=5.0, weight_temperature=4.0),
                dkl_loss(s, t, temperature=3.0),
                kl_div(s, t, temperature=4.0),
                mod(s, t, y),
            ]
        )

    runs = []
    for mod, fn in ((module, losses), (compiled_module, torch.compile(losses, fullgraph=True, backend="aot_eager"))):
        s, t = s0.clone().requires_grad_(), t0.clone().requires_grad_()
        fn(mod.eval(), s, t, 0.3)  # eval: no prior update; a second γ makes Dynamo trace γ as a symbolic float
        out = fn(mod.train(), s, t, 0.5)
        grads = [torch.autograd.grad(term, (s, t), retain_graph=True) for term in out]
        runs.append((out.detach(), grads, mod.prior.sums.clone(), mod.prior.counts.clone()))
    (out_e, grads_e, sums_e, counts_e), (out_c, grads_c, sums_c, counts_c) = runs
    torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
    for ge, gc in zip(grads_e, grads_c):
        for a, b in zip(ge, gc):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert counts_e.sum() == 23 and torch.equal(counts_c, counts_e)  # the prior was fed, ignored pixel skipped
    torch.testing.assert_close(sums_c, sums_e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_compiled_gkl_equals_eager_in_every_weight_mode_and_reduction(fresh_dynamo, reduction: str) -> None:
    """The compiled formulation (written for inductor's fusion, not the hand-written backward)
    against eager: sample-wise weights at τ_w = T, γ = 1 (the cross-entropy reuses the weights)
    and at τ_w ≠ T, class-wise weights at γ = 1 and 0.5 (W_i ≠ 1), normalize "weights" and
    "batch", dense inputs with an ignored position; values and gradients w.r.t. both inputs."""
    g = torch.Generator().manual_seed(3)
    s0 = 4 * torch.randn(6, C, 3, generator=g, dtype=torch.float64)
    t0 = 4 * torch.randn(6, C, 3, generator=g, dtype=torch.float64)
    prior = torch.softmax(torch.randn(C, C, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, C, (6, 3), generator=g)
    w = prior[y].movedim(-1, 1)
    y_ignored = y.clone()
    y_ignored[1, 2] = -100

    def losses(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kw = {"reduction": reduction}
        return torch.stack(
            [
                gkl_loss(s, t, temperature=3.0, weight_temperature=3.0, **kw),
                gkl_loss(s, t, alpha=2.0, beta=0.5, weight_temperature=4.0, **kw),
                gkl_loss(s, t, weights=w, **kw),
                gkl_loss(s, t, weights=w, gamma=0.5, temperature=2.0, normalize="batch", **kw),
                gkl_loss(s, t, weights=w, gamma=0.5, targets=y_ignored, **kw),
                gkl_loss(s, t, targets=y_ignored, **kw),
            ]
        )

    runs = []
    for fn in (losses, torch.compile(losses, fullgraph=True, backend="aot_eager")):
        s, t = s0.clone().requires_grad_(), t0.clone().requires_grad_()
        out = fn(s, t)
        grads = [torch.autograd.grad(term.sum(), (s, t), retain_graph=True) for term in out]
        runs.append((out.detach(), grads))
    (out_e, grads_e), (out_c, grads_c) = runs
    torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
    for ge, gc in zip(grads_e, grads_c):
        for a, b in zip(ge, gc):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
