"""Evaluation of a causal language model on blocks of token ids: perplexity and the token-level KL
to a teacher (docs/llm.md)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import kl_div

__all__ = ["LanguageModelEvaluator"]


class LanguageModelEvaluator:
    """``perplexity`` = exp(mean next-token NLL), ``nll``, and with a teacher ``kl_to_teacher``: the mean
    over tokens of KL(teacher ‖ model) at T = 1; sums over tokens, divided once (a sum over processes
    under torch.distributed)."""

    def __init__(self, teacher: nn.Module | None = None) -> None:
        self.teacher = teacher

    @torch.no_grad()
    def __call__(self, model: nn.Module, loader: Any, *, device: Any, dist: Any = None) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # nll, kl, tokens
        for batch in loader:
            ids = batch.to(device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            flat = logits.reshape(-1, logits.shape[-1])
            totals[0] += F.cross_entropy(flat, ids[:, 1:].reshape(-1), reduction="sum").double()
            if self.teacher is not None:
                teacher_logits = self.teacher(input_ids=ids).logits[:, :-1].float()
                totals[1] += kl_div(flat, teacher_logits.reshape(flat.shape), reduction="sum").double()
            totals[2] += flat.shape[0]
        model.train(was_training)
        if dist is not None and getattr(dist, "world_size", 1) > 1:
            torch.distributed.all_reduce(totals)
        nll, kl, count = totals.tolist()
        result: dict[str, Any] = {"perplexity": math.exp(nll / count), "nll": nll / count, "tokens": int(count)}
        if self.teacher is not None:
            result["kl_to_teacher"] = kl / count
        return result
