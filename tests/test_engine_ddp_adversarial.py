"""Adversarial training (GKL-AT with AWP, class-wise prior and EMA) under DDP, end to end:
two gloo processes launched by torchrun build the run from the demo recipe exactly as
`gkl adv-train` does, train, and must end with identical weights, EMA and objective state on
every rank, equal to rank 0's checkpoint. Run as a script by torchrun (see ``job``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from helpers import assert_identical, free_port, tensor_leaves

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo_at" / "gkl.yaml"


def job(run_root: str, out: str) -> None:
    from gkl.config import load_config, to_dict
    from gkl.engine import Trainer
    from gkl.engine.seeding import seed_everything
    from gkl.runner import build_parts
    from gkl.utils.distributed import cleanup, init_distributed

    torch.set_num_threads(1)
    cfg = load_config(
        CONFIG,
        [
            f"out_dir={run_root}",
            "train.epochs=1",
            "train.progress=false",
            "train.log_every=0",
            "adversarial.awp_start_epoch=1",
            "data.batch_size=48",
        ],
    )
    dist = init_distributed("cpu")
    try:
        seed_everything(cfg.train.seed)
        parts = build_parts(cfg, dist)
        trainer = Trainer(
            model=parts.model,
            objective=parts.objective,
            train_loader=parts.train_loader,
            eval_loader=parts.eval_loader,
            settings=cfg.train,
            run_dir=cfg.run_dir,
            config=to_dict(cfg),
            dist=dist,
            evaluator=parts.evaluator,
        )
        summary = trainer.fit()
        torch.save(
            {
                "model": trainer.model.state_dict(),
                "ema": trainer.ema.state_dict(),
                "objective": trainer.objective.checkpoint_state(),
                "summary": summary,
            },
            f"{out}.rank{dist.rank}.pt",
        )
        del trainer
    finally:
        cleanup()


def test_gkl_at_under_ddp_ends_with_identical_weights_on_every_rank(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        __file__,
        str(tmp_path / "runs"),
        str(tmp_path / "out"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"out.rank{r}.pt", weights_only=True) for r in (0, 1)]
    checkpoint = torch.load(tmp_path / "runs" / "gkl" / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and checkpoint["epoch"] == 1
    for part in ("model", "ema", "objective"):
        assert tensor_leaves(ranks[0][part]), part
        assert_identical(ranks[0][part], ranks[1][part], part)
        assert all(torch.isfinite(t.double()).all() for t in tensor_leaves(ranks[0][part]) if t.is_floating_point())
        assert_identical(checkpoint[part], ranks[0][part], part)
    # the class-wise prior was really estimated (all-reduced over both ranks) and AWP ran from epoch 1
    prior = ranks[0]["objective"]["prior.prior"]  # the recipe sets class_wise: true
    assert not torch.allclose(prior, torch.full_like(prior, prior.mean()))
    train = ranks[0]["summary"]["train"]
    assert all(torch.isfinite(torch.tensor(v)) for v in train.values() if isinstance(v, float))
    assert ranks[0]["summary"]["final"]["eval"]["count"] == ranks[1]["summary"]["final"]["eval"]["count"]


if __name__ == "__main__":
    job(*sys.argv[1:3])
