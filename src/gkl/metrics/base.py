"""The evaluator interface: one callable per task returning flat named metrics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Evaluator(Protocol):
    """Evaluates ``model`` on every batch of ``loader``.

    Returns flat named metrics (``top1``, ``top5``, ``mIoU``, ``zeroshot_top1``, ``perplexity``,
    ...) as numbers; non-scalar extras (per-class lists, group dicts) may sit under other keys.
    ``dist`` is a :class:`gkl.utils.distributed.DistInfo` (or ``None``): under several ranks the
    evaluator combines the ranks' counts so every rank returns the totals over the whole set.
    The engine picks ``train.select_metric`` from the result (``train.select_mode`` max|min).
    """

    def __call__(
        self, model: nn.Module, loader: Iterable, *, device: torch.device | str, dist: Any = None
    ) -> dict[str, Any]: ...
