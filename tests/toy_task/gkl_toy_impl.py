"""The toy task's implementation: batch type, data and loader, model, objective, evaluator, gkl evaluate."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch
from torch import nn

from gkl.objectives.base import Objective, StepOutput
from gkl.tasks.parts import RunParts


class ToyBatch(NamedTuple):
    """What the toy loader yields (the engine moves a named tuple of tensors to the device)."""

    inputs: torch.Tensor
    targets: torch.Tensor


def make_data(settings: Any, train: bool) -> ToyBatch:
    g = torch.Generator().manual_seed(settings.data_seed)
    weights = torch.randn(settings.features, 1, generator=g)
    if not train:  # the evaluation examples come after the training ones in the stream
        torch.randn(settings.train_examples, settings.features + 1, generator=g)
    n = settings.train_examples if train else settings.eval_examples
    draw = torch.randn(n, settings.features + 1, generator=g)
    inputs = draw[:, :-1]
    return ToyBatch(inputs, inputs @ weights + settings.noise * draw[:, -1:])


class ToyLoader:
    """Batches of a ToyBatch, reshuffled per epoch from ``(seed, epoch)`` (``set_epoch``) when ``shuffle``."""

    def __init__(self, data: ToyBatch, batch_size: int, *, seed: int, shuffle: bool, delay: float = 0.0) -> None:
        self.data, self.batch_size, self.seed, self.shuffle, self.delay = data, batch_size, seed, shuffle, delay
        self.order = torch.arange(len(data.inputs))

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            self.order = torch.randperm(len(self.data.inputs), generator=g)

    def __len__(self) -> int:
        return (
            len(self.data.inputs) // self.batch_size if self.shuffle else -(-len(self.data.inputs) // self.batch_size)
        )

    def __iter__(self):
        for i in range(len(self)):
            idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.delay:
                time.sleep(self.delay)
            yield ToyBatch(self.data.inputs[idx], self.data.targets[idx])


class ToyObjective(Objective):
    """Mean squared error of the model's prediction."""

    def forward(self, model: nn.Module, batch: ToyBatch, *, epoch: int, step: int) -> StepOutput:
        error = model(batch.inputs) - batch.targets
        return StepOutput(losses={"mse": error.pow(2).mean()}, batch_size=int(batch.inputs.shape[0]))


class ToyEvaluator:
    """``mse`` and ``mae`` over the loader (sums over examples, divided once)."""

    @torch.no_grad()
    def __call__(self, model: nn.Module, loader: Any, *, device: Any, dist: Any = None) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        sq = ab = 0.0
        count = 0
        for batch in loader:
            error = model(batch.inputs.to(device)) - batch.targets.to(device)
            sq += float(error.pow(2).sum())
            ab += float(error.abs().sum())
            count += int(error.numel())
        model.train(was_training)
        return {"mse": sq / count, "mae": ab / count, "count": count}


def build_model(cfg: Any) -> nn.Module:
    return nn.Linear(cfg.toy.features, 1)


def build_parts(cfg: Any, dist: Any) -> RunParts:
    toy = cfg.toy
    train = ToyLoader(
        make_data(toy, True), cfg.data.batch_size, seed=cfg.train.seed, shuffle=True, delay=toy.batch_delay
    )
    evaluation = ToyLoader(make_data(toy, False), cfg.data.eval_batch_size, seed=0, shuffle=False)
    info = SimpleNamespace(name="toy", num_classes=None, class_groups=None)
    return RunParts(build_model(cfg), ToyObjective(), train, evaluation, info, evaluator=ToyEvaluator())


def evaluate_run(cfg: Any, run_dir: Any, paths: Any, *, weights: str, overrides: Any = (), robust: Any = None):
    from gkl.models import load_run_weights

    loader = ToyLoader(make_data(cfg.toy, False), cfg.data.eval_batch_size, seed=0, shuffle=False)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "kind": cfg.kind,
        "weights": weights,
        "overrides": list(overrides),
        "results": {},
    }
    lines = ["checkpoint   mse      mae"]
    for name, path in paths.items():
        model = build_model(cfg)
        epoch = load_run_weights(model, path, which=name, weights=weights)
        metrics = ToyEvaluator()(model, loader, device="cpu")
        report["results"][name] = {"epoch": epoch, "clean": metrics}
        lines.append(f"{name:<10} {metrics['mse']:.6f} {metrics['mae']:.6f}")
    return report, "\n".join(lines)
