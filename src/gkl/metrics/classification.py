"""Clean top-1/top-5, per-class and Many/Medium/Few accuracy of a classifier.

Distributed evaluation: a loader built by ``gkl.data.build_loader(..., train=False, rank=r,
world_size=w)`` holds only rank ``r``'s examples ``r, r + w, ...`` (no padding) and says so
with the attribute ``rank_shard = (r, w)``; every rank then evaluates its own shard and the
per-class counts are summed over ranks, so each example is counted once and no rank loads
another rank's data. A loader without ``rank_shard`` (every rank sees the whole set) is
evaluated batch-strided instead: rank ``r`` runs the model on batches ``r, r + w, ...``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gkl.utils.modules import unwrap_model


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    loader: Iterable,
    *,
    num_classes: int,
    device: torch.device | str,
    class_groups: Mapping[str, Sequence[int]] | None = None,
    dist: Any = None,
) -> dict[str, Any]:
    """Accuracy of ``model`` on every ``(images, labels)`` batch of ``loader``.

    Runs the model in eval mode under ``no_grad`` and restores its previous mode.
    Distributed (``dist`` a :class:`~gkl.utils.distributed.DistInfo` with
    ``world_size > 1``): per-rank shards or batch striding (module docstring);
    counts are summed with ``all_reduce``, so each example is counted exactly once.

    Returns ``{"top1", "top5" (only if num_classes >= 5), "per_class" (list,
    NaN for classes absent from the data), "groups" ({name: accuracy}, only
    with class_groups), "count"}``; accuracies in percent.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    device = torch.device(device)
    if class_groups is not None:
        for name, members in class_groups.items():
            bad = [c for c in members if not 0 <= int(c) < num_classes]
            if bad:
                raise ValueError(f"class_groups[{name!r}]: class indices {bad[:5]} outside [0, {num_classes})")
    rank, world_size = 0, 1
    if dist is not None and dist.world_size > 1:
        rank, world_size = dist.rank, dist.world_size
    shard = getattr(loader, "rank_shard", None)
    if shard is not None and shard[1] > 1 and tuple(shard) != (rank, world_size):
        raise ValueError(
            f"loader: holds rank {shard[0]}'s shard of {shard[1]}, but this process is rank {rank} of {world_size}"
        )
    stride = world_size if shard is None or shard[1] == 1 else 1
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    correct1 = torch.zeros(num_classes, dtype=torch.float64, device=device)
    correct5 = torch.zeros(num_classes, dtype=torch.float64, device=device)
    totals = torch.zeros(num_classes, dtype=torch.float64, device=device)
    try:
        for index, (images, labels) in enumerate(loader):
            if stride > 1 and index % stride != rank:
                continue
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True).long()
            logits = net(images)
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise ValueError(
                    f"num_classes: model gives logits of shape {tuple(logits.shape)}, expected (batch, {num_classes})"
                )
            k = min(5, num_classes)
            top = logits.float().topk(k, dim=1).indices
            hit1 = (top[:, 0] == labels).double()
            hit5 = (top == labels[:, None]).any(dim=1).double()
            totals.index_add_(0, labels, torch.ones_like(hit1))
            correct1.index_add_(0, labels, hit1)
            correct5.index_add_(0, labels, hit5)
    finally:
        net.train(was_training)
    if world_size > 1:
        import torch.distributed as torch_dist

        stacked = torch.stack([correct1, correct5, totals])
        torch_dist.all_reduce(stacked, op=torch_dist.ReduceOp.SUM)
        correct1, correct5, totals = stacked[0], stacked[1], stacked[2]
    count = int(totals.sum().item())
    if count == 0:
        raise ValueError("loader: produced no examples to evaluate")
    per_class = torch.where(totals > 0, 100.0 * correct1 / totals.clamp_min(1), torch.nan)
    result: dict[str, Any] = {
        "top1": 100.0 * correct1.sum().item() / count,
        "per_class": [float(v) for v in per_class.cpu()],
        "count": count,
    }
    if num_classes >= 5:
        result["top5"] = 100.0 * correct5.sum().item() / count
    if class_groups is not None:
        groups = {}
        for name, members in class_groups.items():
            idx = torch.as_tensor(list(members), dtype=torch.long, device=device)
            n = totals[idx].sum().item()
            groups[name] = 100.0 * correct1[idx].sum().item() / n if n > 0 else float("nan")
        result["groups"] = groups
    return result


class ClassificationEvaluator:
    """The classification :class:`~gkl.metrics.base.Evaluator`: :func:`evaluate_classifier`.

    Returns ``top1``, ``top5`` (with >= 5 classes), ``per_class``, ``groups`` (with
    ``class_groups``, e.g. ImageNet-LT's Many/Medium/Few) and ``count``; accuracies in percent.
    """

    def __init__(self, num_classes: int, class_groups: Mapping[str, Sequence[int]] | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.class_groups = class_groups

    def __call__(
        self, model: nn.Module, loader: Iterable, *, device: torch.device | str, dist: Any = None
    ) -> dict[str, Any]:
        return evaluate_classifier(
            model, loader, num_classes=self.num_classes, device=device, class_groups=self.class_groups, dist=dist
        )

    def chance_level(self, metric: str) -> float | None:
        """Chance level (percent) of ``metric``: ``100 * K / num_classes`` for ``topK`` (a constant
        prediction on balanced classes), None for metrics without one (the engine's collapse watch)."""
        match = re.fullmatch(r"top(\d+)", metric)
        if match is None:
            return None
        return min(100.0, 100.0 * int(match.group(1)) / self.num_classes)
