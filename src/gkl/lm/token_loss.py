"""Token-level distillation losses of causal language models: :func:`token_loss`.

Every token of every sequence is one example and the vocabulary (V) is the class dim. The
per-token values come from the logit-loss registry (:mod:`gkl.losses.registry`), so ``kl``,
``reverse_kl``, ``jsd`` (generalised, ``beta``), ``dkl``, ``ikl`` and ``gkl`` mean here what
they mean everywhere in gkl (docs/losses.md; the T² convention included).

GKL over a vocabulary (docs/llm.md): the wMSE is the centred O(V) form, never a V × V tensor.
Its normalisation is per token so that the loss is a sum over tokens (what chunking and gradient
accumulation need): with ``normalize="weights"`` token i is divided by W_i² (the authors' D for a
batch of one token), with ``normalize="batch"`` by 1. A token's value is thus exactly the
registry loss of that one token alone.
"""

from __future__ import annotations

from typing import Any

import torch

from gkl.losses import ClassPrior, get_logit_loss, value_checks_active

__all__ = ["token_loss", "TOKEN_METHODS", "CLASS_WISE_MAX_VOCAB"]

#: The methods of :func:`token_loss` (entries of the logit-loss registry).
TOKEN_METHODS: tuple[str, ...] = ("kl", "reverse_kl", "jsd", "dkl", "ikl", "gkl")
#: Largest vocabulary for class-wise GKL weights: the prior and its accumulator are two V × V
#: float32 matrices (V = 8192: 0.5 GB; V = 128k: 2 × 64 GB).
CLASS_WISE_MAX_VOCAB = 8192
_REDUCTIONS = ("mean", "sum", "none")


def _gib(vocab: int) -> str:
    return f"{vocab * vocab * 4 / 2**30:.1f} GiB"


def check_method(method: object, loss_params: dict[str, Any]) -> None:
    """``method`` one of :data:`TOKEN_METHODS` and ``loss_params`` among its registered parameters."""
    if method not in TOKEN_METHODS:
        raise ValueError(f"method: expected one of {list(TOKEN_METHODS)}, got {method!r}")
    own = set(get_logit_loss(str(method)).params) - {"ignore_index"}
    unknown = sorted(set(loss_params) - own)
    if unknown:
        raise ValueError(
            f"{unknown[0]}: method {method!r} takes the parameters {sorted(own)} (besides temperature), "
            f"got {unknown[0]}={loss_params[unknown[0]]!r}"
        )


def check_class_wise(class_wise: object, vocab: int, prior: ClassPrior | None) -> None:
    """Class-wise weights need a :class:`ClassPrior` over a vocabulary of at most CLASS_WISE_MAX_VOCAB."""
    if not isinstance(class_wise, bool):
        raise ValueError(f"class_wise: expected True or False, got {class_wise!r}")
    if not class_wise:
        if prior is not None:
            raise ValueError("prior: a class prior is used only with class_wise=True, got a ClassPrior")
        return
    if vocab > CLASS_WISE_MAX_VOCAB:
        raise ValueError(
            f"class_wise: a class-wise prior over a vocabulary of {vocab} is a V x V matrix "
            f"({_gib(vocab)} in float32, twice that with its accumulator); expected a vocabulary of at most "
            f"{CLASS_WISE_MAX_VOCAB} or class_wise=False (sample-wise weights, O(V) per token)"
        )
    if not isinstance(prior, ClassPrior) or prior.prior.shape[0] != vocab:
        raise ValueError(f"prior: class_wise=True needs a ClassPrior({vocab}) over the vocabulary, got {prior!r}")


