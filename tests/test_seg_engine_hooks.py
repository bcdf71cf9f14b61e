"""The engine hooks a segmentation run uses: per-parameter LR multipliers (heads x10) and an
objective's own trainable parameters (APD's adapter) as optimizer groups the LR schedule scales."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gkl.engine.optim import build_optimizer
from gkl.engine.schedules import LRSchedule
from gkl.models import create_model
from gkl.settings.optim import OptimSettings
from gkl.settings.train import ScheduleSettings
from gkl.tasks.segmentation import head_lr_scales


def _lr_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def test_lr_scales_and_extra_groups_follow_the_schedule() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    adapter = nn.Conv2d(2, 2, 1)
    settings = OptimSettings(lr=0.1, weight_decay=1e-4, no_decay_norm_bias=True)
    optimizer = build_optimizer(
        model,
        settings,
        base_lr=0.1,
        lr_scales={"1.weight": 10.0, "1.bias": 10.0},
        extra_groups=[{"params": list(adapter.parameters()), "lr_scale": 5.0}],
    )
    lr = _lr_of(optimizer)
    assert lr[id(model[0].weight)] == pytest.approx(0.1) and lr[id(model[1].weight)] == pytest.approx(1.0)
    assert lr[id(adapter.weight)] == pytest.approx(0.5) and lr[id(adapter.bias)] == pytest.approx(0.5)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(adapter.weight)] == 1e-4 and decay[id(adapter.bias)] == 0.0  # no decay on biases
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 6
    schedule = LRSchedule(
        optimizer,
        base_lr=0.1,
        steps_per_epoch=10,
        total_steps=10,
        settings=ScheduleSettings(kind="poly", power=0.9, unit="step"),
    )
    value = schedule.apply(5)
    lr = _lr_of(optimizer)
    assert lr[id(model[1].bias)] == pytest.approx(10 * value) and lr[id(adapter.weight)] == pytest.approx(5 * value)
    with pytest.raises(ValueError, match="lr_scales"):
        build_optimizer(model, settings, base_lr=0.1, lr_scales={"2.weight": 10.0})


def test_segmentation_heads_get_the_head_multiplier() -> None:
    model = create_model("pspnet_tiny", 5)
    scales = head_lr_scales(model, 10.0)
    names = {n for n, _ in model.named_parameters()}
    assert scales and set(scales) < names and set(scales.values()) == {10.0}
    assert not any(n.startswith(("layer0.", "layer1.", "layer2.", "layer3.", "layer4.")) for n in scales)
    assert all(n.startswith(("layer",)) for n in names - set(scales))  # everything else is the backbone
    assert head_lr_scales(model, 1.0) == {}
