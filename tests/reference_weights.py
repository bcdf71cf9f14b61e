"""Deterministic weights for any state_dict, chosen from each entry's key name and shape only.

Used twice: by ``tests/data/make_cifar_reference_logits.py`` to fill the reference implementations'
models (RepDistiller, USB) before storing their logits, and by the tests to write the same weights
in the community file layout for gkl's loader. The rule depends on nothing but the key, the
shape and the dtype, so both sides produce bit-identical tensors:

- a generator seeded by the first 8 bytes of sha256(key);
- ``num_batches_tracked`` (integer): 0; ``running_mean``: 0.1·N(0, 1); ``running_var``: 0.5 + U(0, 1)
  (positive); a 1-D ``weight`` (a norm's scale): 1 + 0.1·N(0, 1); a ``bias``: 0.1·N(0, 1);
  ``cls_token`` / ``pos_embed``: 0.02·N(0, 1); any other tensor with 2 or more dimensions
  (convolution, linear): N(0, 1)/√fan_in with fan_in = numel / shape[0].
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch

#: the fixed input of the reference logits: 2 CIFAR-sized images from a seeded generator
INPUT_SEED = 20261205


def fixed_input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(INPUT_SEED))


def key_generator(key: str) -> torch.Generator:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def fill_value(key: str, like: torch.Tensor) -> torch.Tensor:
    """The tensor the rule assigns to ``key`` with the shape and dtype of ``like``."""
    if not like.is_floating_point():
        return torch.zeros_like(like)
    g = key_generator(key)
    shape = tuple(like.shape)
    name = key.rsplit(".", 1)[-1]

    def normal() -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64)

    if name == "running_mean":
        value = 0.1 * normal()
    elif name == "running_var":
        value = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
    elif name in ("cls_token", "pos_embed"):
        value = 0.02 * normal()
    elif name == "bias":
        value = 0.1 * normal()
    elif name == "weight" and like.dim() == 1:
        value = 1.0 + 0.1 * normal()
    elif like.dim() >= 2:
        value = normal() / math.sqrt(like.numel() // shape[0])
    else:
        value = 0.1 * normal()
    return value.to(like.dtype)


def filled_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every entry of ``state_dict`` replaced by the rule's tensor (same keys, shapes, dtypes)."""
    return {key: fill_value(key, value) for key, value in state_dict.items()}
