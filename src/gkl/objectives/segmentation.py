"""Segmentation objectives: CE (+aux), pixel-wise KD with KL or GKL, CWD, and APD.

Batch: ``(images (N, 3, H, W), labels (N, H, W))`` with ``ignore_index`` (255) for unlabelled
pixels. Models follow :mod:`gkl.models.segmentation`: in train mode ``model(x)`` returns
``{"out", "aux"}`` logits at 1/8, ``model(x, features=True)`` adds ``"features"``.

Normalisations (exactly):

* CE / aux CE: sum over labelled pixels / number of labelled pixels (0 when there is none).
* pixel-wise KL (``kd_term: kl``; another registered loss alike): logits upsampled bilinearly to the labels;
  per pixel ``T² Σ_c p_t log(p_t / p_s)`` at temperature T; ``kd_normalize: pixel`` averages
  it over the pixels (labelled pixels only with ``mask_ignore``), ``pixel_class`` divides that
  by C too -- the value of APD's ``nn.KLDivLoss()`` (reduction 'mean' = mean over N·C·H·W
  elements) on unmasked pixels, so APD's ``kl_weight: 10`` with ``pixel_class`` is weight 10/C
  on the per-pixel KL. ``pixel_class`` divides the GKL term by C in the same way, so that
  "APD with GKL" replaces APD's KL term at APD's scale.
* pixel-wise GKL (``kd_term: gkl``): :func:`gkl.losses.gkl_loss` on the upsampled logits, every
  pixel one example; with ``mask_ignore`` the pixels labelled 255 are excluded from the sums and
  from N and D (see gkl_loss). Class-wise weights (GKL Eqs. 8-9): row y of a
  :class:`gkl.losses.ClassPrior` fed softmax(teacher / τ_w) of every labelled pixel of the epoch
  (255 excluded, all-reduced over ranks at the epoch end, frozen for the next epoch).
* Memory: with ``kd_chunk_rows`` (default 32) the KL/GKL term never materialises the
  label-size logits: :func:`chunked_dense_loss` upsamples ``kd_chunk_rows`` label rows at a
  time (bilinear interpolation written as two small matrix products, equal to
  ``F.interpolate(align_corners=False)``), computes the chunk's loss and its gradient at once,
  and keeps only the gradient of the 1/8 logits (the GKL paper's Algorithm 2 saves memory in
  the same spirit). The value and gradient equal the one-pass computation (tested in float64).
* CWD (Shu et al. 2021, Eq. 3): per channel, softmax over the h·w positions of the 1/8 logits
  at temperature T; ``T² Σ_c Σ_i φ_t log(φ_t/φ_s) / (N·C)``.
* APD (Tian et al. 2022): see :class:`APDObjective`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior, value_checks
from gkl.losses.registry import LogitLoss
from gkl.objectives.base import Objective, StepOutput
from gkl.objectives.dense import (
    accumulate_prior,
    channel_wise_divergence,
    check_dense_inputs,
    chunked_dense_loss,
    masked_cross_entropy,
    pixel_accuracy,
    update_prior,
    upsample,
)
from gkl.objectives.loss_choice import settings_logit_loss
from gkl.settings.loss_choice import RegisteredLoss
from gkl.settings.segmentation import (
    SegAPDSettings,
    SegCWDSettings,
    SegGKLTermPiece,
    SegKDSettings,
    SegKLTermPiece,
    SegmentationSettings,
)


class _PixelGKLSettings(Protocol):
    """The settings a pixel-wise GKL term reads: a kd / apd leaf with ``kd_term: gkl``."""

    @property
    def ignore_index(self) -> int: ...
    @property
    def mask_ignore(self) -> bool: ...
    @property
    def kd_chunk_rows(self) -> int | None: ...
    @property
    def temperature(self) -> float: ...
    @property
    def alpha(self) -> float: ...
    @property
    def beta(self) -> float: ...
    @property
    def weight_temperature(self) -> float: ...
    @property
    def gamma(self) -> float: ...
    @property
    def normalize(self) -> str: ...


class SegmentationCE(Objective):
    """Main CE + ``aux_weight`` · aux CE on logits upsampled to the labels (PSPNet training)."""

    def __init__(self, settings: SegmentationSettings, *, num_classes: int) -> None:
        super().__init__()
        self.settings = settings
        self.num_classes = num_classes

    def supervised(
        self, out: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cfg = self.settings
        size = labels.shape[-2:]
        logits = upsample(out["out"], size)
        losses = {"ce": cfg.ce_weight * masked_cross_entropy(logits, labels, cfg.ignore_index)}
        if cfg.aux_weight > 0 and "aux" in out:
            losses["aux"] = cfg.aux_weight * masked_cross_entropy(upsample(out["aux"], size), labels, cfg.ignore_index)
        return losses, logits

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:
        images, labels = batch[0], batch[1]
        out = model(images)
        if not isinstance(out, dict):
            out = {"out": out}
        losses, logits = self.supervised(out, labels)
        return StepOutput(
            losses=losses,
            metrics={"pixel_acc": pixel_accuracy(logits, labels, self.settings.ignore_index)},
            batch_size=images.shape[0],
        )


class SegmentationDistill(SegmentationCE):
    """CE (+aux) + ``kd_weight`` · pixel-wise KL / GKL (method ``kd``) or CWD (method ``cwd``)."""

    frozen = ("teacher",)
    settings: SegCWDSettings | SegKDSettings | SegAPDSettings

    def __init__(
        self, teacher: nn.Module, settings: SegCWDSettings | SegKDSettings | SegAPDSettings, *, num_classes: int
    ) -> None:
        super().__init__(settings, num_classes=num_classes)
        self.teacher = teacher
        self.prior = (
            ClassPrior(num_classes, temperature=settings.weight_temperature, momentum=settings.prior_momentum)
            if isinstance(settings, SegGKLTermPiece) and settings.uses_class_prior
            else None
        )
        self.term: LogitLoss | None = None
        self.term_params: dict[str, Any] = {}
        if not isinstance(settings, SegCWDSettings):
            self.term, self.term_params = settings_logit_loss(settings, "kd_term")
        self.freeze()

    def _pixel_term(self) -> LogitLoss:
        """The registry loss of ``kd_term`` (set for every method but cwd)."""
        if self.term is None:
            raise TypeError("segmentation.method 'cwd' has no pixel-wise kd_term")
        return self.term

    def kd_loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The pixel-wise logit term on 1/8 logits (upsampled here to the labels), unweighted."""
        cfg = self.settings
        size = labels.shape[-2:]
        if isinstance(cfg, SegCWDSettings):
            return channel_wise_divergence(student, teacher, cfg.cwd_temperature)
        # label rows per chunk, or None: one pass (no chunks when the logits are already label-size)
        chunk_rows = cfg.kd_chunk_rows if tuple(student.shape[-2:]) != tuple(size) else None
        valid = labels != cfg.ignore_index
        count = valid.sum().clamp_min(1) if cfg.mask_ignore else torch.tensor(labels.numel(), device=labels.device)
        per_class = student.shape[1] if cfg.kd_normalize == "pixel_class" else 1
        if isinstance(cfg, SegGKLTermPiece):
            return self._gkl(cfg, student, teacher, labels, chunk_rows=chunk_rows, count=count) / per_class
        if not isinstance(cfg, (SegKLTermPiece, RegisteredLoss)):  # pragma: no cover - every leaf has a term
            raise TypeError(f"{type(cfg).__name__}: a pixel-wise kd_term needs its settings piece")
        # kl, or another registered loss: per-pixel values of the registry
        term = self._pixel_term()

        def chunk_kl(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            targets = torch.where(y != cfg.ignore_index, y, 0).long() if term.uses_targets else None
            per_pixel = term(s, t, temperature=cfg.temperature, reduction="none", targets=targets, **self.term_params)
            if cfg.mask_ignore:
                per_pixel = torch.where(y != cfg.ignore_index, per_pixel, per_pixel.new_zeros(()))
            return per_pixel.sum() / (count * per_class)

        if chunk_rows is not None:
            check_dense_inputs(student, teacher, labels, cfg.ignore_index)
            with value_checks(False):  # inputs checked once above, not once per chunk
                return chunked_dense_loss(student, teacher, labels, chunk_kl, chunk_rows)
        return chunk_kl(upsample(student, size), upsample(teacher, size), labels)

    def _gkl(
        self,
        cfg: _PixelGKLSettings,
        student: torch.Tensor,
        teacher: torch.Tensor,
        labels: torch.Tensor,
        *,
        chunk_rows: int | None,
        count: torch.Tensor,
    ) -> torch.Tensor:
        """The registry's gkl over every (labelled) pixel; in chunks with the global normalisers N and D."""
        term = self._pixel_term()
        chunked = chunk_rows is not None
        updating = self.prior if self.training else None  # the prior that learns from this step
        targets_for = (lambda y: y) if cfg.mask_ignore else (lambda y: None)
        common: dict[str, Any] = dict(
            gamma=cfg.gamma,
            temperature=cfg.temperature,
            weight_temperature=cfg.weight_temperature,
            ignore_index=cfg.ignore_index,
        )

        def weights_for(y: torch.Tensor) -> torch.Tensor | None:
            if self.prior is None:
                return None
            if not chunked:
                return self.prior(y, ignore_index=cfg.ignore_index)
            # rows of the frozen prior; ignored pixels get row 0 (they are masked out of the loss)
            # gathered class-first, (N, C, rows, W) contiguous like the logits: the loss's elementwise
            # passes then run on one memory layout (faster on CPU than a class-last gather)
            index = torch.where(y == cfg.ignore_index, torch.zeros_like(y), y).long()
            columns = self.prior.prior.t().contiguous().index_select(1, index.reshape(-1))
            return columns.view(-1, *index.shape).transpose(0, 1).contiguous()

        if chunk_rows is None:
            s, t = upsample(student, labels.shape[-2:]), upsample(teacher, labels.shape[-2:])
            weights = weights_for(labels)
            if updating is not None:
                update_prior(updating, t, labels, cfg.ignore_index)
            return term(
                s,
                t,
                weights=None if weights is None else weights.to(s.device),
                alpha=cfg.alpha,
                beta=cfg.beta,
                normalize=cfg.normalize,
                targets=targets_for(labels),
                **common,
            )
        if cfg.mask_ignore is False and self.prior is not None:  # pragma: no cover - rejected by the settings
            raise ValueError("class-wise GKL weights need mask_ignore")
        check_dense_inputs(student, teacher, labels, cfg.ignore_index)
        denominator = count.to(torch.float64)  # normalize "batch": D = N
        if cfg.normalize == "weights":
            denominator = self._weight_mass(cfg, teacher, labels)
        # α' = α N / D as a 0-dim tensor of the loss's dtype (no host sync)
        alpha = (cfg.alpha * (count.to(torch.float64) / denominator)).to(
            torch.float64 if student.dtype == torch.float64 else torch.float32
        )

        def chunk_gkl(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            weights = weights_for(y)
            if updating is not None:
                accumulate_prior(updating, t, y, cfg.ignore_index)
            # normalize="batch" + reduction="sum" gives α' Σ mse_i + β Σ ce_i over the chunk
            part = term(
                s,
                t,
                weights=None if weights is None else weights.to(s.device),
                alpha=alpha,
                beta=cfg.beta,
                normalize="batch",
                targets=targets_for(y),
                reduction="sum",
                **common,
            )
            return part / count

        with value_checks(False):  # inputs checked once above, not once per chunk
            return chunked_dense_loss(student, teacher, labels, chunk_gkl, chunk_rows)

    @torch.no_grad()
    def _weight_mass(self, cfg: _PixelGKLSettings, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """D = Σ_i W_i², W_i = Σ_j (w_i^j)^γ over the pixels the loss counts (GKL 'weights' normalisation)."""
        valid = labels != cfg.ignore_index if cfg.mask_ignore else torch.ones_like(labels, dtype=torch.bool)
        if self.prior is not None:  # class-wise: W depends on the label only
            rows = self.prior.prior.double()
            mass = (rows if cfg.gamma == 1.0 else rows.pow(cfg.gamma)).sum(dim=1).square()
            index = torch.where(valid, labels, torch.zeros_like(labels)).long().to(mass.device)
            return torch.where(valid.to(mass.device), mass[index], mass.new_zeros(())).sum().clamp_min(1e-300)
        if cfg.gamma == 1.0:  # sample-wise softmax weights sum to 1
            return valid.sum().double().clamp_min(1.0)
        total = torch.zeros((), dtype=torch.float64, device=teacher.device)

        def chunk_mass(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            w = torch.softmax(t / cfg.weight_temperature, dim=1).pow(cfg.gamma).sum(dim=1).square()
            keep = y != cfg.ignore_index if cfg.mask_ignore else torch.ones_like(y, dtype=torch.bool)
            return torch.where(keep, w, w.new_zeros(())).sum()

        total = chunked_dense_loss(teacher.detach(), teacher, labels, chunk_mass, cfg.kd_chunk_rows or labels.shape[-2])
        return total.double().clamp_min(1e-300)

    def teacher_outputs(self, images: torch.Tensor, features: bool) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = self.teacher(images, features=True) if features else self.teacher(images)
        return out if isinstance(out, dict) else {"out": out}

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:
        images, labels = batch[0], batch[1]
        out = model(images)
        teacher = self.teacher_outputs(images, features=False)
        losses, logits = self.supervised(out, labels)
        cfg = self.settings
        name = "cwd" if isinstance(cfg, SegCWDSettings) else cfg.kd_term
        losses[name] = cfg.kd_weight * self.kd_loss(out["out"], teacher["out"].detach(), labels)
        return StepOutput(
            losses=losses,
            metrics={"pixel_acc": pixel_accuracy(logits, labels, self.settings.ignore_index)},
            batch_size=images.shape[0],
        )

    def on_epoch_end(self, epoch: int) -> None:
        if self.prior is not None:
            self.prior.step()


def _adapter(channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1))


def class_prototypes(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised mean feature of each class present in ``labels`` (batch-wide) and the class ids.

    features (N, D, h, w) already L2-normalised per pixel; labels (N, h, w). Returns (K, D), (K,).
    """
    d = features.shape[1]
    flat = features.permute(0, 2, 3, 1).reshape(-1, d)
    y = labels.reshape(-1)
    valid = y != ignore_index
    flat, y = flat[valid], y[valid].long()
    sums = flat.new_zeros(num_classes, d).index_add(0, y, flat)
    counts = torch.bincount(y, minlength=num_classes)
    present = torch.nonzero(counts > 0).flatten()
    centers = sums[present] / counts[present].unsqueeze(1).to(sums.dtype)
    return F.normalize(centers, dim=1), present


class APDObjective(SegmentationDistill):
    """Adaptive Perspective Distillation (Tian et al., TPAMI 2022) with its KL term switchable to GKL.

    Per step, with student/teacher head features f_s, f_t (PSPNet: the 512-channel PPM output)::

        g_s = normalise(A_s(f_s)),  g_t = normalise(A_t(f_t))        # 1x1-conv adapters (conv-ReLU-conv)
        labels downsampled (nearest) to the feature size; for every class k present in the batch:
        c_s^k, c_t^k = normalised mean of g_s, g_t over the pixels of class k (batch-wide prototypes)
        P_s = τ · <g_s, c_s^k>,  P_t = τ · <g_t, c_t^k>              # (N, K, h, w), τ = apd_temperature
        pred = KLDivLoss-mean(log_softmax(P_s), softmax(P_t))         # Σ KL / (N·K·h·w)
        align = ½ · mean_k (1 − <c_s^k, c_t^k>)                       # teacher prototypes detached

    loss = ce + aux + kd_weight·kd_term + apd_pred_weight·pred + apd_align_weight·align.
    The student adapter A_s is trained with the student (its parameters are in
    :meth:`trainable_param_groups`, lr ×``head_lr_scale``). The teacher adapter A_t is trained
    only by its own loss, CE(τ · similarity-to-prototype maps upsampled to the labels, labels),
    with Adam (lr ``apd_teacher_lr``, betas 0.9/0.99, gradients averaged over ranks), inside
    the step after the student's terms are computed -- as in APD's code. Its Adam moments are
    buffers, so they are checkpointed.
    """

    frozen = ("teacher",)
    settings: SegAPDSettings
    adam_step: torch.Tensor  # a buffer: the teacher adapter's Adam step count

    def __init__(
        self,
        teacher: nn.Module,
        settings: SegAPDSettings,
        *,
        num_classes: int,
        student_channels: int,
        teacher_channels: int,
    ) -> None:
        super().__init__(teacher, settings, num_classes=num_classes)
        # APD: 512 -> 512 for both; a narrower student is mapped to the teacher's width
        self.student_adapter = _adapter(student_channels, settings.apd_adapter_dim, teacher_channels)
        self.teacher_adapter = _adapter(teacher_channels, settings.apd_adapter_dim, teacher_channels)
        for i, p in enumerate(self.teacher_adapter.parameters()):
            self.register_buffer(f"adam_m{i}", torch.zeros_like(p))
            self.register_buffer(f"adam_v{i}", torch.zeros_like(p))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.int64))
        self._adam_t = 0  # host copy of adam_step (read when a state is loaded): the step needs no sync
        self.register_load_state_dict_post_hook(_read_adam_step)
        for p in self.student_adapter.parameters():
            p.register_post_accumulate_grad_hook(_average_grad_over_ranks)

    def trainable_param_groups(self) -> list[dict[str, Any]]:
        """Parameters the engine's optimizer must train with the student (the student adapter)."""
        return [{"params": list(self.student_adapter.parameters()), "lr_scale": self.settings.head_lr_scale}]

    def perspective(
        self, f_s: torch.Tensor, f_t: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(pred KL, align, teacher-adapter loss or None) of APD at the feature resolution."""
        cfg = self.settings
        tau = cfg.apd_temperature
        g_s = F.normalize(self.student_adapter(f_s.float()), dim=1)
        g_t = F.normalize(self.teacher_adapter(f_t.detach().float()), dim=1)
        small = F.interpolate(labels[:, None].float(), size=f_s.shape[-2:], mode="nearest")[:, 0].long()
        c_s, present = class_prototypes(g_s, small, self.num_classes, cfg.ignore_index)
        c_t, _ = class_prototypes(g_t, small, self.num_classes, cfg.ignore_index)
        if present.numel() == 0:  # no labelled pixel: zero terms that still reach every rank's all-reduce
            zero = g_s.sum() * 0.0
            return zero, zero, (g_t.sum() * 0.0 if self.training else None)
        p_s = torch.einsum("ndhw,kd->nkhw", g_s, c_s) * tau
        p_t = torch.einsum("ndhw,kd->nkhw", g_t, c_t) * tau
        log_q = torch.log_softmax(p_s, dim=1)
        p = torch.softmax(p_t.detach(), dim=1)
        pred = (p * (torch.log(p.clamp_min(1e-30)) - log_q)).mean()  # KLDivLoss(reduction='mean')
        align = 0.5 * (1.0 - (c_s * c_t.detach()).sum(dim=1)).mean()
        teacher_loss = None
        if self.training:
            maps = p_t.new_zeros(p_t.shape[0], self.num_classes, *p_t.shape[-2:])
            maps[:, present] = p_t
            teacher_loss = masked_cross_entropy(upsample(maps, labels.shape[-2:]), labels, cfg.ignore_index)
        return pred, align, teacher_loss

    @torch.no_grad()
    def _adam_step(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2, eps, lr = 0.9, 0.99, 1e-8, self.settings.apd_teacher_lr
        self.adam_step += 1
        self._adam_t += 1
        t = self._adam_t
        for i, (p, g) in enumerate(zip(self.teacher_adapter.parameters(), grads)):
            m, v = getattr(self, f"adam_m{i}"), getattr(self, f"adam_v{i}")
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:
        cfg = self.settings
        images, labels = batch[0], batch[1]
        out = model(images, features=True)
        teacher = self.teacher_outputs(images, features=True)
        losses, logits = self.supervised(out, labels)
        if cfg.kd_weight > 0:
            losses[cfg.kd_term] = cfg.kd_weight * self.kd_loss(out["out"], teacher["out"].detach(), labels)
        pred, align, teacher_loss = self.perspective(out["features"], teacher["features"], labels)
        losses["apd_pred"] = cfg.apd_pred_weight * pred
        losses["apd_align"] = cfg.apd_align_weight * align
        metrics: dict[str, torch.Tensor | float] = {"pixel_acc": pixel_accuracy(logits, labels, cfg.ignore_index)}
        if teacher_loss is not None:
            params = list(self.teacher_adapter.parameters())
            raw = torch.autograd.grad(teacher_loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, raw)]
            if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
                flat = torch.cat([g.reshape(-1) for g in grads])
                torch_dist.all_reduce(flat)
                flat /= torch_dist.get_world_size()
                grads = list(torch.split(flat, [g.numel() for g in grads]))
                grads = [g.view_as(p) for g, p in zip(grads, params)]
            self._adam_step(grads)
            metrics["apd_teacher_adapter_ce"] = teacher_loss.detach()
        return StepOutput(losses=losses, metrics=metrics, batch_size=images.shape[0])


def _read_adam_step(module: APDObjective, incompatible_keys: Any) -> None:
    """After a state is loaded (resume), the host copy of the teacher adapter's Adam step count."""
    module._adam_t = int(module.adam_step)


def _average_grad_over_ranks(param: torch.Tensor) -> None:
    """Average an objective-owned parameter's gradient over ranks (it is not inside the DDP model)."""
    if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        grad = param.grad
        if grad is None:  # pragma: no cover - the hook runs after a gradient was accumulated
            return
        torch_dist.all_reduce(grad)
        grad /= torch_dist.get_world_size()


def build_segmentation_objective(
    settings: SegmentationSettings,
    *,
    num_classes: int,
    teacher: nn.Module | None = None,
    student: nn.Module | None = None,
) -> Objective:
    """The objective of ``settings.method`` (``teacher`` required unless ``ce``; ``student`` for APD widths)."""
    if settings.method == "ce":
        return SegmentationCE(settings, num_classes=num_classes)
    if teacher is None:
        raise ValueError(f"segmentation.method {settings.method!r} needs a teacher model")
    if isinstance(settings, SegAPDSettings):
        if student is None:
            raise ValueError("segmentation.method 'apd' needs the student model (for its feature width)")
        return APDObjective(
            teacher,
            settings,
            num_classes=num_classes,
            # feature_channels: a plain int attribute of gkl's segmentation models, which
            # nn.Module.__getattr__'s annotation (Tensor | Module) does not describe
            student_channels=int(student.feature_channels),  # type: ignore[arg-type]
            teacher_channels=int(teacher.feature_channels),  # type: ignore[arg-type]
        )
    if not isinstance(settings, (SegCWDSettings, SegKDSettings)):  # pragma: no cover - the union's leaves
        raise TypeError(f"{type(settings).__name__}: not a segmentation settings leaf")
    return SegmentationDistill(teacher, settings, num_classes=num_classes)
