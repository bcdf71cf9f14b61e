"""Segmentation models: output shapes, output stride 8, dilation and receptive field, weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gkl.models import create_model
from gkl.models.segmentation import load_backbone, segmentation_param_groups, upsample_logits
from gkl.utils.errors import InputError


def analytic_receptive_field(model: nn.Module) -> int:
    """Receptive field of layer 4 by walking the stem and residual-branch convs/pools in order."""
    rf, jump = 1, 1
    for stage in model.backbone_modules():
        for name, m in stage.named_modules():
            if "downsample" in name or not isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                continue
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            d = getattr(m, "dilation", 1)
            d = d if isinstance(d, int) else d[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            rf += (k - 1) * d * jump
            jump *= s
    return rf


def backbone_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for stage in model.backbone_modules():
        x = stage(x)
    return x


def dilations(stage: nn.Module) -> set[tuple[str, tuple[int, int]]]:
    return {
        (name.split(".")[-1], m.dilation)
        for name, m in stage.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    }


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    torch.manual_seed(0)
    return create_model("pspnet_resnet18", 7).eval()


@pytest.fixture(scope="module")
def r101() -> nn.Module:
    torch.manual_seed(0)
    return create_model("pspnet_resnet101", 7).eval()


def test_r18_dilation_and_receptive_field(r18: nn.Module) -> None:
    # APD's ResNet-18 student: conv1 of every BasicBlock in layer 3/4 dilated by 2/4, conv2 not.
    assert dilations(r18.layer3) == {("conv1", (2, 2)), ("conv2", (1, 1))}
    assert dilations(r18.layer4) == {("conv1", (4, 4)), ("conv2", (1, 1))}
    assert all(m.stride == (1, 1) for s in (r18.layer3, r18.layer4) for m in s.modules() if isinstance(m, nn.Conv2d))
    # stem 7/2 -> 7, pool 3/2 -> 11, layer1 +32 -> 43, layer2 +8+16+32 -> 99, layer3 2*(32+16) -> 195,
    # layer4 2*(64+16) -> 355
    assert analytic_receptive_field(r18) == 355


def test_r101_dilation_shapes_and_receptive_field(r101: nn.Module) -> None:
    assert dilations(r101.layer3) == {("conv2", (2, 2))}
    assert dilations(r101.layer4) == {("conv2", (4, 4))}
    # stem 11 (j 4); layer1 3*8 -> 35; layer2 8 + 3*16 -> 91 (j 8); layer3 23 * 32 -> 827; layer4 3 * 64 -> 1019
    assert analytic_receptive_field(r101) == 1019
    with torch.no_grad():
        out = r101(torch.randn(1, 3, 65, 65))
    assert out.shape == (1, 7, 9, 9)
    assert r101.layer4[0].conv3.out_channels == 2048


def test_r18_outputs_train_and_eval(r18: nn.Module) -> None:
    x = torch.randn(2, 3, 65, 71)
    with torch.no_grad():
        assert r18(x).shape == (2, 7, 9, 9)
        r18.train()
        try:
            out = r18(x, features=True)
        finally:
            r18.eval()
    assert set(out) == {"out", "aux", "features"}
    assert out["out"].shape == out["aux"].shape == (2, 7, 9, 9)
    assert out["features"].shape == (2, 512, 9, 9)
    assert upsample_logits(out["out"], (65, 71)).shape == (2, 7, 65, 71)


@pytest.mark.parametrize("name, channels", [("deeplabv3_resnet18", 256), ("pspnet_tiny", 64)])
def test_other_models_output_stride(name: str, channels: int) -> None:
    model = create_model(name, 4).train()
    out = model(torch.randn(2, 3, 48, 40), features=True)
    assert out["out"].shape == out["aux"].shape == (2, 4, 6, 5)
    assert out["features"].shape[1] == channels
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 40)).shape == (1, 4, 6, 5)


@pytest.mark.parametrize("stride", [4, 2])
def test_small_models_output_stride_option(stride: int) -> None:
    """output_stride 4 / 2: logits at 1/4 / 1/2, layers 2-4 dilated 2/4/8 with no stride after the stem."""
    model = create_model("pspnet_tiny", 4, output_stride=stride).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 40)).shape == (1, 4, 48 // stride, 40 // stride)
    assert [model.layer2[0].conv1.stride, model.layer2[0].conv1.dilation] == [(1, 1), (2, 2)]
    assert model.layer3[0].conv2.dilation == (4, 4) and model.layer4[0].conv2.dilation == (8, 8)
    assert isinstance(model.layer0[-1], nn.Identity if stride == 2 else nn.MaxPool2d)
    with pytest.raises(ValueError, match="output_stride"):
        create_model("pspnet_small", 4, output_stride=16)


def test_empirical_receptive_field_matches_analytic() -> None:
    """Gradient support of one layer-4 position = the analytic receptive field (tiny model, all paths active)."""
    model = create_model("pspnet_tiny", 3).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
    model.layer0[3] = nn.AvgPool2d(3, 2, 1)  # a max-pool passes gradient to one input of its window only
    x = torch.ones(1, 3, 300, 300, requires_grad=True)
    out = backbone_forward(model, x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    rows = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2)) > 0).flatten()
    extent = int(rows.max() - rows.min() + 1)
    assert extent == analytic_receptive_field(model) == 243


def test_backbone_file_from_torchvision_resnet(tmp_path) -> None:
    from torchvision.models import resnet18

    reference = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = create_model("pspnet_resnet18", 5, backbone_checkpoint=str(path))
    assert torch.equal(model.layer0[0].weight, reference.conv1.weight)
    assert torch.equal(model.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    with pytest.raises(InputError, match="deep-stem"):
        create_model("pspnet_resnet18", 5, stem="deep", backbone_checkpoint=str(path))
    with pytest.raises(InputError, match="not found"):
        load_backbone(model, tmp_path / "missing.pth")


def test_checkpoint_roundtrip_and_param_groups(tmp_path) -> None:
    model = create_model("pspnet_tiny", 5)
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    other = create_model("pspnet_tiny", 5, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    groups = segmentation_param_groups(model)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert groups[1]["lr_scale"] == 10.0 and all(p is not model.layer0[0].weight for p in groups[1]["params"])
