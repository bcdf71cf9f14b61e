"""The distillation loss fused with the output projection, chunk by chunk over the tokens (docs/llm.md).

Liger-Kernel's calling convention: ``loss_fn(student_input (N, H_s), student_weight (V, H_s),
teacher_input (N, H_t), teacher_weight (V, H_t), true_labels (N,), student_bias, teacher_bias)``.
The forward pass goes over the tokens ``chunk_size`` at a time: per chunk it computes the student
logits x W^T + b and (without gradient) the teacher's, then the loss of the chunk's tokens and the
O(V) per-row gradient g = ∂loss/∂logits (the registry loss's own backward; GKL's is the closed
form of docs/losses.md) a few rows at a time, writing g over the rows' logits; then the chunk's
gradients g W (input), g^T x (weight) and Σ g (bias), accumulated in float32 (float64 for float64
inputs). Two (chunk, V) buffers are alive at any time (the student's logits, then their gradient,
and the teacher's logits); backward only scales the stored gradients by the incoming gradient.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior

from .token_loss import check_class_wise, check_labels_values, check_method, normaliser, token_values

__all__ = ["FusedLinearGKLLoss", "fused_linear_gkl_loss"]


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


#: elements of the (rows, V) slices the chunk's loss is computed on, on the CPU (a few MB: the
#: loss's temporaries stay in cache) and elsewhere (fewer, larger slices: fewer kernel launches)
_BLOCK_ELEMENTS = {"cpu": 1 << 18, "other": 1 << 22}


def _chunk_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, spec: dict[str, Any], need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of the soft and hard losses over one chunk's tokens; with ``need_grad`` the logits are
    overwritten by ∂(w_soft · soft + w_hard · hard)/∂logits.

    The loss goes over the chunk a few rows at a time (each row's value and gradient depend on
    that row alone), so its temporaries are (rows, V), not (chunk, V), and each slice of the logits
    is replaced by its own gradient once that is known: no (chunk, V) buffer besides the two logits.
    """
    w_soft, w_hard, ignore_index = spec["weight_soft_loss"], spec["weight_hard_loss"], spec["ignore_index"]
    soft_sum = torch.zeros((), dtype=logits.dtype, device=logits.device)
    hard_sum = torch.zeros((), dtype=logits.dtype, device=logits.device)
    budget = _BLOCK_ELEMENTS["cpu" if logits.device.type == "cpu" else "other"]
    rows = max(1, budget // logits.shape[1])
    for start in range(0, logits.shape[0], rows):
        block = logits[start : start + rows]
        y = labels[start : start + rows]
        student = block.detach().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            soft = token_values(
                student,
                teacher_logits[start : start + rows],
                y,
                method=spec["method"],
                ignore_index=ignore_index,
                temperature=spec["temperature"],
                prior=spec["prior"],
                loss_params=spec["loss_params"],
            ).sum()
            total = soft * w_soft
            if w_hard != 0.0:
                hard = F.cross_entropy(student, y, ignore_index=ignore_index, reduction="sum")
                total = total + hard * w_hard
                hard_sum += hard.detach()
            if need_grad:
                block.copy_(torch.autograd.grad(total, student)[0])
        soft_sum += soft.detach()
    return soft_sum, hard_sum


class _FusedLinearLoss(torch.autograd.Function):
    """Loss and its input / weight / bias gradients in one chunked pass; backward scales them."""

    @staticmethod
    def forward(
        ctx: Any,
        student_input: torch.Tensor,
        student_weight: torch.Tensor,
        student_bias: torch.Tensor | None,
        teacher_input: torch.Tensor,
        teacher_weight: torch.Tensor,
        teacher_bias: torch.Tensor | None,
        labels: torch.Tensor,
        denom: torch.Tensor | float,
        spec: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        acc = torch.float64 if student_input.dtype == torch.float64 or student_weight.dtype == torch.float64 else None
        acc = acc or torch.float32
        need_in, need_w, need_b = (need and spec["grad_enabled"] for need in ctx.needs_input_grad[:3])
        need_any = need_in or need_w or need_b
        weight = student_weight.to(acc)
        bias = None if student_bias is None else student_bias.to(acc)
        n = student_input.shape[0]
        grad_in = torch.zeros(student_input.shape, dtype=acc, device=student_input.device) if need_in else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        soft_sum = torch.zeros((), dtype=acc, device=student_input.device)
        hard_sum = torch.zeros((), dtype=acc, device=student_input.device)
        with _no_autocast(student_input.device):
            for start in range(0, n, spec["chunk_size"]):
                end = min(start + spec["chunk_size"], n)
                x = student_input[start:end].to(acc)
                teacher_logits = F.linear(teacher_input[start:end], teacher_weight, teacher_bias)
                logits = F.linear(x, weight, bias)
                soft, hard = _chunk_loss(logits, teacher_logits, labels[start:end], spec, need_any)
                soft_sum += soft
                hard_sum += hard
                del teacher_logits
                if not need_any:  # no gradient wanted (e.g. an evaluation under torch.no_grad)
                    continue
                grad_logits = logits  # _chunk_loss overwrote the logits with ∂loss/∂logits
                if grad_in is not None:
                    torch.mm(grad_logits, weight, out=grad_in[start:end])
                if grad_w is not None:
                    grad_w.addmm_(grad_logits.t(), x)
                if grad_b is not None:
                    grad_b += grad_logits.sum(dim=0)
                del logits, grad_logits
        scale = 1.0 / (denom.to(acc) if isinstance(denom, torch.Tensor) else denom)
        for grad in (grad_in, grad_w, grad_b):
            if grad is not None:
                grad.mul_(scale)
        ctx.save_for_backward(grad_in, grad_w, grad_b)
        ctx.dtypes = (student_input.dtype, student_weight.dtype, None if student_bias is None else student_bias.dtype)
        soft_loss, hard_loss = soft_sum * scale, hard_sum * scale
        loss = soft_loss * spec["weight_soft_loss"] + hard_loss * spec["weight_hard_loss"]
        ctx.mark_non_differentiable(soft_loss, hard_loss)
        return loss, soft_loss, hard_loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        grads = []
        for grad, dtype in zip(ctx.saved_tensors, ctx.dtypes):
            grads.append(None if grad is None else (grad * grad_loss).to(dtype))
        return grads[0], grads[1], grads[2], None, None, None, None, None, None


def _check_hidden(name: str, x: object, weight_name: str, weight: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        got = f"{x.dtype} shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a floating tensor (N, H) or (B, T, H), got {got}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{weight_name}: expected shape (V, {x.shape[-1]}) (the hidden size of {name}), got {shape}")
    return x.reshape(-1, x.shape[-1]), weight


def _check_bias(name: str, bias: object, vocab: int) -> torch.Tensor | None:
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (vocab,)):
        shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"{name}: expected shape ({vocab},) or None, got {shape}")
    return bias


