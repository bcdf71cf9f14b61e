"""The `gkl` error contract and `gkl evaluate`'s record, through the commands a user types.

Contract (README "Exit status", docs/recipes.md): bad input -> one line ``gkl <cmd>: error: ...``
and exit 2; a training stop (non-finite loss, collapse) -> exit 3; any other exception is a bug
and keeps its traceback. `gkl evaluate` appends every evaluation to RUN/evaluations.jsonl, checks
its outputs before evaluating and keeps a finished evaluation when writing fails.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import gkl.evaluate.run_eval as run_eval
import gkl.runner
from gkl.cli import main
from gkl.evaluate.run_eval import EVALUATIONS_FILE, read_evaluations
from helpers import assert_one_line_error

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch CE run of the adversarial demo's model (inputs in [0, 1], so --robust applies)."""
    tmp = tmp_path_factory.mktemp("trust")
    args = [
        "train",
        str(CONFIGS / "demo_at" / "standard.yaml"),
        f"out_dir={tmp}",
        "name=ce",
        "train.epochs=1",
        "model.name=digits_mlp_small",
    ]
    assert main(args) == 0
    return tmp / "ce"


# ---------------------------------------------------------------- exit statuses


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(cfg, *, resume=False):
        raise ValueError("an internal inconsistency")  # a plain ValueError is a bug, not bad input

    monkeypatch.setattr(gkl.runner, "run_experiment", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["train", str(CONFIGS / "demo" / "teacher.yaml"), f"out_dir={tmp_path}"])


def test_full_disk_is_one_line_naming_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(cfg, *, resume=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoint.pt.tmp"))

    monkeypatch.setattr(gkl.runner, "run_experiment", full)
    assert main(["train", str(CONFIGS / "demo" / "teacher.yaml"), f"out_dir={tmp_path}"]) == 2
    assert_one_line_error(capsys, "train", "No space left on device", "checkpoint.pt.tmp")


def test_training_stops_exit_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gkl.engine.errors import CollapseError, NonFiniteLossError

    for error in (NonFiniteLossError, CollapseError):

        def stop(cfg, *, resume=False, error=error):
            raise error("stopped at epoch 2, step 17: term 'kd'; last good checkpoint epoch 1")

        monkeypatch.setattr(gkl.runner, "run_experiment", stop)
        assert main(["train", str(CONFIGS / "demo" / "teacher.yaml"), f"out_dir={tmp_path}"]) == 3
        err = capsys.readouterr().err
        assert "training stopped" in err and "epoch 2, step 17" in err and "Traceback" not in err


def test_real_divergence_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "train",
        str(CONFIGS / "demo_at" / "standard.yaml"),
        f"out_dir={tmp_path}",
        "model.name=digits_mlp_small",
        "train.epochs=1",
        "train.optim.lr=1.0e30",
    ]
    assert main(args) == 3
    assert "non-finite loss at epoch 1" in capsys.readouterr().err


def test_wrong_command_for_kind_and_bad_eps_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(CONFIGS / "demo" / "student_kd.yaml")]) == 2
    assert_one_line_error(capsys, "train", "student_kd.yaml", "gkl distill")
    assert main(["evaluate", str(tmp_path), "--robust", "--eps", "8/0"]) == 2
    assert_one_line_error(capsys, "evaluate", "--eps", "8/0")


def test_missing_teacher_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_teacher.pt"
    assert (
        main(
            [
                "distill",
                str(CONFIGS / "demo" / "student_kd.yaml"),
                f"out_dir={tmp_path / 'runs'}",
                f"data.root={tmp_path / 'data'}",
                f"teacher.checkpoint={missing}",
                "train.progress=false",
            ]
        )
        == 2
    )
    assert_one_line_error(capsys, "distill", "teacher.checkpoint", str(missing))


# ---------------------------------------------------------------- arguments


