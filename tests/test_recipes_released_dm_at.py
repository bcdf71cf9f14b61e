"""The generated-data GKL-AT recipes follow DM-AT (wzekai99/DM-Improves-AT), as the GKL paper says its
generated-data runs do: compared key by key with a copy of DM-AT's released settings written here as data
(no network at test time). docs/recipes.md says which released file each value comes from.

The GKL loss weights are not DM-AT's: they are in the names of the authors' released evaluation logs
(jiequancui/DKL ``DKLv1/Adv-training-dkl/auto_attacks/logs/*_20m.log`` / ``*_50m.log``), their ``a`` the
soft-label CE weight (our ``beta``), their ``b`` the wMSE weight (our ``alpha``), ``T`` our τ_w.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from gkl.config import load_config
from gkl.data.sharding import generated_counts, mixed_batch_count
from gkl.engine.schedules import LRSchedule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: DM-AT's released settings: core/utils/parser.py parser_train() defaults, train-wa.py's --tau, and the
#: README's training command (--beta 5.0 --unsup-fraction 0.7 --ls 0.1); the constants in its code below.
DM_AT: dict[str, Any] = yaml.safe_load(
    """
args:  # core/utils/parser.py defaults (+ train-wa.py: --tau)
  batch_size: 1024
  num_adv_epochs: 400
  lr: 0.4
  weight_decay: 0.0005
  scheduler: cosinew
  nesterov: true
  clip_grad: null
  attack: linf-pgd
  attack_eps: 0.03137254901960784   # 8/255
  attack_step: 0.00784313725490196  # 2/255
  attack_iter: 10
  unsup_fraction: 0.7
  ls: 0.1
  model: wrn-28-10-swish
  tau: 0.995
readme: {beta: 5.0, unsup_fraction: 0.7, ls: 0.1}   # TRADES' KL weight: GKL replaces the KL it weights
code:
  sgd_momentum: 0.9               # gowal21uncovering/utils/watrain.py init_optimizer
  no_weight_decay: batchnorm      # watrain.py group_weight: parameters named 'batchnorm'
  cosinew: {pct_start: 0.025, per: epoch}   # core/utils/train.py init_scheduler: OneCycleLR(total_steps=epochs)
  one_cycle_defaults: {div_factor: 25.0, final_div_factor: 10000.0, base_momentum: 0.85, max_momentum: 0.95}
  ema: {warmup_fraction: 0.025, dynamic_decay: true, buffers: copied}   # watrain.py ema_update, update_bn
  real_examples: 50000            # cifar10s / cifar100s dataset_size: the batches of an epoch
  random_start: uniform           # gowal21uncovering/utils/trades.py: x + U(-eps, eps)
"""
)

#: jiequancui/DKL log names: (their a, their b, T)
GKL_LOGS = {
    "cifar10_at/gkl_wrn28_10_generated.yaml": (3.0, 10.0, 4.0),  # cifar10_dkl_a3_b10_T4_20m.log
    "cifar100_at/gkl_wrn28_10_generated.yaml": (5.0, 12.0, 4.0),  # cifar100_dkl_a5_b12_T4_50m.log
}


@pytest.mark.parametrize("recipe", sorted(GKL_LOGS))
def test_generated_data_recipe_equals_dm_at(recipe: str) -> None:
    cfg = load_config(CONFIGS / recipe)
    args, code = DM_AT["args"], DM_AT["code"]
    data, train, adv = cfg.data, cfg.train, cfg.adversarial
    # model, data and the mix of each batch
    assert (cfg.model.name, cfg.model.kwargs["activation"]) == ("wrn28_10", "swish")  # wrn-28-10-swish
    assert data.batch_size == args["batch_size"] and data.val_fraction == 0.0
    n_real, n_gen = generated_counts(data.batch_size, data.generated_ratio)
    assert n_gen == int(args["batch_size"] * args["unsup_fraction"]) == 716 and n_real == 308
    steps = mixed_batch_count(code["real_examples"], data.batch_size, data.generated_ratio, data.generated_epoch)
    assert steps == math.ceil(code["real_examples"] / args["batch_size"]) == 49
    # optimizer
    optim = train.optim
    assert (optim.name, optim.lr, optim.reference_batch_size) == ("sgd", args["lr"], args["batch_size"])
    assert (optim.momentum, optim.nesterov) == (code["sgd_momentum"], args["nesterov"])
    assert optim.weight_decay == args["weight_decay"] and optim.no_decay_norm_bias
    assert train.clip_grad_norm == args["clip_grad"] and train.epochs == args["num_adv_epochs"]
    # schedule: OneCycleLR stepped per epoch, lr and momentum of every epoch against torch's class
    schedule = train.schedule
    defaults = code["one_cycle_defaults"]
    assert (schedule.kind, schedule.unit, schedule.pct_start) == ("one_cycle", "epoch", code["cosinew"]["pct_start"])
    assert (schedule.div_factor, schedule.final_div_factor) == (defaults["div_factor"], defaults["final_div_factor"])
    assert schedule.momentum_range == (defaults["base_momentum"], defaults["max_momentum"])
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args["lr"], momentum=code["sgd_momentum"])
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(
        reference, max_lr=args["lr"], pct_start=code["cosinew"]["pct_start"], total_steps=args["num_adv_epochs"]
    )
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=optim.lr, momentum=optim.momentum)
    lr_schedule = LRSchedule(
        ours, base_lr=optim.lr, steps_per_epoch=steps, total_steps=train.epochs * steps, settings=schedule
    )
    for epoch in range(1, train.epochs + 1):
        lr_schedule.apply((epoch - 1) * steps + 1)
        for key in ("lr", "momentum"):
            assert ours.param_groups[0][key] == pytest.approx(reference.param_groups[0][key], rel=1e-12, abs=1e-15)
        reference.step()
        torch_schedule.step()
    # weight averaging after every step
    ema = train.ema
    assert (ema.decay, ema.every, ema.evaluate) == (args["tau"], "step", "ema")
    assert (ema.warmup, ema.dynamic_decay) == (code["ema"]["warmup_fraction"], code["ema"]["dynamic_decay"])
    assert ema.buffers == "copy"
    # the attack and the CE term
    assert (adv.norm, adv.eps, adv.attack_budget, adv.eps_schedule) == ("linf", args["attack_eps"], "fixed", "fixed")
    assert (adv.attack_steps, adv.attack_step_size) == (args["attack_iter"], args["attack_step"])
    assert adv.random_start == code["random_start"] and adv.label_smoothing == args["ls"] == DM_AT["readme"]["ls"]
    assert adv.awp_gamma == 0.0 and adv.autoaugment_weight == 0.0
    # GKL in place of TRADES' KL (weighted by DM-AT's beta 5.0): the weights of the authors' log name
    their_a, their_b, tau_w = GKL_LOGS[recipe]
    assert (adv.method, adv.beta, adv.alpha, adv.weight_temperature) == ("gkl", their_a, their_b, tau_w)
    assert adv.class_wise and adv.temperature == 1.0 and adv.gamma == 1.0
