"""Adversarial weight perturbation (Wu et al. 2020, "AWP").

Per step: copy the model into a proxy, take one SGD ascent step of the proxy on
the adversarial training loss, and per layer move the conv/linear weights of the
model along the proxy's change, rescaled to norm ``gamma * ||w||`` of that layer:

    v_l = gamma * ||w_l|| * (w'_l - w_l) / ||w'_l - w_l||,      w_l <- w_l + v_l

The outer loss is then computed at the perturbed weights, the optimizer steps,
and :meth:`AdversarialWeightPerturbation.restore` removes v_l again. BatchNorm
parameters and biases are never perturbed.

Restore keeps the update of the optimizer and nothing else: with the weights
w0 before perturbation and w1 after the step, it writes
w0 + (w1 - (w0 + v)), which is bitwise w0 when no step was taken.

Under torch.distributed each rank's proxy sees its local batch, so the raw
per-layer differences are averaged with all-reduce before scaling: every
replica applies the same perturbation and stays identical.

Under fp16 autocast the proxy's backward uses the engine's gradient scaler: the
loss is multiplied by the scaler's current scale (so small gradients do not
underflow to zero in half precision), the proxy's gradients are divided by it again
before its SGD step, and a step whose scaled gradients overflow (inf/NaN) applies
no perturbation, just as the scaler skips that step's optimizer update. The
scaler's scale is only read, never updated here (the engine's own step updates it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from gkl.utils.modules import unwrap_model
from gkl.utils.validation import check_number, fail

PERTURBED_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def perturbable_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (qualified name, weight) of every conv/linear layer of ``model``, in module order."""
    found = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, PERTURBED_LAYERS) and isinstance(weight, nn.Parameter):
            found.append((f"{name}.weight" if name else "weight", weight))
    return found


class AdversarialWeightPerturbation:
    """AWP with a proxy model and its own SGD step (Wu et al. 2020, Alg. 1).

    Args:
        gamma: relative size of the per-layer perturbation (5e-3 in the recipes).
        proxy_lr: learning rate of the proxy's single ascent step (0.01 as in AWP's code).

    The proxy is built lazily as a deep copy of the unwrapped model and is not part
    of any state dict: it is reloaded from the model at every step.
    """

    def __init__(self, *, gamma: float = 5e-3, proxy_lr: float = 0.01) -> None:
        check_number("", "gamma", gamma, minimum=0.0)
        check_number("", "proxy_lr", proxy_lr, minimum=0.0, strict=True)
        self.gamma = float(gamma)
        self.proxy_lr = float(proxy_lr)
        self._proxy: nn.Module | None = None
        self._saved: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []

    @property
    def active(self) -> bool:
        """True between :meth:`perturb` and :meth:`restore`."""
        return bool(self._saved)

    def _proxy_for(self, model: nn.Module) -> nn.Module:
        if self._proxy is None:
            self._proxy = copy.deepcopy(model)
        self._proxy.load_state_dict(model.state_dict())
        self._proxy.train(model.training)
        self._proxy.requires_grad_(True)
        return self._proxy

    def compute_perturbation(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module], torch.Tensor],
        *,
        scaler: torch.amp.GradScaler | None = None,
    ) -> list[torch.Tensor]:
        """Per-layer perturbations v_l (same order as :func:`perturbable_weights`).

        ``loss_fn(proxy)`` returns the training loss evaluated with the proxy; the
        proxy takes one SGD step that *increases* it. ``scaler``: the fp16 gradient
        scaler of the run (see the module docstring), or None.
        """
        net = unwrap_model(model)
        weights = perturbable_weights(net)
        proxy = self._proxy_for(net)
        proxy.zero_grad(set_to_none=True)
        scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else None
        loss = -loss_fn(proxy)
        (loss if scale is None else loss * scale).backward()
        grads = [p.grad for p in proxy.parameters() if p.grad is not None]
        if scale is not None:
            finite = torch.stack([torch.isfinite(g).all() for g in grads]).all() if grads else True
            if dist.is_available() and dist.is_initialized():
                flag = torch.as_tensor(finite, dtype=torch.float32, device=grads[0].device if grads else "cpu")
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = flag
            if not bool(finite):  # overflow: no perturbation this step (the scaler skips it too)
                proxy.zero_grad(set_to_none=True)
                return [torch.zeros_like(w) for _, w in weights]
        with torch.no_grad():
            for param in proxy.parameters():
                if param.grad is not None:
                    grad = param.grad if scale is None else param.grad.float() / scale
                    param.add_(grad.to(param.dtype), alpha=-self.proxy_lr)
        proxy.zero_grad(set_to_none=True)
        proxy_weights = dict(perturbable_weights(proxy))
        perturbation = []
        with torch.no_grad():
            diffs = [(proxy_weights[name].detach() - w.detach()).float() for name, w in weights]
            if dist.is_available() and dist.is_initialized() and diffs:
                flat = torch.cat([d.flatten() for d in diffs])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                flat /= dist.get_world_size()
                diffs = list(torch.split(flat, [d.numel() for d in diffs]))
                diffs = [d.reshape(w.shape) for d, (_, w) in zip(diffs, weights)]
            for diff, (_, w) in zip(diffs, weights):
                # v_l = gamma ||w_l|| diff / ||diff|| (0 where the proxy did not move: no host sync)
                diff_norm = diff.norm()
                layer_scale = self.gamma * w.detach().float().norm() / diff_norm
                layer_scale = torch.where(diff_norm > 0, layer_scale, torch.zeros_like(layer_scale))
                perturbation.append((diff * layer_scale).to(w.dtype))
        return perturbation

    @torch.no_grad()
    def perturb(self, model: nn.Module, perturbation: list[torch.Tensor]) -> None:
        """Add the perturbation to the model's conv/linear weights (in place)."""
        if self.active:
            raise RuntimeError("AWP perturbation already applied: call restore() after the optimizer step first")
        weights = perturbable_weights(unwrap_model(model))
        if len(weights) != len(perturbation):
            raise fail(
                "",
                "perturbation",
                f"one tensor per conv/linear layer ({len(weights)})",
                f"{len(perturbation)} tensors",
                show_value=False,
            )
        for (_, w), v in zip(weights, perturbation):
            if v.shape != w.shape:
                raise fail(
                    "",
                    "perturbation",
                    f"the weight's shape {tuple(w.shape)}",
                    f"shape {tuple(v.shape)}",
                    show_value=False,
                )
            self._saved.append((w, w.detach().clone(), v))
            w.copy_(w + v)

    @torch.no_grad()
    def restore(self) -> None:
        """Remove the perturbation, keeping whatever the optimizer changed since :meth:`perturb`."""
        for w, original, v in self._saved:
            update = w - (original + v)
            w.copy_(torch.where(update == 0, original, original + update))
        self._saved = []

    def perturb_for_loss(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module], torch.Tensor],
        *,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """:meth:`compute_perturbation` then :meth:`perturb`."""
        self.perturb(model, self.compute_perturbation(model, loss_fn, scaler=scaler))
