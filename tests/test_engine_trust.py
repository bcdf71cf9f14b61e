"""Issue 7, engine side, through the `gkl` command: divergence in every objective, tolerant resume,
"fix the cause and resume", the run-folder lock, unreadable checkpoints and unusable out_dir."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gkl.cli import main
from gkl.losses import value_checks_active

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _common(tmp: Path, name: str, epochs: int = 1) -> list[str]:
    return [
        f"out_dir={tmp / 'runs'}",
        f"name={name}",
        f"data.root={tmp / 'data'}",
        f"train.epochs={epochs}",
        "train.progress=false",
        "train.log_every=0",
    ]


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher checkpoint (random weights are enough: the students diverge at step 2)."""
    from gkl.models import create_model

    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.manual_seed(0)
    torch.save({"model": create_model("mnist1d_cnn", 10).state_dict()}, path)
    return path


DIVERGING = {
    "ce": ["train", CONFIGS / "demo" / "student_ce.yaml"],
    "kd": ["distill", CONFIGS / "demo" / "student_kd.yaml"],
    "gkl": ["distill", CONFIGS / "demo" / "student_gkl.yaml"],
    "trades": ["adv-train", CONFIGS / "demo_at" / "trades.yaml"],
    "gkl_at": ["adv-train", CONFIGS / "demo_at" / "gkl.yaml"],
}


@pytest.mark.parametrize("method", sorted(DIVERGING))
def test_divergence_in_every_objective_stops_with_the_engines_message(
    method: str, random_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command, config = DIVERGING[method]
    args = [command, str(config), *_common(tmp_path, method), "train.optim.lr=1e30"]
    if command == "distill":
        args.append(f"teacher.checkpoint={random_teacher}")
    assert main(args) == 3
    err = capsys.readouterr().err
    # the engine's message (epoch, step, term, checkpoint), not the loss's "logits must contain only finite values"
    assert "non-finite loss at epoch 1, step 2: term '" in err, err[-2000:]
    assert "no checkpoint has been written yet" in err
    assert "finite values" not in err
    assert value_checks_active()  # the engine switched the losses' checks off only while training
    run_dir = tmp_path / "runs" / method
    assert "run stopped (non-finite)" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "run.json").read_text())["stopped"]["reason"] == "non-finite"
    assert not (run_dir / ".lock").exists()


def test_resume_after_a_non_finite_stop_may_fix_lr_schedule_and_clipping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # epoch 2 runs at lr x 1e30: the run diverges after epoch 1's checkpoint was written
    base = [
        "train",
        str(CONFIGS / "demo" / "student_ce.yaml"),
        *_common(tmp_path, "fix", epochs=2),
        "train.schedule.kind=multistep",
        "train.schedule.milestones=[1]",
        "train.schedule.gamma=1e30",
    ]
    assert main(base) == 3
    err = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "fix"
    assert "non-finite loss at epoch 2" in err and "epoch 1) is intact" in err
    saved = (run_dir / "checkpoint.pt").read_bytes()
    # a different seed is still a different run
    assert main([*base, "train.seed=5", "--resume"]) == 2
    assert "train.seed" in capsys.readouterr().err
    assert (run_dir / "checkpoint.pt").read_bytes() == saved
    # fix the cause and resume
    assert main([*base, "train.schedule.gamma=0.1", "train.clip_grad_norm=5.0", "--resume"]) == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["resumes"][-1]["changed"] == ["train.clip_grad_norm", "train.schedule.gamma"]
    assert run["resumes"][-1]["from_epoch"] == 1 and run["stopped"]["reason"] == "finished"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["lr"] == pytest.approx(records[0]["lr"] * 0.1)
    # after a finished run, lr may not change any more
    assert main([*base, "train.schedule.gamma=0.1", "train.clip_grad_norm=5.0", "train.optim.lr=0.01", "--resume"]) == 2
    assert "non-finite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("finished")
    args = ["train", str(CONFIGS / "demo" / "student_ce.yaml"), *_common(tmp, "ce", epochs=1)]
    assert main(args) == 0
    return tmp / "runs" / "ce", args


