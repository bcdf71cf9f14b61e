"""Real short training runs on digits: learning, run-directory artifacts, NaN stop, checkpoint round trip."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from gkl.engine import NonFiniteLossError, Trainer, TrainSettings
from gkl.engine.checkpoint import read_checkpoint
from gkl.metrics.classification import ClassificationEvaluator
from helpers import assert_identical
from test_engine_support import CountingObjective, build_trainer, digits_loader, quick_settings, read_jsonl


def test_short_run_learns_and_writes_the_run_directory(tmp_path):
    config = {"model": "digits_cnn_large", "train": {"epochs": 3}, "note": "engine test"}
    groups = {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}
    trainer = build_trainer(tmp_path, quick_settings(ema={"decay": 0.5}), config=config, class_groups=groups)
    summary = trainer.fit()

    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == pytest.approx([0.05, 0.05, 0.005])
    assert records[-1]["train"]["loss"] < records[0]["train"]["loss"]
    assert records[-1]["train"]["acc"] > records[0]["train"]["acc"]
    # thresholds: margins measured over seeds and 1/2 threads (tests/helpers_margins.py)
    assert records[-1]["eval"]["top1"] > 90.0 and records[0]["train"]["acc"] < 80.0
    assert set(records[-1]["eval"]["groups"]) == set(groups) and "top5" in records[-1]["ema_eval"]
    best = max(records, key=lambda r: r["eval"]["top1"])
    assert summary["best_top1"] == best["eval"]["top1"] and summary["best_epoch"] == best["epoch"]
    assert summary["last_top1"] == records[-1]["eval"]["top1"]

    best_file = torch.load(tmp_path / "best.pt", weights_only=True)
    assert set(best_file) == {"model", "epoch", "top1"}
    assert best_file["epoch"] == summary["best_epoch"] and best_file["top1"] == summary["best_top1"]
    # the weights in best.pt at a best epoch that is not the last: tests/test_best_checkpoint.py

    ckpt = read_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 3 and ckpt["config"] == config
    assert ckpt["objective"]["epochs_ended"].item() == 3
    assert ckpt["objective"]["seen"].sum().item() == 3 * len(trainer.train_loader) * 64
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 3 and run["world_size"] == 1 and run["torch"] == torch.__version__
    assert run["git_commit"] == "unknown" or len(run["git_commit"]) == 40
    assert "epoch 3" in (tmp_path / "train.log").read_text()
    assert any((tmp_path / "tb").iterdir())
    with pytest.raises(ValueError, match="resume=True"):
        build_trainer(tmp_path, quick_settings(ema={"decay": 0.5}), config=config).fit()
    # resuming a finished run trains nothing, keeps the checkpoint and reports the same final state
    checkpoint_bytes = (tmp_path / "checkpoint.pt").read_bytes()
    again = build_trainer(tmp_path, quick_settings(ema={"decay": 0.5}), config=config).fit(resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint_bytes
    assert again["last_top1"] == summary["last_top1"] and again["best_epoch"] == summary["best_epoch"]
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 3


def test_nan_term_stops_with_step_and_term_and_keeps_checkpoint(tmp_path):
    objective = CountingObjective(nan_at=(2, 3), snapshot=(tmp_path / "checkpoint.pt", 2))
    trainer = build_trainer(tmp_path, quick_settings(), objective=objective)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    assert "epoch 2, step 3" in message and "term 'bad' = nan" in message
    assert "checkpoint.pt, epoch 1) is intact" in message
    assert objective.snapshot_bytes is not None
    assert (tmp_path / "checkpoint.pt").read_bytes() == objective.snapshot_bytes
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1]


def test_checkpoint_round_trip_restores_all_state(tmp_path):
    settings = quick_settings(
        epochs=2,
        amp="fp16",
        clip_grad_norm=5.0,
        progress=True,
        log_every=3,
        ema={"decay": 0.9, "every": "step", "evaluate": "ema"},
    )
    first = build_trainer(tmp_path / "a", settings)
    first.fit()
    saved = first.checkpoint_state(2)

    second = build_trainer(tmp_path / "b", settings)
    assert not torch.equal(second.objective.seen, first.objective.seen)
    assert second.load_checkpoint(tmp_path / "a" / "checkpoint.pt") == 2
    restored = second.checkpoint_state(2)

    for key in ("model", "ema", "optimizer", "schedule", "scaler", "objective", "rng", "best", "settings"):
        assert_identical(saved[key], restored[key], key)
    assert saved["scaler"]["scale"] > 0 and saved["ema"]["updates"] == 2 * len(first.train_loader)
    assert len(saved["optimizer"]["state"]) == len(list(first.model.parameters()))  # momentum buffers
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert best["top1"] == first.best.value  # best.pt follows the EMA model's top-1 (ema.evaluate="ema")


def test_resume_refuses_a_mismatched_run(tmp_path):
    build_trainer(tmp_path, quick_settings(epochs=1)).fit()
    with pytest.raises(ValueError, match="different train settings.*optim.lr"):
        build_trainer(tmp_path, quick_settings(epochs=1, optim={"lr": 0.1})).fit(resume=True)
    with pytest.raises(ValueError, match="different config.*model"):
        build_trainer(tmp_path, quick_settings(epochs=1), config={"test": "engine", "model": "other"}).fit(resume=True)
    with pytest.raises(ValueError, match="model does not match"):
        build_trainer(
            tmp_path,
            quick_settings(epochs=1),
            model_name="digits_mlp_small",
            config={"test": "engine", "model": "digits_cnn_large"},
        ).fit(resume=True)


def test_trainer_arguments_are_checked(tmp_path):
    import torch.nn as nn

    with pytest.raises(ValueError, match="settings"):
        Trainer(
            model=nn.Linear(2, 2),
            objective=CountingObjective(),
            train_loader=[],
            eval_loader=None,
            evaluator=None,
            settings={"epochs": 1},
            run_dir=tmp_path,
        )
    with pytest.raises(ValueError, match="train_loader"):
        Trainer(
            model=nn.Linear(2, 2),
            objective=CountingObjective(),
            train_loader=[],
            eval_loader=None,
            evaluator=None,
            settings=TrainSettings(epochs=1, device="cpu"),
            run_dir=tmp_path,
        )
    loader = digits_loader(4, train_split=False, shuffle=False)
    with pytest.raises(TypeError, match="evaluator"):  # no default evaluator: the engine knows no task
        Trainer(
            model=nn.Linear(2, 2),
            objective=CountingObjective(),
            train_loader=loader,
            eval_loader=loader,
            settings=TrainSettings(epochs=1, device="cpu"),
            run_dir=tmp_path,
        )
    with pytest.raises(ValueError, match="^evaluator: expected"):
        Trainer(
            model=nn.Linear(2, 2),
            objective=CountingObjective(),
            train_loader=loader,
            eval_loader=loader,
            evaluator=None,
            settings=TrainSettings(epochs=1, device="cpu"),
            run_dir=tmp_path,
        )


def test_sync_bn_on_cpu_ddp_is_refused_before_any_work(tmp_path):
    from gkl.engine import DistInfo

    with pytest.raises(ValueError, match="sync_bn"):
        build_trainer(
            tmp_path / "run",
            quick_settings(sync_bn=True),
            dist=DistInfo(rank=0, world_size=2, device=torch.device("cpu"), is_main=True),
        )
    assert not (tmp_path / "run").exists()


class _PickleRefused(Exception):
    pass


class _Unpicklable:
    """An object whose pickling fails with a known error, on every Python version."""

    def __reduce__(self):
        raise _PickleRefused("refused while pickling")


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    from gkl.engine.checkpoint import atomic_save

    path = tmp_path / "checkpoint.pt"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(_PickleRefused, match="^refused while pickling$"):
        atomic_save({"epoch": 2, "bad": _Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("in_memory", [True, False])
def test_runs_on_gkl_data_loaders_with_lr_scaling(tmp_path, in_memory):
    from gkl.data import build_dataset, build_loader
    from gkl.models import create_model

    cpu = torch.device("cpu")
    common = dict(device=cpu, in_memory=in_memory, num_workers=0, seed=0)
    train = build_loader(
        build_dataset("digits", tmp_path / "data", True), batch_size=32, train=True, rank=0, world_size=1, **common
    )
    test_set = build_dataset("digits", tmp_path / "data", False)
    test = build_loader(test_set, batch_size=100, train=False, **common)
    torch.manual_seed(0)
    settings = quick_settings(
        epochs=2,
        optim={"lr": 0.1, "reference_batch_size": 64},
        schedule={"kind": "multistep", "milestones": [1], "gamma": 0.1},
    )
    trainer = Trainer(
        model=create_model("digits_mlp_small", 10),
        objective=CountingObjective(),
        train_loader=train,
        eval_loader=test,
        settings=settings,
        run_dir=tmp_path / "run",
        evaluator=ClassificationEvaluator(10, {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}),
    )
    summary = trainer.fit()
    assert trainer.schedule.base_lr == pytest.approx(0.1 * 32 / 64)  # lr x global batch / reference
    assert [r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == pytest.approx([0.05, 0.005])
    assert summary["final"]["eval"]["count"] == len(test_set)
    assert summary["best_top1"] > 80.0 and set(summary["final"]["eval"]["groups"]) == {"low", "high"}


class PerSampleLoss(CountingObjective):
    """Returns an unreduced loss vector: a contract violation the engine must name."""

    def forward(self, model, batch, *, epoch, step):
        from gkl.objectives.base import StepOutput

        images, labels = batch
        logits = model(images)
        return StepOutput(losses={"ce_vector": torch.nn.functional.cross_entropy(logits, labels, reduction="none")})


def test_non_scalar_loss_term_is_named(tmp_path):
    trainer = build_trainer(
        tmp_path, quick_settings(epochs=1), model_name="digits_mlp_small", objective=PerSampleLoss()
    )
    with pytest.raises(ValueError, match="'ce_vector' must be a scalar"):
        trainer.fit()
