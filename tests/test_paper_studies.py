"""configs/studies/paper/: one study per table of the GKL paper and per experiment of Kim et al.

Each setting carries the published numbers it should reproduce (``paper: {metric: number}``). This
test reads the files with yaml: every key is a study / setting key, every ``config:`` resolves and
loads as a config with the setting's overrides, every ``teacher:`` names a setting of the study, and
every ``paper:`` metric is one the run's evaluator writes at an evaluation (the classification
evaluator's ``top1`` / ``top5`` and, on ImageNet-LT, its ``groups`` many / medium / few; ``mIoU``;
the CLIP zero-shot accuracies), or a robust accuracy of the setting's ``evaluate:`` block (the study's
unless the setting gives its own): ``aa`` / ``pgd<k>`` / ``cw<k>`` / ``worst`` of an attack it runs, with
``@<eps>`` when it has several radii. The study loader checks the same when it reads ``paper:``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gkl.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_STUDIES = sorted((CONFIGS / "studies" / "paper").glob("*.yaml"))

STUDY_KEYS = {"config", "overrides", "seeds", "baseline", "settings", "out_dir", "description", "source", "evaluate"}
SETTING_KEYS = {"config", "overrides", "seeds", "teacher", "teacher_checkpoint", "description", "paper", "evaluate"}
#: what each kind of run writes at an evaluation (metrics.jsonl), by evaluator
CLASSIFIER = {"top1", "top5"}
LONG_TAIL_GROUPS = {"many", "medium", "few"}  # the classification evaluator's groups (ImageNet-LT's class_groups)
METRICS = {
    "train": CLASSIFIER,
    "distill": CLASSIFIER,
    "adv_train": CLASSIFIER,
    "ssl": CLASSIFIER,
    "segmentation": {"mIoU"},
    "clip_train": {"zeroshot_top1", "zeroshot_top5"},
    "clip_distill": {"zeroshot_top1", "zeroshot_top5"},
}


def _robust_columns(evaluate: dict | None) -> set[str]:
    """The paper: columns an evaluate: block produces, spelled as the study writes its radii."""
    if not evaluate:
        return set()
    names = {"aa" if a == "autoattack" else a for a in evaluate.get("attacks", ["autoattack"])} | {"worst"}
    radii = [str(e) for e in evaluate.get("eps", ["8/255"])]
    return names if len(radii) == 1 else {f"{n}@{e}" for n in names for e in radii}


def _settings(path: Path) -> tuple[dict, dict]:
    study = yaml.safe_load(path.read_text())
    return study, study["settings"]


def test_there_is_a_study_per_runnable_table() -> None:
    names = {p.stem for p in PAPER_STUDIES}
    for table in ("table01", "table02", "table03", "table04", "table05", "table06", "table07", "table17", "table18"):
        assert any(n.startswith(table) for n in names), table
    assert {"kim_cifar100", "kim_undertrained", "kim_imagenet"} <= names


@pytest.mark.parametrize("path", PAPER_STUDIES, ids=lambda p: p.stem)
def test_paper_study_loads_and_names_only_metrics_its_runs_write(path: Path) -> None:
    study, settings = _settings(path)
    assert set(study) <= STUDY_KEYS and isinstance(study.get("source"), str) and settings
    with_paper = 0
    for name, setting in settings.items():
        assert set(setting) <= SETTING_KEYS, (name, set(setting) - SETTING_KEYS)
        config = setting.get("config", study.get("config"))
        assert config is not None, name
        file = (path.parent / config).resolve()
        assert file.is_file(), f"{path.name}: {name}: {config} does not exist"
        overrides = [f"{k}={json.dumps(v)}" for k, v in (setting.get("overrides") or {}).items()]
        cfg = load_config(file, overrides)
        teacher = setting.get("teacher")
        if teacher is not None:
            assert teacher in settings and teacher != name, (name, teacher)
            assert cfg.teacher is not None, f"{name}: a chained teacher needs a student config"
        paper = setting.get("paper") or {}
        allowed = METRICS[cfg.kind] | (LONG_TAIL_GROUPS if cfg.data.name == "imagenet_lt" else set())
        allowed |= _robust_columns(setting["evaluate"] if "evaluate" in setting else study.get("evaluate"))
        assert set(paper) <= allowed, (
            f"{path.name}: {name}: {sorted(set(paper) - allowed)} not written by a {cfg.kind} run"
        )
        assert all(isinstance(v, float) and 0.0 < v < 100.0 for v in paper.values()), (name, paper)
        with_paper += bool(paper)
    assert with_paper >= 2, path.name


@pytest.mark.parametrize("path", PAPER_STUDIES, ids=lambda p: p.stem)
def test_paper_study_dry_run_lists_every_run_with_its_cost(path: Path, capsys, tmp_path: Path) -> None:
    """Through the command: the study loader (which checks every ``paper:`` column against the task's
    metrics) and ``gkl sweep --dry-run``, one line per run with its estimated GPU-hours."""
    from gkl.cli import main
    from gkl.study.study_file import load_study

    study = load_study(path, out_dir=str(tmp_path / "out"))
    assert study.paper, path.name  # the published numbers were read
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [line for line in lines if line.startswith("# ") and "runs into" in line]
    assert header and header[0].startswith(f"# {len(study.runs)} runs into"), lines[:3]
    runs = {spec.name: spec for spec in study.runs}
    listed = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in runs}
    assert set(listed) == set(runs)
    for line in listed.values():  # CLIP runs too: their towers' FLOPs come from the OpenCLIP configs
        cost = line.split()[1]
        assert float(cost) > 0.0 and line.split()[2] == "GPU-h", line


def test_the_autoattack_numbers_of_the_at_tables_are_paper_columns() -> None:
    """Tables I, III, IV: clean and AA per AT row; Tables XIV / XV: AA at six radii, PGD, CW, worst case."""
    for name, rows in (("table01_ablation", 5), ("table03_cifar100_at", 4), ("table04_cifar10_at", 4)):
        study, settings = _settings(CONFIGS / "studies" / "paper" / f"{name}.yaml")
        at = [s for s in settings.values() if "aa" in (s.get("paper") or {})]
        assert len(at) == rows, name
        for setting in at:
            evaluate = setting.get("evaluate", study.get("evaluate"))
            assert evaluate["attacks"] == ["autoattack"] and evaluate["eps"] == ["8/255"], name
    study, settings = _settings(CONFIGS / "studies" / "paper" / "table14_15_robustness.yaml")
    radii = [f"{k}/255" for k in (2, 4, 6, 8, 10, 12)]
    assert study["evaluate"]["eps"] == radii
    for name in ("trades", "gkl"):
        assert {f"aa@{e}" for e in radii} <= set(settings[name]["paper"])
    for setting in settings.values():
        assert {"pgd10@8/255", "pgd20@8/255", "cw10@8/255", "cw20@8/255", "aa@8/255", "worst@8/255"} <= set(
            setting["paper"]
        )
