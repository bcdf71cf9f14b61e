"""Class-wise mean probabilities for GKL's class-wise weights (Eqs. 8-9; docs/losses.md, "ClassPrior")."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ._validation import (
    check_int,
    check_logits,
    check_real,
    check_targets,
    finite_check,
    run_value_checks,
    targets_check,
    value_checks_active,
)

__all__ = ["ClassPrior"]


class ClassPrior(nn.Module):
    """Per-class mean of softmax(o_m / τ_w) over the training examples of each class.

    Row y of :attr:`prior` is s̄_y, the mean of softmax(target_logits / temperature)
    over examples whose ground-truth class is y (Eqs. 8-9 of the GKL paper). Usage:

    * call :meth:`update` with every batch of the epoch (sums and counts are
      accumulated in float32, without gradient, whatever the autocast dtype);
    * call :meth:`step` at the epoch end: under torch.distributed the sums and
      counts are all-reduced (every rank then holds the prior of one process
      that saw all data), and the new prior is frozen for the next epoch;
    * ``prior(targets)`` returns the weights for a batch.

    The prior starts uniform (1/C). A class with no example in the epoch keeps its
    row. With ``momentum=m`` (0 < m ≤ 1) :meth:`step` makes an exponential moving
    average, as in BatchNorm: ``prior_y ← (1 − m)·prior_y + m·mean_y``; the default
    ``None`` replaces the row (the authors' epoch-frozen schedule, same as m = 1).
    All state lives in buffers (``prior``, ``sums``, ``counts``), so it is saved in
    ``state_dict`` and restored on resume.
    """

    prior: torch.Tensor
    sums: torch.Tensor
    counts: torch.Tensor

    def __init__(self, num_classes: int, *, temperature: float = 1.0, momentum: float | None = None) -> None:
        super().__init__()
        num_classes = check_int("num_classes", num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes}")
        self.num_classes = num_classes
        self.temperature = check_real("temperature", temperature, strictly_positive=True)
        if momentum is not None:
            momentum = check_real("momentum", momentum, strictly_positive=True)
            if momentum > 1.0:
                raise ValueError(f"momentum must be None or in (0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("prior", torch.full((num_classes, num_classes), 1.0 / num_classes))
        self.register_buffer("sums", torch.zeros(num_classes, num_classes))
        self.register_buffer("counts", torch.zeros(num_classes))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, temperature={self.temperature}, momentum={self.momentum}"

    @torch.no_grad()
    def update(self, target_logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100) -> None:
        """Accumulate softmax(target_logits / temperature) into the row of each example's class.

        ``target_logits`` is (N, C) or (N, C, d1, ...); ``targets`` (N,) or (N, d1, ...).
        Positions equal to ``ignore_index`` are skipped. No host sync unless value checks are on
        (then one, see :func:`gkl.losses.value_checks`).
        """
        check_logits("target_logits", target_logits)
        if target_logits.shape[1] != self.num_classes:
            raise ValueError(
                f"target_logits: expected num_classes={self.num_classes} in dim 1, "
                f"got shape {tuple(target_logits.shape)}"
            )
        check_targets(targets, target_logits)
        ignore_index = check_int("ignore_index", ignore_index)
        if value_checks_active():
            run_value_checks(
                finite_check(("target_logits", target_logits)), targets_check(targets, self.num_classes, ignore_index)
            )
        self._accumulate(target_logits, targets, targets != ignore_index)

    @torch.no_grad()
    def _accumulate(self, target_logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> None:
        """:meth:`update` on checked inputs; ``valid`` marks the positions to count (sync-free)."""
        with torch.autocast(device_type=target_logits.device.type, enabled=False):
            logits32 = target_logits.detach().to(device=self.sums.device, dtype=torch.float32)
            probs = torch.softmax(logits32 / self.temperature if self.temperature != 1.0 else logits32, dim=1)
            probs = probs.movedim(1, -1).reshape(-1, self.num_classes)
            keep = valid.to(self.sums.device).reshape(-1)
            # ignored positions add exactly zero (to row 0): no data-dependent shape, no host sync
            flat_targets = torch.where(keep, targets.to(self.sums.device).reshape(-1), 0).long()
            kept = torch.where(keep[:, None], probs.to(self.sums.dtype), 0.0)  # where: a NaN there stays out
            self.sums.index_add_(0, flat_targets, kept)
            self.counts.index_add_(0, flat_targets, keep.to(self.counts.dtype))

    @torch.no_grad()
    def step(self) -> None:
        """End of epoch: all-reduce sums/counts (if distributed), refresh seen rows, reset."""
        if dist.is_available() and dist.is_initialized():
            packed = torch.cat([self.sums, self.counts.unsqueeze(1)], dim=1)
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
            self.sums.copy_(packed[:, :-1])
            self.counts.copy_(packed[:, -1])
        seen = self.counts > 0
        means = self.sums / self.counts.clamp_min(1.0).unsqueeze(1)
        if self.momentum is not None:
            means = (1.0 - self.momentum) * self.prior + self.momentum * means
        self.prior.copy_(torch.where(seen.unsqueeze(1), means, self.prior))
        self.sums.zero_()
        self.counts.zero_()

    def forward(self, targets: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
        """Weights for ``targets``: (N,) -> (N, C); (N, d1, ...) -> (N, C, d1, ...).

        Ignored positions get the uniform row 1/C (the losses exclude them anyway).
        The result is detached (buffers carry no gradient) and float32.
        """
        if (
            not isinstance(targets, torch.Tensor)
            or targets.is_floating_point()
            or targets.dtype == torch.bool
            or targets.dim() < 1
        ):
            raise ValueError("targets: expected an integer tensor of shape (N,) or (N, d1, ...)")
        ignore_index = check_int("ignore_index", ignore_index)
        targets = targets.to(self.prior.device)
        if value_checks_active():
            run_value_checks(targets_check(targets, self.num_classes, ignore_index))
        return self._rows(targets, targets != ignore_index)

    def _rows(self, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on checked targets; ``valid`` marks the non-ignored positions (sync-free)."""
        targets, valid = targets.to(self.prior.device), valid.to(self.prior.device)
        rows = self.prior[torch.where(valid, targets, 0).long()]
        rows = torch.where(valid.unsqueeze(-1), rows, 1.0 / self.num_classes)
        return rows.movedim(-1, 1) if rows.dim() > 2 else rows