def test_a_moved_run_folder_resumes_with_changed_tolerant_fields(
    finished_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, args = finished_run
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    import shutil

    shutil.copytree(run_dir, moved)
    assert (
        main(
            [
                "train",
                str(CONFIGS / "demo" / "student_ce.yaml"),
                f"out_dir={moved.parent}",
                "name=renamed",
                f"data.root={tmp_path / 'other_data'}",
                "data.num_workers=0",
                "train.epochs=1",
                "train.progress=true",
                "train.log_every=3",
                "train.eval_every=5",
                "train.checkpoint_every=4",
                "train.device=cpu",
                "--resume",
            ]
        )
        == 0
    )
    capsys.readouterr()
    # a change of what is computed is still refused, naming the key
    assert main([*args, "train.optim.weight_decay=0.0", f"out_dir={moved.parent}", "name=renamed", "--resume"]) == 2
    assert "train.optim.weight_decay" in capsys.readouterr().err


def test_damaged_or_malicious_checkpoints_are_one_line_errors(
    finished_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run_dir, _ = finished_run
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cases = {
        "truncated": (run_dir / "checkpoint.pt").read_bytes()[:1000],
        "garbage": b"not a checkpoint at all",
        "pickle": pickle.dumps({"format": "gkl-train-checkpoint", "evil": Evil()}),
    }
    buffer = __import__("io").BytesIO()
    torch.save({"format": "gkl-train-checkpoint", "evil": Evil()}, buffer)
    cases["torch-pickle"] = buffer.getvalue()
    for name, content in cases.items():
        copy = tmp_path / name
        shutil.copytree(run_dir, copy / "runs" / "ce")
        (copy / "runs" / "ce" / "checkpoint.pt").write_bytes(content)
        code = main(["train", str(CONFIGS / "demo" / "student_ce.yaml"), *_common(copy, "ce"), "--resume"])
        err = capsys.readouterr().err
        assert code == 2, (name, err[-1500:])
        assert str(copy / "runs" / "ce" / "checkpoint.pt") in err and "Traceback" not in err, name
        assert not marker.exists(), name  # no code from the file ran


def test_out_dir_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("a file, not a folder")
    assert main(["train", str(CONFIGS / "demo" / "student_ce.yaml"), *_common(tmp_path, "x")]) == 2
    err = capsys.readouterr().err
    assert "out_dir" in err and str(blocker) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_dir_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o555)
    assert main(["train", str(CONFIGS / "demo" / "student_ce.yaml"), *_common(tmp_path, "x")]) == 2
    assert str(runs) in capsys.readouterr().err


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    run_dir = tmp_path / "runs" / "locked"
    run_dir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (run_dir / ".lock").write_text(
            json.dumps({"pid": other.pid, "host": socket.gethostname(), "time": "2026-01-01T00:00:00+00:00"})
        )
        args = ["train", str(CONFIGS / "demo" / "student_ce.yaml"), *_common(tmp_path, "locked")]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(run_dir) in err and f"process {other.pid}" in err and "in use" in err
        assert not (run_dir / "metrics.jsonl").exists()
    finally:
        other.kill()
        other.wait()
    # the owner is dead now: the lock is stale and taken over; released at the end
    assert main(args) == 0
    assert not (run_dir / ".lock").exists()


@pytest.mark.slow
def test_two_concurrent_runs_of_one_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real `gkl train --resume` process trains; the same command started here meanwhile (another process
    than the trainer's) refuses in one line with status 2; the first's metrics are not interleaved with anything."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["train", str(CONFIGS / "demo" / "student_ce.yaml"), *_common(tmp_path, "twice", epochs=500), "--resume"]
    first = subprocess.Popen(
        [sys.executable, "-m", "gkl.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        lock, metrics = tmp_path / "runs" / "twice" / ".lock", tmp_path / "runs" / "twice" / "metrics.jsonl"
        deadline = time.time() + 240
        while not (metrics.exists() and metrics.read_text()) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # its first epoch logged: the run is under way
        assert lock.exists(), first.communicate()[1][-2000:]
        capsys.readouterr()
        status = main(args)
        assert first.poll() is None  # still training
    finally:
        first.kill()
        first.wait()
    err = capsys.readouterr().err
    assert status == 2, err[-2000:]
    message = err.strip().splitlines()[-1]
    assert f"process {first.pid}" in message and str(tmp_path / "runs" / "twice") in message
    assert "Traceback" not in err
    lines = (tmp_path / "runs" / "twice" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == list(range(1, len(epochs) + 1))
