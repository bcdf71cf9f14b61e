"""The FLOP formula of OpenCLIP towers (gkl.models.clip_flops) and the dry run's cost of CLIP runs.

The formula is checked against torch's FlopCounterMode on gkl's two tiny towers, run in train mode with
the math attention kernel (the fused CPU kernel and the eval fast path are not counted by the counter);
the dry-run estimate of a CLIP distillation run against the documented formula with those counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from gkl.config import load_config
from gkl.models.clip import TINY_MODELS, create_clip, model_config
from gkl.models.clip_flops import clip_forward_flops, image_flops, text_flops
from gkl.study import run_sweep
from gkl.study.cost import SUSTAINED_FLOPS, run_cost

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _counted(name: str) -> tuple[int, int]:
    """FlopCounterMode's FLOPs of one image and one caption through OpenCLIP model ``name``."""
    model = create_clip(name, weights_follow=True).train()
    cfg = model_config(name)
    size, context = cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"]
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as image:
            model.encode_image(torch.zeros(1, 3, size, size))
        with FlopCounterMode(display=False) as text:
            model.encode_text(torch.zeros(1, context, dtype=torch.long))
    return image.get_total_flops(), text.get_total_flops()


@pytest.mark.parametrize("name", TINY_MODELS)
def test_formula_equals_the_flop_counter_on_a_tiny_tower(name: str) -> None:
    image, text = _counted(name)
    flops = clip_forward_flops(name)
    assert (flops.image, flops.text) == (image, text) and image > 0 and text > 0
    assert flops.pair == image + text


def test_image_size_and_context_length_overrides_are_counted() -> None:
    cfg = model_config("gkl-tiny-clip-teacher")
    # 32 px instead of 16: 64 patches instead of 16 (65 tokens), same width and layers
    assert clip_forward_flops("gkl-tiny-clip-teacher", force_image_size=32).image == image_flops(
        {**cfg["vision_cfg"], "image_size": 32}, cfg["embed_dim"]
    )
    assert clip_forward_flops("gkl-tiny-clip-teacher", force_context_length=6).text == text_flops(
        {**cfg["text_cfg"], "context_length": 6}, cfg["embed_dim"]
    )


def test_a_tower_outside_the_formula_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="vision_cfg.layers"):
        clip_forward_flops("RN50")  # a ModifiedResNet image tower
    with pytest.raises(ValueError, match="force_patch_dropout"):
        clip_forward_flops("gkl-tiny-clip-student", force_patch_dropout=0.5)
    with pytest.raises(ValueError, match="model.kwargs.some_option"):
        clip_forward_flops("gkl-tiny-clip-student", some_option=1)
    dropout = ["model.kwargs={force_patch_dropout: 0.5}"]
    cfg = load_config(CONFIGS / "clip" / "demo" / "student_contrastive.yaml", dropout)
    cost = run_cost(cfg)
    assert cost.gpu_hours is None and "force_patch_dropout" in cost.text()


def test_dry_run_cost_of_a_clip_distillation_run_follows_the_documented_formula(tmp_path: Path) -> None:
    """examples × (3 F + F_teacher) / throughput, F = one image and one caption through the student."""
    from gkl.data.bundled import digits_split
    from gkl.data.splits import stratified_split

    study = CONFIGS / "studies" / "clip_demo.yaml"
    result = run_sweep(study, out_dir=tmp_path / "out", only=["gkl"], seeds=[0], dry_run=True)
    (row,) = [r for r in result["plan"] if r["name"] == "gkl_seed0"]  # the plan also lists its teacher run
    cfg = load_config(CONFIGS / "clip" / "demo" / "student_gkl.yaml")
    labels = digits_split(True)[1]
    train = len(stratified_split(labels, cfg.data.val_fraction, cfg.data.val_seed, num_classes=10)[0])
    assert 0 < train < len(labels)
    student, teacher = sum(_counted(cfg.model.name)), sum(_counted(cfg.teacher.name))
    expected = cfg.train.epochs * train * (3 * student + teacher) / (SUSTAINED_FLOPS * 3600)
    assert row["gpu_hours"] == pytest.approx(expected, rel=1e-12) and row["gpu_hours"] > 0
    assert not (tmp_path / "out").exists()
