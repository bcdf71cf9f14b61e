"""Iteration-based runs (train.iterations, eval/checkpoint every N steps): a run SIGKILLed
mid-epoch after a mid-epoch checkpoint resumes to exactly the uninterrupted run's state. The killed run
is a process of its own; the uninterrupted run and the resume run in this process (one torch thread, as it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gkl.engine.checkpoint import read_checkpoint
from gkl.settings.train import TrainSettings
from helpers import assert_identical, tensor_leaves

TESTS = Path(__file__).resolve().parent

# 1347 // 64 = 21 steps per epoch (the bundled digits through the package's loader);
# 50 steps = 2 full epochs + 8 steps of epoch 3
SETTINGS = dict(
    iterations=50,
    checkpoint_every_steps=8,
    eval_every_steps=16,
    ema={"decay": 0.9, "every": "step"},
    schedule={"kind": "cosine", "unit": "step", "warmup_steps": 5},
)


def job(run_dir: str, kill: str, resume: str) -> None:
    sys.path.insert(0, str(TESTS))
    from test_engine_support import CountingObjective, build_trainer, quick_settings

    torch.set_num_threads(1)
    kill_at = tuple(int(v) for v in kill.split(":")) if kill else None
    settings = quick_settings(epochs=None, **SETTINGS)
    trainer = build_trainer(
        Path(run_dir), settings, model_name="digits_mlp_small", objective=CountingObjective(kill_at=kill_at)
    )
    trainer.fit(resume=resume == "1")


def run(run_dir: Path, kill: str = "", resume: bool = False) -> subprocess.CompletedProcess:
    """:func:`job` in a process of its own."""
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_engine_iterations as t; t.job(*sys.argv[1:])"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code, str(run_dir), kill, "1" if resume else "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def in_process(run_dir: Path, resume: bool = False) -> None:
    """:func:`job` (never killed) in this process; its one torch thread only while it runs."""
    threads = torch.get_num_threads()
    try:
        job(str(run_dir), "", "1" if resume else "0")
    finally:
        torch.set_num_threads(threads)


def test_sigkill_mid_epoch_in_an_iteration_run_resumes_exactly(tmp_path: Path) -> None:
    in_process(tmp_path / "a")
    # killed at epoch 2, batch 9 = global step 30; the last checkpoint is at step 24 (epoch 2 + 3 steps)
    killed = run(tmp_path / "b", kill="2:9")
    assert killed.returncode != 0
    mid = read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert mid["step"] == 24 and mid["epoch"] == 1 and mid["epoch_stats"] is not None
    in_process(tmp_path / "b", resume=True)
    a = read_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 50 and a["epoch"] == b["epoch"] == 3
    for part in ("model", "ema", "optimizer", "objective"):
        assert tensor_leaves(a[part]), part
        assert_identical(a[part], b[part], part)

    # the same metrics lines (evaluations every 16 steps and at each epoch end), none lost or doubled
    def lines(run_dir: Path) -> list[dict]:
        out = []
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            record.pop("time")
            out.append(record)
        return out

    la, lb = lines(tmp_path / "a"), lines(tmp_path / "b")
    assert [r["step"] for r in la] == [16, 21, 32, 42, 48, 50]
    assert la == lb  # train statistics of the interrupted epoch included (restored from the checkpoint)


def test_epochs_and_iterations_are_exclusive() -> None:
    with pytest.raises(ValueError, match="train.iterations"):
        TrainSettings(epochs=3, iterations=100)
    assert TrainSettings().epochs == 240 and TrainSettings(iterations=10).epochs is None
    with pytest.raises(ValueError, match="train.eval_every_steps"):
        TrainSettings(eval_every_steps=0)


if __name__ == "__main__":
    job(*sys.argv[1:])
