"""Semi-supervised objectives: FixMatch and Mean-Teacher with a configurable consistency loss.

Both follow USB's step structure (see docs/ssl.md); the batch is the dict of
:class:`gkl.data.ssl.SSLLoader`: ``x_lb``, ``y_lb``, ``x_ulb_w``, ``x_ulb_s`` (and ``y_ulb``,
used only to log the accuracy of the pseudo-labels). The consistency loss is
:func:`gkl.ssl.consistency_loss` (mean over all unlabelled examples, masked ones included).

- FixMatch: one forward on cat(x_lb, x_ulb_w, x_ulb_s); loss = CE(lb) + λ_u · consistency(strong,
  weak) with mask = [max softmax(weak) ≥ p_cutoff] computed without gradient.
- Mean-Teacher: an EMA copy of the model (the teacher; parameters averaged with ``ema_decay``,
  buffers copied, updated after every optimizer step) sees x_ulb_w in train mode without
  gradient; the student sees x_lb and x_ulb_s (two forwards, as USB); loss = CE(lb) +
  λ_u · ramp(step) · consistency(student strong, teacher weak), ramp = min(step / (unsup_warmup ·
  total_steps), 1). Optional mask from the teacher's confidence (``p_cutoff``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gkl.objectives.base import Objective, StepOutput
from gkl.objectives.loss_choice import settings_logit_loss
from gkl.settings.ssl import KL_FAMILY_CONSISTENCY, MeanTeacherSettings, SSLSettings
from gkl.ssl import consistency_loss
from gkl.utils.modules import unwrap_model


def confidence_mask(logits_weak: torch.Tensor, p_cutoff: float | None) -> torch.Tensor:
    """1.0 where max softmax(weak) ≥ p_cutoff (no gradient); all ones when ``p_cutoff`` is None."""
    if p_cutoff is None:
        return torch.ones(logits_weak.shape[0], device=logits_weak.device)
    probs = torch.softmax(logits_weak.detach().float(), dim=1)
    return (probs.max(dim=1).values >= p_cutoff).float()


class _SemiSupervised(Objective):
    """Shared parts: the consistency term and the logged statistics."""

    def __init__(self, settings: SSLSettings) -> None:
        super().__init__()
        if not isinstance(settings, SSLSettings):
            raise ValueError(f"settings: expected SSLSettings, got {type(settings).__name__}")
        self.settings = settings
        _, params = settings_logit_loss(settings, "consistency")
        self.consistency_kwargs: dict[str, Any] = params
        if isinstance(settings, KL_FAMILY_CONSISTENCY):  # settings.uses_kl_family
            self.consistency_kwargs["detach_weak"] = settings.detach_weak
        if hasattr(settings, "temperature"):
            self.consistency_kwargs["temperature"] = settings.temperature

    def unsupervised(self, strong: torch.Tensor, weak: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return consistency_loss(
            strong.float(), weak.float(), loss=self.settings.consistency, mask=mask, **self.consistency_kwargs
        )

    @staticmethod
    def statistics(weak: torch.Tensor, mask: torch.Tensor, batch: dict) -> dict[str, torch.Tensor | float]:
        """Logged per step, as tensors (no host sync): ``mask_ratio``; with ``y_ulb`` also the accuracy
        of the pseudo-labels, ``pseudo_acc``, and among the masked-in examples, ``masked_pseudo_acc``
        (0 when the mask is empty)."""
        stats: dict[str, torch.Tensor | float] = {"mask_ratio": mask.mean()}
        y_ulb = batch.get("y_ulb")
        if y_ulb is not None:
            hit = (weak.detach().argmax(dim=1) == y_ulb).float()
            stats["pseudo_acc"] = hit.mean()
            stats["masked_pseudo_acc"] = (hit * mask).sum() / mask.sum().clamp_min(1.0)
        return stats


class FixMatchObjective(_SemiSupervised):
    """FixMatch (Sohn et al. 2020) as in USB, with any consistency loss of Table XX."""

    def forward(self, model: nn.Module, batch: dict, *, epoch: int, step: int) -> StepOutput:
        cfg = self.settings
        x_lb, y_lb = batch["x_lb"], batch["y_lb"]
        n_lb, n_ulb = x_lb.shape[0], batch["x_ulb_w"].shape[0]
        logits = model(torch.cat([x_lb, batch["x_ulb_w"], batch["x_ulb_s"]]))
        logits_lb = logits[:n_lb]
        logits_w, logits_s = logits[n_lb:].split(n_ulb)
        mask = confidence_mask(logits_w, cfg.p_cutoff)
        losses = {
            "sup_ce": F.cross_entropy(logits_lb.float(), y_lb),
            "unsup": cfg.lambda_u * self.unsupervised(logits_s, logits_w, mask),
        }
        return StepOutput(
            losses=losses,
            logits=logits_lb,
            targets=y_lb,
            metrics=self.statistics(logits_w, mask, batch),
            batch_size=n_lb,
        )


class MeanTeacherObjective(_SemiSupervised):
    """Mean-Teacher (Tarvainen & Valpola 2017) as in USB: EMA teacher on the weak view.

    Args:
        settings: :class:`SSLSettings` with ``algorithm="meanteacher"``.
        model: the student (its copy becomes the teacher; the teacher is checkpointed with the objective).
        total_steps: the run's number of optimizer steps (for the ``unsup_warmup`` ramp).
    """

    settings: MeanTeacherSettings
    _student: nn.Module | None  # in __dict__, not a submodule (see __init__)

    def __init__(self, settings: SSLSettings, model: nn.Module, *, total_steps: int) -> None:
        super().__init__(settings)
        if not isinstance(settings, MeanTeacherSettings):
            raise ValueError(f"settings.algorithm: expected 'meanteacher', got {settings.algorithm!r}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps: expected an integer >= 1, got {total_steps!r}")
        self.teacher = copy.deepcopy(unwrap_model(model))
        self.teacher.requires_grad_(False)
        self.total_steps = total_steps
        # a plain reference (not a submodule): the student's weights belong to the engine's checkpoint
        self.__dict__["_student"] = None

    def ramp(self, step: int) -> float:
        """min(step / (unsup_warmup · total_steps), 1); 1 without warm-up (steps count from 1)."""
        warm = self.settings.unsup_warmup * self.total_steps
        return 1.0 if warm <= 0 else min(step / warm, 1.0)

    def forward(self, model: nn.Module, batch: dict, *, epoch: int, step: int) -> StepOutput:
        cfg = self.settings
        student = unwrap_model(model)
        self.__dict__["_student"] = student
        x_lb, y_lb = batch["x_lb"], batch["y_lb"]
        logits_lb = model(x_lb)
        with torch.no_grad():
            self.teacher.train(student.training)
            logits_w = self.teacher(batch["x_ulb_w"])
        logits_s = model(batch["x_ulb_s"])
        mask = confidence_mask(logits_w, cfg.p_cutoff)
        losses = {
            "sup_ce": F.cross_entropy(logits_lb.float(), y_lb),
            "unsup": (cfg.lambda_u * self.ramp(step)) * self.unsupervised(logits_s, logits_w, mask),
        }
        return StepOutput(
            losses=losses,
            logits=logits_lb,
            targets=y_lb,
            metrics=self.statistics(logits_w, mask, batch),
            batch_size=x_lb.shape[0],
        )

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """teacher = decay · teacher + (1 − decay) · student for parameters; buffers copied."""
        if self._student is None:
            return
        decay = self.settings.ema_decay
        for t_param, s_param in zip(self.teacher.parameters(), self._student.parameters()):
            t_param.mul_(decay).add_(s_param.detach(), alpha=1.0 - decay)
        for t_buffer, s_buffer in zip(self.teacher.buffers(), self._student.buffers()):
            t_buffer.copy_(s_buffer)
