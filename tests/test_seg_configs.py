"""Every segmentation recipe's ``segmentation:`` section is a valid SegmentationSettings, and its
model / teacher / dataset names are registered."""

from __future__ import annotations

from pathlib import Path

import pytest

from gkl.config_schema import deep_merge, from_dict, load_yaml
from gkl.data import dataset_info
from gkl.models import get_model_entry
from gkl.settings.segmentation import SegmentationSettings

ROOT = Path(__file__).resolve().parents[1] / "configs" / "segmentation"
RECIPES = sorted(p for p in ROOT.rglob("*.yaml") if not p.name.startswith("_"))


def resolved(path: Path) -> dict:
    data = load_yaml(path)
    base = data.pop("base", None)
    return deep_merge(resolved(path.parent / base), data) if base else data


def test_recipes_exist() -> None:
    names = {str(p.relative_to(ROOT)) for p in RECIPES}
    for stem in ("psp18_ce", "psp101_teacher", "psp18_kd_kl", "psp18_kd_gkl", "psp18_apd_kl", "psp18_apd_gkl"):
        assert f"ade20k/{stem}.yaml" in names
    assert {"cityscapes/psp18_apd_kl.yaml", "demo/student_apd_gkl.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_is_valid(path: Path) -> None:
    cfg = resolved(path)
    assert cfg["kind"] == "segmentation"
    settings = from_dict(SegmentationSettings, cfg["segmentation"], prefix="segmentation")
    info = dataset_info(cfg["data"]["name"])
    assert info.input_kind == "segmentation"
    assert get_model_entry(cfg["model"]["name"]).input_kind == "segmentation"
    assert (cfg.get("teacher") is not None) == settings.needs_teacher
    if settings.needs_teacher:
        get_model_entry(cfg["teacher"]["name"])
    if cfg["data"]["name"] != "digit_scenes":
        assert settings.augment.crop_size == info.input_shape[-1]
