"""FixMatch and Mean-Teacher under 2-process gloo DDP equal one process on the same global batch:
the same per-example masks, the same weights after the step, the same EMA teacher."""

from __future__ import annotations

import torch
from torch import nn

from gkl.objectives.ssl import FixMatchObjective, MeanTeacherObjective, confidence_mask
from gkl.settings.ssl import SSLSettings
from helpers import spawn_gloo

B, U = 4, 8  # global labelled and unlabelled examples per step
P_CUTOFF = 0.3


def _model() -> nn.Module:
    torch.manual_seed(0)  # no BatchNorm: a rank's forward does not depend on the other rank's examples
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 5)).double()


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "x_lb": torch.randn(B, 6, generator=g, dtype=torch.float64) * 3,
        "y_lb": torch.randint(0, 5, (B,), generator=g),
        "x_ulb_w": torch.randn(U, 6, generator=g, dtype=torch.float64) * 3,
        "x_ulb_s": torch.randn(U, 6, generator=g, dtype=torch.float64) * 3,
    }


def _objective(algorithm: str, model: nn.Module) -> nn.Module:
    if algorithm == "fixmatch":
        return FixMatchObjective(SSLSettings(consistency="ikl", p_cutoff=P_CUTOFF, alpha=0.1, beta=1.0))
    settings = SSLSettings(
        algorithm="meanteacher",
        consistency="ikl",
        p_cutoff=P_CUTOFF,
        alpha=0.03,
        beta=0.02,
        lambda_u=1.0,
        unsup_warmup=0.0,
        ema_decay=0.9,
    )
    return MeanTeacherObjective(settings, model, total_steps=10)


def _step(model: nn.Module, train_model: nn.Module, objective: nn.Module, batch: dict) -> torch.Tensor:
    """One step; returns the step's mask (no dropout or BatchNorm, so the weak logits the objective
    uses are those of the pseudo-labelling model before the step)."""
    with torch.no_grad():
        weak = (objective.teacher if isinstance(objective, MeanTeacherObjective) else model)(batch["x_ulb_w"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    out = objective(train_model, batch, epoch=1, step=1)
    assert abs(out.metrics["mask_ratio"] - float(confidence_mask(weak, P_CUTOFF).mean())) < 1e-12
    sum(out.losses.values()).backward()
    optimizer.step()
    objective.after_optimizer_step()
    return confidence_mask(weak, P_CUTOFF)


def _result(model: nn.Module, objective: nn.Module, mask: torch.Tensor) -> dict:
    state = {"mask": mask, **{f"model.{k}": v for k, v in model.state_dict().items()}}
    if isinstance(objective, MeanTeacherObjective):
        state.update({f"teacher.{k}": v for k, v in objective.teacher.state_dict().items()})
    return state


def _worker(rank: int, world_size: int, algorithm: str, out_file: str) -> None:
    model = _model()
    objective = _objective(algorithm, model)
    ddp = nn.parallel.DistributedDataParallel(model)
    full = _batch()
    b, u = B // world_size, U // world_size
    mine = {
        k: v[rank * (b if k in ("x_lb", "y_lb") else u) : (rank + 1) * (b if k in ("x_lb", "y_lb") else u)]
        for k, v in full.items()
    }
    mask = _step(model, ddp, objective, mine)
    gathered = [torch.zeros_like(mask) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, mask)
    torch.save(_result(model, objective, torch.cat(gathered)), f"{out_file}.{rank}")


def test_ddp_masks_weights_and_teacher_equal_one_process(tmp_path) -> None:
    for algorithm in ("fixmatch", "meanteacher"):
        model = _model()
        objective = _objective(algorithm, model)
        single = _result(model, objective, _step(model, model, objective, _batch()))
        out_file = str(tmp_path / algorithm)
        spawn_gloo(_worker, algorithm, out_file, world_size=2)
        for rank in range(2):
            ranked = torch.load(f"{out_file}.{rank}", weights_only=True)
            assert ranked.keys() == single.keys()
            assert torch.equal(ranked["mask"], single["mask"]), algorithm
            assert 0 < single["mask"].sum() < U  # the threshold keeps some examples and drops others
            for key in single:
                torch.testing.assert_close(ranked[key], single[key], rtol=1e-10, atol=1e-12, msg=key)
