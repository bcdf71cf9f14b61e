"""Projected gradient descent (Madry et al. 2018) in l-inf and l2 balls.

Attacks run in float32 with autocast off, with the model in eval mode (so
BatchNorm uses and never updates its running statistics), and take gradients
with respect to the input only (``torch.autograd.grad``), so nothing is
accumulated into parameter ``.grad``. The train/eval mode of every submodule is
restored afterwards. Inputs live in [0, 1]; results are projected back into
the eps-ball and into [0, 1] after every step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from torch import nn

from gkl.attacks.attack_losses import NEEDS_CLEAN_LOGITS, attack_loss, check_attack_loss_name
from gkl.losses import value_checks_active
from gkl.settings.adversarial import NORMS, RANDOM_STARTS
from gkl.utils.modules import unwrap_model
from gkl.utils.validation import check_choice, check_int, check_number, fail

Norm = Literal["linf", "l2"]
RandomStart = Literal["trades", "uniform"] | None
#: Standard deviation of the TRADES random start x + 0.001 * N(0, 1).
TRADES_START_STD = 0.001
_TINY = 1e-12


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with autocast off; restore every submodule's mode on exit."""
    modes = [(module, module.training) for module in model.modules()]
    device_type = next((p.device.type for p in model.parameters()), "cpu")
    model.eval()
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield model
    finally:
        for module, training in modes:
            module.training = training


def _per_example(value: float | torch.Tensor, name: str, images: torch.Tensor) -> torch.Tensor:
    """``value`` as a float32 tensor broadcastable to ``images`` (one value per example)."""
    n = images.shape[0]
    shape = (n,) + (1,) * (images.dim() - 1)
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.reshape(1).expand(n)
        if value.shape != (n,):
            raise fail(
                "", name, f"a float or a tensor of shape (N,) = ({n},)", f"shape {tuple(value.shape)}", show_value=False
            )
        if not torch.isfinite(value).all() or (value < 0).any():
            raise fail("", name, "finite values >= 0", "a negative or non-finite value", show_value=False)
        return value.detach().to(device=images.device, dtype=torch.float32).reshape(shape)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail("", name, "a float or a tensor of shape (N,)", value)
    check_number("", name, value, minimum=0.0)
    return torch.full(shape, float(value), device=images.device, dtype=torch.float32)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """l2 norm of every example, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (t.dim() - 1))


def project(adv: torch.Tensor, images: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project ``adv`` into the ``norm`` ball of radius ``eps`` around ``images`` and into [0, 1]."""
    delta = adv - images
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps)
    else:
        delta = delta * torch.clamp(eps / (_flat_norm(delta) + _TINY), max=1.0)
    return torch.clamp(images + delta, 0.0, 1.0)


def random_start_point(
    images: torch.Tensor,
    eps: torch.Tensor,
    norm: str,
    random_start: str | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Starting point: TRADES (x + 0.001 N(0, 1)), uniform in the ball, or x itself."""
    if random_start is None:
        return images.clone()
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    if random_start == "trades":
        start = images + TRADES_START_STD * noise
    elif norm == "linf":
        uniform = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        start = images + (2 * uniform - 1) * eps
    else:  # uniform in the l2 ball: uniform direction, radius eps * U^(1/d)
        d = images[0].numel()
        u = torch.rand((images.shape[0],), generator=generator, device=images.device, dtype=images.dtype)
        radius = eps * u.pow(1.0 / d).reshape(eps.shape)
        start = images + noise / (_flat_norm(noise) + _TINY) * radius
    return project(start, images, eps, norm)


def ascent_step(adv: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, norm: str) -> torch.Tensor:
    """One steepest-ascent step: sign of the gradient (l-inf) or the normalised gradient (l2)."""
    if norm == "linf":
        return adv + step_size * grad.sign()
    return adv + step_size * grad / (_flat_norm(grad) + _TINY)


def check_attack_inputs(images: torch.Tensor, labels: torch.Tensor, *, values: bool = True) -> None:
    """Raise ValueError unless images are a finite float (N, ...) batch in [0, 1] with (N,) integer labels >= 0.

    The upper bound of the labels is checked against the model's logits (:func:`check_labels_range`).
    One host synchronisation for all value checks; ``values=False`` checks types and shapes only.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
        raise fail(
            "",
            "images",
            "a floating-point tensor of shape (N, ...) with values in [0, 1]",
            type(images).__name__
            if not isinstance(images, torch.Tensor)
            else f"dtype {images.dtype}, shape {tuple(images.shape)}",
            show_value=False,
        )
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype not in (torch.int64, torch.int32)
        or labels.shape != images.shape[:1]
    ):
        got = (
            f"dtype {labels.dtype}, shape {tuple(labels.shape)}"
            if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )
        raise fail("", "labels", f"an integer tensor of shape (N,) = ({images.shape[0]},)", got, show_value=False)
    if images.numel() == 0 or not values:
        return
    finite, in_range, labels_ok = torch.stack(
        [
            torch.isfinite(images).all(),
            (images.min() >= 0) & (images.max() <= 1),
            (labels >= 0).all() if labels.numel() else torch.ones((), dtype=torch.bool, device=labels.device),
        ]
    ).tolist()
    if not finite:
        raise fail("", "images", "finite values in [0, 1]", "NaN or inf", show_value=False)
    if not in_range:
        raise fail(
            "",
            "images",
            "values in [0, 1] (normalisation belongs inside the model)",
            f"values in [{images.min().item():.4g}, {images.max().item():.4g}]",
            show_value=False,
        )
    if not labels_ok:
        raise fail("", "labels", "class indices >= 0", f"{labels.min().item()}", show_value=False)


