"""A task that gkl does not ship, installed through a real entry point, runs like the built-in ones.

The toy task (tests/toy_task: regression on procedural data with its own settings class, batch
type, objective and evaluator) is copied into a temporary directory with a ``*.dist-info``
whose ``entry_points.txt`` registers it in the group ``gkl.tasks``; that directory goes on the
PYTHONPATH of ``python -m gkl.cli`` subprocesses. Nothing under src/ names it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

TOY = Path(__file__).resolve().parent / "toy_task"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A site directory holding the toy modules and their dist-info; the environment that sees it."""
    site = tmp_path_factory.mktemp("site")
    for name in ("gkl_toy_task.py", "gkl_toy_impl.py"):
        shutil.copy(TOY / name, site / name)
    info = site / "gkl_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gkl-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gkl.tasks]\ntoy = gkl_toy_task:TASK\n")
    path = os.pathsep.join([str(site), str(SRC), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _config(folder: Path, **train: object) -> Path:
    cfg = {
        "kind": "toy",
        "model": {"name": "linear"},
        "name": "toy",
        "out_dir": str(folder / "runs"),
        "data": {"batch_size": 8, "eval_batch_size": 16},
        "toy": {"features": 3, "train_examples": 64, "eval_examples": 40, "noise": 0.2},
        "train": {
            "epochs": 4,
            "device": "cpu",
            "progress": False,
            "loggers": [],
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
            "schedule": {"kind": "cosine"},
            **train,
        },
    }
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _gkl(env: dict[str, str], *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "gkl.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


#: runs each command of a JSON list through ``gkl.cli.main`` in one process: [[status, stdout, stderr], ...]
_MANY = """
import contextlib, io, json, sys
from gkl.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(args)
    results.append([status, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def _gkl_many(env: dict[str, str], *commands: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Commands run one after the other in one ``python`` process (the task found through its entry point
    there as in ``python -m gkl.cli``): one start-up instead of one per command."""
    done = subprocess.run(
        [sys.executable, "-c", _MANY, json.dumps(commands)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [subprocess.CompletedProcess(args, *result) for args, result in zip(commands, results)]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_fit_resume_evaluate_and_alias_of_a_third_party_task(plugin: dict[str, str], tmp_path: Path) -> None:
    config = _config(tmp_path)
    # killed (SIGKILL) after its first checkpoint, then resumed: the same weights and metrics as a whole run
    slow = ["name=killed", "toy.batch_delay=0.05"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gkl.cli", "fit", str(config), *slow],
        env=plugin,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = tmp_path / "runs" / "killed"
    try:
        deadline = time.monotonic() + 120
        while not (killed / "checkpoint.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()  # it was stopped mid-run

    # one process for the rest: the resume first (a fresh process, as a user's), then the whole run and the
    # commands on it; gkl evaluate asks the run's task
    whole = tmp_path / "runs" / "whole"
    resume, fit, evaluate, failed, printed, wrong, foreign, bad = _gkl_many(
        plugin,
        ["fit", str(config), *slow, "--resume"],
        ["fit", str(config), "name=whole"],
        ["evaluate", str(whole), "--which", "last"],
        ["evaluate", str(whole), "--robust"],
        ["toy-fit", str(config), "--print-config"],  # the task's own verb is an alias of fit
        ["train", str(config)],  # another verb names it
        ["fit", str(config), "distill={method: kd}"],
        ["fit", str(config), "toy.features=0"],
        cwd=tmp_path,
    )
    for done in (resume, fit, evaluate):
        assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["select_metric"] == "mse" and summary["select_mode"] == "min"  # the task's defaults
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["eval"]["mse"] < records[0]["eval"]["mse"]  # it learns
    assert summary["best"] == min(r["eval"]["mse"] for r in records)
    recorded = yaml.safe_load((whole / "config.yaml").read_text())
    assert list(recorded)[-2:] == ["toy", "train"] and recorded["toy"]["noise"] == 0.2

    resumed = json.loads((killed / "summary.json").read_text())
    assert json.loads((killed / "run.json").read_text())["resumes"][0]["from_epoch"] >= 1
    for key in ("best", "best_epoch", "last", "last_mse", "best_mse", "final"):
        assert resumed[key] == summary[key], key
    for name, tensor in _weights(whole).items():
        assert torch.equal(tensor, _weights(killed)[name]), name

    # the evaluation of the last checkpoint is the run's last one
    assert "mse" in evaluate.stdout
    report = json.loads((whole / "evaluations.jsonl").read_text().splitlines()[-1])
    assert report["results"]["last"]["clean"]["mse"] == summary["last_mse"]
    assert failed.returncode == 2 and "this is a toy run (evaluated by its mse / mae)" in failed.stderr
    assert printed.returncode == 0 and yaml.safe_load(printed.stdout)["toy"]["features"] == 3
    assert wrong.returncode == 2 and "is a 'toy' config; use 'gkl toy-fit'" in wrong.stderr
    assert foreign.returncode == 2 and "distill: section used by kind 'distill' only, not 'toy'" in foreign.stderr
    assert bad.returncode == 2 and bad.stderr.strip().endswith("toy.features: expected an integer >= 1, got 0")


@pytest.mark.slow
def test_a_sweep_of_the_toy_task_shows_its_columns(plugin: dict[str, str], tmp_path: Path) -> None:
    config = _config(tmp_path, epochs=2)
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "config": "toy.yaml",
                "seeds": 2,
                "out_dir": str(tmp_path / "study"),
                "baseline": "quiet",
                "settings": {"quiet": {}, "noisy": {"overrides": {"toy.noise": 1.0}}},
            }
        )
    )
    assert config.is_file()
    out = _gkl(plugin, "sweep", str(study), cwd=tmp_path).stdout
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    labels = [m["label"] for m in summary["metrics"]]
    assert labels == ["test mse, last epoch", "test mse, best epoch (selected on test)", "test mae, last epoch"]
    rows = {row["setting"]: row for row in summary["rows"]}
    assert set(rows) == {"quiet", "noisy"} and all(row["seeds"] == [0, 1] for row in rows.values())
    for row in rows.values():  # the column is each run's last evaluation, as the run recorded it
        for seed, run in zip(row["seeds"], row["runs"]):
            final = json.loads((Path(run) / "summary.json").read_text())["final"]["eval"]
            assert row["metrics"]["final.eval.mae"]["values"][str(seed)] == final["mae"]
    assert "test mae, last epoch" in out and "test mse, last epoch" in out
    assert rows["noisy"]["metrics"]["last_mse"]["mean"] > rows["quiet"]["metrics"]["last_mse"]["mean"]
