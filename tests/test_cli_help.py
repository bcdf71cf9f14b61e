"""``gkl --help`` and every command's help: descriptions, help text and defaults; the errors and log lines
a user meets first (a missing backbone file names its config key; no false OpenCLIP warning on evaluate)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from gkl.cli import build_parser, main
from gkl.tasks import list_tasks
from gkl.utils.errors import InputError

#: commands whose options another line of work owns (the study and analysis commands): checked there
OWNED_ELSEWHERE: set[str] = set()


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (path, parser, help in the parent's list) below ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from _parsers(sub, (*path, name))


def _checked():
    top, _ = build_parser()
    return [(path, p, h) for path, p, h in _parsers(top) if path[0] not in OWNED_ELSEWHERE]


@pytest.mark.parametrize(("path", "parser", "listed"), _checked(), ids=[" ".join(p) for p, _, _ in _checked()])
def test_every_verb_and_option_is_described_with_its_default(path, parser, listed) -> None:
    where = "gkl " + " ".join(path)
    assert listed, f"{where}: no help in the parent's list of commands"
    assert parser.description, f"{where}: no description"
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{where} {name}: no help text"
        takes_value = action.nargs != 0
        if takes_value and action.option_strings and action.default is not None:
            assert "default" in formatter._get_help_string(action) % vars(action), f"{where} {name}: default not shown"
        if takes_value and action.option_strings and action.default is None:  # its help says what happens without it
            assert "default" in action.help or action.choices is None, f"{where} {name}"


def test_option_help_shows_the_default_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "comma-separated radii (of --norm), e.g. 2/255,8/255 (default: 8/255)" in text
    assert "the threat model's norm (default: linf)" in text and "(default: linf) (default" not in text
    assert "(default: the full test set)" in text and text.count("the full test set") == 1
    assert "written by gkl fit or any run verb" in text


def test_top_level_help_names_every_kind_of_run_and_its_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    assert shown.value.code == 0
    out = capsys.readouterr().out
    overview = out.split("Kinds of run", 1)[1].split("Other commands", 1)[0]
    lines = [" ".join(line.split()) for line in overview.strip().splitlines()[1:]]
    starts = [line for line in lines if not line.startswith(("(", ")")) and " gkl " in line]
    assert [line.split()[0] for line in starts] == [task.name for task in list_tasks()]
    for task in list_tasks():
        assert f"{task.name} gkl {task.command}: " in " ".join(lines)
    assert "doctor" in out.split("Other commands", 1)[1]


def test_missing_backbone_file_names_its_config_key(tmp_path: Path) -> None:
    from gkl.config import ModelConfig
    from gkl.tasks.parts import build_model

    missing = str(tmp_path / "resnet18_deep_stem.pth")
    cfg = ModelConfig(name="pspnet_resnet18", kwargs={"stem": "deep", "backbone_checkpoint": missing})
    with pytest.raises(InputError) as err:
        build_model(cfg, 19)
    assert str(err.value).startswith(f"model.kwargs.backbone_checkpoint: file not found: {missing} (")
    assert "docs/segmentation.md" in str(err.value)
    teacher = ModelConfig(name="pspnet_resnet18", kwargs={"backbone_checkpoint": missing})
    with pytest.raises(InputError, match=r"^teacher\.kwargs\.backbone_checkpoint: file not found"):
        build_model(teacher, 19, section="teacher")


def test_shipped_recipes_with_a_backbone_say_which_key_needs_it() -> None:
    from gkl.recipes import list_recipes, resolve_recipe

    with_backbone = [n for n in list_recipes() if "backbone_checkpoint:" in resolve_recipe(n).read_text()]
    assert len(with_backbone) >= 2
    for name in with_backbone:
        text = resolve_recipe(name).read_text()
        assert ".kwargs.backbone_checkpoint: ImageNet weights you supply" in text, name


def _openclip_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "open_clip" in r.pathname]


def test_openclip_model_built_to_load_weights_logs_nothing_a_random_one_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("open_clip")  # the clip extra (pip install "gkl[clip]")
    from gkl.models.clip import create_clip

    caplog.set_level(logging.INFO)
    create_clip("gkl-tiny-clip-student", weights_follow=True)
    assert _openclip_records(caplog) == []
    create_clip("gkl-tiny-clip-student")  # trained from random weights: OpenCLIP says so
    assert any("initialized randomly" in message for message in _openclip_records(caplog))
    assert not logging.getLogger().filters  # the filter is gone again


def test_evaluating_a_clip_run_prints_no_openclip_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("open_clip")  # the clip extra (pip install "gkl[clip]")
    from gkl.doctor.runs import DemoRuns

    runs = DemoRuns(tmp_path, "cpu", steps=1)
    cfg = runs.config("clip/demo/teacher")
    runs.train(cfg)
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(["evaluate", str(cfg.run_dir), "--which", "last"]) == 0
    assert _openclip_records(caplog) == []