def fused_linear_gkl_loss(
    student_input: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_input: torch.Tensor,
    teacher_weight: torch.Tensor,
    true_labels: torch.Tensor,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    *,
    method: str = "gkl",
    weight_hard_loss: float = 0.5,
    weight_soft_loss: float = 0.5,
    ignore_index: int = -100,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    slice_vocab: bool = False,
    class_wise: bool = False,
    prior: ClassPrior | None = None,
    return_soft_hard_loss: bool = False,
    **loss_params: Any,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w_soft · Σ_i loss_i + w_hard · Σ_i CE_i over valid tokens, divided by ``num_items_in_batch``
    (or the valid count), with logits x W^T + b computed ``chunk_size`` tokens at a time.

    loss_i is :func:`gkl.lm.token_loss`'s per-token value of ``method`` (same parameters);
    inputs with more than two dims are flattened to (N, H). Returns the loss, or
    ``(loss, soft, hard)`` with ``return_soft_hard_loss=True``.
    """
    s_in, s_w = _check_hidden("student_input", student_input, "student_weight", student_weight)
    t_in, t_w = _check_hidden("teacher_input", teacher_input, "teacher_weight", teacher_weight)
    s_b = _check_bias("student_bias", student_bias, s_w.shape[0])
    t_b = _check_bias("teacher_bias", teacher_bias, t_w.shape[0])
    if t_in.shape[0] != s_in.shape[0]:
        raise ValueError(f"teacher_input: expected {s_in.shape[0]} tokens (the student's), got {t_in.shape[0]}")
    labels_ok = isinstance(true_labels, torch.Tensor) and not true_labels.is_floating_point()
    if not labels_ok or true_labels.numel() != s_in.shape[0]:
        is_tensor = isinstance(true_labels, torch.Tensor)
        got = f"{true_labels.dtype} shape {tuple(true_labels.shape)}" if is_tensor else true_labels
        raise ValueError(f"true_labels: expected {s_in.shape[0]} integer token ids, got {got}")
    labels = true_labels.reshape(-1)
    v_s, v_t = s_w.shape[0], t_w.shape[0]
    if v_s != v_t:
        if not slice_vocab:
            raise ValueError(
                f"teacher_weight: vocabulary of {v_t} entries, the student's has {v_s}; expected equal sizes "
                "(pass slice_vocab=True to use the shared first min(V_s, V_t) entries)"
            )
        shared = min(v_s, v_t)
        s_w, t_w = s_w[:shared], t_w[:shared]
        s_b = None if s_b is None else s_b[:shared]
        t_b = None if t_b is None else t_b[:shared]
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    for name, value in (("weight_hard_loss", weight_hard_loss), ("weight_soft_loss", weight_soft_loss)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.0:
            raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index: expected an int, got {ignore_index!r}")
    check_method(method, loss_params)
    vocab = s_w.shape[0]
    check_class_wise(class_wise, vocab, prior)
    check_labels_values(labels, vocab, ignore_index)
    spec = {
        "method": method,
        "weight_soft_loss": float(weight_soft_loss),
        "weight_hard_loss": float(weight_hard_loss),
        "ignore_index": ignore_index,
        "temperature": temperature,
        "chunk_size": chunk_size,
        "prior": prior,
        "loss_params": loss_params,
        "grad_enabled": torch.is_grad_enabled(),
    }
    denom = normaliser(labels, s_in.shape[0], ignore_index, num_items_in_batch)
    loss, soft, hard = _FusedLinearLoss.apply(s_in, s_w, s_b, t_in, t_w, t_b, labels, denom, spec)
    return (loss, soft, hard) if return_soft_hard_loss else loss


class FusedLinearGKLLoss(nn.Module):
    """Module form of :func:`fused_linear_gkl_loss` with Liger-Kernel's constructor and call.

    ``FusedLinearGKLLoss(weight_hard_loss=0.5, weight_soft_loss=0.5, ignore_index=-100,
    temperature=1.0, chunk_size=1024, method="gkl", slice_vocab=False, **loss_params)``, called as
    ``(student_input, student_weight, teacher_input, teacher_weight, true_labels, student_bias=None,
    teacher_bias=None, num_items_in_batch=None)``.
    """

    def __init__(
        self,
        weight_hard_loss: float = 0.5,
        weight_soft_loss: float = 0.5,
        ignore_index: int = -100,
        temperature: float = 1.0,
        chunk_size: int = 1024,
        *,
        method: str = "gkl",
        slice_vocab: bool = False,
        class_wise: bool = False,
        prior: ClassPrior | None = None,
        return_soft_hard_loss: bool = False,
        **loss_params: Any,
    ) -> None:
        super().__init__()
        check_method(method, loss_params)
        self.options: dict[str, Any] = dict(
            method=method,
            weight_hard_loss=weight_hard_loss,
            weight_soft_loss=weight_soft_loss,
            ignore_index=ignore_index,
            temperature=temperature,
            chunk_size=chunk_size,
            slice_vocab=slice_vocab,
            class_wise=class_wise,
            return_soft_hard_loss=return_soft_hard_loss,
            **loss_params,
        )
        self.prior = prior

    def forward(
        self,
        student_input: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_input: torch.Tensor,
        teacher_weight: torch.Tensor,
        true_labels: torch.Tensor,
        student_bias: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return fused_linear_gkl_loss(
            student_input,
            student_weight,
            teacher_input,
            teacher_weight,
            true_labels,
            student_bias,
            teacher_bias,
            num_items_in_batch,
            prior=self.prior,
            **self.options,
        )
