"""Published numbers in a study (``paper:`` / ``source:``): a real sweep on the bundled MNIST-1D demo with
made-up reference numbers (tests/studies/paper_demo.yaml); the "paper | ours | Δ" table of `gkl sweep` and
`gkl summarize` against values computed here from each run's metrics.jsonl; a ``paper:`` metric the task
does not write is one line before any run; the dry run's cost follows the documented formula."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml
from torch import nn

from gkl.cli import main
from gkl.study import load_study, run_sweep
from gkl.study.cost import SUSTAINED_FLOPS
from gkl.study.inline import InlineLauncher
from gkl.utils.errors import InputError

HERE = Path(__file__).resolve().parent
STUDY = HERE / "studies" / "paper_demo.yaml"


def _last_eval(run_dir: Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["eval"]


@pytest.mark.slow
def test_paper_column_and_delta_of_a_real_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    result = run_sweep(STUDY, out_dir=out, launcher=InlineLauncher(main))  # the runs in this process
    assert not result["failed"]
    assert sorted(result["trained"]) == ["ce_seed0", "ce_seed1", "kd_seed0", "kd_seed1", "teacher_seed0"]
    paper = {
        name: setting["paper"]
        for name, setting in yaml.safe_load(STUDY.read_text())["settings"].items()
        if "paper" in (setting or {})
    }
    expected = {}
    for setting, seeds in (("teacher", [0]), ("kd", [0, 1])):
        for metric, number in paper[setting].items():
            values = [_last_eval(out / f"{setting}_seed{s}")[metric] for s in seeds]
            mean = statistics.mean(values)
            std = statistics.stdev(values) if len(values) > 1 else None
            expected[(setting, metric)] = (number, mean, std, len(values), mean - number)

    data = json.loads((out / "summary.json").read_text())
    assert data["source"] == "made-up reference numbers for the test"
    assert set(data["paper"]) == {"teacher", "kd"}  # ce has no published number
    for (setting, metric), (number, mean, std, n, delta) in expected.items():
        cell = data["paper"][setting][metric]
        assert cell["paper"] == number and cell["ours"]["n"] == n
        assert cell["ours"]["mean"] == pytest.approx(mean, abs=1e-12) and cell["delta"] == pytest.approx(delta)
        if std is not None:
            assert cell["ours"]["std"] == pytest.approx(std)

    table = (out / "summary.md").read_text()
    number, mean, std, n, delta = expected[("kd", "top1")]
    n5, mean5, std5, _, delta5 = expected[("kd", "top5")]
    kd_row = (
        f"| kd | {number:.2f} | {mean:.2f} ± {std:.2f} (n=2) | {delta:+.2f} "
        f"| {n5:.2f} | {mean5:.2f} ± {std5:.2f} (n=2) | {delta5:+.2f} |"
    )
    number, mean, _, _, delta = expected[("teacher", "top1")]
    teacher_row = f"| teacher | {number:.2f} | {mean:.2f} (n=1) | {delta:+.2f} |  |  |  |"
    assert kd_row in table and teacher_row in table
    assert "Against the published numbers (made-up reference numbers for the test):" in table
    # rows in the study's order with the study's names
    assert [row["setting"] for row in data["rows"]] == ["teacher", "ce", "kd"]
    csv_head = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"paper_top1", "ours_top1_mean", "paper_top1_delta", "paper_top5"} <= set(csv_head)

    # gkl summarize on the sweep's folder prints the same table (study.json gives names, order, numbers)
    capsys.readouterr()
    assert main(["summarize", str(out)]) == 0
    assert capsys.readouterr().out.strip() == table.strip()


def test_a_paper_metric_the_task_does_not_write_is_one_line_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    text = STUDY.read_text().replace("../../configs/", f"{HERE.parent / 'configs'}/")
    text = text.replace("paper: {top1: 60.5, top5: 95.25}", "paper: {top1: 60.5, mIoU: 40.0}")
    bad.write_text(text)
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings.kd.paper.mIoU: a 'distill' run does not write the metric 'mIoU'" in err[0]
    assert "top1, top5" in err[0]
    assert not (tmp_path / "out").exists()
    bad.write_text(text.replace("paper: {top1: 60.5, mIoU: 40.0}", "paper: {top1: high}"))
    with pytest.raises(InputError, match=r"settings.kd.paper.top1: expected a finite number, got 'high'"):
        load_study(bad)
    bad.write_text("source: [1]\n" + text.replace("source:", "description:"))
    with pytest.raises(InputError, match="source: expected a string"):
        load_study(bad)


def test_dry_run_cost_follows_the_documented_formula(tmp_path: Path) -> None:
    """CE student (an MLP): 3 × forward FLOPs (2 per multiply-add of each Linear) × examples / throughput."""
    result = run_sweep(STUDY, out_dir=tmp_path / "out", only=["ce"], seeds=[0], dry_run=True)
    (row,) = result["plan"]
    study = load_study(STUDY, only=["ce"], seeds=[0])
    cfg = study.runs[0].resolved
    from gkl.models.registry import create_model

    model = create_model(cfg.model.name, 10, **cfg.model.kwargs)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear and not [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    forward = sum(2 * m.in_features * m.out_features for m in linear)
    examples = cfg.train.epochs * 4000 * (1 - cfg.data.val_fraction)
    assert row["gpu_hours"] == pytest.approx(3 * forward * examples / (SUSTAINED_FLOPS * 3600), rel=1e-9)
    assert row["cost"].endswith("GPU-h") and not (tmp_path / "out").exists()
