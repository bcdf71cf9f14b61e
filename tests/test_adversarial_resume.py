"""A GKL-AT run (class-wise prior, AWP, EMA) killed with SIGKILL and resumed equals an uninterrupted run
(trained in this process with one torch thread, as the processes: only the killed run and its resume
need one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gkl.engine import read_checkpoint
from helpers import assert_identical

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo_at" / "gkl.yaml"


def _command(out_dir: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gkl.cli",
        "adv-train",
        str(CONFIG),
        f"out_dir={out_dir}",
        "name=run",
        f"data.root={data_root}",
        "train.epochs=3",
        "data.batch_size=128",
        "adversarial.awp_start_epoch=1",
        "model.name=digits_mlp_small",  # a small model: the test is about the state, not the accuracy
        "train.progress=false",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _in_process(args: list[str]) -> None:
    """``gkl ARGS`` in this process, with the one torch thread of the subprocesses."""
    from gkl.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)


def test_killed_gkl_at_run_resumes_with_prior_awp_and_ema_intact(tmp_path: Path) -> None:
    _in_process(_command(tmp_path / "a", tmp_path / "data")[3:])  # the uninterrupted run

    # Kill the second run from outside as soon as its first checkpoint exists: mid-epoch 2.
    ckpt = tmp_path / "b" / "run" / "checkpoint.pt"
    proc = subprocess.Popen(
        _command(tmp_path / "b", tmp_path / "data"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_epoch = read_checkpoint(ckpt)["epoch"]
    assert killed_epoch in (1, 2)

    resumed = subprocess.run(
        [*_command(tmp_path / "b", tmp_path / "data"), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {ckpt} (epoch {killed_epoch})" in resumed.stderr

    a = read_checkpoint(tmp_path / "a" / "run" / "checkpoint.pt")
    b = read_checkpoint(ckpt)
    assert a["epoch"] == b["epoch"] == 3
    prior = a["objective"]["prior.prior"]
    assert not torch.allclose(prior, torch.full_like(prior, 0.1))  # the class-wise weights were estimated
    assert a["ema"] is not None
    for part in ("model", "ema", "optimizer", "objective"):
        assert_identical(a[part], b[part], part)
