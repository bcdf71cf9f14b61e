"""The `gkl` command end to end on bundled data: train, distill, evaluate, adv-train, check, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gkl.cli import main
from gkl.evaluate.run_eval import read_evaluations
from summary_expectations import BEST, LAST, expected_rows, parse_table, top1_per_epoch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _common(tmp_path: Path, name: str, epochs: int = 2) -> list[str]:
    return [
        f"out_dir={tmp_path / 'runs'}",
        f"name={name}",
        f"data.root={tmp_path / 'data'}",
        f"train.epochs={epochs}",
        "train.progress=false",
    ]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    assert main(["train", str(CONFIGS / "demo" / "teacher.yaml"), *_common(tmp, "teacher", epochs=3)]) == 0
    return tmp / "runs" / "teacher"


@pytest.mark.xdist_group("cli_teacher")  # the tests of the teacher_run fixture share one worker
def test_train_writes_a_complete_run_directory(teacher_run: Path) -> None:
    for name in ("checkpoint.pt", "best.pt", "metrics.jsonl", "config.yaml", "run.json", "summary.json"):
        assert (teacher_run / name).is_file(), name
    records = [json.loads(line) for line in (teacher_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    run = json.loads((teacher_run / "run.json").read_text())
    assert run["seed"] == 0 and "git_commit" in run
    # a 3-epoch CNN on MNIST-1D is far above chance (10%); threshold from the spread over seeds and
    # 1/2 threads (tests/helpers_margins.py)
    assert records[-1]["eval"]["top1"] > 60.0


@pytest.mark.xdist_group("cli_teacher")
def test_distill_from_the_trained_teacher_and_evaluate(
    teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "distill",
        str(CONFIGS / "demo" / "student_gkl.yaml"),
        *_common(tmp_path, "gkl"),
        f"teacher.checkpoint={teacher_run / 'best.pt'}",
    ]
    assert main(args) == 0
    run_dir = tmp_path / "runs" / "gkl"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["best_top1"] >= summary["last_top1"]
    # the class-wise prior was stepped and checkpointed: rows are probability vectors, not uniform
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    prior = state["objective"]["prior.prior"]
    torch.testing.assert_close(prior.sum(1), torch.ones(10), rtol=0, atol=1e-5)
    assert not torch.allclose(prior, torch.full_like(prior, 0.1))

    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    report = read_evaluations(run_dir)[-1]
    assert set(report["results"]) == {"last", "best"}
    assert report["results"]["last"]["epoch"] == 2
    assert report["results"]["last"]["clean"]["top1"] == pytest.approx(summary["last_top1"], abs=1e-9)
    assert report["results"]["best"]["clean"]["top1"] == pytest.approx(summary["best_top1"], abs=1e-9)
    assert "top-1" in capsys.readouterr().out


def test_existing_runs_are_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", str(CONFIGS / "demo" / "student_ce.yaml"), *_common(tmp_path, "ce", epochs=1)]
    assert main(base) == 0
    checkpoint = tmp_path / "runs" / "ce" / "checkpoint.pt"
    saved = checkpoint.read_bytes()
    capsys.readouterr()
    # the same command again without --resume: refused, the run directory names itself
    assert main(base) == 2
    assert "checkpoint.pt" in capsys.readouterr().err
    # the same run continued to 2 epochs is a different run: the engine refuses it by name
    assert main([*base[:-2], "train.epochs=2", "train.progress=false", "--resume"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert checkpoint.read_bytes() == saved
    # resuming the finished run re-reports it without training again
    assert main([*base, "--resume"]) == 0
    assert checkpoint.read_bytes() == saved


@pytest.mark.xdist_group("cli_teacher")
def test_non_finite_loss_stops_with_a_clear_error(
    teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # alpha far too large for raw-logit wMSE with a trained teacher: the loss overflows
    args = [
        "distill",
        str(CONFIGS / "demo" / "student_gkl.yaml"),
        *_common(tmp_path, "diverge", epochs=2),
        f"teacher.checkpoint={teacher_run / 'best.pt'}",
        "distill.alpha=1.0e38",
        "distill.warmup_epochs=0",
    ]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 1" in err and "'gkl'" in err


def test_wrong_command_for_config_kind_and_bad_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(CONFIGS / "demo" / "student_kd.yaml")]) == 2
    assert "use 'gkl distill'" in capsys.readouterr().err
    assert main(["train", str(CONFIGS / "demo" / "teacher.yaml"), "train.optim.lrr=0.1"]) == 2
    assert "train.optim.lrr" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_print_config_shows_the_resolved_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["distill", str(CONFIGS / "cifar100" / "gkl" / "res56_res20.yaml"), "distill.gamma=0.5", "--print-config"])
        == 0
    )
    out = capsys.readouterr().out
    assert "gamma: 0.5" in out and "name: resnet20" in out and "- 150" in out


def test_check_prints_the_gradient_identity_and_fails_when_it_does_not_hold(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["check"]) == 0
    captured = capsys.readouterr()
    assert "OK: gradients of KL and DKL agree to < 1e-10" in captured.out and captured.err == ""
    # a DKL whose gradients are 1 % off: the check fails with exit status 1 and says so
    import gkl.study.analysis.equivalence as equivalence

    real_dkl = equivalence.dkl_loss
    monkeypatch.setattr(equivalence, "dkl_loss", lambda *a, **k: 1.01 * real_dkl(*a, **k))
    assert main(["check"]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH: gradients of KL and DKL differ by >= 1e-10" in captured.out
    assert captured.err == "gkl check: error: the KL and DKL gradients differ by >= 1e-10 (Theorem 1 fails)\n"


def test_adv_train_and_robust_evaluate_on_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "adv-train",
        str(CONFIGS / "demo_at" / "gkl.yaml"),
        *_common(tmp_path, "gkl_at"),
        "adversarial.awp_start_epoch=2",
    ]
    assert main(args) == 0
    run_dir = tmp_path / "runs" / "gkl_at"
    robust_args = ["--robust", "--autoattack-version", "fast", "--num-examples", "48", "--which", "last"]
    # a list of epsilons (numbers and fractions): one result per value, in the order given
    capsys.readouterr()
    eps_arg = "0.1,8/255,0.05"
    assert main(["evaluate", str(run_dir), *robust_args, "--eps", eps_arg, "--attacks", "pgd10,cw10"]) == 0
    printed = capsys.readouterr().out
    robust = read_evaluations(run_dir)[-1]["results"]["last"]["robust"]
    assert robust["num_examples"] == 48
    assert [r["eps"] for r in robust["results"]] == [0.1, 8 / 255, 0.05]
    for result in robust["results"]:
        pgd, cw = (f"{100 * result['accuracy'][a]:.2f}" for a in ("pgd10", "cw10"))
        row = [f"{result['eps'] * 255:.2f}/255", f"{100 * robust['clean_accuracy']:.2f}", pgd, cw]
        cells = [[c.strip() for c in line.split("|")] for line in printed.splitlines()]
        assert row in [c[:4] for c in cells], (row, printed)
    by_eps = {r["eps"]: r for r in robust["results"]}
    assert by_eps[0.1]["accuracy"]["pgd10"] < robust["clean_accuracy"]  # the attack does something at 0.1

    # a cheaper attack that beats AutoAttack is reported (constructed: an AutoAttack that returns
    # the clean images, as a run masked by the model's gradients would)
    from gkl.attacks.autoattack import AutoAttackResult

    def weak_autoattack(model, images, labels, **kwargs):
        with torch.no_grad():
            return AutoAttackResult(adversarial=images.clone(), robust=model(images).argmax(dim=1) == labels)

    monkeypatch.setattr("gkl.evaluate.robust.autoattack", weak_autoattack)
    assert main(["evaluate", str(run_dir), *robust_args, "--eps", "0.1", "--attacks", "pgd10,autoattack"]) == 0
    printed = capsys.readouterr().out
    robust = read_evaluations(run_dir)[-1]["results"]["last"]["robust"]
    assert robust["results"][0]["accuracy"]["autoattack"] == robust["clean_accuracy"]
    beaten = [w for w in robust["warnings"] if w.startswith("eps 0.1: pgd10 succeeds on ")]
    assert len(beaten) == 1 and "where AutoAttack fails" in beaten[0]
    assert int(beaten[0].split()[5]) >= 1
    assert f"warning: {beaten[0]}" in printed
    assert "warning: eps 0.1: pgd10 accuracy is below AutoAttack accuracy" in printed


def test_demo_quick_writes_table_and_curves_and_summarize_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "2", "--out", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "student, KD" in out and "student, GKL" in out
    results = json.loads((demo / "results.json").read_text())
    assert set(results["students"]) == {"ce", "kd", "gkl"}
    assert all(len(runs) == 2 for runs in results["students"].values())
    png = demo / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from gkl.study.summary import summarize_runs

    rows, table = summarize_runs(sorted(demo.glob("student_*")))
    by_method = {row["name"].split("_")[1]: row for row in rows}
    assert set(by_method) == {"ce", "kd", "gkl"} and all(row["seeds"] == 2 for row in rows)
    for method, runs in results["students"].items():
        assert by_method[method]["last_top1"] == [r["last"] for r in runs]
        assert by_method[method]["best_top1"] == [r["best"] for r in runs]
    assert main(["summarize", *map(str, sorted(demo.glob("student_*")))]) == 0
    printed = capsys.readouterr().out
    # every cell computed here from the runs' metrics.jsonl (tests/summary_expectations.py)
    header, table_rows = parse_table(printed)
    assert header == ["setting", "seeds", LAST, BEST]
    settings = {f"student_{m}": sorted(demo.glob(f"student_{m}_seed*")) for m in ("ce", "gkl", "kd")}
    assert table_rows == expected_rows(settings)
    for name, run_dirs in settings.items():
        seeds = ", ".join(f"seed {i}: {top1_per_epoch(d)[-1]:.2f}" for i, d in enumerate(run_dirs))
        assert f"- {name}: {seeds}" in printed.splitlines()
    assert main(["summarize", str(tmp_path / "missing")]) == 2
