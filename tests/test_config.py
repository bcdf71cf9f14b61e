"""The typed experiment config: every recipe validates, errors name the key, overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gkl.config import ExperimentConfig, config_from_dict, load_config, to_dict
from gkl.config_schema import ConfigError, apply_overrides, load_yaml, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: recipe folders of run kinds not wired into gkl.config yet (none today; a new task lists its folder here until it is)
NOT_YET_WIRED = ()
RECIPES = sorted(
    p
    for p in CONFIGS.rglob("*.yaml")
    if not p.name.startswith("_")
    and p.relative_to(CONFIGS).parts[0] not in NOT_YET_WIRED
    and "settings" not in (yaml.safe_load(p.read_text()) or {})
)  # study files: gkl sweep


def test_recipe_set_is_complete() -> None:
    names = {str(p.relative_to(CONFIGS)) for p in RECIPES}
    pairs = [p.stem for p in (CONFIGS / "cifar100" / "gkl").glob("*.yaml")]
    assert len(pairs) == 11
    for method in ("gkl", "kd", "dkd"):
        assert {p.stem for p in (CONFIGS / "cifar100" / method).glob("*.yaml")} == set(pairs)
    assert len(list((CONFIGS / "cifar100" / "teacher").glob("*.yaml"))) == 6
    for name in (
        "imagenet/gkl_res34_res18.yaml",
        "imagenet/gkl_res50_mv1.yaml",
        "imagenet_lt/gkl_resnext101_res18.yaml",
        "cifar10_at/gkl_wrn34_10.yaml",
        "cifar100_at/trades_wrn34_10.yaml",
        "demo/teacher.yaml",
    ):
        assert name in names
    for method in ("ce", "kd", "dkd", "dkl", "ikl", "gkl", "jsd", "mse"):  # one demo config per method
        assert f"demo/student_{method}.yaml" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_recipe_validates_and_round_trips(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert to_dict(again) == to_dict(cfg)


def test_cifar100_gkl_recipe_values_follow_recipes_md() -> None:
    cfg = load_config(CONFIGS / "cifar100" / "gkl" / "res32x4_res8x4.yaml")
    assert (cfg.distill.alpha, cfg.distill.beta, cfg.distill.gamma, cfg.distill.class_wise) == (16, 1, 0.05, True)
    assert cfg.distill.temperature == 4 and cfg.distill.weight_temperature == 4 and cfg.distill.warmup_epochs == 20
    assert cfg.train.epochs == 240 and cfg.train.schedule.milestones == [150, 180, 210]
    assert cfg.train.optim.lr == 0.05 and cfg.data.batch_size == 64
    shuffle = load_config(CONFIGS / "cifar100" / "kd" / "res32x4_shuv1.yaml")
    assert shuffle.train.optim.lr == 0.01 and shuffle.distill.ce_weight == 0.1 and shuffle.distill.kd_weight == 0.9


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.optim.lrr=0.1", "train.optim.lrr"),
        ("train.epochs=ten", "train.epochs"),
        ("distill.method=kdd", "distill.method"),
        ("data.batch_size=0", "data.batch_size"),
        ("train.optim.momentum=1.5", "momentum"),
        ("model.name=resnet20", "model.name"),
        ("teacher.name=no_such_model", "teacher.name"),
        ("data.name=cifar1000", "data.name"),
        ("distill.class_wise=yes please", "distill.class_wise"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(CONFIGS / "demo" / "student_gkl.yaml", [override])


def test_unknown_key_suggests_the_close_match() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'train\.optim\.lr'"):
        load_config(CONFIGS / "demo" / "student_kd.yaml", ["train.optim.lrr=0.1"])


def test_missing_section_and_kind_rules() -> None:
    with pytest.raises(ConfigError, match="teacher"):
        config_from_dict({"kind": "distill", "model": {"name": "mnist1d_mlp_small"}, "data": {"name": "mnist1d"}})
    with pytest.raises(ConfigError, match="'model'"):
        config_from_dict({"kind": "train"})
    with pytest.raises(ConfigError, match="adversarial"):
        config_from_dict({"kind": "train", "model": {"name": "digits_cnn_large"}, "adversarial": {}})


def test_overrides_parse_yaml_values_and_apply() -> None:
    assert parse_override("train.schedule.milestones=[1, 2]") == (["train", "schedule", "milestones"], [1, 2])
    assert parse_override("teacher=null") == (["teacher"], None)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")
    cfg = load_config(CONFIGS / "demo" / "student_gkl.yaml", ["train.epochs=7", "distill.gamma=0.25", "train.seed=3"])
    assert cfg.train.epochs == 7 and cfg.distill.gamma == 0.25 and cfg.train.seed == 3
    assert isinstance(cfg.distill.alpha, float)  # YAML ints become floats where the schema says float
    # YAML 1.1 reads 5e-4 as a string; float fields take it as the number it means
    cfg = load_config(CONFIGS / "demo" / "student_gkl.yaml", ["train.optim.weight_decay=5e-4", "distill.alpha=1e1"])
    assert cfg.train.optim.weight_decay == 5e-4 and cfg.distill.alpha == 10.0
    with pytest.raises(ConfigError, match="train.optim.lr"):
        load_config(CONFIGS / "demo" / "student_gkl.yaml", ["train.optim.lr=5e-4x"])
    data = apply_overrides({"a": {"b": 1}}, ["a.c.d=2"])
    assert data == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_base_files_merge_underneath(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("kind: train\nmodel: {name: digits_cnn_large}\ntrain: {epochs: 5, seed: 1}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain: {epochs: 9}\ndata: {name: digits}\n")
    assert load_yaml(tmp_path / "child.yaml") == {
        "kind": "train",
        "model": {"name": "digits_cnn_large"},
        "train": {"epochs": 9, "seed": 1},
        "data": {"name": "digits"},
    }
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
