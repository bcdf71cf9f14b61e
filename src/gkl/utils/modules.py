"""Helpers on nn.Module wrappers (DistributedDataParallel, torch.compile) and on a classifier's head.

The classifier of a model is its final linear layer: an ``nn.Linear`` attribute named ``fc``,
``classifier``, ``linear`` or ``head``, else the model's last ``nn.Linear``. Its input is the
penultimate feature vector r; a forward pre-hook reads it without editing the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import cast

import torch
from torch import nn

__all__ = ["CLASSIFIER_NAMES", "unwrap_model", "find_classifier", "capture_features"]

CLASSIFIER_NAMES = ("fc", "classifier", "linear", "head")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the plain module inside a DistributedDataParallel (or compiled) wrapper."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = cast(nn.Module, model._orig_mod)
        else:
            return model


def find_classifier(model: nn.Module) -> nn.Linear:
    """The model's final linear layer (see the module docstring); ValueError if it has none."""
    net = unwrap_model(model)
    for name in CLASSIFIER_NAMES:
        module = getattr(net, name, None)
        if isinstance(module, nn.Linear):
            return module
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear classifier to take penultimate features from")
    return linears[-1]


@contextlib.contextmanager
def capture_features(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward pass appends the classifier's input (flattened, detached)."""
    store: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        store.append(inputs[0].detach().flatten(1))

    handle = find_classifier(model).register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