def check_labels_values(labels: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """Labels in [0, V) or ``ignore_index`` (one host sync; skipped when value checks are off)."""
    if not value_checks_active() or torch.compiler.is_compiling():
        return
    bad = ((labels < 0) | (labels >= vocab)) & (labels != ignore_index)
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(f"labels: expected token ids in [0, {vocab}) or ignore_index={ignore_index}, got {value}")


def token_values(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    method: str,
    ignore_index: int,
    temperature: float,
    prior: ClassPrior | None,
    loss_params: dict[str, Any],
) -> torch.Tensor:
    """Per-token values (N,) of (N, V) logits, 0 where the label is ``ignore_index`` (checked arguments).

    Each value is the registry loss of that token alone. For GKL with ``normalize="weights"``
    the weights are given per token as w^γ / W (= softmax(γ o_m / τ_w) for sample-wise
    weights) with γ = 1, which divides token i's wMSE by W_i², the one-token normalisation.
    """
    entry = get_logit_loss(method)
    kwargs: dict[str, Any] = dict(loss_params)
    weights = None
    if method in ("gkl", "ikl"):
        kwargs["targets"] = labels
        kwargs["ignore_index"] = ignore_index
        gamma = float(kwargs.get("gamma", 1.0))
        per_token_norm = method == "gkl" and kwargs.get("normalize", "weights") == "weights"
        with torch.no_grad():
            if prior is not None:
                weights = prior(labels)
                if teacher_logits.dtype == torch.float64:
                    weights = weights.double()
                if per_token_norm and gamma != 1.0:
                    weights = weights.pow(gamma)
            elif per_token_norm and gamma != 1.0:
                o_m = teacher_logits.detach().float() if teacher_logits.dtype in _HALF else teacher_logits.detach()
                tau_w = float(kwargs.get("weight_temperature", 1.0))
                weights = torch.softmax(o_m * (gamma / tau_w), dim=1)  # = w^γ / W, w = softmax(o_m/τ_w)
            if weights is not None and per_token_norm:
                weights = weights / weights.sum(dim=1, keepdim=True)
                kwargs["gamma"], kwargs["normalize"] = 1.0, "batch"  # W_i = 1: D = N, no batch coupling
        kwargs["weights"] = weights
    values = entry.fn(student_logits, teacher_logits, temperature=temperature, reduction="none", **kwargs)
    if labels is None or method in ("gkl", "ikl"):  # gkl / ikl already hold 0 at ignored tokens
        return values
    return torch.where(labels != ignore_index, values, torch.zeros((), dtype=values.dtype, device=values.device))


_HALF = (torch.float16, torch.bfloat16)


def normaliser(
    labels: torch.Tensor | None, n_tokens: int, ignore_index: int, num_items_in_batch: int | torch.Tensor | None
) -> torch.Tensor | float:
    """The "mean" denominator: ``num_items_in_batch`` when given, else the valid-token count (≥ 1)."""
    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            return num_items_in_batch.clamp_min(1)
        if isinstance(num_items_in_batch, bool) or not isinstance(num_items_in_batch, int) or num_items_in_batch < 0:
            raise ValueError(f"num_items_in_batch: expected an int >= 0 or a tensor, got {num_items_in_batch!r}")
        return float(max(num_items_in_batch, 1))
    if labels is None:
        return float(max(n_tokens, 1))
    return (labels != ignore_index).sum().clamp_min(1)


def token_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    method: str = "gkl",
    ignore_index: int = -100,
    shift_labels: bool = False,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    class_wise: bool = False,
    prior: ClassPrior | None = None,
    slice_vocab: bool = False,
    **loss_params: Any,
) -> torch.Tensor:
    """Token-level distillation loss of (B, T, V) or (N, V) student and teacher logits.

    Args:
        student_logits, teacher_logits: (B, T, V) or (N, V); detach the teacher's.
        labels: (B, T) / (N,) next-token ids; positions equal to ``ignore_index`` contribute
            nothing. None: every position counts.
        method: ``kl`` (forward, KL(teacher ‖ student)), ``reverse_kl``, ``jsd`` (generalised,
            ``beta`` = 0.5 by default), ``dkl``, ``ikl`` or ``gkl`` (registry entries).
        shift_labels: compare the logits at t with the labels at t + 1 (transformers' causal-LM
            convention; (B, T, V) inputs only).
        temperature: T of the registry loss (``kl``, ``reverse_kl``, ``jsd``: times T²).
        reduction: "mean": the sum over valid tokens divided by ``num_items_in_batch`` when given
            (transformers' convention under gradient accumulation), else by the valid count;
            "sum"; "none": per-token values (0 at ignored tokens), shaped like the labels.
        class_wise: GKL / IKL weights from ``prior`` (a ClassPrior over the vocabulary) at each
            token's label; refused above CLASS_WISE_MAX_VOCAB (the prior is V x V).
        slice_vocab: when the two vocabularies differ, compare the shared first min(V_s, V_t)
            entries; otherwise a mismatch is an error naming both sizes.
        **loss_params: the method's own parameters (``alpha``, ``beta``, ``gamma``,
            ``weight_temperature``, ``normalize`` for GKL; ``beta`` for JSD).
    """
    student_logits, teacher_logits, labels = check_logits_and_labels(
        student_logits, teacher_logits, labels, shift_labels=shift_labels, slice_vocab=slice_vocab
    )
    check_method(method, loss_params)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(_REDUCTIONS)}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index: expected an int, got {ignore_index!r}")
    vocab = student_logits.shape[-1]
    check_class_wise(class_wise, vocab, prior)
    if class_wise and method not in ("gkl", "ikl"):
        raise ValueError(f"class_wise: expected False for method {method!r} (only gkl / ikl take class weights)")
    if class_wise and labels is None:
        raise ValueError("labels: class_wise=True looks the prior up at each token's label, got None")
    out_shape = student_logits.shape[:-1]
    flat_s = student_logits.reshape(-1, vocab)
    flat_t = teacher_logits.reshape(-1, vocab)
    flat_y = None if labels is None else labels.reshape(-1)
    if flat_y is not None:
        check_labels_values(flat_y, vocab, ignore_index)
    values = token_values(
        flat_s,
        flat_t,
        flat_y,
        method=method,
        ignore_index=ignore_index,
        temperature=temperature,
        prior=prior,
        loss_params=loss_params,
    )
    if reduction == "none":
        return values.reshape(out_shape)
    total = values.sum()
    if reduction == "sum":
        return total
    return total / normaliser(flat_y, flat_s.shape[0], ignore_index, num_items_in_batch)


