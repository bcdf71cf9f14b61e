"""USB's ImageNet-pretrained ViT files load as USB loads them (``model.pretrained``, gkl.models.vit_pretrained).

USB (microsoft/Semi-supervised-learning, ``semilearn/nets/utils.py`` ``load_checkpoint``) reads the
file's ``"model"`` entry, removes a leading ``module.``, drops keys starting with ``fc``,
``classifier``, ``mlp`` or ``head``, resizes ``pos_embed`` bicubically to the model's grid and loads
the rest; the files here are written in that layout, with a 1000-class head and the extra keys USB
drops. The resized ``pos_embed`` is checked against a bicubic interpolation written out here in
float64 (Keys' cubic convolution with a = -0.75, half-pixel centres, edge rows repeated).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from gkl.config import load_config
from gkl.models import load_usb_pretrained
from gkl.models.vit import VisionTransformer
from gkl.tasks.parts import build_model
from gkl.utils.errors import InputError
from reference_weights import fill_value, fixed_input

SSL_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "ssl" / "cifar100_200" / "fixmatch_gkl.yaml"
REFERENCE = Path(__file__).parent / "data" / "cifar_reference_logits.pt"
#: what USB's loader drops besides the 1000-class ``head``: its other prefixes (``fc_norm`` is an ``fc`` key)
EXTRA_DROPPED = {"fc_norm.weight": (16,), "classifier.bias": (7,), "mlp.0.weight": (5, 16), "head_dist.weight": (3, 16)}


def _vit(num_classes: int, img_size: int = 8) -> VisionTransformer:
    return VisionTransformer(
        num_classes, img_size=img_size, patch_size=2, in_chans=1, embed_dim=16, depth=2, num_heads=2
    )


def _usb_file(
    path: Path, img_size: int = 8, *, prefix: str = "", drop: str | None = None, add: str | None = None
) -> dict:
    """A ``{"model": state_dict}`` file of a 1000-class ViT (image ``img_size``) plus USB's dropped extras."""
    torch.manual_seed(1)
    state = {k: v.clone() for k, v in _vit(1000, img_size).state_dict().items()}
    state.update({k: torch.randn(shape) for k, shape in EXTRA_DROPPED.items()})
    if drop is not None:
        del state[drop]
    if add is not None:
        state[add] = torch.ones(16)
    torch.save({"model": {prefix + k: v for k, v in state.items()}}, path)
    return state


def _bicubic_matrix(old: int, new: int) -> np.ndarray:
    """(new, old) weights of a 1-D bicubic resize: half-pixel centres, a = -0.75, indices clamped."""

    def cubic(x: float) -> float:
        a, x = -0.75, abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a if x < 2 else 0.0

    weights = np.zeros((new, old))
    for i in range(new):
        source = (i + 0.5) * old / new - 0.5
        base = int(np.floor(source))
        for j in range(base - 1, base + 3):
            weights[i, min(max(j, 0), old - 1)] += cubic(source - j)
    return weights


@pytest.mark.parametrize("prefix", ["", "module."])
def test_backbone_loads_and_usb_dropped_keys_are_dropped(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = _usb_file(tmp_path / "vit.pth", prefix=prefix)
    torch.manual_seed(2)
    model = _vit(10)
    torch.manual_seed(2)
    fresh = _vit(10)
    with caplog.at_level(logging.INFO, logger="gkl.models.vit_pretrained"):
        dropped = load_usb_pretrained(model, tmp_path / "vit.pth")
    assert sorted(dropped) == sorted(prefix + k for k in ["head.weight", "head.bias", *EXTRA_DROPPED])
    for key, value in model.state_dict().items():
        want = fresh.state_dict()[key] if key.startswith("head.") else state[key]
        assert torch.equal(value, want), key
    assert model.head.weight.shape == (10, 16)
    lines = [r.getMessage() for r in caplog.records if r.name == "gkl.models.vit_pretrained"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"dropped {len(dropped)} keys" in lines[0] and prefix + "head.weight" in lines[0]


@pytest.mark.parametrize(("file_img", "model_img"), [(12, 8), (8, 16), (10, 14)])
def test_pos_embed_of_another_grid_is_resized_bicubically(file_img: int, model_img: int, tmp_path: Path) -> None:
    state = _usb_file(tmp_path / "vit.pth", file_img)
    model = _vit(10, model_img)
    load_usb_pretrained(model, tmp_path / "vit.pth")
    old, new = file_img // 2, model_img // 2
    grid = state["pos_embed"][0, 1:].double().numpy().reshape(old, old, -1)
    weights = _bicubic_matrix(old, new)
    want = np.einsum("ia,jb,abd->ijd", weights, weights, grid).reshape(new * new, -1)
    got = model.pos_embed.detach()
    assert got.shape == (1, new * new + 1, 16)
    assert torch.equal(got[0, 0], state["pos_embed"][0, 0])  # the class token's row is kept
    np.testing.assert_allclose(got[0, 1:].double().numpy(), want, rtol=0, atol=1e-6)
    assert torch.equal(model.patch_embed.proj.weight, state["patch_embed.proj.weight"])


def test_same_grid_pos_embed_is_taken_as_it_is(tmp_path: Path) -> None:
    state = _usb_file(tmp_path / "vit.pth")
    model = _vit(10)
    load_usb_pretrained(model, tmp_path / "vit.pth")
    assert torch.equal(model.pos_embed, state["pos_embed"])
    # USB resizes always: the same-size bicubic resize is the identity, so this is what USB loads too
    assert np.allclose(_bicubic_matrix(4, 4), np.eye(4))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"drop": "blocks.1.attn.qkv.weight"}, "missing backbone keys: blocks.1.attn.qkv.weight"),
        ({"drop": "pos_embed"}, "missing backbone keys: pos_embed"),
        ({"add": "blocks.0.ls1.gamma"}, "keys that are not the model's: blocks.0.ls1.gamma"),
    ],
)
def test_a_file_that_is_not_the_backbone_is_refused_in_one_line(kwargs: dict, named: str, tmp_path: Path) -> None:
    _usb_file(tmp_path / "vit.pth", **kwargs)
    with pytest.raises(InputError) as err:
        load_usb_pretrained(_vit(10), tmp_path / "vit.pth")
    assert named in str(err.value) and "\n" not in str(err.value) and str(tmp_path / "vit.pth") in str(err.value)