def check_labels_range(labels: torch.Tensor, logits: torch.Tensor) -> None:
    """Raise ValueError naming ``labels`` unless every label is a class index of ``logits`` (N, C)."""
    num_classes = logits.shape[1]
    if labels.numel() and bool(labels.max() >= num_classes):
        raise fail(
            "",
            "labels",
            f"class indices in [0, {num_classes - 1}] (the model has {num_classes} classes)",
            f"label {labels.max().item()}",
            show_value=False,
        )


def _pgd_in_attack_mode(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: torch.Tensor,
    step_size: torch.Tensor,
    steps: int,
    loss: str,
    norm: str,
    random_start: str | None,
    target_logits: torch.Tensor | None,
    class_weights: torch.Tensor | None,
    gkl_kwargs: Mapping[str, Any] | None,
    generator: torch.Generator | None,
    check_labels: bool = True,
) -> torch.Tensor:
    images = images.detach().float()
    labels = labels.long()
    clean_logits = None
    if loss in NEEDS_CLEAN_LOGITS:
        if target_logits is None:
            with torch.no_grad():
                target_logits = model(images)
        clean_logits = target_logits.detach().float()
    adv = random_start_point(images, eps, norm, random_start, generator)
    for step in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            logits = model(adv).float()
            if step == 0 and check_labels:
                check_labels_range(labels, logits)
            value = attack_loss(
                loss, logits, labels, clean_logits=clean_logits, class_weights=class_weights, gkl_kwargs=gkl_kwargs
            )
            (grad,) = torch.autograd.grad(value, adv)
        adv = project(ascent_step(adv.detach(), grad, step_size, norm), images, eps, norm)
    return adv.detach()


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    steps: int,
    loss: str = "ce",
    norm: str = "linf",
    random_start: str | None = "trades",
    target_logits: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    gkl_kwargs: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return adversarial images found by ``steps`` steps of PGD maximising ``loss``.

    Args:
        model: classifier taking [0, 1] images (DDP wrappers are unwrapped).
        images, labels: (N, ...) float batch in [0, 1] and (N,) integer labels.
        eps, step_size: ball radius and step length, floats or per-example (N,) tensors.
        steps: number of gradient steps (0 returns the random start).
        loss: "ce", "kl" (TRADES), "gkl" or "cw" (see :mod:`gkl.attacks.attack_losses`).
        norm: "linf" or "l2".
        random_start: "trades" (x + 0.001 N(0,1)), "uniform" (uniform in the ball) or None.
        target_logits: clean logits for "kl"/"gkl" (computed in eval mode when None).
        class_weights: (N, C) or (C, C) class-wise weights for "gkl" (e.g. ``ClassPrior``).
        gkl_kwargs: gkl_loss settings for "gkl" (default alpha = beta = gamma = T = 1).
        generator: random generator for the start point.

    The value checks of the inputs (images in [0, 1] and finite, labels in [0, C): host
    synchronisations) follow :func:`gkl.losses.value_checks_active`; the training engine turns
    them off, and the adversarial objectives check the first batch of a run instead.
    """
    check_attack_loss_name(loss)
    check_choice("", "norm", norm, NORMS)
    check_choice("", "random_start", random_start, RANDOM_STARTS)
    check_int("", "steps", steps, minimum=0)
    values = value_checks_active()  # off on the training path (host syncs): the objective checks once
    check_attack_inputs(images, labels, values=values)
    eps_t = _per_example(eps, "eps", images)
    step_t = _per_example(step_size, "step_size", images)
    net = unwrap_model(model)
    with attack_mode(net):
        return _pgd_in_attack_mode(
            net,
            images,
            labels,
            eps=eps_t,
            step_size=step_t,
            steps=steps,
            loss=loss,
            norm=norm,
            random_start=random_start,
            target_logits=target_logits,
            class_weights=class_weights,
            gkl_kwargs=gkl_kwargs,
            generator=generator,
            check_labels=values,
        )


class Attack:
    """Base of class-form attacks (after torchattacks' ``Attack``).

    Calling the attack checks the inputs, puts the model in eval mode with autocast
    off and restores every submodule's mode afterwards; subclasses write only
    :meth:`perturb`, which sees a plain (unwrapped) model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return adversarial versions of ``images``; runs in eval mode, float32."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_attack_inputs(images, labels)
        net = unwrap_model(self.model)
        with attack_mode(net):
            return self.perturb(net, images.detach().float(), labels.long()).detach()


class PGD(Attack):
    """Class form of :func:`pgd` with fixed settings; ``PGD(model, eps=8/255)(x, y)``."""

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        loss: str = "ce",
        norm: str = "linf",
        random_start: str | None = "uniform",
    ) -> None:
        super().__init__(model)
        self.settings: dict[str, Any] = dict(
            eps=eps, step_size=step_size, steps=steps, loss=loss, norm=norm, random_start=random_start
        )

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pgd(model, images, labels, **self.settings)
