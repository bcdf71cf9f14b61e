"""Make tests/data/cifar_reference_logits.pt: logits of the reference implementations on a fixed input.

One-off script, kept with the data it made. For each of the 23 CIFAR architectures of the
distillation zoo it builds the model of RepDistiller (HobbitLong/RepDistiller, ``models/``; the
layout of the community ``<arch>_vanilla/ckpt_epoch_240.pth`` teacher files), fills every
state_dict entry by the rule of ``tests/reference_weights.py`` (from the key name and shape),
and stores its eval-mode logits on ``reference_weights.fixed_input()`` and its state_dict layout
(key, shape, dtype: the layout of the reference's checkpoint files); the same for USB's ViT-S/2
(microsoft/Semi-supervised-learning, ``semilearn/nets/vit/vit.py``, ``vit_small_patch2_32``;
needs timm). ``tests/test_models_reference_logits.py`` writes the same weights in the reference
layout, loads them with gkl's checkpoint loader and compares its logits with these.

The data in the repository was made with (RepDistiller b84f547c5db6a35318d4671d7d5c4de74c822403,
USB 1ef4cbebcc0b368158315aeb425053858cf6c845, torch 2.x on CPU):

    git clone https://github.com/HobbitLong/RepDistiller /tmp/repdistiller
    git clone https://github.com/microsoft/Semi-supervised-learning /tmp/usb
    python tests/data/make_cifar_reference_logits.py --repdistiller /tmp/repdistiller --usb /tmp/usb
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from reference_weights import filled_state_dict, fixed_input  # noqa: E402

#: gkl's registry name -> (RepDistiller module, constructor); all built with num_classes=100
REPDISTILLER = {
    "resnet8": ("resnet", "resnet8"),
    "resnet14": ("resnet", "resnet14"),
    "resnet20": ("resnet", "resnet20"),
    "resnet32": ("resnet", "resnet32"),
    "resnet44": ("resnet", "resnet44"),
    "resnet56": ("resnet", "resnet56"),
    "resnet110": ("resnet", "resnet110"),
    "resnet8x4": ("resnet", "resnet8x4"),
    "resnet32x4": ("resnet", "resnet32x4"),
    "wrn_16_1": ("wrn", "wrn_16_1"),
    "wrn_16_2": ("wrn", "wrn_16_2"),
    "wrn_40_1": ("wrn", "wrn_40_1"),
    "wrn_40_2": ("wrn", "wrn_40_2"),
    "vgg8": ("vgg", "vgg8_bn"),
    "vgg11": ("vgg", "vgg11_bn"),
    "vgg13": ("vgg", "vgg13_bn"),
    "vgg16": ("vgg", "vgg16_bn"),
    "vgg19": ("vgg", "vgg19_bn"),
    "MobileNetV2": ("mobilenetv2", "mobile_half"),
    "ShuffleV1": ("ShuffleNetv1", "ShuffleV1"),
    "ShuffleV2": ("ShuffleNetv2", "ShuffleV2"),
    "ResNet18": ("resnetv2", "ResNet18"),
    "ResNet50": ("resnetv2", "ResNet50"),
}


@torch.no_grad()
def reference_logits(model: torch.nn.Module) -> tuple[torch.Tensor, list[tuple[str, list[int], str]]]:
    """Eval-mode logits on the fixed input with the rule's weights, and the state_dict layout
    (key, shape, dtype) the weights are written in."""
    weights = filled_state_dict(model.state_dict())
    model.load_state_dict(weights, strict=True)
    out = model.eval()(fixed_input())
    if isinstance(out, dict):  # USB: {"logits", "feat"}
        out = out["logits"]
    layout = [(key, list(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in weights.items()]
    return out.detach().clone(), layout


def repdistiller_models(repo: Path) -> dict[str, tuple[torch.Tensor, list]]:
    sys.path.insert(0, str(repo))
    results = {}
    for name, (module, constructor) in REPDISTILLER.items():
        build = getattr(importlib.import_module(f"models.{module}"), constructor)
        model = build(100) if constructor == "mobile_half" else build(num_classes=100)
        results[name] = reference_logits(model)
        print(f"{name:12s} max |logit| {results[name][0].abs().max():.3g}")
    sys.path.remove(str(repo))
    return results


def usb_vit(repo: Path) -> tuple[torch.Tensor, list]:
    # semilearn/nets/vit/vit.py imports only torch, timm and semilearn.nets.utils.load_checkpoint
    # (used for pretrained=True only); load the file alone so the rest of semilearn is not needed
    stub = types.ModuleType("semilearn.nets.utils")
    stub.load_checkpoint = None  # type: ignore[attr-defined]
    for package in ("semilearn", "semilearn.nets"):
        sys.modules.setdefault(package, types.ModuleType(package))
    sys.modules["semilearn.nets.utils"] = stub
    try:  # timm >= 1.0 moved to_2tuple out of timm.models.layers.helpers (USB wrote it for timm 0.x)
        importlib.import_module("timm.models.layers.helpers")
    except ModuleNotFoundError:
        from timm.layers import to_2tuple

        helpers = types.ModuleType("timm.models.layers.helpers")
        helpers.to_2tuple = to_2tuple  # type: ignore[attr-defined]
        sys.modules["timm.models.layers.helpers"] = helpers
    spec = importlib.util.spec_from_file_location("usb_vit", repo / "semilearn" / "nets" / "vit" / "vit.py")
    assert spec is not None and spec.loader is not None
    vit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vit)
    result = reference_logits(vit.vit_small_patch2_32(num_classes=100))
    print(f"{'vit_small_patch2_32':12s} max |logit| {result[0].abs().max():.3g}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repdistiller", type=Path, required=True, help="a checkout of HobbitLong/RepDistiller")
    parser.add_argument("--usb", type=Path, required=True, help="a checkout of microsoft/Semi-supervised-learning")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("cifar_reference_logits.pt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = repdistiller_models(args.repdistiller)
    results["vit_small_patch2_32"] = usb_vit(args.usb)
    torch.save(
        {
            "logits": {name: logits for name, (logits, _) in results.items()},
            "layouts": {name: layout for name, (_, layout) in results.items()},
            "torch": str(torch.__version__),
        },
        args.out,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
