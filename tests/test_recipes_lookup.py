"""Recipes by name (gkl.recipes) and the `gkl recipes` command; the installed wheel is checked by .ci/check_wheel.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gkl.cli import main
from gkl.config import load_config, to_dict
from gkl.recipes import copy_recipe, list_recipes, recipes_root, resolve_recipe
from gkl.utils.errors import InputError
from helpers import assert_one_line_error

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KD = "cifar100/kd/res32x4_res8x4"


def _names_on_disk(include_bases: bool) -> list[str]:
    found = []
    for folder, _, files in os.walk(CONFIGS):
        for file in files:
            if file.endswith(".yaml") and (include_bases or not file.startswith("_")):
                found.append((Path(folder) / file).relative_to(CONFIGS).with_suffix("").as_posix())
    return sorted(found)


def test_the_recipes_of_a_checkout_are_its_configs_directory() -> None:
    assert recipes_root() == CONFIGS


def test_list_recipes_is_every_yaml_under_configs_bases_apart() -> None:
    assert list_recipes() == _names_on_disk(include_bases=False)
    assert list_recipes(include_bases=True) == _names_on_disk(include_bases=True)
    assert "cifar100/_base" in list_recipes(include_bases=True) and "cifar100/_base" not in list_recipes()
    demo = list_recipes("demo/")
    assert demo and all(n.startswith("demo/") for n in demo) and "demo_at/gkl" not in demo
    assert set(list_recipes("demo")) == set(demo) | set(list_recipes("demo_at/"))


@pytest.mark.parametrize("spelling", [KD, f"{KD}.yaml", f"configs/{KD}.yaml", f"configs/{KD}"])
def test_a_name_resolves_from_any_directory(spelling: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe(spelling) == CONFIGS / f"{KD}.yaml"


def test_a_local_file_wins_over_the_recipe_of_the_same_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = Path("demo/teacher.yaml")
    local.parent.mkdir()
    copy_recipe("demo/teacher", local)  # its base: by absolute path
    local.write_text(local.read_text().replace("name: teacher", "name: my_teacher"))
    assert resolve_recipe("demo/teacher.yaml") == local
    assert load_config("demo/teacher.yaml").name == "my_teacher"
    assert resolve_recipe("demo/teacher") == CONFIGS / "demo" / "teacher.yaml"  # no local file of that path
    assert load_config("demo/teacher").name == "teacher"


def test_under_adds_a_directory_to_look_in() -> None:
    assert resolve_recipe("kl_family", under="studies") == CONFIGS / "studies" / "kl_family.yaml"
    assert resolve_recipe("studies/kl_family", under="studies") == CONFIGS / "studies" / "kl_family.yaml"
    with pytest.raises(InputError, match="kl_family is neither a file nor a recipe name"):
        resolve_recipe("kl_family")


def test_an_unknown_name_is_an_input_error_with_suggestions() -> None:
    with pytest.raises(InputError) as err:
        resolve_recipe("res32x4_res8x4")
    assert str(err.value).endswith(
        "did you mean cifar100/dkd/res32x4_res8x4, cifar100/gkl/res32x4_res8x4, cifar100/ikl/res32x4_res8x4, "
        "cifar100/kd/res32x4_res8x4?"
    )
    with pytest.raises(InputError, match="did you mean demo/teacher"):
        resolve_recipe("demo/techer")
    with pytest.raises(InputError, match="gkl recipes list"):
        resolve_recipe("zzzzzz")
    with pytest.raises(InputError, match="did you mean studies/kl_family?"):
        resolve_recipe("kl_famly", under="studies")
    for outside in ("../configs/demo/teacher", "/no/such/dir/demo/teacher"):  # names stay inside the recipes
        with pytest.raises(InputError, match="neither a file nor a recipe name"):
            resolve_recipe(outside)


def test_a_copy_loads_to_the_same_config_and_is_never_overwritten(tmp_path: Path) -> None:
    target = copy_recipe(KD, tmp_path)
    assert target == tmp_path / "res32x4_res8x4.yaml"
    text = target.read_text()
    assert yaml.safe_load(text)["base"] == str(CONFIGS / "cifar100" / "_base.yaml")  # the base by absolute path
    assert "# resnet32x4 -> resnet8x4" in text  # the recipe's comments are kept
    assert to_dict(load_config(target)) == to_dict(load_config(KD))
    with pytest.raises(InputError, match="already exists; gkl recipes copy never overwrites"):
        copy_recipe("demo/teacher", target)
    with pytest.raises(InputError, match="already exists"):
        copy_recipe(KD, tmp_path)
    assert target.read_text() == text
    with pytest.raises(InputError, match="does not exist"):
        copy_recipe(KD, tmp_path / "missing" / "x.yaml")


def test_a_copied_study_plans_the_same_runs(tmp_path: Path) -> None:
    from gkl.study.study_file import load_study

    copy = copy_recipe("studies/ssl_demo", tmp_path / "mine.yaml")
    original, copied = load_study("ssl_demo"), load_study(copy)
    assert original.path == CONFIGS / "studies" / "ssl_demo.yaml"
    assert [r.cli_args() for r in copied.runs] == [r.cli_args() for r in original.runs]


def test_the_demo_finds_its_recipes_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gkl.commands.demo import _demo_config

    monkeypatch.chdir(tmp_path)
    cfg = _demo_config("student_kd", tmp_path / "runs", ["teacher.checkpoint=t.pt"])
    assert cfg.kind == "distill" and cfg.run_dir == tmp_path / "runs" / cfg.name


# ------------------------------------------------------------------------------------------- the CLI


def test_cli_list_prints_names_and_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "list", "demo/"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [name for name, _ in rows] == list_recipes("demo/")
    kinds = dict(rows)
    assert kinds["demo/teacher"] == "train" and kinds["demo/student_gkl"] == "distill"
    assert main(["recipes", "list", "studies/"]) == 0
    kinds = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert kinds["studies/kl_family"] == "study" and kinds["studies/student_kd_only"] == "distill"
    assert main(["recipes", "list", "nope"]) == 2
    assert_one_line_error(capsys, "recipes", "no recipe name starts with 'nope'")


def test_cli_show_prints_the_file_or_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "show", KD]) == 0
    assert capsys.readouterr().out == (CONFIGS / f"{KD}.yaml").read_text()
    assert main(["recipes", "show", KD, "--resolved"]) == 0
    resolved = capsys.readouterr().out
    assert main(["distill", KD, "--print-config"]) == 0
    assert yaml.safe_load(resolved) == yaml.safe_load(capsys.readouterr().out) == to_dict(load_config(KD))
    assert main(["recipes", "show", "demo/teacher", KD, "--resolved"]) == 0
    parts = capsys.readouterr().out.split("---\n")
    assert [p.splitlines()[0] for p in parts] == [
        f"# demo/teacher ({CONFIGS / 'demo/teacher.yaml'})",
        f"# {KD} ({CONFIGS / f'{KD}.yaml'})",
    ]
    assert yaml.safe_load(parts[1]) == to_dict(load_config(KD))
    assert main(["recipes", "show", "demo/nope"]) == 2
    assert_one_line_error(capsys, "recipes", "demo/nope is neither a file nor a recipe name")


def test_cli_show_resolved_of_a_study_is_its_run_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from gkl.study.study_file import load_study

    assert main(["recipes", "show", "studies/ssl_demo", "--resolved"]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = load_study("ssl_demo").runs
    assert len(lines) == len(runs) and lines[0].split() == ["gkl", *runs[0].cli_args()]


def test_cli_copy_refuses_an_existing_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "copy", "demo/teacher"]) == 0
    assert capsys.readouterr().out.strip() == "copied demo/teacher to teacher.yaml"
    Path("teacher.yaml").write_text("mine\n")
    assert main(["recipes", "copy", "demo/teacher", "teacher.yaml"]) == 2
    assert_one_line_error(capsys, "recipes", "teacher.yaml already exists")
    assert Path("teacher.yaml").read_text() == "mine\n"


def test_cli_runs_a_recipe_by_name_in_an_empty_directory(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "gkl.cli", "train", "demo/teacher", "--print-config", "train.epochs=7"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed == to_dict(load_config(CONFIGS / "demo" / "teacher.yaml", ["train.epochs=7"]))
    assert list(tmp_path.iterdir()) == []
