"""A study's robust evaluation after training (``evaluate:``) and its ``paper:`` columns: a real sweep of
GKL-AT on the bundled digits (tests/studies/paper_at_demo.yaml, made-up reference numbers) runs
``gkl evaluate --robust`` after each run; the "paper | ours | Δ" cells of `gkl sweep` and `gkl summarize`
equal values computed here from each run's evaluations.jsonl; a second sweep finds the evaluations
recorded and runs none; a ``paper:`` column no evaluation produces is one line before any run."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from gkl.cli import main
from gkl.study import load_study, run_sweep
from gkl.study.evaluation import EvaluationJob, StudyEvaluation, is_recorded, parse_evaluation, recorded_values
from gkl.study.inline import InlineLauncher
from gkl.study.launch import cli_command
from gkl.utils.errors import ConfigError, InputError

HERE = Path(__file__).resolve().parent
STUDY = HERE / "studies" / "paper_at_demo.yaml"
#: column -> (attack in the report, eps): what each paper: column of the study means
COLUMNS = {
    "aa@0.1": ("autoattack", 0.1),
    "aa@0.05": ("autoattack", 0.05),
    "pgd3@0.05": ("pgd3", 0.05),
    "worst@0.1": ("worst", 0.1),
}


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]


def _accuracy(robust: dict, attack: str, eps: float) -> float:
    (result,) = [r for r in robust["results"] if r["eps"] == eps]
    return 100 * (result["worst_case"] if attack == "worst" else result["accuracy"][attack])


@pytest.mark.slow
def test_robust_paper_columns_of_a_real_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    result = run_sweep(STUDY, out_dir=out, overrides=[f"data.root={tmp_path / 'data'}"], launcher=InlineLauncher(main))
    assert not result["failed"], result["failed"]
    assert result["trained"] == ["gkl_seed0", "gkl_seed1"]
    assert result["evaluated"] == ["gkl_seed0.evaluate", "gkl_seed1.evaluate"]

    expected: dict[str, tuple[float, float, float, float]] = {}
    per_seed: dict[str, list[float]] = {column: [] for column in COLUMNS}
    tops = []
    for seed in (0, 1):
        run_dir = out / f"gkl_seed{seed}"
        (record,) = _records(run_dir)  # the sweep evaluated each run once
        assert record["kind"] == "robust" and record["overrides"] == [] and record["weights"] == "raw"
        assert record["robust_options"] == {
            "eps_list": [0.05, 0.1],
            "attacks": ["pgd3", "autoattack"],
            "autoattack_version": "fast",
            "num_examples": 16,
            "norm": "linf",
        }
        robust = record["results"]["last"]["robust"]
        assert robust["num_examples"] == 16 and robust["settings"]["seed"] == seed
        for column, (attack, eps) in COLUMNS.items():
            per_seed[column].append(_accuracy(robust, attack, eps))
        tops.append(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["eval"]["top1"])
    paper = load_study(STUDY).paper["gkl"]
    for column, values in {**per_seed, "top1": tops}.items():
        mean = statistics.mean(values)
        expected[column] = (paper[column], mean, statistics.stdev(values), mean - paper[column])
    # the attacks did something, so the columns are not all the clean accuracy
    assert min(per_seed["aa@0.1"]) < max(tops) and per_seed["worst@0.1"] <= per_seed["aa@0.1"]

    data = json.loads((out / "summary.json").read_text())
    for column, (number, mean, std, delta) in expected.items():
        cell = data["paper"]["gkl"][column]
        assert cell["paper"] == number and cell["ours"]["n"] == 2, column
        assert cell["ours"]["mean"] == pytest.approx(mean, abs=1e-12), column
        assert cell["ours"]["std"] == pytest.approx(std, abs=1e-12) and cell["delta"] == pytest.approx(delta)
    table = (out / "summary.md").read_text()
    row = "| gkl | " + " | ".join(
        f"{number:.2f} | {mean:.2f} ± {std:.2f} (n=2) | {delta:+.2f}"
        for number, mean, std, delta in (expected[c] for c in paper)
    )
    assert row + " |" in table, table
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["evaluate"]["gkl"]["eps"] == [0.05, 0.1]
    assert [r["evaluation"] for r in manifest["runs"]] == ["recorded", "recorded"]

    # gkl summarize on the folder reads the evaluations through study.json: the same table
    capsys.readouterr()
    assert main(["summarize", str(out)]) == 0
    assert capsys.readouterr().out.strip() == table.strip()

    # resumed: the runs and their evaluations are recorded, nothing runs again
    again = run_sweep(STUDY, out_dir=out, overrides=[f"data.root={tmp_path / 'data'}"], launcher=InlineLauncher(main))
    assert again["reused"] == ["gkl_seed0", "gkl_seed1"] and again["trained"] == [] and again["evaluated"] == []
    assert len(_records(out / "gkl_seed0")) == 1

    # only the exact evaluation counts: other options, other weights or config overrides are another one
    evaluation = load_study(STUDY).evaluations["gkl"]
    run_dir = out / "gkl_seed0"
    l2 = ["--robust", "--norm", "l2", "--eps", "0.5", "--attacks", "pgd3", "--num-examples", "8", "--which", "last"]
    assert main(["evaluate", str(run_dir), *l2]) == 0  # gkl evaluate --norm: recorded with its norm
    record_l2 = _records(run_dir)[-1]
    assert record_l2["robust_options"]["norm"] == "l2" and record_l2["results"]["last"]["robust"]["norm"] == "l2"
    assert recorded_values(run_dir, evaluation, "raw", list(COLUMNS)) == {c: v[0] for c, v in per_seed.items()}
    record = _records(run_dir)[0]
    assert is_recorded(run_dir, evaluation, "raw") and not is_recorded(run_dir, evaluation, "ema")
    for change in (
        lambda r: r["robust_options"].update(num_examples=17),
        lambda r: r["robust_options"].update(norm="l2"),
        lambda r: r.update(overrides=["data.root=elsewhere"]),
    ):
        other = copy.deepcopy(record)
        change(other)
        (run_dir / "evaluations.jsonl").write_text(json.dumps(other) + "\n")
        assert not is_recorded(run_dir, evaluation, "raw")
    # the latest matching record is read; a single-radius evaluation reads its columns without @eps
    later = copy.deepcopy(record)
    later["results"]["last"]["robust"]["results"][1]["accuracy"]["autoattack"] = 0.5
    (run_dir / "evaluations.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(later) + "\n")
    assert recorded_values(run_dir, evaluation, "raw", ["aa@0.1", "aa@0.05"]) == {
        "aa@0.1": 50.0,
        "aa@0.05": per_seed["aa@0.05"][0],
    }
    single = StudyEvaluation(("autoattack",), (0.1,), ("0.1",), autoattack_version="fast", num_examples=16)
    alone = copy.deepcopy(record)
    alone["robust_options"].update(eps_list=[0.1], attacks=["autoattack"])
    alone["results"]["last"]["robust"]["results"] = alone["results"]["last"]["robust"]["results"][1:]
    (run_dir / "evaluations.jsonl").write_text(json.dumps(alone) + "\n")
    assert recorded_values(run_dir, single, "raw", ["aa", "worst"]) == {
        "aa": per_seed["aa@0.1"][0],
        "worst": _accuracy(alone["results"]["last"]["robust"], "worst", 0.1),
    }

    # a failed evaluation is reported like a failed run; the summary keeps the seeds that have one
    (run_dir / "evaluations.jsonl").write_text(json.dumps(record) + "\n")
    (out / "gkl_seed1" / "evaluations.jsonl").unlink()
    (out / "gkl_seed1" / "checkpoint.pt").rename(out / "gkl_seed1" / "moved.pt")
    failed = run_sweep(STUDY, out_dir=out, overrides=[f"data.root={tmp_path / 'data'}"], launcher=InlineLauncher(main))
    log = out / "logs" / "gkl_seed1.evaluate.log"
    assert failed["failed"] == {"gkl_seed1.evaluate": f"exit 2; log: {log}"} and failed["evaluated"] == []
    assert "no last checkpoint" in log.read_text()
    manifest = json.loads((out / "study.json").read_text())
    assert [r["evaluation"] for r in manifest["runs"]] == ["recorded", "failed (exit 2)"]
    cells = json.loads((out / "summary.json").read_text())["paper"]["gkl"]
    assert cells["top1"]["ours"]["n"] == 2
    for column, values in per_seed.items():
        assert cells[column]["ours"]["n"] == 1 and cells[column]["ours"]["std"] is None
        assert cells[column]["ours"]["mean"] == values[0]


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = STUDY.read_text().replace("../../configs/", f"{HERE.parent / 'configs'}/")
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new))
    return path


PAPER = "paper: {top1: 40.0, aa@0.1: 10.0, aa@0.05: 20.0, pgd3@0.05: 25.0, worst@0.1: 8.5}"
EVALUATE = "evaluate: {attacks: [pgd3, autoattack], eps: [0.05, 0.1], autoattack_version: fast, num_examples: 16}"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            EVALUATE,
            "",
            "settings.gkl.paper.aa@0.1: a 'adv_train' run does not write the metric 'aa@0.1'; it "
            "writes top1, top5, many, medium, few; robust accuracies (aa, pgd<k>, cw<k>, worst",
        ),
        (
            PAPER,
            "paper: {aa: 10.0}",
            "settings.gkl.paper.aa: the evaluation has several radii (0.05, 0.1): name one, e.g. aa@0.05",
        ),
        (
            PAPER,
            "paper: {pgd20@0.1: 10.0}",
            "settings.gkl.paper.pgd20@0.1: the setting's evaluation runs pgd3, "
            "autoattack; add 'pgd20' to evaluate.attacks",
        ),
        (PAPER, "paper: {aa@8/255: 10.0}", "settings.gkl.paper.aa@8/255: the evaluation's radii are 0.05, 0.1"),
        (PAPER, "paper: {autoattack: 10.0}", "settings.gkl.paper.autoattack: a 'adv_train' run does not write"),
        ("num_examples: 16", "num_example: 16", "evaluate: unknown key 'num_example'; known keys: attacks, eps"),
        (
            "eps: [0.05, 0.1]",
            "eps: [0.05, 8/0]",
            "evaluate.eps: expected radii >= 0: numbers or fractions like 8/255, got '8/0'",
        ),
        (
            "attacks: [pgd3, autoattack]",
            "attacks: [fgsm]",
            "evaluate.attacks: expected names autoattack, pgd<steps> or cw<steps>, got 'fgsm'",
        ),
        (
            "autoattack_version: fast",
            "autoattack_version: quick",
            "evaluate.autoattack_version: expected one of ['standard', 'fast'], got 'quick'",
        ),
        ("num_examples: 16", "num_examples: 0", "evaluate.num_examples: expected a value >= 1, got 0"),
        (
            PAPER,
            PAPER + ", evaluate: {norm: l1}",
            "settings.gkl.evaluate.norm: expected one of ['linf', 'l2'], got 'l1'",
        ),
        (
            PAPER,
            "overrides: {data.normalize: true}, paper: {top1: 1.0}",
            "settings.gkl (the study's evaluate): robust evaluation needs inputs in [0, 1]",
        ),
    ],
)
def test_a_column_or_evaluation_that_cannot_be_made_is_one_line_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, message: str
) -> None:
    study = _variant(tmp_path, old, new)
    assert main(["sweep", str(study), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_setting_may_replace_or_drop_the_studys_evaluation(tmp_path: Path) -> None:
    own = "evaluate: {eps: [8/255], autoattack_version: fast}, paper: {top1: 40.0, aa: 10.0, worst: 9.0}"
    study = load_study(_variant(tmp_path, PAPER, own))
    evaluation = study.evaluations["gkl"]
    assert evaluation.eps == (8 / 255,) and evaluation.attacks == ("autoattack",) and evaluation.checkpoint == "last"
    assert study.paper["gkl"] == {"top1": 40.0, "aa": 10.0, "worst": 9.0}
    assert evaluation.cli_args(Path("R")) == [
        "evaluate", "R", "--robust", "--eps", repr(8 / 255), "--attacks", "autoattack", "--norm", "linf",
        "--autoattack-version", "fast", "--which", "last",
    ]  # fmt: skip
    # a Slurm job with several GPUs trains under torchrun; its evaluation is one process
    job = EvaluationJob("gkl_seed0.evaluate", "gkl_seed0", Path("R"), evaluation)
    assert cli_command(job, gpus=2, python="py") == ["py", "-m", "gkl.cli", *evaluation.cli_args(Path("R"))]
    assert cli_command(study.runs[0], gpus=2, python="py")[:3] == ["py", "-m", "torch.distributed.run"]
    dropped = load_study(_variant(tmp_path, PAPER, "evaluate: null, paper: {top1: 40.0}"))
    assert dropped.evaluations == {}
    with pytest.raises(ConfigError, match=r"^x: evaluate: expected a mapping"):
        parse_evaluation("x: evaluate", [1])
    with pytest.raises(InputError, match="aa@0.1: a 'adv_train' run does not write"):
        load_study(_variant(tmp_path, PAPER, "evaluate: null, " + PAPER))


def test_the_study_reads_the_file_gkl_evaluate_writes() -> None:
    """gkl.study may not import gkl.evaluate (the layers): the file name is spelled twice, equal."""
    from gkl.evaluate.run_eval import EVALUATIONS_FILE
    from gkl.study import evaluation

    assert evaluation.EVALUATIONS_FILE == EVALUATIONS_FILE
