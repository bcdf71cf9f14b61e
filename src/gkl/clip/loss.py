"""CLIP distillation with the KL family: a drop-in for ``open_clip.loss.DistillClipLoss``.

A CLIP model has no classifier: in image→text distillation the "classes" of image i
are the texts of the (global) batch, so C = global batch size, and GKL uses the
sample-wise weights softmax(o_m / τ_w) of the teacher's row (GKL paper Sec. 4.4). The
O(C) form of :func:`gkl.losses.gkl_loss` keeps the cost per row linear in C, so a
global batch of 8192 costs about what the KL form costs (the authors' pairwise form
would build C² entries per row).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from gkl.losses import get_logit_loss, list_logit_losses, value_checks_active
from gkl.utils.errors import InputError

__all__ = ["GKLDistillClipLoss", "CLIP_DISTILL_METHODS"]

#: the methods with settings of their own; any other registered logit loss is a method by its name.
CLIP_DISTILL_METHODS: tuple[str, ...] = ("gkl", "kl", "ikl", "dkl")


def _check_real(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InputError(f"GKLDistillClipLoss: {name} must be a real number, got {value!r}")
    if (value <= 0) if positive else (value < 0):
        relation = "> 0" if positive else ">= 0"
        raise InputError(f"GKLDistillClipLoss: {name} must be {relation}, got {value!r}")
    return float(value)


def _feature_matrix(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point():
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise InputError(f"GKLDistillClipLoss: {name} must be a 2-D float tensor (batch, dim), got {got}")
    return t


def _check_features(image: object, text: object, who: str) -> tuple[int, int]:
    names = (f"{who} image_features", f"{who} text_features")
    image_t, text_t = _feature_matrix(image, names[0]), _feature_matrix(text, names[1])
    if image_t.shape != text_t.shape:
        raise InputError(
            f"GKLDistillClipLoss: {names[0]} {tuple(image_t.shape)} and {names[1]} "
            f"{tuple(text_t.shape)} must have the same shape (batch, embed_dim)"
        )
    return image_t.shape[0], image_t.shape[1]


def _check_scale(name: str, scale: object) -> None:
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise InputError(f"GKLDistillClipLoss: {name} must be a scalar, got shape {tuple(scale.shape)}")
        if value_checks_active() and not bool((scale > 0).all()):  # one host sync
            raise InputError(
                f"GKLDistillClipLoss: {name} must be > 0 (the exp of the model's "
                f"log-scale parameter), got {scale.item():g}"
            )
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if not scale > 0:
            raise InputError(f"GKLDistillClipLoss: {name} must be > 0, got {scale!r}")
    else:
        raise InputError(f"GKLDistillClipLoss: {name} must be a positive scalar, got {type(scale).__name__}")


class GKLDistillClipLoss(ClipLoss):
    """Contrastive loss + KL-family distillation of a teacher CLIP's similarity logits.

    ``forward`` has the signature and the return value of
    ``open_clip.loss.DistillClipLoss.forward``: ``(contrastive_loss, distill_loss)``, or a
    dict with these keys when ``output_dict=True``. Per direction (image→text rows
    L_s = s·I Tᵀ, text→image rows L_sᵀ; teacher likewise with its own scale s_t) the
    distillation term is

    * ``"kl"``: the registry's ``kl``, T² · mean_i KL(softmax(L_t,i/T) ‖ softmax(L_s,i/T)): the
      gradients of OpenCLIP's DistillClipLoss term (its soft cross-entropy is this KL plus the
      teacher's entropy, a constant; ``"soft_ce"`` gives that value);
    * ``"gkl"``: the registry's ``gkl`` (GKL Eqs. 8-10 with sample-wise weights
      softmax(L_t,i/τ_w)), α·wMSE + β·soft-CE at T, normalised as ``normalize``;
    * ``"ikl"``: the registry's ``ikl`` (γ = 1, per-row normalisation);
    * ``"dkl"``: T² · the registry's ``dkl`` (Theorem 1 / Eq. 5) of the logits divided by T;
    * any other registered logit loss: at ``temperature`` with ``loss_params`` (``targets`` = the
      matching column of each row, when the loss uses targets).

    and ``distill_loss`` is the mean of the two directions. The teacher's logits are
    detached. Under DDP (``world_size > 1``) the features of every rank are gathered so
    each row spans the global batch; the defaults ``local_loss=False,
    gather_with_grad=True`` give every rank the loss of the concatenated global batch
    with exact gradients (DDP's gradient averaging then yields the single-process
    gradient). Teacher and student embedding widths may differ (ViT-L/14: 768, ViT-B/16:
    512): only the (batch × batch) logits are compared.

    Args:
        method: "gkl" | "kl" | "ikl" | "dkl" | another registered logit loss.
        alpha, beta: wMSE and soft-CE weights (paper naming); unused by "kl".
        loss_params: the own parameters of another registered loss (``LogitLoss.params``).
        gamma: GKL weight smoothing γ ("gkl" only).
        temperature: T of the soft-label terms.
        weight_temperature: τ_w of the sample-wise weights ("gkl", "ikl").
        normalize: "weights" (GKL) or "batch" for the wMSE normaliser of "gkl".
        **clip_loss_kwargs: ``local_loss``, ``gather_with_grad``, ``cache_labels``,
            ``rank``, ``world_size``, ``use_horovod`` of ``open_clip.loss.ClipLoss``.
    """

    def __init__(
        self,
        method: str = "gkl",
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        weight_temperature: float = 1.0,
        normalize: str = "weights",
        loss_params: dict[str, Any] | None = None,
        **clip_loss_kwargs: object,
    ) -> None:
        if method not in list_logit_losses():
            raise InputError(
                f"GKLDistillClipLoss: method must be a registered logit loss "
                f"({', '.join(list_logit_losses())}), got {method!r}"
            )
        self.loss_params = dict(loss_params or {})
        if self.loss_params and method in CLIP_DISTILL_METHODS:
            raise InputError(
                f"GKLDistillClipLoss: loss_params are for other registered losses; method "
                f"{method!r} takes alpha, beta, gamma, weight_temperature, normalize"
            )
        if normalize not in ("weights", "batch"):
            raise InputError(f"GKLDistillClipLoss: normalize must be 'weights' or 'batch', got {normalize!r}")
        clip_loss_kwargs.setdefault("local_loss", False)
        clip_loss_kwargs.setdefault("gather_with_grad", True)
        allowed = {"local_loss", "gather_with_grad", "cache_labels", "rank", "world_size", "use_horovod"}
        unknown = sorted(set(clip_loss_kwargs) - allowed)
        if unknown:
            raise InputError(
                f"GKLDistillClipLoss: unknown keyword argument(s) {unknown}; ClipLoss accepts {sorted(allowed)}"
            )
        super().__init__(**clip_loss_kwargs)
        self.method = method
        self.entry = get_logit_loss(method)
        self.alpha = _check_real("alpha", alpha, positive=False)
        self.beta = _check_real("beta", beta, positive=False)
        self.gamma = _check_real("gamma", gamma, positive=False)
        self.temperature = _check_real("temperature", temperature, positive=True)
        self.weight_temperature = _check_real("weight_temperature", weight_temperature, positive=True)
        self.normalize = normalize

    # ------------------------------------------------------------------ distillation term
    def dist_loss(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """The distillation term of one direction (rows = examples, columns = batch items)."""
        # the text→image rows of the gathered logits are a transposed view: row-wise passes over
        # a strided view are several times slower than one contiguous copy
        t = teacher_logits.detach().contiguous()
        s = student_logits.contiguous()
        temp = self.temperature
        if self.method == "dkl":
            return self.entry(s / temp, t / temp, alpha=self.alpha, beta=self.beta) * (temp * temp)
        if self.method == "ikl":
            return self.entry(
                s, t, alpha=self.alpha, beta=self.beta, temperature=temp, weight_temperature=self.weight_temperature
            )
        if self.method == "gkl":
            return self.entry(
                s,
                t,
                alpha=self.alpha,
                beta=self.beta,
                gamma=self.gamma,
                temperature=temp,
                weight_temperature=self.weight_temperature,
                normalize=self.normalize,
            )
        targets = self.get_ground_truth(s.device, s.shape[0]) if self.entry.uses_targets else None
        return self.entry(s, t, temperature=temp, targets=targets, **self.loss_params)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        dist_image_features: torch.Tensor,
        dist_text_features: torch.Tensor,
        dist_logit_scale: torch.Tensor,
        output_dict: bool = False,
    ):
        n_student, _ = _check_features(image_features, text_features, "student")
        n_teacher, _ = _check_features(dist_image_features, dist_text_features, "teacher (dist_)")
        if n_student != n_teacher:
            raise InputError(
                f"GKLDistillClipLoss: student batch {n_student} and teacher batch "
                f"{n_teacher} differ; both models must see the same pairs"
            )
        _check_scale("logit_scale", logit_scale)
        _check_scale("dist_logit_scale", dist_logit_scale)

        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        with torch.no_grad():
            dist_per_image, dist_per_text = self.get_logits(
                dist_image_features.detach(),
                dist_text_features.detach(),
                dist_logit_scale.detach() if isinstance(dist_logit_scale, torch.Tensor) else dist_logit_scale,
            )
        labels = self.get_ground_truth(image_features.device, logits_per_image.shape[0])

        contrastive_loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        distill_loss = (
            self.dist_loss(dist_per_image, logits_per_image) + self.dist_loss(dist_per_text, logits_per_text)
        ) / 2
        if output_dict:
            return {"contrastive_loss": contrastive_loss, "distill_loss": distill_loss}
        return contrastive_loss, distill_loss

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, "
            f"temperature={self.temperature}, weight_temperature={self.weight_temperature}, "
            f"world_size={self.world_size}, local_loss={self.local_loss}, "
            f"gather_with_grad={self.gather_with_grad}"
        )
