"""The engine against a plain training loop written here: CE, KD, GKL and GKL-AT for 2 epochs.

Same model initialisation, data order, SGD settings, per-epoch learning rates, objective calls
and random seeds; the final weights must agree to float tolerance (never a checksum recorded on
one machine). A regression test of the engine's orchestration after the issue-8 refactor.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from gkl.engine import Trainer
from gkl.engine.seeding import epoch_seed, seed_everything
from gkl.objectives.adversarial import build_adversarial_objective
from gkl.objectives.distill import build_distill_objective
from gkl.objectives.supervised import SupervisedObjective
from gkl.settings.adversarial import adversarial_settings
from gkl.settings.distill import distill_settings
from gkl.settings.train import TrainSettings
from test_engine_support import digits_loader

EPOCHS, LR, BATCH, SEED = 2, 0.05, 64, 5


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _objective(method: str) -> nn.Module:
    if method == "ce":
        return SupervisedObjective()
    if method == "gkl_at":
        settings = adversarial_settings("gkl", eps=0.1, awp_start_epoch=2, weight_temperature=4.0)
        return build_adversarial_objective(settings, num_classes=10, epochs=EPOCHS)
    teacher = _net(99).eval()
    settings = (
        distill_settings("kd", temperature=4.0, warmup_epochs=0)
        if method == "kd"
        else distill_settings("gkl", class_wise=True, warmup_epochs=1)
    )
    return build_distill_objective(teacher, settings, num_classes=10)


def _lr(epoch: int) -> float:  # the cosine schedule per epoch: lr * (1 + cos(pi (e - 1) / E)) / 2
    return LR * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / EPOCHS))


def _loader():
    """The first 640 bundled digits in [0, 1] (10 full batches per epoch) through the package's loader."""
    return digits_loader(BATCH, train_split=True, shuffle=True, seed=SEED, indices=torch.arange(640), normalize=False)


def _reference(method: str) -> nn.Module:
    model, objective = _net(SEED), _objective(method)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    loader = _loader()
    step = 0
    for epoch in range(1, EPOCHS + 1):
        seed_everything(epoch_seed(SEED, epoch, 0))
        for group in optimizer.param_groups:
            group["lr"] = _lr(epoch)
        loader.set_epoch(epoch)
        objective.train()
        model.train()
        for batch in loader:
            step += 1
            out = objective(model, batch, epoch=epoch, step=step)
            loss = sum(out.losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            objective.after_optimizer_step()
        objective.on_epoch_end(epoch)
    return model


@pytest.mark.parametrize("method", ["ce", "kd", "gkl", "gkl_at"])
def test_engine_equals_a_plain_loop(tmp_path, method: str) -> None:
    expected = _reference(method)
    settings = TrainSettings(
        epochs=EPOCHS,
        optim={"lr": LR, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "cosine"},
        seed=SEED,
        progress=False,
        log_every=0,
        device="cpu",
    )
    trainer = Trainer(
        model=_net(SEED),
        objective=_objective(method),
        train_loader=_loader(),
        eval_loader=None,
        settings=settings,
        run_dir=tmp_path / method,
        evaluator=None,
    )
    trainer.fit()
    got = copy.deepcopy(trainer.model).state_dict()
    for key, value in expected.state_dict().items():
        assert torch.allclose(got[key], value, rtol=1e-5, atol=1e-6), (method, key)
