"""Shared pieces of the engine tests: real digits data, small objectives and a run script.

Engine runs read the bundled digits through the package's own loaders (:func:`digits_loaders`);
:class:`ShardedTensorLoader` remains for tests that need a loader over tensors they made.
Run as a script (by the resume test) through :func:`main`; pytest finds no tests here.
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


def digits_loaders(batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1, eval_batch_size: int = 50):
    """The bundled digits (1347 train / 450 test) through the package's own loaders, in memory, as a
    ``gkl`` run of ``data.name: digits`` builds them: (train loader of this rank, evaluation loader)."""
    from gkl.data import build_dataset, build_loader

    common = dict(in_memory=True, seed=seed, rank=rank, world_size=world_size)
    train = build_loader(build_dataset("digits", "data", True), batch_size=batch_size, train=True, **common)
    test = build_loader(build_dataset("digits", "data", False), batch_size=eval_batch_size, train=False, **common)
    return train, test


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
    train, test = digits_loaders(batch_size, seed=settings.seed, rank=rank, world_size=world)
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


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    job, run_dir = argv[0], Path(argv[1])
    if job == "resume":
        _resume_job(run_dir, os.environ.get("GKL_TEST_KILL_AT"), resume=os.environ.get("GKL_TEST_RESUME") == "1")
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
