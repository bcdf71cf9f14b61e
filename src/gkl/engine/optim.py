"""The optimizer of a run from ``train.optim``: SGD or AdamW with parameter groups.

Parameter groups (each carries ``lr_scale``; :class:`gkl.engine.schedules.LRSchedule` sets
``lr = schedule(step) * lr_scale``):

- No weight decay (``optim.no_decay_norm_bias``): parameters with ``ndim <= 1`` (normalisation
  weights, biases, layer-scale vectors), names ending in ``.bias``, embedding-like ViT tensors
  (``pos_embed``, ``cls_token``, ``dist_token``, ``reg_token``, ``mask_token``) and the names a
  model lists in ``no_weight_decay()`` -- timm's ``param_groups_weight_decay`` rule, which USB
  (``semilearn/core/utils/build.py: get_optimizer``, ``bn_wd_skip``) uses too.
- Layer-wise LR decay (``optim.layer_decay = d``) for ViT-style models with ``L`` blocks named
  ``<prefix>blocks.<i>``: layer id 0 for the patch/position embeddings and tokens, ``i + 1`` for
  block ``i`` (the final ``<prefix>norm`` joins the last block, id ``L``), ``L + 1`` for the
  rest (head, ``fc_norm``); ``lr_scale = d ** (L + 1 - id)``. This is the BEiT rule as timm's
  ``param_groups_layer_decay`` applies it through the model's ``group_matcher``
  (``timm/optim/_param_groups.py``; stem ``cls_token|pos_embed|patch_embed`` = 0, ``blocks.i``
  = i + 1, ``^norm`` grouped with the last block, unmatched = last), and USB's ViT
  (``semilearn/nets/vit/vit.py: group_matcher``) uses exactly that grouping. BEiT's own
  ``get_num_layer_for_vit`` differs only in putting the final ``norm`` with the head.
- Per-parameter LR multipliers (``lr_scales``, by parameter name; e.g. the 10x heads of a
  segmentation model) multiply the layer-decay scale.
- Extra groups (``extra_groups``): parameters the optimizer trains besides the model's, e.g. an
  objective's adapter (``Objective.trainable_param_groups()``), each with its ``lr_scale``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import torch
from torch import nn

from gkl.settings.optim import OptimSettings
from gkl.utils.errors import InputError
from gkl.utils.modules import unwrap_model

EMBEDDING_NAMES = frozenset({"pos_embed", "cls_token", "dist_token", "reg_token", "mask_token"})
_STEM_NAMES = EMBEDDING_NAMES | {"patch_embed"}
_BLOCK = re.compile(r"^(?P<prefix>(?:.*\.)?)blocks\.(?P<index>\d+)\.")


def _model_no_weight_decay(model: nn.Module) -> set[str]:
    hook = getattr(model, "no_weight_decay", None)
    return set(hook()) if callable(hook) else set()


def decays(name: str, param: torch.Tensor, extra_no_decay: AbstractSet[str] = frozenset()) -> bool:
    """Whether ``param`` (called ``name`` in the model) gets weight decay under ``no_decay_norm_bias``."""
    if param.ndim <= 1 or name.endswith(".bias") or name in extra_no_decay:
        return False
    return name.rsplit(".", 1)[-1] not in EMBEDDING_NAMES


def layer_ids(names: list[str]) -> tuple[dict[str, int], int]:
    """Layer id of every parameter name and the number ``L`` of blocks (see the module docstring)."""
    prefixes, depth = set(), 0
    for name in names:
        match = _BLOCK.match(name)
        if match:
            prefixes.add(match["prefix"])
            depth = max(depth, int(match["index"]) + 1)
    if not prefixes:
        raise InputError(
            "optim.layer_decay: needs a ViT-style model with parameters named 'blocks.<i>.*'; this model has none"
        )
    if len(prefixes) > 1:
        raise InputError(
            f"optim.layer_decay: found blocks under several prefixes {sorted(prefixes)}; "
            "expected one ViT-style block stack"
        )
    (prefix,) = prefixes
    ids = {}
    for name in names:
        match = _BLOCK.match(name)
        rest = name[len(prefix) :] if name.startswith(prefix) else None
        if match:
            ids[name] = int(match["index"]) + 1
        elif rest is not None and rest.split(".", 1)[0] in _STEM_NAMES:
            ids[name] = 0
        elif rest is not None and rest.split(".", 1)[0] == "norm":
            ids[name] = depth
        else:
            ids[name] = depth + 1
    return ids, depth


def param_groups(
    model: nn.Module, settings: OptimSettings, *, base_lr: float, lr_scales: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Parameter groups (trainable parameters only, in model order) with ``lr``, ``weight_decay``,
    ``lr_scale``, ``layer_id`` (or ``None``) and ``param_names`` (names inside DDP/compile wrappers).

    ``lr_scales``: an LR multiplier by parameter name (default 1), times the layer-decay scale."""
    model = unwrap_model(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model: has no trainable parameters")
    extra = _model_no_weight_decay(model)
    lr_scales = dict(lr_scales or {})
    unknown = sorted(set(lr_scales) - {n for n, _ in named})
    if unknown:
        raise ValueError(f"lr_scales: not trainable parameters of the model: {unknown[:5]}")
    ids, depth = layer_ids([n for n, _ in named]) if settings.layer_decay is not None else ({}, 0)
    groups: dict[tuple, dict[str, Any]] = {}
    for name, param in named:
        wd = settings.weight_decay
        if settings.no_decay_norm_bias and not decays(name, param, extra):
            wd = 0.0
        layer = ids.get(name)
        # ``ids`` is empty (so ``layer`` None) unless layer_decay is set
        scale = 1.0 if layer is None or settings.layer_decay is None else settings.layer_decay ** (depth + 1 - layer)
        scale *= float(lr_scales.get(name, 1.0))
        group = groups.setdefault(
            (layer, wd, scale),
            {
                "params": [],
                "param_names": [],
                "weight_decay": wd,
                "lr_scale": scale,
                "layer_id": layer,
                "lr": base_lr * scale,
            },
        )
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def extra_param_groups(
    groups: Sequence[Mapping[str, Any]], settings: OptimSettings, *, base_lr: float
) -> list[dict[str, Any]]:
    """Optimizer groups for parameters outside the model: ``{"params", "lr_scale"}`` dicts, split by
    the weight-decay rule of ``no_decay_norm_bias`` (:func:`decays`; unnamed, so ``ndim <= 1``
    tensors get none)."""
    result = []
    for index, spec in enumerate(groups):
        scale = float(spec.get("lr_scale", 1.0))
        params = [p for p in spec["params"] if p.requires_grad]
        decayed = [not settings.no_decay_norm_bias or decays(f"extra{index}.{i}", p) for i, p in enumerate(params)]
        parts = [
            ([p for p, d in zip(params, decayed) if d], settings.weight_decay),
            ([p for p, d in zip(params, decayed) if not d], 0.0),
        ]
        for chosen, wd in parts:
            if chosen:
                result.append(
                    {
                        "params": chosen,
                        "param_names": [f"extra{index}.{i}" for i in range(len(chosen))],
                        "weight_decay": wd,
                        "lr_scale": scale,
                        "layer_id": None,
                        "lr": base_lr * scale,
                    }
                )
    return result


def build_optimizer(
    model: nn.Module,
    settings: OptimSettings,
    *,
    base_lr: float,
    lr_scales: Mapping[str, float] | None = None,
    extra_groups: Sequence[Mapping[str, Any]] = (),
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``torch.optim.AdamW`` over :func:`param_groups` of ``model`` and
    :func:`extra_param_groups` of ``extra_groups``.

    Without ``no_decay_norm_bias``, ``layer_decay``, ``lr_scales`` and extra groups there is one
    group holding every trainable parameter: the optimizer of earlier gkl versions (plus ``lr_scale = 1``).
    """
    groups = param_groups(model, settings, base_lr=base_lr, lr_scales=lr_scales)
    groups += extra_param_groups(extra_groups, settings, base_lr=base_lr)
    if settings.name == "sgd":
        # OptimSettings fills the defaults of the chosen optimizer's keys
        assert settings.momentum is not None and settings.nesterov is not None
        return torch.optim.SGD(
            groups,
            lr=base_lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=settings.nesterov,
        )
    if settings.name == "adamw":
        assert settings.betas is not None and settings.eps is not None
        beta1, beta2 = settings.betas  # a 2-list from YAML or a 2-tuple, checked by OptimSettings
        return torch.optim.AdamW(
            groups, lr=base_lr, betas=(beta1, beta2), eps=settings.eps, weight_decay=settings.weight_decay
        )
    raise ValueError(f"optim.name: unknown optimizer {settings.name!r}")