def test_another_width_is_refused(tmp_path: Path) -> None:
    _usb_file(tmp_path / "vit.pth")
    wider = VisionTransformer(10, img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    with pytest.raises(InputError, match="pos_embed has shape"):
        load_usb_pretrained(wider, tmp_path / "vit.pth")


def test_the_ssl_recipe_loads_usbs_layout_into_the_reference_backbone(tmp_path: Path) -> None:
    """The reference ViT-S/2 weights (tests/reference_weights.py, USB's layout) through ``model.pretrained``
    with a 1000-class head: with the reference's 100-class head put back, the logits are USB's."""
    reference = torch.load(REFERENCE, weights_only=True)
    state = {
        key: fill_value(key, torch.empty(shape, dtype=getattr(torch, dtype)))
        for key, shape, dtype in reference["layouts"]["vit_small_patch2_32"]
    }
    head = {k: state.pop(k) for k in ("head.weight", "head.bias")}
    file = tmp_path / "vit_small_patch2_32_mlp_im_1k_32.pth"
    torch.save({"model": {**state, "head.weight": torch.randn(1000, 384), "head.bias": torch.zeros(1000)}}, file)
    model = build_model(load_config(SSL_RECIPE, [f"model.pretrained={file}"]).model, 100).eval()
    assert not torch.equal(model.head.weight, head["head.weight"])
    model.head.load_state_dict({"weight": head["head.weight"], "bias": head["head.bias"]})
    with torch.no_grad():
        logits = model(fixed_input())
    want = reference["logits"]["vit_small_patch2_32"]
    assert float((logits - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


def test_pretrained_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^model\.pretrained: file not found: .*nothing\.pth"):
        build_model(load_config(SSL_RECIPE, [f"model.pretrained={tmp_path / 'nothing.pth'}"]).model, 100)
    file = tmp_path / "w.pth"
    file.write_bytes(b"")
    cfg = load_config(SSL_RECIPE, [f"model.pretrained={file}", f"model.checkpoint={file}"])
    with pytest.raises(InputError, match=r"^model\.pretrained: expected null when model\.checkpoint is set"):
        build_model(cfg.model, 100)
    _usb_file(file)
    cfg = load_config(SSL_RECIPE, ["model.name=wrn_16_1", f"model.pretrained={file}"])
    with pytest.raises(InputError, match="expected a ViT"):
        build_model(cfg.model, 100)


def test_clip_and_language_models_refuse_model_pretrained() -> None:
    """Their weights are ``model.checkpoint``: a ``model.pretrained`` they would not read is an error naming it."""
    from gkl.tasks.clip import build_clip_model
    from gkl.tasks.lm_distill import _build_lm

    configs = Path(__file__).resolve().parents[1] / "configs"
    clip = load_config(configs / "clip" / "demo" / "teacher.yaml", ["model.pretrained=w.pth"])
    with pytest.raises(InputError, match=r"^model\.pretrained: expected null for an OpenCLIP model"):
        build_clip_model(clip.model, "model")
    lm = load_config(configs / "lm" / "teacher.yaml", ["model.pretrained=w.pth"])
    with pytest.raises(InputError, match=r"^model\.pretrained: expected null for a language model"):
        _build_lm(lm.model, lm.lm, "model")
