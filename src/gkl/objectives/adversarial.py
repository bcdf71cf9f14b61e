"""Adversarial-training objectives: TRADES, GKL-AT and PGD-AT (Madry).

One step (``forward``):

1. craft adversarial examples with PGD on the unwrapped model (eval mode, float32),
   with eps and the step budget of the epoch (:mod:`gkl.objectives.epsilon_schedule`);
2. optionally perturb the weights with AWP (:mod:`gkl.objectives.awp`), restored in
   :meth:`after_optimizer_step`;
3. forward the clean and the adversarial batch through the (possibly DDP) model
   in train mode and return the named loss terms.

Outer losses (o_m = clean logits, carrying gradient; o_n = adversarial logits):

- TRADES: CE(o_m, y) + beta_T * KL(softmax(o_m) || softmax(o_n)), batchmean (GKL paper Eq. 2).
- GKL-AT: CE(o_m, y) + GKL(o_n, o_m) (Eq. 13) with class-wise weights = the previous
  epoch's mean clean softmax at tau_w of the example's class (Eqs. 8-9), held by a
  ``ClassPrior`` submodule (checkpointed) that is fed the clean logits and stepped
  in :meth:`on_epoch_end`.
- PGD-AT: CE(o_n, y) on PGD examples.

Two-view AutoAugment (``autoaugment_weight > 0``): each batch gets a second view
made with torchvision's AutoAugment (CIFAR-10 policy, per example, on uint8
versions of the images); the view is attacked too and its AT loss terms are
added with that weight (named ``autoaug_<term>``). Both views go through the
model in one batch (shared BatchNorm statistics, as in the authors' code); the
ClassPrior sees only the first view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gkl.attacks.attack_losses import ATTACK_LOSSES
from gkl.attacks.pgd import NORMS, RANDOM_STARTS, pgd
from gkl.objectives.awp import AdversarialWeightPerturbation
from gkl.objectives.base import Objective, StepOutput, unwrap_model
from gkl.objectives.epsilon_schedule import ATTACK_BUDGETS, EPS_SCHEDULES, AttackPlan, attack_plan

Method = Literal["trades", "gkl", "pgd_at"]
METHODS: tuple[str, ...] = ("trades", "gkl", "pgd_at")

#: Method defaults for the settings left as None.
_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "trades": {"attack_loss": "kl", "eps_schedule": "fixed", "attack_budget": "fixed"},
    "gkl": {"attack_loss": "gkl", "eps_schedule": "linear", "attack_budget": "high-as-released"},
    "pgd_at": {"attack_loss": "ce", "eps_schedule": "fixed", "attack_budget": "fixed"},
}


@dataclass
class AdversarialSettings:
    """Settings of an adversarial-training objective (defaults: recipes.md, "Adversarial training").

    Loss weights follow the paper: ``alpha`` = wMSE weight, ``beta`` = soft-label CE weight.
    Settings left as None take the method's default:

    ============  ===========  ============  ===================
    method        attack_loss  eps_schedule  attack_budget
    ============  ===========  ============  ===================
    "trades"      "kl"         "fixed"       "fixed" (10 x 2/255)
    "gkl"         "gkl"        "linear"      "high-as-released"
    "pgd_at"      "ce"         "fixed"       "fixed" (10 x 2/255)
    ============  ===========  ============  ===================

    ``attack_steps``/``attack_step_size`` are used by the "fixed" budget only.
    AWP is on when ``awp_gamma > 0`` and ``epoch >= awp_start_epoch``. The proxy's
    learning rate only scales a difference that is renormalised per layer, so it
    hardly matters; 0.01 is AWP's value.
    """

    method: Method = "gkl"
    eps: float = 8 / 255
    eps_schedule: str | None = None
    attack_budget: str | None = None
    attack_steps: int = 10
    attack_step_size: float = 2 / 255
    attack_loss: str | None = None
    random_start: str | None = "trades"
    norm: str = "linf"
    # TRADES
    trades_beta: float = 6.0
    # GKL-AT outer loss (paper naming) and class-wise weights
    alpha: float = 20.0
    beta: float = 4.0
    gamma: float = 1.0
    temperature: float = 1.0
    weight_temperature: float = 4.0
    class_wise: bool = True
    # GKL inner attack (recipes: alpha = beta = gamma = T = 1)
    attack_alpha: float = 1.0
    attack_beta: float = 1.0
    attack_gamma: float = 1.0
    attack_temperature: float = 1.0
    # AWP
    awp_gamma: float = 5e-3
    awp_start_epoch: int = 10
    awp_proxy_lr: float = 0.01
    # second AutoAugment view
    autoaugment_weight: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("method", self.method, METHODS)
        defaults = _METHOD_DEFAULTS[self.method]
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        _check_choice("eps_schedule", self.eps_schedule, EPS_SCHEDULES)
        _check_choice("attack_budget", self.attack_budget, ATTACK_BUDGETS)
        _check_choice("attack_loss", self.attack_loss, ATTACK_LOSSES)
        _check_choice("random_start", self.random_start, RANDOM_STARTS)
        _check_choice("norm", self.norm, NORMS)
        for name in ("eps", "attack_step_size", "trades_beta", "alpha", "beta", "gamma", "attack_alpha",
                     "attack_beta", "attack_gamma", "awp_gamma", "autoaugment_weight"):
            _check_number(name, getattr(self, name), minimum=0.0)
        for name in ("temperature", "weight_temperature", "attack_temperature", "awp_proxy_lr"):
            _check_number(name, getattr(self, name), minimum=0.0, strict=True)
        for name in ("attack_steps", "awp_start_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"AdversarialSettings.{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.class_wise, bool):
            raise ValueError(f"AdversarialSettings.class_wise must be a bool, got {self.class_wise!r}")

    def to_dict(self) -> dict[str, Any]:
        """Resolved settings as a plain dict (for logs)."""
        return asdict(self)


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"AdversarialSettings.{name} must be one of {choices}, got {value!r}")


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value < float("inf")
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"AdversarialSettings.{name} must be a finite number {bound}, got {value!r}")


def autoaugment_view(images: torch.Tensor) -> torch.Tensor:
    """A second view of [0, 1] images: AutoAugment (CIFAR-10 policy) per example on uint8."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    policy = AutoAugment(AutoAugmentPolicy.CIFAR10)
    as_uint8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    views = torch.stack([policy(image) for image in as_uint8])
    return views.to(images.dtype) / 255


