"""The contract between an objective (what one training step optimises) and the engine.

The engine (``gkl.engine``) owns the trained model, the optimizer, AMP, DDP and
checkpoints. An objective owns everything else a method needs: a frozen
teacher, a :class:`~gkl.losses.ClassPrior`, an attack, an AWP proxy. Adding a
method means writing one small subclass of :class:`Objective`.

Step protocol, per batch (epochs are numbered from 1)::

    out = objective(model, images, labels, epoch=epoch)   # inside autocast
    loss = sum(out.losses.values())                         # engine checks each term is finite
    loss.backward(); optimizer.step()
    objective.after_optimizer_step()                        # e.g. AWP restores the weights

and ``objective.on_epoch_end(epoch)`` after the last batch of every epoch
(e.g. ``ClassPrior.step()``), before the checkpoint of that epoch is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from gkl.utils.modules import unwrap_model  # noqa: F401  (re-exported)


@dataclass
class StepOutput:
    """What one objective step returns.

    losses: named, already weighted loss terms; the engine back-propagates their sum
        and names the first non-finite term in its error.
    logits: the trained model's logits on the clean batch (for running train accuracy),
        or None.
    metrics: extra detached scalars to log (e.g. the adversarial accuracy of the batch).
    """

    losses: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    batch_size: int | None = None

    def total(self) -> torch.Tensor:
        terms = list(self.losses.values())
        if not terms:
            raise ValueError("StepOutput.losses is empty: an objective must return at least one loss term")
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total


class Objective(nn.Module):
    """Base class of every training objective.

    Subclasses implement :meth:`forward`. Submodules named in ``frozen`` (teachers)
    are kept in eval mode, never receive gradient, and are left out of checkpoints
    (they are rebuilt from their own files on resume). Every other buffer and
    parameter of the objective (a ClassPrior, an attack's statistics) is
    checkpointed through :meth:`checkpoint_state`.
    """

    frozen: tuple[str, ...] = ()

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> StepOutput:  # noqa: D102
        raise NotImplementedError

    def on_epoch_end(self, epoch: int) -> None:
        """Called once after the last step of ``epoch`` on every rank."""

    def after_optimizer_step(self) -> None:
        """Called after every ``optimizer.step()`` (AWP restores the perturbed weights here)."""

    def train(self, mode: bool = True) -> "Objective":
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
