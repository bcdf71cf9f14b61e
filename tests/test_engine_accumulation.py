"""Gradient accumulation equals the large-batch step; the task-agnostic step (batch as the loader
yields it, moved recursively); evaluators with select_metric/select_mode and a validation split;
trackers wired by train.loggers; channels_last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.engine import Trainer
from gkl.engine.batches import move_to_device
from gkl.objectives.base import Objective, StepOutput
from test_engine_support import digits_loader, quick_settings


class DictBatches:
    """The digits as ``{"x": images, "y": labels}`` float64 batches (a loader of another task's shape)."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.batch_size = loader.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield {"x": images.double(), "y": labels}


class DictCE(Objective):
    """Cross-entropy in the new step signature, on dict batches, in the model's dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def forward(self, model: nn.Module, batch, *, epoch: int, step: int) -> StepOutput:
        self.steps.append(step)
        logits = model(batch["x"])
        return StepOutput(losses={"ce": F.cross_entropy(logits, batch["y"])}, logits=logits)


def mlp() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()


def run(tmp_path: Path, name: str, *, batch_size: int, accumulate: int) -> tuple[Trainer, DictCE]:
    first = torch.arange(640)  # 10 steps of 64 examples
    loader = DictBatches(digits_loader(batch_size, train_split=True, shuffle=True, seed=3, indices=first))
    objective = DictCE()
    settings = quick_settings(
        epochs=1,
        accumulate_steps=accumulate,
        optim={"lr": 0.1, "weight_decay": 5e-4},
        schedule={"kind": "cosine", "unit": "step"},
        loggers=[],
    )
    trainer = Trainer(
        model=mlp(),
        objective=objective,
        train_loader=loader,
        eval_loader=None,
        evaluator=None,
        settings=settings,
        run_dir=tmp_path / name,
    )
    trainer.fit()
    return trainer, objective


def test_accumulation_equals_the_large_batch_step(tmp_path: Path) -> None:
    big, big_objective = run(tmp_path, "big", batch_size=64, accumulate=1)
    small, small_objective = run(tmp_path, "acc", batch_size=16, accumulate=4)
    assert big.total_steps == small.total_steps == 10
    # the objective sees the global optimizer step, from 1; each step's 4 micro-batches share it
    assert big_objective.steps == list(range(1, 11))
    assert small_objective.steps == [s for s in range(1, 11) for _ in range(4)]
    for (name, a), b in zip(big.model.state_dict().items(), small.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    records = [json.loads(x) for x in (tmp_path / "acc" / "metrics.jsonl").read_text().splitlines()]
    big_records = [json.loads(x) for x in (tmp_path / "big" / "metrics.jsonl").read_text().splitlines()]
    # the logged loss is the float32 sum of the terms
    assert records[-1]["train"]["loss"] == pytest.approx(big_records[-1]["train"]["loss"], rel=1e-6)
    assert not (tmp_path / "acc" / "tb").exists()  # loggers: [] -> no TensorBoard


def test_move_to_device_recurses_and_sets_channels_last() -> None:
    batch = {"views": (torch.ones(2, 3, 4, 4), [torch.zeros(2, 3, 4, 4)]), "ids": torch.arange(2), "name": "x"}
    moved = move_to_device(batch, torch.device("cpu"), channels_last=True)
    assert moved["name"] == "x" and torch.equal(moved["ids"], torch.arange(2))
    assert isinstance(moved["views"], tuple) and isinstance(moved["views"][1], list)
    assert moved["views"][0].is_contiguous(memory_format=torch.channels_last)
    assert moved["views"][1][0].is_contiguous(memory_format=torch.channels_last)


class MeanLoss:
    """An evaluator whose selected metric is lower-is-better: mean cross-entropy on the loader."""

    num_classes = 10

    def __call__(self, model, loader, *, device, dist=None):
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for images, labels in loader:
                total += F.cross_entropy(model(images.to(device)), labels.to(device), reduction="sum").item()
                count += len(labels)
        model.train()
        return {"loss": total / count, "count": count}


def test_select_metric_with_mode_min_on_a_validation_split(tmp_path: Path) -> None:
    from test_engine_support import CountingObjective

    train = digits_loader(50, train_split=True, shuffle=True, seed=1, indices=torch.arange(1000))
    val = digits_loader(100, train_split=True, shuffle=False, indices=torch.arange(1000, 1347))
    test = digits_loader(100, train_split=False, shuffle=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    # lr so large that the validation loss rises again after its minimum: best != last
    settings = quick_settings(
        epochs=6,
        optim={"lr": 2.0, "momentum": 0.9, "weight_decay": 0.0},
        schedule={"kind": "constant"},
        select_metric="loss",
        select_mode="min",
    )
    trainer = Trainer(
        model=model,
        objective=CountingObjective(),
        train_loader=train,
        eval_loader=test,
        val_loader=val,
        evaluator=MeanLoss(),
        settings=settings,
        run_dir=tmp_path,
    )
    summary = trainer.fit()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    values = [r["val"]["loss"] for r in records]
    best = min(range(len(values)), key=values.__getitem__)
    assert summary["best"] == values[best] and summary["best_epoch"] == records[best]["epoch"]
    assert summary["select_split"] == "val" and all(r["select"]["split"] == "val" for r in records)
    assert all("eval" in r and r["eval"]["count"] == 450 for r in records)  # the test split is still reported
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert saved["epoch"] == records[best]["epoch"] and saved["loss"] == values[best]


def test_mlflow_logger_writes_metrics_offline(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from test_engine_support import build_trainer

    trainer = build_trainer(tmp_path, quick_settings(epochs=1, loggers=["mlflow"]), model_name="digits_mlp_small")
    trainer.fit()
    found = list((tmp_path / "mlruns").rglob("eval/top1")) + list((tmp_path / "mlruns").rglob("top1"))
    assert found, sorted(str(p) for p in (tmp_path / "mlruns").rglob("*"))[:20]
    assert not (tmp_path / "tb").exists()


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_names(tmp_path: Path) -> None:
    """train.compile wraps the model in torch.compile; the checkpoint holds plain parameter names."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile (inductor) needs a C compiler on CPU")
    from test_engine_support import CountingObjective

    runs = {}
    for compiled in (False, True):
        loader = digits_loader(64, train_split=True, shuffle=True, seed=2, indices=torch.arange(640))
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        settings = quick_settings(epochs=1, compile=compiled, loggers=[], schedule={"kind": "constant"})
        trainer = Trainer(
            model=model,
            objective=CountingObjective(),
            train_loader=loader,
            eval_loader=None,
            evaluator=None,
            settings=settings,
            run_dir=tmp_path / str(compiled),
        )
        trainer.fit()
        runs[compiled] = torch.load(tmp_path / str(compiled) / "checkpoint.pt", weights_only=True)["model"]
    assert list(runs[True]) == list(runs[False]) == ["1.weight", "1.bias", "3.weight", "3.bias"]
    for key, value in runs[False].items():
        torch.testing.assert_close(runs[True][key], value, rtol=1e-4, atol=1e-5)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    plain.load_state_dict(runs[True])
