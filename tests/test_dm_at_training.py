"""The pieces of DM-AT's training (wzekai99/DM-Improves-AT) that the generated-data AT recipes use.

- ``train.schedule.kind: one_cycle``: torch's OneCycleLR stepped per epoch (DM-AT's ``cosinew``), with
  the momentum cycled; values checked against the closed form written here and against torch's class;
- ``adversarial.label_smoothing``: the CE term equals ``F.cross_entropy(label_smoothing=ε)`` and DM-AT's
  ``SmoothCrossEntropyLoss`` formula, with the matching gradient in float64;
- ``train.ema`` warm-up / dynamic decay / copied buffers: DM-AT's ``ema_update`` + ``update_bn``;
- ``data.generated_epoch: real_count``: DM-AT's epoch of ceil(real / batch) mixed batches.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.engine.ema import ModelEMA
from gkl.engine.schedules import LRSchedule, learning_rate_at, learning_rate_at_step
from gkl.settings.adversarial import adversarial_settings
from gkl.settings.optim import ScheduleSettings
from gkl.settings.train import EMASettings, TrainSettings
from gkl.utils.errors import ConfigError, InputError

# ----------------------------------------------------------------------------- one_cycle


def _cos(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def _one_cycle(u: int, total: int, lr: float, pct: float, div: float, final: float) -> tuple[float, float]:
    """(lr, momentum) at 0-based position u: the two-phase OneCycleLR, momentum (0.85, 0.95)."""
    peak = pct * total - 1
    if u <= peak:
        return _cos(lr / div, lr, u / peak), _cos(0.95, 0.85, u / peak)
    f = (u - peak) / (total - 1 - peak)
    return _cos(lr, lr / div / final, f), _cos(0.85, 0.95, f)


DM_AT = ScheduleSettings(kind="one_cycle", pct_start=0.025, momentum_range=[0.85, 0.95])


def _sgd(lr: float = 0.4) -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9, nesterov=True)


def test_one_cycle_per_epoch_equals_the_closed_form_at_chosen_epochs() -> None:
    """DM-AT's 400 epochs of 49 steps at lr 0.4: warm-up over 10 epochs (peak at epoch 10), then down."""
    schedule = LRSchedule(_sgd(), base_lr=0.4, steps_per_epoch=49, total_steps=400 * 49, settings=DM_AT)
    for epoch, lr, momentum in (
        (1, 0.4 / 25, 0.95),
        (10, 0.4, 0.85),
        (400, 0.4 / 25 / 1e4, 0.95),
    ):
        for step in ((epoch - 1) * 49 + 1, epoch * 49):  # constant within the epoch
            assert schedule.lr_at(step) == pytest.approx(lr, rel=1e-12)
            assert schedule.momentum_at(step) == pytest.approx(momentum, rel=1e-12)
    for epoch in (2, 5, 11, 150, 399):
        lr, momentum = _one_cycle(epoch - 1, 400, 0.4, 0.025, 25.0, 1e4)
        step = (epoch - 1) * 49 + 7
        assert schedule.lr_at(step) == pytest.approx(lr, rel=1e-12)
        assert schedule.momentum_at(step) == pytest.approx(momentum, rel=1e-12)
        assert learning_rate_at(epoch, base_lr=0.4, epochs=400, settings=DM_AT) == pytest.approx(lr, rel=1e-12)


def test_one_cycle_per_step_equals_the_closed_form() -> None:
    settings = ScheduleSettings(kind="one_cycle", unit="step", pct_start=0.3, div_factor=10.0, final_div_factor=100.0)
    for step in (1, 5, 30, 31, 64, 100):
        expected = _one_cycle(step - 1, 100, 0.1, 0.3, 10.0, 100.0)[0]
        assert learning_rate_at_step(step, base_lr=0.1, total_steps=100, settings=settings) == pytest.approx(
            expected, rel=1e-12
        )


def test_the_engine_schedule_sets_what_torch_one_cycle_sets_every_epoch() -> None:
    """DM-AT's WATrainer: OneCycleLR(max_lr=lr, pct_start=0.025, total_steps=epochs), stepped after each epoch."""
    reference = _sgd()
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.4, pct_start=0.025, total_steps=400)
    ours = _sgd()
    schedule = LRSchedule(ours, base_lr=0.4, steps_per_epoch=49, total_steps=400 * 49, settings=DM_AT)
    for epoch in range(1, 401):
        schedule.apply((epoch - 1) * 49 + 1 + epoch % 49)
        for key in ("lr", "momentum"):
            assert ours.param_groups[0][key] == pytest.approx(reference.param_groups[0][key], rel=1e-12, abs=1e-15)
        reference.step()
        torch_schedule.step()


