"""Token-level distillation of a causal language model from a frozen teacher (the ``lm:`` section).

A batch is (B, L) token ids; position t predicts token t + 1. The step trains
``hard_weight · CE + soft_weight · loss`` summed over the B·(L − 1) predicted tokens and divided by
their number, where loss is :func:`gkl.lm.token_loss`'s method. With ``fused`` the student's and the
teacher's last hidden states go into :func:`gkl.lm.fused_linear_gkl_loss` with their output
layers, so no (tokens, V) logits exist beyond one chunk; otherwise the logits are materialised.
Method ``ce`` trains on the cross-entropy alone and needs no teacher.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gkl.lm import fused_linear_gkl_loss, token_loss
from gkl.lm.models import body_and_head
from gkl.objectives.base import Objective, StepOutput
from gkl.settings.lm import LMSettings
from gkl.utils.modules import unwrap_model

__all__ = ["TokenDistillObjective"]


def _next_token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, in float32 for half-precision logits (float64 stays float64)."""
    flat = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat if flat.dtype in (torch.float32, torch.float64) else flat.float(), labels.reshape(-1))


def _hidden(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, nn.Linear]:
    """The last hidden states and the output layer of ``model``, called through ``model`` itself, so
    that the engine's wrappers (``torch.compile``, DDP) run the forward. The model's own logits are
    kept for the last position only (``logits_to_keep=1``, where the model's forward accepts it)."""
    plain = unwrap_model(model)
    _, head = body_and_head(plain)
    options: dict[str, Any] = {"output_hidden_states": True}
    if _keeps_logits(type(plain).forward):
        options["logits_to_keep"] = 1
    return model(input_ids=ids, **options).hidden_states[-1], head


@functools.cache
def _keeps_logits(forward: Callable[..., Any]) -> bool:
    """Whether a model class's ``forward`` takes ``logits_to_keep`` (read once per class, not per step)."""
    return "logits_to_keep" in inspect.signature(forward).parameters


class TokenDistillObjective(Objective):
    """Next-token cross-entropy and / or a token distillation loss against a frozen teacher."""

    frozen = ("teacher",)

    def __init__(self, teacher: nn.Module | None, settings: LMSettings) -> None:
        super().__init__()
        if settings.method != "ce" and teacher is None:
            raise ValueError(f"teacher: method {settings.method!r} needs a teacher model, got None")
        self.teacher = teacher
        self.settings = settings
        self.freeze()

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:
        ids = batch
        labels = ids[:, 1:]
        cfg = self.settings
        if cfg.method == "ce":
            logits = model(input_ids=ids).logits[:, :-1]
            ce = _next_token_ce(logits, labels)
            return StepOutput(losses={"ce": cfg.hard_weight * ce}, batch_size=int(ids.shape[0]))
        assert self.teacher is not None
        if cfg.fused:
            hidden, head = _hidden(model, ids)
            with torch.no_grad():
                teacher_hidden, teacher_head = _hidden(self.teacher, ids)
            loss, soft, hard = fused_linear_gkl_loss(
                hidden[:, :-1],
                head.weight,
                teacher_hidden[:, :-1],
                teacher_head.weight,
                labels,
                head.bias,
                teacher_head.bias,
                method=cfg.method,
                weight_hard_loss=cfg.hard_weight,
                weight_soft_loss=cfg.soft_weight,
                temperature=cfg.temperature,
                chunk_size=cfg.chunk_size,
                return_soft_hard_loss=True,
                **cfg.loss_params,
            )
            metrics = {"soft": soft, "ce": hard} if cfg.hard_weight else {"soft": soft}
            return StepOutput(losses={cfg.method: loss}, metrics=metrics, batch_size=int(ids.shape[0]))
        logits = model(input_ids=ids).logits[:, :-1]
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=ids).logits[:, :-1]
        soft = token_loss(
            logits, teacher_logits, labels, method=cfg.method, temperature=cfg.temperature, **cfg.loss_params
        )
        losses = {cfg.method: cfg.soft_weight * soft}
        if cfg.hard_weight:
            losses["ce"] = cfg.hard_weight * _next_token_ce(logits, labels)
        return StepOutput(losses=losses, batch_size=int(ids.shape[0]))
