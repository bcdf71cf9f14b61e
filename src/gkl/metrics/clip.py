"""The evaluator of a CLIP run: zero-shot classification and/or image-text retrieval in one call.

The engine calls ``evaluator(model, loader, device=, dist=)`` once per split. For a CLIP
run each split is a :class:`ClipEvalSet` holding the loaders of its parts (zero-shot
images with labels, a caption set for retrieval); the evaluator merges the metrics of
:class:`~gkl.metrics.zeroshot.ZeroShotEvaluator` (``zeroshot_top1``, ``zeroshot_top5``)
and :class:`~gkl.metrics.retrieval.RetrievalEvaluator` (``i2t_R@K``, ``t2i_R@K``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ClipEvalSet", "ClipEvaluator"]


@dataclass
class ClipEvalSet:
    """One evaluation split of a CLIP run: a zero-shot loader of (images, labels) and/or a caption loader."""

    zeroshot: Any = None
    retrieval: Any = None


class ClipEvaluator:
    """Evaluator protocol over :class:`ClipEvalSet` splits; either part may be absent."""

    def __init__(self, zeroshot: Any = None, retrieval: Any = None) -> None:
        self.zeroshot = zeroshot
        self.retrieval = retrieval

    def __call__(
        self, model: nn.Module, loader: ClipEvalSet, *, device: Any = "cpu", dist: Any = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.zeroshot is not None and loader.zeroshot is not None:
            out.update(self.zeroshot(model, loader.zeroshot, device=device, dist=dist))
        if self.retrieval is not None and loader.retrieval is not None:
            out.update(self.retrieval(model, loader.retrieval, device=device, dist=dist))
        return out