def test_one_cycle_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train.schedule.pct_start: expected a value in \(0, 1\)"):
        ScheduleSettings(kind="one_cycle", pct_start=1.0)
    with pytest.raises(ConfigError, match="train.schedule.momentum_range: used by kind 'one_cycle' only"):
        ScheduleSettings(kind="cosine", momentum_range=[0.85, 0.95])
    with pytest.raises(ConfigError, match=r"train.schedule.momentum_range: expected \[base, max\]"):
        ScheduleSettings(kind="one_cycle", momentum_range=[0.95, 0.85])
    with pytest.raises(ConfigError, match="train.schedule.warmup_epochs: kind 'one_cycle' warms up by itself"):
        ScheduleSettings(kind="one_cycle", warmup_epochs=2)
    with pytest.raises(ConfigError, match="train.schedule.momentum_range: cycles SGD's momentum"):
        TrainSettings(optim={"name": "adamw"}, schedule={"kind": "one_cycle", "momentum_range": [0.85, 0.95]})
    with pytest.raises(InputError, match="schedule.pct_start: 0.025 of the run's 40 epochs"):
        LRSchedule(_sgd(), base_lr=0.4, steps_per_epoch=3, total_steps=120, settings=DM_AT)


# ----------------------------------------------------------------------------- label smoothing


def _dm_at_smooth_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """DM-AT's core/utils/utils.py SmoothCrossEntropyLoss: (1 − ε) NLL + ε mean over classes of −log p."""
    log_p = logits.log_softmax(dim=-1)
    nll = -log_p.gather(1, labels[:, None]).squeeze(1)
    return ((1 - eps) * nll + eps * (-log_p.mean(dim=-1))).mean()


@pytest.mark.parametrize("method", ["gkl", "trades", "pgd_at"])
def test_label_smoothing_of_the_ce_term(method: str) -> None:
    from gkl.objectives.adversarial import build_adversarial_objective

    torch.manual_seed(0)
    clean = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(6, 10, dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, 3, 5, 1])
    objective = build_adversarial_objective(
        adversarial_settings(method, label_smoothing=0.1), num_classes=10, epochs=4
    ).double()
    plain = build_adversarial_objective(adversarial_settings(method), num_classes=10, epochs=4).double()
    name, logits = ("adv_ce", adv) if method == "pgd_at" else ("ce", clean)
    smoothed = objective.at_losses(clean, adv, labels)[name]
    assert smoothed.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-12)
    assert smoothed.item() == pytest.approx(_dm_at_smooth_ce(logits, labels, 0.1).item(), rel=1e-12)
    assert torch.equal(plain.at_losses(clean, adv, labels)[name], F.cross_entropy(logits, labels))  # 0: unchanged
    if method != "pgd_at":  # d CE / d logits = (softmax − smoothed one-hot) / batch
        (grad,) = torch.autograd.grad(smoothed, clean)
        target = 0.9 * F.one_hot(labels, 10).double() + 0.1 / 10
        assert torch.allclose(grad, (clean.detach().softmax(1) - target) / 6, rtol=0, atol=1e-10)


def test_label_smoothing_outside_zero_one_is_a_config_error() -> None:
    for value in (1.0, -0.1):
        with pytest.raises(ConfigError, match="adversarial.label_smoothing"):
            adversarial_settings("gkl", label_smoothing=value)


# ----------------------------------------------------------------------------- weight averaging


def _dm_at_ema(wa: nn.Module, model: nn.Module, step: int, tau: float, warmup: float) -> None:
    """gowal21uncovering/utils/watrain.py ema_update(..., dynamic_decay=True), parameters only."""
    factor = int(step >= warmup)
    delta = step - warmup
    decay = min(tau, (1.0 + delta) / (10.0 + delta)) * factor
    for p_wa, p in zip(wa.parameters(), model.parameters()):
        p_wa.data.mul_(decay).add_(p.data * (1 - decay))


def test_ema_with_warm_up_and_dynamic_decay_equals_dm_at_weight_averaging() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    reference = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    reference.load_state_dict(model.state_dict())
    steps, warmup = 200, 0.025 * 4 * 50  # DM-AT: 0.025 × epochs × steps per epoch = 5
    ema = ModelEMA.from_settings(
        model, EMASettings(decay=0.995, every="step", warmup=0.025, dynamic_decay=True, buffers="copy"),
        steps=steps, epochs=4,
    )  # fmt: skip
    assert ema is not None and ema.warmup_updates == pytest.approx(warmup)
    for step in range(1, steps + 1):
        model.train()(torch.randn(8, 3, dtype=torch.float64))  # moves the BatchNorm statistics
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        ema.update(model)
        _dm_at_ema(reference, model, step, 0.995, warmup)
    for mine, theirs in zip(ema.module.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)
    for name, buffer in ema.module.named_buffers():  # update_bn: the model's statistics
        torch.testing.assert_close(buffer, dict(model.named_buffers())[name], rtol=0, atol=0)
    assert [ema.decay_at(k) for k in (1, 2, 3, 4)] == [0.0] * 4  # a copy of the weights
    assert ema.decay_at(5) == pytest.approx(0.1) and ema.decay_at(6) == pytest.approx(2 / 11)
    assert ema.decay_at(10_000) == 0.995


