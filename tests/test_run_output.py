"""What a run prints: a short report at the end (the selected metric, the best epoch, where the files are)
instead of the summary JSON; the epoch lines name the objective's terms and metrics (SSL: unsupervised
loss, mask ratio, pseudo-label accuracy); the progress bar shows on a terminal only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_ends_with_a_short_report_naming_the_metric_the_best_epoch_and_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gkl.cli import main

    argv = [
        "ssl-train",
        str(ROOT / "configs/ssl/demo/fixmatch_gkl.yaml"),
        f"out_dir={tmp_path}",
        "train.iterations=20",
        "train.eval_every_steps=10",
        "train.schedule.warmup_steps=2",
        "data.val_fraction=0.1",
        "train.progress=true",  # not a terminal here: no bar, the lines stand
    ]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    run = tmp_path / "fixmatch_gkl"
    summary = json.loads((run / "summary.json").read_text())
    assert len(out) == 2, out  # not the JSON
    assert f"top1 {summary['last_top1']:.2f} at the end" in out[0]
    assert f"best validation top1 {summary['best']:.2f} at epoch {summary['best_epoch']}" in out[0]
    assert f"(test top1 {summary['test_top1_at_best_val']:.2f} there)" in out[0]
    assert out[1].startswith(f"files: {run}/ (best.pt, checkpoint.pt, metrics.jsonl, summary.json")
    # the SSL epoch lines carry the unsupervised loss, the mask ratio and the pseudo-label accuracy
    log = (run / "train.log").read_text()
    last = [line for line in log.splitlines() if "| loss " in line][-1]
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]["train"]
    for key in ("unsup", "mask_ratio", "pseudo_acc"):
        assert f"{key} {record[key]:.4g}" in last, (key, last)
    assert "\u2588" not in log  # no progress bar in the log


def test_the_progress_bar_shows_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from gkl.engine.logging import on_terminal, progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    items = [1, 2, 3]
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not on_terminal(True)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert on_terminal(True) and not on_terminal(False)
    bar = progress(items, total=3, desc="epoch 1", enabled=on_terminal(True))
    assert list(bar) == items and hasattr(bar, "set_postfix_str")
    assert progress(items, total=3, desc="epoch 1", enabled=False) is items


def test_epoch_lines_name_the_terms_unless_the_loss_is_the_only_one() -> None:
    from gkl.engine.logging import epoch_line

    base = {"epoch": 3, "step": 30, "lr": 0.1, "time": 1.0}
    one = epoch_line({**base, "train": {"ce": 0.5, "loss": 0.5, "acc": 90.0}}, metric="top1", by_steps=False)
    assert "loss 0.5000 | train_acc 90.00" in one
    ssl = {"sup_ce": 0.25, "unsup": 0.125, "loss": 0.375, "mask_ratio": 0.75, "pseudo_acc": 0.875, "acc": 80.0}
    line = epoch_line({**base, "train": ssl}, metric="top1", by_steps=False)
    assert "loss 0.3750 (sup_ce 0.25, unsup 0.125, mask_ratio 0.75, pseudo_acc 0.875) | train_acc 80.00" in line


def test_the_demo_says_which_run_it_is_at(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gkl.cli import main

    demo = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "1", "--out", str(demo)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gkl demo [")]
    runs = ["teacher", "student_ce_seed0", "student_kd_seed0", "student_gkl_seed0"]
    assert err[0::2] == [f"gkl demo [{i}/4] {demo / name}: training" for i, name in enumerate(runs, 1)]
    for i, name in enumerate(runs, 1):
        last = json.loads((demo / name / "summary.json").read_text())["last_top1"]
        assert err[2 * i - 1] == f"gkl demo [{i}/4] {demo / name}: done, test top-1 {last:.2f} at the last epoch"
