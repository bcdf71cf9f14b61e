"""``GKLDistillationTrainer``: token-level distillation inside ``transformers.Trainer`` (docs/llm.md).

The student and the frozen teacher run their bodies once per batch (``output_hidden_states=True``,
``logits_to_keep=1``: only one position's logits are built); the last hidden states and the heads
(``get_output_embeddings()``) go into :func:`gkl.lm.fused_linear_gkl_loss` on the shifted labels,
so the (tokens, V) logits never exist beyond one chunk. Normalisation follows the Trainer: with
``num_items_in_batch`` (the valid labels of all accumulated micro-batches, gathered across processes
under ``average_tokens_across_devices``) the loss is a sum over tokens divided by it, already scaled
for gradient accumulation; without it, a per-batch mean that the Trainer divides by the accumulation
steps (``loss_is_scaled_for_ga`` left to the Trainer's rule, ``model_accepts_loss_kwargs`` set so
the Trainer counts the items, ``_loss_shifts_labels`` so that it counts ``labels[:, 1:]``). Under
DDP the count is global and the loss is multiplied by the number of processes, which DDP's gradient
average divides out: 2 processes x batch b make the update of 1 process x batch 2b. DataParallel (one
process, several GPUs) is refused.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn

from gkl.lm.fused import FusedLinearGKLLoss
from gkl.utils.errors import InputError

__all__ = ["GKLDistillationTrainer"]


def _head(model: nn.Module) -> nn.Linear:
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear):
        raise ValueError(f"model: expected a causal LM whose get_output_embeddings() is an nn.Linear, got {head!r}")
    return head


class GKLDistillationTrainer(transformers.Trainer):
    """``transformers.Trainer`` whose loss is ``weight_hard_loss · CE + weight_soft_loss · method`` per token.

    Extra arguments: ``teacher_model`` (frozen: eval mode, no gradient, moved to the student's
    device), ``method`` (``kl``, ``reverse_kl``, ``jsd``, ``dkl``, ``ikl``, ``gkl``), ``temperature``,
    ``weight_soft_loss``, ``weight_hard_loss``, ``chunk_size``, ``slice_vocab`` (teacher and student
    vocabularies of different sizes: use the shared first entries) and ``loss_params`` (the method's
    own: ``alpha``, ``beta``, ``gamma``, ...). Everything else is the Trainer's.
    """

    def __init__(
        self,
        *args: Any,
        teacher_model: nn.Module,
        method: str = "gkl",
        temperature: float = 1.0,
        weight_soft_loss: float = 1.0,
        weight_hard_loss: float = 0.0,
        chunk_size: int = 1024,
        slice_vocab: bool = False,
        loss_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.args.n_gpu > 1:  # DataParallel: the Trainer hands over one count per replica (n_gpu, 1)
            raise InputError(
                f"args.n_gpu: expected one device per process (launch torchrun --nproc_per_node N), "
                f"got {self.args.n_gpu} (DataParallel)"
            )
        self.distillation_loss = FusedLinearGKLLoss(
            weight_hard_loss=weight_hard_loss,
            weight_soft_loss=weight_soft_loss,
            temperature=temperature,
            chunk_size=chunk_size,
            method=method,
            slice_vocab=slice_vocab,
            **(loss_params or {}),
        )
        _head(teacher_model)
        self.teacher_model = teacher_model.to(self.args.device).eval().requires_grad_(False)
        self.model_accepts_loss_kwargs = True  # the Trainer then counts num_items_in_batch for this loss
        # the loss always takes labels[:, 1:]: count those for any student (read by the Trainer where it exists)
        self._loss_shifts_labels = True

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError("inputs: expected 'labels' (the input ids with -100 at ignored positions)")
        outputs = model(**inputs, output_hidden_states=True, logits_to_keep=1)
        with torch.no_grad():
            teacher_outputs = self.teacher_model(**inputs, output_hidden_states=True, logits_to_keep=1)
        student_head = _head(self.accelerator.unwrap_model(model))
        teacher_head = _head(self.teacher_model)
        loss = self.distillation_loss(
            outputs.hidden_states[-1][:, :-1],
            student_head.weight,
            teacher_outputs.hidden_states[-1][:, :-1],
            teacher_head.weight,
            labels[:, 1:],
            student_head.bias,
            teacher_head.bias,
            num_items_in_batch,
        )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # the count is global while DDP averages the gradients over the processes (as Trainer.compute_loss)
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
