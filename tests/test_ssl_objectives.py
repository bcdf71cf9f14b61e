"""FixMatch and Mean-Teacher objectives on hand-built batches."""

import pytest
import torch
from torch import nn

from gkl.objectives.ssl import FixMatchObjective, MeanTeacherObjective, confidence_mask
from gkl.settings.ssl import SSLSettings
from gkl.utils.errors import ConfigError


class Lookup(nn.Module):
    """Returns fixed logits per input 'id' (the input's first value), so the test controls every logit."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def test_fixmatch_mask_and_hard_pseudo_labels_on_a_hand_built_batch() -> None:
    # ids 0-1 labelled; weak views 2-4; strong views 5-7
    table = torch.tensor(
        [
            [2.0, 0.0, 0.0],
            [0.0, 2.0, 0.0],
            [9.0, 0.0, 0.0],  # confident class 0 -> kept
            [0.5, 0.4, 0.0],  # not confident -> masked out
            [0.0, 0.0, 8.0],  # confident class 2 -> kept
            [0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 3.0, 0.0],
        ]
    )
    model = Lookup(table)
    obj = FixMatchObjective(SSLSettings(algorithm="fixmatch", consistency="hard_ce", p_cutoff=0.95))
    batch = {
        "x_lb": torch.tensor([[0.0], [1.0]]),
        "y_lb": torch.tensor([0, 1]),
        "x_ulb_w": torch.tensor([[2.0], [3.0], [4.0]]),
        "x_ulb_s": torch.tensor([[5.0], [6.0], [7.0]]),
        "y_ulb": torch.tensor([0, 1, 1]),
    }
    out = obj(model, batch, epoch=1, step=1)
    assert torch.equal(confidence_mask(table[2:5], 0.95), torch.tensor([1.0, 0.0, 1.0]))
    ce = nn.functional.cross_entropy
    expected_unsup = (ce(table[5:6], torch.tensor([0])) + ce(table[7:8], torch.tensor([2]))) / 3
    assert torch.allclose(out.losses["unsup"], expected_unsup)
    assert torch.allclose(out.losses["sup_ce"], ce(table[:2], torch.tensor([0, 1])))
    assert out.metrics["mask_ratio"] == pytest.approx(2 / 3)
    assert out.metrics["pseudo_acc"] == pytest.approx(1 / 3)  # argmax weak = [0, 0, 2] vs [0, 1, 1]
    assert out.batch_size == 2 and torch.equal(out.targets, batch["y_lb"])


def _gkl_consistency_by_example_loop(
    strong: torch.Tensor,
    weak: torch.Tensor,
    mask: list[float],
    *,
    temperature: float,
    alpha: float,
    beta: float,
    gamma: float,
    weight_temperature: float,
) -> torch.Tensor:
    """docs/ssl.md + docs/losses.md written out example by example and class pair by class pair:
    v_i = alpha * mse_i * B / D + beta * ce_i with mse_i = 1/4 sum_jk phi_i^jk (dm_jk - dn_jk)^2,
    phi_i^jk = (w_i^j w_i^k)^gamma, w_i = softmax(weak_i / tau_w) detached, D = sum_i (sum_j (w_i^j)^gamma)^2,
    ce_i = -sum_j softmax(weak_i / T)^j (detached) log softmax(strong_i / T)^j; the loss is
    sum_i mask_i v_i / B over all B unlabelled examples (masked ones count as zeros)."""
    b, c = strong.shape
    w = [torch.softmax(weak[i].detach() / weight_temperature, dim=0) for i in range(b)]
    d = sum(sum(w[i][j] ** gamma for j in range(c)) ** 2 for i in range(b))
    total = strong.new_zeros(())
    for i in range(b):
        mse = strong.new_zeros(())
        for j in range(c):
            for k in range(c):
                phi = (w[i][j] * w[i][k]) ** gamma
                mse = mse + phi * ((weak[i, j] - weak[i, k]) - (strong[i, j] - strong[i, k])) ** 2
        mse = mse / 4
        target = torch.softmax(weak[i].detach() / temperature, dim=0)
        ce = -(target * torch.log_softmax(strong[i] / temperature, dim=0)).sum()
        total = total + mask[i] * (alpha * mse * b / d + beta * ce)
    return total / b


def test_fixmatch_soft_gkl_equals_a_per_example_loop_in_value_and_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(8, 4, generator=g, dtype=torch.float64) * 4
    knobs = dict(temperature=0.5, alpha=0.1, beta=1.0, gamma=0.5, weight_temperature=2.0)
    obj = FixMatchObjective(SSLSettings(consistency="gkl", p_cutoff=0.9, normalize="weights", **knobs))
    batch = {
        "x_lb": torch.tensor([[0.0], [1.0]]),
        "y_lb": torch.tensor([0, 1]),
        "x_ulb_w": torch.tensor([[2.0], [3.0], [4.0]]),
        "x_ulb_s": torch.tensor([[5.0], [6.0], [7.0]]),
    }
    model = Lookup(table)
    out = obj(model, batch, epoch=1, step=1)
    # FixMatch's mask: max softmax(weak) >= p_cutoff, by hand
    mask = [float(torch.softmax(table[i], dim=0).max() >= 0.9) for i in (2, 3, 4)]
    assert 0.0 in mask and 1.0 in mask, "the test needs a masked and a kept example"
    reference_table = table.clone().requires_grad_()
    expected = _gkl_consistency_by_example_loop(reference_table[5:8], reference_table[2:5], mask, **knobs)
    # the objective computes the consistency term in float32 (logits upcast to float32, for AMP):
    # compared with the float64 loop at float32 precision
    assert out.losses["unsup"].dtype == torch.float32
    torch.testing.assert_close(out.losses["unsup"].double(), expected, rtol=2e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(out.losses["unsup"], model.table)
    (expected_grad,) = torch.autograd.grad(expected, reference_table)
    assert expected_grad[2:5].abs().sum() > 0  # the wMSE sends gradient into the weak view (detach_weak false)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_mean_teacher_ramp_and_ema_update() -> None:
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    settings = SSLSettings(
        algorithm="meanteacher", consistency="softmax_mse", lambda_u=50.0, unsup_warmup=0.4, ema_decay=0.9
    )
    obj = MeanTeacherObjective(settings, student, total_steps=100)
    assert obj.ramp(1) == pytest.approx(1 / 40) and obj.ramp(20) == pytest.approx(0.5) and obj.ramp(41) == 1.0
    assert not any(p.requires_grad for p in obj.teacher.parameters())
    before = [p.detach().clone() for p in obj.teacher.parameters()]
    g = torch.Generator().manual_seed(0)
    batch = {
        "x_lb": torch.randn(4, 3, generator=g),
        "y_lb": torch.tensor([0, 1, 2, 3]),
        "x_ulb_w": torch.randn(6, 3, generator=g),
        "x_ulb_s": torch.randn(6, 3, generator=g),
    }
    out = obj(student, batch, epoch=1, step=10)
    with torch.no_grad():
        t = obj.teacher(batch["x_ulb_w"])
    # softmax_mse (docs/ssl.md): mean over classes of (softmax(strong) - softmax(weak / T))^2, T = 1,
    # averaged over the unlabelled examples; times lambda_u and the ramp
    squared = (torch.softmax(student(batch["x_ulb_s"]), dim=1) - torch.softmax(t, dim=1)) ** 2
    expected = 50.0 * obj.ramp(10) * squared.mean(dim=1).mean()
    assert torch.allclose(out.losses["unsup"], expected, atol=1e-6)
    sum(out.losses.values()).backward()
    with torch.no_grad():
        for p in student.parameters():
            p.sub_(0.5 * p.grad)
    obj.after_optimizer_step()
    for b, t_param, s_param in zip(before, obj.teacher.parameters(), student.parameters()):
        assert torch.allclose(t_param, 0.9 * b + 0.1 * s_param)
    for t_buf, s_buf in zip(obj.teacher.buffers(), student.buffers()):
        assert torch.equal(t_buf, s_buf)  # buffers copied, not averaged
    assert any(k.startswith("teacher.") for k in obj.checkpoint_state())


def test_settings_refuse_keys_their_method_does_not_use() -> None:
    with pytest.raises(ConfigError, match=r"^ssl.alpha: not a setting of ssl.consistency 'hard_ce' \(its settings: "):
        SSLSettings(consistency="hard_ce", alpha=1.0)
    with pytest.raises(ConfigError, match=r"^ssl.ema_decay: not a setting of ssl.algorithm 'fixmatch'"):
        SSLSettings(algorithm="fixmatch", ema_decay=0.999)
    with pytest.raises(ConfigError, match=r"^ssl.gamma: not a setting of ssl.consistency 'ikl'"):
        SSLSettings(consistency="ikl", gamma=0.5)
    with pytest.raises(ConfigError, match=r"^ssl.p_cutoff: expected a value > 0.0, got 0.0$"):
        SSLSettings(p_cutoff=0.0)
    with pytest.raises(ConfigError, match=r"^ssl.consistency: 'mse' is now called 'softmax_mse'$"):
        SSLSettings(algorithm="meanteacher", consistency="mse")
    with pytest.raises(
        ConfigError,
        match=r"^ssl.consistency: expected one of \['hard_ce', .*\] or the name of a "
        r"registered logit loss, got 'l-2'$",
    ):
        SSLSettings(consistency="l-2")
    # an identifier is a registered loss's name, checked against the registry when the objective is built
    with pytest.raises(ConfigError, match=r"^ssl.consistency: expected a registered logit loss \(kl, .*\), got 'l2'$"):
        FixMatchObjective(SSLSettings(consistency="l2"))
    with pytest.raises(
        ConfigError, match=r"^ssl.loss_params: expected parameters of loss 'jsd' \(beta\), got \['alpha'\]$"
    ):
        FixMatchObjective(SSLSettings(consistency="jsd", loss_params={"alpha": 1.0}))


def test_mean_teacher_checkpoint_state_holds_the_teacher_only() -> None:
    student = nn.Sequential(nn.Linear(3, 4))
    obj = MeanTeacherObjective(SSLSettings(algorithm="meanteacher", consistency="softmax_mse"), student, total_steps=10)
    batch = {
        "x_lb": torch.randn(2, 3),
        "y_lb": torch.tensor([0, 1]),
        "x_ulb_w": torch.randn(3, 3),
        "x_ulb_s": torch.randn(3, 3),
    }
    obj(student, batch, epoch=1, step=1)
    assert sorted(obj.checkpoint_state()) == ["teacher.0.bias", "teacher.0.weight"]
