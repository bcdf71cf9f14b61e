"""ImageNet-pretrained ViT weights loaded the way USB loads them (``model.pretrained`` in a config).

USB (microsoft/Semi-supervised-learning, ``semilearn/nets/utils.py``: ``load_checkpoint`` and
``resize_pos_embed_vit``, called by the ``vit_*`` builders of ``semilearn/nets/vit/vit.py`` with
``pretrained_path``) reads the file's ``"model"`` entry, removes a leading ``module.`` from a key,
drops every key that starts with ``fc``, ``classifier``, ``mlp`` or ``head`` (the pretraining
classifier, e.g. the 1000-class ImageNet head of ``vit_small_patch2_32_mlp_im_1k_32.pth``),
resizes ``pos_embed`` to the model's grid (class token kept, the square grid of patch embeddings
interpolated bicubically, ``align_corners=False``) and loads the rest with ``strict=False``; the
classifier keeps its fresh initialisation.

:func:`load_usb_pretrained` does the same, except that it is strict about the rest: a backbone
key the file lacks, a key that is neither the model's nor one of the dropped ones, or a shape
that differs after the resize is an :class:`~gkl.utils.errors.InputError` (one line naming the
file and the keys). USB resizes ``pos_embed`` always; a same-size bicubic resize with
``align_corners=False`` is the identity, so the file's tensor is used as it is when the grids agree.
What was dropped or resized is reported in one log line.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gkl.models.checkpoint import read_state_dict
from gkl.models.vit import VisionTransformer
from gkl.utils.errors import InputError

__all__ = ["USB_DROPPED_PREFIXES", "load_usb_pretrained", "resize_pos_embed"]

log = logging.getLogger(__name__)

#: key prefixes USB's ``load_checkpoint`` skips (plain string prefixes, as in USB: ``fc_norm`` too)
USB_DROPPED_PREFIXES = ("fc", "classifier", "mlp", "head")
#: the model keys the file need not hold (they keep their initialisation, as in USB)
_HEAD_PREFIX = "head."
_MAX_LISTED = 8


def resize_pos_embed(posemb: torch.Tensor, num_positions: int, num_tokens: int = 1) -> torch.Tensor:
    """USB's ``resize_pos_embed_vit``: ``posemb`` (1, num_tokens + g², D) to (1, num_positions, D).

    The first ``num_tokens`` rows (the class token) are kept; the square grid of the rest is
    interpolated bicubically (``align_corners=False``) to a square grid of ``num_positions - num_tokens``.
    """
    grid = posemb[0, num_tokens:]
    old = math.isqrt(grid.shape[0])
    new = math.isqrt(num_positions - num_tokens)
    if old * old != grid.shape[0] or new * new != num_positions - num_tokens:
        raise ValueError(f"resize_pos_embed: grids must be square, got {grid.shape[0]} -> {num_positions - num_tokens}")
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)
    return torch.cat([posemb[:, :num_tokens], grid], dim=1)


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def _usb_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(kept entries with a leading ``module.`` removed, dropped keys) as USB's loop makes them."""
    kept: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        name = key.split(".", 1)[1] if key.startswith("module.") else key
        if name.startswith(USB_DROPPED_PREFIXES):
            dropped.append(key)
        else:
            kept[name] = value
    return kept, dropped


def load_usb_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load USB's pretrained ViT weights from ``path`` into ``model`` (in place) and return the dropped keys.

    The file is a state_dict, bare or under ``"model"`` / ``"state_dict"`` (USB writes ``{"model": ...}``),
    read with ``weights_only``. Every key of ``model`` but its classifier (``head.*``) must be in the file.
    """
    if not isinstance(model, VisionTransformer):
        raise InputError(
            f"model.pretrained: expected a ViT of gkl.models.vit (USB's pretrained weights), got {type(model).__name__}"
        )
    file = Path(path)
    kept, dropped = _usb_keys(read_state_dict(file))
    target = model.state_dict()
    resized = ""
    if "pos_embed" in kept and kept["pos_embed"].shape != target["pos_embed"].shape:
        old = tuple(kept["pos_embed"].shape)
        if kept["pos_embed"].dim() != 3 or kept["pos_embed"].shape[2] != target["pos_embed"].shape[2]:
            raise InputError(
                f"pretrained ViT {file}: pos_embed has shape {old}, the model {tuple(target['pos_embed'].shape)}"
            )
        try:
            kept["pos_embed"] = resize_pos_embed(kept["pos_embed"], target["pos_embed"].shape[1])
        except ValueError as err:
            raise InputError(f"pretrained ViT {file}: pos_embed of shape {old}: {err}") from None
        resized = f"; pos_embed resized from {old} to {tuple(target['pos_embed'].shape)}"
    needed = [k for k in target if not k.startswith(_HEAD_PREFIX)]
    missing = [k for k in needed if k not in kept]
    if missing:
        raise InputError(f"pretrained ViT {file}: missing backbone keys: {_listed(missing)}")
    unexpected = [k for k in kept if k not in target]
    if unexpected:
        raise InputError(f"pretrained ViT {file}: keys that are not the model's: {_listed(unexpected)}")
    wrong = [
        f"{k} (file {tuple(kept[k].shape)}, model {tuple(target[k].shape)})"
        for k in needed
        if kept[k].shape != target[k].shape
    ]
    if wrong:
        raise InputError(f"pretrained ViT {file}: shape mismatches: {_listed(wrong)}")
    result = model.load_state_dict(kept, strict=False)
    assert not result.unexpected_keys and all(k.startswith(_HEAD_PREFIX) for k in result.missing_keys), result
    log.info(
        "pretrained ViT %s: loaded %d tensors; dropped %d keys as USB does (%s)%s; head.* keeps its initialisation",
        file,
        len(kept),
        len(dropped),
        _listed(dropped) or "none",
        resized,
    )
    return dropped
