"""Ctrl-C (SIGINT) and SIGTERM stop `gkl train` without a traceback: exit 130 / 143, one line that
names the run folder and the command that continues it; that command finishes the run with exactly
the weights of an uninterrupted one. `gkl ... | head -1` ends quietly (exit 141, nothing on stderr)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gkl.engine.checkpoint import read_checkpoint
from helpers import assert_identical

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/demo_at/standard.yaml"  # digits_cnn_large on the bundled 8x8 digits


def _command(out_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gkl.cli",
        "train",
        CONFIG,
        f"out_dir={out_dir}",
        "name=run",
        "train.epochs=4",
        "train.device=cpu",
        *extra,
    ]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _stop_after_first_checkpoint(out_dir: Path, sig: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        _command(out_dir), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    checkpoint = out_dir / "run" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(sig)
    out, err = process.communicate(timeout=240)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _in_process(args: list[str]) -> None:
    """``gkl ARGS`` in this process from the repository, with the one torch thread of the subprocesses."""
    from gkl.cli import main

    threads, cwd = torch.get_num_threads(), os.getcwd()
    torch.set_num_threads(1)
    os.chdir(REPO)
    try:
        assert main(args) == 0
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The checkpoint of the uninterrupted run (trained once, in this process: the stopped runs are the
    ones that need a process to signal)."""
    out_dir = tmp_path_factory.mktemp("straight")
    _in_process(_command(out_dir)[3:])
    return read_checkpoint(out_dir / "run" / "checkpoint.pt")


@pytest.mark.xdist_group("cli_interrupts")  # the straight run is built once
@pytest.mark.parametrize(
    ("sig", "status", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_stopped_run_says_how_to_continue_and_continuing_equals_an_uninterrupted_run(
    tmp_path: Path, straight: dict, sig: int, status: int, word: str
) -> None:
    stopped = _stop_after_first_checkpoint(tmp_path / "stopped", sig)
    assert stopped.returncode == status, stopped.stderr
    assert "Traceback" not in stopped.stderr
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("gkl train: ")]
    assert len(lines) == 1 and lines[0].startswith(f"gkl train: {word}; {tmp_path / 'stopped' / 'run'} keeps"), lines
    assert read_checkpoint(tmp_path / "stopped" / "run" / "checkpoint.pt")["epoch"] >= 1
    continue_with = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert continue_with[:2] == ["gkl", "train"] and continue_with[-1] == "--resume"

    _in_process(continue_with[1:])  # the printed command, run from the repository as a user would
    a = straight
    b = read_checkpoint(tmp_path / "stopped" / "run" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert_identical(a["model"], b["model"])


def test_output_cut_short_by_the_reader_is_quiet() -> None:
    """The reader closes the pipe (as `| head` does once it has its lines) before gkl writes: the
    write fails with EPIPE whatever the pipe's buffer size, and gkl ends with 141 and nothing on stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gkl.cli", "recipes", "show", "--resolved", "demo/teacher", "demo/student_gkl"],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # gone before gkl has even parsed its arguments (Python start-up alone takes longer)
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert err == ""
