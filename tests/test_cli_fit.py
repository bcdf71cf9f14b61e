"""``gkl fit`` runs any kind; the task verbs are aliases that check the kind; an unknown kind is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gkl.cli import build_parser, main, run_commands
from gkl.config import config_from_dict, load_config, to_dict
from gkl.tasks import get_task, list_tasks
from gkl.utils.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_fit_trains_a_shipped_demo_config_like_its_verb(tmp_path: Path) -> None:
    common = [
        str(CONFIGS / "demo" / "student_ce.yaml"),
        f"out_dir={tmp_path}",
        f"data.root={tmp_path / 'data'}",
        "train.epochs=1",
        "train.progress=false",
    ]
    assert main(["fit", *common, "name=by_fit"]) == 0
    assert main(["train", *common, "name=by_verb"]) == 0
    fit, verb = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("by_fit", "by_verb"))
    assert fit["last_top1"] == verb["last_top1"] and fit["final"] == verb["final"]  # the same run
    recorded = yaml.safe_load((tmp_path / "by_fit" / "config.yaml").read_text())
    assert recorded["kind"] == "train" and list(recorded)[-2:] == ["label_smoothing", "train"]


@pytest.mark.parametrize(
    "config, verb",
    [
        ("demo/student_kd.yaml", "distill"),
        ("demo_at/gkl.yaml", "adv-train"),
        ("demo/teacher.yaml", "train"),
        ("segmentation/demo/student_kd_gkl.yaml", "seg-train"),
        ("clip/demo/student_gkl.yaml", "clip-distill"),
    ],
)
def test_each_verb_checks_the_kind_and_names_the_right_one(
    config: str, verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CONFIGS / config
    kind = load_config(path).kind
    assert get_task(kind).command == verb
    wrong = next(c for c, k in run_commands().items() if k is not None and k != kind)
    assert main([wrong, str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"is a '{kind}' config; use 'gkl {verb}' (or 'gkl fit')") and len(err.splitlines()) == 1
    assert main([verb, str(path), "--print-config"]) == 0
    assert main(["fit", str(path), "--print-config"]) == 0
    out = capsys.readouterr().out.split("\n\n")
    assert yaml.safe_load(out[0]) == yaml.safe_load(out[1]) == to_dict(load_config(path))


def test_unknown_kind_is_one_line_with_a_close_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"^kind: unknown task 'distil'; did you mean 'distill'\? \(known: train, "):
        config_from_dict({"kind": "distil", "model": {"name": "mnist1d_cnn"}})
    path = tmp_path / "bad.yaml"
    path.write_text("kind: segmentaton\nmodel: {name: pspnet_tiny}\n")
    assert main(["fit", str(path)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .startswith("gkl fit: error: kind: unknown task 'segmentaton'; did you mean 'segmentation'?")
    )


def test_the_parser_has_fit_and_one_verb_per_task() -> None:
    _, subs = build_parser()
    verbs = [t.command for t in list_tasks()]
    assert {"fit", *verbs} <= set(subs)
    assert run_commands() == {"fit": None, **{t.command: t.name for t in list_tasks()}}


def test_a_section_of_another_kind_is_named_and_old_null_sections_load() -> None:
    teacher = CONFIGS / "demo" / "teacher.yaml"
    with pytest.raises(ConfigError, match=r"^segmentation: section used by kind 'segmentation' only, not 'train'$"):
        load_config(teacher, ["segmentation={method: ce}"])
    with pytest.raises(ConfigError, match=r"^clip_data: section used by kinds 'clip_train' and 'clip_distill' only"):
        load_config(teacher, ["clip_data={format: digits}"])
    with pytest.raises(ConfigError, match=r"unknown config key 'distil'; did you mean 'distill'"):
        load_config(CONFIGS / "demo" / "student_kd.yaml", ["distil={method: kd}"])
    # config.yaml of an earlier gkl: every kind's sections, null when unused, label_smoothing 0.0
    old = to_dict(load_config(teacher))
    old.update({name: None for task in list_tasks() for name in task.section_names if name != "label_smoothing"})
    assert to_dict(config_from_dict(old)) == to_dict(load_config(teacher))
    kd = to_dict(load_config(CONFIGS / "demo" / "student_kd.yaml"))
    assert "label_smoothing" not in kd and to_dict(config_from_dict({**kd, "label_smoothing": 0.0})) == kd
