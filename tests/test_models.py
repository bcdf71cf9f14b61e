"""Tests of the model registry and the architectures it builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tv_models

from gkl.models import (
    INPUT_SHAPES,
    create_model,
    get_model_entry,
    list_models,
    model_input_kind,
    model_input_shape,
    register_model,
)
from gkl.models import registry as registry_module
from gkl.models.robust_wrn import CIFAR10_MEAN, CIFAR10_STD

# The key/shape listing of the community CIFAR-100 teacher files (all 23 architectures).
LAYOUT_FILE = Path(__file__).parent / "data" / "cifar_teacher_layout.json"
CIFAR_ZOO = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
    "ResNet18", "ResNet50",
]  # fmt: skip


@pytest.fixture(scope="module")
def community_layout() -> dict[str, list[list]]:
    return json.loads(LAYOUT_FILE.read_text())


def test_layout_file_lists_exactly_the_cifar_zoo(community_layout: dict[str, list[list]]) -> None:
    assert sorted(community_layout) == sorted(CIFAR_ZOO)
    assert set(CIFAR_ZOO) <= set(list_models("cifar"))


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_cifar_zoo_state_dict_matches_community_layout(name: str, community_layout: dict[str, list[list]]) -> None:
    model = create_model(name, 100)
    got = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert got == community_layout[name]


def _example_input(name: str, batch: int = 2) -> torch.Tensor:
    shape = model_input_shape(name)
    if model_input_kind(name) == "imagenet" and name != "imagenet_mobilenet_v1":
        shape = (3, 64, 64)  # torchvision models pool adaptively; keeps the test fast
    return torch.rand(batch, *shape)


@pytest.mark.parametrize(
    "name", [n for n in list_models() if model_input_kind(n) != "segmentation"]
)  # dense: test_seg_models
def test_every_model_gives_logits_for_its_input_kind(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 10).eval()
    x = _example_input(name)
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    # Examples are processed independently, and the output depends on the input.
    # (Deep nets at initialisation can have tiny logits: compare relative to their scale.)
    scale = logits.abs().max()
    assert scale > 0
    with torch.no_grad():
        other = model(x.flip(0))
    assert ((other - logits.flip(0)).abs().max() / scale) < 1e-4
    assert ((logits[0] - logits[1]).abs().max() / scale) > 1e-3


def test_input_kinds_and_shapes() -> None:
    assert model_input_kind("resnet8") == "cifar"
    assert model_input_kind("ResNet18") == "cifar"
    assert model_input_kind("imagenet_resnet18") == "imagenet"
    assert model_input_kind("digits_cnn_large") == "digits"
    assert model_input_kind("mnist1d_mlp_small") == "mnist1d"
    assert model_input_kind("wrn34_10") == "cifar"
    assert model_input_shape("mnist1d_cnn") == (1, 40)
    assert model_input_shape("digits_mlp_small") == (1, 8, 8)
    for name in list_models():
        assert get_model_entry(name).input_kind in INPUT_SHAPES
    by_kind = sum((list_models(kind) for kind in INPUT_SHAPES), [])
    assert sorted(by_kind) == list_models()


def test_expected_model_families_are_registered() -> None:
    names = set(list_models())
    expected = {
        "imagenet_resnet18", "imagenet_resnet34", "imagenet_resnet50", "imagenet_mobilenet_v2",
        "imagenet_resnext101_32x8d", "imagenet_mobilenet_v1", "wrn34_10", "wrn28_10",
        "digits_cnn_large", "digits_mlp_small", "mnist1d_cnn", "mnist1d_mlp_small",
    }  # fmt: skip
    assert expected <= names


def test_unknown_name_lists_known_names_and_suggests() -> None:
    with pytest.raises(ValueError) as info:
        create_model("resnet18", 10)
    message = str(info.value)
    assert "'resnet18'" in message
    assert "Did you mean" in message and "'ResNet18'" in message
    for name in ("resnet8x4", "wrn34_10", "mnist1d_cnn"):
        assert name in message
    with pytest.raises(ValueError, match="Known models"):
        model_input_kind("no_such_model_at_all")


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "10"])
def test_bad_num_classes_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet8", bad)  # type: ignore[arg-type]


def test_unknown_builder_kwarg_is_an_error() -> None:
    with pytest.raises(TypeError, match="not_an_option"):
        create_model("resnet8", 10, not_an_option=1)


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_model("tiny_test_linear", input_kind="mnist1d")
    def tiny(num_classes: int, hidden: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(40, hidden), nn.Linear(hidden, num_classes))

    assert "tiny_test_linear" in list_models("mnist1d")
    model = create_model("tiny_test_linear", 4, hidden=5)
    assert model[1].out_features == 5 and model(torch.rand(3, 1, 40)).shape == (3, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_test_linear", input_kind="mnist1d")(tiny)
    with pytest.raises(ValueError, match="input_kind"):
        register_model("tiny_other", input_kind="svhn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        register_model("", input_kind="cifar")


# --- ImageNet ---------------------------------------------------------------


def test_imagenet_torchvision_models_keep_torchvision_layout() -> None:
    ours = create_model("imagenet_resnet50", 10).state_dict()
    reference = tv_models.resnet50(weights=None, num_classes=10).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in reference.items()]


def test_mobilenet_v1_structure() -> None:
    model = create_model("imagenet_mobilenet_v1", 1000)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 13 * 2
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 13 and all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert convs[0].stride == (2, 2) and convs[-1].out_channels == 1024
    assert model.fc.in_features == 1024 and model.fc.out_features == 1000
    # Key layout of the widely shared KD MobileNetV1 weights: model.<stage>.<layer>, fc.
    sd = model.state_dict()
    assert next(iter(sd)) == "model.0.0.weight" and tuple(sd["model.0.0.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["model.13.3.weight"].shape) == (1024, 1024, 1, 1)
    assert list(sd)[-2:] == ["fc.weight", "fc.bias"]
    # Five stride-2 stages: 224 -> 7 before pooling.
    with torch.no_grad():
        features = model.model[:-1](torch.rand(1, 3, 224, 224))
    assert features.shape == (1, 1024, 7, 7)


# --- Robust WideResNets -------------------------------------------------------


@pytest.mark.parametrize(("name", "blocks"), [("wrn34_10", 5), ("wrn28_10", 4)])
def test_robust_wrn_depth_and_width(name: str, blocks: int) -> None:
    model = create_model(name, 10)
    assert len(model.block1.layer) == len(model.block3.layer) == blocks
    assert model.fc.in_features == 640
    assert model.block1.layer[0].conv1.out_channels == 160


def test_robust_wrn_normalisation_is_inside_and_not_persistent() -> None:
    torch.manual_seed(0)
    normalised = create_model("wrn16_4_robust", 10).eval()
    plain = create_model("wrn16_4_robust", 10, mean=None, std=None).eval()
    sd = normalised.state_dict()
    assert not any(key.startswith("normalize") for key in sd)
    assert {name for name, _ in normalised.named_buffers()} - set(sd) == {"normalize.mean", "normalize.std"}
    assert list(sd) == list(plain.state_dict())
    plain.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normalised(x), plain((x - mean) / std), atol=1e-5)
        assert not torch.allclose(normalised(x), plain(x), atol=1e-3)
    custom = create_model("wrn16_4_robust", 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    custom.load_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(custom(x), plain((x - 0.5) / 0.25), atol=1e-5)


def test_robust_wrn_swish_activation() -> None:
    torch.manual_seed(0)
    relu = create_model("wrn16_4_robust", 10).eval()
    swish = create_model("wrn16_4_robust", 10, activation="swish").eval()
    assert any(isinstance(m, nn.SiLU) for m in swish.modules())
    assert not any(isinstance(m, nn.ReLU) for m in swish.modules())
    swish.load_state_dict(relu.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(relu(x), swish(x), atol=1e-4)


def test_robust_wrn_bad_options() -> None:
    with pytest.raises(ValueError, match="activation"):
        create_model("wrn16_4_robust", 10, activation="gelu")
    with pytest.raises(ValueError, match="both"):
        create_model("wrn16_4_robust", 10, std=None)
    with pytest.raises(ValueError, match="positive"):
        create_model("wrn16_4_robust", 10, std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="same length"):
        create_model("wrn16_4_robust", 10, mean=(0.5, 0.5), std=(0.2, 0.2, 0.2))


def test_robust_wrn_trades_sub_block1_is_layout_only() -> None:
    torch.manual_seed(0)
    base = create_model("wrn16_4_robust", 10).eval()
    trades = create_model("wrn16_4_robust", 10, sub_block1=True).eval()
    extra = set(trades.state_dict()) - set(base.state_dict())
    assert extra and all(key.startswith("sub_block1.") for key in extra)
    trades.load_state_dict(base.state_dict(), strict=False)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trades(x), base(x), atol=1e-6)


# --- Small models for the bundled data ------------------------------------------


def _num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("teacher", "student"), [("digits_cnn_large", "digits_mlp_small"), ("mnist1d_cnn", "mnist1d_mlp_small")]
)
def test_small_teacher_student_sizes(teacher: str, student: str) -> None:
    teacher_model, student_model = create_model(teacher, 10), create_model(student, 10)
    assert 10_000 <= _num_parameters(teacher_model) <= 100_000
    assert 1_000 <= _num_parameters(student_model) <= 5_000
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in teacher_model.modules())


@pytest.mark.parametrize("name", ["digits_cnn_large", "digits_mlp_small", "mnist1d_cnn", "mnist1d_mlp_small"])
def test_small_models_reject_wrong_input_shape(name: str) -> None:
    model = create_model(name, 10)
    wrong = torch.rand(2, 1, 40) if model_input_kind(name) == "digits" else torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="expected input of shape"):
        model(wrong)


def test_small_cnn_trains_in_train_mode_and_updates_bn() -> None:
    torch.manual_seed(0)
    model = create_model("mnist1d_cnn", 10).train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    before = bn.running_mean.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 40), torch.randint(0, 10, (16,))
    first = nn.functional.cross_entropy(model(x), y)
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < first.item()
    assert not torch.equal(bn.running_mean, before)
