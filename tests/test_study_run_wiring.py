"""data.label_noise and data.val_fraction through the `gkl` command: model selection on the validation
split, test top-1 at the last and the best-val epoch, clean test labels, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gkl.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _args(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        "train",
        str(CONFIGS / "demo" / "teacher.yaml"),
        f"out_dir={tmp_path}",
        f"name={name}",
        f"data.root={tmp_path / 'data'}",
        "train.epochs=2",
        "train.progress=false",
        *extra,
    ]


def test_validation_split_drives_selection_and_noise_leaves_the_test_set_clean(tmp_path: Path) -> None:
    assert (
        main(
            _args(tmp_path, "noisy", "data.val_fraction=0.2", "data.label_noise={rate: 0.4, kind: symmetric, seed: 3}")
        )
        == 0
    )
    run = tmp_path / "noisy"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["select_split"] == "val" and "best_top1" not in summary
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["select"]["split"] == "val" for r in records)
    best = max(records, key=lambda r: (r["val"]["top1"], -r["epoch"]))  # first epoch reaching the best
    assert summary["best_val_top1"] == pytest.approx(best["val"]["top1"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["test_top1_at_best_val"] == pytest.approx(best["eval"]["top1"])
    assert summary["last_top1"] == pytest.approx(records[-1]["eval"]["top1"])
    # 1000 clean test examples and 20 % of the 4000 training examples held out
    assert records[-1]["eval"]["count"] == 1000 and records[-1]["val"]["count"] == 800


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("data.label_noise={rate: 1.0}", "data.label_noise.rate"),
        ("data.label_noise={rate: 0.2, kind: pairs}", "data.label_noise.kind"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.val_fraction=0.0001", "val_fraction"),  # leaves a class without validation examples
    ],
)
def test_bad_noise_or_split_settings_are_one_line_errors(
    tmp_path: Path, extra: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(tmp_path, "bad", extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
