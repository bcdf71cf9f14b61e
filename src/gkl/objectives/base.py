"""The contract between an objective (what one training step optimises) and the engine.

The engine (``gkl.engine``) owns the trained model, the optimizer, AMP, DDP and
checkpoints. An objective owns everything else a method needs: a frozen
teacher, a :class:`~gkl.losses.ClassPrior`, an attack, an AWP proxy. Adding a
method means writing one small subclass of :class:`Objective`.

Step protocol, per batch (epochs count from 1; ``step`` is the global optimizer
step, counting from 1, for step-based warm-ups)::

    out = objective(model, batch, epoch=epoch, step=step)   # inside autocast
    loss = sum(out.losses.values())                           # engine checks all terms are finite (one sync)
    loss.backward(); optimizer.step()
    objective.after_optimizer_step()                          # e.g. AWP restores the weights

``batch`` is exactly what the train loader yields, moved to the device (a tuple,
list or dict of tensors); classification objectives do ``images, labels = batch``.
``objective.on_epoch_end(epoch)`` runs after the last batch of every epoch (e.g.
``ClassPrior.step()``), before the checkpoint of that epoch is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class StepOutput:
    """What one objective step returns.

    losses: named, already weighted loss terms; the engine back-propagates their sum
        and names the first non-finite term in its error.
    logits: the trained model's logits on the clean batch (for running train accuracy), or None.
    targets: 1-D class labels matching ``logits`` (for train accuracy), or None.
    metrics: extra scalars to log (e.g. the adversarial accuracy of the batch), as 0-dim
        tensors left on the device (never ``float(t)``/``.item()``: a host synchronisation per
        step) or plain numbers; the engine averages them over the epoch with the loss terms and
        reads them only when it logs.
    batch_size: examples in the step (default: ``logits.shape[0]``); weights the epoch means.
    """

    losses: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is None and self.logits is not None:
            self.batch_size = int(self.logits.shape[0])

    def total(self) -> torch.Tensor:
        terms = list(self.losses.values())
        if not terms:
            raise ValueError("StepOutput.losses: expected at least one loss term, got none")
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total


def classification_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of a classification batch (a 2-tuple or list); a clear error otherwise."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"batch: expected (images, labels) from a classification loader, "
            f"got {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    return batch[0], batch[1]


class Objective(nn.Module):
    """Base class of every training objective.

    Subclasses implement :meth:`forward`. Submodules named in ``frozen`` (teachers)
    are kept in eval mode, never receive gradient, and are left out of checkpoints
    (they are rebuilt from their own files on resume). Every other buffer and
    parameter of the objective (a ClassPrior, an attack's statistics) is
    checkpointed through :meth:`checkpoint_state`.

    ``grad_scaler``: the engine's fp16 ``torch.amp.GradScaler`` (None otherwise), set by
    the engine with :meth:`use_grad_scaler`; objectives that run their own backward
    (AWP's proxy step) scale their loss with it.
    """

    frozen: tuple[str, ...] = ()
    grad_scaler: torch.amp.GradScaler | None = None

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:  # noqa: D102
        raise NotImplementedError

    def teacher_model(self) -> nn.Module | None:
        """The frozen model the objective learns from: the first submodule named in ``frozen`` that
        is set (the teacher of a distillation), or None (used by ``train.log_feature_stats``)."""
        for name in self.frozen:
            module = getattr(self, name, None)
            if isinstance(module, nn.Module):
                return module
        return None

    def use_grad_scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        """Hand the engine's fp16 gradient scaler (or None) to the objective."""
        self.grad_scaler = scaler

    def on_epoch_end(self, epoch: int) -> None:
        """Called once after the last step of ``epoch`` on every rank."""

    def after_optimizer_step(self) -> None:
        """Called after every ``optimizer.step()`` (AWP restores the perturbed weights here)."""

    def trainable_param_groups(self) -> list[dict[str, Any]]:
        """Parameters of the objective the engine's optimizer trains with the model (e.g. APD's
        student adapter): ``[{"params": [...], "lr_scale": s}, ...]``; none by default."""
        return []

    def train(self, mode: bool = True) -> Objective:
        super().train(mode)
        for name in self.frozen:
            module = getattr(self, name, None)
            if module is not None:
                module.eval()
        return self

    def freeze(self) -> None:
        """Turn off gradients of the frozen submodules; call at the end of ``__init__``."""
        for name in self.frozen:
            module = getattr(self, name, None)
            if module is not None:
                module.requires_grad_(False)
                module.eval()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The objective's state for a checkpoint: its state_dict without frozen submodules."""
        prefixes = tuple(f"{name}." for name in self.frozen)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(prefixes)}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`checkpoint_state` saved; frozen submodules are untouched."""
        expected = set(self.checkpoint_state())
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"objective state does not match {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        self.load_state_dict(state, strict=False)