def test_overrides_anywhere_on_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(CONFIGS / "demo" / "student_gkl.yaml")
    assert main(["distill", cfg, "--resume", "train.optim.lr=0.125", "--print-config", "distill.gamma=0.5"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.125" in out and "gamma: 0.5" in out
    assert main(["distill", "--print-config", cfg, "name=moved"]) == 0
    assert "name: moved" in capsys.readouterr().out


@pytest.mark.parametrize("seeds", ["0", "-2", "two"])
def test_demo_rejects_bad_seed_counts(seeds: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--seeds", seeds, "--out", "/nonexistent/never-written"])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys, "demo", "--seeds", "integer >= 1")


@pytest.mark.parametrize(
    "command", [[], ["train"], ["distill"], ["adv-train"], ["evaluate"], ["summarize"], ["check"], ["demo"]]
)
def test_help_is_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gkl")
    for markup in ("``", ":class:", ":func:", ":mod:", ".. "):
        assert markup not in out, markup


# ---------------------------------------------------------------- gkl evaluate


def test_evaluations_are_appended_never_overwritten(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = read_evaluations(digits_run)
    assert (
        main(
            [
                "evaluate",
                str(digits_run),
                "--robust",
                "--eps",
                "0.1",
                "--attacks",
                "pgd5",
                "--num-examples",
                "32",
                "--which",
                "last",
            ]
        )
        == 0
    )
    assert main(["evaluate", "--which", "last", str(digits_run), "--weights", "ema"]) == 0
    assert "evaluation appended to" in capsys.readouterr().out
    records = read_evaluations(digits_run)[len(before) :]
    assert [r["kind"] for r in records] == ["robust", "clean"]
    robust, clean = records
    assert robust["results"]["last"]["robust"]["num_examples"] == 32  # the robust result survived
    assert clean["weights"] == "ema" and "robust" not in clean["results"]["last"]
    assert robust["command"][:2] == ["gkl", "evaluate"]
    # the run's own evaluation of the last epoch is what a clean evaluation of the raw weights gives
    summary = json.loads((digits_run / "summary.json").read_text())
    assert main(["evaluate", str(digits_run), "--which", "last", "--weights", "raw"]) == 0
    assert read_evaluations(digits_run)[-1]["results"]["last"]["clean"]["top1"] == pytest.approx(
        summary["last_top1"], abs=1e-9
    )


def _refused_before_evaluating(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = run_eval.evaluate_run

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_eval, "evaluate_run", counting)
    return calls


def test_outputs_are_checked_before_the_evaluation(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _refused_before_evaluating(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert main(["evaluate", str(digits_run), "--output", str(blocker / "report.json")]) == 2
    assert_one_line_error(capsys, "evaluate", str(blocker))
    existing = tmp_path / "old.json"
    existing.write_text('{"keep": true}')
    assert main(["evaluate", str(digits_run), "--output", str(existing)]) == 2
    assert_one_line_error(capsys, "evaluate", str(existing), "never overwritten")
    assert existing.read_text() == '{"keep": true}'
    assert main(["evaluate", str(digits_run), "--attacks", "pgd10,fgsm", "--robust"]) == 2
    assert_one_line_error(capsys, "evaluate", "fgsm")
    assert main(["evaluate", str(tmp_path / "no_run")]) == 2
    assert_one_line_error(capsys, "evaluate", "no_run")
    assert calls.count(1) <= 2  # the last two reach evaluate_run, which refuses before loading any data

    # a fresh --output is written, and the same evaluation is appended to the run's record
    fresh = tmp_path / "fresh.json"
    n = len(read_evaluations(digits_run))
    assert main(["evaluate", str(digits_run), "--which", "best", "--output", str(fresh)]) == 0
    assert json.loads(fresh.read_text())["results"]["best"] == read_evaluations(digits_run)[n]["results"]["best"]


def test_unwritable_record_is_refused_before_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], digits_run: Path
) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    (run / EVALUATIONS_FILE).unlink(missing_ok=True)
    (run / EVALUATIONS_FILE).mkdir()  # cannot be appended to
    calls = _refused_before_evaluating(monkeypatch)
    assert main(["evaluate", str(run)]) == 2
    assert_one_line_error(capsys, "evaluate", EVALUATIONS_FILE)
    assert calls == []


def test_a_finished_evaluation_survives_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], digits_run: Path
) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    real = run_eval.evaluate_run

    def evaluate_then_lose_the_disk(*args, **kwargs):
        result = real(*args, **kwargs)
        record = run / EVALUATIONS_FILE  # the record becomes unwritable while the evaluation ran
        record.unlink(missing_ok=True)
        record.mkdir()
        return result

    monkeypatch.setattr(run_eval, "evaluate_run", evaluate_then_lose_the_disk)
    assert main(["evaluate", str(run), "--which", "last"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "could not write" in err and EVALUATIONS_FILE in err
    fallback = Path(err.split("saved to ")[1].split(" and printed")[0])
    saved = json.loads(fallback.read_text())
    assert fallback.parent == run and saved["results"]["last"]["clean"]["top1"] >= 0
    assert json.dumps(saved, indent=2) in captured.out  # and the whole report is printed


def test_a_torn_record_line_does_not_hide_later_ones(tmp_path: Path) -> None:
    (tmp_path / EVALUATIONS_FILE).write_text('{"kind": "clean", "n": 1}\n{"kind": "rob')  # killed mid-write
    run_eval.append_evaluation(tmp_path, {"kind": "robust", "n": 2})
    assert [r["n"] for r in read_evaluations(tmp_path)] == [1, 2]


def test_truncated_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], digits_run: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    best = run / "best.pt"
    best.write_bytes(best.read_bytes()[:200])
    n = len(read_evaluations(run))
    assert main(["evaluate", str(run), "--which", "best"]) == 2
    assert_one_line_error(capsys, "evaluate", str(best))
    assert len(read_evaluations(run)) == n
