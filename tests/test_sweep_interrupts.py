"""Ctrl-C (SIGINT) and SIGTERM during `gkl sweep`, through the CLI: the sweep passes the interrupt to the run
it is training (which keeps its last checkpoint), prints no traceback, exits 130 / 143 with one line naming
the finished runs and the command that continues; that command ends with every run equal to an
uninterrupted sweep's."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gkl.engine.checkpoint import read_checkpoint
from helpers import SWEEP_BASE, SWEEP_STUDENT, assert_identical, sweep_study

REPO = Path(__file__).resolve().parents[1]
BASE, STUDENT, STUDY = SWEEP_BASE, SWEEP_STUDENT, sweep_study(6)
RUNS = ("teacher_seed0", "kd_seed0")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    (folder / "base.yaml").write_text(BASE)
    (folder / "student.yaml").write_text(STUDENT)
    (folder / "study.yaml").write_text(STUDY)
    return folder / "study.yaml"


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _sweep(study: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "gkl.cli", "sweep", str(study), "--out", str(out)]


def _in_process(args: list[str]) -> None:
    """``gkl ARGS`` in this process from the repository, its runs' processes with the environment of
    ``_env()`` (one thread, as the interrupted sweep's): the sweeps that are not signalled need no process."""
    from gkl.cli import main

    saved, cwd = dict(os.environ), os.getcwd()
    os.environ.update(_env())
    os.chdir(REPO)
    try:
        assert main(args) == 0
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def uninterrupted(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "out"
    _in_process(_sweep(study, out)[3:])
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("sweep_interrupts")  # the uninterrupted sweep is run once
@pytest.mark.parametrize(
    ("sig", "status", "word", "kept"),
    [(signal.SIGINT, 130, "interrupted", False), (signal.SIGTERM, 143, "terminated", True)],
)
def test_an_interrupted_sweep_says_how_to_continue_and_continuing_equals_an_uninterrupted_sweep(
    study: Path,
    uninterrupted: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    sig: int,
    status: int,
    word: str,
    kept: bool,
) -> None:
    """``kept``: the teacher run is the uninterrupted sweep's, copied in before the sweep starts (a run
    finished before the sweep counts as finished too); otherwise the interrupted sweep trains it."""
    out = tmp_path / "out"
    if kept:
        shutil.copytree(uninterrupted / "teacher_seed0", out / "teacher_seed0")
    process = subprocess.Popen(
        _sweep(study, out), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    checkpoint = out / "kd_seed0" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    process.send_signal(sig)
    _, err = process.communicate(timeout=300)
    assert process.returncode == status, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("gkl sweep: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gkl sweep: {word}; finished 1 of 2 runs (teacher_seed0); stopped kd_seed0 "), lines
    assert "sweep: started kd_seed0" in err  # the progress lines
    assert ("sweep: started teacher_seed0" in err) is not kept
    # the run got the interrupt: it stopped itself (its own one line in its log) and kept its checkpoint
    log = (out / "logs" / "kd_seed0.log").read_text()
    assert f"gkl distill: {word}; {out / 'kd_seed0'} keeps its last checkpoint" in log
    assert read_checkpoint(checkpoint)["epoch"] >= 1 and not (out / "kd_seed0" / "summary.json").exists()

    continue_with = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert continue_with[:2] == ["gkl", "sweep"]
    capfd.readouterr()
    _in_process(continue_with[1:])  # the printed command
    assert "1 of 2 runs already finished (kept)" in capfd.readouterr().err
    for run in RUNS:
        a, b = read_checkpoint(out / run / "checkpoint.pt"), read_checkpoint(uninterrupted / run / "checkpoint.pt")
        assert a["epoch"] == b["epoch"]
        assert_identical(a["model"], b["model"], run)
