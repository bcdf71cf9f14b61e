"""Gradient accumulation under DDP (2 gloo processes, no_sync on the inner micro-batch) equals one
process taking the same 64 examples per step in one batch (model without BatchNorm)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent


def train(run_dir: Path, *, batch_size: int, accumulate: int, dist=None) -> dict:
    sys.path.insert(0, str(TESTS))
    from gkl.engine import Trainer
    from test_engine_support import CountingObjective, digits_loaders, quick_settings

    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    loader, _ = digits_loaders(batch_size, seed=4, rank=rank, world_size=world)  # the package's in-memory loader
    torch.manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 24), torch.nn.Tanh(), torch.nn.Linear(24, 10))
    settings = quick_settings(
        epochs=1,
        accumulate_steps=accumulate,
        loggers=[],
        schedule={"kind": "constant"},
        optim={"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
    )
    trainer = Trainer(
        model=model,
        objective=CountingObjective(),
        train_loader=loader,
        eval_loader=None,
        evaluator=None,
        settings=settings,
        run_dir=run_dir,
        dist=dist,
    )
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def job(run_dir: str, out: str) -> None:
    from gkl.utils.distributed import cleanup, init_distributed

    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    try:
        # per step: 2 micro-batches x 16 examples x 2 ranks = 64 examples
        weights = train(Path(run_dir), batch_size=16, accumulate=2, dist=dist)
        torch.save(weights, f"{out}.rank{dist.rank}.pt")
    finally:
        cleanup()


def test_ddp_accumulation_equals_the_single_process_large_batch(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
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
        str(port),
        __file__,
        str(tmp_path / "ddp"),
        str(tmp_path / "out"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"out.rank{r}.pt", weights_only=True) for r in (0, 1)]
    # the same 64 examples per step: of the epoch's permutation p, rank r takes p[r::2] (DistributedSampler's
    # shards), so its micro-batches 2s and 2s + 1 and the other rank's together are p[64 s : 64 s + 64]
    one = train(tmp_path / "single", batch_size=64, accumulate=1)
    for key, value in one.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    job(*sys.argv[1:3])
