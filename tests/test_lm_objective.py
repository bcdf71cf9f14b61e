"""The lm_distill objective: the fused path equals the materialised one (value and gradients)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")  # the llm extra (pip install "gkl[llm]")

from gkl.lm.models import build_causal_lm  # noqa: E402
from gkl.objectives.token_distill import TokenDistillObjective  # noqa: E402
from gkl.settings.lm import LMSettings  # noqa: E402
from gkl.utils.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("method,params", [("gkl", {"gamma": 0.5, "alpha": 2.0}), ("reverse_kl", {})])
def test_fused_and_materialised_steps_agree(method, params):
    torch.manual_seed(0)
    teacher = build_causal_lm("gpt2", 30, 8, n_layer=1, n_embd=12, n_head=2).double()
    student = build_causal_lm(
        "llama",
        30,
        8,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    ).double()
    ids = torch.randint(0, 30, (3, 8))
    results = []
    for fused in (True, False):
        settings = LMSettings(
            method=method,
            hard_weight=0.5,
            soft_weight=2.0,
            temperature=1.5,
            fused=fused,
            chunk_size=5,
            vocab_size=300,
            loss_params=params,
        )
        out = TokenDistillObjective(teacher, settings)(student, ids, epoch=1, step=1)
        total = out.total()
        results.append((total, torch.autograd.grad(total, list(student.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_the_fused_path_runs_the_student_through_the_compiled_module():
    """torch.compile (and DDP's gradient sync) act only when their forward runs: the fused path takes
    the hidden states from the module the engine passes (its logits kept for one position), not from the
    unwrapped body, so a compiled student compiles a frame; the step equals the one on the plain student."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    teacher = build_causal_lm("gpt2", 30, 8, n_layer=1, n_embd=12, n_head=2).double()
    student = build_causal_lm("gpt2", 30, 8, n_layer=1, n_embd=8, n_head=2).double()
    ids = torch.randint(0, 30, (3, 8))
    settings = LMSettings(method="gkl", hard_weight=0.5, fused=True, chunk_size=5, vocab_size=300)
    objective = TokenDistillObjective(teacher, settings)
    frames = counters["frames"]["ok"]
    through = objective(torch.compile(student, backend="eager"), ids, epoch=1, step=1).total()
    assert counters["frames"]["ok"] > frames
    plain = objective(student, ids, epoch=1, step=1).total()
    torch.testing.assert_close(through, plain, rtol=1e-12, atol=0.0)


def test_settings_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^lm.method: expected one of \['ce', 'kl'"):
        LMSettings(method="kd")
    with pytest.raises(ConfigError, match=r"^lm.loss_params: expected none for method 'ce'"):
        LMSettings(method="ce", loss_params={"gamma": 1.0})
    with pytest.raises(ConfigError, match=r"^lm.chunk_size: expected a value >= 1, got 0"):
        LMSettings(chunk_size=0)