def test_ema_options_need_a_decay() -> None:
    with pytest.raises(ConfigError, match="train.ema.warmup: needs train.ema.decay"):
        EMASettings(warmup=0.1)
    with pytest.raises(ConfigError, match=r"train.ema.warmup: expected a fraction in \[0, 1\)"):
        EMASettings(decay=0.9, warmup=1.0)
    with pytest.raises(ConfigError, match="train.ema.buffers"):
        EMASettings(decay=0.9, buffers="mean")


# ----------------------------------------------------------------------------- DM-AT's epoch of mixed batches


def test_real_count_epoch_has_ceil_real_over_batch_batches_of_the_epoch_shuffle() -> None:
    from gkl.data.sharding import mixed_batch_count, mixed_batches

    real = torch.randperm(50)
    # DM-AT: batch 16, unsup_fraction 0.7 -> 11 generated + 5 real, ceil(50 / 16) = 4 batches per epoch
    batches = mixed_batches(
        real, 30, batch_size=16, generated_ratio=11 / 16, seed=0, epoch=1, rank=0, world_size=1,
        epoch_length="real_count",
    )  # fmt: skip
    assert len(batches) == 4 == mixed_batch_count(50, 16, 11 / 16, "real_count")
    assert torch.equal(torch.cat([r for r, _ in batches]), real[:20])
    assert all(len(g) == 11 for _, g in batches)
    assert mixed_batch_count(50, 16, 11 / 16, "real_pass") == 10  # every real example once
    assert mixed_batch_count(10, 8, 1 / 8, "real_count") == 1  # never a short real part: 10 // 7
    with pytest.raises(ConfigError, match="data.generated_epoch: 'real_count' .* needs data.generated_path"):
        from gkl.config import DataConfig

        DataConfig(generated_epoch="real_count")


# ----------------------------------------------------------------------------- the recipe through the engine


def test_generated_recipe_trains_with_dm_at_schedule_epochs_and_averaging(tmp_path) -> None:
    """The CIFAR-10 generated-data recipe, made small (WRN-16-4, 3 epochs, batch 10, 1 attack step,
    pct_start 0.5), on CIFAR-format data: 20 real images -> ceil(20 / 10) = 2 batches per epoch; the
    logged LR of each epoch and the last step's momentum follow one_cycle at lr 0.4 · 10 / 1024."""
    import json
    from pathlib import Path

    import numpy as np

    from gkl.cli import main
    from test_data_cifar import write_cifar10

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(36, 32, 32, 3), dtype=np.uint8)
    write_cifar10(str(tmp_path / "cifar"), images[:20], rng.integers(0, 10, 20), images[20:26], np.arange(6))
    np.savez(tmp_path / "generated.npz", image=images[26:], label=np.arange(10))
    recipe = Path(__file__).resolve().parents[1] / "configs" / "cifar10_at" / "gkl_wrn28_10_generated.yaml"
    args = [
        "adv-train",
        str(recipe),
        f"data.root={tmp_path / 'cifar'}",
        f"data.generated_path={tmp_path / 'generated.npz'}",
    ]
    args += [f"out_dir={tmp_path / 'runs'}", "train.epochs=3", "data.batch_size=10", "data.eval_batch_size=6"]
    args += ["data.num_workers=0", "train.progress=false", "model.name=wrn16_4_robust", "adversarial.attack_steps=1"]
    args += ["train.schedule.pct_start=0.5", "train.device=cpu"]
    assert main(args) == 0
    run_dir = tmp_path / "runs" / "gkl_wrn28_10_generated"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    base = 0.4 * 10 / 1024
    assert [r["step"] for r in records] == [2, 4, 6]  # two mixed batches per epoch
    for record in records:
        assert record["lr"] == pytest.approx(_one_cycle(record["epoch"] - 1, 3, base, 0.5, 25.0, 1e4)[0], rel=1e-12)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    momenta = [group["momentum"] for group in state["optimizer"]["param_groups"]]  # two groups: no decay on BN
    assert len(momenta) == 2 and momenta == pytest.approx([_one_cycle(2, 3, base, 0.5, 25.0, 1e4)[1]] * 2, rel=1e-12)
    assert momenta == pytest.approx([0.95, 0.95])  # the last epoch: back at max
    assert state["ema"]["updates"] == 6
