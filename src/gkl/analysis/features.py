"""Penultimate features (the classifier's input) through a forward hook, and per-epoch feature statistics.

No model edits: the classifier is a module named ``fc``/``classifier``/``linear``/``head``
that is an ``nn.Linear``, else the last ``nn.Linear`` of the model, and a forward
pre-hook records its input. Kim et al. 2021 (δ∞ analysis) track the penultimate norm
‖r‖ and the logit sum Σ_j z_j: the τ → ∞ limit of KD rewards a larger ‖r‖.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gkl.utils.modules import unwrap_model

__all__ = ["Outputs", "find_classifier", "capture_features", "iterate_batches", "collect_outputs",
           "feature_statistics"]

CLASSIFIER_NAMES = ("fc", "classifier", "linear", "head")
Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def iterate_batches(data: Dataset | Iterable, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(inputs, labels)`` of a map-style dataset (in order) or of a loader as it yields them."""
    if isinstance(data, Dataset) and hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        yield from DataLoader(data, batch_size=batch_size, shuffle=False)
        return
    for batch in data:
        yield batch[0], batch[1]


@dataclass
class Outputs:
    """Logits, labels and (optionally) penultimate features of a pass over some data."""

    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def collect_outputs(model: nn.Module, data: Dataset | Iterable, *, attack: Attack | None = None,
                    features: bool = False, batch_size: int = 256,
                    keep: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Outputs:
    """Eval-mode outputs of ``model`` on ``data`` (natural, or ``attack(images, labels)`` images).

    ``keep`` (labels -> bool mask) selects examples before the attack. The model's
    train/eval mode is restored afterwards.
    """
    device = _device(model)
    was_training = model.training
    model.eval()
    logits, labels, feats = [], [], []
    try:
        with capture_features(model) if features else contextlib.nullcontext([]) as store:
            for images, targets in iterate_batches(data, batch_size):
                images, targets = images.to(device), torch.as_tensor(targets).to(device)
                if keep is not None:
                    mask = keep(targets)
                    images, targets = images[mask], targets[mask]
                    if targets.numel() == 0:
                        continue
                if attack is not None:
                    images = attack(images, targets)
                store.clear() if features else None
                with torch.no_grad():
                    out = model(images)
                logits.append(out.detach().float().cpu())
                labels.append(targets.cpu())
                if features:
                    feats.append(store[-1].float().cpu())
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("no examples to analyse (empty data, or no example of the selected classes)")
    return Outputs(torch.cat(logits), torch.cat(labels).long(), torch.cat(feats) if features else None)


def feature_statistics(model: nn.Module, loader: Dataset | Iterable) -> dict[str, float]:
    """Mean L2 norm of the penultimate features, mean logit sum Σ_j z_j, mean logit L2 norm.

    The quantities of Kim et al.'s δ∞ analysis, averaged over the examples of ``loader``.
    """
    out = collect_outputs(model, loader, features=True)
    assert out.features is not None
    return {
        "feature_norm": out.features.double().norm(dim=1).mean().item(),
        "logit_sum": out.logits.double().sum(dim=1).mean().item(),
        "logit_norm": out.logits.double().norm(dim=1).mean().item(),
    }


def statistics_to_record(student: dict[str, float], teacher: dict[str, float] | None = None) -> dict[str, Any]:
    """A metrics.jsonl entry ``{"features": {"student": ..., "teacher": ...}}`` for the engine hook."""
    record: dict[str, Any] = {"student": student}
    if teacher is not None:
        record["teacher"] = teacher
    return {"features": record}
