"""A run killed with SIGKILL mid-epoch and resumed ends with exactly the uninterrupted run's state.
The killed run is a process of its own; the uninterrupted run and the resume run in this process (one
torch thread, as the killed process's)."""

from __future__ import annotations

import os
import signal
import subprocess

import torch

from gkl.engine.checkpoint import read_checkpoint
from helpers import assert_identical
from test_engine_support import _resume_job, read_jsonl, script_command


def run_job(run_dir, *, kill_at: str | None = None, resume: bool = False) -> subprocess.CompletedProcess:
    """``test_engine_support``'s resume job in a process of its own."""
    env = dict(os.environ, GKL_TEST_RESUME="1" if resume else "0")
    env.pop("GKL_TEST_KILL_AT", None)
    if kill_at:
        env["GKL_TEST_KILL_AT"] = kill_at
    return subprocess.run(script_command("resume", str(run_dir)), env=env, capture_output=True, text=True, timeout=300)


def in_process(run_dir, *, resume: bool) -> None:
    """The job of :func:`run_job` (never killed) in this process, with one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_job(run_dir, None, resume=resume)
    finally:
        torch.set_num_threads(threads)


def test_sigkill_mid_epoch_then_resume_reproduces_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    in_process(straight, resume=False)

    crashed = run_job(killed, kill_at="2:7")  # SIGKILL at step 7 of epoch 2
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert read_checkpoint(killed / "checkpoint.pt")["epoch"] == 1
    assert not list(killed.glob(".checkpoint.pt.*"))  # no stray temporary file

    in_process(killed, resume=True)

    a = read_checkpoint(straight / "checkpoint.pt")
    b = read_checkpoint(killed / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key in ("model", "ema", "optimizer", "schedule", "objective", "best", "rng"):
        assert_identical(a[key], b[key], key)
    # the objective's counters prove epoch 2 was redone from its start, not continued
    assert a["objective"]["epochs_ended"].item() == 3
    assert_identical(
        torch.load(straight / "best.pt", weights_only=True),
        torch.load(killed / "best.pt", weights_only=True),
        "best.pt",
    )
    rows_a, rows_b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(killed / "metrics.jsonl")
    assert [r["epoch"] for r in rows_b] == [1, 2, 3]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["train"] == rb["train"] and ra["eval"] == rb["eval"] and ra["ema_eval"] == rb["ema_eval"]
    assert "resumes" in __import__("json").loads((killed / "run.json").read_text())
