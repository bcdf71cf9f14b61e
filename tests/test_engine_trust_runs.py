"""Issue 7, engine side, on the Trainer: nothing lost across interruptions, collapse detection,
full disk, checkpoint permissions, the run record, value checks off only while training."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gkl.engine import CollapseError, Trainer
from gkl.engine.checkpoint import read_checkpoint
from gkl.engine.collapse import CollapseMonitor
from gkl.losses import value_checks_active
from gkl.metrics.classification import ClassificationEvaluator
from gkl.objectives.base import Objective, StepOutput
from gkl.utils.errors import InputError
from test_engine_support import CountingObjective, build_trainer, quick_settings


def small(run_dir: Path, objective: Objective | None = None, **settings) -> Trainer:
    base = dict(epochs=3, schedule={"kind": "cosine"})
    base.update(settings)
    return build_trainer(
        run_dir,
        quick_settings(**base),
        model_name="digits_mlp_small",
        objective=objective if objective is not None else CountingObjective(),
    )


class Interrupt(KeyboardInterrupt):
    pass


def interrupted(run_dir: Path, *, epoch: int, after_checkpoint: bool) -> Trainer:
    """A trainer that is interrupted (Ctrl-C) at the checkpoint of ``epoch``, before or after writing it."""
    trainer = small(run_dir)
    save = trainer.save_checkpoint

    def save_then_stop(e: int) -> None:
        if e == epoch and not after_checkpoint:
            raise Interrupt()
        save(e)
        if e == epoch:
            raise Interrupt()

    trainer.save_checkpoint = save_then_stop  # type: ignore[method-assign]
    return trainer


def epochs_in(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_steps(run_dir: Path, tag: str = "lr") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_an_interruption_after_the_checkpoint_loses_no_metrics_line(tmp_path: Path) -> None:
    with pytest.raises(Interrupt):
        interrupted(tmp_path, epoch=2, after_checkpoint=True).fit()
    assert epochs_in(tmp_path) == [1, 2]  # written before the checkpoint that holds epoch 2
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    log = (tmp_path / "train.log").read_text()
    assert "run interrupted during epoch 2" in log
    assert json.loads((tmp_path / "run.json").read_text())["stopped"]["reason"] == "interrupted"
    small(tmp_path).fit(resume=True)
    assert epochs_in(tmp_path) == [1, 2, 3]
    assert tensorboard_steps(tmp_path) == [1, 2, 3]


def test_an_interruption_before_the_checkpoint_is_reconciled_on_resume(tmp_path: Path) -> None:
    with pytest.raises(Interrupt):
        interrupted(tmp_path, epoch=2, after_checkpoint=False).fit()
    assert epochs_in(tmp_path) == [1, 2]
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    # a killed atomic save leaves a temporary file: removed at the next start
    leftover = tmp_path / ".checkpoint.pt.k1ll3d.tmp"
    leftover.write_bytes(b"\0" * 4096)
    small(tmp_path).fit(resume=True)
    assert not leftover.exists()
    assert epochs_in(tmp_path) == [1, 2, 3]  # epoch 2 re-run, its first record replaced
    assert tensorboard_steps(tmp_path) == [1, 2, 3]  # TensorBoard events after epoch 1 purged, not duplicated
    assert "run finished: 3 epochs" in (tmp_path / "train.log").read_text()


def test_checkpoints_follow_the_umask_and_run_json_records_threads_and_cpu(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        small(tmp_path, epochs=1).fit()
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "best.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["torch_threads"] == torch.get_num_threads()
    assert run["omp_num_threads"] == os.environ.get("OMP_NUM_THREADS")
    assert isinstance(run["cpu_model"], str) and run["cpu_model"]
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["rng"]["cuda"] is None  # CPU run: no GPU generator states are stored


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save

    def save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2 and "optimizer" in obj:
            handle.write(b"\0" * 1000)  # part of the file, then the device is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, handle, *args, **kwargs)

    trainer = small(tmp_path)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(InputError) as info:
        trainer.fit()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "checkpoint.pt") in message and "no space" in message
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))
    assert "run stopped (exception)" in (tmp_path / "train.log").read_text()


class CollapsingObjective(Objective):
    """Cross-entropy on the labels in epoch 1, then on the constant label 0: the model ends up
    predicting class 0 for every input (top-1 = the share of class 0, about chance)."""

    def forward(self, model: nn.Module, batch, *, epoch: int, step: int) -> StepOutput:
        images, labels = batch
        logits = model(images)
        target = labels if epoch == 1 else torch.zeros_like(labels)
        return StepOutput(losses={"ce": F.cross_entropy(logits, target)}, logits=logits)


def test_collapse_is_flagged_in_metrics_summary_and_log(tmp_path: Path) -> None:
    trainer = small(
        tmp_path,
        CollapsingObjective(),
        epochs=4,
        collapse_patience=2,
        collapse_margin=5.0,
        schedule={"kind": "constant"},
    )
    summary = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["eval"]["top1"] > 15.0 and all(r["eval"]["top1"] <= 15.0 for r in records[1:])
    flagged = [r["epoch"] for r in records if "collapsed" in r]
    assert flagged == [3]
    collapsed = summary["collapsed"]
    assert collapsed["epoch"] == 3 and collapsed["since_epoch"] == 2 and collapsed["chance"] == 10.0
    assert json.loads((tmp_path / "summary.json").read_text())["collapsed"] == collapsed
    assert "collapse: top1" in (tmp_path / "train.log").read_text()


def test_stop_on_collapse_raises_with_epoch_value_and_chance(tmp_path: Path) -> None:
    trainer = small(
        tmp_path,
        CollapsingObjective(),
        epochs=6,
        collapse_patience=2,
        collapse_margin=5.0,
        stop_on_collapse=True,
        schedule={"kind": "constant"},
    )
    with pytest.raises(CollapseError) as info:
        trainer.fit()
    message = str(info.value)
    assert "collapse at epoch 3" in message and "chance level 10.00" in message and "epoch 3) is intact" in message
    assert epochs_in(tmp_path) == [1, 2, 3]
    assert json.loads((tmp_path / "run.json").read_text())["stopped"]["reason"] == "collapse"


def test_collapse_monitor_rules() -> None:
    assert ClassificationEvaluator(10).chance_level("top1") == 10.0
    assert ClassificationEvaluator(100).chance_level("top5") == 5.0
    assert ClassificationEvaluator(10).chance_level("mIoU") is None
    assert ClassificationEvaluator(2).chance_level("top5") == 100.0
    monitor = CollapseMonitor(metric="top1", chance=10.0, patience=2, margin=1.0)
    assert monitor.update(1, 10.5) is None and monitor.update(2, 10.2) is None  # never above chance yet
    assert monitor.update(3, 40.0) is None and monitor.update(4, 11.0) is None
    flag = monitor.update(5, 9.0)
    assert flag == {
        "epoch": 5,
        "metric": "top1",
        "value": 9.0,
        "chance": 10.0,
        "margin": 1.0,
        "evaluations": 2,
        "since_epoch": 4,
    }
    assert monitor.update(6, 9.0) is None  # flagged once
    restored = CollapseMonitor(metric="top1", chance=10.0, patience=2, margin=1.0)
    restored.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert restored.state_dict() == monitor.state_dict()


class ChecksProbe(Objective):
    """Cross-entropy that records whether the losses' value checks are on during the step."""

    def forward(self, model: nn.Module, batch, *, epoch: int, step: int) -> StepOutput:
        self.seen_checks = value_checks_active()
        images, labels = batch
        logits = model(images)
        return StepOutput(losses={"ce": F.cross_entropy(logits, labels)}, logits=logits)


def test_loss_value_checks_are_off_while_training_and_restored(tmp_path: Path) -> None:
    probe = ChecksProbe()
    assert value_checks_active()
    small(tmp_path, probe, epochs=1).fit()
    assert probe.seen_checks is False and value_checks_active()
