"""Config files and overrides through `gkl train/distill`: bad YAML is one line naming the file, never a traceback.

Each case runs the command a user types (`gkl train FILE ...`) and checks the exit status 2,
a single stderr line naming the file (and line or key), and that nothing was trained.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gkl.cli import main
from gkl.config_schema import ConfigError, load_yaml, parse_override
from helpers import assert_one_line_error

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEACHER = CONFIGS / "demo" / "teacher.yaml"


def _train(path: Path, tmp_path: Path, *extra: str) -> int:
    return main(["train", str(path), f"out_dir={tmp_path / 'runs'}", "--print-config", *extra])


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {TEACHER}\ntrain:\n  epochs: 3\n  optim: {{lr: 0.1\n")
    assert _train(bad, tmp_path) == 2
    assert_one_line_error(capsys, "train", f"{bad}:", "invalid YAML")


def test_base_cycle_is_an_error_not_a_recursion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: [c.yaml]\n")
    (tmp_path / "c.yaml").write_text("base: a.yaml\n")
    assert _train(tmp_path / "a.yaml", tmp_path) == 2
    assert_one_line_error(capsys, "train", "cycle", "a.yaml", "b.yaml", "c.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    assert _train(tmp_path / "self.yaml", tmp_path) == 2
    assert_one_line_error(capsys, "train", "cycle", "self.yaml")


@pytest.mark.parametrize("base", ["3", "{x: 1}", "[3]", "[]", "''", "[ok.yaml, 5]"])
def test_base_must_be_paths(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ok.yaml").write_text("name: ok\n")
    (tmp_path / "c.yaml").write_text(f"base: {base}\nname: c\n")
    assert _train(tmp_path / "c.yaml", tmp_path) == 2
    assert_one_line_error(capsys, "train", "c.yaml", "'base' must be a file path or a list of file paths")


def test_missing_base_file_names_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.yaml").write_text("base: ../nowhere/base.yaml\n")
    assert _train(tmp_path / "c.yaml", tmp_path) == 2
    assert_one_line_error(capsys, "train", "c.yaml", "nowhere/base.yaml", "not found")
    assert _train(tmp_path / "absent.yaml", tmp_path) == 2
    assert_one_line_error(capsys, "train", "absent.yaml", "not found")
    assert _train(tmp_path, tmp_path) == 2  # a directory, not a file
    assert_one_line_error(capsys, "train", str(tmp_path))


def test_duplicate_key_is_an_error_naming_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text(f"base: {TEACHER}\ntrain:\n  epochs: 3\nname: x\ntrain:\n  seed: 4\n")
    assert _train(dup, tmp_path) == 2
    assert_one_line_error(capsys, "train", f"{dup}:5", "duplicate key 'train'", "line 2")
    nested = tmp_path / "nested.yaml"
    nested.write_text(f"base: {TEACHER}\ntrain:\n  optim: {{lr: 0.1, lr: 0.2}}\n")
    assert _train(nested, tmp_path) == 2
    assert_one_line_error(capsys, "train", "nested.yaml:3", "duplicate key 'lr'")


def test_amp_off_is_a_string_in_files_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # YAML 1.1 reads off/on/yes/no as booleans; the documented train.amp=off must mean the string
    assert _train(TEACHER, tmp_path, "train.amp=off") == 0
    assert "amp: 'off'" in capsys.readouterr().out
    cfg = tmp_path / "amp.yaml"
    cfg.write_text(f"base: {TEACHER}\ntrain:\n  amp: off\n")
    assert _train(cfg, tmp_path) == 0
    assert "amp: 'off'" in capsys.readouterr().out
    # a boolean field still takes only true/false; "yes" is a string and is rejected by name
    assert _train(TEACHER, tmp_path, "data.in_memory=yes") == 2
    assert_one_line_error(capsys, "train", "data.in_memory", "'yes'", "true or false")
    assert _train(TEACHER, tmp_path, "data.in_memory=false") == 0
    assert "in_memory: false" in capsys.readouterr().out


def test_loader_values() -> None:
    assert parse_override("a=off") == (["a"], "off")
    assert parse_override("a=No") == (["a"], "No")
    assert parse_override("a=True") == (["a"], True)
    assert parse_override("a=FALSE") == (["a"], False)
    assert parse_override("a=~") == (["a"], None)
    assert parse_override("a.b=[1, 2.5, on]") == (["a", "b"], [1, 2.5, "on"])
    with pytest.raises(ConfigError, match="override 'a=\\[1,'"):
        parse_override("a=[1,")
    with pytest.raises(ConfigError, match="duplicate key 'x'"):
        parse_override("a={x: 1, x: 2}")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml must contain a mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert load_yaml(tmp_path / "empty.yaml") == {}
