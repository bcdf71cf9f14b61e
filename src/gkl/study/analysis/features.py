"""Penultimate features (the classifier's input) through a forward hook, and per-epoch feature statistics.

No model edits: the classifier is found and its input read by a forward pre-hook with
:func:`gkl.utils.modules.find_classifier` / :func:`~gkl.utils.modules.capture_features`
(shared with the engine's ``train.log_feature_stats``). Kim et al. 2021 (δ∞ analysis) track the penultimate norm
‖r‖ and the logit sum Σ_j z_j: the τ → ∞ limit of KD rewards a larger ‖r‖.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gkl.metrics.features import FeatureStatistics
from gkl.tasks.analysis import Rows, classifier_outputs
from gkl.utils.modules import capture_features, find_classifier

__all__ = [
    "Outputs",
    "find_classifier",
    "capture_features",
    "iterate_batches",
    "iterate_rows",
    "collect_outputs",
    "feature_statistics",
]

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


def iterate_rows(
    model: nn.Module,
    data: Dataset | Iterable,
    outputs: Callable[[torch.Tensor, torch.Tensor, bool], Rows],
    *,
    attack: Attack | None = None,
    features: bool = False,
    batch_size: int = 256,
    keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[Outputs]:
    """Eval-mode :class:`Outputs` of one batch at a time, on the CPU: ``outputs(inputs, labels, features)``
    gives the rows (an image, a labelled pixel; :class:`gkl.tasks.analysis.AnalysisView`), on natural
    inputs or on ``attack(images, labels)``. ``keep`` (labels -> bool mask) selects rows; with one
    label per image it selects the images before the attack. The model's mode is restored afterwards.
    """
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        for inputs, targets in iterate_batches(data, batch_size):
            inputs, targets = inputs.to(device), torch.as_tensor(targets).to(device)
            per_image = targets.ndim == 1 and targets.shape[0] == inputs.shape[0]
            if keep is not None and per_image:
                mask = keep(targets)
                inputs, targets = inputs[mask], targets[mask]
                if targets.numel() == 0:
                    continue
            if attack is not None:
                inputs = attack(inputs, targets)
            with torch.no_grad():
                logits, labels, feats = outputs(inputs, targets, features)
            if keep is not None and not per_image:
                mask = keep(labels)
                logits, labels = logits[mask], labels[mask]
                feats = feats[mask] if feats is not None else None
            yield Outputs(
                logits.detach().float().cpu(),
                labels.long().cpu(),
                feats.detach().float().cpu() if feats is not None else None,
            )
    finally:
        model.train(was_training)


def collect_outputs(
    model: nn.Module,
    data: Dataset | Iterable,
    *,
    attack: Attack | None = None,
    features: bool = False,
    batch_size: int = 256,
    keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Outputs:
    """Eval-mode outputs of the classifier ``model`` on ``data`` (natural, or ``attack(images, labels)``
    images), with its penultimate features when ``features``; see :func:`iterate_rows`."""
    batches = [
        b
        for b in iterate_rows(
            model, data, classifier_outputs(model), attack=attack, features=features, batch_size=batch_size, keep=keep
        )
        if b.labels.numel()
    ]
    if not batches:
        raise ValueError("no examples to analyse (empty data, or no example of the selected classes)")
    feats = [b.features for b in batches if b.features is not None]
    return Outputs(
        torch.cat([b.logits for b in batches]),
        torch.cat([b.labels for b in batches]),
        torch.cat(feats) if features else None,
    )


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
