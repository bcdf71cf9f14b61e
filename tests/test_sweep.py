"""``gkl sweep``: study-file validation, SIGKILL + resume without retraining, submitit's local executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gkl.study import load_study, run_sweep
from gkl.study.summary import summarize
from gkl.utils.errors import InputError
from helpers import SWEEP_STUDENT
from summary_expectations import BEST, LAST, expected_rows, parse_table

BASE = """\
out_dir: runs
data: {name: digits, root: data, batch_size: 32, eval_batch_size: 450, in_memory: true}
train:
  epochs: 1
  device: cpu
  progress: false
  optim: {lr: 0.05, momentum: 0.9}
  schedule: {kind: cosine}
kind: train
name: x
model: {name: digits_mlp_small}
"""
STUDENT = SWEEP_STUDENT


@pytest.fixture()
def configs(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "student.yaml").write_text(STUDENT)
    return tmp_path


def _study(folder: Path, text: str) -> Path:
    path = folder / "study.yaml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- validation (no run)


def test_study_plan_chains_and_seeds(configs: Path) -> None:
    study = load_study(
        _study(
            configs,
            """
config: student.yaml
seeds: [3, 5]
overrides: {train.epochs: 2}
settings:
  teacher: {config: base.yaml, seeds: [0]}
  kd_inf: {teacher: teacher, overrides: {distill.temperature: .inf}}
  second: {teacher: kd_inf, teacher_checkpoint: checkpoint.pt}
""",
        ),
        out_dir=configs / "out",
    )
    by_name = {r.name: r for r in study.runs}
    assert list(by_name) == ["teacher_seed0", "kd_inf_seed3", "kd_inf_seed5", "second_seed3", "second_seed5"]
    assert by_name["kd_inf_seed5"].depends_on == ["teacher_seed0"]
    assert by_name["second_seed5"].depends_on == ["kd_inf_seed5"]  # per-seed chain
    args = by_name["second_seed5"].cli_args()
    assert args[0] == "distill" and args[-1] == "--resume"
    assert f"teacher.checkpoint={configs / 'out' / 'kd_inf_seed5' / 'checkpoint.pt'}" in args
    assert "distill.temperature=.inf" in by_name["kd_inf_seed3"].cli_args()
    assert "train.epochs=2" in by_name["teacher_seed0"].cli_args()
    assert not (configs / "out").exists()  # validation writes nothing


@pytest.mark.parametrize(
    "text, match",
    [
        ("config: student.yaml\nseed: 2\nsettings: {a: {}}\n", "unknown key 'seed'; did you mean 'seeds'"),
        ("config: student.yaml\nsettings: {a: {overides: {x: 1}}}\n", "settings.a: unknown key 'overides'"),
        ("config: student.yaml\nsettings: {a: {overrides: {train.optim.lrr: 0.1}}}\n", "train.optim.lrr"),
        ("config: student.yaml\nsettings: {}\n", "at least one named setting"),
        ("config: student.yaml\nseeds: 2\n", "at least one named setting"),
        (
            "config: student.yaml\nsettings: {a: {teacher: techer}, teacher: {config: base.yaml}}\n",
            "no setting named 'techer'; did you mean 'teacher'",
        ),
        ("config: student.yaml\nsettings: {a: {teacher: b}, b: {teacher: a}}\n", "teacher cycle"),
        (
            "settings: {a: {config: base.yaml, teacher: b}, b: {config: base.yaml}}\n",
            "only 'distill', 'segmentation', 'clip_distill', 'lm_distill' runs",
        ),
        ("config: student.yaml\nbaseline: kdd\nsettings: {kd: {}}\n", "baseline: no setting named 'kdd'"),
        ("config: missing.yaml\nsettings: {kd: {}}\n", "config: file not found"),
        ("config: student.yaml\nseeds: 0\nsettings: {kd: {}}\n", "seeds"),
        ("config: student.yaml\nsettings: {kd: {}\n", "not valid YAML"),
    ],
)
def test_study_errors_name_the_key_before_anything_runs(configs: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        run_sweep(_study(configs, text), out_dir=configs / "out")
    assert not (configs / "out").exists()


# ----------------------------------------------------------------------------- real runs


def test_a_chain_distills_from_the_trained_student_of_the_previous_setting(configs: Path) -> None:
    """Sequential distillation: teacher -> kd (a narrower student) -> chain. Each run is started with the
    arguments the sweep gives `python -m gkl.cli`, in the sweep's order, in-process (cheap)."""
    import yaml

    from gkl.cli import main

    out = configs / "out"
    study = load_study(
        _study(
            configs,
            """
config: student.yaml
seeds: [0]
overrides: {data.batch_size: 64}
settings:
  teacher: {config: base.yaml}
  kd: {teacher: teacher, overrides: {model.kwargs: {hidden: 8}}}
  chain: {teacher: kd, overrides: {distill: {method: mse}}}
""",
        ),
        out_dir=out,
    )
    assert [r.name for r in study.runs] == ["teacher_seed0", "kd_seed0", "chain_seed0"]
    for spec in study.runs:
        assert main(spec.cli_args()) == 0, spec.name
    chain = yaml.safe_load((out / "chain_seed0" / "config.yaml").read_text())
    # the teacher of the chain is kd's student: its architecture (hidden 8, not the config's teacher; the
    # chain run loads the weights strictly, so a wrong architecture fails) and its best.pt
    assert chain["teacher"]["name"] == "digits_mlp_small" and chain["teacher"]["kwargs"] == {"hidden": 8}
    assert Path(chain["teacher"]["checkpoint"]) == out / "kd_seed0" / "best.pt"
    assert chain["model"]["kwargs"] == {} and chain["distill"]["method"] == "mse"
    kd = yaml.safe_load((out / "kd_seed0" / "config.yaml").read_text())
    assert Path(kd["teacher"]["checkpoint"]) == out / "teacher_seed0" / "best.pt" and kd["teacher"]["kwargs"] == {}
    rows = {row["setting"]: row for row in summarize([out]).rows}
    assert set(rows) == {"teacher", "kd", "chain"}


