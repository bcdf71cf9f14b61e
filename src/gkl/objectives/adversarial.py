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

Each CE takes ``label_smoothing`` ε: targets (1 − ε) one-hot + ε / C (DM-AT's TRADES uses 0.1).

Two-view AutoAugment (``autoaugment_weight > 0``): each batch gets a second view
made with torchvision's AutoAugment (CIFAR-10 policy, per example, on uint8
versions of the images); the view is attacked too and its AT loss terms are
added with that weight (named ``autoaug_<term>``); with ``autoaugment_ce: mean`` the clean CE is
instead the mean over both views (1/2 each, as the authors' code computes it). Both views go through the
model in one batch (shared BatchNorm statistics, as in the authors' code); the
ClassPrior sees only the first view.

Settings: one class per method in :mod:`gkl.settings.adversarial`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gkl.attacks.pgd import check_attack_inputs, pgd
from gkl.losses import ClassPrior, logit_loss
from gkl.objectives.awp import AdversarialWeightPerturbation
from gkl.objectives.base import Objective, StepOutput, classification_batch
from gkl.objectives.epsilon_schedule import AttackPlan, attack_plan
from gkl.settings.adversarial import AdversarialSettings, GKLATSettings, PGDATSettings, TRADESSettings
from gkl.settings.kl_family import kl_family_params
from gkl.utils.modules import unwrap_model
from gkl.utils.validation import check_int, fail


def autoaugment_view(images: torch.Tensor) -> torch.Tensor:
    """A second view of [0, 1] images: AutoAugment (CIFAR-10 policy) per example on uint8."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    policy = AutoAugment(AutoAugmentPolicy.CIFAR10)
    as_uint8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    views = torch.stack([policy(image) for image in as_uint8])
    return views.to(images.dtype) / 255


class AdversarialObjective(Objective):
    """Shared machinery of the AT objectives; subclasses define :meth:`at_losses`."""

    settings_class: ClassVar[type[AdversarialSettings]]

    def __init__(self, settings: AdversarialSettings, *, num_classes: int, epochs: int) -> None:
        super().__init__()
        if type(settings) is not self.settings_class:
            raise fail(
                "",
                "settings",
                f"a {self.settings_class.__name__} for {type(self).__name__}",
                type(settings).__name__,
                show_value=False,
            )
        check_int("", "num_classes", num_classes, minimum=2)
        check_int("", "epochs", epochs, minimum=1)
        self.settings = settings
        self.num_classes = num_classes
        self.epochs = epochs
        self.awp = (
            AdversarialWeightPerturbation(gamma=settings.awp_gamma, proxy_lr=settings.awp_proxy_lr)
            if settings.awp_gamma > 0
            else None
        )
        self._inputs_checked = False  # the first batch's values, checked once (pgd skips it in training)

    # -- pieces subclasses customise -------------------------------------------------
    def at_losses(
        self, clean_logits: torch.Tensor | None, adv_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Named loss terms of one view (clean logits carry gradient)."""
        raise NotImplementedError

    def attack_extras(self, labels: torch.Tensor) -> dict[str, Any]:
        """Extra keyword arguments of :func:`gkl.attacks.pgd` (e.g. class-wise weights)."""
        return {}

    def observe_clean_logits(self, clean_logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Hook called with the first view's clean logits after the training forward."""

    uses_clean_logits: bool = True

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The objective's CE term, with ``label_smoothing`` (0: the plain cross-entropy)."""
        return F.cross_entropy(logits, labels, label_smoothing=self.settings.label_smoothing)

    # -- the step -------------------------------------------------------------------
    def plan(self, epoch: int) -> AttackPlan:
        """eps, steps and step size of the inner attack at ``epoch``."""
        s = self.settings
        # keyword arguments of the 'fixed' budget (ints and floats: typed by attack_plan's signature)
        fixed: dict[str, Any] = (
            {} if s.attack_budget != "fixed" else {"steps": s.attack_steps, "step_size": s.attack_step_size}
        )
        return attack_plan(
            eps=s.eps,
            epoch=min(max(epoch, 1), self.epochs),
            epochs=self.epochs,
            eps_schedule=s.eps_schedule,
            budget=s.attack_budget,
            **fixed,
        )

    def awp_active(self, epoch: int) -> bool:
        return self.awp is not None and epoch >= self.settings.awp_start_epoch

    def _views_loss(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        adversarial: torch.Tensor,
        labels: torch.Tensor,
        n: int,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor]:
        clean_logits = net(images) if self.uses_clean_logits else None
        adv_logits = net(adversarial)
        first = self.at_losses(None if clean_logits is None else clean_logits[:n], adv_logits[:n], labels[:n])
        weight = self.settings.autoaugment_weight
        if weight > 0:
            second = self.at_losses(None if clean_logits is None else clean_logits[n:], adv_logits[n:], labels[n:])
            weights = {name: weight for name in second}
            if self.settings.autoaugment_ce == "mean" and "ce" in first:
                # one CE over both views' clean images (the authors' code): 1/2 each
                first["ce"] = 0.5 * first["ce"]
                weights["ce"] = 0.5
            first.update({f"autoaug_{name}": weights[name] * value for name, value in second.items()})
        return first, clean_logits, adv_logits

    def check_first_batch(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """The attack's input checks (images in [0, 1] and finite, labels in [0, num_classes)) on the
        first batch this objective sees: inside the training engine pgd skips them (host syncs)."""
        if self._inputs_checked:
            return
        check_attack_inputs(images, labels)
        if labels.numel() and bool(labels.max() >= self.num_classes):
            raise fail(
                "",
                "labels",
                f"class indices in [0, {self.num_classes - 1}]",
                f"label {labels.max().item()}",
                show_value=False,
            )
        self._inputs_checked = True

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:
        images, labels = classification_batch(batch)
        self.check_first_batch(images, labels)
        s = self.settings
        n = images.shape[0]
        if s.autoaugment_weight > 0:
            images = torch.cat([images, autoaugment_view(images)])
            labels = torch.cat([labels, labels])
        plan = self.plan(epoch)
        adversarial = pgd(
            unwrap_model(model),
            images,
            labels,
            eps=plan.eps,
            step_size=plan.step_size,
            steps=plan.steps,
            loss=s.attack_loss,
            norm=s.norm,
            random_start=s.random_start,
            **self.attack_extras(labels),
        )
        awp = self.awp
        if awp is not None and self.awp_active(epoch):

            def proxy_loss(proxy: nn.Module) -> torch.Tensor:
                terms = self._views_loss(proxy, images, adversarial, labels, n)[0].values()
                return functools.reduce(operator.add, terms)  # the sum of the terms

            awp.perturb_for_loss(model, proxy_loss, scaler=self.grad_scaler)
        losses, clean_logits, adv_logits = self._views_loss(model, images, adversarial, labels, n)
        if clean_logits is not None:
            self.observe_clean_logits(clean_logits[:n].detach(), labels[:n])
        with torch.no_grad():
            adv_accuracy = (adv_logits[:n].argmax(dim=1) == labels[:n]).float().mean()
        metrics: dict[str, torch.Tensor | float] = {
            "adv_accuracy": adv_accuracy,
            "attack_eps": plan.eps,
            "attack_steps": float(plan.steps),
        }
        return StepOutput(
            losses=losses,
            logits=None if clean_logits is None else clean_logits[:n].detach(),
            targets=labels[:n],
            metrics=metrics,
            batch_size=n,
        )

    def after_optimizer_step(self) -> None:
        if self.awp is not None and self.awp.active:
            self.awp.restore()


class TRADESObjective(AdversarialObjective):
    """TRADES (Zhang et al. 2019): CE(clean) + beta_T * KL(adv || clean), batchmean."""

    settings_class = TRADESSettings

    def at_losses(self, clean_logits, adv_logits, labels):
        return {
            "ce": self.cross_entropy(clean_logits, labels),
            "kl": self.settings.trades_beta * logit_loss("kl", adv_logits, clean_logits),
        }


class GKLATObjective(AdversarialObjective):
    """GKL-AT: CE(clean) + GKL(adv, clean) with class-wise weights of the previous epoch (Eq. 13)."""

    settings_class = GKLATSettings
    settings: GKLATSettings

    def __init__(self, settings: GKLATSettings, *, num_classes: int, epochs: int) -> None:
        super().__init__(settings, num_classes=num_classes, epochs=epochs)
        self.prior = ClassPrior(num_classes, temperature=settings.weight_temperature, momentum=settings.prior_momentum)

    def weights(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Class-wise weights s̄_y (Eqs. 8-9) of each example, or None (sample-wise)."""
        return self.prior(labels).detach() if self.settings.class_wise else None

    def attack_extras(self, labels):
        s = self.settings
        return {
            "class_weights": self.weights(labels),
            "gkl_kwargs": {
                "alpha": s.attack_alpha,
                "beta": s.attack_beta,
                "gamma": s.attack_gamma,
                "temperature": s.attack_temperature,
                "weight_temperature": s.weight_temperature,
            },
        }

    def at_losses(self, clean_logits, adv_logits, labels):
        s = self.settings
        return {
            "ce": self.cross_entropy(clean_logits, labels),
            "gkl": logit_loss(
                "gkl",
                adv_logits,
                clean_logits,
                weights=self.weights(labels),
                temperature=s.temperature,
                break_asymmetry=s.break_asymmetry,
                **kl_family_params(s),
            ),
        }

    def observe_clean_logits(self, clean_logits, labels):
        if self.settings.class_wise:
            self.prior.update(clean_logits, labels)

    def on_epoch_end(self, epoch: int) -> None:
        if self.settings.class_wise:
            self.prior.step()


class PGDATObjective(AdversarialObjective):
    """Madry et al. PGD-AT: cross-entropy on PGD adversarial examples only."""

    settings_class = PGDATSettings
    uses_clean_logits = False

    def at_losses(self, clean_logits, adv_logits, labels):
        return {"adv_ce": self.cross_entropy(adv_logits, labels)}


#: method name -> objective class.
ADVERSARIAL_OBJECTIVES: dict[str, type[AdversarialObjective]] = {
    "trades": TRADESObjective,
    "gkl": GKLATObjective,
    "pgd_at": PGDATObjective,
}


def build_adversarial_objective(settings: AdversarialSettings, *, num_classes: int, epochs: int) -> Objective:
    """The objective of ``settings.method`` ("trades", "gkl" or "pgd_at")."""
    if not isinstance(settings, AdversarialSettings):
        raise fail(
            "", "settings", "a gkl.settings.adversarial settings object", type(settings).__name__, show_value=False
        )
    return ADVERSARIAL_OBJECTIVES[settings.method](settings, num_classes=num_classes, epochs=epochs)


__all__ = [
    "ADVERSARIAL_OBJECTIVES",
    "AdversarialObjective",
    "GKLATObjective",
    "PGDATObjective",
    "TRADESObjective",
    "autoaugment_view",
    "build_adversarial_objective",
]
