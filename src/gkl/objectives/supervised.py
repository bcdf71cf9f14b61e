"""Plain supervised cross-entropy: teachers and student baselines."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from gkl.objectives.base import Objective, StepOutput, classification_batch
from gkl.utils.validation import check_number, fail


class SupervisedObjective(Objective):
    """CE(model(x), y), optionally with label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_number("", "label_smoothing", label_smoothing, minimum=0.0)
        if label_smoothing >= 1.0:
            raise fail("", "label_smoothing", "a value in [0, 1)", label_smoothing)
        self.label_smoothing = label_smoothing

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:
        images, labels = classification_batch(batch)
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return StepOutput(losses={"ce": loss}, logits=logits, targets=labels)
