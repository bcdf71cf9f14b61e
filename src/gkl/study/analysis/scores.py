"""Per-class analyses of the GKL paper: class-mean true-class scores (Fig. 3) and margins (Eq. 14, Fig. 4c).

Both are means over the examples of each class of a per-example value, summed batch by batch
(:class:`PerClassMean`), so a segmentation run's pixels never have to be held at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import Dataset

from gkl.tasks.analysis import classifier_outputs

from .features import Attack, Outputs, iterate_rows

__all__ = [
    "PerClassMean",
    "class_mean_scores",
    "class_margins",
    "per_class_mean",
    "margins_of",
    "true_class_scores",
    "per_class_scores_and_margins",
]


def per_class_mean(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of ``values`` over the examples of each class (NaN for a class without examples), float64."""
    meter = PerClassMean(num_classes)
    meter.add(values, labels)
    return meter.result()


class PerClassMean:
    """Running float64 sums and counts per class; :meth:`result` is the mean (NaN for an empty class)."""

    def __init__(self, num_classes: int) -> None:
        self.sums = torch.zeros(num_classes, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, values: torch.Tensor, labels: torch.Tensor) -> None:
        self.sums.index_add_(0, labels, values.double())
        self.counts += torch.bincount(labels, minlength=self.counts.numel()).double()

    def result(self) -> torch.Tensor:
        return torch.where(
            self.counts > 0, self.sums / self.counts.clamp_min(1), torch.full_like(self.sums, float("nan"))
        )


def margins_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example boundary margin z_y − max_{j≠y} z_j (GKL paper Eq. 14)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


def true_class_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example softmax score of the true class (GKL Fig. 3), float64."""
    return torch.softmax(logits.double(), dim=1).gather(1, labels[:, None]).squeeze(1)


def per_class_scores_and_margins(
    batches: Iterable[Outputs], num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Tensor[C] class-mean true-class scores, Tensor[C] class-mean margins) over ``batches``
    (C = ``num_classes``, else the logits' width); ValueError when there is no example."""
    scores = margins = None
    for out in batches:
        if out.labels.numel() == 0:
            continue
        if scores is None or margins is None:
            c = num_classes or out.logits.shape[1]
            scores, margins = PerClassMean(c), PerClassMean(c)
        scores.add(true_class_scores(out.logits, out.labels), out.labels)
        margins.add(margins_of(out.logits.double(), out.labels), out.labels)
    if scores is None or margins is None:
        raise ValueError("no examples to analyse (empty data)")
    return scores.result(), margins.result()


def class_mean_scores(model: nn.Module, data: Dataset | Iterable, *, num_classes: int | None = None) -> torch.Tensor:
    """Tensor[C]: mean softmax score of the true class over each class's examples (GKL Fig. 3)."""
    rows = iterate_rows(model, data, classifier_outputs(model))
    return per_class_scores_and_margins(rows, num_classes)[0]


def class_margins(
    model: nn.Module, data: Dataset | Iterable, *, attack: Attack | None = None, num_classes: int | None = None
) -> torch.Tensor:
    """Tensor[C]: per-class mean of z_y − max_{j≠y} z_j (Eq. 14) on natural or ``attack``-ed examples.

    ``attack(images, labels) -> adversarial images``, e.g. ``gkl.attacks.PGD(model, eps=8/255)``.
    """
    rows = iterate_rows(model, data, classifier_outputs(model), attack=attack)
    return per_class_scores_and_margins(rows, num_classes)[1]
