"""Shared pieces of the engine tests: real digits data, small objectives and a run script.

Engine runs read the bundled digits through the package's own loaders (:func:`digits_loaders`,
:func:`digits_loader`); no test-only loader is left.
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


def digits_loader(
    batch_size: int,
    *,
    train_split: bool,
    shuffle: bool,
    seed: int = 0,
    indices: torch.Tensor | None = None,
    normalize: bool = True,
):
    """One split of the bundled digits (1347 train / 450 test) through the package's in-memory loader,
    unaugmented: ``shuffle`` makes it a training loader (a per-epoch order from ``seed``, the last partial
    batch dropped), else an evaluation loader (in order); ``indices`` keeps only those examples
    (:class:`gkl.data.splits.IndexedDataset`)."""
    from gkl.data import build_dataset, build_loader
    from gkl.data.splits import IndexedDataset

    dataset = build_dataset("digits", "data", train_split, normalize=normalize, augment=False)
    if indices is not None:
        dataset = IndexedDataset(dataset, indices)
    return build_loader(dataset, batch_size=batch_size, train=shuffle, in_memory=True, seed=seed)


def digits_split_tensors(train_split: bool, *, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and labels of one bundled digits split, in the order its evaluation loader yields them."""
    loader = digits_loader(2000, train_split=train_split, shuffle=False, normalize=normalize)
    (images, labels), *rest = list(loader)
    assert not rest
    return images, labels


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
