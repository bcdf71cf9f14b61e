"""torch.compile(fullgraph=True) over a GKL distillation step equals eager (issue 8, item 6).

The loss family has no graph break on the training path once its per-call value checks
are off (``set_value_checks(False)``, as the engine runs them: it checks the loss once per
step). The ``aot_eager`` backend traces the whole step with Dynamo (``fullgraph=True``
fails on any graph break) and its backward with AOTAutograd, without a C++ compiler,
so the test stays fast; inductor compiles the same graph.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior, gkl_loss, set_value_checks
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
def value_checks_off():
    previous = set_value_checks(False)
    torch._dynamo.reset()
    yield
    set_value_checks(previous)
    torch._dynamo.reset()


def test_gkl_step_with_class_wise_weights_compiles_without_graph_breaks(value_checks_off) -> None:
    student, teacher = _nets()
    x, y = _batch()
    prior = ClassPrior(C, temperature=4.0).double()
    prior.update(teacher(x), y)
    prior.step()  # non-uniform class-wise weights (Eqs. 8-9)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        with torch.no_grad():
            target = teacher(x)
        return F.cross_entropy(logits, y) + gkl_loss(logits, target, weights=prior(y), alpha=2.0, beta=1.0,
                                                     gamma=0.5, temperature=4.0)

    compiled_student = copy.deepcopy(student)
    eager = step(student, x, y)
    eager.backward()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(compiled_student, x, y)
    compiled.backward()
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(student.named_parameters(), compiled_student.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-10, atol=1e-12), name


def test_gkl_objective_step_compiles_and_feeds_its_prior(value_checks_off) -> None:
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


def test_value_checks_are_what_breaks_the_graph() -> None:
    """With the per-call checks on, a check reads tensor contents on the host: no full graph."""
    assert set_value_checks(True) is not None
    torch._dynamo.reset()
    student, teacher = _nets()
    x, _ = _batch()

    def loss(x: torch.Tensor) -> torch.Tensor:
        return gkl_loss(student(x), teacher(x))

    with pytest.raises(Exception, match="data-dependent|graph break|Unsupported"):
        torch.compile(loss, fullgraph=True, backend="aot_eager")(x)
    torch._dynamo.reset()