def check_logits_and_labels(
    student_logits: object,
    teacher_logits: object,
    labels: object,
    *,
    shift_labels: bool,
    slice_vocab: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Shapes of the logits and labels (one-line errors), the label shift and the vocabulary slice."""
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() not in (2, 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a floating tensor of shape (B, T, V) or (N, V), got {shape}")
    assert isinstance(student_logits, torch.Tensor) and isinstance(teacher_logits, torch.Tensor)
    v_s, v_t = student_logits.shape[-1], teacher_logits.shape[-1]
    if v_s != v_t:
        if not slice_vocab:
            raise ValueError(
                f"teacher_logits: vocabulary of {v_t} entries, the student's has {v_s}; expected equal sizes "
                "(pass slice_vocab=True to compare the shared first min(V_s, V_t) entries)"
            )
        shared = min(v_s, v_t)
        student_logits, teacher_logits = student_logits[..., :shared], teacher_logits[..., :shared]
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher_logits: expected the student's shape {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_logits.shape)}"
        )
    if not isinstance(shift_labels, bool):
        raise ValueError(f"shift_labels: expected True or False, got {shift_labels!r}")
    if shift_labels and student_logits.dim() != 3:
        raise ValueError(f"shift_labels: expected (B, T, V) logits, got shape {tuple(student_logits.shape)}")
    if labels is None:
        if shift_labels:
            raise ValueError("labels: shift_labels=True needs the labels, got None")
        return student_logits, teacher_logits, None
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex():
        got = f"{labels.dtype} tensor" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected an integer tensor of token ids, got a {got}")
    if shift_labels:
        student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    if tuple(labels.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(
            f"labels: expected shape {tuple(student_logits.shape[:-1])} (the logits' without V), "
            f"got {tuple(labels.shape)}"
        )
    return student_logits, teacher_logits, labels
