"""Engine building blocks: distributed env parsing, EMA arithmetic, seeding and RNG state round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gkl.engine import epoch_seed, init_distributed
from gkl.engine.amp import resolve_amp
from gkl.engine.ema import ModelEMA
from gkl.engine.seeding import capture_rng_state, restore_rng_state
from test_engine_support import build_trainer, quick_settings


def test_init_distributed_single_process_and_bad_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert info.device == torch.device("cpu") and not info.distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        init_distributed("cpu")


def test_resolve_amp_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == "off"
    assert resolve_amp("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="amp"):
        resolve_amp("half", cpu)


def test_ema_update_formula_and_integer_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves BN statistics and num_batches_tracked
    ema.update(model)
    now = model.state_dict()
    for name, value in ema.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * start[name] + 0.1 * now[name])
        else:
            assert torch.equal(value, now[name])
    assert ema.updates == 1 and not any(p.requires_grad for p in ema.module.parameters())
    copy = ModelEMA(model, decay=0.5)
    copy.load_state_dict(ema.state_dict())
    assert copy.decay == 0.9 and all(
        torch.equal(a, b) for a, b in zip(copy.module.state_dict().values(), ema.module.state_dict().values())
    )


def test_epoch_seeds_differ_by_epoch_and_rank():
    seeds = {epoch_seed(0, e, r) for e in range(1, 50) for r in range(4)}
    assert len(seeds) == 49 * 4
    assert epoch_seed(7, 3, 1) == epoch_seed(7, 3, 1) != epoch_seed(8, 3, 1)


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(state)
    got = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_config_must_be_plain_yaml(tmp_path):
    with pytest.raises(ValueError, match="config"):
        build_trainer(tmp_path, quick_settings(epochs=1), config={"root": Path("/data")})


def test_bf16_autocast_run_trains_without_scaler(tmp_path):
    trainer = build_trainer(
        tmp_path,
        quick_settings(epochs=2, amp="bf16", clip_grad_norm=1.0, schedule={"kind": "cosine_at"}),
        model_name="digits_mlp_small",
    )
    summary = trainer.fit()
    from gkl.engine import read_checkpoint

    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["scaler"] is None and trainer.amp.dtype == torch.bfloat16
    # thresholds: margins measured over seeds and 1/2 threads (tests/helpers_margins.py)
    assert summary["train"]["loss"] < 1.5 and summary["last_top1"] > 65.0
