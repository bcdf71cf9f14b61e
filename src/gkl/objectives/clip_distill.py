"""CLIP distillation objective: the student CLIP's contrastive loss + a KL-family distillation term.

Per step (GKL paper Sec. 4.4)::

    loss = contrastive_weight · CLIP(student) + distill_weight · D(student logits ‖ teacher logits)

with D of :class:`gkl.clip.GKLDistillClipLoss` (KL / GKL / IKL / DKL, or any other logit loss of
the registry of :mod:`gkl.losses` named by ``clip_distill.method``, on the image→text and
text→image similarity logits, sample-wise weights, rows spanning the global batch under
DDP). The teacher is frozen: eval mode, no gradient, not checkpointed. After every
optimizer step the student's learned log-scale is clamped to log(clamp_logit_scale), as
OpenCLIP's trainer does.

Gradient accumulation does not give the large-batch loss: the distillation rows are
softmax-normalised over the (micro-)batch, so accumulating k micro-batches of B/k pairs
optimises a different loss than one batch of B (see docs/clip.md).
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from gkl.clip import GKLDistillClipLoss
from gkl.objectives.base import Objective, StepOutput
from gkl.objectives.loss_choice import settings_logit_loss
from gkl.settings.clip import ClipDistillSettings, ClipKLSettings
from gkl.settings.kl_family import DKLTerm
from gkl.settings.loss_choice import RegisteredLoss
from gkl.utils.modules import unwrap_model

__all__ = ["ClipDistillObjective", "ClipContrastiveObjective", "clip_outputs"]


def clip_outputs(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor):
    """(image_features, text_features, logit_scale) of an OpenCLIP model (tuple or dict output)."""
    out = model(images, tokens)
    if isinstance(out, dict):
        return out["image_features"], out["text_features"], out["logit_scale"]
    return out[0], out[1], out[2]


class _ClampsLogitScale(Objective):
    """Clamps the student's learned log-scale after every optimizer step, as OpenCLIP's trainer."""

    clamp_logit_scale = 100.0
    _student: weakref.ref | None = None

    def after_optimizer_step(self) -> None:
        """Clamp the student's log-scale to [0, log(clamp_logit_scale)]."""
        student = self._student() if self._student is not None else None
        if student is not None and hasattr(student, "logit_scale"):
            with torch.no_grad():
                student.logit_scale.clamp_(0, math.log(self.clamp_logit_scale))


class ClipContrastiveObjective(_ClampsLogitScale):
    """Plain CLIP training (no teacher): OpenCLIP's contrastive loss on (images, tokens) batches.

    Used for the demo teacher. Rows span the global batch under DDP, as in the distillation loss.
    """

    def __init__(self, *, rank: int = 0, world_size: int = 1, clamp_logit_scale: float = 100.0) -> None:
        super().__init__()
        from open_clip.loss import ClipLoss

        self.loss = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)
        self.clamp_logit_scale = clamp_logit_scale

    def forward(self, model: nn.Module, batch, *, epoch: int, step: int) -> StepOutput:
        images, tokens = batch[0], batch[1]
        self._student = weakref.ref(unwrap_model(model))
        img, txt, scale = clip_outputs(model, images, tokens)
        losses = {"contrastive": self.loss(img, txt, scale)}
        return StepOutput(losses=losses, metrics={"logit_scale": scale.detach()}, batch_size=images.shape[0])


class ClipDistillObjective(_ClampsLogitScale):
    """Student CLIP trained against a frozen teacher CLIP on (images, tokens) batches.

    The batch is ``(images, tokens)`` when teacher and student share the image size and
    tokenizer (ViT-L/14 → ViT-B/16: 224 px, 77 tokens), or ``(images, tokens,
    teacher_images, teacher_tokens)`` otherwise.
    """

    frozen = ("teacher",)

    def __init__(
        self, teacher: nn.Module, settings: ClipDistillSettings, *, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.settings = settings
        if not isinstance(settings, (ClipKLSettings, DKLTerm, RegisteredLoss)):  # pragma: no cover - the leaves
            raise TypeError(
                f"{type(settings).__name__}: not a clip_distill settings leaf (every leaf has a temperature)"
            )
        _, params = settings_logit_loss(settings, "method")
        loss_kwargs = {"loss_params": params} if isinstance(settings, RegisteredLoss) else params
        self.loss = GKLDistillClipLoss(
            settings.method,
            temperature=settings.temperature,
            local_loss=settings.local_loss,
            gather_with_grad=settings.gather_with_grad,
            rank=rank,
            world_size=world_size,
            **loss_kwargs,
        )
        self.clamp_logit_scale = settings.clamp_logit_scale
        self.freeze()

    def forward(self, model: nn.Module, batch, *, epoch: int, step: int) -> StepOutput:
        images, tokens = batch[0], batch[1]
        t_images, t_tokens = (batch[2], batch[3]) if len(batch) == 4 else (images, tokens)
        self._student = weakref.ref(unwrap_model(model))
        img, txt, scale = clip_outputs(model, images, tokens)
        with torch.no_grad():
            t_img, t_txt, t_scale = clip_outputs(self.teacher, t_images, t_tokens)
        contrastive, distill = self.loss(img, txt, scale, t_img, t_txt, t_scale)
        cfg = self.settings
        losses = {"contrastive": cfg.contrastive_weight * contrastive, cfg.method: cfg.distill_weight * distill}
        metrics = {"logit_scale": scale.detach(), "teacher_logit_scale": t_scale}
        return StepOutput(losses=losses, metrics=metrics, batch_size=images.shape[0])
