"""Per-class analyses of the GKL paper: class-mean true-class scores (Fig. 3) and margins (Eq. 14, Fig. 4c)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import Dataset

from .features import Attack, collect_outputs

__all__ = ["class_mean_scores", "class_margins", "per_class_mean", "margins_of"]


def per_class_mean(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of ``values`` over the examples of each class (NaN for a class without examples), float64."""
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, values.double())
    counts = torch.bincount(labels, minlength=num_classes).double()
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


def margins_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example boundary margin z_y − max_{j≠y} z_j (GKL paper Eq. 14)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


def class_mean_scores(model: nn.Module, data: Dataset | Iterable, *, num_classes: int | None = None) -> torch.Tensor:
    """Tensor[C]: mean softmax score of the true class over each class's examples (GKL Fig. 3)."""
    out = collect_outputs(model, data)
    c = num_classes or out.logits.shape[1]
    scores = torch.softmax(out.logits.double(), dim=1).gather(1, out.labels[:, None]).squeeze(1)
    return per_class_mean(scores, out.labels, c)


def class_margins(
    model: nn.Module, data: Dataset | Iterable, *, attack: Attack | None = None, num_classes: int | None = None
) -> torch.Tensor:
    """Tensor[C]: per-class mean of z_y − max_{j≠y} z_j (Eq. 14) on natural or ``attack``-ed examples.

    ``attack(images, labels) -> adversarial images``, e.g. ``gkl.attacks.PGD(model, eps=8/255)``.
    """
    out = collect_outputs(model, data, attack=attack)
    c = num_classes or out.logits.shape[1]
    return per_class_mean(margins_of(out.logits.double(), out.labels), out.labels, c)
