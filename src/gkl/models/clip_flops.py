"""Forward FLOPs of an OpenCLIP model for one image and one caption, from its config (no model is built).

A multiply-add counts 2 FLOPs, as ``torch.utils.flop_counter``. Only the matrix products are
counted (normalisation, activations, softmax and embedding look-ups are left out). For a ViT
image tower (``vision_cfg``: image size S, patch size p, width W, L layers, MLP ratio r) with
P = (S / p)² patches and N = P + 1 tokens (the class token), and a text tower (``text_cfg``:
context length C, width w, L' layers, MLP ratio r'), with embedding dimension E::

    block(n, d, h)  = 8 n d²   (QKV and output projections)
                    + 4 n² d   (attention scores QKᵀ and their weighted sum of V)
                    + 4 n d h  (the MLP, hidden width h = int(r d))
    image           = 2 P (3 p²) W  +  L · block(N, W, int(r W))  +  2 W E
    text            = L' · block(C, w, int(r' w))  +  2 w E

(the patch embedding, the blocks and the projection of the pooled token; the text blocks run on all
C positions).

``tests/test_clip_flops.py`` checks both against ``FlopCounterMode`` on gkl's tiny towers.
Towers outside this form (timm or Hugging Face towers, ModifiedResNet, attentional pooling,
patch dropout, CoCa's extra token) raise ValueError naming what is not modelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ClipFlops", "transformer_block_flops", "image_flops", "text_flops", "clip_forward_flops"]

#: ``open_clip.create_model`` arguments that do not change the FLOPs of a forward pass
_NEUTRAL_KWARGS = ("force_quick_gelu", "force_custom_text", "force_preprocess_cfg", "cache_dir", "output_dict")


@dataclass(frozen=True)
class ClipFlops:
    """Forward FLOPs of the image tower for one image and of the text tower for one caption."""

    image: float
    text: float

    @property
    def pair(self) -> float:
        """One image-text pair: both towers."""
        return self.image + self.text


def transformer_block_flops(tokens: int, width: int, hidden: int) -> float:
    """FLOPs of one transformer block on ``tokens`` tokens of ``width`` with an MLP of ``hidden`` units."""
    n, d = tokens, width
    return 8.0 * n * d * d + 4.0 * n * n * d + 4.0 * n * d * hidden


def _pair(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    raise ValueError(f"{key}: expected an integer or a pair, got {value!r}")


def _refuse(cfg: Mapping[str, Any], tower: str, keys: Mapping[str, Any]) -> None:
    """ValueError when a key of ``cfg`` differs from the plain tower's value in ``keys``."""
    for key, plain in keys.items():
        if cfg.get(key, plain) not in (plain, None):
            raise ValueError(f"{tower}.{key}={cfg[key]!r} is not modelled by the FLOP formula")


def _pooled(cfg: Mapping[str, Any], tower: str, default: str) -> None:
    """The projection applies to one pooled token: ValueError for ``pool_type: none`` (every token projected)."""
    if cfg.get("pool_type", default) in ("none", "", None):
        raise ValueError(f"{tower}.pool_type={cfg.get('pool_type')!r} is not modelled by the FLOP formula")


def image_flops(vision_cfg: Mapping[str, Any], embed_dim: int, *, image_size: Any = None) -> float:
    """Forward FLOPs of OpenCLIP's ViT image tower for one image (``image_size`` overrides the config's)."""
    _refuse(
        vision_cfg,
        "vision_cfg",
        {"timm_model_name": None, "attentional_pool": False, "patch_dropout": 0.0},
    )
    _pooled(vision_cfg, "vision_cfg", "tok")
    layers = vision_cfg.get("layers", 12)
    if not isinstance(layers, int) or isinstance(layers, bool):
        raise ValueError(f"vision_cfg.layers={layers!r}: a ModifiedResNet tower is not modelled by the FLOP formula")
    height, width_px = _pair(image_size if image_size is not None else vision_cfg.get("image_size", 224), "image_size")
    patch_h, patch_w = _pair(vision_cfg.get("patch_size", 16), "patch_size")
    width = int(vision_cfg.get("width", 768))
    hidden = int(width * float(vision_cfg.get("mlp_ratio", 4.0)))
    patches = (height // patch_h) * (width_px // patch_w)
    embed = 2.0 * patches * 3 * patch_h * patch_w * width
    return embed + layers * transformer_block_flops(patches + 1, width, hidden) + 2.0 * width * embed_dim


def text_flops(text_cfg: Mapping[str, Any], embed_dim: int, *, context_length: int | None = None) -> float:
    """Forward FLOPs of OpenCLIP's text transformer for one caption (``context_length`` overrides the config's)."""
    _refuse(text_cfg, "text_cfg", {"hf_model_name": None, "embed_cls": False})
    _pooled(text_cfg, "text_cfg", "argmax")
    tokens = int(context_length if context_length is not None else text_cfg.get("context_length", 77))
    width = int(text_cfg.get("width", 512))
    hidden = int(width * float(text_cfg.get("mlp_ratio", 4.0)))
    layers = int(text_cfg.get("layers", 12))
    return layers * transformer_block_flops(tokens, width, hidden) + 2.0 * width * embed_dim


def clip_forward_flops(name: str, **kwargs: Any) -> ClipFlops:
    """:class:`ClipFlops` of OpenCLIP model ``name`` built with ``open_clip.create_model`` arguments ``kwargs``
    (``force_image_size`` and ``force_context_length`` change the count; an argument whose effect is not
    modelled, or a tower outside the formula of the module docstring, is a ValueError)."""
    from gkl.models.clip import model_config

    config = model_config(name)
    if config.get("multimodal_cfg") is not None:
        raise ValueError(f"{name}: a CoCa-style multimodal decoder is not modelled by the FLOP formula")
    for key, value in kwargs.items():
        if key == "force_patch_dropout" and value:
            raise ValueError(f"model.kwargs.force_patch_dropout={value!r} is not modelled by the FLOP formula")
        if key not in (*_NEUTRAL_KWARGS, "force_image_size", "force_context_length", "force_patch_dropout"):
            raise ValueError(f"model.kwargs.{key}: its effect on the FLOPs is not modelled")
    embed_dim = int(config["embed_dim"])
    return ClipFlops(
        image=image_flops(config["vision_cfg"], embed_dim, image_size=kwargs.get("force_image_size")),
        text=text_flops(config["text_cfg"], embed_dim, context_length=kwargs.get("force_context_length")),
    )
