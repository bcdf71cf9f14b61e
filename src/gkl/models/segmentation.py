"""Semantic-segmentation models: dilated-ResNet PSPNet (Zhao et al. 2017) and DeepLabV3.

Registry names: ``pspnet_resnet18/50/101``, ``deeplabv3_resnet18/101`` (ADE20K, Cityscapes,
VOC sizes) and ``pspnet_tiny`` / ``pspnet_small`` (narrow ResNets for the bundled 48×48 task).

Output contract (every model here)
----------------------------------
``model(x)`` in eval mode returns the main logits at 1/8 of the input size,
``(N, C, ceil(H/8), ceil(W/8))``. In train mode it returns a dict
``{"out": logits, "aux": aux_logits}`` (aux head on ResNet layer 3, same 1/8 size);
``model(x, features=True)`` adds ``"features"``, the head's last feature map before the
classifier (512 channels for PSPNet, 256 for DeepLabV3; APD distils these) and returns
the dict in both modes (without ``"aux"`` in eval mode). Losses and metrics upsample the
logits bilinearly to the label size (:func:`upsample_logits`).

Backbone: the ImageNet ResNet of torchvision (7×7 stem, ``stem="torchvision"``) or the
three-3×3-conv "deep" stem of the PSPNet/APD reference code (``stem="deep"``, 128 channels
into layer 1). Output stride 8: layers 3 and 4 keep stride 1 and dilate their 3×3
convolutions by 2 and 4 in every block (as the PSPNet reference code does; torchvision's
``replace_stride_with_dilation`` keeps the first block at the previous dilation and refuses
BasicBlock). In a BasicBlock only ``conv1`` is dilated by default, as in APD's ResNet-18
student; ``dilate_basic="both"`` dilates ``conv2`` too.

Module names follow the APD/semseg PSPNet (``layer0`` stem, ``layer1..4``, ``ppm.features``,
``ppm.merge``, ``cls``, ``aux``), so with ``stem="deep"`` its released checkpoints load with
:func:`gkl.models.load_weights`; ImageNet backbone files load with :func:`load_backbone`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.registry import register_model
from gkl.utils.errors import InputError

Stem = Literal["torchvision", "deep"]
DilateBasic = Literal["conv1", "both"]

OUTPUT_STRIDE = 8


def upsample_logits(logits: torch.Tensor, size: Sequence[int], *, align_corners: bool = False) -> torch.Tensor:
    """Bilinear upsampling of (N, C, h, w) logits to ``size`` = (H, W) (no-op when equal)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def main_logits(output: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """The main logits of a model output (a tensor, or the ``"out"`` entry of a dict)."""
    return output["out"] if isinstance(output, dict) else output


# ----------------------------------------------------------------------------- backbone


class DilatedResNet(nn.Module):
    """ResNet with output stride 8 (layers 3/4 dilated 2/4), torchvision block classes.

    ``widths`` are the planes of layers 1-4 (64, 128, 256, 512 for the ImageNet ResNets);
    ``stem_width`` the stem's output channels. ``forward`` returns (layer3, layer4) maps.
    ``output_stride`` 4 also removes layer 2's stride (layers 2/3/4 dilated 2/4/8, the DeepLab
    way); 2 further drops the stem's max-pool. Only the small bundled-task models offer it.
    """

    def __init__(
        self,
        block: type[nn.Module],
        blocks: Sequence[int],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: Stem = "torchvision",
        stem_width: int | None = None,
        dilate_basic: DilateBasic = "conv1",
        output_stride: int = 8,
    ) -> None:
        super().__init__()
        if output_stride not in (2, 4, 8):
            raise ValueError(f"output_stride: expected 2, 4 or 8, got {output_stride!r}")
        if stem not in ("torchvision", "deep"):
            raise ValueError(f"stem: expected 'torchvision' or 'deep', got {stem!r}")
        if dilate_basic not in ("conv1", "both"):
            raise ValueError(f"dilate_basic: expected 'conv1' or 'both', got {dilate_basic!r}")
        self.stem_kind = stem
        if stem == "torchvision":
            width = stem_width or widths[0]
            self.layer0 = nn.Sequential(
                nn.Conv2d(3, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            half = widths[0]
            width = stem_width or 2 * widths[0]
            self.layer0 = nn.Sequential(
                nn.Conv2d(3, half, 3, 2, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, 1, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
                nn.Conv2d(half, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        if output_stride == 2:
            self.layer0[-1] = nn.Identity()
        self.inplanes = width
        self.layer1 = self._make_layer(block, widths[0], blocks[0], 1)
        self.layer2 = self._make_layer(block, widths[1], blocks[1], 2 if output_stride == 8 else 1)
        self.layer3 = self._make_layer(block, widths[2], blocks[2], 1)
        self.layer4 = self._make_layer(block, widths[3], blocks[3], 1)
        self.channels = (widths[2] * block.expansion, widths[3] * block.expansion)  # type: ignore[attr-defined]
        dilated = (
            ((self.layer3, 2), (self.layer4, 4))
            if output_stride == 8
            else ((self.layer2, 2), (self.layer3, 4), (self.layer4, 8))
        )
        for layer, dilation in dilated:
            for unit in layer:
                convs: list[Any] = (
                    [unit.conv2]
                    if hasattr(unit, "conv3")
                    # Bottleneck: its 3x3 is conv2
                    else ([unit.conv1] if dilate_basic == "conv1" else [unit.conv1, unit.conv2])
                )
                for conv in convs:
                    conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)

    def _make_layer(self, block: type[nn.Module], planes: int, count: int, stride: int) -> nn.Sequential:
        out = planes * block.expansion  # type: ignore[attr-defined]
        downsample = None
        if stride != 1 or self.inplanes != out:  # layers 3/4: stride 1 but a new width
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        units = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        units += [block(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer2(self.layer1(self.layer0(x)))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)


_STAGES = ("layer0", "layer1", "layer2", "layer3", "layer4")


# ----------------------------------------------------------------------------- heads


class PPM(nn.Module):
    """Pyramid pooling module: pooled branches at ``bins`` + the input, merged by a 3×3 conv."""

    def __init__(self, in_channels: int, bins: Sequence[int], out_channels: int, dropout: float) -> None:
        super().__init__()
        reduction = in_channels // len(bins)
        self.bins = tuple(bins)
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, reduction, 1, bias=False),
                nn.BatchNorm2d(reduction),
                nn.ReLU(inplace=True),
            )
            for b in self.bins
        )
        self.merge = nn.Sequential(
            nn.Conv2d(in_channels + reduction * len(self.bins), out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(x), size, mode="bilinear", align_corners=True) for branch in self.features]
        return self.merge(torch.cat([x, *pooled], dim=1))


def _aux_head(in_channels: int, mid_channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(mid_channels, num_classes, 1),
    )


class _SegmentationModel(nn.Module):
    """Shared forward: backbone -> head features -> classifier (+ aux on layer 3)."""

    feature_channels: int
    #: the backbone stages, made children by _adopt (setattr), and the auxiliary head
    layer0: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    layer4: nn.Module
    aux: nn.Module

    def _adopt(self, backbone: DilatedResNet) -> tuple[int, int]:
        """Make the backbone stages top-level children (keys ``layer0..4.*`` as in APD's files)."""
        for name in _STAGES:
            setattr(self, name, getattr(backbone, name))
        self.stem_kind = backbone.stem_kind
        return backbone.channels

    def backbone_modules(self) -> list[nn.Module]:
        """The ImageNet-backbone stages ``layer0``..``layer4``."""
        return [getattr(self, name) for name in _STAGES]

    def head_features(self, c4: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        c3 = self.layer3(self.layer2(self.layer1(self.layer0(x))))
        c4 = self.layer4(c3)
        feats = self.head_features(c4)
        out = self.classify(feats)
        if not self.training and not features:
            return out
        result = {"out": out}
        if self.training:
            result["aux"] = self.aux(c3)
        if features:
            result["features"] = feats
        return result

    def head_modules(self) -> list[nn.Module]:
        """Modules that are not part of the ImageNet backbone (APD/PSPNet train them at 10× lr)."""
        return [m for name, m in self.named_children() if name not in _STAGES]


class PSPNet(_SegmentationModel):
    """PSPNet: dilated ResNet, PPM (bins 1/2/3/6) to 512 channels, 1×1 classifier, aux head on layer 3."""

    def __init__(
        self,
        backbone: DilatedResNet,
        num_classes: int,
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        head_channels: int = 512,
        aux_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        c3, c4 = self._adopt(backbone)
        self.ppm = PPM(c4, bins, head_channels, dropout)
        self.cls = nn.Sequential(nn.Conv2d(head_channels, num_classes, 1))
        self.aux = _aux_head(c3, aux_channels, num_classes, dropout)
        self.feature_channels = head_channels
        self.num_classes = num_classes

    def head_features(self, c4: torch.Tensor) -> torch.Tensor:
        return self.ppm(c4)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.cls(features)


class DeepLabV3(_SegmentationModel):
    """DeepLabV3 (torchvision's ASPP head, rates 12/24/36 at output stride 8) + FCN aux head on layer 3."""

    def __init__(self, backbone: DilatedResNet, num_classes: int) -> None:
        super().__init__()
        c3, c4 = self._adopt(backbone)
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead
        from torchvision.models.segmentation.fcn import FCNHead

        head = DeepLabHead(c4, num_classes, atrous_rates=(12, 24, 36))
        self.head = nn.Sequential(*list(head.children())[:-1])  # ASPP, 3x3 conv, BN, ReLU -> 256 channels
        self.cls = head[-1]
        self.aux = FCNHead(c3, num_classes)
        self.feature_channels = 256
        self.num_classes = num_classes

    def head_features(self, c4: torch.Tensor) -> torch.Tensor:
        return self.head(c4)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.cls(features)


# ----------------------------------------------------------------------------- builders

_RESNETS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("BasicBlock", (2, 2, 2, 2)),
    "resnet50": ("Bottleneck", (3, 4, 6, 3)),
    "resnet101": ("Bottleneck", (3, 4, 23, 3)),
}


def _block(name: str) -> type[nn.Module]:
    """torchvision's residual block class (imported on use: torchvision is slow to import)."""
    from torchvision.models import resnet

    return getattr(resnet, name)


def build_backbone(depth: str, *, stem: Stem = "torchvision", dilate_basic: DilateBasic = "conv1") -> DilatedResNet:
    block_name, blocks = _RESNETS[depth]
    block = _block(block_name)
    return DilatedResNet(block, blocks, stem=stem, dilate_basic=dilate_basic)


def _finish(model: nn.Module, backbone_checkpoint: str | os.PathLike[str] | None) -> nn.Module:
    init_conv_bn_linear(model)
    if backbone_checkpoint is not None:
        load_backbone(model, backbone_checkpoint)
    return model


def _register_family() -> None:
    for depth in ("resnet18", "resnet50", "resnet101"):

        def pspnet(
            num_classes: int,
            *,
            stem: Stem = "torchvision",
            dilate_basic: DilateBasic = "conv1",
            backbone_checkpoint: str | None = None,
            _depth: str = depth,
        ) -> nn.Module:
            backbone = build_backbone(_depth, stem=stem, dilate_basic=dilate_basic)
            return _finish(PSPNet(backbone, num_classes), backbone_checkpoint)

        pspnet.__doc__ = f"PSPNet on a dilated {depth} (output stride 8); see :mod:`gkl.models.segmentation`."
        register_model(f"pspnet_{depth}", input_kind="segmentation")(pspnet)

    for depth in ("resnet18", "resnet101"):

        def deeplab(
            num_classes: int,
            *,
            stem: Stem = "torchvision",
            dilate_basic: DilateBasic = "conv1",
            backbone_checkpoint: str | None = None,
            _depth: str = depth,
        ) -> nn.Module:
            backbone = build_backbone(_depth, stem=stem, dilate_basic=dilate_basic)
            return _finish(DeepLabV3(backbone, num_classes), backbone_checkpoint)

        deeplab.__doc__ = f"DeepLabV3 on a dilated {depth} (output stride 8); see :mod:`gkl.models.segmentation`."
        register_model(f"deeplabv3_{depth}", input_kind="segmentation")(deeplab)


_register_family()


@register_model("pspnet_tiny", input_kind="segmentation")
def pspnet_tiny(num_classes: int, *, dropout: float = 0.1, output_stride: int = 8) -> nn.Module:
    """PSPNet on a one-block-per-stage ResNet of widths 16/32/64/64 (bundled-task student, ~0.2M params).

    ``output_stride`` 8 (default), 4 or 2 (see :class:`DilatedResNet`); the demo uses 4.
    """
    backbone = DilatedResNet(
        _block("BasicBlock"), (1, 1, 1, 1), widths=(16, 32, 64, 64), dilate_basic="both", output_stride=output_stride
    )
    return _finish(PSPNet(backbone, num_classes, head_channels=64, aux_channels=32, dropout=dropout), None)


@register_model("pspnet_small", input_kind="segmentation")
def pspnet_small(num_classes: int, *, dropout: float = 0.1, output_stride: int = 8) -> nn.Module:
    """PSPNet on a ResNet-18 layout at half width (32/64/128/256; bundled-task teacher, ~3M params).

    ``output_stride`` 8 (default), 4 or 2 (see :class:`DilatedResNet`); the demo uses 4.
    """
    backbone = DilatedResNet(
        _block("BasicBlock"), (2, 2, 2, 2), widths=(32, 64, 128, 256), dilate_basic="both", output_stride=output_stride
    )
    return _finish(PSPNet(backbone, num_classes, head_channels=128, aux_channels=64, dropout=dropout), None)


# ----------------------------------------------------------------------------- weights

_TV_STEM = {"conv1.": "layer0.0.", "bn1.": "layer0.1."}
_DEEP_STEM = {
    "conv1.": "layer0.0.",
    "bn1.": "layer0.1.",
    "conv2.": "layer0.3.",
    "bn2.": "layer0.4.",
    "conv3.": "layer0.6.",
    "bn3.": "layer0.7.",
}


def load_backbone(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load ImageNet ResNet weights from ``path`` into the stages ``layer0..4`` of ``model`` (``weights_only``).

    Accepts a torchvision ResNet state_dict (``conv1``/``bn1`` stem, or the deep stem's
    ``conv1..3``/``bn1..3`` of the PSPNet reference ResNets), bare or under ``state_dict``/
    ``model``, with or without a ``module.`` prefix. The classifier (``fc.*``) is skipped.
    Every backbone parameter must be present with its shape; returns the skipped keys.
    Missing file or mismatch -> :class:`InputError` naming the file.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"backbone checkpoint file not found: {file}")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(
            f"backbone checkpoint {file}: cannot be read with torch.load(weights_only=True): {err}"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise InputError(f"backbone checkpoint {file}: expected a state_dict, got {type(obj).__name__}")
    stem_kind = model.stem_kind
    stem_map = _DEEP_STEM if stem_kind == "deep" else _TV_STEM
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in obj.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        for old, new in stem_map.items():
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        if name.startswith("fc.") or not isinstance(value, torch.Tensor):
            skipped.append(key)
            continue
        mapped[name] = value
    expected = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in _STAGES}
    missing = [k for k in expected if k not in mapped]
    wrong = [
        f"{k} (file {tuple(mapped[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in mapped and mapped[k].shape != v.shape
    ]
    unexpected = [k for k in mapped if k not in expected]
    if missing or wrong or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:5]}")
        raise InputError(f"backbone checkpoint {file} does not fit a {stem_kind}-stem ResNet: " + "; ".join(parts))
    model.load_state_dict(mapped, strict=False)  # every backbone key checked above
    return skipped


def segmentation_param_groups(model: nn.Module, *, head_lr_scale: float = 10.0) -> list[dict]:
    """Parameter groups: backbone at lr_scale 1, heads (PPM/ASPP, classifier, aux) at ``head_lr_scale``.

    The PSPNet/APD recipes train the newly initialised heads at 10× the base learning rate.
    """
    segmentation_model: Any = model  # a _SegmentationModel (nn.Module's attributes are typed Tensor | Module)
    backbone = [p for m in segmentation_model.backbone_modules() for p in m.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    heads = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": backbone, "lr_scale": 1.0}, {"params": heads, "lr_scale": float(head_lr_scale)}]