def _snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_sigkilled_sweep_resumes_without_retraining_and_summary_matches(configs: Path) -> None:
    out = configs / "out"
    study = _study(
        configs,
        """
config: student.yaml
seeds: 2
baseline: kd
settings:
  teacher: {config: base.yaml, seeds: [0]}
  kd: {teacher: teacher, overrides: {train.epochs: 8, data.batch_size: 16}}
""",
    )
    code = f"from gkl.study import run_sweep; run_sweep({str(study)!r}, out_dir={str(out)!r}, poll_seconds=0.05)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    metrics = out / "kd_seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-way through kd_seed0
    finally:
        proc.wait()
    assert (out / "teacher_seed0" / "summary.json").is_file()
    assert not (out / "kd_seed0" / "summary.json").exists(), "the sweep should have been killed mid-run"
    time.sleep(0.5)  # the training child dies with the sweep (parent-death signal)
    teacher_files = _snapshot(out / "teacher_seed0")
    killed_epochs = len(metrics.read_text().splitlines())

    result = run_sweep(study, out_dir=out, poll_seconds=0.05)
    assert result["reused"] == ["teacher_seed0"] and sorted(result["trained"]) == ["kd_seed0", "kd_seed1"]
    assert not result["failed"]
    assert _snapshot(out / "teacher_seed0") == teacher_files  # never retrained, not even touched
    record = json.loads((out / "kd_seed0" / "run.json").read_text())
    assert record["resumes"][0]["from_epoch"] >= 1  # continued from its checkpoint
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, 9)) and killed_epochs >= 2

    # the sweep's summary is `gkl summarize` on the same runs
    again = summarize([out], baseline="kd")
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(again.to_json()))
    assert [row["setting"] for row in again.rows] == ["teacher", "kd"]  # the study's order
    # summary.md's cells computed here from the runs' metrics.jsonl (tests/summary_expectations.py)
    header, table_rows = parse_table((out / "summary.md").read_text())
    assert header == ["setting", "seeds", LAST, BEST, f"Δ {LAST} vs kd"]
    expected = expected_rows({"kd": [out / "kd_seed0", out / "kd_seed1"], "teacher": [out / "teacher_seed0"]})
    expected["kd"][f"Δ {LAST} vs kd"] = "(baseline)"
    expected["teacher"][f"Δ {LAST} vs kd"] = "-"  # one common seed: no paired difference
    assert table_rows == expected
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # a third call trains nothing
    assert run_sweep(study, out_dir=out)["trained"] == []


@pytest.mark.slow
def test_submitit_local_executor_runs_a_study(configs: Path) -> None:
    pytest.importorskip("submitit")
    out = configs / "out"
    study = _study(configs, "config: base.yaml\nseeds: [0]\nsettings: {ce: {}}\n")
    from gkl.cli import main

    assert main(["sweep", str(study), "--out", str(out), "--launcher", "submitit-local"]) == 0  # as --launcher slurm
    assert (out / "submitit").is_dir()
    assert json.loads((out / "study.json").read_text())["runs"][0]["status"] == "finished"
    assert json.loads((out / "ce_seed0" / "summary.json").read_text())["epochs"] == 1
    assert (out / "summary.csv").read_text().splitlines()[1].startswith("ce,1,")


def test_command_front_dry_run_prints_every_run(configs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from gkl.commands import analyze, summarize, sweep

    parser = argparse.ArgumentParser(prog="gkl")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep.add_parser(sub), summarize.add_parser(sub), analyze.add_parser(sub)
    study = _study(configs, "config: base.yaml\nseeds: 3\nsettings: {ce: {}}\n")
    args = parser.parse_args(["sweep", str(study), "--dry-run", "--out", str(configs / "out")])
    assert sweep.run(args) == 0
    head, *lines = capsys.readouterr().out.splitlines()
    assert head.startswith(f"# 3 runs into {configs / 'out'}; estimated ")
    assert [line.split()[0] for line in lines] == ["ce_seed0", "ce_seed1", "ce_seed2"]
    assert all(" gkl train " in line and line.endswith("--resume") and "GPU-h" in line for line in lines)
    assert not (configs / "out").exists()
    args = parser.parse_args(["analyze", "margins", "a", "b", "--adversarial", "--eps", "0.1"])
    assert (args.analysis, args.adversarial, args.eps) == ("margins", True, 0.1)
    with pytest.raises(InputError, match="--jobs"):
        run_sweep(study, jobs=0)


def test_shipped_clip_study_chains_the_teacher_run_into_clip_distill(tmp_path: Path) -> None:
    """A CLIP student's teacher is the trained teacher run's checkpoint (weights under 'model')."""
    study = load_study(Path(__file__).resolve().parents[1] / "configs" / "studies" / "clip_demo.yaml", out_dir=tmp_path)
    runs = {r.name: r for r in study.runs}
    assert runs["teacher_seed0"].command == "clip-train" and runs["contrastive_seed1"].command == "clip-train"
    student = runs["gkl_seed2"]
    assert student.command == "clip-distill" and student.depends_on == ["teacher_seed0"]
    assert f"teacher.checkpoint={tmp_path / 'teacher_seed0' / 'best.pt'}" in student.overrides
    assert (
        "teacher.checkpoint_key=model" in student.overrides
        and "teacher.name=gkl-tiny-clip-teacher" in student.overrides
    )
    assert not any(o.startswith("teacher.") for o in runs["contrastive_seed0"].overrides)
