"""The lm_distill task through the CLI: a CE teacher, a fused-GKL student that resumes after SIGKILL to
identical weights, gkl evaluate, and a gkl sweep with the teacher chained into the students. Only the
killed run starts a process; the other commands, the sweep's runs included (``--launcher inline``), run
through ``gkl.cli.main`` here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("transformers")  # the llm extra (pip install "gkl[llm]")
pytest.importorskip("tokenizers")  # the llm extra (pip install "gkl[llm]")

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = {"n_layer": 1, "n_embd": 16, "n_head": 2}


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
    }


def _config(folder: Path, name: str, method: str, **lm: object) -> Path:
    from pydoc_data.topics import topics

    corpus = folder / "corpus.txt"
    if not corpus.is_file():
        corpus.write_text("\n\n".join(topics[k] for k in sorted(topics))[:12_000])
    cfg = {
        "kind": "lm_distill",
        "name": name,
        "out_dir": str(folder / "runs"),
        "model": {"name": "gpt2", "kwargs": TINY},
        "data": {"batch_size": 8, "eval_batch_size": 32},
        "lm": {"method": method, "corpus": str(corpus), "vocab_size": 300, "block_size": 16, "chunk_size": 50, **lm},
        "train": {
            "epochs": 3 if method == "ce" else 6,
            "device": "cpu",
            "progress": False,
            "loggers": [],
            "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
            "schedule": {"kind": "cosine"},
        },
    }
    if method != "ce":
        cfg["teacher"] = {"name": "gpt2", "kwargs": TINY, "checkpoint": str(folder / "runs" / "teacher" / "best.pt")}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _in_process(*args: str) -> None:
    """``gkl ARGS`` in this process, with the one torch thread of the subprocesses (restored by conftest.py):
    the steps that do not check the process boundary skip a Python + transformers start-up each."""
    from gkl.cli import main

    torch.set_num_threads(1)
    assert main(list(args)) == 0


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_teacher_student_resume_after_sigkill_and_evaluate(env: dict[str, str], tmp_path: Path, capsys) -> None:
    _in_process("fit", str(_config(tmp_path, "teacher", "ce", hard_weight=1.0)))
    teacher = json.loads((tmp_path / "runs" / "teacher" / "summary.json").read_text())
    assert teacher["select_metric"] == "perplexity" and teacher["select_mode"] == "min"
    assert teacher["best"] < 300  # better than uniform over the vocabulary

    student = _config(tmp_path, "student", "gkl", loss_params={"gamma": 0.5}, hard_weight=0.5)
    _in_process("fit", str(student), "name=whole")
    whole = tmp_path / "runs" / "whole"
    summary = json.loads((whole / "summary.json").read_text())
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    kl = [r["eval"]["kl_to_teacher"] for r in records]
    assert kl[-1] < kl[0]  # the student moves toward the teacher

    proc = subprocess.Popen(
        [sys.executable, "-m", "gkl.cli", "fit", str(student), "name=killed"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = tmp_path / "runs" / "killed"
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoint.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "summary.json").exists()
    _in_process("fit", str(student), "name=killed", "--resume")
    resumed = json.loads((killed / "summary.json").read_text())
    for key in ("best", "best_epoch", "last", "final"):  # the same weights and metrics as the whole run
        assert resumed[key] == summary[key], key
    for name, tensor in _weights(whole).items():
        assert torch.equal(tensor, _weights(killed)[name]), name

    _in_process("evaluate", str(whole), "--which", "last")
    report = json.loads((whole / "evaluations.jsonl").read_text().splitlines()[-1])
    assert report["results"]["last"]["clean"]["perplexity"] == summary["last_perplexity"]

    from gkl.cli import main  # bad input is refused before any work

    capsys.readouterr()
    assert main(["fit", str(student), "lm.method=gkl", "lm.loss_params={tau: 1}"]) == 2
    assert "lm.loss_params: tau: method 'gkl' takes the parameters" in capsys.readouterr().err
    assert main(["fit", str(student), "teacher=null"]) == 2
    assert "teacher: lm.method 'gkl' needs a 'teacher' section" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_chains_the_teacher_into_the_students(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(tmp_path, "teacher", "ce", hard_weight=1.0)
    _config(tmp_path, "student", "kl")
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "config": "student.yaml",
                "seeds": 2,
                "out_dir": str(tmp_path / "study"),
                "baseline": "kl",
                "overrides": {"train.epochs": 1},
                "settings": {
                    "teacher": {"config": "teacher.yaml", "seeds": [0]},
                    "kl": {"teacher": "teacher"},
                    "gkl": {"teacher": "teacher", "overrides": {"lm.method": "gkl"}},
                },
            }
        )
    )
    for key in ("PYTHONPATH", "OMP_NUM_THREADS", "RAYON_NUM_THREADS"):  # the environment of runs in processes
        monkeypatch.setenv(key, env[key])
    _in_process("sweep", str(study), "--launcher", "inline")  # the sweep and its runs in this process
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    rows = {row["setting"]: row for row in summary["rows"]}
    assert set(rows) == {"teacher", "kl", "gkl"} and rows["gkl"]["seeds"] == [0, 1]
    recorded = yaml.safe_load((tmp_path / "study" / "gkl_seed1" / "config.yaml").read_text())
    assert recorded["teacher"]["checkpoint"] == str(tmp_path / "study" / "teacher_seed0" / "best.pt")
    assert "perplexity" in out
