"""CLIP distillation with the KL family on OpenCLIP models (needs the ``clip`` extra).

``GKLDistillClipLoss`` is a drop-in for ``open_clip.loss.DistillClipLoss`` whose KL term is
replaced by GKL / IKL / DKL (or kept as KL). See docs/clip.md.
"""

from gkl.clip.loss import CLIP_DISTILL_METHODS, GKLDistillClipLoss

__all__ = ["GKLDistillClipLoss", "CLIP_DISTILL_METHODS"]