class AdversarialObjective(Objective):
    """Shared machinery of the AT objectives; subclasses define :meth:`at_losses`."""

    def __init__(self, settings: AdversarialSettings, *, num_classes: int, epochs: int) -> None:
        super().__init__()
        if not isinstance(settings, AdversarialSettings):
            raise ValueError(f"settings must be an AdversarialSettings, got {type(settings).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.settings = settings
        self.num_classes = num_classes
        self.epochs = epochs
        self.awp = (AdversarialWeightPerturbation(gamma=settings.awp_gamma, proxy_lr=settings.awp_proxy_lr)
                    if settings.awp_gamma > 0 else None)

    # -- pieces subclasses customise -------------------------------------------------
    def at_losses(self, clean_logits: torch.Tensor | None, adv_logits: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms of one view (clean logits carry gradient)."""
        raise NotImplementedError

    def attack_extras(self, labels: torch.Tensor) -> dict[str, Any]:
        """Extra keyword arguments of :func:`gkl.attacks.pgd` (e.g. class-wise weights)."""
        return {}

    def observe_clean_logits(self, clean_logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Hook called with the first view's clean logits after the training forward."""

    uses_clean_logits: bool = True

    # -- the step -------------------------------------------------------------------
    def plan(self, epoch: int) -> AttackPlan:
        """eps, steps and step size of the inner attack at ``epoch``."""
        s = self.settings
        return attack_plan(eps=s.eps, epoch=min(max(epoch, 1), self.epochs), epochs=self.epochs,
                           eps_schedule=s.eps_schedule, budget=s.attack_budget,
                           steps=s.attack_steps, step_size=s.attack_step_size)

    def awp_active(self, epoch: int) -> bool:
        return self.awp is not None and epoch >= self.settings.awp_start_epoch

    def _views_loss(self, net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    adversarial: torch.Tensor, labels: torch.Tensor, n: int
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor]:
        clean_logits = net(images) if self.uses_clean_logits else None
        adv_logits = net(adversarial)
        first = self.at_losses(None if clean_logits is None else clean_logits[:n], adv_logits[:n], labels[:n])
        weight = self.settings.autoaugment_weight
        if weight > 0:
            second = self.at_losses(None if clean_logits is None else clean_logits[n:], adv_logits[n:],
                                    labels[n:])
            first.update({f"autoaug_{name}": weight * value for name, value in second.items()})
        return first, clean_logits, adv_logits

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> StepOutput:
        s = self.settings
        n = images.shape[0]
        if s.autoaugment_weight > 0:
            images = torch.cat([images, autoaugment_view(images)])
            labels = torch.cat([labels, labels])
        plan = self.plan(epoch)
        adversarial = pgd(unwrap_model(model), images, labels, eps=plan.eps, step_size=plan.step_size,
                          steps=plan.steps, loss=s.attack_loss, norm=s.norm, random_start=s.random_start,
                          **self.attack_extras(labels))
        if self.awp_active(epoch):
            self.awp.perturb_for_loss(
                model, lambda proxy: sum(self._views_loss(proxy, images, adversarial, labels, n)[0].values()))
        losses, clean_logits, adv_logits = self._views_loss(model, images, adversarial, labels, n)
        if clean_logits is not None:
            self.observe_clean_logits(clean_logits[:n].detach(), labels[:n])
        with torch.no_grad():
            adv_accuracy = (adv_logits[:n].argmax(dim=1) == labels[:n]).float().mean().item()
        metrics = {"adv_accuracy": adv_accuracy, "attack_eps": plan.eps, "attack_steps": float(plan.steps)}
        return StepOutput(losses=losses, logits=None if clean_logits is None else clean_logits[:n].detach(),
                          metrics=metrics)

    def after_optimizer_step(self) -> None:
        if self.awp is not None and self.awp.active:
            self.awp.restore()


class TRADESObjective(AdversarialObjective):
    """TRADES (Zhang et al. 2019): CE(clean) + beta_T * KL(adv || clean), batchmean."""

    def at_losses(self, clean_logits, adv_logits, labels):
        from gkl.losses import kl_div

        return {"ce": F.cross_entropy(clean_logits, labels),
                "kl": self.settings.trades_beta * kl_div(adv_logits, clean_logits)}


class GKLATObjective(AdversarialObjective):
    """GKL-AT: CE(clean) + GKL(adv, clean) with class-wise weights of the previous epoch (Eq. 13)."""

    def __init__(self, settings: AdversarialSettings, *, num_classes: int, epochs: int) -> None:
        super().__init__(settings, num_classes=num_classes, epochs=epochs)
        from gkl.losses import ClassPrior

        self.prior = ClassPrior(num_classes, temperature=settings.weight_temperature)

    def weights(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Class-wise weights s̄_y (Eqs. 8-9) of each example, or None (sample-wise)."""
        return self.prior(labels).detach() if self.settings.class_wise else None

    def attack_extras(self, labels):
        s = self.settings
        return {"class_weights": self.weights(labels),
                "gkl_kwargs": {"alpha": s.attack_alpha, "beta": s.attack_beta, "gamma": s.attack_gamma,
                               "temperature": s.attack_temperature,
                               "weight_temperature": s.weight_temperature}}

    def at_losses(self, clean_logits, adv_logits, labels):
        from gkl.losses import gkl_loss

        s = self.settings
        return {"ce": F.cross_entropy(clean_logits, labels),
                "gkl": gkl_loss(adv_logits, clean_logits, weights=self.weights(labels), alpha=s.alpha,
                                beta=s.beta, gamma=s.gamma, temperature=s.temperature,
                                weight_temperature=s.weight_temperature)}

    def observe_clean_logits(self, clean_logits, labels):
        if self.settings.class_wise:
            self.prior.update(clean_logits, labels)

    def on_epoch_end(self, epoch: int) -> None:
        if self.settings.class_wise:
            self.prior.step()


class PGDATObjective(AdversarialObjective):
    """Madry et al. PGD-AT: cross-entropy on PGD adversarial examples only."""

    uses_clean_logits = False

    def at_losses(self, clean_logits, adv_logits, labels):
        return {"adv_ce": F.cross_entropy(adv_logits, labels)}


_OBJECTIVES: dict[str, type[AdversarialObjective]] = {
    "trades": TRADESObjective, "gkl": GKLATObjective, "pgd_at": PGDATObjective,
}


def build_adversarial_objective(settings: AdversarialSettings, *, num_classes: int, epochs: int) -> Objective:
    """The objective of ``settings.method`` ("trades", "gkl" or "pgd_at")."""
    if not isinstance(settings, AdversarialSettings):
        raise ValueError(f"settings must be an AdversarialSettings, got {type(settings).__name__}")
    return _OBJECTIVES[settings.method](settings, num_classes=num_classes, epochs=epochs)


__all__ = [
    "AdversarialObjective", "AdversarialSettings", "GKLATObjective", "PGDATObjective", "TRADESObjective",
    "autoaugment_view", "build_adversarial_objective",
]
