"""Shared pieces of the engine tests: real digits data, small objectives and a run script.

Run as a script (by the resume and DDP tests) through :func:`main`; pytest finds no tests here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gkl.engine import Trainer, TrainSettings
from gkl.metrics.classification import ClassificationEvaluator
from gkl.objectives.base import Objective, StepOutput
from helpers import TESTS_DIR, assert_identical  # noqa: F401  (assert_identical: re-exported for the tests)


def digits_tensors(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits (1797 images), standardised; a fixed 1400/397 train/test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = (images - 0.3) / 0.4
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    index = order[:1400] if train else order[1400:]
    return images[index], labels[index]


class ShardedTensorLoader:
    """In-memory loader over a fixed tensor pair.

    Train mode: each epoch shuffles with a generator seeded by (seed, epoch), cuts global
    batches of ``batch_size * world_size`` (last partial batch dropped) and gives rank ``r``
    the ``r``-th contiguous slice of every global batch. Eval mode: every rank sees all
    batches in order (the engine's evaluation shards batches itself).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.train = batch_size, train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        if self.train:
            return n // (self.batch_size * self.world_size)
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n = len(self.labels)
        if not self.train:
            for start in range(0, n, self.batch_size):
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            return
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(n, generator=generator)
        global_batch = self.batch_size * self.world_size
        for b in range(len(self)):
            chunk = order[b * global_batch : (b + 1) * global_batch]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            yield self.images[mine], self.labels[mine]


class CountingObjective(Objective):
    """Cross-entropy plus a checkpointed buffer (examples seen per class), with test hooks.

    kill_at=(epoch, step): the process SIGKILLs itself at that step (before the update).
    nan_at=(epoch, step): adds a NaN term named 'bad' at that step.
    At the first step of ``snapshot_epoch`` the current checkpoint file's bytes are kept.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        kill_at: tuple[int, int] | None = None,
        nan_at: tuple[int, int] | None = None,
        snapshot: tuple[Path, int] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("epochs_ended", torch.zeros((), dtype=torch.long))
        self.kill_at, self.nan_at, self.snapshot = kill_at, nan_at, snapshot
        self.snapshot_bytes: bytes | None = None
        self._epoch, self._step = 0, 0

    def forward(self, model: nn.Module, batch, *, epoch: int, step: int) -> StepOutput:
        images, labels = batch
        if epoch != self._epoch:
            self._epoch, self._step = epoch, 0
        self._step += 1
        if self.snapshot is not None and (epoch, self._step) == (self.snapshot[1], 1):
            self.snapshot_bytes = self.snapshot[0].read_bytes()
        if self.kill_at == (epoch, self._step):
            os.kill(os.getpid(), signal.SIGKILL)
        logits = model(images)
        self.seen += torch.bincount(labels, minlength=self.seen.numel())
        losses = {"ce": F.cross_entropy(logits.float(), labels)}
        if self.nan_at == (epoch, self._step):
            losses["bad"] = logits.float().sum() * float("nan")
        return StepOutput(losses=losses, logits=logits, targets=labels, metrics={"batch": float(labels.numel())})

    def on_epoch_end(self, epoch: int) -> None:
        self.epochs_ended += 1


class EpochPriorObjective(Objective):
    """Cross-entropy plus a class-wise prior of the model's own softmax, frozen at each epoch end.

    ``prior[c]`` = mean softmax of the training examples of class ``c`` in the last epoch;
    sums are all-reduced across ranks at the epoch end (like a DDP-aware ClassPrior).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(num_classes, num_classes, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("prior", torch.full((num_classes, num_classes), 1.0 / num_classes, dtype=torch.float64))

    def forward(self, model: nn.Module, batch, *, epoch: int, step: int) -> StepOutput:
        images, labels = batch
        logits = model(images)
        probs = logits.detach().double().softmax(dim=1)
        self.sums.index_add_(0, labels, probs)
        self.counts += torch.bincount(labels, minlength=self.counts.numel()).double()
        return StepOutput(losses={"ce": F.cross_entropy(logits.float(), labels)}, logits=logits)

    def on_epoch_end(self, epoch: int) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.sums)
            dist.all_reduce(self.counts)
        self.prior.copy_(self.sums / self.counts.clamp_min(1)[:, None])
        self.sums.zero_()
        self.counts.zero_()


def quick_settings(**overrides) -> TrainSettings:
    """Small, fast settings for digits runs (no progress bar)."""
    base = dict(
        epochs=3,
        optim={"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "multistep", "milestones": [2], "gamma": 0.1},
        progress=False,
        log_every=0,
        device="cpu",
        seed=3,
    )
    base.update(overrides)
    return TrainSettings(**base)


def build_trainer(
    run_dir: Path,
    settings: TrainSettings,
    *,
    model_name: str = "digits_cnn_large",
    objective: Objective | None = None,
    batch_size: int = 64,
    dist=None,
    config: dict | None = None,
    class_groups=None,
) -> Trainer:
    from gkl.models import create_model

    torch.manual_seed(settings.seed)
    model = create_model(model_name, 10)
    rank = dist.rank if dist is not None else 0
    world = dist.world_size if dist is not None else 1
    train = ShardedTensorLoader(
        *digits_tensors(True), batch_size=batch_size, train=True, seed=settings.seed, rank=rank, world_size=world
    )
    test = ShardedTensorLoader(*digits_tensors(False), batch_size=50, train=False)
    return Trainer(
        model=model,
        objective=objective if objective is not None else CountingObjective(),
        train_loader=train,
        eval_loader=test,
        evaluator=ClassificationEvaluator(10, class_groups),
        settings=settings,
        run_dir=run_dir,
        config=config if config is not None else {"test": "engine", "model": model_name},
        dist=dist,
    )


def _resume_job(run_dir: Path, kill: str | None, resume: bool) -> None:
    kill_at = tuple(int(v) for v in kill.split(":")) if kill else None
    settings = quick_settings(ema={"decay": 0.9, "every": "epoch", "evaluate": "raw"})
    trainer = build_trainer(run_dir, settings, objective=CountingObjective(kill_at=kill_at))
    trainer.fit(resume=resume)


def _ddp_job(run_dir: Path, out: Path, objective_kinds: str) -> None:
    """distill_run under DDP for each of the comma-separated kinds: run_dir/<kind>, results to out/<kind>.pt
    (one launch for several runs: starting the processes costs more than these runs)."""
    from gkl.engine import cleanup, init_distributed

    info = init_distributed("cpu")
    try:
        for kind in objective_kinds.split(","):
            summary = distill_run(run_dir / kind, dist=info, batch_size=32, objective_kind=kind)
            if info.is_main:
                out.mkdir(parents=True, exist_ok=True)
                torch.save(summary, out / f"{kind}.pt")
    finally:
        cleanup()


def _ddp_resume_job(run_dir: Path, out: Path) -> None:
    """3 epochs of digits_mlp_small under DDP; GKL_TEST_KILL_AT / GKL_TEST_RESUME as in the resume job."""
    from gkl.engine import cleanup, init_distributed

    kill = os.environ.get("GKL_TEST_KILL_AT")
    kill_at = tuple(int(v) for v in kill.split(":")) if kill else None
    info = init_distributed("cpu")
    try:
        settings = quick_settings(ema={"decay": 0.9, "every": "step"})
        trainer = build_trainer(
            run_dir,
            settings,
            model_name="digits_mlp_small",
            batch_size=32,
            dist=info,
            objective=CountingObjective(kill_at=kill_at),
        )
        trainer.fit(resume=os.environ.get("GKL_TEST_RESUME") == "1")
        torch.save({"objective": trainer.objective.checkpoint_state()}, out.with_suffix(f".rank{info.rank}.pt"))
        del trainer  # release the DDP reducer before the process group goes
    finally:
        cleanup()


def distill_run(run_dir: Path, *, dist=None, batch_size: int, objective_kind: str = "gkl") -> dict:
    """digits_mlp_small (no BatchNorm) trained 2 epochs; ``objective_kind`` "gkl" = class-wise GKL
    distillation from a fixed digits_cnn_large teacher, "prior" = :class:`EpochPriorObjective`,
    "ce" = :class:`CountingObjective`."""
    from gkl.models import create_model

    if objective_kind == "gkl":
        from gkl.objectives.distill import GKLObjective
        from gkl.settings.distill import GKLSettings

        torch.manual_seed(123)
        teacher = create_model("digits_cnn_large", 10).eval()
        objective = GKLObjective(teacher, GKLSettings(class_wise=True, warmup_epochs=1), num_classes=10)
    elif objective_kind == "prior":
        objective = EpochPriorObjective()
    else:
        objective = CountingObjective()
    settings = quick_settings(epochs=2, optim={"lr": 0.05, "reference_batch_size": 64}, schedule={"kind": "constant"})
    trainer = build_trainer(
        run_dir, settings, model_name="digits_mlp_small", objective=objective, batch_size=batch_size, dist=dist
    )
    summary = trainer.fit()
    return {
        "summary": summary,
        "prior": {k: v.clone() for k, v in objective.checkpoint_state().items()},
        "model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
        "base_lr": trainer.schedule.base_lr,
    }


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    job, run_dir = argv[0], Path(argv[1])
    if job == "resume":
        _resume_job(run_dir, os.environ.get("GKL_TEST_KILL_AT"), resume=os.environ.get("GKL_TEST_RESUME") == "1")
    elif job == "ddp_resume":
        _ddp_resume_job(run_dir, Path(argv[2]))
    elif job == "ddp":
        _ddp_job(run_dir, Path(argv[2]), argv[3])
    else:
        raise SystemExit(f"unknown job {job!r}")


def script_command(*args: str) -> list[str]:
    """``python -c`` command running :func:`main` with ``args``."""
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_engine_support as s; s.main(sys.argv[1:])"
    return [sys.executable, "-c", code, *args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main(sys.argv[1:])
