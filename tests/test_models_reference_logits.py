"""Teacher files checked by their outputs: gkl's models give the reference implementations' logits.

For each of the 23 CIFAR architectures (the layout of the community RepDistiller / mdistiller
teacher files ``<arch>_vanilla/ckpt_epoch_240.pth``) and for USB's ViT-S/2 (the layout of its
checkpoints, ``{"model": state_dict}``), the test writes a file in the reference's layout (the keys,
shapes and dtypes the reference model has, stored in tests/data/cifar_reference_logits.pt) with
weights chosen by the rule of tests/reference_weights.py, loads it through gkl's checkpoint
loader as a distillation recipe's teacher (``teacher.name`` / ``teacher.checkpoint``), and
compares gkl's eval-mode logits on the fixed input with the reference implementation's logits
on the same weights (made by tests/data/make_cifar_reference_logits.py, which says how).

Tolerance: float32 forward passes of the same arithmetic in a different order (cuDNN-free CPU
convolutions, fused vs unfused attention) differ by rounding, about 1e-6 relative per layer; the
deepest nets here reach logits of 4e4 (resnet110: the rule's weights are not trained, so the
residual branches add up), so the bound is 1e-4 absolute for logits of order one and 1e-4
relative to the largest logit beyond that. A wrong stride, padding, shuffle, pooling,
normalisation or head changes the logits at order one relative, far above it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gkl.config import load_config
from gkl.tasks.parts import build_model
from reference_weights import fill_value, fixed_input

DATA = Path(__file__).parent / "data" / "cifar_reference_logits.pt"
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cifar100" / "gkl" / "res56_res20.yaml"
REFERENCE = torch.load(DATA, weights_only=True)
CIFAR_ZOO = [name for name in REFERENCE["logits"] if name != "vit_small_patch2_32"]


def _reference_file(name: str, path: Path, wrap: str) -> Path:
    """A checkpoint in the reference's layout: every (key, shape, dtype) of the reference model,
    filled by the rule; ``{"model": state_dict, "epoch": 240}`` (RepDistiller) or ``{"model": ...}`` (USB)."""
    state_dict = {
        key: fill_value(key, torch.empty(shape, dtype=getattr(torch, dtype)))
        for key, shape, dtype in REFERENCE["layouts"][name]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict, "epoch": 240} if wrap == "repdistiller" else {"model": state_dict}, path)
    return path


def _assert_same_logits(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape == (2, 100)
    tolerance = 1e-4 * max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= tolerance, float((got - want).abs().max())


def test_the_reference_data_covers_the_zoo_and_usb_vit() -> None:
    assert len(CIFAR_ZOO) == 23 and "vit_small_patch2_32" in REFERENCE["logits"]


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_community_teacher_file_gives_the_reference_logits(name: str, tmp_path: Path) -> None:
    path = _reference_file(name, tmp_path / f"{name}_vanilla" / "ckpt_epoch_240.pth", "repdistiller")
    cfg = load_config(RECIPE, [f"teacher.name={name}", f"teacher.checkpoint={path}"])
    teacher = build_model(cfg.teacher, 100, "teacher").eval()
    with torch.no_grad():
        logits = teacher(fixed_input())
    _assert_same_logits(logits, REFERENCE["logits"][name])


def test_usb_vit_small_checkpoint_gives_the_reference_logits(tmp_path: Path) -> None:
    path = _reference_file("vit_small_patch2_32", tmp_path / "vit_small_patch2_32.pth", "usb")
    cfg = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "ssl" / "cifar100_200" / "fixmatch_gkl.yaml",
        [f"model.checkpoint={path}", "model.pretrained=null"],  # the whole model's weights, head included
    )
    model = build_model(cfg.model, 100).eval()
    with torch.no_grad():
        logits = model(fixed_input())
    _assert_same_logits(logits, REFERENCE["logits"]["vit_small_patch2_32"])
