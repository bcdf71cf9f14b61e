"""Penultimate features (the classifier's input) through a forward hook, and per-epoch feature statistics.

No model edits: the classifier is found and its input read by a forward pre-hook with
:func:`gkl.utils.modules.find_classifier` / :func:`~gkl.utils.modules.capture_features`
(shared with the engine's ``train.log_feature_stats``). Kim et al. 2021 (δ∞ analysis) track the penultimate norm
‖r‖ and the logit sum Σ_j z_j: the τ → ∞ limit of KD rewards a larger ‖r‖.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gkl.metrics.features import FeatureStatistics
from gkl.utils.modules import capture_features, find_classifier

__all__ = ["Outputs", "find_classifier", "capture_features", "iterate_batches", "collect_outputs", "feature_statistics"]

Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def iterate_batches(data: Dataset | Iterable, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(inputs, labels)`` of a map-style dataset (in order) or of a loader as it yields them."""
    if isinstance(data, Dataset) and hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        yield from DataLoader(data, batch_size=batch_size, shuffle=False)
        return
    # a loader or IterableDataset (a map-style Dataset without __len__ iterates by __getitem__)
    for batch in cast(Iterable, data):
        yield batch[0], batch[1]


@dataclass
class Outputs:
    """Logits, labels and (optionally) penultimate features of a pass over some data."""

    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def collect_outputs(
    model: nn.Module,
    data: Dataset | Iterable,
    *,
    attack: Attack | None = None,
    features: bool = False,
    batch_size: int = 256,
    keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Outputs:
    """Eval-mode outputs of ``model`` on ``data`` (natural, or ``attack(images, labels)`` images).

    ``keep`` (labels -> bool mask) selects examples before the attack. The model's
    train/eval mode is restored afterwards.
    """
    device = _device(model)
    was_training = model.training
    model.eval()
    logits, labels, feats = [], [], []
    try:
        context: contextlib.AbstractContextManager[list[torch.Tensor]] = (
            capture_features(model) if features else contextlib.nullcontext([])
        )
        with context as store:
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

    The quantities of Kim et al.'s δ∞ analysis, averaged over the examples of ``loader``
    (:class:`gkl.metrics.features.FeatureStatistics`, as ``train.log_feature_stats`` logs them).
    """
    out = collect_outputs(model, loader, features=True)
    assert out.features is not None
    meter = FeatureStatistics()  # the engine's train.log_feature_stats formulas
    meter.update(out.features, out.logits)
    return meter.result()
