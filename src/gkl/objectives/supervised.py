"""Plain supervised cross-entropy: teachers and student baselines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gkl.objectives.base import Objective, StepOutput


class SupervisedObjective(Objective):
    """CE(model(x), y), optionally with label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> StepOutput:
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return StepOutput(losses={"ce": loss}, logits=logits)
